use super::rollback::redistribute;
use super::*;
use serde_json::{json, Value};

fn canary_subset(s: &str) -> CanaryTarget {
    CanaryTarget::new(None, Some(s.into())).unwrap()
}

fn stable_subset(s: &str) -> StableTarget {
    StableTarget::new(None, Some(s.into())).unwrap()
}

/// Applies `ops` with an independent RFC 6902 implementation.
fn apply(vs: &Value, ops: &[PatchOp]) -> Result<Value, String> {
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::to_value(ops).unwrap()).unwrap();
    let mut out = vs.clone();
    json_patch::patch(&mut out, &patch).map_err(|e| e.to_string())?;
    Ok(out)
}

fn dest(subset: &str, weight: Option<u64>) -> Value {
    let mut e = json!({ "destination": { "host": "reviews", "subset": subset } });
    if let Some(w) = weight {
        e["weight"] = json!(w);
    }
    e
}

fn vs_with(spec: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": { "name": "reviews", "namespace": "default", "resourceVersion": "7" },
        "spec": spec,
    })
}

fn vs_90_10() -> Value {
    vs_with(json!({
        "hosts": ["reviews"],
        "http": [{
            "name": "reviews-route",
            "route": [dest("v1", Some(90)), dest("v2", Some(10))]
        }]
    }))
}

fn weights_at(vs: &Value, path: &str) -> Vec<Option<u64>> {
    vs.pointer(path)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.get("weight").and_then(Value::as_u64))
        .collect()
}

/// Plans, applies, checks that planning again is a no-op and that restoring gives
/// back the original object exactly.
fn rollback_roundtrip(
    vs: &Value,
    canary: &CanaryTarget,
    stable: Option<&StableTarget>,
) -> (RollbackPlan, Value) {
    let plan = plan_rollback(vs, canary, stable, None).unwrap();
    let after = apply(vs, &plan.ops).unwrap();
    let again = plan_rollback(&after, canary, stable, None).unwrap();
    assert!(again.is_noop(), "second plan not empty: {:?}", again.ops);
    let restore = plan_restore(&after, &plan.previous).unwrap();
    assert!(restore.skipped.is_empty(), "{:?}", restore.skipped);
    assert_eq!(
        &apply(&after, &restore.ops).unwrap(),
        vs,
        "restore did not give back the original"
    );
    (plan, after)
}

#[test]
fn ninety_ten_moves_canary_weight_to_stable() {
    let vs = vs_90_10();
    let plan = plan_rollback(&vs, &canary_subset("v2"), None, None).unwrap();
    assert_eq!(
        plan.ops,
        vec![
            PatchOp::Replace {
                path: "/spec/http/0/route/1/weight".into(),
                value: json!(0)
            },
            PatchOp::Replace {
                path: "/spec/http/0/route/0/weight".into(),
                value: json!(100)
            },
        ]
    );
    assert_eq!(
        plan.changes,
        vec![r#"http[0] "reviews-route": v1 90→100, v2 10→0"#]
    );
    assert_eq!(
        plan.summary(),
        r#"http[0] "reviews-route": v1 90→100, v2 10→0"#
    );
    assert!(plan.skipped.is_empty());
    assert_eq!(
        plan.previous,
        vec![RecordedRoute {
            route: RouteRef {
                kind: RouteKind::Http,
                index: 0,
                name: Some("reviews-route".into())
            },
            weights: vec![
                DestinationWeight {
                    destination: Destination {
                        host: "reviews".into(),
                        subset: Some("v1".into()),
                        port: None
                    },
                    weight: Some(90)
                },
                DestinationWeight {
                    destination: Destination {
                        host: "reviews".into(),
                        subset: Some("v2".into()),
                        port: None
                    },
                    weight: Some(10)
                },
            ],
            added: None,
        }]
    );
    let (_, after) = rollback_roundtrip(&vs, &canary_subset("v2"), None);
    let mut expected = vs.clone();
    expected["spec"]["http"][0]["route"][0]["weight"] = json!(100);
    expected["spec"]["http"][0]["route"][1]["weight"] = json!(0);
    assert_eq!(after, expected);
}

#[test]
fn two_stable_destinations_keep_their_ratio() {
    let vs = vs_with(json!({ "http": [{ "route": [
        dest("v1", Some(60)), dest("v3", Some(30)), dest("v2", Some(10))
    ]}]}));
    let (plan, after) = rollback_roundtrip(&vs, &canary_subset("v2"), None);
    assert_eq!(
        weights_at(&after, "/spec/http/0/route"),
        vec![Some(67), Some(33), Some(0)]
    );
    assert_eq!(plan.changes, vec!["http[0]: v1 60→67, v3 30→33, v2 10→0"]);
}

#[test]
fn weights_not_summing_to_100_keep_their_total() {
    let vs = vs_with(json!({ "http": [{ "route": [
        dest("v1", Some(30)), dest("v3", Some(20)), dest("v2", Some(10))
    ]}]}));
    let (_, after) = rollback_roundtrip(&vs, &canary_subset("v2"), None);
    assert_eq!(
        weights_at(&after, "/spec/http/0/route"),
        vec![Some(36), Some(24), Some(0)]
    );

    // 1000 over 3 equal stables: 333.33 each, remainder to the first.
    let vs = vs_with(json!({ "http": [{ "route": [
        dest("a", Some(1)), dest("b", Some(1)), dest("c", Some(1)), dest("v2", Some(997))
    ]}]}));
    let (_, after) = rollback_roundtrip(&vs, &canary_subset("v2"), None);
    assert_eq!(
        weights_at(&after, "/spec/http/0/route"),
        vec![Some(334), Some(333), Some(333), Some(0)]
    );
}

#[test]
fn stable_destinations_at_zero_share_evenly() {
    let vs = vs_with(json!({ "http": [{ "route": [
        dest("v1", Some(0)), dest("v3", None), dest("v2", Some(101))
    ]}]}));
    let (plan, after) = rollback_roundtrip(&vs, &canary_subset("v2"), None);
    assert_eq!(
        weights_at(&after, "/spec/http/0/route"),
        vec![Some(51), Some(50), Some(0)]
    );
    // A missing weight is added, not replaced, so the patch is valid RFC 6902.
    assert!(plan.ops.contains(&PatchOp::Add {
        path: "/spec/http/0/route/1/weight".into(),
        value: json!(50)
    }));
}

#[test]
fn lone_canary_without_weight_gets_stable_appended() {
    let vs = vs_with(json!({ "http": [{ "route": [dest("v2", None)] }] }));
    let stable = stable_subset("v1");
    let (plan, after) = rollback_roundtrip(&vs, &canary_subset("v2"), Some(&stable));
    assert_eq!(
        after["spec"]["http"][0]["route"],
        json!([dest("v2", Some(0)), dest("v1", Some(100))])
    );
    assert_eq!(plan.changes, vec!["http[0]: v2 100→0, v1 (added) 0→100"]);
    assert_eq!(
        plan.previous[0].added,
        Some(Destination {
            host: "reviews".into(),
            subset: Some("v1".into()),
            port: None
        })
    );
}

#[test]
fn lone_canary_with_stable_host_drops_the_port_of_another_service() {
    let vs = vs_with(json!({ "tcp": [{ "route": [
        { "destination": { "host": "reviews-canary", "port": { "number": 9080 } }, "weight": 100 }
    ]}]}));
    let canary = CanaryTarget::new(Some("reviews-canary".into()), None).unwrap();
    let stable = StableTarget::new(Some("reviews-stable".into()), None).unwrap();
    let (_, after) = rollback_roundtrip(&vs, &canary, Some(&stable));
    assert_eq!(
        after["spec"]["tcp"][0]["route"],
        json!([
            { "destination": { "host": "reviews-canary", "port": { "number": 9080 } }, "weight": 0 },
            { "destination": { "host": "reviews-stable" }, "weight": 100 }
        ])
    );
}

#[test]
fn lone_canary_without_stable_is_reported_not_touched() {
    let vs = vs_with(json!({ "http": [
        { "name": "only-canary", "route": [dest("v2", None)] },
        { "name": "split", "route": [dest("v1", Some(80)), dest("v2", Some(20))] }
    ]}));
    let plan = plan_rollback(&vs, &canary_subset("v2"), None, None).unwrap();
    assert_eq!(plan.skipped.len(), 1);
    assert_eq!(plan.skipped[0].route.index, 0);
    assert!(
        plan.skipped[0].reason.contains("--stable-host"),
        "{}",
        plan.skipped[0].reason
    );
    assert!(plan.ops.iter().all(|op| !matches!(op, PatchOp::Replace { path, .. } | PatchOp::Add { path, .. } if path.starts_with("/spec/http/0/"))));
    let after = apply(&vs, &plan.ops).unwrap();
    assert_eq!(after["spec"]["http"][0], vs["spec"]["http"][0]);
    assert_eq!(
        weights_at(&after, "/spec/http/1/route"),
        vec![Some(100), Some(0)]
    );
    assert!(plan
        .summary()
        .contains(r#"skipped http[0] "only-canary": all its traffic goes to the canary"#));
}

#[test]
fn stable_target_equal_to_canary_is_refused() {
    let vs = vs_with(json!({ "http": [{ "route": [dest("v2", None)] }] }));
    let plan = plan_rollback(&vs, &canary_subset("v2"), Some(&stable_subset("v2")), None).unwrap();
    assert!(plan.is_noop());
    assert!(plan.skipped[0].reason.contains("is the canary itself"));
}

#[test]
fn tls_and_tcp_routes_are_rolled_back_too() {
    let route = |canary_w| {
        json!({ "route": [
            { "destination": { "host": "reviews", "subset": "v1", "port": { "number": 443 } }, "weight": 100 - canary_w },
            { "destination": { "host": "reviews", "subset": "v2", "port": { "number": 443 } }, "weight": canary_w }
        ]})
    };
    let mut tls = route(25);
    tls["match"] = json!([{ "port": 443, "sniHosts": ["reviews.example.com"] }]);
    let vs = vs_with(json!({ "tls": [tls], "tcp": [route(0), route(40)] }));
    let (plan, after) = rollback_roundtrip(&vs, &canary_subset("v2"), None);
    assert_eq!(
        weights_at(&after, "/spec/tls/0/route"),
        vec![Some(100), Some(0)]
    );
    assert_eq!(
        weights_at(&after, "/spec/tcp/0/route"),
        vec![Some(100), Some(0)]
    );
    assert_eq!(
        weights_at(&after, "/spec/tcp/1/route"),
        vec![Some(100), Some(0)]
    );
    assert_eq!(
        plan.changes,
        vec!["tls[0]: v1 75→100, v2 25→0", "tcp[1]: v1 60→100, v2 40→0"]
    );
    assert_eq!(
        after["spec"]["tls"][0]["match"],
        vs["spec"]["tls"][0]["match"]
    );
}

#[test]
fn route_filter_limits_http_routes() {
    let vs = vs_with(json!({
        "http": [
            { "name": "api", "route": [dest("v1", Some(90)), dest("v2", Some(10))] },
            { "name": "web", "route": [dest("v1", Some(50)), dest("v2", Some(50))] }
        ],
        "tcp": [{ "route": [dest("v1", Some(70)), dest("v2", Some(30))] }]
    }));
    let plan = plan_rollback(&vs, &canary_subset("v2"), None, Some("web")).unwrap();
    let after = apply(&vs, &plan.ops).unwrap();
    assert_eq!(after["spec"]["http"][0], vs["spec"]["http"][0]);
    assert_eq!(
        weights_at(&after, "/spec/http/1/route"),
        vec![Some(100), Some(0)]
    );
    // tls and tcp routes have no name in the Istio API; the filter does not apply.
    assert_eq!(
        weights_at(&after, "/spec/tcp/0/route"),
        vec![Some(100), Some(0)]
    );
    assert_eq!(
        plan.skipped,
        vec![SkippedRoute {
            route: RouteRef {
                kind: RouteKind::Http,
                index: 0,
                name: Some("api".into())
            },
            reason: "not selected by --route web".into()
        }]
    );

    let err = plan_rollback(&vs, &canary_subset("v2"), None, Some("nope")).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"no http route named "nope"; http route names: api, web"#
    );
}

#[test]
fn canary_at_zero_is_left_alone() {
    let vs =
        vs_with(json!({ "http": [{ "route": [dest("v1", Some(100)), dest("v2", Some(0))] }] }));
    let plan = plan_rollback(&vs, &canary_subset("v2"), None, None).unwrap();
    assert!(plan.is_noop());
    assert!(plan.previous.is_empty());
    assert_eq!(plan.summary(), "no change");
    // A missing weight next to other destinations is 0 too.
    let vs = vs_with(json!({ "http": [{ "route": [dest("v1", Some(100)), dest("v2", None)] }] }));
    assert!(plan_rollback(&vs, &canary_subset("v2"), None, None)
        .unwrap()
        .is_noop());
}

#[test]
fn fields_we_do_not_model_are_untouched() {
    let vs = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": { "name": "reviews", "namespace": "default", "labels": { "app": "reviews" } },
        "spec": {
            "hosts": ["reviews"],
            "gateways": ["mesh"],
            "x-unknown": { "kept": true },
            "http": [
                { "name": "redirect", "match": [{ "uri": { "prefix": "/old" } }], "redirect": { "uri": "/new" } },
                {
                    "name": "main",
                    "match": [{ "headers": { "end-user": { "exact": "jason" } } }],
                    "retries": { "attempts": 3, "perTryTimeout": "2s" },
                    "timeout": "10s",
                    "headers": { "request": { "set": { "x-a": "b" } } },
                    "route": [
                        { "destination": { "host": "reviews", "subset": "v1" }, "weight": 90,
                          "headers": { "response": { "add": { "x-v": "1" } } } },
                        { "destination": { "host": "reviews", "subset": "v2" }, "weight": 10, "x-extra": [1, 2] }
                    ]
                }
            ]
        }
    });
    let (_, after) = rollback_roundtrip(&vs, &canary_subset("v2"), None);
    let mut expected = vs.clone();
    expected["spec"]["http"][1]["route"][0]["weight"] = json!(100);
    expected["spec"]["http"][1]["route"][1]["weight"] = json!(0);
    assert_eq!(after, expected);
}

#[test]
fn plans_only_change_never_test_values() {
    // A `test` of a value is compared byte for byte with Go's encoding of the stored
    // object by a real API server; the caller pins the patch to the resourceVersion.
    let vs = vs_90_10();
    let plan = plan_rollback(&vs, &canary_subset("v2"), None, None).unwrap();
    assert!(!plan.is_noop());
    assert!(plan
        .ops
        .iter()
        .all(|op| !matches!(op, PatchOp::Test { .. })));
    let after = apply(&vs, &plan.ops).unwrap();
    let restore = plan_restore(&after, &plan.previous).unwrap();
    assert!(!restore.is_noop());
    assert!(restore
        .ops
        .iter()
        .all(|op| !matches!(op, PatchOp::Test { .. })));
}

#[test]
fn short_and_qualified_hosts_match_in_the_virtualservice_namespace() {
    let ns = Some("default");
    let full = "reviews.default.svc.cluster.local";
    for h in [
        "reviews",
        "reviews.default",
        "reviews.default.svc",
        full,
        "Reviews.Default.svc.cluster.local.",
    ] {
        assert_eq!(canonical_host(h, ns), full, "{h}");
    }
    assert_eq!(canonical_host("reviews.other", ns), "reviews.other");
    assert_eq!(canonical_host("*", ns), "*");
    assert_eq!(canonical_host("reviews", None), "reviews");

    let vs = vs_with(json!({ "http": [{ "route": [
        { "destination": { "host": "reviews.default.svc.cluster.local" }, "weight": 80 },
        { "destination": { "host": "reviews-canary.default.svc.cluster.local" }, "weight": 20 }
    ]}]}));
    let canary = CanaryTarget::new(Some("reviews-canary".into()), None).unwrap();
    let (_, after) = rollback_roundtrip(&vs, &canary, None);
    assert_eq!(
        weights_at(&after, "/spec/http/0/route"),
        vec![Some(100), Some(0)]
    );

    // A same-named service of another namespace is not the canary.
    let mut other_ns = vs.clone();
    other_ns["metadata"]["namespace"] = json!("prod");
    let err = plan_rollback(&other_ns, &canary, None, None).unwrap_err();
    assert!(matches!(err, RouteError::CanaryNotFound { .. }), "{err}");
}

#[test]
fn host_and_subset_must_both_match_when_both_are_set() {
    let vs = vs_with(json!({ "http": [{ "route": [
        { "destination": { "host": "ratings", "subset": "v2" }, "weight": 50 },
        dest("v1", Some(30)), dest("v2", Some(20))
    ]}]}));
    let canary = CanaryTarget::new(Some("reviews".into()), Some("v2".into())).unwrap();
    let (_, after) = rollback_roundtrip(&vs, &canary, None);
    // 100 split over 50/30: 62.5 and 37.5, the tie goes to the first.
    assert_eq!(
        weights_at(&after, "/spec/http/0/route"),
        vec![Some(63), Some(37), Some(0)]
    );
}

#[test]
fn errors_name_what_is_wrong() {
    let canary = canary_subset("v2");
    assert_eq!(
        plan_rollback(&json!({ "metadata": {} }), &canary, None, None).unwrap_err(),
        RouteError::NoSpec
    );
    let err = plan_rollback(&vs_90_10(), &canary_subset("v9"), None, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "canary destination subset=v9 not found in any route; destinations present: reviews/v1, reviews/v2"
    );
    for (bad, shown) in [
        (json!("10"), "\"10\""),
        (json!(-5), "-5"),
        (json!(2.5), "2.5"),
        (json!(3_000_000_000u64), "3000000000"),
    ] {
        let mut vs = vs_90_10();
        vs["spec"]["http"][0]["route"][1]["weight"] = bad;
        let err = plan_rollback(&vs, &canary, None, None).unwrap_err();
        assert_eq!(
            err,
            RouteError::Malformed {
                path: "/spec/http/0/route/1/weight".into(),
                problem: format!("weight must be an integer from 0 to 2147483647, got {shown}")
            }
        );
    }
    let mut vs = vs_90_10();
    vs["spec"]["http"][0]["route"][0]["destination"] = json!({ "subset": "v1" });
    assert_eq!(
        plan_rollback(&vs, &canary, None, None).unwrap_err().to_string(),
        "malformed VirtualService at /spec/http/0/route/0/destination/host: expected a non-empty string"
    );
    let vs = vs_with(json!({ "tcp": { "route": [] } }));
    assert!(
        matches!(plan_rollback(&vs, &canary, None, None), Err(RouteError::Malformed { path, .. }) if path == "/spec/tcp")
    );
    assert_eq!(
        CanaryTarget::new(Some(String::new()), None).unwrap_err(),
        RouteError::EmptyTarget("canary")
    );
    assert_eq!(
        StableTarget::new(None, None).unwrap_err(),
        RouteError::EmptyTarget("stable")
    );
}

#[test]
fn merged_weight_above_the_istio_maximum_is_an_error() {
    let vs = vs_with(
        json!({ "http": [{ "route": [dest("v1", Some(2_000_000_000)), dest("v2", Some(2_000_000_000))] }] }),
    );
    let err = plan_rollback(&vs, &canary_subset("v2"), None, None).unwrap_err();
    assert!(
        matches!(err, RouteError::Malformed { ref path, .. } if path == "/spec/http/0/route/0/weight"),
        "{err}"
    );
}

#[test]
fn restore_puts_back_recorded_weights_only_where_the_shape_is_unchanged() {
    let vs = vs_with(json!({ "http": [
        { "name": "a", "route": [dest("v1", Some(90)), dest("v2", Some(10))] },
        { "name": "b", "route": [dest("v1", Some(50)), dest("v2", Some(50))] }
    ]}));
    let plan = plan_rollback(&vs, &canary_subset("v2"), None, None).unwrap();
    let mut after = apply(&vs, &plan.ops).unwrap();
    // Someone adds a destination to route b after the rollback.
    after["spec"]["http"][1]["route"]
        .as_array_mut()
        .unwrap()
        .push(dest("v3", Some(0)));
    let restore = plan_restore(&after, &plan.previous).unwrap();
    assert_eq!(restore.changes, vec![r#"http[0] "a": v1 100→90, v2 0→10"#]);
    assert_eq!(restore.skipped.len(), 1);
    assert!(
        restore.skipped[0].reason.contains(
            "now [reviews/v1, reviews/v2, reviews/v3], expected [reviews/v1, reviews/v2]"
        ),
        "{}",
        restore.skipped[0].reason
    );
    let restored = apply(&after, &restore.ops).unwrap();
    assert_eq!(restored["spec"]["http"][0], vs["spec"]["http"][0]);
    assert_eq!(restored["spec"]["http"][1], after["spec"]["http"][1]);
    // Restoring again changes nothing.
    assert!(plan_restore(&restored, &plan.previous).unwrap().is_noop());
}

#[test]
fn restore_finds_a_named_route_that_moved_and_reports_a_missing_one() {
    let vs = vs_90_10();
    let plan = plan_rollback(&vs, &canary_subset("v2"), None, None).unwrap();
    let mut after = apply(&vs, &plan.ops).unwrap();
    after["spec"]["http"].as_array_mut().unwrap().insert(
        0,
        json!({ "name": "new-first", "route": [dest("v1", None)] }),
    );
    let restore = plan_restore(&after, &plan.previous).unwrap();
    assert_eq!(
        restore.changes,
        vec![r#"http[1] "reviews-route" (was http[0]): v1 100→90, v2 0→10"#]
    );
    let restored = apply(&after, &restore.ops).unwrap();
    assert_eq!(restored["spec"]["http"][1], vs["spec"]["http"][0]);

    after["spec"]["http"].as_array_mut().unwrap().remove(1);
    let restore = plan_restore(&after, &plan.previous).unwrap();
    assert!(restore.is_noop());
    assert_eq!(restore.skipped[0].reason, "the route no longer exists");
}

#[test]
fn recorded_routes_serialize_compactly_and_read_back() {
    let stable = stable_subset("v1");
    let vs = vs_with(json!({ "http": [{ "name": "r", "route": [dest("v2", None)] }] }));
    let plan = plan_rollback(&vs, &canary_subset("v2"), Some(&stable), None).unwrap();
    let json = serde_json::to_value(&plan.previous).unwrap();
    assert_eq!(
        json,
        json!([{
            "kind": "http", "index": 0, "name": "r",
            "weights": [{ "destination": { "host": "reviews", "subset": "v2" } }],
            "added": { "host": "reviews", "subset": "v1" }
        }])
    );
    let back: Vec<RecordedRoute> = serde_json::from_value(json).unwrap();
    assert_eq!(back, plan.previous);
}

#[test]
fn canary_weight_tells_whether_the_canary_gets_traffic() {
    let vs = vs_90_10();
    let canary = canary_subset("v2");
    let before = canary_weight(&vs, &canary).unwrap();
    assert!(before.receives_traffic());
    assert_eq!(before.routes.len(), 1);
    assert_eq!(before.routes[0].canary_weight(), 10);
    assert_eq!(before.routes[0].total_weight(), 100);
    let plan = plan_rollback(&vs, &canary, None, None).unwrap();
    let after = apply(&vs, &plan.ops).unwrap();
    assert!(!canary_weight(&after, &canary).unwrap().receives_traffic());
    assert!(matches!(
        canary_weight(&vs, &canary_subset("v9")),
        Err(RouteError::CanaryNotFound { .. })
    ));

    let all = current_weights(&vs, None).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0]
            .destinations
            .iter()
            .map(|d| d.weight)
            .collect::<Vec<_>>(),
        vec![90, 10]
    );
    assert!(all[0].destinations.iter().all(|d| !d.canary));
    let lone = vs_with(json!({ "tcp": [{ "route": [dest("v1", None)] }] }));
    assert_eq!(
        current_weights(&lone, None).unwrap()[0].destinations[0].weight,
        100
    );
}

#[test]
fn patch_ops_serialize_as_rfc6902() {
    let ops = vec![
        PatchOp::Test {
            path: "/a".into(),
            value: json!(1),
        },
        PatchOp::Remove { path: "/b".into() },
    ];
    assert_eq!(
        serde_json::to_value(&ops).unwrap(),
        json!([{ "op": "test", "path": "/a", "value": 1 }, { "op": "remove", "path": "/b" }])
    );
    assert_eq!(
        escape_pointer_token("canary-guard.io/rollback"),
        "canary-guard.io~1rollback"
    );
    assert_eq!(escape_pointer_token("a~/b"), "a~0~1b");
}

#[test]
fn redistribute_preserves_the_total_deterministically() {
    assert_eq!(redistribute(100, &[60, 30]), vec![67, 33]);
    assert_eq!(redistribute(100, &[1, 1, 1]), vec![34, 33, 33]);
    assert_eq!(redistribute(7, &[0, 0]), vec![4, 3]);
    assert_eq!(redistribute(0, &[0, 5]), vec![0, 0]);
    assert_eq!(redistribute(10, &[]), Vec::<u64>::new());
}
