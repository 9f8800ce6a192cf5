//! Where samples come from: the reverse proxy in front of the app.

pub mod body;
pub mod classify;
pub mod headers;
pub mod promtext;
pub mod proxy;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::admin::metrics::Metrics;
use crate::domain::window::{Outcome, Window};

/// Counts finished requests into the window and the exported metrics.
#[derive(Clone)]
pub struct Recorder {
    window: Arc<Window>,
    metrics: Arc<Metrics>,
}

impl Recorder {
    /// A recorder feeding `window` and `metrics`.
    pub fn new(window: Arc<Window>, metrics: Arc<Metrics>) -> Self {
        Self { window, metrics }
    }

    /// Counts one request that took `latency` to its response headers.
    #[inline]
    pub fn record(&self, latency: Duration, outcome: Outcome) {
        self.window.record(Instant::now(), latency, outcome);
        self.metrics.observe_request(latency.as_secs_f64(), outcome);
    }

    /// The exported metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
