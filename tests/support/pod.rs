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

/// [`flags`] without those `extra` sets again (every one takes a value), then `extra`.
fn flags_with(namespace: &str, pod: &PodIdentity, extra: &[&str]) -> Vec<String> {
    let defaults = flags(namespace, pod);
    let mut all: Vec<String> = defaults
        .chunks(2)
        .filter(|pair| !extra.contains(&pair[0].as_str()))
        .flatten()
        .cloned()
        .collect();
    all.extend(extra.iter().map(|s| s.to_string()));
    all
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
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.log", pod.name));
        // A free port may be taken by another test between our probe and the guard's
        // bind: start again on fresh ports then, and on anything else show the log.
        for _ in 0..3 {
            let proxy: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let child = Command::new(binary())
                .args(["run", "--kubeconfig"])
                .arg(kubeconfig)
                .args(["--listen", &proxy.to_string()])
                .args(["--admin-listen", &admin.to_string()])
                .args(["--upstream", &format!("http://{app}")])
                .args(flags_with(namespace, pod, extra))
                .env("CANARY_GUARD_LOG", "info")
                .stdout(Stdio::null())
                // The guard logs to stderr.
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let mut g = Self {
                pod: pod.clone(),
                proxy,
                admin,
                child,
                log: log.clone(),
            };
            match g.wait_ready().await {
                Ok(()) => return g,
                Err(why) if why.contains("Address already in use") => continue,
                Err(why) => panic!("{}: {why}", pod.name),
            }
        }
        panic!("{}: no free ports in three tries", pod.name)
    }

    /// Waits for `/readyz`, or says why the process ended first (its log).
    async fn wait_ready(&mut self) -> Result<(), String> {
        let url = format!("http://{}/readyz", self.admin);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let ready = super::http1()
                .request(http::Request::get(&url).body(super::empty()).unwrap())
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!("exited with {status} before it was ready:\n{log}"));
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} not ready after 20 s",
                self.pod.name
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
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
