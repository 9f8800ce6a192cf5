//! A guard group against the embedded Kubernetes API.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::ms;

use canary_guard::cluster::virtual_service::RouteTargets;
use canary_guard::config::{ClusterConfig, ElectionTimings, GuardConfig};
use canary_guard::domain::routes::CanaryTarget;
use canary_guard::runtime::guard::{self, Guard};
use canary_guard_test_api::embedded_api::{EmbeddedApi, Resource, RunningApi, Verb, WriteRecord};
use serde_json::{json, Value};

pub const NS: &str = "default";
pub const VS: &str = "reviews";

/// The VirtualService every test starts from: 90/10 between subsets v1 and v2.
pub fn virtual_service() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": VS, "namespace": NS, "labels": {"app": "reviews"}},
        "spec": {
            "hosts": ["reviews"],
            "gateways": ["mesh"],
            "http": [{
                "name": "reviews-route",
                "match": [{"uri": {"prefix": "/"}}],
                "retries": {"attempts": 2},
                "route": [
                    {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                    {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10}
                ]
            }]
        }
    })
}

/// The embedded API, serving, with the VirtualService seeded.
pub async fn start_api() -> (EmbeddedApi, RunningApi) {
    let api = EmbeddedApi::new();
    api.seed(Resource::VirtualServices, virtual_service())
        .unwrap();
    let running = api.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (api, running)
}

/// Flags for a guard of group `reviews` in front of `app`.
pub fn guard_flags(app: SocketAddr, pod: &str, revision: &str) -> Vec<String> {
    let mut flags = vec!["--upstream".to_owned(), format!("http://{app}")];
    flags.extend(group_flags(NS, pod, revision));
    flags
}

/// Identity, VirtualService and fast timings of guard `pod` of group `reviews`.
pub fn group_flags(namespace: &str, pod: &str, revision: &str) -> Vec<String> {
    [
        "--group",
        "reviews",
        "--namespace",
        namespace,
        "--pod-name",
        pod,
        "--revision",
        revision,
        "--virtual-service",
        VS,
        "--canary-host",
        "reviews",
        "--canary-subset",
        "v2",
        "--interval",
        "200ms",
        "--publish-interval",
        "500ms",
        "--window",
        "10s",
        "--lease-duration",
        "3s",
        "--renew-deadline",
        "2s",
        "--retry-period",
        "500ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The `User-Agent` of the guard `pod` started by [`start_member`], so the write history
/// and fault rules can tell the members apart.
pub fn user_agent(pod: &str) -> String {
    format!("canary-guard/test ({pod})")
}

/// The configuration [`guard_flags`] describe, for a guard in this process.
pub fn member_config(app: SocketAddr, pod: &str, revision: &str) -> GuardConfig {
    let targets = RouteTargets {
        canary: CanaryTarget::new(Some("reviews".into()), Some("v2".into())).unwrap(),
        stable: None,
        route: None,
    };
    let mut cluster = ClusterConfig::new("reviews", pod, VS, targets);
    cluster.namespace = Some(NS.into());
    cluster.revision = Some(revision.into());
    cluster.publish_interval = ms(500);
    cluster.election = ElectionTimings {
        lease_duration: ms(3000),
        renew_deadline: ms(2000),
        retry_period: ms(500),
    };
    let mut config = super::guard_config(app);
    config.interval = ms(200);
    config.window = ms(10_000);
    config.cluster = Some(cluster);
    config
}

/// A guard in this process, talking to the embedded API, with `configure`'s
/// changes to [`member_config`].
pub async fn start_member(
    running: &RunningApi,
    app: SocketAddr,
    pod: &str,
    revision: &str,
    configure: impl FnOnce(&mut ClusterConfig),
) -> Guard {
    let mut config = member_config(app, pod, revision);
    configure(config.cluster.as_mut().unwrap());
    let client = running.client(NS, &user_agent(pod)).unwrap();
    guard::start_with_client(&config, Some(client))
        .await
        .unwrap()
}

/// A kubeconfig file pointing at the embedded API, for guards run as processes.
pub fn kubeconfig(running: &RunningApi, dir: &std::path::Path) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: embedded\n  cluster:\n    server: {}\nusers:\n- name: guard\n  user: {{}}\ncontexts:\n- name: embedded\n  context:\n    cluster: embedded\n    user: guard\n    namespace: {NS}\ncurrent-context: embedded\n",
        running.url()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Successful writes to the VirtualService by a guard.
pub fn vs_writes(api: &EmbeddedApi) -> Vec<WriteRecord> {
    api.history()
        .into_iter()
        .filter(|w| {
            w.resource == Resource::VirtualServices
                && w.verb != Verb::Create
                && w.succeeded()
                && w.user_agent
                    .as_deref()
                    .is_some_and(|a| a.starts_with("canary-guard"))
        })
        .collect()
}

/// Successful writes of the group's leader lease, oldest first.
pub fn leader_lease_writes(api: &EmbeddedApi) -> Vec<WriteRecord> {
    api.history()
        .into_iter()
        .filter(|w| {
            w.resource == Resource::Leases && w.name == "canary-guard-reviews" && w.succeeded()
        })
        .collect()
}

/// The holder named by a lease write (`""` when released).
pub fn lease_holder(w: &WriteRecord) -> &str {
    w.object
        .as_ref()
        .and_then(|o| o["spec"]["holderIdentity"].as_str())
        .unwrap_or("")
}

/// Asserts from the leader lease's write history that terms never overlap: the holder
/// changes only once the previous holder's last write is `lease_duration` old (a release
/// by the holder ends its term at once).
pub fn assert_terms_never_overlap(api: &EmbeddedApi, lease_duration: std::time::Duration) {
    let writes = leader_lease_writes(api);
    for pair in writes.windows(2) {
        let (prev, next) = (lease_holder(&pair[0]), lease_holder(&pair[1]));
        if !prev.is_empty() && !next.is_empty() && prev != next {
            let gap = pair[1].at.duration_since(pair[0].at);
            assert!(
                gap >= lease_duration,
                "{next} took over from {prev} after {gap:?}, before the lease lapsed"
            );
        }
    }
}

/// When `pod`'s first term as leader began: its first successful write of the leader lease.
pub fn term_began(api: &EmbeddedApi, pod: &str) -> Option<tokio::time::Instant> {
    leader_lease_writes(api)
        .iter()
        .find(|w| lease_holder(w) == pod)
        .map(|w| w.at)
}

/// Events created with this reason.
pub fn events(api: &EmbeddedApi, reason: &str) -> Vec<Value> {
    api.list(Resource::Events, Some(NS), None).unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == reason)
        .cloned()
        .collect()
}

/// `(v1, v2)` weights of the VirtualService's route.
pub fn weights(api: &EmbeddedApi) -> (i64, i64) {
    let vs = api.get(Resource::VirtualServices, NS, VS).unwrap();
    let route = &vs["spec"]["http"][0]["route"];
    (
        route[0]["weight"].as_i64().unwrap_or(0),
        route[1]["weight"].as_i64().unwrap_or(0),
    )
}

/// The holder of the group's leader lease.
pub fn holder(api: &EmbeddedApi) -> Option<String> {
    api.get(Resource::Leases, NS, "canary-guard-reviews")
        .ok()
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
        .filter(|h| !h.is_empty())
}

/// Sends `n` requests for `path` through a guard's proxy.
pub async fn send(guard: &Guard, path: &str, n: usize) {
    let c = super::http1();
    for _ in 0..n {
        super::get(&c, &format!("http://{}{path}", guard.proxy_addr.unwrap())).await;
    }
}

/// Waits for `cond` on the API, re-checking after every write; fails after `secs`.
pub async fn wait_api(
    api: &EmbeddedApi,
    secs: u64,
    what: &str,
    cond: impl FnMut(&EmbeddedApi) -> bool,
) {
    tokio::time::timeout(std::time::Duration::from_secs(secs), api.wait_for(cond))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"));
}
