//! Canary pods on a real API server: real Pod objects made by a real Deployment, and a
//! `canary-guard run` process standing in for each Pod's sidecar (there is no kubelet),
//! with the identity the downward API would give it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::Value;

use super::process::free_port;
use super::realk8s::poll;

/// What the downward API tells a canary pod's guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIdentity {
    pub name: String,
    pub uid: String,
    /// The `pod-template-hash` label.
    pub revision: String,
}

/// The Pods the Deployment's controller made, selected by `selector`, once there are `n`
/// of them with a `pod-template-hash` other than those in `not`.
pub async fn pods(
    client: &kube::Client,
    selector: &str,
    n: usize,
    not: &[&str],
) -> Vec<PodIdentity> {
    let api: Api<Pod> = Api::default_namespaced(client.clone());
    poll(
        60,
        &format!("{n} pods {selector} of a new revision"),
        || {
            let api = api.clone();
            async move {
                let list = api
                    .list(&ListParams::default().labels(selector))
                    .await
                    .ok()?;
                let pods: Vec<PodIdentity> = list
                    .items
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter_map(|p| {
                        let revision = p.metadata.labels?.get("pod-template-hash")?.clone();
                        Some(PodIdentity {
                            name: p.metadata.name?,
                            uid: p.metadata.uid?,
                            revision,
                        })
                    })
                    .filter(|p| !not.contains(&p.revision.as_str()))
                    .collect();
                (pods.len() == n).then_some(pods)
            }
        },
    )
    .await
}

/// The binary under test: a release build when `scripts/test` names it, as in a pod.
pub fn binary() -> PathBuf {
    std::env::var_os("CANARY_GUARD_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_canary-guard")))
}

/// Cluster flags for the guard of `pod`, group `reviews`, with fast timings.
pub fn flags(namespace: &str, pod: &PodIdentity) -> Vec<String> {
    let mut flags = super::cluster::group_flags(namespace, &pod.name, &pod.revision);
    flags.extend(["--pod-uid".to_owned(), pod.uid.clone()]);
    flags
}

/// A `canary-guard run` process in front of the test app.
pub struct GuardProc {
    pub pod: PodIdentity,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl GuardProc {
    /// Starts the guard for `pod` with `kubeconfig`, and waits for `/readyz`.
    pub async fn start(
        kubeconfig: &Path,
        namespace: &str,
        pod: &PodIdentity,
        app: SocketAddr,
        extra: &[&str],
    ) -> Self {
        let proxy: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.log", pod.name));
        let child = Command::new(binary())
            .args(["run", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--listen", &proxy.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--upstream", &format!("http://{app}")])
            .args(flags(namespace, pod))
            .args(extra)
            .env("CANARY_GUARD_LOG", "info")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let g = Self {
            pod: pod.clone(),
            proxy,
            admin,
            child,
            log,
        };
        let url = format!("http://{admin}/readyz");
        poll(20, &format!("{} ready", pod.name), || {
            let url = url.clone();
            async move {
                let r = super::http1()
                    .request(http::Request::get(&url).body(super::empty()).unwrap())
                    .await
                    .ok()?;
                (r.status() == 200).then_some(())
            }
        })
        .await;
        g
    }

    /// `/v1/state`.
    pub async fn state(&self) -> Value {
        let (_, b) = super::get(&super::http1(), &format!("http://{}/v1/state", self.admin)).await;
        serde_json::from_slice(&b).unwrap()
    }

    /// `/metrics`.
    pub async fn metrics(&self) -> String {
        let (_, b) = super::get(&super::http1(), &format!("http://{}/metrics", self.admin)).await;
        String::from_utf8(b.to_vec()).unwrap()
    }

    /// Sends `n` requests for `path` through the proxy; every answer must be the app's
    /// (`status`), never one of the guard's own.
    pub async fn send(&self, path: &str, n: usize, status: u16) {
        let c = super::http1();
        for _ in 0..n {
            let (got, _) = super::get(&c, &format!("http://{}{path}", self.proxy)).await;
            assert_eq!(got.as_u16(), status, "{path} through {}", self.pod.name);
        }
    }

    /// SIGKILL: no chance to release the lease or delete the member lease.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as the kubelet sends, and waits for the exit.
    pub fn terminate(&mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let _ = self.child.wait();
    }

    /// The guard's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for GuardProc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.pod.name, self.log());
        }
    }
}
