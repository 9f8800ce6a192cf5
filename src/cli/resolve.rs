//! From `run`'s flags to the [`GuardConfig`] the runtime uses: identity from
//! the downward API, the checks that need more than one flag, and each flag
//! turned into the setting of the component that uses it.
//!
//! Design rule: every flag is read here and nowhere else; an error names the
//! flags and the fix.

use crate::cluster::virtual_service::RouteTargets;
use crate::config::{
    ClusterConfig, ElectionTimings, GuardConfig, Observe, OnRollback, ProxySettings,
    POOL_IDLE_TIMEOUT,
};
use crate::domain::counters::{LatencyUnit, Schema};
use crate::domain::policy::Thresholds;
use crate::domain::relative::Relative;
use crate::domain::routes::{CanaryTarget, StableTarget};
use crate::notify::NotifyConfig;
use crate::observe::proxy::ProxyConfig;
use crate::observe::scrape::ScrapeConfig;
use crate::server::Limits;
use crate::{Error, Result};

use super::{ClusterArgs, MetricsUnit, Mode, RunArgs, ScrapeArgs};
use crate::parse::fmt_duration;

impl RunArgs {
    /// The configuration these flags describe; `env` reads the downward API's
    /// variables (`POD_NAME`, `POD_NAMESPACE`, `POD_UID`, `POD_TEMPLATE_HASH`).
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<GuardConfig> {
        self.validate()?;
        let observe = match self.mode {
            Mode::Proxy => Observe::Proxy(ProxySettings {
                listen: self.listen,
                upstream: ProxyConfig {
                    upstream: self.upstream.clone(),
                    connect_timeout: self.connect_timeout,
                    upstream_timeout: (!self.upstream_timeout.is_zero())
                        .then_some(self.upstream_timeout),
                    pool_idle_timeout: POOL_IDLE_TIMEOUT,
                },
                limits: Limits {
                    max_connections: self.max_connections as usize,
                    header_read_timeout: self.header_read_timeout,
                    max_header_bytes: self.max_header_bytes as usize,
                    drain_timeout: self.drain_timeout,
                    // Plain TCP: no handshake to time.
                    ..Limits::default()
                },
            }),
            Mode::Envoy => Observe::Envoy(self.scrape.resolve(self.window)),
        };
        let cluster = match self.standalone {
            true => None,
            false => Some(self.cluster.resolve(env)?),
        };
        Ok(GuardConfig {
            observe,
            admin_listen: self.admin_listen,
            thresholds: Thresholds {
                max_error_ratio: self.max_error_ratio,
                max_latency: self.max_latency,
                latency_quantile: self.latency_quantile,
                min_requests: self.min_requests,
                failure_threshold: self.failure_threshold,
                confidence: self.confidence,
            },
            window: self.window,
            interval: self.interval,
            cluster,
        })
    }

    /// Checks that need more than one flag.
    pub(super) fn validate(&self) -> Result<()> {
        let err = |m: String| Err(Error::Config(m));
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

impl ClusterArgs {
    /// Fills identity from the downward API variables and checks that the
    /// cluster loop has what it needs; the error names the missing flags.
    pub(super) fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<ClusterConfig> {
        let pod_name = self.pod_name.clone().or_else(|| env("POD_NAME"));
        let mut missing = Vec::new();
        if self.group.is_none() {
            missing.push("--group");
        }
        if pod_name.is_none() {
            missing.push("--pod-name (or POD_NAME from the downward API)");
        }
        if self.virtual_service.is_none() {
            missing.push("--virtual-service");
        }
        if self.canary_host.is_none() && self.canary_subset.is_none() {
            missing.push("--canary-host and/or --canary-subset");
        }
        let (Some(group), Some(pod_name), Some(virtual_service), true) = (
            &self.group,
            &pod_name,
            &self.virtual_service,
            missing.is_empty(),
        ) else {
            return Err(Error::Config(format!(
                "the cluster loop needs {}; or pass --standalone to observe and export without Kubernetes",
                missing.join(", ")
            )));
        };
        let election = ElectionTimings {
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        };
        if election.lease_duration <= election.renew_deadline
            || election.renew_deadline <= election.retry_period
        {
            return Err(Error::Config(format!(
                "--lease-duration {} must be greater than --renew-deadline {}, which must be greater than --retry-period {}",
                fmt_duration(self.lease_duration),
                fmt_duration(self.renew_deadline),
                fmt_duration(self.retry_period)
            )));
        }
        if self.on_rollback == OnRollback::Pause && self.deployment.is_none() {
            return Err(Error::Config(
                "--on-rollback=pause needs --deployment naming the canary Deployment".into(),
            ));
        }
        let mut config = ClusterConfig::new(group, pod_name, virtual_service, self.targets()?);
        config.namespace = self.namespace.clone().or_else(|| env("POD_NAMESPACE"));
        config.pod_uid = self.pod_uid.clone().or_else(|| env("POD_UID"));
        config.revision = self.revision.clone().or_else(|| env("POD_TEMPLATE_HASH"));
        config.kubeconfig = self.kubeconfig.clone();
        config.virtual_service_version = self.virtual_service_version.clone();
        config.dry_run = self.dry_run;
        config.election = election;
        config.publish_interval = self.publish_interval;
        config.per_member = self.per_member;
        config.role = self.role;
        config.relative = Relative {
            max_error_increase: self.max_error_increase,
            error_factor: self.max_error_factor,
            max_latency_increase: self.max_latency_increase,
        };
        config.deployment = self.deployment.clone();
        config.on_rollback = self.on_rollback;
        config.restore_on_new_revision = self.restore_on_new_revision;
        config.notify = self
            .notify_url
            .clone()
            .map(|url| NotifyConfig::new(url, self.notify_format));
        Ok(config)
    }

    fn targets(&self) -> Result<RouteTargets> {
        let canary = CanaryTarget::new(self.canary_host.clone(), self.canary_subset.clone())
            .map_err(|e| Error::Config(format!("--canary-host/--canary-subset: {e}")))?;
        let stable = match (&self.stable_host, &self.stable_subset) {
            (None, None) => None,
            (host, subset) => Some(
                StableTarget::new(host.clone(), subset.clone())
                    .map_err(|e| Error::Config(format!("--stable-host/--stable-subset: {e}")))?,
            ),
        };
        Ok(RouteTargets {
            canary,
            stable,
            route: self.route.clone(),
        })
    }
}

impl ScrapeArgs {
    /// The scrape these flags describe: Envoy's page, or the app's with `--metrics-url`;
    /// a gap longer than `window` between scrapes starts the counts afresh.
    pub(super) fn resolve(&self, window: std::time::Duration) -> ScrapeConfig {
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
        ScrapeConfig::new(url, schema, self.scrape_interval, window)
    }

    pub(super) fn validate(&self, mode: Mode) -> Result<()> {
        if mode == Mode::Envoy {
            if self.metrics_url.is_some() && !self.envoy_labels.is_empty() {
                return Err(Error::Config(
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
            Some(flag) => Err(Error::Config(format!(
                "{flag} is only used with --mode envoy (the guard is in --mode {})",
                mode.as_str()
            ))),
            None => Ok(()),
        }
    }
}
