use super::*;

#[test]
fn envoy_boundaries_are_bucket_boundaries() {
    for ms in [
        0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
        30000.0, 60000.0,
    ] {
        let d = Duration::from_secs_f64(ms / 1000.0);
        assert!(
            index_of_upper_bound(d).is_some(),
            "{ms} ms is not a boundary"
        );
    }
}

#[test]
fn count_from_counts_whole_buckets_at_or_above_the_limit() {
    let ms = Duration::from_millis;
    let mut h = Histogram::default();
    h.record(ms(400));
    h.record(ms(499));
    h.record(ms(500));
    h.record(ms(2000));
    h.record(MAX_TRACKED * 2);
    // 500 ms is a boundary: its bucket and everything above count.
    assert_eq!(h.count_from(ms(500)), 3);
    // 510 ms falls inside [500, 525): that bucket may hold samples under it.
    assert_eq!(h.count_from(ms(510)), 2);
    assert_eq!(h.count_from(Duration::ZERO), 5);
    assert_eq!(h.count_from(Duration::MAX), 0);
}

#[test]
fn buckets_are_at_most_five_percent_wide() {
    for i in 1..bucket_count() - 1 {
        let (lo, hi) = bucket_range(i);
        let hi = hi.unwrap();
        assert!(hi > lo);
        assert!((hi - lo) as f64 / lo as f64 <= 0.05 + 1e-9, "bucket {i}");
    }
    assert_eq!(bucket_range(bucket_count() - 1), (60_000_000_000, None));
}

#[test]
fn index_matches_range() {
    for ns in [
        0u64,
        9_999,
        10_000,
        10_499,
        10_500,
        499_999,
        500_000,
        59_999_999_999,
    ] {
        let i = bucket_index(Duration::from_nanos(ns));
        let (lo, hi) = bucket_range(i);
        assert!(lo <= ns && hi.is_none_or(|h| ns < h), "{ns} in bucket {i}");
    }
    assert_eq!(bucket_index(Duration::from_secs(3600)), bucket_count() - 1);
}

#[test]
fn quantiles_within_five_percent() {
    // A spread of latencies from 1 ms to 10 s: the true p99 is the 9,900th of 10,000.
    let mut h = Histogram::default();
    let samples: Vec<Duration> = (1..=10_000u64)
        .map(|i| Duration::from_micros(1_000 + i * 999))
        .collect();
    for s in &samples {
        h.record(*s);
    }
    for (q, idx) in [(0.5, 4_999), (0.9, 8_999), (0.99, 9_899)] {
        let truth = samples[idx].as_secs_f64();
        let got = h.quantile(q).unwrap().as_secs_f64();
        assert!((got - truth).abs() / truth < 0.05, "q{q}: {got} vs {truth}");
    }
}

#[test]
fn quantile_of_empty_is_none_and_overflow_reports_limit() {
    let mut h = Histogram::default();
    assert_eq!(h.quantile(0.99), None);
    h.record(Duration::from_secs(120));
    assert_eq!(h.quantile(0.99), Some(MAX_TRACKED));
}

#[test]
fn sparse_round_trip_and_merge() {
    let mut a = Histogram::default();
    a.record(Duration::from_millis(3));
    a.record(Duration::from_millis(3));
    let mut b = Histogram::default();
    b.record(Duration::from_millis(700));
    let json = serde_json::to_string(&a).unwrap();
    let back: Histogram = serde_json::from_str(&json).unwrap();
    assert_eq!(back, a);
    a.merge(&b);
    assert_eq!(a.total(), 3);
    assert_eq!(a.to_sparse().len(), 2);
    assert!(serde_json::from_str::<Histogram>("[[60000,1]]").is_err());
}
