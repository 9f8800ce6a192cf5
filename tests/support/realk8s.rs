//! A real kube-apiserver (+ etcd, + controller manager) for tests, as controller-runtime's
//! envtest gives Go projects: the server's own validation, patch semantics, optimistic
//! concurrency, RBAC and garbage collection, with no kubelet.
//!
//! Found through the environment, never guessed:
//! - `CANARY_GUARD_TEST_KUBECONFIG`: a cluster of the user's (kind, k3d) or one started by
//!   `scripts/test`; every test works in a namespace of its own.
//! - `CANARY_GUARD_TEST_REALK8S`: the directory of the `up`/`down` scripts that start a
//!   control plane on loopback. Without a kubeconfig, one shared instance is started under
//!   the target directory (once, under a file lock, for every test process); tests that
//!   crash the API server start one of their own.
//!
//! With neither, the tests say they were skipped and why. A variable that is set but does
//! not work fails the test: a broken setup must not pass as a skip.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

const KUBECONFIG_VAR: &str = "CANARY_GUARD_TEST_KUBECONFIG";
const REALK8S_VAR: &str = "CANARY_GUARD_TEST_REALK8S";
const KUBECTL_VAR: &str = "CANARY_GUARD_TEST_KUBECTL";

/// The kubectl the tests run (`CANARY_GUARD_TEST_KUBECTL`, else the one on `PATH`).
pub fn kubectl_path() -> String {
    std::env::var(KUBECTL_VAR).unwrap_or_else(|_| "kubectl".to_owned())
}

/// The VirtualService CRD, as Istio publishes it.
pub const VS_CRD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/istio-virtualservice-crd.yaml"
);

/// A control plane the tests may use.
pub struct RealApi {
    kubeconfig: PathBuf,
    /// The instance's directory, when this process may stop and start it.
    instance: Option<Instance>,
}

struct Instance {
    scripts: PathBuf,
    dir: PathBuf,
    /// Stopped on drop (an instance of this test's own).
    owned: bool,
}

fn skip(why: &str) {
    eprintln!(
        "skipped: {why}. Set {KUBECONFIG_VAR}=PATH (a test cluster of yours) or \
         {REALK8S_VAR}=DIR (the realk8s scripts), or run scripts/test, which sets them"
    );
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn up(scripts: &Path, dir: &Path, extra: &[&str]) {
    let lock = dir.with_extension("lock");
    // `up` is not safe to run twice at once on one directory; test processes start together.
    // `-o`: the daemons `up` leaves running must not inherit (and hold) the lock.
    run(Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .arg(scripts.join("up"))
        .arg(dir)
        .args(extra));
}

impl RealApi {
    /// The control plane shared by the suite, or `None` (after saying why) when none is
    /// configured.
    pub fn shared() -> Option<Self> {
        let scripts = std::env::var_os(REALK8S_VAR).map(PathBuf::from);
        if let Some(kc) = std::env::var_os(KUBECONFIG_VAR) {
            let kubeconfig = PathBuf::from(kc);
            assert!(
                kubeconfig.is_file(),
                "{KUBECONFIG_VAR}={} is not a file",
                kubeconfig.display()
            );
            let api = Self {
                kubeconfig,
                instance: None,
            };
            api.install_crd();
            return Some(api);
        }
        let Some(scripts) = scripts else {
            skip("no Kubernetes API server for the real-API suite");
            return None;
        };
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("realk8s-shared");
        up(&scripts, &dir, &["--controller-manager", "--audit"]);
        let api = Self {
            kubeconfig: dir.join("kubeconfig"),
            instance: Some(Instance {
                scripts,
                dir,
                owned: false,
            }),
        };
        api.install_crd();
        Some(api)
    }

    /// A control plane of this test alone, stopped when dropped: for tests that crash the
    /// API server. `None` (after saying why) without the realk8s scripts.
    pub fn own(name: &str) -> Option<Self> {
        let Some(scripts) = std::env::var_os(REALK8S_VAR).map(PathBuf::from) else {
            skip(&format!(
                "{name} crashes the API server, which needs a control plane of its own \
                 ({REALK8S_VAR})"
            ));
            return None;
        };
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("realk8s-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        up(&scripts, &dir, &["--audit"]);
        let api = Self {
            kubeconfig: dir.join("kubeconfig"),
            instance: Some(Instance {
                scripts,
                dir,
                owned: true,
            }),
        };
        api.install_crd();
        Some(api)
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The audit log, when this instance writes one.
    pub fn audit_log(&self) -> Option<PathBuf> {
        self.instance
            .as_ref()
            .map(|i| i.dir.join("audit.log"))
            .filter(|p| p.exists())
    }

    /// A client with the admin credentials, in `namespace`.
    pub async fn client(&self, namespace: &str) -> kube::Client {
        let kc = Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        config.default_namespace = namespace.to_owned();
        kube::Client::try_from(config).unwrap()
    }

    /// `kubectl --kubeconfig … ARGS`; the output, whether or not it succeeded.
    pub fn kubectl_output(&self, args: &[&str]) -> Output {
        let kubectl = kubectl_path();
        Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {kubectl} (set {KUBECTL_VAR}): {e}"))
    }

    /// `kubectl ARGS`, which must succeed; its standard output.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) {
        use std::io::Write;
        let kubectl = kubectl_path();
        let mut child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            yaml
        );
    }

    /// Installs the CRD once per cluster (test processes start together, and two creates
    /// of one CRD race) and waits until it is served.
    fn install_crd(&self) {
        let kubectl = kubectl_path();
        let lock = Path::new(env!("CARGO_TARGET_TMPDIR")).join("realk8s-crd.lock");
        run(Command::new("flock")
            .arg(&lock)
            .arg(&kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["apply", "-f", VS_CRD]));
        let established = || {
            self.kubectl_output(&[
                "get",
                "crd/virtualservices.networking.istio.io",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
            ])
            .stdout
                == b"True"
        };
        for _ in 0..600 {
            if established() {
                return;
            }
            // kubectl runs as another process: nothing to await but its answer.
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the VirtualService CRD was not established within 60 s");
    }

    /// A new namespace for one test (`prefix` plus a unique suffix) with its `default`
    /// ServiceAccount, which Pods need and a server without controllers does not create.
    pub async fn namespace(&self, prefix: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("{prefix}-{}-{nanos:x}", std::process::id());
        let client = self.client("default").await;
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"canary-guard.io/test": "true"}}
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        let sa: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap();
        match Api::<ServiceAccount>::namespaced(client, &name)
            .create(&PostParams::default(), &sa)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(e) => panic!("creating the default ServiceAccount: {e}"),
        }
        name
    }

    /// SIGKILLs the API server (etcd keeps its data). Only for an instance of our own.
    pub fn kill_apiserver(&self) {
        let i = self.own_instance();
        run(Command::new(i.scripts.join("down"))
            .arg(&i.dir)
            .arg("--kill-apiserver"));
    }

    /// Starts the API server again on the same address and data.
    pub fn restart_apiserver(&self) {
        let i = self.own_instance();
        up(&i.scripts, &i.dir, &["--audit"]);
    }

    fn own_instance(&self) -> &Instance {
        self.instance
            .as_ref()
            .filter(|i| i.owned)
            .expect("only a control plane of this test's own may be crashed")
    }
}

impl Drop for RealApi {
    fn drop(&mut self) {
        if let Some(i) = self.instance.as_ref().filter(|i| i.owned) {
            let _ = Command::new(i.scripts.join("down")).arg(&i.dir).status();
            let _ = std::fs::remove_dir_all(&i.dir);
        }
    }
}

/// Polls `probe` every 50 ms until it returns `Some`, for at most `secs`: the API server
/// is another process, so there is nothing to await but its answers.
pub async fn poll<T, F, Fut>(secs: u64, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
