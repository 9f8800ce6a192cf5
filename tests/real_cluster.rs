//! The cluster loop on a real kube-apiserver (see `support::realk8s`): guards run as
//! separate processes with the identities of real Pods made by a real Deployment, as in a
//! cluster; the API server, its patch semantics, RBAC and garbage collector are the real
//! ones. Skipped, with the reason, when no API server is configured.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use canary_guard::cluster::virtual_service::{self, RollbackReason, RouteTargets};
use canary_guard::domain::routes::CanaryTarget;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{json, Value};
use support::pod::{pods, GuardProc, PodIdentity};
use support::realk8s::{poll, RealApi};
use support::start_app;

const CANARY: &str = "app=reviews,version=v2";

/// The VirtualService every scenario starts from: a 90/10 http route and an 80/20 tcp
/// route that hold the canary, an http route that does not, and strings with characters
/// Go's encoder escapes (`<`, `>`, `&`) and non-ASCII ones, which must all come back
/// unchanged.
fn virtual_service(namespace: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {
            "name": "reviews",
            "namespace": namespace,
            "labels": {"app": "reviews", "team": "shop"},
            "annotations": {"example.com/owner": "Zoë <shop@example.com> & co"}
        },
        "spec": {
            "hosts": ["reviews"],
            "gateways": ["mesh"],
            "http": [
                {
                    "name": "reviews-route",
                    "match": [{"uri": {"prefix": "/"}}],
                    "retries": {"attempts": 2, "perTryTimeout": "2s"},
                    "timeout": "10s",
                    "headers": {"request": {"set": {"x-note": "a<b & c>d"}}},
                    "route": [
                        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10}
                    ]
                },
                {
                    "name": "ratings-route",
                    "match": [{"uri": {"prefix": "/ratings"}}],
                    "route": [{"destination": {"host": "ratings", "subset": "v1"}, "weight": 100}]
                }
            ],
            "tcp": [{
                "match": [{"port": 9090}],
                "route": [
                    {"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
                    {"destination": {"host": "reviews", "subset": "v2"}, "weight": 20}
                ]
            }]
        }
    })
}

/// The canary Deployment: the controller manager gives its Pods their names, uids and
/// `pod-template-hash`; `Recreate` so a new revision replaces the old Pods at once (no
/// kubelet ever makes the new ones ready).
fn deployment(namespace: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v2
  namespace: {namespace}
  labels: {{app: reviews, version: v2}}
spec:
  replicas: {replicas}
  strategy: {{type: Recreate}}
  selector:
    matchLabels: {{app: reviews, version: v2}}
  template:
    metadata:
      labels: {{app: reviews, version: v2}}
    spec:
      containers:
      - name: reviews
        image: example.com/reviews:2.0.0
"#
    )
}

/// A namespace with the VirtualService and, when `replicas` > 0, the canary Deployment.
async fn scenario(k8s: &RealApi, prefix: &str, replicas: u32) -> (String, kube::Client) {
    let ns = k8s.namespace(prefix).await;
    let client = k8s.client(&ns).await;
    k8s.apply(&serde_json::to_string(&virtual_service(&ns)).unwrap());
    if replicas > 0 {
        k8s.apply(&deployment(&ns, replicas));
    }
    (ns, client)
}

fn vs_api(client: &kube::Client) -> Api<DynamicObject> {
    virtual_service::api(client.clone(), client.default_namespace(), "v1")
}

async fn vs(client: &kube::Client) -> Value {
    serde_json::to_value(vs_api(client).get("reviews").await.unwrap()).unwrap()
}

/// `(v1, v2)` weights of the first http route and of the tcp route.
fn weights(vs: &Value) -> [(i64, i64); 2] {
    let w = |r: &Value| {
        (
            r["route"][0]["weight"].as_i64().unwrap_or(0),
            r["route"][1]["weight"].as_i64().unwrap_or(0),
        )
    };
    [w(&vs["spec"]["http"][0]), w(&vs["spec"]["tcp"][0])]
}

const SPLIT: [(i64, i64); 2] = [(90, 10), (80, 20)];
const ROLLED_BACK: [(i64, i64); 2] = [(100, 0), (100, 0)];

async fn wait_weights(
    client: &kube::Client,
    want: [(i64, i64); 2],
    secs: u64,
    what: &str,
) -> Value {
    poll(secs, what, || async {
        let v = vs(client).await;
        (weights(&v) == want).then_some(v)
    })
    .await
}

/// The record in our annotation.
fn record(vs: &Value) -> Value {
    serde_json::from_str(
        vs["metadata"]["annotations"]["canary-guard.io/rollback"]
            .as_str()
            .expect("a rollback record"),
    )
    .unwrap()
}

/// `vs` with the weights of the canary's routes and our annotation taken out, so the
/// rest can be compared whole.
fn without_our_changes(vs: &Value) -> Value {
    let mut v = json!({
        "metadata": {
            "labels": vs["metadata"]["labels"],
            "annotations": vs["metadata"]["annotations"],
        },
        "spec": vs["spec"],
    });
    if let Some(a) = v["metadata"]["annotations"].as_object_mut() {
        a.remove("canary-guard.io/rollback");
    }
    for pointer in ["/spec/http/0/route", "/spec/tcp/0/route"] {
        for e in v.pointer_mut(pointer).unwrap().as_array_mut().unwrap() {
            e.as_object_mut().unwrap().remove("weight");
        }
    }
    v
}

/// Events about `kind` with `reason`, as `kubectl get events` shows them.
fn events(k8s: &RealApi, ns: &str, reason: &str, kind: &str) -> Vec<Value> {
    let out = k8s.kubectl(&["get", "events", "-n", ns, "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == reason && e["involvedObject"]["kind"] == kind)
        .cloned()
        .collect()
}

async fn wait_event(k8s: &RealApi, ns: &str, reason: &str, kind: &str) -> Value {
    poll(20, &format!("Event {reason} on the {kind}"), || async {
        events(k8s, ns, reason, kind).into_iter().next()
    })
    .await
}

/// `spec.paused` of the canary Deployment, as kubectl prints it.
fn paused(k8s: &RealApi, ns: &str) -> String {
    k8s.kubectl(&[
        "get",
        "deploy",
        "reviews-v2",
        "-n",
        ns,
        "-o",
        "jsonpath={.spec.paused}",
    ])
}

/// `canary-guard COMMAND --kubeconfig PATH`, for `status` and `restore` by hand.
fn cli(command: &str, kubeconfig: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(support::pod::binary());
    cmd.arg(command).arg("--kubeconfig").arg(kubeconfig);
    cmd
}

/// `canary-guard status --json` of group `reviews` in `ns`.
fn status_json(k8s: &RealApi, ns: &str) -> Value {
    let out = cli("status", k8s.kubeconfig())
        .args(["--group", "reviews", "--virtual-service", "reviews"])
        .args(["--canary-subset", "v2", "-n", ns, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The holder of the group's leader lease.
async fn holder(client: &kube::Client) -> Option<String> {
    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    leases
        .get_opt("canary-guard-reviews")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty())
}

async fn start_guards(
    k8s: &RealApi,
    ns: &str,
    pods: &[PodIdentity],
    app: std::net::SocketAddr,
    extra: &[&str],
) -> Vec<GuardProc> {
    let mut guards = Vec::new();
    for p in pods {
        guards.push(GuardProc::start(k8s.kubeconfig(), ns, p, app, extra).await);
    }
    guards
}

/// A JSON merge patch by kubectl, as a GitOps sync or a person would send it.
fn kubectl_merge(k8s: &RealApi, ns: &str, patch: &Value) {
    k8s.kubectl(&[
        "patch",
        "-n",
        ns,
        "virtualservices.networking.istio.io",
        "reviews",
        "--type",
        "merge",
        "-p",
        &patch.to_string(),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_is_never_written() {
    let Some(k8s) = RealApi::shared() else { return };
    let (ns, client) = scenario(&k8s, "healthy", 2).await;
    let app = start_app().await;
    let pods = pods(&client, CANARY, 2, &[]).await;
    let guards = start_guards(&k8s, &ns, &pods, app, &[]).await;
    let before = vs(&client).await;
    let rv = before["metadata"]["resourceVersion"].clone();

    poll(20, "a leader", || holder(&client)).await;
    // 12 s of healthy traffic: 200s and 404s (answers, not failures), 25 rps per guard.
    let until = tokio::time::Instant::now() + Duration::from_secs(12);
    while tokio::time::Instant::now() < until {
        for g in &guards {
            g.send("/status/200", 4, 200).await;
            g.send("/status/404", 1, 404).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leader = holder(&client).await.unwrap();
    let leader = guards.iter().find(|g| g.pod.name == leader).unwrap();
    let s = leader.state().await;
    assert_eq!(s["verdict"], "healthy", "{s}");
    assert!(s["aggregate"]["requests"].as_u64().unwrap() >= 200, "{s}");
    let after = vs(&client).await;
    assert_eq!(
        after["metadata"]["resourceVersion"], rv,
        "a healthy canary was written to"
    );
    assert_eq!(weights(&after), SPLIT);
}

/// The whole incident: rollback, a GitOps revert re-asserted, the leader killed and the
/// revert re-asserted again, a new revision restored; with `--on-rollback=pause`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_is_rolled_back_reasserted_and_restored_for_a_new_revision() {
    let Some(k8s) = RealApi::shared() else { return };
    let (ns, client) = scenario(&k8s, "incident", 3).await;
    let app = start_app().await;
    let bad = pods(&client, CANARY, 3, &[]).await;
    let bad_revision = bad[0].revision.clone();
    let extra = ["--deployment", "reviews-v2", "--on-rollback", "pause"];
    let mut guards = start_guards(&k8s, &ns, &bad, app, &extra).await;
    let before = vs(&client).await;
    poll(20, "a leader", || holder(&client)).await;

    // Half the canary's requests fail.
    for _ in 0..3 {
        for g in &guards {
            g.send("/status/200", 10, 200).await;
            g.send("/status/503", 10, 503).await;
        }
    }
    let after = wait_weights(&client, ROLLED_BACK, 30, "the rollback").await;
    // Every other route, field, label and annotation is kept, byte for byte.
    assert_eq!(without_our_changes(&after), without_our_changes(&before));
    let rec = record(&after);
    assert_eq!(rec["canaryRevision"], bad_revision.as_str());
    assert_eq!(rec["group"], "reviews");
    assert!(rec["reason"].as_str().unwrap().contains(" > "), "{rec}");
    assert_eq!(rec["previous"].as_array().unwrap().len(), 2, "{rec}");
    // Events on the VirtualService and on the Deployment, as `kubectl get events` shows.
    let ev = wait_event(&k8s, &ns, "CanaryRollback", "VirtualService").await;
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["involvedObject"]["name"], "reviews");
    wait_event(&k8s, &ns, "CanaryRollback", "Deployment").await;
    // --on-rollback=pause: the Deployment is paused, and kubectl says so.
    let paused = paused(&k8s, &ns);
    assert_eq!(paused, "true");
    // What `kubectl get deploy` and `describe` show: the controller saw the pause.
    poll(
        20,
        "the controller to report the rollout paused",
        || async {
            let reason = k8s.kubectl(&[
                "get",
                "deploy",
                "reviews-v2",
                "-n",
                &ns,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}",
            ]);
            (reason == "DeploymentPaused").then_some(())
        },
    )
    .await;

    // A GitOps sync puts the split back while the failed revision runs: re-asserted.
    let split = json!({"spec": {"http": before["spec"]["http"], "tcp": before["spec"]["tcp"]}});
    kubectl_merge(&k8s, &ns, &split);
    wait_weights(&client, ROLLED_BACK, 20, "the rollback re-asserted").await;
    wait_event(&k8s, &ns, "CanaryRollbackReasserted", "VirtualService").await;

    // The leader dies without a word; the split comes back again; a new leader re-asserts.
    let first = holder(&client).await.unwrap();
    let i = guards.iter().position(|g| g.pod.name == first).unwrap();
    guards[i].kill();
    kubectl_merge(&k8s, &ns, &split);
    wait_weights(&client, SPLIT, 5, "the split put back").await;
    let second = poll(20, "a new leader", || async {
        holder(&client).await.filter(|h| *h != first)
    })
    .await;
    assert!(guards.iter().any(|g| g.pod.name == second));
    wait_weights(
        &client,
        ROLLED_BACK,
        20,
        "the rollback re-asserted by the new leader",
    )
    .await;
    let reasserted = events(&k8s, &ns, "CanaryRollbackReasserted", "VirtualService");
    assert!(!reasserted.is_empty());

    // A new revision: the kubelet would stop the old guards with their pods; the user
    // resumes the rollout with a new image; the Deployment makes new Pods.
    for g in &mut guards {
        g.kill();
    }
    k8s.kubectl(&[
        "set",
        "image",
        "-n",
        &ns,
        "deploy/reviews-v2",
        "reviews=example.com/reviews:2.0.1",
    ]);
    k8s.kubectl(&["rollout", "resume", "-n", &ns, "deploy/reviews-v2"]);
    let good = pods(&client, CANARY, 3, &[&bad_revision]).await;
    assert_ne!(good[0].revision, bad_revision);
    let _new_guards = start_guards(&k8s, &ns, &good, app, &extra).await;
    let restored = wait_weights(&client, SPLIT, 30, "the weights restored").await;
    assert!(record(&restored)["restoredAt"].is_string());
    assert_eq!(without_our_changes(&restored), without_our_changes(&before));
    wait_event(&k8s, &ns, "CanaryRestored", "VirtualService").await;

    // The killed guards' member Leases belonged to their Pods, which the Deployment
    // deleted: the garbage collector removes them.
    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    poll(30, "the old members' leases collected", || async {
        let names: Vec<String> = leases
            .list(&ListParams::default().labels("canary-guard.io/group=reviews"))
            .await
            .ok()?
            .items
            .into_iter()
            .filter_map(|l| l.metadata.name)
            .collect();
        let old_left = bad
            .iter()
            .any(|p| names.iter().any(|n| n.ends_with(&p.name)));
        (!old_left).then_some(())
    })
    .await;
}

/// `canary-guard restore` and `status` by hand against a real server, after a rollback
/// whose reason holds `>` (the record a value `test` could never match).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_and_status_by_hand() {
    let Some(k8s) = RealApi::shared() else { return };
    let (ns, client) = scenario(&k8s, "byhand", 1).await;
    let before = vs(&client).await;
    let targets = RouteTargets {
        canary: CanaryTarget::new(Some("reviews".into()), Some("v2".into())).unwrap(),
        stable: None,
        route: None,
    };
    let reason = RollbackReason {
        reason: "error ratio 0.31 > 0.05 (31 of 100 requests) & p99 1.2s > 500ms".into(),
        group: "reviews".into(),
        canary_revision: "7d9f".into(),
    };
    let api = vs_api(&client);
    virtual_service::rollback(&api, "reviews", &targets, &reason, false)
        .await
        .unwrap();
    assert_eq!(weights(&vs(&client).await), ROLLED_BACK);
    // GitOps reverts; the same revision's rollback is asserted again, over a record with `>`.
    kubectl_merge(&k8s, &ns, &json!({"spec": before["spec"]}));
    let out = virtual_service::rollback(&api, "reviews", &targets, &reason, false)
        .await
        .unwrap();
    assert!(
        matches!(
            out,
            virtual_service::RollbackOutcome::Applied {
                reasserted: true,
                ..
            }
        ),
        "{out:?}"
    );
    k8s.kubectl(&["rollout", "pause", "-n", &ns, "deploy/reviews-v2"]);

    let s = status_json(&k8s, &ns);
    assert_eq!(s["last_rollback"]["canaryRevision"], "7d9f", "{s}");
    assert_eq!(s["last_rollback"]["reason"], reason.reason.as_str());

    let restore = cli("restore", k8s.kubeconfig())
        .args([
            "--virtual-service",
            "reviews",
            "--deployment",
            "reviews-v2",
            "-n",
            &ns,
        ])
        .output()
        .unwrap();
    assert!(
        restore.status.success(),
        "{}{}",
        String::from_utf8_lossy(&restore.stdout),
        String::from_utf8_lossy(&restore.stderr)
    );
    let after = vs(&client).await;
    assert_eq!(weights(&after), SPLIT);
    assert!(record(&after)["restoredAt"].is_string());
    assert_eq!(without_our_changes(&after), without_our_changes(&before));
    let paused = paused(&k8s, &ns);
    assert_ne!(paused, "true", "restore resumes the paused rollout");
}

/// Another writer edits a different route after our read and before our patch: the
/// patch, pinned to what we read, fails (422); we read again and their edit is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_writers_edit_between_our_read_and_patch_is_kept() {
    let Some(k8s) = RealApi::shared() else { return };
    let (ns, client) = scenario(&k8s, "race", 0).await;
    let edited = Arc::new(AtomicBool::new(false));
    let (inner, kubeconfig, ns2, flag) = (
        client.clone(),
        k8s.kubeconfig().to_owned(),
        ns.clone(),
        edited.clone(),
    );
    let statuses = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen = statuses.clone();
    // Before our first PATCH leaves, the other writer's edit lands.
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        let (kubeconfig, ns, flag, seen) =
            (kubeconfig.clone(), ns2.clone(), flag.clone(), seen.clone());
        async move {
            let is_patch = req.method() == http::Method::PATCH;
            if is_patch && !flag.swap(true, Ordering::SeqCst) {
                let ok = std::process::Command::new(support::realk8s::kubectl_path())
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(["patch", "-n", &ns, "virtualservices.networking.istio.io", "reviews", "--type", "json", "-p"])
                    .arg(r#"[{"op":"replace","path":"/spec/http/1/route/0/weight","value":100},{"op":"add","path":"/spec/http/1/timeout","value":"3s"}]"#)
                    .status()
                    .unwrap()
                    .success();
                assert!(ok);
            }
            let resp = inner.send(req).await;
            if is_patch {
                if let Ok(r) = &resp {
                    seen.lock().push(r.status().as_u16());
                }
            }
            resp
        }
    });
    let hooked = kube::Client::new(service, ns.clone());
    let targets = RouteTargets {
        canary: CanaryTarget::new(None, Some("v2".into())).unwrap(),
        stable: None,
        route: None,
    };
    let reason = RollbackReason {
        reason: "error ratio 0.5 > 0.05".into(),
        group: "reviews".into(),
        canary_revision: "r1".into(),
    };
    virtual_service::rollback(&vs_api(&hooked), "reviews", &targets, &reason, false)
        .await
        .unwrap();
    assert!(edited.load(Ordering::SeqCst));
    assert_eq!(
        *statuses.lock(),
        vec![422, 200],
        "the first patch must fail, the second land"
    );
    let after = vs(&client).await;
    assert_eq!(weights(&after), ROLLED_BACK);
    assert_eq!(
        after["spec"]["http"][1]["timeout"], "3s",
        "their edit was lost"
    );
}

/// A kubeconfig that authenticates with the token of ServiceAccount `canary-guard`, bound
/// to exactly the Role in `deploy/` (its namespace changed to `ns`).
fn least_privilege_kubeconfig(k8s: &RealApi, ns: &str) -> std::path::PathBuf {
    let rbac = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/base/rbac.yaml"
    ))
    .unwrap()
    .replace("namespace: bookinfo", &format!("namespace: {ns}"));
    k8s.apply(&rbac);
    let token = k8s.kubectl(&["create", "token", "canary-guard", "-n", ns]);
    let server = k8s.kubectl(&[
        "config",
        "view",
        "--raw",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let ca = k8s.kubectl(&[
        "config",
        "view",
        "--raw",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ]);
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{ns}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: guard\n  user:\n    token: {}\ncontexts:\n- name: guard\n  context: {{cluster: c, user: guard, namespace: {ns}}}\ncurrent-context: guard\n",
            token.trim()
        ),
    )
    .unwrap();
    path
}

/// The guards run with a ServiceAccount token bound to exactly the Role in `deploy/`:
/// the whole incident works, and calls outside the Role are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_role_is_enough_and_no_more() {
    let Some(k8s) = RealApi::shared() else { return };
    let (ns, client) = scenario(&k8s, "rbac", 2).await;
    let kubeconfig = least_privilege_kubeconfig(&k8s, &ns);
    let app = start_app().await;
    let bad = pods(&client, CANARY, 2, &[]).await;
    let extra = ["--deployment", "reviews-v2", "--on-rollback", "pause"];
    let mut guards = Vec::new();
    for p in &bad {
        guards.push(GuardProc::start(&kubeconfig, &ns, p, app, &extra).await);
    }
    for g in &guards {
        g.send("/status/500", 25, 500).await;
    }
    wait_weights(&client, ROLLED_BACK, 30, "the rollback").await;
    wait_event(&k8s, &ns, "CanaryRollback", "VirtualService").await;
    wait_event(&k8s, &ns, "CanaryRollback", "Deployment").await;
    let paused = paused(&k8s, &ns);
    assert_eq!(paused, "true");
    for g in &guards {
        let page = g.metrics().await;
        assert!(
            !page
                .lines()
                .any(|l| l.starts_with("canary_guard_kube_errors_total") && !l.ends_with(" 0")),
            "the guard met API errors with the Role of deploy/:\n{page}"
        );
    }
    // `status` and `restore` work with the same token.
    let restore = cli("restore", &kubeconfig)
        .args([
            "--virtual-service",
            "reviews",
            "--deployment",
            "reviews-v2",
            "-n",
            &ns,
        ])
        .output()
        .unwrap();
    // The guards re-assert while the failed revision runs; stop them first.
    drop(guards);
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );

    // Outside the Role: other VirtualServices, Pods, Secrets.
    let mut other = virtual_service(&ns);
    other["metadata"]["name"] = "ratings".into();
    k8s.apply(&other.to_string());
    let as_guard = |args: &[&str]| {
        let out = std::process::Command::new(support::realk8s::kubectl_path())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "kubectl {args:?} was allowed");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            err.contains("Forbidden") || err.contains("forbidden"),
            "kubectl {args:?}: {err}"
        );
    };
    as_guard(&[
        "patch",
        "virtualservices.networking.istio.io",
        "ratings",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"x":"y"}}}"#,
    ]);
    as_guard(&["get", "pods"]);
    as_guard(&["get", "secrets"]);
    as_guard(&["get", "leases", "-n", "default"]);
    // The guard's own refusal reads as code, reason, message and what to do.
    let status = cli("status", &kubeconfig)
        .args(["--group", "reviews", "--virtual-service", "reviews"])
        .args(["--canary-subset", "v2", "-n", "default"])
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(2));
    let err = String::from_utf8_lossy(&status.stderr);
    assert!(
        err.contains("403 Forbidden: ") && err.contains("grant the verb in the Role"),
        "{err}"
    );
    assert!(!err.contains("Status {"), "a Debug dump: {err}");
}

/// The API server crashes during an incident: proxying never stops, and the pending
/// rollback is written once it is back, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_crash_during_an_incident() {
    let Some(k8s) = RealApi::own("crash") else {
        return;
    };
    let (ns, client) = scenario(&k8s, "crash", 0).await;
    let app = start_app().await;
    let fake = |n: &str| PodIdentity {
        name: format!("reviews-v2-7d9f-{n}"),
        uid: format!("00000000-0000-0000-0000-00000000000{}", n.len()),
        revision: "7d9f".into(),
    };
    let guards = start_guards(&k8s, &ns, &[fake("a"), fake("bb")], app, &[]).await;
    poll(20, "a leader", || holder(&client)).await;
    for g in &guards {
        g.send("/status/200", 10, 200).await;
    }

    k8s.kill_apiserver();
    // Every request still reaches the app and gets its answer while the API is down.
    for _ in 0..3 {
        for g in &guards {
            g.send("/status/503", 10, 503).await;
        }
    }
    let failing = poll(20, "a guard to judge its window failing", || async {
        for g in &guards {
            let s = g.state().await;
            if s["verdict"] == "failing" || s["consecutive_failures"].as_u64() > Some(0) {
                return Some(s);
            }
        }
        None
    })
    .await;
    assert_ne!(failing["verdict"], "rolled_back");

    k8s.restart_apiserver();
    let client = k8s.client(&ns).await;
    for g in &guards {
        g.send("/status/503", 10, 503).await;
    }
    wait_weights(&client, ROLLED_BACK, 40, "the pending rollback").await;
    // Watch for a second write over more than one look at the VirtualService (every 2 s).
    let leader = holder(&client).await.unwrap();
    let leader = guards.iter().find(|g| g.pod.name == leader).unwrap();
    poll(20, "the leader to report the rollback", || async {
        let s = leader.state().await;
        (s["verdict"] == "rolled_back").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let audit = std::fs::read_to_string(k8s.audit_log().expect("an audit log")).unwrap();
    let patches: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["verb"] == "patch"
                && e["objectRef"]["resource"] == "virtualservices"
                && e["objectRef"]["namespace"] == ns.as_str()
                && e["userAgent"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("canary-guard"))
                && e["stage"] == "ResponseComplete"
        })
        .collect();
    let landed = patches
        .iter()
        .filter(|e| e["responseStatus"]["code"] == 200)
        .count();
    assert_eq!(landed, 1, "patches: {patches:#?}");
}

/// The stable Deployment, for baseline guards on its Pods.
fn stable_deployment(namespace: &str, replicas: u32) -> String {
    deployment(namespace, replicas)
        .replace("reviews-v2", "reviews-v1")
        .replace("version: v2", "version: v1")
        .replace("reviews:2.0.0", "reviews:1.0.0")
}

/// One canary guard and two baseline guards on real Pods of one group; the canary's
/// guard leads (baseline guards never run for it).
async fn with_baseline(
    k8s: &RealApi,
    prefix: &str,
) -> (String, kube::Client, GuardProc, Vec<GuardProc>) {
    let (ns, client) = scenario(k8s, prefix, 1).await;
    k8s.apply(&stable_deployment(&ns, 2));
    let app = start_app().await;
    let canary = pods(&client, CANARY, 1, &[]).await;
    let stable = pods(&client, "app=reviews,version=v1", 2, &[]).await;
    let mut canary = start_guards(k8s, &ns, &canary, app, &[]).await;
    let baseline = start_guards(k8s, &ns, &stable, app, &["--role", "baseline"]).await;
    let leader = canary.remove(0);
    poll(20, "the canary's guard leading", || async {
        (holder(&client).await.as_deref() == Some(leader.pod.name.as_str())).then_some(())
    })
    .await;
    poll(20, "three members", || async {
        let s = leader.state().await;
        (s["members"].as_array().map_or(0, Vec::len) == 3).then_some(())
    })
    .await;
    (ns, client, leader, baseline)
}

/// `n` requests through `g`, `errors` of them answered 500.
async fn mixed(g: &GuardProc, n: usize, errors: usize) {
    for i in 0..n {
        if errors > 0 && i % (n / errors) == 0 {
            g.send("/status/500", 1, 500).await;
        } else {
            g.send("/status/200", 1, 200).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_worse_than_its_stable_pods_is_rolled_back() {
    let Some(k8s) = RealApi::shared() else { return };
    let (_ns, client, canary, baseline) = with_baseline(&k8s, "relative").await;
    // Stable at 0.5% errors, the canary at 4%: under the 5% limit.
    let load = async {
        for _ in 0..30 {
            tokio::join!(
                mixed(&baseline[0], 200, 1),
                mixed(&baseline[1], 200, 1),
                mixed(&canary, 100, 4),
            );
            if weights(&vs(&client).await) == ROLLED_BACK {
                break;
            }
        }
    };
    load.await;
    let after = wait_weights(&client, ROLLED_BACK, 10, "the rollback").await;
    let reason = record(&after)["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("vs baseline"), "{reason}");
    // The stable pods' guards never led, and never wrote anything but their own lease.
    assert_eq!(
        holder(&client).await.as_deref(),
        Some(canary.pod.name.as_str())
    );
    for b in &baseline {
        let s = b.state().await;
        assert_eq!(s["leader"], false, "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_the_stable_pods_share_is_not_blamed_on_the_canary() {
    let Some(k8s) = RealApi::shared() else { return };
    let (ns, client, canary, baseline) = with_baseline(&k8s, "shared").await;
    let rv = vs(&client).await["metadata"]["resourceVersion"].clone();
    // A shared dependency fails a quarter of every pod's requests.
    tokio::join!(
        mixed(&baseline[0], 200, 50),
        mixed(&baseline[1], 200, 50),
        mixed(&canary, 100, 25),
    );
    let s = poll(20, "the baseline seen degraded", || async {
        let s = canary.state().await;
        (!s["baseline_degraded"].is_null()).then_some(s)
    })
    .await;
    assert_eq!(s["verdict"], "inconclusive", "{s}");
    wait_event(&k8s, &ns, "BaselineDegraded", "VirtualService").await;
    // `status` reads the same member leases and says the same.
    let report = status_json(&k8s, &ns);
    assert_eq!(report["verdict"], "inconclusive", "{report}");
    assert!(
        report["baseline_degraded"]
            .as_str()
            .is_some_and(|why| why.contains("baseline degraded")),
        "{report}"
    );
    let roles: Vec<&str> = report["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "baseline").count(),
        2,
        "{report}"
    );
    assert!(canary
        .metrics()
        .await
        .contains("canary_guard_baseline_degraded 1"));
    // That no write comes cannot be awaited: give the leader ten more rounds (its
    // --interval is 200ms) over the same windows.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = vs(&client).await;
    assert_eq!(
        after["metadata"]["resourceVersion"], rv,
        "the canary was blamed"
    );
    assert_eq!(weights(&after), SPLIT);
}

/// The member Lease of `pod`, as the API server holds it now.
async fn member_lease(client: &kube::Client, pod: &str) -> Lease {
    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    let name = canary_guard::cluster::members::lease_name("reviews", pod);
    leases.get(&name).await.unwrap()
}

/// A canary member whose heartbeat is a minute away writes its window when the leader,
/// gathering evidence against the baseline, asks through the real election Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_member_publishes_when_the_leader_asks() {
    let Some(k8s) = RealApi::shared() else { return };
    let (ns, client) = scenario(&k8s, "asks", 2).await;
    k8s.apply(&stable_deployment(&ns, 2));
    let app = start_app().await;
    let canary = pods(&client, CANARY, 2, &[]).await;
    let stable = pods(&client, "app=reviews,version=v1", 2, &[]).await;
    // The longest heartbeat there is: any write of the member within it is an answer.
    let mut canary = start_guards(&k8s, &ns, &canary, app, &["--publish-interval", "60s"]).await;
    let started = tokio::time::Instant::now();
    let baseline = start_guards(&k8s, &ns, &stable, app, &["--role", "baseline"]).await;
    let leading = poll(20, "a canary guard leading", || holder(&client)).await;
    let at = canary.iter().position(|g| g.pod.name == leading).unwrap();
    let leader = canary.remove(at);
    let member = canary.remove(0);
    poll(20, "four members", || async {
        let s = leader.state().await;
        (s["members"].as_array().map_or(0, Vec::len) == 4).then_some(())
    })
    .await;
    tokio::join!(mixed(&baseline[0], 200, 1), mixed(&baseline[1], 200, 1));
    poll(20, "the baseline's requests at the leader", || async {
        let s = leader.state().await;
        (s["baseline"]["requests"].as_u64() >= Some(400)).then_some(())
    })
    .await;
    // Healthy requests at the member: news for the leader, no trigger of the member's own.
    mixed(&member, 20, 0).await;
    let before = member_lease(&client, &member.pod.name).await;
    // 5 errors in 100 at the leader: evidence against the baseline's 0.5% (about 0.4
    // of the threshold, over the quarter at which the leader asks), no verdict yet.
    mixed(&leader, 100, 5).await;
    let written = poll(10, "the member's answer", || async {
        let now = member_lease(&client, &member.pod.name).await;
        (now.metadata.resource_version != before.metadata.resource_version).then_some(now)
    })
    .await;
    assert_ne!(
        written.spec.unwrap().renew_time,
        before.spec.unwrap().renew_time
    );
    assert!(
        started.elapsed() < Duration::from_secs(55),
        "too slow to tell an answer from the heartbeat"
    );
    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    let election = leases.get("canary-guard-reviews").await.unwrap();
    let request = election.metadata.annotations.unwrap_or_default()
        [canary_guard::cluster::election::requests::ANNOTATION]
        .parse::<u64>()
        .unwrap();
    assert!(request >= 1, "{request}");
    let s = leader.state().await;
    assert_ne!(s["verdict"], "failing", "{s}");
    assert_eq!(weights(&vs(&client).await), SPLIT);
}
