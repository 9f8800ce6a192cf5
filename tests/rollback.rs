//! The cluster loop against the embedded Kubernetes API: a healthy canary is
//! left alone, a failing one is rolled back exactly once, the rollback
//! survives the leader's death and GitOps, and a new revision gets its trial.

mod support;

use std::time::Duration;

use canary_guard_test_api::embedded_api::{Resource, Verb};
use support::cluster::*;
use support::process::free_port;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_is_never_touched() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    let a = start_member(&running, app, "reviews-v2-aaa", "r1", |_| {}).await;
    let b = start_member(&running, app, "reviews-v2-bbb", "r1", |_| {}).await;
    wait_api(&api, 10, "a leader", |api| holder(api).is_some()).await;
    let leader = if holder(&api).as_deref() == Some("reviews-v2-aaa") {
        &a
    } else {
        &b
    };
    for _ in 0..4 {
        send(&a, "/status/200", 20).await;
        send(&b, "/status/404", 10).await;
    }
    // Let the leader judge the full window several times over.
    wait_state(leader, |s| {
        s["aggregate"]["requests"] == 120 && s["members"].as_array().unwrap().len() == 2
    })
    .await;
    let mut checks = leader.checks.clone();
    for _ in 0..10 {
        checks.changed().await.unwrap();
    }
    assert_eq!(leader.state.read().verdict.as_str(), "healthy");
    assert!(
        vs_writes(&api).is_empty(),
        "a healthy canary was written to"
    );
    assert_eq!(weights(&api), (90, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_canary_is_rolled_back_once_with_record_and_event() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    let before = api.get(Resource::VirtualServices, NS, VS).unwrap();
    let guards = [
        start_member(&running, app, "reviews-v2-aaa", "r1", |c| {
            c.deployment = Some("reviews-v2".into())
        })
        .await,
        start_member(&running, app, "reviews-v2-bbb", "r1", |c| {
            c.deployment = Some("reviews-v2".into())
        })
        .await,
        start_member(&running, app, "reviews-v2-ccc", "r1", |c| {
            c.deployment = Some("reviews-v2".into())
        })
        .await,
    ];
    for g in &guards {
        send(g, "/status/200", 10).await;
        send(g, "/status/503", 10).await;
    }
    wait_api(&api, 15, "a rollback", |api| weights(api) == (100, 0)).await;
    let writes = vs_writes(&api);
    assert_eq!(writes.len(), 1, "expected exactly one write: {writes:?}");
    assert_eq!(writes[0].verb, Verb::Patch);
    assert_eq!(writes[0].field_manager.as_deref(), Some("canary-guard"));

    let after = api.get(Resource::VirtualServices, NS, VS).unwrap();
    // Nothing but the weights and our annotation changed.
    let mut expected = before["spec"].clone();
    expected["http"][0]["route"][0]["weight"] = 100.into();
    expected["http"][0]["route"][1]["weight"] = 0.into();
    assert_eq!(after["spec"], expected);
    assert_eq!(after["metadata"]["labels"], before["metadata"]["labels"]);
    let record: serde_json::Value = serde_json::from_str(
        after["metadata"]["annotations"]["canary-guard.io/rollback"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["group"], "reviews");
    assert_eq!(record["canaryRevision"], "r1");
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.contains("error ratio") && reason.contains("> 0.05"),
        "{record}"
    );
    assert!(record["time"].as_str().is_some());
    assert_eq!(record["previous"][0]["weights"][1]["weight"], 10);

    // Events follow the patch.
    wait_api(&api, 5, "two rollback Events", |api| {
        events(api, "CanaryRollback").len() == 2
    })
    .await;
    let ev = events(&api, "CanaryRollback");
    let kinds: Vec<_> = ev
        .iter()
        .map(|e| e["regarding"]["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds.len(), 2, "{ev:?}");
    assert!(
        kinds.contains(&"VirtualService".to_string()) && kinds.contains(&"Deployment".to_string())
    );
    assert_eq!(ev[0]["type"], "Warning");

    // The leader reports the rollback; nothing more is written while it holds.
    let leader = guards
        .iter()
        .find(|g| g.state.read().leader)
        .expect("a leader");
    let s = wait_state(leader, |s| s["verdict"] == "rolled_back").await;
    assert_eq!(s["last_rollback"]["canaryRevision"], "r1");
    assert_eq!(s["members"].as_array().unwrap().len(), 3);
    let page = metrics(leader).await;
    assert_eq!(series(&page, "canary_guard_rollbacks_total"), Some(1.0));
    assert_eq!(series(&page, "canary_guard_leader"), Some(1.0));
    let mut checks = leader.checks.clone();
    for _ in 0..15 {
        checks.changed().await.unwrap();
    }
    assert_eq!(vs_writes(&api).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_revert_is_reverted_again_and_a_new_revision_is_restored() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    let bad = start_member(&running, app, "reviews-v2-bad", "r1", |_| {}).await;
    send(&bad, "/status/500", 30).await;
    wait_api(&api, 15, "a rollback", |api| weights(api) == (100, 0)).await;

    // GitOps puts the 90/10 split back (a merge patch of spec.http, as `kubectl apply` would).
    api.patch(
        Resource::VirtualServices,
        NS,
        VS,
        canary_guard_test_api::embedded_api::PatchType::Merge,
        serde_json::json!({"spec": virtual_service()["spec"].clone()}),
    )
    .unwrap();
    assert_eq!(weights(&api), (90, 10));
    wait_api(&api, 15, "the rollback re-asserted", |api| {
        weights(api) == (100, 0)
    })
    .await;
    wait_api(&api, 5, "a re-assert Event", |api| {
        events(api, "CanaryRollbackReasserted").len() == 1
    })
    .await;

    // A new revision rolls out: the bad pod leaves, a new one joins.
    let good = start_member(&running, app, "reviews-v2-good", "r2", |_| {}).await;
    bad.shutdown();
    bad.wait().await;
    wait_api(&api, 20, "the weights restored", |api| {
        weights(api) == (90, 10)
    })
    .await;
    wait_api(&api, 5, "a restore Event", |api| {
        events(api, "CanaryRestored").len() == 1
    })
    .await;
    let vs = api.get(Resource::VirtualServices, NS, VS).unwrap();
    let record: serde_json::Value = serde_json::from_str(
        vs["metadata"]["annotations"]["canary-guard.io/rollback"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(record["restoredAt"].as_str().is_some(), "{record}");
    // rollback, re-assert, restore: three writes in all.
    assert_eq!(vs_writes(&api).len(), 3);
    drop(good);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_the_rollback_completes() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    let dir = std::env::temp_dir().join(format!("cg-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = kubeconfig(&running, &dir);
    // The first leader runs as a process so it can be killed without a chance to release.
    let proxy = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let mut flags = guard_flags(app, "reviews-v2-first", "r1");
    flags.extend([
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--failure-threshold".into(),
        "1000".into(),
    ]);
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_canary-guard"))
        .args(["run", "--listen", &proxy, "--admin-listen", &admin])
        .args(&flags)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_api(&api, 15, "the process to lead", |api| {
        holder(api).as_deref() == Some("reviews-v2-first")
    })
    .await;
    let second = start_member(&running, app, "reviews-v2-second", "r1", |_| {}).await;
    let third = start_member(&running, app, "reviews-v2-third", "r1", |_| {}).await;
    // The incident starts; the first leader would never decide (threshold 1000) and dies.
    let c = http1();
    for _ in 0..20 {
        get(&c, &format!("http://{proxy}/status/500")).await;
    }
    send(&second, "/status/500", 15).await;
    send(&third, "/status/500", 15).await;
    first.kill().unwrap();
    first.wait().unwrap();
    let killed_at = tokio::time::Instant::now();
    wait_api(&api, 20, "the new leader's rollback", |api| {
        weights(api) == (100, 0)
    })
    .await;
    // Lease duration 3 s + retry period 0.5 s (+ jitter) to take over, then 2 checks.
    assert!(
        killed_at.elapsed() < Duration::from_secs(8),
        "took {:?}",
        killed_at.elapsed()
    );
    let new_leader = holder(&api).unwrap();
    assert!(new_leader == "reviews-v2-second" || new_leader == "reviews-v2-third");
    assert_eq!(vs_writes(&api).len(), 1);
    // From the lease's write history: holders only change after the old term lapsed.
    assert_terms_never_overlap(&api, Duration::from_secs(3));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_group_and_restore_puts_the_weights_back() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    let g = start_member(&running, app, "reviews-v2-aaa", "r1", |_| {}).await;
    send(&g, "/status/500", 30).await;
    wait_api(&api, 15, "a rollback", |api| weights(api) == (100, 0)).await;
    let dir = std::env::temp_dir().join(format!("cg-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = kubeconfig(&running, &dir);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_canary-guard"))
            .args(args)
            .args([
                "--kubeconfig",
                kc.to_str().unwrap(),
                "--virtual-service",
                VS,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let status = tokio::task::block_in_place(|| {
        run(&[
            "status",
            "--group",
            "reviews",
            "--canary-subset",
            "v2",
            "--json",
        ])
    });
    let s: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(s["leader"], "reviews-v2-aaa");
    assert_eq!(s["verdict"], "rolled_back");
    assert_eq!(s["members"][0]["pod"], "reviews-v2-aaa");
    assert_eq!(s["aggregate"]["errors"], 30);
    assert_eq!(s["weights"][0]["destinations"][1]["weight"], 0);
    assert_eq!(s["weights"][0]["destinations"][1]["canary"], true);

    // The failed revision is gone; a person restores by hand.
    g.shutdown();
    g.wait().await;
    let out = tokio::task::block_in_place(|| run(&["restore"]));
    assert!(out.starts_with("restored:"), "{out}");
    assert_eq!(weights(&api), (90, 10));
    let again = tokio::task::block_in_place(|| run(&["restore"]));
    assert!(again.starts_with("already restored"), "{again}");
    let text = tokio::task::block_in_place(|| run(&["status", "--group", "reviews"]));
    assert!(
        text.contains("leader: none") && text.contains("restored"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
