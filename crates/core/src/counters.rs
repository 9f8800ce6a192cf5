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
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ENVOY_LE: [&str; 20] = [
        "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
        "30000", "60000", "300000", "600000", "1800000", "3600000", "+Inf",
    ];

    /// Offers a sample the way the scraper does: the identity is the label
    /// text (without `le` for buckets).
    fn offer(
        p: &mut Page,
        s: &Schema,
        name: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> Result<(), TooManySeries> {
        let identity: String = labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| format!("{k}=\"{v}\","))
            .collect();
        match s.kind(name) {
            Some(Kind::Requests) => p.offer_requests(s, &identity, labels, value),
            Some(Kind::Bucket) => {
                let le = labels.iter().find(|(k, _)| *k == "le").map_or("", |l| l.1);
                p.offer_bucket(s, &identity, le, value, || labels.to_vec())
            }
            None => Ok(()),
        }
    }

    fn schema() -> Schema {
        Schema::istio(&[("destination_workload".into(), "reviews-v2".into())])
    }

    /// A page of `(response_code, grpc status, value)` request series for the canary.
    fn page(series: &[(&str, &str, f64)]) -> Page {
        let s = schema();
        let mut p = Page::new(1000);
        for (code, grpc, v) in series {
            let labels = [
                ("reporter", "destination"),
                ("destination_workload", "reviews-v2"),
                ("response_code", *code),
                ("grpc_response_status", *grpc),
            ];
            offer(&mut p, &s, "istio_requests_total", &labels, *v).unwrap();
        }
        p
    }

    fn diff() -> CounterDiff {
        CounterDiff::new(
            Duration::from_secs(30),
            Duration::from_secs(600),
            LatencyUnit::Milliseconds,
        )
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn first_scrape_is_a_baseline_then_deltas_count() {
        let t0 = Instant::now();
        let mut d = diff();
        let first = d.apply(t0, page(&[("200", "", 1000.0), ("503", "", 50.0)]));
        assert_eq!((first.requests, first.errors, first.counted), (0, 0, false));
        assert_eq!(first.series, 2);
        let next = d.apply(
            t0 + secs(1),
            page(&[("200", "", 1120.0), ("503", "", 80.0)]),
        );
        assert_eq!((next.requests, next.errors, next.counted), (150, 30, true));
        let same = d.apply(
            t0 + secs(2),
            page(&[("200", "", 1120.0), ("503", "", 80.0)]),
        );
        assert_eq!((same.requests, same.errors), (0, 0));
    }

    #[test]
    fn no_series_is_no_data_and_new_series_count_whole() {
        let t0 = Instant::now();
        let mut d = diff();
        let empty = d.apply(t0, page(&[]));
        assert_eq!(empty, Delta::default());
        // The first 503s create their series: all of them happened since.
        let got = d.apply(t0 + secs(1), page(&[("200", "", 7.0), ("503", "", 3.0)]));
        assert_eq!((got.requests, got.errors), (10, 3));
    }

    #[test]
    fn a_reset_counts_the_new_value_never_negative() {
        let t0 = Instant::now();
        let mut d = diff();
        d.apply(t0, page(&[("200", "", 5000.0), ("503", "", 400.0)]));
        let got = d.apply(t0 + secs(1), page(&[("200", "", 12.0), ("503", "", 1.0)]));
        assert_eq!((got.requests, got.errors), (13, 1));
        let got = d.apply(t0 + secs(2), page(&[("200", "", 20.0), ("503", "", 1.0)]));
        assert_eq!((got.requests, got.errors), (8, 0));
    }

    #[test]
    fn a_series_that_disappears_and_comes_back() {
        let t0 = Instant::now();
        let mut d = diff();
        d.apply(t0, page(&[("200", "", 100.0), ("503", "", 10.0)]));
        // Gone for a few scrapes (e.g. expired), the other series still move.
        let got = d.apply(t0 + secs(1), page(&[("200", "", 110.0)]));
        assert_eq!((got.requests, got.errors), (10, 0));
        d.apply(t0 + secs(2), page(&[("200", "", 110.0)]));
        // Back higher: only its growth counts.
        let got = d.apply(t0 + secs(3), page(&[("200", "", 110.0), ("503", "", 14.0)]));
        assert_eq!((got.requests, got.errors), (4, 4));
        // Gone, then back lower: it was reset, its value is new.
        d.apply(t0 + secs(4), page(&[("200", "", 110.0)]));
        let got = d.apply(t0 + secs(5), page(&[("200", "", 110.0), ("503", "", 2.0)]));
        assert_eq!((got.requests, got.errors), (2, 2));
    }

    #[test]
    fn forgotten_series_and_long_gaps() {
        let t0 = Instant::now();
        let mut d = CounterDiff::new(secs(30), secs(60), LatencyUnit::Milliseconds);
        d.apply(t0, page(&[("200", "", 100.0), ("503", "", 10.0)]));
        for s in (10..=70).step_by(10) {
            d.apply(t0 + secs(s), page(&[("200", "", 100.0)]));
        }
        assert_eq!(
            d.requests.len() + d.histograms.len(),
            1,
            "the 503 series is forgotten after 60 s"
        );
        // A scrape after a gap longer than the window is a new baseline.
        let got = d.apply(t0 + secs(200), page(&[("200", "", 900.0)]));
        assert_eq!((got.requests, got.counted), (0, false));
        let got = d.apply(t0 + secs(201), page(&[("200", "", 901.0)]));
        assert_eq!((got.requests, got.counted), (1, true));
    }

    #[test]
    fn filters_and_classification() {
        let s = schema();
        let mut p = Page::new(100);
        let base = [
            ("reporter", "destination"),
            ("destination_workload", "reviews-v2"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            v
        };
        for (labels, value) in [
            (with(&[("response_code", "200")]), 10.0),
            (with(&[("response_code", "404")]), 5.0),
            (with(&[("response_code", "500")]), 1.0),
            (with(&[("response_code", "599")]), 1.0),
            // No response sent: abandoned.
            (with(&[("response_code", "0")]), 1.0),
            // Envoy's flags: the client left (DC) is abandoned; an upstream
            // timeout (UT, 504) or cut connection (UC, 503 or a cut body) is an error.
            (
                with(&[("response_code", "0"), ("response_flags", "DC")]),
                4.0,
            ),
            (
                with(&[("response_code", "200"), ("response_flags", "DC")]),
                2.0,
            ),
            (
                with(&[("response_code", "504"), ("response_flags", "UT")]),
                3.0,
            ),
            (
                with(&[("response_code", "503"), ("response_flags", "UC")]),
                5.0,
            ),
            (
                with(&[("response_code", "200"), ("response_flags", "UC,DC")]),
                7.0,
            ),
            // gRPC: HTTP 200 with a server-failure status is an error; NOT_FOUND is not.
            (
                with(&[("response_code", "200"), ("grpc_response_status", "14")]),
                2.0,
            ),
            (
                with(&[("response_code", "200"), ("grpc_response_status", "5")]),
                3.0,
            ),
            // Other reporters and workloads do not count.
            (
                vec![
                    ("reporter", "source"),
                    ("destination_workload", "reviews-v2"),
                    ("response_code", "503"),
                ],
                99.0,
            ),
            (
                vec![
                    ("reporter", "destination"),
                    ("destination_workload", "reviews-v1"),
                    ("response_code", "503"),
                ],
                99.0,
            ),
            // Not a counter value.
            (with(&[("response_code", "201")]), f64::NAN),
            (with(&[("response_code", "202")]), -1.0),
        ] {
            offer(&mut p, &s, "istio_requests_total", &labels, value).unwrap();
        }
        offer(&mut p, &s, "istio_requests_total_other", &base, 5.0).unwrap();
        assert_eq!(s.kind("istio_requests_total"), Some(Kind::Requests));
        assert_eq!(s.kind("istio_request_bytes_bucket"), None);
        let mut d = diff();
        let t0 = Instant::now();
        d.apply(t0, Page::new(100));
        let got = d.apply(t0 + secs(1), p);
        assert_eq!(
            (got.requests, got.errors, got.abandoned, got.series),
            (44, 19, 7, 12)
        );
    }

    #[test]
    fn too_many_series_is_an_error() {
        let s = schema();
        let mut p = Page::new(2);
        let mut code = |code: &str| {
            let labels = [
                ("reporter", "destination"),
                ("destination_workload", "reviews-v2"),
                ("response_code", code),
            ];
            offer(&mut p, &s, "istio_requests_total", &labels, 1.0)
        };
        code("200").unwrap();
        code("201").unwrap();
        assert_eq!(code("202"), Err(TooManySeries { limit: 2 }));
    }

    /// A page with the canary's histogram for one response code.
    fn hist(code: &str, cumulative: &[f64]) -> Page {
        let s = schema();
        let mut p = Page::new(1000);
        for (le, v) in ENVOY_LE.iter().zip(cumulative) {
            let labels = [
                ("reporter", "destination"),
                ("destination_workload", "reviews-v2"),
                ("response_code", code),
                ("le", *le),
            ];
            offer(
                &mut p,
                &s,
                "istio_request_duration_milliseconds_bucket",
                &labels,
                *v,
            )
            .unwrap();
        }
        p
    }

    /// Cumulative counts for `per_bucket` samples in Envoy's buckets.
    fn cumulative(per_bucket: &[(usize, f64)]) -> Vec<f64> {
        let mut own = [0.0; 20];
        for &(i, n) in per_bucket {
            own[i] += n;
        }
        own.iter()
            .scan(0.0, |acc, n| {
                *acc += n;
                Some(*acc)
            })
            .collect()
    }

    fn ms(n: f64) -> Duration {
        Duration::from_secs_f64(n / 1000.0)
    }

    #[test]
    fn envoy_buckets_map_exactly_onto_ours() {
        let t0 = Instant::now();
        let mut d = diff();
        // History before the guard: not counted.
        d.apply(t0, hist("200", &cumulative(&[(4, 1000.0)])));
        // Since: 100 more in (10, 25] ms, 20 in (100, 250] ms, 3 beyond 1 h.
        let got = d.apply(
            t0 + secs(1),
            hist("200", &cumulative(&[(4, 1100.0), (7, 20.0), (19, 3.0)])),
        );
        let i25 = histogram::index_of_upper_bound(ms(25.0)).unwrap();
        let i250 = histogram::index_of_upper_bound(ms(250.0)).unwrap();
        let overflow = histogram::bucket_count() - 1;
        assert_eq!(got.latency, vec![(i25, 100), (i250, 20), (overflow, 3)]);
        // Each sample sits in the bucket just under Envoy's bound.
        let (lo, hi) = histogram::bucket_range(i25);
        assert_eq!(hi, Some(25_000_000));
        assert!(lo >= 23_000_000);
        // Requests are not counted from the histogram.
        assert_eq!(got.requests, 0);
    }

    #[test]
    fn histogram_reset_and_new_histograms() {
        let t0 = Instant::now();
        let mut d = diff();
        d.apply(t0, hist("200", &cumulative(&[(2, 500.0), (9, 5.0)])));
        // Envoy restarted: every bucket is lower, its content is new.
        let got = d.apply(t0 + secs(1), hist("200", &cumulative(&[(2, 4.0)])));
        let i5 = histogram::index_of_upper_bound(ms(5.0)).unwrap();
        assert_eq!(got.latency, vec![(i5, 4)]);
        // A histogram first seen after the baseline counts whole.
        let mut p = hist("200", &cumulative(&[(2, 4.0)]));
        for (le, v) in ENVOY_LE.iter().zip(cumulative(&[(10, 2.0)])) {
            let labels = [
                ("reporter", "destination"),
                ("destination_workload", "reviews-v2"),
                ("response_code", "503"),
                ("le", *le),
            ];
            offer(
                &mut p,
                &schema(),
                "istio_request_duration_milliseconds_bucket",
                &labels,
                v,
            )
            .unwrap();
        }
        let got = d.apply(t0 + secs(2), p);
        let i2500 = histogram::index_of_upper_bound(ms(2500.0)).unwrap();
        assert_eq!(got.latency, vec![(i2500, 2)]);
    }

    #[test]
    fn seconds_histograms_and_odd_bounds() {
        // A Prometheus client's default buckets, in seconds, and a bound that is not ours.
        let s = Schema {
            requests: "http_requests_total".into(),
            duration_buckets: Some("http_request_duration_seconds_bucket".into()),
            unit: LatencyUnit::Seconds,
            status_label: "code".into(),
            grpc_status_label: None,
            grpc_server_errors: vec![],
            flags_label: None,
            filters: vec![],
        };
        let bounds = ["0.005", "0.333", "2.5", "10", "+Inf"];
        let page = |counts: [f64; 5]| {
            let mut p = Page::new(100);
            for (le, v) in bounds.iter().zip(counts) {
                offer(
                    &mut p,
                    &s,
                    "http_request_duration_seconds_bucket",
                    &[("le", *le)],
                    v,
                )
                .unwrap();
            }
            p
        };
        let t0 = Instant::now();
        let mut d = CounterDiff::new(secs(30), secs(600), LatencyUnit::Seconds);
        d.apply(t0, page([0.0; 5]));
        let got = d.apply(t0 + secs(1), page([1.0, 3.0, 3.0, 3.0, 5.0]));
        let i5 = histogram::index_of_upper_bound(ms(5.0)).unwrap();
        let i333 = histogram::bucket_index(ms(332.9));
        assert_eq!(histogram::index_of_upper_bound(ms(333.0)), None);
        let above10 = histogram::bucket_index(Duration::from_secs(10));
        assert_eq!(got.latency, vec![(i5, 1), (i333, 2), (above10, 2)]);
    }

    #[test]
    fn interleaved_buckets_find_their_histogram_and_labels_are_read_once() {
        let s = schema();
        let mut p = Page::new(100);
        let mut reads = 0;
        for (id, le, v) in [
            ("a", "5", 1.0),
            ("a", "10", 2.0),
            ("b", "5", 3.0),
            ("a", "+Inf", 2.0),
        ] {
            p.offer_bucket(&s, id, le, v, || {
                reads += 1;
                vec![
                    ("reporter", "destination"),
                    ("destination_workload", "reviews-v2"),
                ]
            })
            .unwrap();
        }
        assert_eq!(reads, 2, "once per histogram");
        assert_eq!(p.histograms.len(), 2);
        assert_eq!(
            p.histograms[0].1,
            [(5.0, 1.0), (10.0, 2.0), (f64::INFINITY, 2.0)]
        );
        // A histogram the filters reject is not kept, nor read again bucket by bucket.
        let mut reads = 0;
        for le in ["5", "10"] {
            p.offer_bucket(&s, "c", le, 1.0, || {
                reads += 1;
                vec![("reporter", "source")]
            })
            .unwrap();
        }
        assert_eq!((reads, p.histograms.len(), p.samples), (1, 2, 4));
    }

    #[test]
    fn unreadable_histograms_are_skipped() {
        let s = schema();
        let mut p = Page::new(100);
        // A bound twice, and a bucket that is not a count.
        for (code, le, v) in [
            ("200", "5", 1.0),
            ("200", "5", 1.0),
            ("200", "10", 1.0),
            ("503", "5", 1.0),
            ("503", "10", f64::NAN),
        ] {
            let labels = [
                ("reporter", "destination"),
                ("destination_workload", "reviews-v2"),
                ("response_code", code),
                ("le", le),
            ];
            offer(
                &mut p,
                &s,
                "istio_request_duration_milliseconds_bucket",
                &labels,
                v,
            )
            .unwrap();
        }
        let t0 = Instant::now();
        let mut d = diff();
        d.apply(t0, Page::new(1));
        assert_eq!(d.apply(t0 + secs(1), p).latency, vec![]);
        assert_eq!(d.requests.len() + d.histograms.len(), 0);
    }

    /// Where a sample in Envoy's bucket `j` (of [`ENVOY_LE`]) lands in our layout.
    fn our_bucket(j: usize) -> usize {
        match ENVOY_LE[j].parse::<f64>() {
            Ok(le) if le.is_finite() => bucket_for_upper(le, LatencyUnit::Milliseconds),
            _ => bucket_for_lower(3_600_000.0, LatencyUnit::Milliseconds),
        }
    }

    /// What happened to one series between two scrapes.
    #[derive(Clone, Debug)]
    struct Step {
        /// Requests it counted (after the reset, if any).
        events: u64,
        /// The exporter restarted first: the counter went back to zero.
        reset: bool,
        /// The series is on the page (it may be missing, e.g. expired for a while).
        present: bool,
    }

    fn steps(len: usize) -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            (
                0u64..300,
                proptest::bool::weighted(0.2),
                proptest::bool::weighted(0.8),
            )
                .prop_map(|(events, reset, present)| Step {
                    events,
                    reset,
                    present,
                }),
            len,
        )
    }

    /// One exporter series as the tests drive it, and what the guard last saw of it.
    struct Series {
        code: &'static str,
        value: u64,
        /// Value on the last page it was on.
        seen: u64,
        /// Requests since that page, and whether it was reset since.
        pending: u64,
        reset_since: bool,
    }

    impl Series {
        fn new(code: &'static str, history: u64) -> Self {
            Series {
                code,
                value: history,
                seen: history,
                pending: 0,
                reset_since: false,
            }
        }

        fn live(&mut self, step: &Step) {
            if step.reset {
                self.value = 0;
                self.pending = 0;
                self.reset_since = true;
            }
            self.value += step.events;
            self.pending += step.events;
        }

        /// What the diff must count for this series on a page it is on: `(at most,
        /// exactly if known)`. A reset is invisible when the counter is back at or
        /// above the value last seen; then only the growth since can be counted.
        fn expected(&self) -> (u64, Option<u64>) {
            let exact = if !self.reset_since || self.value < self.seen {
                Some(self.pending)
            } else {
                None
            };
            (self.pending, exact)
        }

        fn scraped(&mut self) {
            self.seen = self.value;
            self.pending = 0;
            self.reset_since = false;
        }
    }

    proptest! {
        /// Any sequence of scrapes with resets and missing pages: a delta never counts more
        /// than happened (so a reset is never a spike beyond the post-reset value), and it
        /// counts exactly what happened unless a reset was hidden by new growth.
        #[test]
        fn request_deltas_never_exceed_what_happened(
            history in (0u64..1_000_000, 0u64..1_000_000),
            ok_steps in steps(12),
            err_steps in steps(12),
        ) {
            let t0 = Instant::now();
            let mut d = diff();
            let mut series = [Series::new("200", history.0), Series::new("503", history.1)];
            let baseline = d.apply(t0, page(&[("200", "", history.0 as f64), ("503", "", history.1 as f64)]));
            prop_assert_eq!((baseline.requests, baseline.counted), (0, false));
            for (i, (ok, err)) in ok_steps.iter().zip(&err_steps).enumerate() {
                let mut on_page = Vec::new();
                let (mut most, mut exact, mut err_exact) = (0, Some(0), Some(0));
                for (s, step) in series.iter_mut().zip([ok, err]) {
                    s.live(step);
                    if step.present {
                        let (m, e) = s.expected();
                        most += m;
                        exact = exact.zip(e).map(|(a, b)| a + b);
                        if s.code == "503" {
                            err_exact = e;
                        }
                        on_page.push((s.code, "", s.value as f64));
                        s.scraped();
                    } else if s.code == "503" {
                        err_exact = Some(0);
                    }
                }
                let got = d.apply(t0 + secs(i as u64 + 1), page(&on_page));
                prop_assert!(got.counted);
                let on_page_now: u64 = on_page.iter().map(|(_, _, v)| *v as u64).sum();
                prop_assert!(got.requests <= most, "counted {} of {} at step {}", got.requests, most, i);
                prop_assert!(got.requests <= on_page_now);
                prop_assert!(got.errors <= got.requests);
                if let Some(e) = exact {
                    prop_assert_eq!(got.requests, e, "step {}", i);
                }
                if let Some(e) = err_exact {
                    prop_assert_eq!(got.errors, e, "errors at step {}", i);
                }
            }
        }

        /// Without resets (series may still miss pages), the deltas add up to last − first.
        #[test]
        fn without_resets_deltas_add_up_to_last_minus_first(
            history in 0u64..1_000_000,
            steps in steps(15),
        ) {
            let t0 = Instant::now();
            let mut d = diff();
            d.apply(t0, page(&[("200", "", history as f64)]));
            let (mut value, mut last_seen, mut total) = (history, history, 0);
            for (i, step) in steps.iter().enumerate() {
                value += step.events;
                let on_page = if step.present { vec![("200", "", value as f64)] } else { vec![] };
                if step.present {
                    last_seen = value;
                }
                total += d.apply(t0 + secs(i as u64 + 1), page(&on_page)).requests;
            }
            prop_assert_eq!(total, last_seen - history);
        }

        /// Histogram deltas: per bucket exactly the samples that fell into it (mapped onto
        /// our buckets) and in all as many as the count grew, unless the exporter was reset;
        /// after a reset, never more samples than happened.
        #[test]
        fn histogram_deltas_are_per_bucket_growth_and_never_a_spike(
            history in proptest::collection::vec(0u64..10_000, 20),
            scrapes in proptest::collection::vec(
                (proptest::collection::vec(prop_oneof![3 => Just(0u64), 1 => 0u64..50], 20),
                 proptest::bool::weighted(0.2)),
                1..10,
            ),
        ) {
            let as_page = |own: &[u64]| {
                let own: Vec<(usize, f64)> = own.iter().map(|&n| n as f64).enumerate().collect();
                hist("200", &cumulative(&own))
            };
            let t0 = Instant::now();
            let mut d = diff();
            let mut own = history.clone();
            d.apply(t0, as_page(&own));
            for (i, (events, reset)) in scrapes.iter().enumerate() {
                let before: u64 = own.iter().sum();
                let before_cum = cumulative(&own.iter().map(|&n| n as f64).enumerate().collect::<Vec<_>>());
                if *reset {
                    own = vec![0; 20];
                }
                for (o, e) in own.iter_mut().zip(events) {
                    *o += e;
                }
                let after_cum = cumulative(&own.iter().map(|&n| n as f64).enumerate().collect::<Vec<_>>());
                let got = d.apply(t0 + secs(i as u64 + 1), as_page(&own));
                let total: u64 = got.latency.iter().map(|&(_, n)| n).sum();
                let happened: u64 = events.iter().sum();
                prop_assert!(got.latency.iter().all(|&(_, n)| n > 0));
                prop_assert!(total <= happened, "counted {} of {} samples", total, happened);
                prop_assert!(total <= own.iter().sum::<u64>());
                let visible = before_cum.iter().zip(&after_cum).any(|(b, a)| a < b);
                if !*reset || visible {
                    let mut want = std::collections::BTreeMap::new();
                    for (j, &e) in events.iter().enumerate().filter(|(_, &e)| e > 0) {
                        *want.entry(our_bucket(j)).or_insert(0) += e;
                    }
                    prop_assert_eq!(&got.latency, &want.into_iter().collect::<Vec<_>>());
                }
                if !*reset {
                    // The +Inf bucket is the count: the per-bucket deltas add up to its growth.
                    prop_assert_eq!(total, own.iter().sum::<u64>() - before);
                }
            }
        }
    }
}
