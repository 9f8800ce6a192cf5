//! Tests of envoy mode's reading of a page: an istio-proxy page
//! (`tests/fixtures/istio-proxy-stats.txt`) parses with our series among many, only the
//! canary's destination-reported series count, rejected pages change nothing, and `le` is
//! split off wherever it sits in the labels.
//!
//! Design rule: the counting tests run on the fixture with the canary's counters filled
//! in, so the filter meets the hundreds of series it must ignore, as in a pod.

use super::*;
use crate::domain::counters::LatencyUnit;

/// An istio-proxy page with placeholders for the canary's moving counters.
const FIXTURE: &str = include_str!("../../../tests/fixtures/istio-proxy-stats.txt");

/// The fixture with the canary's 200s, 503s and gRPC UNAVAILABLEs filled in.
fn render(ok: u64, err: u64, grpc_err: u64) -> String {
    FIXTURE
        .replace("{{ok_sum}}", &(ok * 20).to_string())
        .replace("{{err_sum}}", &(err * 200).to_string())
        .replace("{{ok}}", &ok.to_string())
        .replace("{{err}}", &err.to_string())
        .replace("{{grpc_err}}", &grpc_err.to_string())
        .replace("{{dc}}", "4")
        .replace("{{ut}}", "2")
        .replace("{{uc}}", "1")
}

fn reviews_v2() -> Schema {
    Schema::istio(&[("destination_workload".to_string(), "reviews-v2".to_string())])
}

fn diff() -> CounterDiff {
    CounterDiff::new(
        Duration::from_secs(30),
        FORGET_AFTER,
        LatencyUnit::Milliseconds,
    )
}

#[test]
fn the_fixture_is_a_valid_page_with_our_series_among_many() {
    let page = render(1000, 50, 10);
    let mut names = std::collections::BTreeSet::new();
    let stats = promtext::parse(&page, |s| {
        names.insert(s.name.to_string());
    })
    .unwrap();
    assert!(stats.samples > 300, "{stats:?}");
    assert!(names.len() > 40, "{} names", names.len());
    let mut d = diff();
    let delta = digest(
        page.as_bytes(),
        &reviews_v2(),
        MAX_SERIES,
        &mut d,
        Instant::now(),
    )
    .unwrap();
    // A baseline: the canary's inbound series are found, nothing is counted.
    assert_eq!(delta.series, 7);
    assert_eq!((delta.requests, delta.errors, delta.counted), (0, 0, false));
}

#[test]
fn deltas_of_the_canary_only() {
    let t0 = Instant::now();
    let mut d = diff();
    let schema = reviews_v2();
    let page = render(1000, 50, 10);
    digest(page.as_bytes(), &schema, MAX_SERIES, &mut d, t0).unwrap();
    // Bump every istio_requests_total series by 10: only the canary's
    // destination-reported ones may count.
    let bumped: String = page
        .lines()
        .map(|l| match l.strip_prefix("istio_requests_total{") {
            Some(_) => {
                let (head, v) = l.rsplit_once(' ').unwrap();
                format!("{head} {}\n", v.parse::<f64>().unwrap() + 10.0)
            }
            None => format!("{l}\n"),
        })
        .collect();
    let delta = digest(
        bumped.as_bytes(),
        &schema,
        MAX_SERIES,
        &mut d,
        t0 + Duration::from_secs(1),
    )
    .unwrap();
    // 200, 404, 503, gRPC UNAVAILABLE and Envoy-flagged (DC, UT, UC) series
    // for reviews-v2, not its outbound (reporter="source") calls to ratings.
    assert_eq!(
        (delta.requests, delta.errors, delta.abandoned),
        (70, 40, 10)
    );
    assert_eq!(delta.latency, vec![]);
    // The canary's latency: 120 more 200s under 25 ms, 30 more 503s under 250 ms.
    let delta = digest(
        render(1120, 80, 10).as_bytes(),
        &schema,
        MAX_SERIES,
        &mut d,
        t0 + Duration::from_secs(2),
    )
    .unwrap();
    let bucket = |ms: u64| {
        crate::domain::histogram::index_of_upper_bound(Duration::from_millis(ms)).unwrap()
    };
    assert_eq!(delta.latency, vec![(bucket(25), 120), (bucket(250), 30)]);
}

#[test]
fn rejected_pages_change_nothing() {
    let t0 = Instant::now();
    let mut d = diff();
    let schema = reviews_v2();
    let page = render(1000, 50, 10);
    digest(page.as_bytes(), &schema, MAX_SERIES, &mut d, t0).unwrap();
    // The first half of a page, cut mid-line, then garbage.
    let cut = &page.as_bytes()[..page.len() / 2];
    for page in [cut, b"\xff\xfe not text", b"<html>oops</html>"] {
        let e = digest(page, &schema, MAX_SERIES, &mut d, t0).unwrap_err();
        assert_eq!(e.reason(), "parse", "{e}");
    }
    let e = digest(render(2000, 50, 10).as_bytes(), &schema, 2, &mut d, t0).unwrap_err();
    assert_eq!(e.reason(), "too_many_series");
    // The same page again: nothing moved.
    let delta = digest(
        page.as_bytes(),
        &schema,
        MAX_SERIES,
        &mut d,
        t0 + Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!((delta.requests, delta.counted), (0, true));
}

#[test]
fn le_is_split_off_wherever_it_is() {
    let page = "h_bucket{a=\"x\",le=\"25\"} 1\n\
                h_bucket{a=\"x\", le=\"25\" ,} 1\n\
                h_bucket{le=\"+Inf\"} 1\n\
                h_bucket{le=\"0.5\",a=\"x\"} 1\n\
                h_bucket{a=\"le=\\\"1\\\"\",xle=\"2\"} 1\n";
    let mut got = Vec::new();
    promtext::parse(page, |s| {
        let (id, le) = split_le(&s);
        got.push((id.into_owned(), le.to_string()));
    })
    .unwrap();
    let want = [
        ("a=\"x\"", "25"),
        ("a=\"x\"", "25"),
        ("", "+Inf"),
        ("a=\"x\",", "0.5"),
        ("a=\"le=\\\"1\\\"\",xle=\"2\",", ""),
    ];
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0.as_str(), g.1.as_str()), w);
    }
}
