//! Where samples come from: the reverse proxy in front of the app (proxy
//! mode), or scrapes of the istio-proxy's counters (envoy mode).

pub mod body;
pub mod classify;
pub mod headers;
pub mod pending;
pub mod promtext;
pub mod proxy;
pub mod scrape;
pub mod upload;
pub mod upstream;

use std::sync::Arc;

use tokio::time::Instant;

use crate::admin::metrics::Metrics;
use crate::domain::counters::Delta;
use crate::domain::window::Window;

/// Counts requests into the window and the exported metrics (one at a time
/// through [`pending::Pending`], or a scrape's worth at once).
#[derive(Clone)]
pub struct Recorder {
    window: Arc<Window>,
    metrics: Arc<Metrics>,
}

impl Recorder {
    /// A recorder feeding `window` (whose totals `metrics` exports, see
    /// [`Metrics::export_totals`]).
    pub fn new(window: Arc<Window>, metrics: Arc<Metrics>) -> Self {
        Self { window, metrics }
    }

    /// Counts what a scrape found since the previous one. Scrapes carry no
    /// per-request latency, so `canary_guard_request_duration_seconds` is not fed;
    /// the latency buckets go to the window.
    pub fn record_delta(&self, delta: &Delta) {
        let at = Instant::now().into_std();
        self.window
            .record_counts(at, delta.requests, delta.errors, delta.abandoned);
        for &(bucket, n) in &delta.latency {
            self.window.record_latency_bucket(at, bucket, n);
        }
    }

    /// The exported metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
