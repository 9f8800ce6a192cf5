//! Turns successive scrapes of cumulative counters (Envoy's
//! `istio_requests_total` and `istio_request_duration_milliseconds`, or an
//! app's own request metrics) into the requests, errors and latency samples
//! that happened between them.
//!
//! Counter semantics, per series (one label set):
//! - the first scrape is a baseline: history before the guard started is not counted;
//! - a series first seen after the baseline started at zero since the last scrape,
//!   so all of its value counts (the first 503s create the series);
//! - a value lower than the last one means the counter was reset (the exporter
//!   restarted): the new value is what happened since, never a negative delta;
//! - a series that disappears is remembered for a while, so when it comes back
//!   only its growth counts (or its whole value, if it came back lower);
//! - after a gap longer than `max_gap` without a good scrape, the next scrape is a
//!   new baseline, so traffic from outside the window is not dumped into one second.
//!
//! A series is named by its label set as the exporter writes it (see [`Page`]).
//!
//! Envoy's response flags decide what a request without a full answer counts
//! as: `UT` (upstream request timeout, Envoy answers 504) and `UC` (upstream
//! connection terminated, 503 — or a cut body after a good status) are errors of
//! the canary whatever the code; `DC` (downstream disconnect) is the client
//! going away: abandoned, with the duration Envoy measured until then as its
//! latency sample. A response code of `0` (no response sent) is abandoned too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::classify;
use super::histogram;
use super::window::Outcome;

/// Envoy response flags that mean the upstream (the canary) failed the request.
pub const UPSTREAM_FAILURE_FLAGS: [&str; 2] = ["UT", "UC"];

/// Envoy's response flag for a client that went away before the answer was complete.
pub const DOWNSTREAM_DISCONNECT: &str = "DC";

/// Unit of a latency histogram's `le` bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatencyUnit {
    /// `le` in seconds (Prometheus convention, e.g. `http_request_duration_seconds`).
    Seconds,
    /// `le` in milliseconds (Envoy's `istio_request_duration_milliseconds`).
    Milliseconds,
}

impl LatencyUnit {
    fn nanos(self) -> f64 {
        match self {
            LatencyUnit::Seconds => 1e9,
            LatencyUnit::Milliseconds => 1e6,
        }
    }
}

/// Which series of a page describe the canary's requests, and how to read them.
#[derive(Clone, Debug, PartialEq)]
pub struct Schema {
    /// The request counter's series name, e.g. `istio_requests_total`.
    pub requests: String,
    /// The latency histogram's bucket series name, e.g.
    /// `istio_request_duration_milliseconds_bucket`; `None` reads no latency.
    pub duration_buckets: Option<String>,
    /// Unit of the histogram's `le` label.
    pub unit: LatencyUnit,
    /// The label holding the HTTP status (`response_code`, `code`); 5xx is an error.
    pub status_label: String,
    /// The label holding the gRPC status, if any (`grpc_response_status`).
    pub grpc_status_label: Option<String>,
    /// gRPC status codes that count as server errors.
    pub grpc_server_errors: Vec<u32>,
    /// The label holding Envoy's response flags (`response_flags`), if any.
    pub flags_label: Option<String>,
    /// Only series whose labels have these values count (an absent label reads as empty).
    pub filters: Vec<(String, String)>,
}

impl Schema {
    /// Istio's request metrics as the destination side reports them, narrowed by `filters`.
    pub fn istio(filters: &[(String, String)]) -> Schema {
        let mut all = vec![("reporter".to_string(), "destination".to_string())];
        all.extend(filters.iter().filter(|(n, _)| n != "reporter").cloned());
        Schema {
            requests: "istio_requests_total".into(),
            duration_buckets: Some("istio_request_duration_milliseconds_bucket".into()),
            unit: LatencyUnit::Milliseconds,
            status_label: "response_code".into(),
            grpc_status_label: Some("grpc_response_status".into()),
            grpc_server_errors: classify::GRPC_SERVER_ERRORS.to_vec(),
            flags_label: Some("response_flags".into()),
            filters: all,
        }
    }

    fn matches<V: AsRef<str>>(&self, labels: &[(&str, V)]) -> bool {
        self.filters
            .iter()
            .all(|(name, want)| label(labels, name) == want)
    }

    fn outcome<V: AsRef<str>>(&self, labels: &[(&str, V)]) -> Outcome {
        let code = label(labels, &self.status_label);
        let http = code
            .parse::<u16>()
            .is_ok_and(|c| classify::http_status(c) == Outcome::Error);
        let grpc = self.grpc_status_label.as_deref().is_some_and(|l| {
            label(labels, l)
                .parse::<u32>()
                .is_ok_and(|c| self.grpc_server_errors.contains(&c))
        });
        let flags = self.flags_label.as_deref().map_or("", |l| label(labels, l));
        let flagged = |f: &str| flags.split(',').any(|g| g.trim() == f);
        if http || grpc || UPSTREAM_FAILURE_FLAGS.iter().any(|f| flagged(f)) {
            Outcome::Error
        } else if flagged(DOWNSTREAM_DISCONNECT) || code == "0" {
            Outcome::Abandoned
        } else {
            Outcome::Success
        }
    }
}

fn label<'v, V: AsRef<str>>(labels: &'v [(&str, V)], name: &str) -> &'v str {
    labels
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, v)| v.as_ref())
}

/// The page held more matching series than the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("more than {limit} matching series on the page")]
pub struct TooManySeries {
    /// The limit.
    pub limit: usize,
}

/// What a series is to a [`Schema`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A sample of the request counter.
    Requests,
    /// A bucket of the latency histogram.
    Bucket,
}

impl Schema {
    /// What the series `name` is to this schema, if it reads it at all.
    pub fn kind(&self, name: &str) -> Option<Kind> {
        if name == self.requests {
            Some(Kind::Requests)
        } else if self.duration_buckets.as_deref() == Some(name) {
            Some(Kind::Bucket)
        } else {
            None
        }
    }
}

/// The matching series of one page, collected before anything is counted, so
/// a page rejected halfway changes nothing.
///
/// Series are named by an identity the caller gives: their label set as the
/// exporter writes it (without `le` for buckets). An exporter writes a series'
/// labels the same way on every page; if it restarts and writes them
/// differently, its counters restarted from zero too, so counting the series as
/// new is right.
#[derive(Debug)]
pub struct Page {
    requests: Vec<(String, Outcome, f64)>,
    histograms: Vec<(String, Vec<(f64, f64)>)>,
    /// Index into `histograms` by identity.
    groups: HashMap<String, usize>,
    /// The identity of the last bucket offered and its histogram, if it matched:
    /// the buckets of one histogram come one after the other.
    last_bucket: Option<(String, Option<usize>)>,
    samples: usize,
    limit: usize,
}

impl Page {
    /// An empty page that accepts at most `limit` matching samples.
    pub fn new(limit: usize) -> Self {
        Self {
            requests: Vec::new(),
            histograms: Vec::new(),
            groups: HashMap::new(),
            last_bucket: None,
            samples: 0,
            limit,
        }
    }

    fn count_one(&mut self) -> Result<(), TooManySeries> {
        if self.samples >= self.limit {
            return Err(TooManySeries { limit: self.limit });
        }
        self.samples += 1;
        Ok(())
    }

    /// Offers a sample of the request counter with its labels (unescaped);
    /// kept if the schema's filters match.
    pub fn offer_requests<V: AsRef<str>>(
        &mut self,
        schema: &Schema,
        identity: &str,
        labels: &[(&str, V)],
        value: f64,
    ) -> Result<(), TooManySeries> {
        // A counter is finite and non-negative; anything else is not counted
        // (the series reads as absent from this page).
        if !(value.is_finite() && value >= 0.0 && schema.matches(labels)) {
            return Ok(());
        }
        self.count_one()?;
        self.requests
            .push((identity.to_string(), schema.outcome(labels), value));
        Ok(())
    }

    /// Offers one bucket (`le` as written) of the latency histogram named by
    /// `identity`. `labels` is only called for the first bucket of a histogram.
    pub fn offer_bucket<'l, V: AsRef<str>>(
        &mut self,
        schema: &Schema,
        identity: &str,
        le: &str,
        value: f64,
        labels: impl FnOnce() -> Vec<(&'l str, V)>,
    ) -> Result<(), TooManySeries> {
        let group = match &mut self.last_bucket {
            Some((last, group)) if last == identity => *group,
            _ => {
                let group = match self.groups.get(identity) {
                    Some(&i) => Some(i),
                    None if schema.matches(&labels()) => {
                        self.histograms.push((identity.to_string(), Vec::new()));
                        let i = self.histograms.len() - 1;
                        self.groups.insert(identity.to_string(), i);
                        Some(i)
                    }
                    None => None,
                };
                let last = self.last_bucket.get_or_insert_with(Default::default);
                last.0.clear();
                last.0.push_str(identity);
                last.1 = group;
                group
            }
        };
        let Some(i) = group else {
            return Ok(());
        };
        self.count_one()?;
        let le = match le {
            "+Inf" | "Inf" | "+inf" | "inf" => f64::INFINITY,
            s => s.parse::<f64>().unwrap_or(f64::NAN),
        };
        self.histograms[i].1.push((le, value));
        Ok(())
    }
}

/// What happened between two scrapes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Requests counted.
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
    /// Of which abandoned by their clients.
    pub abandoned: u64,
    /// Latency samples as `(bucket index, count)`, in bucket order.
    pub latency: Vec<(usize, u64)>,
    /// False when this scrape was a baseline (nothing counted).
    pub counted: bool,
    /// Matching request series on the page.
    pub series: usize,
}

struct Tracked<V> {
    value: V,
    seen: Instant,
}

/// Per-series state between scrapes.
pub struct CounterDiff {
    requests: HashMap<String, Tracked<f64>>,
    histograms: HashMap<String, Tracked<Vec<(f64, f64)>>>,
    last: Option<Instant>,
    max_gap: Duration,
    forget_after: Duration,
    unit: LatencyUnit,
}

impl CounterDiff {
    /// A diff that re-baselines after `max_gap` without a good scrape and
    /// forgets series absent for `forget_after`; `unit` is the histogram's.
    pub fn new(max_gap: Duration, forget_after: Duration, unit: LatencyUnit) -> Self {
        Self {
            requests: HashMap::new(),
            histograms: HashMap::new(),
            last: None,
            max_gap,
            forget_after,
            unit,
        }
    }

    /// Counts what changed since the last page and remembers this one.
    pub fn apply(&mut self, at: Instant, page: Page) -> Delta {
        let counting = self
            .last
            .is_some_and(|last| at.saturating_duration_since(last) <= self.max_gap);
        self.last = Some(at);
        let mut delta = Delta {
            counted: counting,
            series: page.requests.len(),
            ..Delta::default()
        };

        for (key, outcome, value) in page.requests {
            let tracked = self.requests.get_mut(&key);
            let n = match tracked.as_ref().map(|t| t.value) {
                // New since the last scrape: it started from zero.
                None => value,
                Some(p) if value >= p => value - p,
                // Reset: what it counts now happened since.
                Some(_) => value,
            };
            let n = if counting { to_count(n) } else { 0 };
            delta.requests += n;
            match outcome {
                Outcome::Success => {}
                Outcome::Error => delta.errors += n,
                Outcome::Abandoned => delta.abandoned += n,
            }
            let now = Tracked { value, seen: at };
            match tracked {
                Some(t) => *t = now,
                None => {
                    self.requests.insert(key, now);
                }
            }
        }

        let mut buckets = vec![0u64; histogram::bucket_count()];
        for (key, mut cur) in page.histograms {
            cur.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            let unreadable = cur
                .iter()
                .any(|&(le, v)| le.is_nan() || !(v.is_finite() && v >= 0.0))
                || cur.windows(2).any(|w| w[0].0 == w[1].0);
            if unreadable {
                // Not a histogram we can read; leave what we knew of it alone.
                continue;
            }
            let tracked = self.histograms.get_mut(&key);
            if counting {
                add_buckets(
                    &mut buckets,
                    tracked.as_ref().map(|t| &t.value),
                    &cur,
                    self.unit,
                );
            }
            let now = Tracked {
                value: cur,
                seen: at,
            };
            match tracked {
                Some(t) => *t = now,
                None => {
                    self.histograms.insert(key, now);
                }
            }
        }
        delta.latency = buckets
            .into_iter()
            .enumerate()
            .filter(|&(_, n)| n > 0)
            .collect();

        let forget_after = self.forget_after;
        self.requests
            .retain(|_, t| at.saturating_duration_since(t.seen) <= forget_after);
        self.histograms
            .retain(|_, t| at.saturating_duration_since(t.seen) <= forget_after);
        delta
    }
}

/// A counter delta as a whole number of requests (counters hold integers).
fn to_count(n: f64) -> u64 {
    // `as` saturates and maps NaN to 0; values are finite and >= 0 here.
    n.round() as u64
}

/// Adds the samples one histogram gained into `buckets` (our layout).
fn add_buckets(
    buckets: &mut [u64],
    prev: Option<&Vec<(f64, f64)>>,
    cur: &[(f64, f64)],
    unit: LatencyUnit,
) {
    let same_shape =
        prev.is_some_and(|p| p.len() == cur.len() && p.iter().zip(cur).all(|(a, b)| a.0 == b.0));
    let grew = same_shape && prev.is_some_and(|p| p.iter().zip(cur).all(|(a, b)| b.1 >= a.1));
    // New, reset or re-shaped: everything it holds happened since the last scrape.
    let cumulative: Vec<f64> = match prev {
        Some(p) if grew => p.iter().zip(cur).map(|(a, b)| b.1 - a.1).collect(),
        _ => cur.iter().map(|b| b.1).collect(),
    };
    let mut below = 0.0;
    let mut last_finite: Option<f64> = None;
    for ((le, _), &cum) in cur.iter().zip(&cumulative) {
        // Cumulative buckets: this one's own samples are the growth over the one below.
        let n = to_count((cum - below).max(0.0));
        below = below.max(cum);
        let index = if le.is_finite() {
            last_finite = Some(*le);
            Some(bucket_for_upper(*le, unit))
        } else {
            // Beyond the largest finite bound: just above it (as Prometheus' quantiles do).
            last_finite.map(|l| bucket_for_lower(l, unit))
        };
        if let (Some(i), true) = (index, n > 0) {
            if let Some(b) = buckets.get_mut(i) {
                *b = b.saturating_add(n);
            }
        }
    }
}

fn nanos(bound: f64, unit: LatencyUnit) -> Duration {
    // Rounded: 0.005 s is 5_000_000 ns, not 4_999_999.
    Duration::from_nanos((bound * unit.nanos()).round().clamp(0.0, u64::MAX as f64) as u64)
}

/// Our bucket for samples at most `le`: the one whose upper bound is `le`
/// (exact for every Envoy and Prometheus default bound), else the one holding `le`.
fn bucket_for_upper(le: f64, unit: LatencyUnit) -> usize {
    let upper = nanos(le, unit);
    histogram::index_of_upper_bound(upper)
        .unwrap_or_else(|| histogram::bucket_index(upper.saturating_sub(Duration::from_nanos(1))))
}

/// Our bucket for samples just above `bound`.
fn bucket_for_lower(bound: f64, unit: LatencyUnit) -> usize {
    histogram::bucket_index(nanos(bound, unit))
}

#[cfg(test)]
mod tests;
