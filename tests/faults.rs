//! The fault matrix (docs/faults.md): the guard against a failing Kubernetes API,
//! conflicting writers and bad peer data. Every test waits on conditions (API writes,
//! the guard's checks), never on sleeps.

mod support;

use std::time::Duration;

use canary_guard::cluster::members;
use canary_guard_test_api::embedded_api::{
    EmbeddedApi, FaultAction, FaultRule, Gate, Resource, Verb, WriteRecord,
};
use serde_json::json;
use support::cluster::*;
use support::*;

/// Waits until the guard has run `n` more checks.
async fn checks(guard: &canary_guard::runtime::guard::Guard, n: usize) {
    let mut checks = guard.checks.clone();
    // A clone has not seen the current value; without this the first wait returns at once.
    checks.borrow_and_update();
    for _ in 0..n {
        checks.changed().await.unwrap();
    }
}

/// Sends `n` requests through the guard and asserts the app answered every one
/// (its own status, never a 502/504 from the guard).
async fn send_all_answered(guard: &canary_guard::runtime::guard::Guard, status: u16, n: usize) {
    let c = http1();
    for _ in 0..n {
        let (got, body) = get(
            &c,
            &format!("http://{}/status/{status}", guard.proxy_addr.unwrap()),
        )
        .await;
        assert_eq!(
            got.as_u16(),
            status,
            "a request was not answered by the app"
        );
        assert_eq!(&body[..], b"status\n");
    }
}

/// Patches the VirtualService by anyone but the guard: `(attempted, succeeded)`.
fn vs_patch_codes(api: &EmbeddedApi) -> Vec<u16> {
    api.history()
        .into_iter()
        .filter(|w| {
            w.resource == Resource::VirtualServices
                && w.verb == Verb::Patch
                && w.user_agent
                    .as_deref()
                    .is_some_and(|a| a.starts_with("canary-guard"))
        })
        .map(|w| w.code)
        .collect()
}

fn problems(s: &serde_json::Value) -> Vec<String> {
    s["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}: {}",
                p["reason"].as_str().unwrap(),
                p["message"].as_str().unwrap()
            )
        })
        .collect()
}

// Row 1: API server faults.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_gone_keeps_proxying_and_rolls_back_as_soon_as_it_returns() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    let guard = start_member(&running, app, "reviews-v2-aaa", "r1", |_| {}).await;
    wait_api(&api, 10, "a leader", |api| holder(api).is_some()).await;
    wait_state(&guard, |s| s["leader"] == true).await;

    api.faults().set_refusing(true);
    // The incident starts while the API is gone: every request is still served.
    send_all_answered(&guard, 200, 20).await;
    send_all_answered(&guard, 500, 20).await;
    // The member lease cannot be written (a VirtualService read may fail first).
    wait_state(&guard, |s| {
        problems(s).iter().any(|p| p.contains("MemberLease"))
    })
    .await;
    // The leader stepped down (it cannot renew) and nothing was written.
    wait_state(&guard, |s| s["leader"] == false).await;
    checks(&guard, 10).await;
    send_all_answered(&guard, 500, 10).await;
    let page = metrics(&guard).await;
    assert!(
        series(
            &page,
            "canary_guard_kube_errors_total{op=\"lease_publish\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{page}"
    );
    assert!(vs_patch_codes(&api).is_empty());

    let back = tokio::time::Instant::now();
    api.faults().set_refusing(false);
    wait_api(&api, 10, "the pending rollback", |api| {
        weights(api) == (100, 0)
    })
    .await;
    // Re-acquire (one retry period), then the failure threshold (2 checks of 200 ms).
    assert!(
        back.elapsed() < Duration::from_secs(3),
        "took {:?}",
        back.elapsed()
    );
    assert_eq!(vs_patch_codes(&api), [200]);
    wait_api(&api, 5, "the rollback Event", |api| {
        events(api, "CanaryRollback").len() == 1
    })
    .await;
    wait_state(&guard, |s| s["problems"].as_array().unwrap().is_empty()).await;
    checks(&guard, 10).await;
    assert_eq!(vs_patch_codes(&api), [200]);
    assert_eq!(events(&api, "CanaryRollback").len(), 1);
    // An API outage is no fault of the VirtualService: no Warning Event about it.
    assert!(events(&api, "VirtualServiceInvalid").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_500s_on_the_patch_are_retried_with_capped_backoff_then_written_once() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    let failing = api.faults().add(
        FaultRule::status(500)
            .verb(Verb::Patch)
            .resource(Resource::VirtualServices),
    );
    let guard = start_member(&running, app, "reviews-v2-aaa", "r1", |_| {}).await;
    send_all_answered(&guard, 500, 30).await;
    wait_api(&api, 10, "a first failed patch", |api| {
        !vs_patch_codes(api).is_empty()
    })
    .await;
    let first = tokio::time::Instant::now();
    let s = wait_state(&guard, |s| {
        problems(s)
            .iter()
            .any(|p| p.starts_with("KubernetesApiError"))
    })
    .await;
    assert!(problems(&s)[0].contains("500"), "{s}");
    // 6 s of failures: 200 ms doubling to a 5 s cap (jittered down to half) is at
    // most 7 attempts; one per check (every 200 ms) would be 30.
    wait_api(&api, 10, "more attempts", |api| {
        vs_patch_codes(api).len() >= 4
    })
    .await;
    // The canary keeps failing all along (the window is 10 s).
    while first.elapsed() < Duration::from_secs(6) {
        send_all_answered(&guard, 500, 5).await;
        checks(&guard, 1).await;
    }
    let attempts = vs_patch_codes(&api).len();
    assert!((4..=8).contains(&attempts), "{attempts} attempts in 6 s");
    let page = metrics(&guard).await;
    assert!(
        series(
            &page,
            "canary_guard_kube_errors_total{op=\"virtualservice\"}"
        )
        .unwrap()
            >= 4.0
    );

    api.faults().remove(failing);
    let healed = tokio::time::Instant::now();
    while weights(&api) != (100, 0) {
        assert!(healed.elapsed() < Duration::from_secs(10), "no rollback");
        send_all_answered(&guard, 500, 5).await;
        checks(&guard, 1).await;
    }
    assert!(
        healed.elapsed() <= Duration::from_millis(5_500),
        "{:?}",
        healed.elapsed()
    );
    let codes = vs_patch_codes(&api);
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    wait_state(&guard, |s| s["problems"].as_array().unwrap().is_empty()).await;
    assert!(events(&api, "VirtualServiceInvalid").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_429_retry_after_is_honoured_not_hammered() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    api.faults().add(
        FaultRule::new(FaultAction::Status {
            code: 429,
            retry_after: Some(2),
        })
        .verb(Verb::Patch)
        .resource(Resource::VirtualServices)
        .times(1),
    );
    let guard = start_member(&running, app, "reviews-v2-aaa", "r1", |_| {}).await;
    send_all_answered(&guard, 500, 30).await;
    wait_api(&api, 10, "the rollback", |api| weights(api) == (100, 0)).await;
    let patches: Vec<_> = api
        .history()
        .into_iter()
        .filter(|w| w.resource == Resource::VirtualServices && w.verb == Verb::Patch)
        .collect();
    assert_eq!(
        patches.iter().map(|w| w.code).collect::<Vec<_>>(),
        [429, 200]
    );
    // No retry inside the client, and ours waited for the Retry-After.
    let gap = patches[1].at - patches[0].at;
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}");
    assert!(gap < Duration::from_secs(4), "retried after {gap:?}");
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_slow_answers_still_roll_back_once() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    // Every call takes 300 ms: slower than a check interval, within the call bound (1 s).
    api.faults()
        .add(FaultRule::new(FaultAction::Delay(Duration::from_millis(
            300,
        ))));
    let guard = start_member(&running, app, "reviews-v2-aaa", "r1", |_| {}).await;
    send_all_answered(&guard, 200, 10).await;
    send_all_answered(&guard, 500, 30).await;
    wait_api(&api, 20, "the rollback", |api| weights(api) == (100, 0)).await;
    wait_api(&api, 5, "the Event", |api| {
        events(api, "CanaryRollback").len() == 1
    })
    .await;
    checks(&guard, 10).await;
    assert_eq!(vs_writes(&api).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_that_never_answers_is_cut_off_and_a_late_write_is_not_repeated() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    let guard = start_member(&running, app, "reviews-v2-aaa", "r1", |_| {}).await;
    wait_state(&guard, |s| s["leader"] == true).await;
    // Reads of the VirtualService hang: the leader reports it and keeps judging.
    let hang = api.faults().add(
        FaultRule::new(FaultAction::Delay(Duration::from_secs(3600)))
            .verb(Verb::Get)
            .resource(Resource::VirtualServices),
    );
    let s = wait_state(&guard, |s| {
        problems(s).iter().any(|p| p.contains("did not answer"))
    })
    .await;
    assert_eq!(s["leader"], true);
    api.faults().remove(hang);
    wait_state(&guard, |s| s["problems"].as_array().unwrap().is_empty()).await;

    // The rollback patch lands after the guard stopped waiting for its answer.
    api.faults().add(
        FaultRule::new(FaultAction::Delay(Duration::from_millis(1_500)))
            .verb(Verb::Patch)
            .resource(Resource::VirtualServices)
            .times(1),
    );
    send_all_answered(&guard, 500, 30).await;
    wait_api(&api, 10, "the rollback", |api| weights(api) == (100, 0)).await;
    wait_api(&api, 10, "the Event", |api| {
        events(api, "CanaryRollback").len() == 1
    })
    .await;
    checks(&guard, 15).await;
    assert_eq!(vs_writes(&api).len(), 1, "{:?}", vs_writes(&api));
    assert_eq!(events(&api, "CanaryRollback").len(), 1);
}

// Row 2: leadership.

/// `--lease-duration` of the guards (`guard_flags`).
const LEASE_DURATION: Duration = Duration::from_secs(3);

/// Holds every VirtualService patch `pod` sends at a gate, until the test opens it.
fn hold_vs_patches(api: &EmbeddedApi, pod: &str) -> Gate {
    let gate = Gate::new();
    api.faults().add(
        FaultRule::new(FaultAction::Hold(gate.clone()))
            .verb(Verb::Patch)
            .resource(Resource::VirtualServices)
            .user_agent(&user_agent(pod)),
    );
    gate
}

/// Cuts `pod` off from the API: its requests from now on are dropped (those already
/// held at a gate stay held).
fn partition(api: &EmbeddedApi, pod: &str) {
    api.faults()
        .add(FaultRule::new(FaultAction::Drop).user_agent(&user_agent(pod)));
}

/// The VirtualService patches `pod` sent that reached the store, answered or failed.
fn vs_patches_by(api: &EmbeddedApi, pod: &str) -> Vec<WriteRecord> {
    let agent = user_agent(pod);
    api.history()
        .into_iter()
        .filter(|w| {
            w.resource == Resource::VirtualServices
                && w.verb == Verb::Patch
                && w.user_agent.as_deref() == Some(agent.as_str())
        })
        .collect()
}

/// The rollback record on the VirtualService.
fn record(api: &EmbeddedApi) -> serde_json::Value {
    let vs = api.get(Resource::VirtualServices, NS, VS).unwrap();
    serde_json::from_str(
        vs["metadata"]["annotations"]["canary-guard.io/rollback"]
            .as_str()
            .unwrap(),
    )
    .unwrap()
}

/// Leads as `old` until it has sent a VirtualService patch (held by `gate`), then cuts
/// it off from the API so its lease runs out while the patch is in flight.
async fn stall_the_leader_mid_write(api: &EmbeddedApi, gate: &Gate, old: &str) {
    tokio::time::timeout(Duration::from_secs(15), gate.arrived(1))
        .await
        .expect("the leader never sent its patch");
    // Sent after the leader checked its lease, and it still holds it.
    assert_eq!(holder(api).as_deref(), Some(old));
    partition(api, old);
}

/// Lets the held patches of `old` reach the store and checks that each one landed in
/// `new`'s term and failed (a `test` op no longer held), so none overwrote `new`'s write.
async fn release_late_patches(api: &EmbeddedApi, gate: &Gate, old: &str, new: &str) {
    gate.open();
    let held = gate.arrivals();
    wait_api(api, 10, "the old leader's late patches", |api| {
        vs_patches_by(api, old).len() == held
    })
    .await;
    let began = term_began(api, new).expect("the new leader's term");
    for w in vs_patches_by(api, old) {
        assert!(w.at > began, "landed before the new term: {w:?}");
        assert_eq!(
            w.code, 422,
            "the old leader's late patch was not refused by its test ops: {w:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stalled_mid_rollback_cannot_overwrite_its_successor() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    let (old, new) = ("reviews-v2-old", "reviews-v2-new");
    let gate = hold_vs_patches(&api, old);
    let a = start_member(&running, app, old, "r1", |_| {}).await;
    wait_api(&api, 10, "the first leader", |api| {
        holder(api).as_deref() == Some(old)
    })
    .await;
    let b = start_member(&running, app, new, "r1", |_| {}).await;

    // The incident: the leader checks its lease, reads 90/10 and sends its rollback,
    // which hangs at the API; meanwhile it is cut off and its lease runs out.
    send_all_answered(&a, 500, 30).await;
    stall_the_leader_mid_write(&api, &gate, old).await;
    wait_api(&api, 15, "a new leader", |api| {
        holder(api).as_deref() == Some(new)
    })
    .await;
    send_all_answered(&b, 500, 30).await;
    wait_api(&api, 10, "the new leader's rollback", |api| {
        weights(api) == (100, 0)
    })
    .await;

    release_late_patches(&api, &gate, old, new).await;
    // Rolled back exactly once, by the new leader, and announced once.
    let writes = vs_writes(&api);
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(
        writes[0].user_agent.as_deref(),
        Some(user_agent(new).as_str())
    );
    assert_eq!(weights(&api), (100, 0));
    wait_api(&api, 5, "the rollback Event", |api| {
        events(api, "CanaryRollback").len() == 1
    })
    .await;
    assert_terms_never_overlap(&api, LEASE_DURATION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reassert_from_a_deposed_leader_cannot_undo_its_successors_restore() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    // GitOps put 90/10 back over a rollback of r1 whose record is still in force.
    let previous = json!([{
        "kind": "http", "index": 0, "name": "reviews-route",
        "weights": [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
            {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10}
        ]
    }]);
    let earlier = json!({
        "time": "2025-01-01T00:00:00Z", "reason": "error ratio 0.5 > 0.05",
        "group": "reviews", "canaryRevision": "r1", "previous": previous
    });
    let mut vs = virtual_service();
    vs["metadata"]["annotations"] = json!({"canary-guard.io/rollback": earlier.to_string()});
    api.seed(Resource::VirtualServices, vs).unwrap();
    let (old, new) = ("reviews-v2-old", "reviews-v2-new");
    let gate = hold_vs_patches(&api, old);
    let member_lease = members::lease_name("reviews", old);

    // r1 still runs, so the leader re-asserts the rollback at its first look.
    let _a = start_member(&running, app, old, "r1", |_| {}).await;
    wait_api(&api, 10, "the old member's lease", |api| {
        api.get(Resource::Leases, NS, &member_lease).is_ok()
    })
    .await;
    stall_the_leader_mid_write(&api, &gate, old).await;
    // r2 rolls out: the old pod goes, and its member lease with it (owner reference).
    // A publish in flight is an update, which now finds nothing; its create is dropped.
    api.delete(Resource::Leases, NS, &member_lease).unwrap();
    let _b = start_member(&running, app, new, "r2", |_| {}).await;
    // Only r2 runs: the new leader gives it its trial and restores the weights.
    wait_api(&api, 15, "the new leader's restore", |api| {
        record(api)["restoredAt"].is_string()
    })
    .await;
    assert_eq!(holder(&api).as_deref(), Some(new));

    // The old leader's re-assert was planned on the same 90/10 it now finds; only the
    // changed record gives it away.
    release_late_patches(&api, &gate, old, new).await;
    assert_eq!(weights(&api), (90, 10));
    assert!(record(&api)["restoredAt"].is_string(), "{}", record(&api));
    let writes = vs_writes(&api);
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(
        writes[0].user_agent.as_deref(),
        Some(user_agent(new).as_str())
    );
    assert_terms_never_overlap(&api, LEASE_DURATION);
}

// Row 3: conflicts with other writers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_fighting_back_is_reasserted_at_a_bounded_rate() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    let guard = start_member(&running, app, "reviews-v2-bad", "r1", |_| {}).await;
    send_all_answered(&guard, 500, 30).await;
    wait_api(&api, 10, "the rollback", |api| weights(api) == (100, 0)).await;

    // GitOps puts 90/10 back every second (5 checks of 200 ms) for 8 seconds.
    let start = tokio::time::Instant::now();
    let before = vs_writes(&api).len();
    let mut reverts = 0;
    while start.elapsed() < Duration::from_secs(8) {
        api.patch(
            Resource::VirtualServices,
            NS,
            VS,
            canary_guard_test_api::embedded_api::PatchType::Merge,
            serde_json::json!({"spec": virtual_service()["spec"].clone()}),
        )
        .unwrap();
        reverts += 1;
        send_all_answered(&guard, 500, 3).await;
        checks(&guard, 5).await;
    }
    let ours = vs_writes(&api).len() - before;
    // One look every 2 s: at most 5 re-asserts in 8 s, whatever GitOps does.
    assert!(reverts >= 7, "{reverts} reverts");
    assert!(
        (2..=5).contains(&ours),
        "{ours} re-asserts for {reverts} reverts"
    );
    wait_api(&api, 5, "the last re-assert", |api| {
        weights(api) == (100, 0)
    })
    .await;
    let reasserted = events(&api, "CanaryRollbackReasserted").len();
    assert!((2..=6).contains(&reasserted), "{reasserted} Events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_service_deleted_then_recreated_is_reported_then_rolled_back() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    api.delete(Resource::VirtualServices, NS, VS).unwrap();
    let guard = start_member(&running, app, "reviews-v2-aaa", "r1", |_| {}).await;
    send_all_answered(&guard, 500, 30).await;
    let s = wait_state(&guard, |s| {
        problems(s)
            .iter()
            .any(|p| p.starts_with("VirtualServiceNotFound"))
    })
    .await;
    assert!(problems(&s)[0].contains("reviews"), "{s}");
    // The gauge behind the CanaryGuardVirtualServiceProblem alert.
    let problem = "canary_guard_virtualservice_problem{reason=\"VirtualServiceNotFound\"}";
    wait_metrics(&guard, |p| series(p, problem) == Some(1.0)).await;
    checks(&guard, 10).await;
    assert_eq!(events(&api, "VirtualServiceInvalid").len(), 1);

    api.seed(Resource::VirtualServices, virtual_service())
        .unwrap();
    while weights(&api) != (100, 0) {
        send_all_answered(&guard, 500, 5).await;
        checks(&guard, 1).await;
    }
    assert_eq!(vs_writes(&api).len(), 1);
    wait_state(&guard, |s| s["problems"].as_array().unwrap().is_empty()).await;
    assert_eq!(events(&api, "VirtualServiceInvalid").len(), 1);
    wait_metrics(&guard, |p| series(p, problem) == Some(0.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_destination_renamed_is_a_clear_error_and_no_write() {
    let app = start_app().await;
    let api = EmbeddedApi::new();
    let mut vs = virtual_service();
    vs["spec"]["http"][0]["route"][1]["destination"]["subset"] = "v3".into();
    api.seed(Resource::VirtualServices, vs.clone()).unwrap();
    let running = api.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let guard = start_member(&running, app, "reviews-v2-aaa", "r1", |_| {}).await;
    send_all_answered(&guard, 500, 30).await;
    let s = wait_state(&guard, |s| {
        problems(s)
            .iter()
            .any(|p| p.starts_with("VirtualServiceInvalid"))
    })
    .await;
    let shown = problems(&s).join("\n");
    assert!(
        shown.contains("v2"),
        "the message names the canary: {shown}"
    );
    wait_api(&api, 5, "the Warning Event", |api| {
        events(api, "VirtualServiceInvalid").len() == 1
    })
    .await;
    send_all_answered(&guard, 500, 10).await;
    checks(&guard, 15).await;
    assert!(vs_writes(&api).is_empty());
    assert_eq!(
        api.get(Resource::VirtualServices, NS, VS).unwrap()["spec"],
        vs["spec"]
    );
    assert_eq!(events(&api, "VirtualServiceInvalid").len(), 1);
}

// Row 6: bad peer data.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_member_summaries_are_ignored_counted_and_never_roll_back() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    let guard = start_member(&running, app, "reviews-v2-aaa", "r1", |_| {}).await;
    wait_state(&guard, |s| s["leader"] == true).await;
    send_all_answered(&guard, 200, 30).await;
    api.seed(
        Resource::Leases,
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "canary-guard-reviews-evil", "namespace": NS,
                         "labels": {"canary-guard.io/group": "reviews"}},
            "spec": {"holderIdentity": "evil"}
        }),
    )
    .unwrap();
    let huge = format!(
        r#"{{"v":1,"s":10,"n":1000,"e":1000,"pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    let bad = [
        ("malformed", "{not json".to_string()),
        ("too_large", huge),
        // A newer guard's failing window must not be read as ours.
        (
            "unknown_version",
            r#"{"v":2,"s":10,"n":1000,"e":1000,"h":[]}"#.into(),
        ),
        (
            "implausible",
            r#"{"v":1,"s":10,"n":100,"e":1000,"h":[]}"#.into(),
        ),
        (
            "implausible",
            r#"{"v":1,"s":10,"n":18446744073709551615,"e":18446744073709551615,"h":[]}"#.into(),
        ),
        (
            "implausible",
            r#"{"v":1,"s":10,"n":30,"e":0,"h":[[300,100000]]}"#.into(),
        ),
        (
            "malformed",
            r#"{"v":1,"s":10,"n":30,"e":0,"h":[[99999,1]]}"#.into(),
        ),
    ];
    for (i, (_, summary)) in bad.iter().enumerate() {
        api.patch(
            Resource::Leases,
            NS,
            "canary-guard-reviews-evil",
            canary_guard_test_api::embedded_api::PatchType::Merge,
            serde_json::json!({"metadata": {"annotations": {"canary-guard.io/summary": summary}}}),
        )
        .unwrap();
        let page_has = |page: &str| {
            let total: f64 = ["malformed", "too_large", "unknown_version", "implausible"]
                .iter()
                .filter_map(|r| {
                    series(
                        page,
                        &format!("canary_guard_member_summaries_rejected_total{{reason=\"{r}\"}}"),
                    )
                })
                .sum();
            total >= (i + 1) as f64
        };
        let mut seen = false;
        for _ in 0..50 {
            if page_has(&metrics(&guard).await) {
                seen = true;
                break;
            }
            checks(&guard, 1).await;
        }
        assert!(
            seen,
            "summary {i} was not rejected: {}\n{}",
            api.list(Resource::Leases, Some(NS), None).unwrap(),
            state(&guard).await
        );
    }
    let page = metrics(&guard).await;
    for (reason, want) in [
        ("malformed", 2.0),
        ("too_large", 1.0),
        ("unknown_version", 1.0),
        ("implausible", 3.0),
    ] {
        assert_eq!(
            series(
                &page,
                &format!("canary_guard_member_summaries_rejected_total{{reason=\"{reason}\"}}")
            ),
            Some(want),
            "{reason}"
        );
    }
    checks(&guard, 10).await;
    let s = state(&guard).await;
    assert_eq!(s["verdict"], "healthy", "{s}");
    assert_eq!(s["members"].as_array().unwrap().len(), 1, "{s}");
    assert!(vs_writes(&api).is_empty());
}

// Row 4: bad configuration the cluster shows.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_rbac_is_shown_with_verb_and_resource() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    let no_patch = api.faults().add(
        FaultRule::status(403)
            .verb(Verb::Patch)
            .resource(Resource::VirtualServices),
    );
    let guard = start_member(&running, app, "reviews-v2-aaa", "r1", |_| {}).await;
    send_all_answered(&guard, 500, 30).await;
    let s = wait_state(&guard, |s| {
        problems(s).iter().any(|p| p.starts_with("Forbidden"))
    })
    .await;
    let shown = problems(&s).join("\n");
    assert!(
        shown.contains("patch virtualservices.networking.istio.io reviews in default"),
        "{shown}"
    );
    wait_api(&api, 5, "one Warning Event", |api| {
        events(api, "VirtualServiceInvalid").len() == 1
    })
    .await;
    checks(&guard, 10).await;
    assert_eq!(events(&api, "VirtualServiceInvalid").len(), 1);
    api.faults().remove(no_patch);

    // Without update on leases, the member lease cannot be written: said so, with the verb.
    api.faults().add(
        FaultRule::status(403)
            .verb(Verb::Update)
            .resource(Resource::Leases),
    );
    let s = wait_state(&guard, |s| {
        problems(s)
            .iter()
            .any(|p| p.starts_with("MemberLeaseNotWritten"))
    })
    .await;
    let shown = problems(&s).join("\n");
    assert!(
        shown.contains("cannot update resource \"leases\""),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_carry_the_bearer_token() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    let dir = std::env::temp_dir().join(format!("cg-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = kubeconfig(&running, &dir);
    const TOKEN: &str = "sekret-bearer-token-3f9a";
    let text = std::fs::read_to_string(&kc)
        .unwrap()
        .replace("user: {}", &format!("user:\n    token: {TOKEN}"));
    std::fs::write(&kc, text).unwrap();
    // Every API call fails for a while: errors get logged at debug level and above.
    api.faults().add(FaultRule::status(500).times(8));
    let mut flags = guard_flags(app, "reviews-v2-tok", "r1");
    flags.extend(["--kubeconfig".into(), kc.display().to_string()]);
    let proxy = format!("127.0.0.1:{}", support::process::free_port());
    let admin = format!("127.0.0.1:{}", support::process::free_port());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_canary-guard"))
        .args(["run", "--listen", &proxy, "--admin-listen", &admin])
        .args(&flags)
        .env("CANARY_GUARD_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    // Ends the child if the wait below fails, so no process outlives the test.
    let reaper = KillOnDrop(pid.clone());
    wait_api(
        &api,
        20,
        "the guard to lead once the faults are spent",
        |api| holder(api).as_deref() == Some("reviews-v2-tok"),
    )
    .await;
    std::mem::forget(reaper);
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(
        logs.lines().count() > 10,
        "too few log lines to judge: {logs}"
    );
    assert!(
        !logs.contains(TOKEN),
        "the bearer token appears in the logs"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kills process `pid` when dropped (unless forgotten).
struct KillOnDrop(String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0])
            .status();
    }
}
