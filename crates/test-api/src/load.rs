//! The demo's load generator: a steady request rate split between stable and canary by
//! weight, as Envoy splits a VirtualService's traffic (smooth weighted round-robin),
//! counted per second.
//!
//! Design rule: it knows nothing of VirtualServices. The caller says how to read the
//! current weights and when they may have changed, so the route's reading stays the
//! product's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

/// Requests sent in one second of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Second {
    /// Requests sent to stable.
    pub stable: u64,
    /// Requests sent to the canary.
    pub canary: u64,
    /// Canary requests that failed (5xx or no answer).
    pub canary_errors: u64,
}

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Load {
    /// Requests per second, stable and canary together.
    pub rate: u32,
    /// Where stable requests go (the stable app, or guards in front of its pods), taken in turn.
    pub stables: Vec<SocketAddr>,
    /// The canary's key among the weights (its subset); every other key is stable.
    pub canary_subset: String,
    /// Where canary requests go (the guards' proxies), taken in turn.
    pub canaries: Vec<SocketAddr>,
}

impl Load {
    /// Sends requests until the task is aborted, each to stable or to the next canary by
    /// `weights()`, read again each time `changes` has seen a change. Each request's outcome
    /// is counted in `seconds`, at the whole second since `start` it was sent in.
    pub async fn run<T>(
        self,
        mut weights: impl FnMut() -> BTreeMap<String, u32>,
        mut changes: watch::Receiver<T>,
        seconds: Arc<Mutex<Vec<Second>>>,
        start: Instant,
    ) {
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let mut picker = Picker::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1) / self.rate);
        let (mut next_canary, mut next_stable) = (0usize, 0usize);
        let mut w = weights();
        loop {
            tick.tick().await;
            if changes.has_changed().unwrap_or(false) {
                changes.borrow_and_update();
                w = weights();
            }
            let Some(dest) = picker.pick(&w) else {
                continue;
            };
            let is_canary = dest == self.canary_subset;
            let target = if is_canary {
                next_canary = (next_canary + 1) % self.canaries.len();
                self.canaries[next_canary]
            } else {
                next_stable = (next_stable + 1) % self.stables.len();
                self.stables[next_stable]
            };
            let client = client.clone();
            let seconds = seconds.clone();
            tokio::spawn(async move {
                let sent = Instant::now();
                let req = Request::get(format!("http://{target}/reviews/1"))
                    .body(Empty::new())
                    .expect("valid request");
                let ok = match client.request(req).await {
                    Ok(resp) => {
                        let ok = !resp.status().is_server_error();
                        let _ = resp.into_body().collect().await;
                        ok
                    }
                    Err(_) => false,
                };
                let i = sent.saturating_duration_since(start).as_secs() as usize;
                let mut secs = seconds.lock();
                if secs.len() <= i {
                    secs.resize(i + 1, Second::default());
                }
                let s = &mut secs[i];
                if is_canary {
                    s.canary += 1;
                    s.canary_errors += u64::from(!ok);
                } else {
                    s.stable += 1;
                }
            });
        }
    }
}

/// Smooth weighted round-robin, as Envoy spreads requests by weight.
#[derive(Default)]
struct Picker {
    current: BTreeMap<String, i64>,
}

impl Picker {
    fn pick(&mut self, weights: &BTreeMap<String, u32>) -> Option<String> {
        let total: i64 = weights.values().map(|&w| i64::from(w)).sum();
        if total == 0 {
            return None;
        }
        for (k, &w) in weights {
            *self.current.entry(k.clone()).or_default() += i64::from(w);
        }
        let (best, _) = weights
            .keys()
            .map(|k| (k.clone(), self.current[k]))
            .max_by_key(|(_, c)| *c)?;
        *self.current.get_mut(&best).expect("just inserted") -= total;
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picker_follows_weights() {
        let mut p = Picker::default();
        let w = BTreeMap::from([("v1".to_string(), 90), ("v2".to_string(), 10)]);
        let picks: Vec<_> = (0..100).filter_map(|_| p.pick(&w)).collect();
        assert_eq!(picks.iter().filter(|d| *d == "v2").count(), 10);
        let back = BTreeMap::from([("v1".to_string(), 100), ("v2".to_string(), 0)]);
        assert!((0..50).all(|_| p.pick(&back).as_deref() == Some("v1")));
        assert_eq!(p.pick(&BTreeMap::new()), None);
    }
}
