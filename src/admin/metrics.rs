//! The Prometheus metrics the guard exports, on its own registry.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::domain::histogram;
use crate::domain::policy::Verdict;
use crate::domain::window::{Summary, Totals, Window};

/// Bucket bounds (seconds) of `canary_guard_request_duration_seconds`: Envoy's.
const DURATION_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

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
        let _ = self.requests.source.set((window, per_request_latency));
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

/// `canary_guard_requests_total` and `canary_guard_request_duration_seconds`,
/// read from the window's totals at scrape time: recording a request then
/// updates one set of counters, the window's, instead of two.
#[derive(Clone)]
struct RequestTotals {
    requests: Desc,
    duration: Desc,
    source: Arc<OnceLock<(Arc<Window>, bool)>>,
    /// For each of [`DURATION_BUCKETS`], the last window bucket below it.
    bucket_ends: Arc<Vec<usize>>,
}

impl RequestTotals {
    fn new() -> Self {
        let requests = Desc::new(
            "canary_guard_requests_total".into(),
            "Requests observed for the canary, by outcome: success; error (5xx, gRPC server errors, the guard's 502/504, upstream timeouts and cut streams); abandoned (the client went away before the answer was complete: closed connection, RST_STREAM, gRPC cancel or its own deadline; counted as slow when it had waited past the latency limit)."
                .into(),
            vec!["outcome".into()],
            HashMap::new(),
        )
        .expect("valid metric");
        let duration = Desc::new(
            "canary_guard_request_duration_seconds".into(),
            "Time from request to response headers (for a request abandoned after waiting past the latency limit, at least the time it waited)."
                .into(),
            Vec::new(),
            HashMap::new(),
        )
        .expect("valid metric");
        // The window's buckets contain Envoy's boundaries, so these sums are
        // exact, except that a sample of exactly a boundary (to the
        // nanosecond) counts in the next bucket up.
        let bucket_ends = DURATION_BUCKETS
            .iter()
            .map(|&s| {
                let upper = Duration::from_nanos((s * 1e9).round() as u64);
                histogram::index_of_upper_bound(upper).expect("Envoy's bounds are window bounds")
            })
            .collect();
        Self {
            requests,
            duration,
            source: Arc::new(OnceLock::new()),
            bucket_ends: Arc::new(bucket_ends),
        }
    }

    fn requests_family(&self, totals: &Totals) -> MetricFamily {
        let success = totals
            .requests
            .saturating_sub(totals.errors)
            .saturating_sub(totals.abandoned);
        let abandoned = totals.abandoned + totals.abandoned_early;
        let metrics = [
            ("error", totals.errors),
            ("success", success),
            ("abandoned", abandoned),
        ]
        .into_iter()
        .map(|(outcome, n)| {
            let mut label = proto::LabelPair::default();
            label.set_name("outcome".into());
            label.set_value(outcome.into());
            let mut counter = proto::Counter::default();
            counter.set_value(n as f64);
            let mut metric = proto::Metric::default();
            metric.set_label(vec![label]);
            metric.set_counter(counter);
            metric
        })
        .collect();
        family(&self.requests, MetricType::COUNTER, metrics)
    }

    fn duration_family(&self, totals: Option<&Totals>) -> MetricFamily {
        let counts = totals.map_or(&[][..], |t| t.latency.counts());
        let mut cumulative = 0u64;
        let mut start = 0;
        let buckets = DURATION_BUCKETS
            .iter()
            .zip(self.bucket_ends.iter())
            .map(|(&upper, &end)| {
                cumulative += counts.get(start..=end).map_or(0, |c| c.iter().sum::<u64>());
                start = end + 1;
                let mut bucket = proto::Bucket::default();
                bucket.set_upper_bound(upper);
                bucket.set_cumulative_count(cumulative);
                bucket
            })
            .collect();
        let mut h = proto::Histogram::default();
        h.set_sample_count(counts.iter().sum());
        h.set_sample_sum(totals.map_or(0.0, |t| t.latency_sum_seconds));
        h.set_bucket(buckets);
        let mut metric = proto::Metric::default();
        metric.set_histogram(h);
        family(&self.duration, MetricType::HISTOGRAM, vec![metric])
    }
}

impl Collector for RequestTotals {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.requests, &self.duration]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (totals, per_request_latency) = match self.source.get() {
            Some((window, latency)) => (window.totals(), *latency),
            None => (Totals::default(), false),
        };
        vec![
            self.requests_family(&totals),
            self.duration_family(per_request_latency.then_some(&totals)),
        ]
    }
}

fn family(desc: &Desc, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(desc.fq_name.clone());
    family.set_help(desc.help.clone());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// `canary_guard_window_latency_seconds`: a Prometheus summary whose
/// quantiles, count and sum describe the current window (not all time).
#[derive(Clone)]
struct WindowLatency {
    desc: Desc,
    /// `(quantile, seconds)` pairs, sample count and estimated sum.
    latest: Arc<Mutex<Latest>>,
}

type Latest = (Vec<(f64, f64)>, u64, f64);

impl WindowLatency {
    fn new() -> Self {
        let desc = Desc::new(
            "canary_guard_window_latency_seconds".into(),
            "Latency quantiles over the sliding window (sum estimated from bucket midpoints)."
                .into(),
            Vec::new(),
            HashMap::new(),
        )
        .expect("valid metric");
        let zeros = WINDOW_QUANTILES.iter().map(|&q| (q, 0.0)).collect();
        Self {
            desc,
            latest: Arc::new(Mutex::new((zeros, 0, 0.0))),
        }
    }

    fn set(&self, window: &Summary) {
        let quantiles = WINDOW_QUANTILES
            .iter()
            .map(|&q| {
                (
                    q,
                    window.latency_quantile(q).map_or(0.0, |d| d.as_secs_f64()),
                )
            })
            .collect();
        let sum = window.latency.estimated_sum().as_secs_f64();
        *self.latest.lock() = (quantiles, window.latency.total(), sum);
    }
}

impl Collector for WindowLatency {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (quantiles, count, sum) = self.latest.lock().clone();
        let mut summary = proto::Summary::default();
        summary.set_sample_count(count);
        summary.set_sample_sum(sum);
        summary.set_quantile(
            quantiles
                .into_iter()
                .map(|(q, v)| {
                    let mut quantile = proto::Quantile::default();
                    quantile.set_quantile(q);
                    quantile.set_value(v);
                    quantile
                })
                .collect(),
        );
        let mut metric = proto::Metric::default();
        metric.set_summary(summary);
        vec![family(&self.desc, MetricType::SUMMARY, vec![metric])]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::window::Outcome;
    use std::time::Instant;

    #[test]
    fn exports_the_documented_names() {
        let m = Metrics::new();
        let t0 = Instant::now();
        let window = Arc::new(Window::new(Duration::from_secs(30), t0));
        window.record(t0, Duration::from_millis(3), Outcome::Success);
        window.record(t0, Duration::from_millis(200), Outcome::Error);
        window.record(t0, Duration::from_millis(5), Outcome::Abandoned);
        window.record_abandoned(t0, Duration::from_millis(10), None);
        m.export_totals(window, true);
        m.kube_error("patch_virtualservice");
        m.init_scrape_errors(&["timeout", "parse"]);
        m.scrape_error("parse");
        m.member_summary_rejected("unknown_version");
        m.notification(notification_results::SENT);
        m.set_limits(0.05, Duration::from_millis(500), 0.99);
        m.set_virtual_service_problem(Some("Forbidden"));
        m.set_virtual_service_problem(Some("VirtualServiceInvalid"));
        let mut s = Summary::empty(30);
        s.requests = 2;
        s.errors = 1;
        m.set_check(&s, Verdict::Failing, 3);
        let text = m.render();
        for line in [
            "canary_guard_requests_total{outcome=\"success\"} 1",
            "canary_guard_requests_total{outcome=\"error\"} 1",
            "canary_guard_requests_total{outcome=\"abandoned\"} 2",
            "canary_guard_request_duration_seconds_count 3",
            "canary_guard_request_duration_seconds_sum 0.208",
            "canary_guard_request_duration_seconds_bucket{le=\"0.001\"} 0",
            "canary_guard_request_duration_seconds_bucket{le=\"0.005\"} 1",
            "canary_guard_request_duration_seconds_bucket{le=\"0.01\"} 2",
            "canary_guard_request_duration_seconds_bucket{le=\"0.25\"} 3",
            "canary_guard_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "canary_guard_window_requests 2",
            "canary_guard_window_error_ratio 0.5",
            "canary_guard_window_latency_seconds{quantile=\"0.99\"} 0",
            "canary_guard_window_latency_seconds_count 0",
            "canary_guard_consecutive_failures 3",
            "canary_guard_verdict{state=\"failing\"} 1",
            "canary_guard_verdict{state=\"healthy\"} 0",
            "canary_guard_leader 0",
            "canary_guard_members 0",
            "canary_guard_rollbacks_total 0",
            "canary_guard_kube_errors_total{op=\"patch_virtualservice\"} 1",
            "canary_guard_scrape_errors_total{reason=\"parse\"} 1",
            "canary_guard_scrape_errors_total{reason=\"timeout\"} 0",
            "canary_guard_member_summaries_rejected_total{reason=\"unknown_version\"} 1",
            "canary_guard_notifications_total{result=\"sent\"} 1",
            "canary_guard_notifications_total{result=\"dropped\"} 0",
            "canary_guard_max_error_ratio 0.05",
            "canary_guard_max_latency_seconds{latency_quantile=\"0.99\"} 0.5",
            "canary_guard_virtualservice_problem{reason=\"Forbidden\"} 0",
            "canary_guard_virtualservice_problem{reason=\"VirtualServiceInvalid\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn envoy_mode_exports_counts_but_no_duration() {
        let m = Metrics::new();
        let t0 = Instant::now();
        let window = Arc::new(Window::new(Duration::from_secs(30), t0));
        window.record_counts(t0, 10, 3, 2);
        window.record_latency_bucket(t0, 5, 10);
        m.export_totals(window, false);
        let text = m.render();
        for line in [
            "canary_guard_requests_total{outcome=\"success\"} 5",
            "canary_guard_requests_total{outcome=\"error\"} 3",
            "canary_guard_requests_total{outcome=\"abandoned\"} 2",
            "canary_guard_request_duration_seconds_count 0",
            "canary_guard_request_duration_seconds_bucket{le=\"+Inf\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
