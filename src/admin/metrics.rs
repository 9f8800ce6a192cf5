//! The Prometheus metrics the guard exports, on its own registry.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::domain::policy::Verdict;
use crate::domain::window::{Outcome, Summary};

/// Bucket bounds (seconds) of `canary_guard_request_duration_seconds`: Envoy's.
const DURATION_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Quantiles published as `canary_guard_window_latency_seconds{quantile}`.
pub const WINDOW_QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

/// Every metric canary-guard exports.
pub struct Metrics {
    registry: Registry,
    requests_success: IntCounter,
    requests_error: IntCounter,
    request_duration: Histogram,
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
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "canary_guard_requests_total",
                "Requests observed for the canary, by outcome.",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "canary_guard_request_duration_seconds",
                "Time from request to response headers.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
        )
        .expect("valid metric");
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

        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
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
        ] {
            registry.register(c).expect("unique metric names");
        }
        // Create every label value up front so series exist (at 0) from the first scrape.
        for v in Verdict::ALL {
            verdict.with_label_values(&[v.as_str()]);
        }
        Self {
            requests_success: requests.with_label_values(&["success"]),
            requests_error: requests.with_label_values(&["error"]),
            registry,
            request_duration,
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
        }
    }

    /// Counts one request (the hot path: two atomic adds and a histogram observe).
    #[inline]
    pub fn observe_request(&self, latency_seconds: f64, outcome: Outcome) {
        match outcome {
            Outcome::Success => self.requests_success.inc(),
            Outcome::Error => self.requests_error.inc(),
        }
        self.request_duration.observe(latency_seconds);
    }

    /// Counts `n` requests, `errors` of them failed, with no latency sample.
    pub fn observe_counts(&self, n: u64, errors: u64) {
        self.requests_success.inc_by(n.saturating_sub(errors));
        self.requests_error.inc_by(errors);
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
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::SUMMARY);
        family.set_metric(vec![metric]);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_the_documented_names() {
        let m = Metrics::new();
        m.observe_request(0.003, Outcome::Success);
        m.observe_request(0.2, Outcome::Error);
        m.kube_error("patch_virtualservice");
        m.init_scrape_errors(&["timeout", "parse"]);
        m.scrape_error("parse");
        m.member_summary_rejected("unknown_version");
        let mut s = Summary::empty(30);
        s.requests = 2;
        s.errors = 1;
        m.set_check(&s, Verdict::Failing, 3);
        let text = m.render();
        for line in [
            "canary_guard_requests_total{outcome=\"success\"} 1",
            "canary_guard_requests_total{outcome=\"error\"} 1",
            "canary_guard_request_duration_seconds_count 2",
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
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
