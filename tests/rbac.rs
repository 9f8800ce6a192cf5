//! The Role in `deploy/` grants exactly what the guard uses: the writes seen in
//! the embedded API's history over a whole incident (rollback with pause,
//! re-assert, restore with resume, shutdown), plus the reads the code makes.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use canary_guard_test_api::embedded_api::{PatchType, Resource};
use serde_json::{json, Value};
use support::cluster::*;
use support::*;

/// Reads the guard makes (the history records writes only): the elector and the
/// leader get, list and watch leases; the leader gets the VirtualService.
const READS: [(&str, &str); 4] = [
    ("coordination.k8s.io", "leases/get"),
    ("coordination.k8s.io", "leases/list"),
    // The leader's watch of the member leases.
    ("coordination.k8s.io", "leases/watch"),
    ("networking.istio.io", "virtualservices/get"),
];

fn group_of(r: Resource) -> &'static str {
    match r {
        Resource::Leases => "coordination.k8s.io",
        Resource::VirtualServices => "networking.istio.io",
        Resource::Events => "events.k8s.io",
        Resource::Deployments => "apps",
        Resource::Pods => "",
    }
}

fn role_grants() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/base/rbac.yaml"
    ))
    .unwrap();
    let mut grants = BTreeSet::new();
    for doc in text.split("\n---\n") {
        let v: Value = serde_saphyr::from_str(doc).unwrap();
        if v["kind"] != "Role" {
            continue;
        }
        for rule in v["rules"].as_array().unwrap() {
            for g in rule["apiGroups"].as_array().unwrap() {
                for r in rule["resources"].as_array().unwrap() {
                    for verb in rule["verbs"].as_array().unwrap() {
                        grants.insert((
                            g.as_str().unwrap().to_string(),
                            format!("{}/{}", r.as_str().unwrap(), verb.as_str().unwrap()),
                        ));
                    }
                }
            }
        }
    }
    grants
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_grants_exactly_what_a_whole_incident_uses() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    api.seed(
        Resource::Deployments,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "reviews-v2", "namespace": NS},
               "spec": {"selector": {"matchLabels": {"app": "reviews"}},
                        "template": {"metadata": {"labels": {"app": "reviews"}},
                                     "spec": {"containers": [{"name": "app", "image": "reviews:2"}]}}}}),
    )
    .unwrap();
    let pause = |c: &mut canary_guard::config::ClusterConfig| {
        c.deployment = Some("reviews-v2".into());
        c.on_rollback = canary_guard::config::OnRollback::Pause;
    };
    let bad = start_member(&running, app, "reviews-v2-bad", "r1", pause).await;
    send(&bad, "/status/500", 30).await;
    let paused = |api: &canary_guard_test_api::embedded_api::EmbeddedApi| {
        api.get(Resource::Deployments, NS, "reviews-v2").unwrap()["spec"]["paused"] == true
    };
    tokio::time::timeout(
        std::time::Duration::from_secs(15),
        api.wait_for(|api| weights(api) == (100, 0) && paused(api)),
    )
    .await
    .expect("rollback and pause");
    api.patch(
        Resource::VirtualServices,
        NS,
        VS,
        PatchType::Merge,
        json!({"spec": virtual_service()["spec"].clone()}),
    )
    .unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(15),
        api.wait_for(|api| weights(api) == (100, 0)),
    )
    .await
    .expect("re-assert");
    let good = start_member(&running, app, "reviews-v2-good", "r2", pause).await;
    bad.shutdown();
    bad.wait().await;
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        api.wait_for(|api| weights(api) == (90, 10) && !paused(api)),
    )
    .await
    .expect("restore and resume");
    good.shutdown();
    good.wait().await;

    let mut used: BTreeSet<(String, String)> = READS
        .iter()
        .map(|(g, rv)| (g.to_string(), rv.to_string()))
        .collect();
    let mut by_resource: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for w in api.history() {
        if w.user_agent
            .as_deref()
            .is_some_and(|a| a.starts_with("canary-guard"))
            && w.succeeded()
        {
            used.insert((
                group_of(w.resource).to_string(),
                format!("{}/{}", w.resource.plural(), w.verb.as_str()),
            ));
            by_resource
                .entry(w.resource.plural().to_string())
                .or_default()
                .insert(w.verb.as_str());
        }
    }
    // Every grant was used, and nothing was used that is not granted.
    let grants = role_grants();
    assert_eq!(used, grants, "used {by_resource:?}");
}
