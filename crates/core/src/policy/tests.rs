use super::*;
use crate::window::{Outcome, Window};
use std::time::Instant;

fn summary(requests: u64, errors: u64, latency: Duration) -> Summary {
    let mut s = Summary::empty(30);
    s.requests = requests;
    s.errors = errors;
    s.latency
        .add(crate::histogram::bucket_index(latency), requests.max(1));
    s
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The flat rules of a window's own ratio and quantile, with no significance asked.
fn flat() -> Thresholds {
    Thresholds {
        confidence: 0.5,
        ..Thresholds::default()
    }
}

#[test]
fn error_ratio_exactly_at_threshold_passes() {
    let t = flat();
    assert_eq!(t.check(&summary(100, 5, ms(10))), Check::Healthy);
    assert!(matches!(
        t.check(&summary(100, 6, ms(10))),
        Check::Failing(_)
    ));
}

#[test]
fn errors_must_be_significantly_over_the_limit() {
    let t = Thresholds::default();
    // 6% of 100 could well come from a canary at 5%; 20% of 100 could not.
    assert_eq!(t.check(&summary(100, 6, ms(10))), Check::Healthy);
    match t.check(&summary(100, 20, ms(10))) {
        Check::Failing(b) => {
            assert_eq!(b.error_ratio, Some(0.2));
            assert_eq!(b.latency_ms, None);
        }
        other => panic!("expected failing, got {other:?}"),
    }
    // Three unlucky errors among 50 requests at a 1% background.
    assert_eq!(t.check(&summary(50, 3, ms(10))), Check::Healthy);
    // The same ratio over a large window is beyond doubt.
    assert!(matches!(
        t.check(&summary(100_000, 6_000, ms(10))),
        Check::Failing(_)
    ));
}

#[test]
fn latency_only_failure() {
    let t = Thresholds::default();
    match t.check(&summary(100, 0, ms(900))) {
        Check::Failing(b) => {
            assert_eq!(b.error_ratio, None);
            let l = b.latency_ms.unwrap();
            assert!((855.0..=945.0).contains(&l), "{l}");
            assert_eq!((b.over_limit, b.latency_samples), (100, 100));
            assert!(b.to_string().starts_with("p99 latency"), "{b}");
            assert!(b.to_string().contains("100 of 100 samples over"), "{b}");
        }
        other => panic!("expected failing, got {other:?}"),
    }
    assert_eq!(t.check(&summary(100, 0, ms(450))), Check::Healthy);
}

#[test]
fn one_slow_request_in_a_small_window_is_not_a_slow_canary() {
    let mut s = summary(49, 0, ms(40));
    s.requests = 50;
    s.latency.record(ms(900));
    // With 50 samples the p99 is the slowest request: the flat rule fails ...
    assert!(matches!(flat().check(&s), Check::Failing(_)));
    // ... but one request in 50 over the limit fits a p99 under it.
    assert_eq!(Thresholds::default().check(&s), Check::Healthy);
    // Ten in 50 do not.
    s.latency.add(crate::histogram::bucket_index(ms(900)), 9);
    s.requests = 59;
    assert!(matches!(
        Thresholds::default().check(&s),
        Check::Failing(b) if b.over_limit == 10
    ));
}

#[test]
fn a_fault_after_a_long_healthy_stretch_fails_on_the_recent_part() {
    let t0 = Instant::now();
    let w = Window::new(Duration::from_secs(30), t0);
    // 25 healthy seconds at 50 rps, then 5 s at 20% errors.
    for sec in 0..30u64 {
        for i in 0..50 {
            let outcome = if sec >= 25 && i % 5 == 0 {
                Outcome::Error
            } else {
                Outcome::Success
            };
            w.record(t0 + Duration::from_secs(sec), ms(5), outcome);
        }
    }
    let s = w.summary(t0 + Duration::from_secs(29));
    let t = Thresholds::default();
    // The whole window is diluted to 3.3%; its last 5 s are at 20%.
    let mut whole = s.clone();
    whole.recent = None;
    whole.slots.clear();
    assert_eq!(t.check(&whole), Check::Healthy);
    // Second by second, the sequential test finds the fault's seconds alone.
    match t.check(&s) {
        Check::Failing(b) => {
            assert_eq!((b.seconds, b.requests, b.errors), (5, 250, 50));
            assert!(b.evidence.is_some_and(|e| e >= t.sequential_threshold()));
        }
        other => panic!("expected failing, got {other:?}"),
    }
    // Without the seconds (a guard that predates them), the recent part still shows it.
    let mut old = s.clone();
    old.slots.clear();
    match t.check(&old) {
        Check::Failing(b) => {
            assert_eq!((b.seconds, b.requests, b.errors), (5, 250, 50));
            assert!(b.to_string().contains("50 of 250"), "{b}");
        }
        other => panic!("expected failing, got {other:?}"),
    }
}

#[test]
fn a_small_recent_part_fails_only_on_strong_evidence() {
    let recent = |n, e| {
        let mut r = summary(n, e, ms(10));
        r.seconds = 5;
        Some(Box::new(r))
    };
    let mut s = summary(100, 5, ms(10));
    // 3 of 3 recent requests failing could be bad luck at 5% (1 in 8,000) ...
    s.recent = recent(3, 3);
    assert_eq!(Thresholds::default().check(&s), Check::Healthy);
    // ... 8 of 8 could not (1 in 25 billion).
    s.recent = recent(8, 8);
    assert!(matches!(
        Thresholds::default().check(&s),
        Check::Failing(b) if b.requests == 8 && b.seconds == 5
    ));
    // Below min_requests in the whole window nothing is judged.
    let mut few = summary(19, 8, ms(10));
    few.recent = recent(8, 8);
    assert_eq!(Thresholds::default().check(&few), Check::Inconclusive);
}

#[test]
fn zero_traffic_and_low_traffic_are_inconclusive() {
    let t = Thresholds::default();
    assert_eq!(t.check(&Summary::empty(30)), Check::Inconclusive);
    // Every one of 19 requests failing, but 19 < min_requests.
    assert_eq!(t.check(&summary(19, 19, ms(1))), Check::Inconclusive);
    assert!(matches!(
        t.check(&summary(20, 20, ms(1))),
        Check::Failing(_)
    ));
    // A single error at low traffic never fails, even with min_requests 0.
    let t0 = Thresholds {
        min_requests: 0,
        ..Thresholds::default()
    };
    assert_eq!(t0.check(&Summary::empty(30)), Check::Inconclusive);
}

#[test]
fn failing_needs_consecutive_failures_and_recovery_resets() {
    let mut p = Policy::new(Thresholds {
        failure_threshold: 3,
        ..Thresholds::default()
    });
    let bad = summary(100, 50, ms(10));
    let good = summary(100, 0, ms(10));
    assert_eq!(p.observe(&bad), Verdict::Healthy);
    assert_eq!(p.observe(&bad), Verdict::Healthy);
    assert_eq!(p.consecutive_failures(), 2);
    assert_eq!(p.observe(&good), Verdict::Healthy);
    assert_eq!(p.consecutive_failures(), 0);
    assert_eq!(p.last_breach(), None);
    p.observe(&bad);
    p.observe(&bad);
    assert_eq!(p.observe(&bad), Verdict::Failing);
    assert_eq!(p.consecutive_failures(), 3);
    assert_eq!(p.last_breach().unwrap().errors, 50);
}

#[test]
fn inconclusive_breaks_a_failure_run() {
    let mut p = Policy::new(Thresholds {
        failure_threshold: 2,
        ..Thresholds::default()
    });
    let bad = summary(100, 50, ms(10));
    p.observe(&bad);
    p.observe(&bad);
    assert_eq!(p.observe(&Summary::empty(30)), Verdict::Inconclusive);
    assert_eq!(p.observe(&bad), Verdict::Healthy);
    assert_eq!(p.consecutive_failures(), 1);
}

#[test]
fn rolled_back_sticks_until_reset() {
    let mut p = Policy::new(Thresholds {
        failure_threshold: 1,
        ..Thresholds::default()
    });
    assert_eq!(p.observe(&summary(100, 50, ms(10))), Verdict::Failing);
    p.mark_rolled_back();
    assert_eq!(p.observe(&summary(100, 0, ms(10))), Verdict::RolledBack);
    p.reset();
    assert_eq!(p.observe(&summary(100, 0, ms(10))), Verdict::Healthy);
}

#[test]
fn window_roll_over_clears_a_failure() {
    // Errors in the first second leave a 3 s window three seconds later.
    let t0 = Instant::now();
    let w = Window::new(Duration::from_secs(3), t0);
    let t = Thresholds {
        min_requests: 10,
        ..Thresholds::default()
    };
    for _ in 0..10 {
        w.record(t0, ms(5), Outcome::Error);
    }
    for _ in 0..20 {
        w.record(t0 + ms(2500), ms(5), Outcome::Success);
    }
    assert!(matches!(
        t.check(&w.summary(t0 + ms(2900))),
        Check::Failing(_)
    ));
    assert_eq!(t.check(&w.summary(t0 + ms(3000))), Check::Healthy);
}

#[test]
fn quantile_labels() {
    assert_eq!(quantile_label(0.99), "99");
    assert_eq!(quantile_label(0.5), "50");
    assert_eq!(quantile_label(0.995), "99.5");
}
