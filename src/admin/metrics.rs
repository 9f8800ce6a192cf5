//! The Prometheus metrics the guard exports, on its own registry. The two computed at
//! scrape time, from the window rather than as things happen, are in `collectors`.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::domain::policy::Verdict;
use crate::domain::window::{Summary, Window};

mod collectors;

use collectors::{RequestTotals, WindowLatency};

/// Quantiles published as `canary_guard_window_latency_seconds{quantile}`.
pub const WINDOW_QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

/// Every metric canary-guard exports.
pub struct Metrics {
    registry: Registry,
    requests: RequestTotals,
    window_requests: IntGauge,
    window_error_ratio: Gauge,
    window_latency: WindowLatency,
    consecutive_failures: IntGauge,
    verdict: IntGaugeVec,
    /// 1 while this guard holds the group's leader lease.
    pub leader: IntGauge,
    /// Live members the leader counts (0 on followers).
    pub members: IntGauge,
    /// Of those, baseline members (guards on stable pods).
    pub baseline_members: IntGauge,
    /// 1 while the leader does not blame a failing canary because its baseline fails too.
    pub baseline_degraded: IntGauge,
    /// VirtualService rollbacks this guard wrote.
    pub rollbacks_total: IntCounter,
    kube_errors: IntCounterVec,
    proxy_refusals: IntCounterVec,
    scrape_errors: IntCounterVec,
    member_summaries_rejected: IntCounterVec,
    notifications: IntCounterVec,
    max_error_ratio: Gauge,
    max_latency: GaugeVec,
    vs_problem: IntGaugeVec,
    /// The reason `vs_problem` is 1 for, if any.
    vs_problem_now: Arc<Mutex<Option<&'static str>>>,
}

/// `result` values of `canary_guard_notifications_total`.
pub mod notification_results {
    /// The receiver answered 2xx.
    pub const SENT: &str = "sent";
    /// Every attempt failed (error status, refused, timed out).
    pub const FAILED: &str = "failed";
    /// The queue was full: the notification was never attempted.
    pub const DROPPED: &str = "dropped";
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = RequestTotals::new();
        let window_requests = IntGauge::new(
            "canary_guard_window_requests",
            "Requests in the sliding window.",
        )
        .expect("valid metric");
        let window_error_ratio = Gauge::new(
            "canary_guard_window_error_ratio",
            "Errors over requests in the sliding window.",
        )
        .expect("valid metric");
        let window_latency = WindowLatency::new();
        let consecutive_failures = IntGauge::new(
            "canary_guard_consecutive_failures",
            "Failing checks in a row.",
        )
        .expect("valid metric");
        let verdict = IntGaugeVec::new(
            Opts::new(
                "canary_guard_verdict",
                "1 for the current verdict, 0 for the others.",
            ),
            &["state"],
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "canary_guard_leader",
            "1 while this guard is the group's leader.",
        )
        .expect("valid metric");
        let members = IntGauge::new(
            "canary_guard_members",
            "Live group members seen by the leader.",
        )
        .expect("valid metric");
        let baseline_members = IntGauge::new(
            "canary_guard_baseline_members",
            "Of the live members the leader counts, baseline guards on stable pods.",
        )
        .expect("valid metric");
        let baseline_degraded = IntGauge::new(
            "canary_guard_baseline_degraded",
            "1 while the leader holds a failing canary inconclusive because its baseline fails too.",
        )
        .expect("valid metric");
        let rollbacks_total = IntCounter::new(
            "canary_guard_rollbacks_total",
            "VirtualService rollbacks written by this guard.",
        )
        .expect("valid metric");
        let kube_errors = IntCounterVec::new(
            Opts::new(
                "canary_guard_kube_errors_total",
                "Failed Kubernetes API calls, by operation.",
            ),
            &["op"],
        )
        .expect("valid metric");
        let proxy_refusals = IntCounterVec::new(
            Opts::new(
                "canary_guard_proxy_refusals_total",
                "Requests the guard answered itself, by reason (upstream_connect, upstream_timeout, upstream_error, bad_request, client_error; header_too_large, header_timeout, malformed_request: clients refused before the proxy saw a request); not blamed on the canary when the client was at fault.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let member_summaries_rejected = IntCounterVec::new(
            Opts::new(
                "canary_guard_member_summaries_rejected_total",
                "Member summaries the leader ignored, by reason (too_large, malformed, unknown_version, implausible, missing).",
            ),
            &["reason"],
        )
        .expect("valid metric");

        let scrape_errors = IntCounterVec::new(
            Opts::new(
                "canary_guard_scrape_errors_total",
                "Failed scrapes of the stats endpoint in envoy mode, by reason (never counted as canary errors).",
            ),
            &["reason"],
        )
        .expect("valid metric");

        let notifications = IntCounterVec::new(
            Opts::new(
                "canary_guard_notifications_total",
                "Rollback, re-assert and restore notifications, by result (sent, failed after every retry, dropped because the queue was full).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let max_error_ratio = Gauge::new(
            "canary_guard_max_error_ratio",
            "The configured --max-error-ratio: the limit canary_guard_window_error_ratio is judged against.",
        )
        .expect("valid metric");
        let max_latency = GaugeVec::new(
            Opts::new(
                "canary_guard_max_latency_seconds",
                "The configured --max-latency, labelled with the --latency-quantile it applies to (not `quantile`: the text format keeps that label for summaries).",
            ),
            &["latency_quantile"],
        )
        .expect("valid metric");
        let vs_problem = IntGaugeVec::new(
            Opts::new(
                "canary_guard_virtualservice_problem",
                "1 while the leader cannot use the VirtualService, by reason (VirtualServiceNotFound, Forbidden, VirtualServiceInvalid, RollbackRecordUnreadable, VirtualServiceConflict, CanaryRollbackSkipped, KubernetesApiError).",
            ),
            &["reason"],
        )
        .expect("valid metric");

        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(window_requests.clone()),
            Box::new(window_error_ratio.clone()),
            Box::new(window_latency.clone()),
            Box::new(consecutive_failures.clone()),
            Box::new(verdict.clone()),
            Box::new(leader.clone()),
            Box::new(members.clone()),
            Box::new(baseline_members.clone()),
            Box::new(baseline_degraded.clone()),
            Box::new(rollbacks_total.clone()),
            Box::new(kube_errors.clone()),
            Box::new(proxy_refusals.clone()),
            Box::new(scrape_errors.clone()),
            Box::new(member_summaries_rejected.clone()),
            Box::new(notifications.clone()),
            Box::new(max_error_ratio.clone()),
            Box::new(max_latency.clone()),
            Box::new(vs_problem.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        // Create every label value up front so series exist (at 0) from the first scrape.
        for v in Verdict::ALL {
            verdict.with_label_values(&[v.as_str()]);
        }
        for r in [
            notification_results::SENT,
            notification_results::FAILED,
            notification_results::DROPPED,
        ] {
            notifications.with_label_values(&[r]);
        }
        Self {
            registry,
            requests,
            window_requests,
            window_error_ratio,
            window_latency,
            consecutive_failures,
            verdict,
            leader,
            members,
            baseline_members,
            baseline_degraded,
            rollbacks_total,
            kube_errors,
            proxy_refusals,
            scrape_errors,
            member_summaries_rejected,
            notifications,
            max_error_ratio,
            max_latency,
            vs_problem,
            vs_problem_now: Arc::new(Mutex::new(None)),
        }
    }

    /// Publishes the limits the window is judged against, for dashboards.
    pub fn set_limits(&self, max_error_ratio: f64, max_latency: Duration, quantile: f64) {
        self.max_error_ratio.set(max_error_ratio);
        self.max_latency
            .with_label_values(&[&quantile.to_string()])
            .set(max_latency.as_secs_f64());
    }

    /// Counts a notification by result (see [`notification_results`]).
    pub fn notification(&self, result: &str) {
        self.notifications.with_label_values(&[result]).inc();
    }

    /// Sets the VirtualService problem the leader has now (`None`: none).
    pub fn set_virtual_service_problem(&self, reason: Option<&'static str>) {
        let mut now = self.vs_problem_now.lock();
        if let Some(old) = now.take() {
            self.vs_problem.with_label_values(&[old]).set(0);
        }
        if let Some(r) = reason {
            self.vs_problem.with_label_values(&[r]).set(1);
        }
        *now = reason;
    }

    /// Exports `canary_guard_requests_total` and, with `per_request_latency`,
    /// `canary_guard_request_duration_seconds` from `window`'s totals. Until
    /// then (and for the histogram in envoy mode, whose latency buckets are not
    /// per-request samples) they read 0. Only the first call counts.
    pub fn export_totals(&self, window: Arc<Window>, per_request_latency: bool) {
        self.requests.export(window, per_request_latency);
    }

    /// Publishes the window and verdict after a check.
    pub fn set_check(&self, window: &Summary, verdict: Verdict, consecutive_failures: u32) {
        self.window_requests
            .set(i64::try_from(window.requests).unwrap_or(i64::MAX));
        self.window_error_ratio.set(window.error_ratio());
        self.window_latency.set(window);
        self.consecutive_failures
            .set(i64::from(consecutive_failures));
        for v in Verdict::ALL {
            self.verdict
                .with_label_values(&[v.as_str()])
                .set(i64::from(v == verdict));
        }
    }

    /// Counts a failed Kubernetes API call.
    pub fn kube_error(&self, op: &str) {
        self.kube_errors.with_label_values(&[op]).inc();
    }

    /// Counts a request the guard refused or answered itself, or a client refused
    /// before the proxy saw a request.
    pub fn proxy_refusal(&self, reason: &str) {
        self.proxy_refusals.with_label_values(&[reason]).inc();
    }

    /// Counts a failed scrape of the stats endpoint.
    pub fn scrape_error(&self, reason: &str) {
        self.scrape_errors.with_label_values(&[reason]).inc();
    }

    /// Creates the scrape error series at 0, so rates work from the first scrape.
    pub fn init_scrape_errors(&self, reasons: &[&str]) {
        for r in reasons {
            self.scrape_errors.with_label_values(&[r]);
        }
    }

    /// Counts a member summary the leader ignored.
    pub fn member_summary_rejected(&self, reason: &str) {
        self.member_summaries_rejected
            .with_label_values(&[reason])
            .inc();
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
