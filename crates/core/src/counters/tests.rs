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
