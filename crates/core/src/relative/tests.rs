use std::time::{Duration, Instant};

use super::*;
use crate::judge::{Judge, Judgement, MemberSample};
use crate::policy::{Policy, Verdict};
use crate::window::{Outcome, Window};

/// xorshift64*: deterministic traffic.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
}

/// A 30 s window of `rps` requests a second; second `s` (0 = oldest) fails
/// with `errors(s)` and is `slow(s)` times a log-normal (median 40 ms, σ 0.3).
fn window(seed: u64, rps: u64, errors: impl Fn(i64) -> f64, slow: impl Fn(i64) -> f64) -> Summary {
    spanning(seed, rps, Duration::from_secs(30), errors, slow)
}

/// Like [`window`], over a window of `length` ending at the same instant:
/// the seconds before the 30 s window's first are numbered below 0.
fn spanning(
    seed: u64,
    rps: u64,
    length: Duration,
    errors: impl Fn(i64) -> f64,
    slow: impl Fn(i64) -> f64,
) -> Summary {
    let mut rng = Rng(seed * 2 + 1);
    let origin = Instant::now();
    let extra = length.as_secs() as i64 - 30;
    let w = Window::new(length, origin).with_latency_limit(Duration::from_millis(500));
    for s in -extra..30 {
        let start = origin + Duration::from_secs((s + extra) as u64);
        for i in 0..rps {
            let at = start + Duration::from_secs_f64(i as f64 / rps as f64);
            let ms = 40.0 * slow(s) * (0.3 * rng.normal()).exp();
            let outcome = if rng.unit() < errors(s) {
                Outcome::Error
            } else {
                Outcome::Success
            };
            w.record(at, Duration::from_secs_f64(ms / 1000.0), outcome);
        }
    }
    w.summary(origin + Duration::from_secs((extra + 30) as u64) - Duration::from_millis(1))
}

fn steady(seed: u64, rps: u64, ratio: f64) -> Summary {
    window(seed, rps, |_| ratio, |_| 1.0)
}

fn member(pod: &str, role: Role, summary: Summary) -> MemberSample {
    MemberSample {
        pod: pod.into(),
        revision: Some(role.as_str().into()),
        summary,
        role,
    }
}

/// Stable traffic is nine times the canary's, over three baseline guards.
fn baseline(
    seed: u64,
    errors: impl Fn(i64) -> f64 + Copy,
    slow: impl Fn(i64) -> f64 + Copy,
) -> Vec<MemberSample> {
    (0..3)
        .map(|i| {
            member(
                &format!("stable-{i}"),
                Role::Baseline,
                window(seed + 100 + i, 150, errors, slow),
            )
        })
        .collect()
}

fn judged(samples: &[MemberSample]) -> Judgement {
    Judge::new(Thresholds::default(), true).judge(samples)
}

fn with_canary(canary: Summary, mut stable: Vec<MemberSample>) -> Vec<MemberSample> {
    stable.push(member("canary-0", Role::Canary, canary));
    stable
}

#[test]
fn more_errors_than_the_baseline_fail_although_under_the_absolute_limit() {
    // 20 healthy seconds, then 6% for 10 s: under the 5% limit's reach, 6× the baseline.
    let canary = window(1, 50, |s| if s >= 20 { 0.06 } else { 0.005 }, |_| 1.0);
    assert_eq!(
        judged(&[member("c", Role::Canary, canary.clone())]).verdict,
        Verdict::Healthy
    );
    let j = judged(&with_canary(canary, baseline(1, |_| 0.005, |_| 1.0)));
    assert_eq!(j.verdict, Verdict::Failing);
    assert!(j.breach.is_none());
    let r = j.relative.expect("a relative breach");
    assert!(matches!(r, RelativeBreach::Errors { .. }), "{r}");
    assert!(j.evidence >= 1.0);
}

#[test]
fn a_canary_like_its_baseline_passes() {
    for seed in 0..20 {
        let j = judged(&with_canary(
            steady(seed, 50, 0.03),
            baseline(seed, |_| 0.03, |_| 1.0),
        ));
        assert_eq!(j.verdict, Verdict::Healthy, "seed {seed}: {:?}", j.relative);
        assert!(j.evidence < 0.25, "seed {seed}: {}", j.evidence);
    }
}

#[test]
fn a_shared_one_second_outage_is_not_blamed_on_the_canary() {
    let outage = |s: i64| if s == 25 { 1.0 } else { 0.03 };
    let canary = window(2, 50, outage, |_| 1.0);
    // Today (no baseline) the blip rolls the canary back.
    let alone = judged(&[member("c", Role::Canary, canary.clone())]);
    assert_eq!(alone.verdict, Verdict::Failing);
    let j = judged(&with_canary(canary, baseline(2, outage, |_| 1.0)));
    assert_eq!(j.verdict, Verdict::Inconclusive);
    assert!(j.relative.is_none());
    assert!(j.breach.is_none());
    assert!(j
        .degraded
        .expect("degraded")
        .starts_with("baseline degraded"));
}

#[test]
fn the_outage_builds_no_relative_evidence_when_seconds_are_one_apart() {
    // Guards' seconds start apart: the baseline sees the outage one second earlier.
    let canary = window(3, 50, |s| if s == 26 { 1.0 } else { 0.005 }, |_| 1.0);
    let stable = steady(3, 450, 0.005);
    let shifted = window(4, 450, |s| if s == 25 { 1.0 } else { 0.005 }, |_| 1.0);
    let t = Thresholds::default();
    let r = Relative::default();
    let c = check(&canary, &shifted, &t, &r).expect("enough traffic");
    assert!(c.breach.is_none() && c.evidence < 0.25, "{c:?}");
    // The same canary against a healthy baseline: 50 errors in a row fail.
    let c = check(&canary, &stable, &t, &r).expect("enough traffic");
    assert!(c.breach.is_some());
}

#[test]
fn an_outage_about_to_leave_the_canary_s_window_is_still_excused() {
    // A shared outage in the canary's oldest second, of which the baseline's seconds,
    // starting later, hold it in the one before: just out of an equal window.
    // Busy and noisy enough (150 rps, 4.8%) that the outage alone takes the canary's
    // whole window significantly over 5%.
    let canary = window(5, 150, |s| if s == 0 { 1.0 } else { 0.048 }, |_| 1.0);
    let stable = |length| -> Vec<MemberSample> {
        (0..3)
            .map(|i| {
                let outage = |s: i64| if s == -1 { 1.0 } else { 0.048 };
                let w = spanning(105 + i, 150, length, outage, |_| 1.0);
                member(&format!("stable-{i}"), Role::Baseline, w)
            })
            .collect()
    };
    let equal = judged(&with_canary(
        canary.clone(),
        stable(Duration::from_secs(30)),
    ));
    assert_eq!(equal.verdict, Verdict::Failing, "{:?}", equal.breach);
    let longer = Role::Baseline.window(Duration::from_secs(30));
    assert_eq!(
        Role::Canary.window(Duration::from_secs(30)),
        Duration::from_secs(30)
    );
    let kept = judged(&with_canary(canary, stable(longer)));
    assert_eq!(kept.verdict, Verdict::Inconclusive, "{:?}", kept.breach);
    assert!(kept
        .degraded
        .expect("degraded")
        .starts_with("baseline degraded"));
}

#[test]
fn a_shared_sustained_degradation_is_inconclusive() {
    let worse = |s: i64| if s >= 15 { 0.25 } else { 0.005 };
    let canary = window(5, 50, worse, |_| 1.0);
    assert_eq!(
        judged(&[member("c", Role::Canary, canary.clone())]).verdict,
        Verdict::Failing
    );
    let j = judged(&with_canary(canary, baseline(5, worse, |_| 1.0)));
    assert_eq!((j.verdict, j.relative), (Verdict::Inconclusive, None));
    assert!(j.degraded.is_some());
}

#[test]
fn twice_the_baseline_latency_fails() {
    let canary = window(6, 50, |_| 0.005, |s| if s >= 20 { 2.0 } else { 1.0 });
    // p99 about 160 ms: far under the 500 ms limit.
    assert_eq!(
        judged(&[member("c", Role::Canary, canary.clone())]).verdict,
        Verdict::Healthy
    );
    let j = judged(&with_canary(canary, baseline(6, |_| 0.005, |_| 1.0)));
    assert_eq!(j.verdict, Verdict::Failing);
    let r = j.relative.expect("relative breach");
    assert!(matches!(r, RelativeBreach::Latency { .. }), "{r}");
    assert!(r.to_string().starts_with("p99 latency"), "{r}");
}

#[test]
fn without_baseline_members_the_judgement_is_the_policy_s() {
    // Rounds of a canary that fails, recovers and fails again; a baseline with
    // too little traffic to judge by changes nothing either.
    let rounds = [
        steady(7, 50, 0.01),
        steady(8, 50, 0.3),
        steady(9, 50, 0.01),
        window(10, 50, |_| 0.0, |_| 20.0),
    ];
    let mut alone = Judge::new(Thresholds::default(), true);
    let mut quiet = Judge::new(Thresholds::default(), true);
    let mut reference = Policy::new(Thresholds::default());
    for (i, s) in rounds.iter().enumerate() {
        let canary = member("c", Role::Canary, s.clone());
        let a = alone.judge(std::slice::from_ref(&canary));
        let want = reference.observe(s);
        assert_eq!(a.verdict, want, "round {i}");
        assert_eq!(
            a.breach.as_ref().map(|b| &b.1),
            reference.last_breach(),
            "round {i}"
        );
        assert_eq!(
            (&a.baseline, &a.relative, &a.degraded),
            (&None, &None, &None)
        );
        let tiny = member("stable", Role::Baseline, steady(11, 0, 0.0));
        let mut q = quiet.judge(&[canary, tiny]);
        assert!(q.baseline.take().is_some());
        assert_eq!(q, a, "round {i}");
    }
}

#[test]
fn baseline_members_never_fail_the_verdict() {
    let broken = member("stable", Role::Baseline, steady(12, 450, 1.0));
    let j = judged(std::slice::from_ref(&broken));
    assert_eq!(j.verdict, Verdict::Inconclusive);
    assert!(j.members.is_empty());
    let j = judged(&[broken, member("c", Role::Canary, steady(13, 50, 0.005))]);
    assert_ne!(j.verdict, Verdict::Failing);
    assert!(!j.members.contains_key("stable"));
}

#[test]
fn a_canary_worse_than_a_degraded_baseline_still_fails() {
    let canary = window(14, 50, |s| if s >= 20 { 0.6 } else { 0.1 }, |_| 1.0);
    let j = judged(&with_canary(canary, baseline(14, |_| 0.1, |_| 1.0)));
    assert_eq!(j.verdict, Verdict::Failing);
    assert!(j.relative.is_some() && j.degraded.is_some());
}

#[test]
fn explanations_name_the_baseline() {
    let e = RelativeBreach::Errors {
        seconds: 12,
        requests: 1000,
        errors: 41,
        baseline_ratio: 0.005,
        margin: 0.005,
        factor: 1.0,
        evidence: 12.3,
    };
    assert_eq!(
        e.to_string(),
        "error ratio 0.041 vs baseline 0.005 + 0.5pp (41 of 1000 requests over the last 12s, sequential evidence 12.3)"
    );
    let l = RelativeBreach::Latency {
        seconds: 5,
        quantile: 0.99,
        canary_ms: 160.0,
        baseline_ms: 80.0,
        factor: 1.5,
        samples: 250,
        over: 22,
    };
    assert_eq!(
        l.to_string(),
        "p99 latency 160.0ms vs baseline p99 80.0ms × 1.5 (22 of 250 samples at or over 120.0ms over 5s)"
    );
    assert_eq!(serde_json::to_value(Role::Baseline).unwrap(), "baseline");
}
