//! What a guard runs with, as plain values: the proxy or the scrape, the
//! thresholds, the window and, unless standalone, the cluster loop's settings.
//!
//! Design rule: values, no parsing and no environment. `run` gets a
//! [`GuardConfig`] from its flags ([`crate::cli::RunArgs::resolve`], which
//! checks them); `demo` and the tests build one directly from
//! [`GuardConfig::proxy`] and [`ClusterConfig::new`], so every default lives in
//! one place per setting and no command line is assembled only to be parsed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

use crate::cluster::virtual_service::RouteTargets;
use crate::domain::policy::Thresholds;
use crate::domain::relative::{Relative, Role};
use crate::notify::NotifyConfig;
use crate::observe::proxy::ProxyConfig;
use crate::observe::scrape::ScrapeConfig;
use crate::server::Limits;

/// Default proxy port: outside Istio's 15000–15090 and away from common app ports.
pub const DEFAULT_LISTEN: SocketAddr = addr(4680);
/// Default admin port (metrics, health, state).
pub const DEFAULT_ADMIN_LISTEN: SocketAddr = addr(4681);
/// Default sliding window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
/// Default time between checks.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Idle pooled connections to the app are closed after this: below the usual
/// keep-alive timeouts of app servers (5 s and more), so a connection the app is
/// closing is never reused.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

const fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port)
}

/// Everything one guard runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct GuardConfig {
    /// Where the samples come from.
    pub observe: Observe,
    /// Admin listener: /metrics, /healthz, /readyz, /v1/state.
    pub admin_listen: SocketAddr,
    /// What the canary must stay within.
    pub thresholds: Thresholds,
    /// Sliding window length (whole seconds).
    pub window: Duration,
    /// Time between checks.
    pub interval: Duration,
    /// The cluster loop; `None` observes and exports only (`--standalone`).
    pub cluster: Option<ClusterConfig>,
}

/// How the guard observes the canary's traffic.
#[derive(Clone, Debug, PartialEq)]
pub enum Observe {
    /// A reverse proxy in front of the app.
    Proxy(ProxySettings),
    /// Scrapes of the istio-proxy's (or the app's) metrics: no proxy listener.
    Envoy(ScrapeConfig),
}

impl Observe {
    /// The mode's name, as `/v1/state` shows it.
    pub fn mode(&self) -> &'static str {
        match self {
            Observe::Proxy(_) => "proxy",
            Observe::Envoy(_) => "envoy",
        }
    }
}

/// The proxy's listener, its limits and the app behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxySettings {
    /// Where clients connect (the Service's targetPort).
    pub listen: SocketAddr,
    /// How to reach the app.
    pub upstream: ProxyConfig,
    /// Limits on every client connection.
    pub limits: Limits,
}

impl GuardConfig {
    /// A standalone proxy-mode guard in front of `upstream`, with every default of `run`.
    pub fn proxy(upstream: Uri) -> Self {
        Self {
            observe: Observe::Proxy(ProxySettings {
                listen: DEFAULT_LISTEN,
                upstream: ProxyConfig {
                    upstream,
                    connect_timeout: Duration::from_secs(5),
                    upstream_timeout: Some(Duration::from_secs(60)),
                    pool_idle_timeout: POOL_IDLE_TIMEOUT,
                },
                limits: Limits::default(),
            }),
            admin_listen: DEFAULT_ADMIN_LISTEN,
            thresholds: Thresholds::default(),
            window: DEFAULT_WINDOW,
            interval: DEFAULT_INTERVAL,
            cluster: None,
        }
    }

    /// The window this guard keeps: `window`, and a little more on a baseline
    /// guard, whose seconds must cover every canary guard's (see [`Role::window`]).
    pub fn kept_window(&self) -> Duration {
        self.cluster
            .as_ref()
            .map_or(self.window, |c| c.role.window(self.window))
    }

    /// The proxy's settings, in proxy mode.
    pub fn proxy_settings(&mut self) -> Option<&mut ProxySettings> {
        match &mut self.observe {
            Observe::Proxy(p) => Some(p),
            Observe::Envoy(_) => None,
        }
    }
}

/// How the guard observes the canary's traffic (`run --mode`, and the mode
/// `inject` and `webhook` give the guards they add).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Reverse proxy in front of the app (Service targetPort -> guard -> app).
    #[default]
    Proxy,
    /// No extra hop: read the counters of the pod's istio-proxy (or the app's own metrics).
    Envoy,
}

impl Mode {
    /// The name shown in `/v1/state`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Proxy => "proxy",
            Mode::Envoy => "envoy",
        }
    }
}

/// What the guard does to the canary Deployment after a rollback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnRollback {
    /// Nothing beyond the VirtualService and the Events.
    None,
    /// Pause the Deployment's rollout (`kubectl rollout pause`).
    Pause,
}

/// The leader election's timings: `lease_duration > renew_deadline > retry_period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElectionTimings {
    /// Time a non-leader waits after the last renewal before taking over.
    pub lease_duration: Duration,
    /// Time a leader keeps trying to renew before it steps down.
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub retry_period: Duration,
}

impl Default for ElectionTimings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The cluster loop: identity, the election, the VirtualService and what a
/// rollback does.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// Guard group: one per canary; names the leases.
    pub group: String,
    /// Namespace, when given (else the client's default).
    pub namespace: Option<String>,
    /// This pod's name.
    pub pod_name: String,
    /// This pod's UID, for the member lease's ownerReference.
    pub pod_uid: Option<String>,
    /// The canary revision this pod runs.
    pub revision: Option<String>,
    /// Kubeconfig file (else in-cluster config, then the usual places).
    pub kubeconfig: Option<PathBuf>,
    /// The VirtualService's name.
    pub virtual_service: String,
    /// The networking.istio.io version to use.
    pub virtual_service_version: String,
    /// Which destinations a rollback moves traffic from and to.
    pub targets: RouteTargets,
    /// Decide and report, but never write.
    pub dry_run: bool,
    /// The leader election's timings.
    pub election: ElectionTimings,
    /// Heartbeat of the member lease while the window crosses no limit.
    pub publish_interval: Duration,
    /// Also judge each member with enough traffic alone.
    pub per_member: bool,
    /// A canary guard, or a baseline guard on a stable pod (publishes only).
    pub role: Role,
    /// How much worse than the baseline guards' pods the canary may be.
    pub relative: Relative,
    /// The canary Deployment, for Events and `on_rollback`.
    pub deployment: Option<String>,
    /// What to do to `deployment` after a rollback.
    pub on_rollback: OnRollback,
    /// Put the recorded weights back when a new canary revision rolls out.
    pub restore_on_new_revision: bool,
    /// Where to announce rollbacks, re-assertions and restores.
    pub notify: Option<NotifyConfig>,
}

impl ClusterConfig {
    /// Guard `pod_name` of `group`, guarding `targets` in `virtual_service`, with
    /// every other default of `run`.
    pub fn new(group: &str, pod_name: &str, virtual_service: &str, targets: RouteTargets) -> Self {
        Self {
            group: group.to_string(),
            namespace: None,
            pod_name: pod_name.to_string(),
            pod_uid: None,
            revision: None,
            kubeconfig: None,
            virtual_service: virtual_service.to_string(),
            virtual_service_version: "v1".to_string(),
            targets,
            dry_run: false,
            election: ElectionTimings::default(),
            publish_interval: Duration::from_secs(10),
            per_member: true,
            role: Role::Canary,
            relative: Relative::default(),
            deployment: None,
            on_rollback: OnRollback::None,
            restore_on_new_revision: true,
            notify: None,
        }
    }
}
