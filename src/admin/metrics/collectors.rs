//! The metrics computed when Prometheus scrapes instead of updated as things happen:
//! `canary_guard_requests_total` and `canary_guard_request_duration_seconds`, read from
//! the window's totals, and `canary_guard_window_latency_seconds`, the window of the last
//! check.
//!
//! Design rule: nothing here is on the request path. Recording a request updates one set of
//! counters, the window's; these collectors read them, or the last check's summary, only
//! when Prometheus scrapes.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use super::WINDOW_QUANTILES;
use crate::domain::histogram;
use crate::domain::window::{Summary, Totals, Window};

/// Bucket bounds (seconds) of `canary_guard_request_duration_seconds`: Envoy's.
const DURATION_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// `canary_guard_requests_total` and `canary_guard_request_duration_seconds`,
/// read from the window's totals at scrape time: recording a request then
/// updates one set of counters, the window's, instead of two.
#[derive(Clone)]
pub(super) struct RequestTotals {
    requests: Desc,
    duration: Desc,
    source: Arc<OnceLock<(Arc<Window>, bool)>>,
    /// For each of [`DURATION_BUCKETS`], the last window bucket below it.
    bucket_ends: Arc<Vec<usize>>,
}

impl RequestTotals {
    pub(super) fn new() -> Self {
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

    /// Reads `window`'s totals from now on (see [`super::Metrics::export_totals`]). Only
    /// the first call counts.
    pub(super) fn export(&self, window: Arc<Window>, per_request_latency: bool) {
        let _ = self.source.set((window, per_request_latency));
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
pub(super) struct WindowLatency {
    desc: Desc,
    /// `(quantile, seconds)` pairs, sample count and estimated sum.
    latest: Arc<Mutex<Latest>>,
}

type Latest = (Vec<(f64, f64)>, u64, f64);

impl WindowLatency {
    pub(super) fn new() -> Self {
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

    pub(super) fn set(&self, window: &Summary) {
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
