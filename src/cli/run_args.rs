//! The flags of `canary-guard run`, as clap reads them: the proxy and the
//! checks ([`RunArgs`]), the cluster loop ([`ClusterArgs`]) and envoy mode
//! ([`ScrapeArgs`]).
//!
//! Design rule: declarations only. Defaults are written here as users read them
//! in `--help`; a test holds them equal to [`crate::config`]'s.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use http::Uri;

use super::{LogFormat, Mode};
use crate::config::OnRollback;
use crate::domain::relative::Role;
use crate::parse::*;

/// Flags of `canary-guard run`.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// How to observe traffic.
    #[arg(long, env = "CANARY_GUARD_MODE", value_enum, default_value = "proxy")]
    pub mode: Mode,

    /// Proxy listener address (the Service's targetPort points here).
    #[arg(
        long,
        env = "CANARY_GUARD_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:4680"
    )]
    pub listen: SocketAddr,

    /// The app behind the proxy.
    #[arg(long, env = "CANARY_GUARD_UPSTREAM", value_name = "URL",
          default_value = "http://127.0.0.1:8080", value_parser = parse_upstream)]
    pub upstream: Uri,

    /// Admin listener: /metrics, /healthz, /readyz, /v1/state.
    #[arg(
        long,
        env = "CANARY_GUARD_ADMIN_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:4681"
    )]
    pub admin_listen: SocketAddr,

    /// Observe, decide and export only; never talk to Kubernetes.
    #[arg(long, env = "CANARY_GUARD_STANDALONE")]
    pub standalone: bool,

    /// Highest acceptable error ratio in the window (0..=1).
    #[arg(long, env = "CANARY_GUARD_MAX_ERROR_RATIO", value_name = "RATIO",
          default_value = "0.05", value_parser = parse_ratio)]
    pub max_error_ratio: f64,

    /// Highest acceptable latency at --latency-quantile (1ms..=60s).
    #[arg(long, env = "CANARY_GUARD_MAX_LATENCY", value_name = "DURATION",
          default_value = "500ms", value_parser = parse_max_latency)]
    pub max_latency: Duration,

    /// The latency quantile the limit applies to (0.5..=0.999).
    #[arg(long, env = "CANARY_GUARD_LATENCY_QUANTILE", value_name = "Q",
          default_value = "0.99", value_parser = parse_quantile)]
    pub latency_quantile: f64,

    /// Fewer requests than this in the window make a check inconclusive (1..=1000000).
    #[arg(long, env = "CANARY_GUARD_MIN_REQUESTS", value_name = "N",
          default_value = "20", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub min_requests: u64,

    /// Sliding window length, whole seconds (5s..=10m).
    #[arg(long, env = "CANARY_GUARD_WINDOW", value_name = "DURATION",
          default_value = "30s", value_parser = parse_window)]
    pub window: Duration,

    /// Time between checks (100ms..=1m, at most --window).
    #[arg(long, env = "CANARY_GUARD_INTERVAL", value_name = "DURATION",
          default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,

    /// Consecutive failing checks before the verdict is failing (1..=1000). The
    /// sequential test needs no confirmation (its evidence accumulates), so the
    /// default is 1; a larger N delays every rollback by N - 1 checks.
    #[arg(long, env = "CANARY_GUARD_FAILURE_THRESHOLD", value_name = "N",
          default_value = "1", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub failure_threshold: u32,

    /// How sure a check must be that a limit is crossed before it fails (0.5..=0.999999):
    /// for a canary within its limits, 1 - CONFIDENCE bounds the chance that a check of the
    /// window fails by bad luck, and the chance that any one request starts a false alarm
    /// of the sequential test. 0.5 judges the window's own ratio and quantile as they are.
    #[arg(long, env = "CANARY_GUARD_CONFIDENCE", value_name = "C",
          default_value = "0.99999", value_parser = parse_confidence)]
    pub confidence: f64,

    /// Time allowed for the app's response headers before answering 504 (0s waits forever).
    #[arg(long, env = "CANARY_GUARD_UPSTREAM_TIMEOUT", value_name = "DURATION",
          default_value = "60s", value_parser = parse_upstream_timeout)]
    pub upstream_timeout: Duration,

    /// Time allowed to connect to the app before answering 502 (10ms..=60s).
    #[arg(long, env = "CANARY_GUARD_CONNECT_TIMEOUT", value_name = "DURATION",
          default_value = "5s", value_parser = parse_connect_timeout)]
    pub connect_timeout: Duration,

    /// Time a client has to send its request headers, and a new connection its
    /// first request (1s..=5m).
    #[arg(long, env = "CANARY_GUARD_HEADER_READ_TIMEOUT", value_name = "DURATION",
          default_value = "10s", value_parser = parse_header_timeout)]
    pub header_read_timeout: Duration,

    /// Largest request head accepted, in bytes; larger gets 431 (8192..=1048576).
    #[arg(long, env = "CANARY_GUARD_MAX_HEADER_BYTES", value_name = "BYTES",
          default_value = "65536", value_parser = clap::value_parser!(u32).range(8192..=1_048_576))]
    pub max_header_bytes: u32,

    /// Open client connections at most (1..=1000000).
    #[arg(long, env = "CANARY_GUARD_MAX_CONNECTIONS", value_name = "N",
          default_value = "10000", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// On SIGTERM, time in-flight requests get to finish (0s..=10m).
    #[arg(long, env = "CANARY_GUARD_DRAIN_TIMEOUT", value_name = "DURATION",
          default_value = "20s", value_parser = parse_drain_timeout)]
    pub drain_timeout: Duration,

    /// Threads that serve traffic (1..=64). One runs everything on a single
    /// thread, as HAProxy and nginx do by default, at the least CPU per
    /// request; raise it only when the guard has more than one CPU and the
    /// app needs more than one core's worth of proxying.
    #[arg(long, env = "CANARY_GUARD_WORKERS", value_name = "N",
          default_value = "1", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,

    /// Log format.
    #[arg(
        long,
        env = "CANARY_GUARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Cluster settings (ignored with --standalone).
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Envoy mode settings (ignored in proxy mode).
    #[command(flatten)]
    pub scrape: ScrapeArgs,
}

/// Flags for the cluster loop: identity, leader election, the VirtualService.
#[derive(Clone, Debug, Args)]
pub struct ClusterArgs {
    /// Guard group: one per canary; names the leases `canary-guard-<group>[-<pod>]`.
    #[arg(long, env = "CANARY_GUARD_GROUP", value_parser = parse_dns_label)]
    pub group: Option<String>,

    /// Namespace of the leases, the VirtualService and the Events (default: `POD_NAMESPACE`, then the kubeconfig's).
    #[arg(long, env = "CANARY_GUARD_NAMESPACE")]
    pub namespace: Option<String>,

    /// This pod's name (default: `POD_NAME` from the downward API).
    #[arg(long, env = "CANARY_GUARD_POD_NAME")]
    pub pod_name: Option<String>,

    /// This pod's UID, for the member lease's ownerReference (default: `POD_UID`).
    #[arg(long, env = "CANARY_GUARD_POD_UID")]
    pub pod_uid: Option<String>,

    /// The canary revision (default: `POD_TEMPLATE_HASH`, the pod's `pod-template-hash` label).
    #[arg(long, env = "CANARY_GUARD_REVISION")]
    pub revision: Option<String>,

    /// The VirtualService that splits traffic between stable and canary.
    #[arg(long, env = "CANARY_GUARD_VIRTUAL_SERVICE", value_name = "NAME")]
    pub virtual_service: Option<String>,

    /// The networking.istio.io version to use (v1, v1beta1 or v1alpha3).
    #[arg(long, env = "CANARY_GUARD_VIRTUAL_SERVICE_VERSION", default_value = "v1",
          value_parser = ["v1", "v1beta1", "v1alpha3"])]
    pub virtual_service_version: String,

    /// Only touch the http route with this name.
    #[arg(long, env = "CANARY_GUARD_ROUTE")]
    pub route: Option<String>,

    /// The canary destination's host.
    #[arg(long, env = "CANARY_GUARD_CANARY_HOST")]
    pub canary_host: Option<String>,

    /// The canary destination's subset.
    #[arg(long, env = "CANARY_GUARD_CANARY_SUBSET")]
    pub canary_subset: Option<String>,

    /// Stable destination host, for routes whose only destination is the canary.
    #[arg(long, env = "CANARY_GUARD_STABLE_HOST")]
    pub stable_host: Option<String>,

    /// Stable destination subset, for routes whose only destination is the canary.
    #[arg(long, env = "CANARY_GUARD_STABLE_SUBSET")]
    pub stable_subset: Option<String>,

    /// Kubeconfig file (default: in-cluster config, then `KUBECONFIG`, then ~/.kube/config).
    #[arg(long, env = "CANARY_GUARD_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<std::path::PathBuf>,

    /// Decide and report, but never write to the VirtualService or the Deployment.
    #[arg(long, env = "CANARY_GUARD_DRY_RUN")]
    pub dry_run: bool,

    /// Leader lease duration (1s..=5m; greater than --renew-deadline).
    #[arg(long, env = "CANARY_GUARD_LEASE_DURATION", value_name = "DURATION",
          default_value = "15s", value_parser = parse_lease_timing)]
    pub lease_duration: Duration,

    /// Time a leader keeps trying to renew before it steps down (greater than --retry-period).
    #[arg(long, env = "CANARY_GUARD_RENEW_DEADLINE", value_name = "DURATION",
          default_value = "10s", value_parser = parse_lease_timing)]
    pub renew_deadline: Duration,

    /// Time between leader-election attempts.
    #[arg(long, env = "CANARY_GUARD_RETRY_PERIOD", value_name = "DURATION",
          default_value = "2s", value_parser = parse_retry_period)]
    pub retry_period: Duration,

    /// Heartbeat: time between writes of this guard's window summary to its member lease
    /// while it crosses no limit (100ms..=1m). A window that crosses one is written at once
    /// and then every --interval.
    #[arg(long, env = "CANARY_GUARD_PUBLISH_INTERVAL", value_name = "DURATION",
          default_value = "10s", value_parser = parse_publish_interval)]
    pub publish_interval: Duration,

    /// Also judge each member with enough traffic alone, not only the aggregate.
    #[arg(long, env = "CANARY_GUARD_PER_MEMBER", default_value = "true",
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub per_member: bool,

    /// What this guard's pod is: `canary`, or `baseline` for a stable pod whose guard
    /// only publishes its window, for the leader to judge the canary against. Baseline
    /// guards take the group's flags, never lead and never roll back their own pods.
    #[arg(long, env = "CANARY_GUARD_ROLE", value_name = "ROLE", default_value = "canary",
          value_parser = parse_role)]
    pub role: Role,

    /// With baseline guards in the group: the canary fails when its error ratio is
    /// significantly above the baseline's (times --max-error-factor) plus this many
    /// percentage points, over the same seconds (0..=100).
    #[arg(long, env = "CANARY_GUARD_MAX_ERROR_INCREASE", value_name = "POINTS",
          default_value = "0.1", value_parser = parse_points)]
    pub max_error_increase: f64,

    /// With baseline guards: the baseline's error ratio is multiplied by this before
    /// --max-error-increase is added (1..=100).
    #[arg(long, env = "CANARY_GUARD_MAX_ERROR_FACTOR", value_name = "FACTOR",
          default_value = "1", value_parser = parse_factor)]
    pub max_error_factor: f64,

    /// With baseline guards: the canary fails when its latency at --latency-quantile is
    /// significantly above this multiple of the baseline's (1..=100).
    #[arg(long, env = "CANARY_GUARD_MAX_LATENCY_INCREASE", value_name = "FACTOR",
          default_value = "1.5", value_parser = parse_factor)]
    pub max_latency_increase: f64,

    /// The canary Deployment: Events go on it too, and --on-rollback acts on it.
    #[arg(long, env = "CANARY_GUARD_DEPLOYMENT", value_name = "NAME")]
    pub deployment: Option<String>,

    /// What to do to --deployment after a rollback.
    #[arg(
        long,
        env = "CANARY_GUARD_ON_ROLLBACK",
        value_enum,
        default_value = "none"
    )]
    pub on_rollback: OnRollback,

    /// Put the recorded weights back when a new canary revision rolls out.
    #[arg(long, env = "CANARY_GUARD_RESTORE_ON_NEW_REVISION", default_value = "true",
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub restore_on_new_revision: bool,

    /// POST a message here when the leader rolls back, re-asserts or restores
    /// (http only: use an in-cluster relay for https). Best set from a Secret through
    /// the environment; never logged.
    #[arg(long, env = "CANARY_GUARD_NOTIFY_URL", value_name = "URL", hide_env_values = true,
          value_parser = crate::notify::url::NotifyUrlParser)]
    pub notify_url: Option<crate::notify::url::NotifyUrl>,

    /// Body of the --notify-url requests: a JSON object, or Slack's `{"text": ...}`.
    #[arg(
        long,
        env = "CANARY_GUARD_NOTIFY_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub notify_format: crate::notify::message::NotifyFormat,
}

/// Default `--envoy-stats-url`: istio-proxy's merged Prometheus endpoint.
pub const DEFAULT_ENVOY_STATS_URL: &str = "http://127.0.0.1:15090/stats/prometheus";

/// Unit of `le` in the app's latency histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MetricsUnit {
    /// `le` in seconds (Prometheus convention).
    Seconds,
    /// `le` in milliseconds.
    Milliseconds,
}

/// Flags of envoy mode: where to scrape and which series count.
#[derive(Clone, Debug, Args)]
pub struct ScrapeArgs {
    /// The istio-proxy's Prometheus endpoint.
    #[arg(long, env = "CANARY_GUARD_ENVOY_STATS_URL", value_name = "URL",
          default_value = DEFAULT_ENVOY_STATS_URL, value_parser = parse_scrape_url)]
    pub envoy_stats_url: Uri,

    /// Only Envoy series with this label value count, e.g. `destination_workload=reviews-v2`
    /// (repeatable; `reporter=destination` is always applied).
    #[arg(long = "envoy-label", env = "CANARY_GUARD_ENVOY_LABEL", value_name = "NAME=VALUE",
          value_delimiter = ',', value_parser = parse_envoy_label)]
    pub envoy_labels: Vec<(String, String)>,

    /// Time between scrapes, and the time one scrape may take (100ms..=1m).
    #[arg(long, env = "CANARY_GUARD_SCRAPE_INTERVAL", value_name = "DURATION",
          default_value = "1s", value_parser = parse_scrape_interval)]
    pub scrape_interval: Duration,

    /// Read the app's own request metrics from this URL instead of Envoy's.
    #[arg(long, env = "CANARY_GUARD_METRICS_URL", value_name = "URL", value_parser = parse_scrape_url)]
    pub metrics_url: Option<Uri>,

    /// With --metrics-url: the request counter.
    #[arg(long, env = "CANARY_GUARD_METRICS_REQUESTS", value_name = "NAME",
          default_value = "http_requests_total", value_parser = parse_metric_name)]
    pub metrics_requests: String,

    /// With --metrics-url: the latency histogram (its `_bucket` series are read).
    #[arg(long, env = "CANARY_GUARD_METRICS_DURATION", value_name = "NAME",
          default_value = "http_request_duration_seconds", value_parser = parse_metric_name)]
    pub metrics_duration: String,

    /// With --metrics-url: the label holding the HTTP status code (5xx is an error).
    #[arg(long, env = "CANARY_GUARD_METRICS_STATUS_LABEL", value_name = "NAME",
          default_value = "code", value_parser = parse_label_name)]
    pub metrics_status_label: String,

    /// With --metrics-url: the unit of the histogram's `le` bounds.
    #[arg(
        long,
        env = "CANARY_GUARD_METRICS_UNIT",
        value_enum,
        default_value = "seconds"
    )]
    pub metrics_unit: MetricsUnit,

    /// With --metrics-url: only series with this label value count (repeatable).
    #[arg(long = "metrics-label", env = "CANARY_GUARD_METRICS_LABEL", value_name = "NAME=VALUE",
          value_delimiter = ',', value_parser = parse_label_filter)]
    pub metrics_labels: Vec<(String, String)>,
}
