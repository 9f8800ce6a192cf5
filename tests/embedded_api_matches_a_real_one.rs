//! The embedded API answers like a real kube-apiserver: each sequence runs on both, through
//! the same kube client and the same bytes, and every step must give the same status code,
//! reason, message and resulting object, or for a watch the same events in the same order
//! (server-assigned values normalized away; whether the resourceVersion moved is compared).
//! Needs a real API server (see `support::realk8s`); without one each test says it was
//! skipped.

mod support;

use support::differential::*;
use support::realk8s::RealApi;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases";
const VSS: &str = "/apis/networking.istio.io/v1/namespaces/{ns}/virtualservices";
const VS: &str = "/apis/networking.istio.io/v1/namespaces/{ns}/virtualservices/reviews";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/{ns}/events";

/// A VirtualService whose annotations hold what Go escapes (`<`, `>`, `&`, U+2028) and
/// what it does not (non-ASCII), written by serde_json as kube sends it.
fn virtual_service() -> String {
    serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {
            "name": "reviews",
            "labels": {"app": "reviews"},
            "annotations": {
                "reason": "error ratio 0.31 > 0.05 & p99 <= 2s",
                "note": "café – naïve ✓",
                "separator": "a\u{2028}b",
            },
        },
        "spec": {
            "hosts": ["reviews"],
            "http": [{
                "route": [
                    {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                    {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10},
                ],
            }],
        },
    })
    .to_string()
}

fn lease(name: &str, group: &str, holder: &str) -> String {
    serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "labels": {"canary-guard.io/group": group}},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15},
    })
    .to_string()
}

fn shared() -> Option<RealApi> {
    RealApi::shared()
}

#[tokio::test]
async fn json_patch_test_compares_the_raw_bytes_as_go_encodes_them() {
    let Some(real) = shared() else { return };
    let steps = [
        post("create", VSS, &virtual_service()),
        json_patch(
            "test a string with '>' and '&' written raw",
            VS,
            r#"[{"op":"test","path":"/metadata/annotations/reason","value":"error ratio 0.31 > 0.05 & p99 <= 2s"}]"#,
        ),
        json_patch(
            "test the same string escaped as Go does",
            VS,
            r#"[{"op":"test","path":"/metadata/annotations/reason","value":"error ratio 0.31 \u003e 0.05 \u0026 p99 \u003c= 2s"}]"#,
        ),
        json_patch(
            "test non-ASCII written raw",
            VS,
            r#"[{"op":"test","path":"/metadata/annotations/note","value":"café – naïve ✓"}]"#,
        ),
        json_patch(
            "test non-ASCII escaped",
            VS,
            r#"[{"op":"test","path":"/metadata/annotations/note","value":"caf\u00e9 \u2013 na\u00efve \u2713"}]"#,
        ),
        json_patch(
            "test U+2028 written raw",
            VS,
            "[{\"op\":\"test\",\"path\":\"/metadata/annotations/separator\",\"value\":\"a\u{2028}b\"}]",
        ),
        json_patch(
            "test U+2028 escaped",
            VS,
            r#"[{"op":"test","path":"/metadata/annotations/separator","value":"a\u2028b"}]"#,
        ),
        json_patch(
            "test a number against a string",
            VS,
            r#"[{"op":"test","path":"/spec/http/0/route/1/weight","value":"10"}]"#,
        ),
        json_patch(
            "test 10 against 10.0",
            VS,
            r#"[{"op":"test","path":"/spec/http/0/route/1/weight","value":10.0}]"#,
        ),
        json_patch(
            "test 10 against 1e1",
            VS,
            r#"[{"op":"test","path":"/spec/http/0/route/1/weight","value":1e1}]"#,
        ),
        json_patch(
            "test 10 with spaces around it",
            VS,
            r#"[{"op":"test","path":"/spec/http/0/route/1/weight","value": 10 }]"#,
        ),
        json_patch(
            "test an object with its keys reordered and spaced",
            VS,
            r#"[{"op":"test","path":"/spec/http/0/route/1","value":{ "weight" : 10, "destination": {"subset":"v2","host":"reviews"}}}]"#,
        ),
        json_patch(
            "test an object holding a string Go escapes",
            VS,
            r#"[{"op":"test","path":"/metadata/annotations","value":{"reason":"error ratio 0.31 > 0.05 & p99 <= 2s","note":"café – naïve ✓","separator":"a\u2028b"}}]"#,
        ),
        json_patch(
            "test an array",
            VS,
            r#"[{"op":"test","path":"/spec/hosts","value":["reviews"]}]"#,
        ),
        json_patch(
            "a failed test stops the write",
            VS,
            r#"[{"op":"test","path":"/spec/http/0/route/1/weight","value":10.0},{"op":"replace","path":"/spec/http/0/route/1/weight","value":0}]"#,
        ),
        json_patch(
            "a passing test lets the write through",
            VS,
            r#"[{"op":"test","path":"/spec/http/0/route/1/weight","value":10},{"op":"replace","path":"/spec/http/0/route/1/weight","value":0},{"op":"replace","path":"/spec/http/0/route/0/weight","value":100}]"#,
        ),
        get("read back", VS),
    ];
    assert_same_answers(&real, "diff-test-bytes", &steps).await;
}

#[tokio::test]
async fn json_patch_failures_and_quirks_match() {
    let Some(real) = shared() else { return };
    let steps = [
        post("create", VSS, &virtual_service()).save_rv("created"),
        json_patch(
            "test at an index out of range",
            VS,
            r#"[{"op":"test","path":"/spec/http/0/route/5/weight","value":10}]"#,
        ),
        json_patch(
            "test null at an index out of range",
            VS,
            r#"[{"op":"test","path":"/spec/http/0/route/5","value":null}]"#,
        ),
        json_patch(
            "test null at a missing key",
            VS,
            r#"[{"op":"test","path":"/metadata/annotations/missing","value":null}]"#,
        ),
        json_patch(
            "test null under a missing key",
            VS,
            r#"[{"op":"test","path":"/metadata/missing/deeper","value":null}]"#,
        ),
        json_patch(
            "test the current resourceVersion",
            VS,
            r#"[{"op":"test","path":"/metadata/resourceVersion","value":"{rv:created}"},{"op":"replace","path":"/metadata/annotations/reason","value":"first"}]"#,
        ),
        json_patch(
            "test a stale resourceVersion",
            VS,
            r#"[{"op":"test","path":"/metadata/resourceVersion","value":"{rv:created}"},{"op":"replace","path":"/metadata/annotations/reason","value":"second"}]"#,
        ),
        json_patch(
            "replace of a missing key adds it",
            VS,
            r#"[{"op":"replace","path":"/metadata/annotations/added","value":"by replace"}]"#,
        ),
        json_patch(
            "remove of a missing key",
            VS,
            r#"[{"op":"remove","path":"/metadata/annotations/missing"}]"#,
        ),
        json_patch(
            "add past the end of an array",
            VS,
            r#"[{"op":"add","path":"/spec/hosts/2","value":"ratings"}]"#,
        ),
        json_patch(
            "add at the end of an array",
            VS,
            r#"[{"op":"add","path":"/spec/hosts/1","value":"ratings"}]"#,
        ),
        json_patch(
            "replace past the end of an array",
            VS,
            r#"[{"op":"replace","path":"/spec/hosts/2","value":"details"}]"#,
        ),
        json_patch(
            "a patch that changes nothing",
            VS,
            r#"[{"op":"replace","path":"/spec/hosts/1","value":"ratings"}]"#,
        ),
        json_patch("a patch that is not a list", VS, r#"{"op":"add"}"#),
        json_patch(
            "an unknown operation",
            VS,
            r#"[{"op":"frobnicate","path":"/spec"}]"#,
        ),
        get("read back", VS),
    ];
    assert_same_answers(&real, "diff-patch-quirks", &steps).await;
}

#[tokio::test]
async fn writes_conflict_and_fail_like_the_real_server() {
    let Some(real) = shared() else { return };
    let lease_path = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/guard";
    let renewed = lease("guard", "reviews", "b").replacen(
        r#""name":"guard""#,
        r#""name":"guard","resourceVersion":"{rv:created}""#,
        1,
    );
    let renewed_again = renewed.replace("{rv:created}", "{rv:renewed}");
    let steps = [
        post("create", LEASES, &lease("guard", "reviews", "a")).save_rv("created"),
        post("create again", LEASES, &lease("guard", "reviews", "a")),
        put("replace", lease_path, &renewed).save_rv("renewed"),
        put("replace with a stale resourceVersion", lease_path, &renewed),
        put(
            "replace without a resourceVersion",
            lease_path,
            &lease("guard", "reviews", "c"),
        ),
        put("replace with no change", lease_path, &renewed_again),
        post(
            "create an object carrying a resourceVersion",
            LEASES,
            &renewed.replace(r#""name":"guard""#, r#""name":"other""#),
        ),
        merge_patch(
            "merge patch with a stale resourceVersion",
            lease_path,
            r#"{"metadata":{"resourceVersion":"{rv:created}"},"spec":{"holderIdentity":"d"}}"#,
        ),
        merge_patch(
            "merge patch with the current resourceVersion",
            lease_path,
            r#"{"metadata":{"resourceVersion":"{rv:renewed}"},"spec":{"holderIdentity":"d"}}"#,
        ),
        merge_patch(
            "merge patch without a resourceVersion",
            lease_path,
            r#"{"spec":{"leaseTransitions":2}}"#,
        ),
        post("create the VirtualService", VSS, &virtual_service()),
        merge_patch(
            "merge patch replaces a whole list",
            VS,
            r#"{"spec":{"http":[{"route":[{"destination":{"host":"reviews","subset":"v1"}}]}]}}"#,
        ),
        patch(
            "strategic merge on a custom resource",
            VS,
            "application/strategic-merge-patch+json",
            r#"{"spec":{"hosts":["reviews"]}}"#,
        ),
        get("read the VirtualService", VS),
        delete("delete the Lease", lease_path),
        get("read the deleted Lease", lease_path),
        delete("delete it again", lease_path),
        delete("delete the VirtualService", VS),
        get("read the deleted VirtualService", VS),
    ];
    assert_same_answers(&real, "diff-writes", &steps).await;
}

#[tokio::test]
async fn label_selectors_select_the_same_leases() {
    let Some(real) = shared() else { return };
    let list = |s: &str| format!("{LEASES}?labelSelector={s}");
    let mut steps = vec![
        post("m1", LEASES, &lease("m1", "reviews", "a")),
        post("m2", LEASES, &lease("m2", "reviews", "b")),
        post("m3", LEASES, &lease("m3", "ratings", "c")),
        post(
            "unlabelled",
            LEASES,
            r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"plain"}}"#,
        ),
    ];
    for (name, selector) in [
        ("equals", "canary-guard.io%2Fgroup%3Dreviews"),
        ("double equals", "canary-guard.io%2Fgroup%3D%3Dreviews"),
        ("not equals", "canary-guard.io%2Fgroup%21%3Dreviews"),
        ("in", "canary-guard.io%2Fgroup+in+%28reviews%2Cratings%29"),
        ("notin", "canary-guard.io%2Fgroup+notin+%28reviews%29"),
        ("exists", "canary-guard.io%2Fgroup"),
        ("does not exist", "%21canary-guard.io%2Fgroup"),
        (
            "two requirements",
            "canary-guard.io%2Fgroup%2Ccanary-guard.io%2Fgroup%21%3Dratings",
        ),
    ] {
        steps.push(get(name, &list(selector)));
    }
    // Go's selector parser words each syntax error its own way; the code is what matters.
    steps.push(get("unbalanced", &list("a+in+%28b")).ignoring_message());
    assert_same_answers(&real, "diff-selectors", &steps).await;
}

#[tokio::test]
async fn events_are_validated_and_stored_alike() {
    let Some(real) = shared() else { return };
    let event = |overrides: serde_json::Value| {
        let mut e = serde_json::json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "rollback"},
            "eventTime": "2024-05-01T10:00:00.123456Z",
            "type": "Warning",
            "reportingController": "canary-guard.io/guard",
            "reportingInstance": "reviews-v2-abc",
            "action": "Rollback",
            "reason": "CanaryFailing",
            "note": "error ratio 0.31 > 0.05",
            "regarding": {"kind": "VirtualService", "name": "reviews", "namespace": "{ns}"},
        });
        for (k, v) in overrides.as_object().unwrap() {
            if v.is_null() {
                e.as_object_mut().unwrap().remove(k);
            } else {
                e[k] = v.clone();
            }
        }
        e.to_string()
    };
    let long = "x".repeat(129);
    let steps = [
        post("a valid event", EVENTS, &event(serde_json::json!({}))),
        get("read the valid event", &format!("{EVENTS}/rollback")),
        post(
            "an eventTime in nanoseconds",
            EVENTS,
            &event(
                serde_json::json!({"eventTime": "2024-05-01T10:00:00.123456789Z", "metadata": {"name": "e8"}}),
            ),
        ),
        post(
            "an eventTime in seconds",
            EVENTS,
            &event(
                serde_json::json!({"eventTime": "2024-05-01T10:00:00Z", "metadata": {"name": "e9"}}),
            ),
        ),
        post(
            "regarding an object without a namespace",
            EVENTS,
            &event(
                serde_json::json!({"regarding": {"kind": "VirtualService", "name": "reviews"}, "metadata": {"name": "e10"}}),
            ),
        ),
        post(
            "no eventTime",
            EVENTS,
            &event(serde_json::json!({"eventTime": null, "metadata": {"name": "e1"}})),
        ),
        post(
            "a bad type",
            EVENTS,
            &event(serde_json::json!({"type": "Bad", "metadata": {"name": "e2"}})),
        ),
        post(
            "an unqualified reporting controller",
            EVENTS,
            &event(
                serde_json::json!({"reportingController": "canary guard", "metadata": {"name": "e3"}}),
            ),
        ),
        post(
            "an empty reporting controller",
            EVENTS,
            &event(serde_json::json!({"reportingController": "", "metadata": {"name": "e11"}})),
        ),
        post(
            "missing action, reason and instance",
            EVENTS,
            &event(
                serde_json::json!({"action": null, "reason": null, "reportingInstance": null, "metadata": {"name": "e4"}}),
            ),
        ),
        post(
            "a reason too long",
            EVENTS,
            &event(serde_json::json!({"reason": long, "metadata": {"name": "e5"}})),
        ),
        post(
            "a note too long",
            EVENTS,
            &event(serde_json::json!({"note": "n".repeat(1025), "metadata": {"name": "e6"}})),
        ),
        post(
            "a deprecated count",
            EVENTS,
            &event(serde_json::json!({"deprecatedCount": 2, "metadata": {"name": "e7"}})),
        ),
        post(
            "a generateName ending in a dot",
            EVENTS,
            &event(serde_json::json!({"metadata": {"generateName": "reviews."}})),
        )
        .generating("reviews."),
    ];
    assert_same_answers(&real, "diff-events", &steps).await;
}

#[tokio::test]
async fn two_writers_racing_on_one_lease_one_wins() {
    let Some(real) = shared() else { return };
    let path = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/leader";
    let claim = |holder: &str| {
        lease("leader", "reviews", holder).replacen(
            r#""name":"leader""#,
            r#""name":"leader","resourceVersion":"{rv:read}""#,
            1,
        )
    };
    let steps = [
        post("create", LEASES, &lease("leader", "reviews", "nobody")),
        get("both read", path).save_rv("read"),
        Step::Race {
            name: "both replace",
            requests: [
                put_request(path, &claim("a")),
                put_request(path, &claim("b")),
            ],
        },
    ];
    assert_same_answers(&real, "diff-race", &steps).await;
}

#[tokio::test]
async fn a_watch_sees_the_same_events() {
    let Some(real) = shared() else { return };
    let group = "labelSelector=canary-guard.io%2Fgroup%3Dreviews";
    let (m1, m2, m3) = (
        format!("{LEASES}/m1"),
        format!("{LEASES}/m2"),
        format!("{LEASES}/m3"),
    );
    let relabel =
        |g: &str| format!(r#"{{"metadata":{{"labels":{{"canary-guard.io/group":"{g}"}}}}}}"#);
    let steps = [
        post("m1 joins", LEASES, &lease("m1", "reviews", "a")),
        get("list the group", &format!("{LEASES}?{group}")).save_rv("listed"),
        post("m2 joins", LEASES, &lease("m2", "reviews", "b")),
        merge_patch("m1 renews", &m1, r#"{"spec":{"holderIdentity":"c"}}"#),
        post("m3 of another group", LEASES, &lease("m3", "ratings", "d")),
        merge_patch("m2 leaves the group", &m2, &relabel("ratings")),
        merge_patch("m3 joins the group", &m3, &relabel("reviews")),
        delete("m1 is deleted", &m1),
        watch(
            "watch from the list",
            &format!("{LEASES}?watch=true&{group}&resourceVersion={{rv:listed}}&timeoutSeconds=1"),
        ),
        // From its watch cache, which has had the second of the watch above to take the
        // delete in.
        watch(
            "watch from now",
            &format!("{LEASES}?watch=true&{group}&resourceVersion=0&timeoutSeconds=1"),
        ),
        get(
            "watch from a version that is not a number",
            &format!("{LEASES}?watch=true&resourceVersion=abc"),
        ),
        get(
            "watch with a timeout that is not a number",
            &format!("{LEASES}?watch=true&timeoutSeconds=x"),
        ),
        // Go's selector parser words each syntax error its own way; the code is what matters.
        get(
            "watch with a selector that does not parse",
            &format!("{LEASES}?watch=true&labelSelector=a+in+%28b&timeoutSeconds=1"),
        )
        .ignoring_message(),
    ];
    assert_same_answers(&real, "diff-watch", &steps).await;
}
