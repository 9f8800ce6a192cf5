//! Command line and environment: every `run` flag `--x-y` can also be set as
//! `CANARY_GUARD_X_Y`. Values are checked when parsed, so a bad one exits
//! non-zero with a message naming the flag, the value and the accepted range.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use http::Uri;

use crate::domain::counters::{LatencyUnit, Schema};
use crate::observe::scrape::{ScrapeConfig, MAX_PAGE_BYTES, MAX_SERIES};

/// Default proxy port: outside Istio's 15000–15090 and away from common app ports.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:4680";
/// Default admin port (metrics, health, state).
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:4681";

/// canary-guard: cut a failing canary off in seconds.
#[derive(Debug, Parser)]
#[command(name = "canary-guard", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the guard sidecar.
    Run(Box<RunArgs>),
    /// Run the whole loop on this machine: embedded API, apps, three guards, load, a fault.
    #[cfg(feature = "demo")]
    Demo(crate::runtime::demo::DemoArgs),
    /// Show a guard group: leader, members and their windows, verdict, weights.
    Status(crate::runtime::ops::StatusArgs),
    /// Put back the weights recorded before a rollback (and resume a paused rollout).
    Restore(crate::runtime::ops::RestoreArgs),
    /// Add the guard sidecar to Kubernetes manifests (file or stdin to stdout).
    Inject(crate::inject::InjectArgs),
    /// Serve a mutating admission webhook that adds the guard to labelled pods.
    Webhook(Box<crate::webhook::WebhookArgs>),
}

/// The file name kubectl looks for to run `kubectl canary-guard` (a `-` in a plugin's
/// command is a `_` in its file name).
pub const KUBECTL_PLUGIN: &str = "kubectl-canary_guard";

/// Parses the command line. Run as [`KUBECTL_PLUGIN`] (a link to this binary), the usage
/// says `kubectl canary-guard` and offers the operator's commands, `status` and `restore`.
pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let plugin = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == KUBECTL_PLUGIN);
    let mut cmd = Cli::command();
    if plugin {
        cmd = cmd
            .name("kubectl canary-guard")
            .bin_name("kubectl canary-guard")
            .about("kubectl canary-guard: see and restore a guarded canary");
        // The sidecar's own commands stay usable but out of the plugin's help.
        for sub in ["run", "demo", "inject", "webhook"] {
            // `demo` is absent from a build without the `demo` feature.
            if cmd.find_subcommand(sub).is_some() {
                cmd = cmd.mut_subcommand(sub, |s| s.hide(true));
            }
        }
    }
    // Without the feature clap would only call `demo` unrecognized; say why it is missing.
    if cfg!(not(feature = "demo")) && args.get(1).is_some_and(|a| a == "demo") {
        return Err(cmd.error(
            clap::error::ErrorKind::InvalidSubcommand,
            "`demo` is not in this build: it was built without the `demo` feature \
             (--no-default-features), which leaves the embedded Kubernetes API out; \
             build with default features to run it",
        ));
    }
    let matches = cmd.try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

/// How the guard observes the canary's traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Reverse proxy in front of the app (Service targetPort -> guard -> app).
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

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `canary-guard run`.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// How to observe traffic.
    #[arg(long, env = "CANARY_GUARD_MODE", value_enum, default_value = "proxy")]
    pub mode: Mode,

    /// Proxy listener address (the Service's targetPort points here).
    #[arg(long, env = "CANARY_GUARD_LISTEN", value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// The app behind the proxy.
    #[arg(long, env = "CANARY_GUARD_UPSTREAM", value_name = "URL",
          default_value = "http://127.0.0.1:8080", value_parser = parse_upstream)]
    pub upstream: Uri,

    /// Admin listener: /metrics, /healthz, /readyz, /v1/state.
    #[arg(long, env = "CANARY_GUARD_ADMIN_LISTEN", value_name = "ADDR", default_value = DEFAULT_ADMIN_LISTEN)]
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

/// What the guard does to the canary Deployment after a rollback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnRollback {
    /// Nothing beyond the VirtualService and the Events.
    None,
    /// Pause the Deployment's rollout (`kubectl rollout pause`).
    Pause,
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

/// The cluster settings once every required one is known.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Guard group.
    pub group: String,
    /// Namespace, when given (else the client's default).
    pub namespace: Option<String>,
    /// This pod's name.
    pub pod_name: String,
    /// This pod's UID.
    pub pod_uid: Option<String>,
    /// Canary revision.
    pub revision: Option<String>,
    /// VirtualService name.
    pub virtual_service: String,
}

impl ClusterArgs {
    /// Fills identity from the downward API variables and checks that the
    /// cluster loop has what it needs; the error names the missing flags.
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> crate::Result<ClusterConfig> {
        let mut missing = Vec::new();
        let group = self.group.clone();
        if group.is_none() {
            missing.push("--group");
        }
        let pod_name = self.pod_name.clone().or_else(|| env("POD_NAME"));
        if pod_name.is_none() {
            missing.push("--pod-name (or POD_NAME from the downward API)");
        }
        if self.virtual_service.is_none() {
            missing.push("--virtual-service");
        }
        if self.canary_host.is_none() && self.canary_subset.is_none() {
            missing.push("--canary-host and/or --canary-subset");
        }
        if !missing.is_empty() {
            return Err(crate::Error::Config(format!(
                "the cluster loop needs {}; or pass --standalone to observe and export without Kubernetes",
                missing.join(", ")
            )));
        }
        if self.lease_duration <= self.renew_deadline || self.renew_deadline <= self.retry_period {
            return Err(crate::Error::Config(format!(
                "--lease-duration {} must be greater than --renew-deadline {}, which must be greater than --retry-period {}",
                fmt_duration(self.lease_duration),
                fmt_duration(self.renew_deadline),
                fmt_duration(self.retry_period)
            )));
        }
        if self.on_rollback == OnRollback::Pause && self.deployment.is_none() {
            return Err(crate::Error::Config(
                "--on-rollback=pause needs --deployment naming the canary Deployment".into(),
            ));
        }
        Ok(ClusterConfig {
            group: group.unwrap_or_default(),
            namespace: self.namespace.clone().or_else(|| env("POD_NAMESPACE")),
            pod_name: pod_name.unwrap_or_default(),
            pod_uid: self.pod_uid.clone().or_else(|| env("POD_UID")),
            revision: self.revision.clone().or_else(|| env("POD_TEMPLATE_HASH")),
            virtual_service: self.virtual_service.clone().unwrap_or_default(),
        })
    }
}

fn parse_dns_label(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err("must be 1-40 lowercase letters, digits or '-', starting and ending alphanumeric (it becomes part of Lease names)".into())
    }
}

fn parse_lease_timing(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(1_000), ms(300_000))
}

fn parse_retry_period(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(100), ms(60_000))
}

fn parse_publish_interval(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(100), ms(60_000))
}

impl RunArgs {
    /// Checks that need more than one flag; the message names the flags and the fix.
    pub fn validate(&self) -> crate::Result<()> {
        let err = |m: String| Err(crate::Error::Config(m));
        if self.interval > self.window {
            return err(format!(
                "--interval {} is longer than --window {}: checks must run at least once per window",
                fmt_duration(self.interval),
                fmt_duration(self.window)
            ));
        }
        self.scrape.validate(self.mode)?;
        if self.mode == Mode::Envoy {
            // No proxy listener in envoy mode: --listen and --upstream are unused.
            return Ok(());
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return err(format!(
                "--listen and --admin-listen are both {}: give the admin server its own port",
                self.listen
            ));
        }
        if let Some(port) = self.upstream.port_u16() {
            let host = self.upstream.host().unwrap_or_default();
            let same_host = host == self.listen.ip().to_string()
                || (self.listen.ip().is_unspecified()
                    && matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "0.0.0.0"));
            if port == self.listen.port() && same_host {
                return err(format!(
                    "--upstream {} points at the guard's own --listen {}: the proxy would call itself; point --upstream at the app",
                    self.upstream, self.listen
                ));
            }
        }
        Ok(())
    }
}

/// Parses `250ms`, `2s`, `1.5s`, `1m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("missing unit: write e.g. 250ms, 2s or 1m (got `{s}`)"))?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: write e.g. 250ms, 2s or 1m"))?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("unknown unit `{unit}` in `{s}`: use ms, s, m or h")),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs > 86_400.0 * 365.0 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Formats a duration the way it can be written on the command line.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn duration_in(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < min || d > max {
        return Err(format!(
            "must be between {} and {}",
            fmt_duration(min),
            fmt_duration(max)
        ));
    }
    Ok(d)
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn parse_max_latency(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(1), ms(60_000))
}

fn parse_window(s: &str) -> Result<Duration, String> {
    let d = duration_in(s, ms(5_000), ms(600_000))?;
    if d.subsec_nanos() != 0 {
        return Err("must be a whole number of seconds (the window is made of 1 s slots)".into());
    }
    Ok(d)
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(100), ms(60_000))
}

fn parse_upstream_timeout(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(0), ms(3_600_000))
}

fn parse_connect_timeout(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(10), ms(60_000))
}

fn parse_header_timeout(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(1_000), ms(300_000))
}

pub(crate) fn parse_drain_timeout(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(0), ms(600_000))
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| "must be a number between 0 and 1, e.g. 0.05".to_string())?;
    if !(0.0..=1.0).contains(&v) {
        return Err("must be between 0 and 1, e.g. 0.05 for 5%".into());
    }
    Ok(v)
}

fn parse_quantile(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| "must be a number between 0.5 and 0.999, e.g. 0.99".to_string())?;
    if !(0.5..=0.999).contains(&v) {
        return Err("must be between 0.5 and 0.999, e.g. 0.99".into());
    }
    Ok(v)
}

/// Parses a `--confidence` value (0.5..=0.999999).
pub(crate) fn parse_confidence(s: &str) -> Result<f64, String> {
    const RANGE: &str = "between 0.5 and 0.999999, e.g. 0.99999";
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("must be a number {RANGE}"))?;
    if !(0.5..=0.999_999).contains(&v) {
        return Err(format!("must be {RANGE}"));
    }
    Ok(v)
}

/// Parses an `http://host:port` base URL (no path, query or userinfo).
pub fn parse_upstream(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .parse()
        .map_err(|_| "must be a URL like http://127.0.0.1:8080".to_string())?;
    if uri.scheme_str() != Some("http") {
        return Err("must start with http:// (the app is reached over the pod's loopback)".into());
    }
    let Some(authority) = uri.authority() else {
        return Err("must name a host, like http://127.0.0.1:8080".into());
    };
    if authority.as_str().contains('@') {
        return Err("must not carry credentials".into());
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err("must be a base URL without a path, like http://127.0.0.1:8080".into());
    }
    Ok(uri)
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

impl ScrapeArgs {
    /// The scrape these flags describe: Envoy's page, or the app's with `--metrics-url`;
    /// a gap longer than `window` between scrapes starts the counts afresh.
    pub fn resolve(&self, window: Duration) -> ScrapeConfig {
        let (url, schema) = match &self.metrics_url {
            None => (
                self.envoy_stats_url.clone(),
                Schema::istio(&self.envoy_labels),
            ),
            Some(url) => (
                url.clone(),
                Schema {
                    requests: self.metrics_requests.clone(),
                    duration_buckets: Some(format!("{}_bucket", self.metrics_duration)),
                    unit: match self.metrics_unit {
                        MetricsUnit::Seconds => LatencyUnit::Seconds,
                        MetricsUnit::Milliseconds => LatencyUnit::Milliseconds,
                    },
                    status_label: self.metrics_status_label.clone(),
                    grpc_status_label: None,
                    grpc_server_errors: Vec::new(),
                    flags_label: None,
                    filters: self.metrics_labels.clone(),
                },
            ),
        };
        ScrapeConfig {
            url,
            interval: self.scrape_interval,
            max_bytes: MAX_PAGE_BYTES,
            max_series: MAX_SERIES,
            max_gap: window,
            schema,
        }
    }

    fn validate(&self, mode: Mode) -> crate::Result<()> {
        if mode == Mode::Envoy {
            if self.metrics_url.is_some() && !self.envoy_labels.is_empty() {
                return Err(crate::Error::Config(
                    "--envoy-label filters Envoy's page, which is not read with --metrics-url: use --metrics-label".into(),
                ));
            }
            return Ok(());
        }
        let stray = if self.metrics_url.is_some() {
            Some("--metrics-url")
        } else if !self.envoy_labels.is_empty() {
            Some("--envoy-label")
        } else if !self.metrics_labels.is_empty() {
            Some("--metrics-label")
        } else {
            None
        };
        match stray {
            Some(flag) => Err(crate::Error::Config(format!(
                "{flag} is only used with --mode envoy (the guard is in --mode {})",
                mode.as_str()
            ))),
            None => Ok(()),
        }
    }
}

fn parse_scrape_interval(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(100), ms(60_000))
}

/// Parses an `http://host:port/path` URL to scrape.
fn parse_scrape_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .parse()
        .map_err(|_| "must be a URL like http://127.0.0.1:15090/stats/prometheus".to_string())?;
    if uri.scheme_str() != Some("http") {
        return Err("must start with http:// (the endpoint is on the pod's loopback)".into());
    }
    match uri.authority() {
        None => Err("must name a host, like http://127.0.0.1:15090/stats/prometheus".into()),
        Some(a) if a.as_str().contains('@') => Err("must not carry credentials".into()),
        Some(_) => Ok(uri),
    }
}

fn parse_metric_name(s: &str) -> Result<String, String> {
    let mut bytes = s.bytes();
    let ok = bytes
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && bytes.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':');
    if ok {
        Ok(s.to_string())
    } else {
        Err("must be a Prometheus metric name: letters, digits, '_' and ':', not starting with a digit".into())
    }
}

fn parse_label_name(s: &str) -> Result<String, String> {
    let mut bytes = s.bytes();
    let ok = bytes
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && bytes.all(|c| c.is_ascii_alphanumeric() || c == b'_');
    if ok {
        Ok(s.to_string())
    } else {
        Err(
            "must be a Prometheus label name: letters, digits and '_', not starting with a digit"
                .into(),
        )
    }
}

fn parse_label_filter(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| "must be NAME=VALUE, e.g. destination_workload=reviews-v2".to_string())?;
    Ok((parse_label_name(name.trim())?, value.trim().to_string()))
}

fn parse_envoy_label(s: &str) -> Result<(String, String), String> {
    let (name, value) = parse_label_filter(s)?;
    if name == "reporter" && value != "destination" {
        return Err(
            "reporter is always destination: the guard counts the canary's inbound requests".into(),
        );
    }
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serializes parsing with the test that sets `CANARY_GUARD_*` variables.
    static ENV: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let _env = ENV.lock();
        parse_unlocked(args)
    }

    fn parse_unlocked(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["canary-guard", "run"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Run(a) => *a,
            other => panic!("parsed {other:?}"),
        })
    }

    #[test]
    fn defaults() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.mode, Mode::Proxy);
        assert_eq!(a.listen.port(), 4680);
        assert_eq!(a.admin_listen.port(), 4681);
        assert_eq!(a.upstream, "http://127.0.0.1:8080");
        assert_eq!(a.max_error_ratio, 0.05);
        assert_eq!(a.max_latency, ms(500));
        assert_eq!(a.latency_quantile, 0.99);
        assert_eq!(a.min_requests, 20);
        assert_eq!(a.window, ms(30_000));
        assert_eq!(a.interval, ms(1_000));
        assert_eq!(a.failure_threshold, 1);
        assert_eq!(a.confidence, crate::domain::policy::DEFAULT_CONFIDENCE);
        assert!(!a.standalone);
        a.validate().unwrap();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), ms(250));
        assert_eq!(parse_duration("2s").unwrap(), ms(2000));
        assert_eq!(parse_duration("1.5s").unwrap(), ms(1500));
        assert_eq!(parse_duration("1m").unwrap(), ms(60_000));
        assert!(parse_duration("5").unwrap_err().contains("missing unit"));
        assert!(parse_duration("5d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("ms").is_err());
        assert_eq!(fmt_duration(ms(1500)), "1500ms");
        assert_eq!(fmt_duration(ms(120_000)), "2m");
    }

    #[test]
    fn bad_values_name_flag_value_and_range() {
        for (args, flag, value, range) in [
            (
                &["--max-error-ratio", "1.5"][..],
                "--max-error-ratio",
                "1.5",
                "between 0 and 1",
            ),
            (
                &["--max-latency", "2h"],
                "--max-latency",
                "2h",
                "between 1ms and 1m",
            ),
            (&["--window", "2s"], "--window", "2s", "between 5s and 10m"),
            (
                &["--confidence", "0.3"],
                "--confidence",
                "0.3",
                "between 0.5 and 0.999999",
            ),
            (
                &["--window", "7500ms"],
                "--window",
                "7500ms",
                "whole number of seconds",
            ),
            (
                &["--latency-quantile", "1"],
                "--latency-quantile",
                "1",
                "0.5 and 0.999",
            ),
            (
                &["--min-requests", "0"],
                "--min-requests",
                "0",
                "1..=1000000",
            ),
            (
                &["--failure-threshold", "0"],
                "--failure-threshold",
                "0",
                "1..=1000",
            ),
            (
                &["--upstream", "https://x:1"],
                "--upstream",
                "https://x:1",
                "http://",
            ),
            (&["--listen", "nope"], "--listen", "nope", "invalid"),
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(
                e.contains(flag) && e.contains(value) && e.contains(range),
                "{args:?}: {e}"
            );
        }
        let e = parse(&["--no-such-flag"]).unwrap_err().to_string();
        assert!(e.contains("--no-such-flag"), "{e}");
    }

    #[test]
    fn cross_flag_checks() {
        let e = parse(&["--interval", "10s", "--window", "5s"])
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--interval") && e.contains("--window"), "{e}");
        let e = parse(&[
            "--listen",
            "127.0.0.1:9000",
            "--admin-listen",
            "127.0.0.1:9000",
        ])
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("--admin-listen"), "{e}");
        let e = parse(&[
            "--listen",
            "0.0.0.0:9000",
            "--upstream",
            "http://127.0.0.1:9000",
        ])
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("call itself"), "{e}");
    }

    #[test]
    fn cluster_flags_resolve_from_downward_api() {
        let a = parse(&[
            "--group",
            "reviews",
            "--virtual-service",
            "reviews",
            "--canary-subset",
            "v2",
            "--per-member=false",
        ])
        .unwrap();
        assert!(!a.cluster.per_member);
        assert!(a.cluster.restore_on_new_revision);
        let env = |k: &str| match k {
            "POD_NAME" => Some("reviews-v2-abc".to_string()),
            "POD_NAMESPACE" => Some("shop".to_string()),
            "POD_TEMPLATE_HASH" => Some("5d9f".to_string()),
            _ => None,
        };
        let c = a.cluster.resolve(env).unwrap();
        assert_eq!(c.pod_name, "reviews-v2-abc");
        assert_eq!(c.namespace.as_deref(), Some("shop"));
        assert_eq!(c.revision.as_deref(), Some("5d9f"));
        let e = parse(&[])
            .unwrap()
            .cluster
            .resolve(|_| None)
            .unwrap_err()
            .to_string();
        for flag in [
            "--group",
            "--pod-name",
            "--virtual-service",
            "--canary-host",
            "--standalone",
        ] {
            assert!(e.contains(flag), "{e}");
        }
        let e = parse(&[
            "--group",
            "g",
            "--virtual-service",
            "v",
            "--canary-host",
            "h",
            "--lease-duration",
            "5s",
            "--renew-deadline",
            "5s",
        ])
        .unwrap()
        .cluster
        .resolve(env)
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--lease-duration 5s must be greater than --renew-deadline 5s"),
            "{e}"
        );
        assert!(parse(&["--group", "Bad_Group"])
            .unwrap_err()
            .to_string()
            .contains("--group"));
    }

    #[test]
    fn kubectl_plugin_usage_names_kubectl() {
        let e = parse_args(["/usr/local/bin/kubectl-canary_guard", "status"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("Usage: kubectl canary-guard status"), "{e}");
        assert!(e.contains("--group"), "{e}");
        let help = parse_args(["kubectl-canary_guard", "--help"])
            .unwrap_err()
            .to_string();
        assert!(help.contains("Usage: kubectl canary-guard"), "{help}");
        assert!(
            help.contains("status") && help.contains("restore"),
            "{help}"
        );
        assert!(!help.contains("webhook"), "{help}");
        let cli = parse_args([
            "kubectl-canary_guard",
            "status",
            "--group",
            "reviews",
            "--virtual-service",
            "reviews",
            "--watch",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Status(s) if s.watch));
        let e = parse_args(["canary-guard", "status"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("Usage: canary-guard status"), "{e}");
    }

    #[test]
    fn notify_url_is_never_echoed() {
        let e = parse(&["--notify-url", "https://hooks.example/services/SECRET"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--notify-url") && e.contains("https is not supported"),
            "{e}"
        );
        assert!(!e.contains("SECRET"), "{e}");
        let a = parse(&[
            "--notify-url",
            "http://relay.monitoring:8080/hook/SECRET",
            "--notify-format",
            "slack",
        ])
        .unwrap();
        assert!(a.cluster.notify_url.is_some());
        assert_eq!(
            a.cluster.notify_format,
            crate::notify::message::NotifyFormat::Slack
        );
        assert!(!format!("{a:?}").contains("SECRET"));
    }

    #[test]
    fn env_equivalents() {
        let _env = ENV.lock();
        std::env::set_var("CANARY_GUARD_MAX_ERROR_RATIO", "0.2");
        std::env::set_var("CANARY_GUARD_WINDOW", "1m");
        let a = parse_unlocked(&[]).unwrap();
        std::env::remove_var("CANARY_GUARD_MAX_ERROR_RATIO");
        std::env::remove_var("CANARY_GUARD_WINDOW");
        assert_eq!(a.max_error_ratio, 0.2);
        assert_eq!(a.window, ms(60_000));
    }

    #[test]
    fn envoy_flags() {
        let a = parse(&["--mode", "envoy"]).unwrap();
        assert_eq!(a.mode, Mode::Envoy);
        assert_eq!(a.scrape.envoy_stats_url, DEFAULT_ENVOY_STATS_URL);
        assert_eq!(a.scrape.scrape_interval, ms(1_000));
        assert!(a.scrape.envoy_labels.is_empty() && a.scrape.metrics_url.is_none());
        assert_eq!(a.scrape.metrics_requests, "http_requests_total");
        assert_eq!(a.scrape.metrics_unit, MetricsUnit::Seconds);
        a.validate().unwrap();
        let a = parse(&[
            "--mode",
            "envoy",
            "--envoy-label",
            "destination_workload=reviews-v2",
            "--envoy-label",
            "destination_version = v2",
            "--metrics-unit",
            "milliseconds",
            // Unused in envoy mode, so not checked against each other.
            "--listen",
            "127.0.0.1:9000",
            "--admin-listen",
            "127.0.0.1:9000",
        ])
        .unwrap();
        a.validate().unwrap();
        assert_eq!(
            a.scrape.envoy_labels,
            [
                ("destination_workload".into(), "reviews-v2".into()),
                ("destination_version".into(), "v2".into())
            ]
        );
        assert_eq!(a.scrape.metrics_unit, MetricsUnit::Milliseconds);
        for (args, flag, value, range) in [
            (
                &["--scrape-interval", "10ms"][..],
                "--scrape-interval",
                "10ms",
                "between 100ms and 1m",
            ),
            (
                &["--envoy-stats-url", "https://x/stats"],
                "--envoy-stats-url",
                "https://x/stats",
                "http://",
            ),
            (
                &["--envoy-label", "workload"],
                "--envoy-label",
                "workload",
                "NAME=VALUE",
            ),
            (
                &["--envoy-label", "reporter=source"],
                "--envoy-label",
                "reporter=source",
                "always destination",
            ),
            (
                &["--metrics-requests", "9lives"],
                "--metrics-requests",
                "9lives",
                "metric name",
            ),
            (
                &["--metrics-status-label", "status-code"],
                "--metrics-status-label",
                "status-code",
                "label name",
            ),
            (
                &["--metrics-unit", "minutes"],
                "--metrics-unit",
                "minutes",
                "seconds, milliseconds",
            ),
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(
                e.contains(flag) && e.contains(value) && e.contains(range),
                "{args:?}: {e}"
            );
        }
        let e = parse(&["--metrics-url", "http://127.0.0.1:9090/metrics"])
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--metrics-url") && e.contains("--mode envoy"),
            "{e}"
        );
        let e = parse(&[
            "--mode",
            "envoy",
            "--metrics-url",
            "http://127.0.0.1:9090/metrics",
            "--envoy-label",
            "destination_version=v2",
        ])
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--envoy-label") && e.contains("--metrics-label"),
            "{e}"
        );
    }

    #[test]
    fn metrics_url_flags_make_an_app_schema() {
        let cli = Cli::try_parse_from([
            "canary-guard",
            "run",
            "--mode",
            "envoy",
            "--metrics-url",
            "http://127.0.0.1:9090/metrics",
            "--metrics-label",
            "handler=/api",
        ])
        .unwrap();
        #[allow(unreachable_patterns)]
        let args = match cli.command {
            Command::Run(args) => args,
            _ => unreachable!(),
        };
        let c = args.scrape.resolve(args.window);
        assert_eq!(c.url, "http://127.0.0.1:9090/metrics");
        assert_eq!(c.schema.requests, "http_requests_total");
        assert_eq!(
            c.schema.duration_buckets.as_deref(),
            Some("http_request_duration_seconds_bucket")
        );
        assert_eq!(c.schema.status_label, "code");
        assert_eq!(c.schema.unit, LatencyUnit::Seconds);
        assert_eq!(
            c.schema.filters,
            [("handler".to_string(), "/api".to_string())]
        );
        let envoy = Schema::istio(&[("reporter".into(), "x".into())]);
        assert_eq!(
            envoy.filters,
            [("reporter".to_string(), "destination".to_string())]
        );
    }
}
