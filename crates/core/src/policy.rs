//! The verdict: pure code that judges a window summary against thresholds.
//!
//! Design rule: two tests share the false-alarm budget that `confidence`
//! sets. The sequential test (a CUSUM over the window's seconds, see
//! [`super::sequential`]) catches strong faults within a few requests; the
//! fixed-sample binomial tests of the whole window and its recent part catch
//! small excesses over the limit that the sequential test is not tuned for.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::binomial::significantly_above;
use super::sequential::{self, Counts, Evidence, Test};
use super::window::Summary;

/// The default [`Thresholds::confidence`]: one unlucky check in 100,000.
pub const DEFAULT_CONFIDENCE: f64 = 0.99999;

/// Sequential evidence (a fraction of the threshold, see
/// [`Thresholds::evidence`]) from which guards look, publish and judge at
/// the fast pace: the evidence may cross any moment, so waiting for the next
/// interval would only add delay.
pub const SUSPECT: f64 = 0.25;

/// Looks per `--interval` at the fast pace (and of the local check always).
pub const FAST_LOOKS: u32 = 10;

/// What a canary must stay within.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// Highest acceptable errors / requests; a ratio equal to it passes.
    pub max_error_ratio: f64,
    /// Highest acceptable latency at `latency_quantile`; equal passes.
    pub max_latency: Duration,
    /// The quantile the latency limit applies to, e.g. 0.99.
    pub latency_quantile: f64,
    /// Fewer requests than this in the window make a check inconclusive.
    pub min_requests: u64,
    /// Consecutive failing checks before the verdict is `failing`.
    pub failure_threshold: u32,
    /// How sure a check must be that a limit is crossed before it fails
    /// (0.5 ≤ c < 1). For a canary within its limits, `1 − confidence`
    /// bounds both the chance that one check of the window fails by bad luck
    /// and the chance that any one request starts a false alarm of the
    /// sequential test. At 0.5 a window check fails as soon as the window's
    /// own ratio or quantile is over the limit.
    pub confidence: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            max_error_ratio: 0.05,
            max_latency: Duration::from_millis(500),
            latency_quantile: 0.99,
            min_requests: 20,
            failure_threshold: 1,
            confidence: DEFAULT_CONFIDENCE,
        }
    }
}

/// Why a single check failed: the numbers that crossed a threshold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Breach {
    /// Length of the judged window (the whole window or its recent part), in seconds.
    pub seconds: u64,
    /// Requests in the judged window.
    pub requests: u64,
    /// Errors in the judged window.
    pub errors: u64,
    /// Error ratio, when it was above the limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<f64>,
    /// Limit on the error ratio.
    pub max_error_ratio: f64,
    /// Latency at the quantile, when it was above the limit (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Limit on the latency (ms).
    pub max_latency_ms: f64,
    /// The quantile the latency was taken at.
    pub quantile: f64,
    /// Latency samples in the judged window.
    pub latency_samples: u64,
    /// Of those, samples over the latency limit.
    pub over_limit: u64,
    /// Set when the sequential test failed: its log-likelihood ratio, which
    /// reached the threshold over the judged seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<f64>,
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(r) = self.error_ratio {
            parts.push(format!(
                "error ratio {:.4} > {} ({} of {} requests)",
                r, self.max_error_ratio, self.errors, self.requests
            ));
        }
        if let Some(l) = self.latency_ms {
            parts.push(format!(
                "p{} latency {:.1}ms > {}ms ({} of {} samples over)",
                quantile_label(self.quantile),
                l,
                self.max_latency_ms,
                self.over_limit,
                self.latency_samples
            ));
        }
        if let Some(e) = self.evidence {
            parts.push(format!(
                "sequential evidence {e:.1} over the last {}s",
                self.seconds
            ));
        }
        f.write_str(&parts.join(", "))
    }
}

/// `0.99` → `"99"`, `0.995` → `"99.5"`.
pub fn quantile_label(q: f64) -> String {
    let pct = format!("{:.3}", q * 100.0);
    pct.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The result of one check of one window.
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// Within every threshold.
    Healthy,
    /// Too few requests to judge; never counts as a failure.
    Inconclusive,
    /// At least one threshold crossed.
    Failing(Breach),
}

impl Thresholds {
    /// Judges one window summary.
    ///
    /// A limit counts as crossed only when the window shows it beyond
    /// reasonable doubt for its size: the errors must be significantly more
    /// than `max_error_ratio` of the requests, and the samples over
    /// `max_latency` significantly more than `1 − latency_quantile` of the
    /// samples (one-sided binomial tests at `confidence`). With few requests a
    /// p99 is just the slowest one; counting how many are over the limit asks
    /// what the p99 question means without needing a hundred samples.
    pub fn check(&self, s: &Summary) -> Check {
        if s.requests < self.min_requests.max(1) {
            return Check::Inconclusive;
        }
        // Two looks (the whole window and its recent part) share the false-positive budget.
        let confidence = if self.confidence <= 0.5 {
            self.confidence
        } else {
            1.0 - (1.0 - self.confidence) / 2.0
        };
        // The recent part needs no minimum of its own: the test asks more of fewer requests.
        match self
            .sequential_breach(s)
            .or_else(|| self.breach(s, confidence))
            .or_else(|| s.recent.as_deref().and_then(|r| self.breach(r, confidence)))
        {
            Some(b) => Check::Failing(b),
            None => Check::Healthy,
        }
    }

    /// The CUSUM threshold: the two limits (errors, latency) share `1 − confidence`.
    pub fn sequential_threshold(&self) -> f64 {
        sequential::threshold((1.0 - self.confidence) / 2.0)
    }

    /// How far the sequential test has gone towards failing, as a fraction
    /// of its threshold (1 or more fails): the stronger of the two limits.
    pub fn evidence(&self, s: &Summary) -> f64 {
        let (errors, latency) = self.sequential(&slot_series(s, self.max_latency));
        errors.llr.max(latency.llr) / self.sequential_threshold()
    }

    /// The sequential evidence on errors and on latency over `series` (see [`slot_series`]).
    fn sequential(&self, series: &[[u64; 4]]) -> (Evidence, Evidence) {
        let errors = Test::new(self.max_error_ratio).strongest(series.iter().map(|c| Counts {
            trials: c[0],
            events: c[1],
        }));
        let latency =
            Test::new(1.0 - self.latency_quantile).strongest(series.iter().map(|c| Counts {
                trials: c[2],
                events: c[3],
            }));
        (errors, latency)
    }

    fn sequential_breach(&self, s: &Summary) -> Option<Breach> {
        let h = self.sequential_threshold();
        let series = slot_series(s, self.max_latency);
        let (errors, latency) = self.sequential(&series);
        let (by_errors, by_latency) = (errors.llr >= h, latency.llr >= h);
        if !by_errors && !by_latency {
            return None;
        }
        let strongest = if errors.llr >= latency.llr {
            errors
        } else {
            latency
        };
        let judged = &series[series.len() - strongest.slots..];
        let sum = |i: usize| judged.iter().map(|c| c[i]).sum::<u64>();
        let (requests, errors_n) = (sum(0), sum(1));
        // Without seconds, the two parts are the window before its recent part and the recent part.
        let seconds = match (s.slots.is_empty(), s.recent.as_deref(), judged.len()) {
            (false, _, n) => n as u64,
            (true, Some(r), 1) => r.seconds,
            (true, _, _) => s.seconds,
        };
        Some(Breach {
            seconds,
            requests,
            errors: errors_n,
            error_ratio: by_errors.then(|| errors_n as f64 / requests.max(1) as f64),
            max_error_ratio: self.max_error_ratio,
            latency_ms: by_latency
                .then(|| {
                    s.recent
                        .as_deref()
                        .unwrap_or(s)
                        .latency_quantile(self.latency_quantile)
                })
                .flatten()
                .map(|l| l.as_secs_f64() * 1000.0),
            max_latency_ms: self.max_latency.as_secs_f64() * 1000.0,
            quantile: self.latency_quantile,
            latency_samples: sum(2),
            over_limit: sum(3),
            evidence: Some(strongest.llr),
        })
    }

    fn breach(&self, s: &Summary, confidence: f64) -> Option<Breach> {
        let ratio_breach =
            significantly_above(s.errors, s.requests, self.max_error_ratio, confidence);
        let samples = s.latency.total();
        let over_limit = s.latency.count_from(self.max_latency);
        let latency_breach =
            significantly_above(over_limit, samples, 1.0 - self.latency_quantile, confidence);
        (ratio_breach || latency_breach).then(|| Breach {
            seconds: s.seconds,
            requests: s.requests,
            errors: s.errors,
            error_ratio: ratio_breach.then(|| s.error_ratio()),
            max_error_ratio: self.max_error_ratio,
            latency_ms: latency_breach
                .then(|| s.latency_quantile(self.latency_quantile))
                .flatten()
                .map(|l| l.as_secs_f64() * 1000.0),
            max_latency_ms: self.max_latency.as_secs_f64() * 1000.0,
            quantile: self.latency_quantile,
            latency_samples: samples,
            over_limit,
            evidence: None,
        })
    }
}

/// `s`'s seconds for the sequential test. A summary without them (from a
/// guard that predates them) reads as two slots: the window before its
/// recent part, and the recent part.
fn slot_series(s: &Summary, limit: Duration) -> Cow<'_, [[u64; 4]]> {
    if !s.slots.is_empty() {
        return Cow::Borrowed(&s.slots);
    }
    let counts = |x: &Summary| {
        [
            x.requests,
            x.errors,
            x.latency.total(),
            x.latency.count_from(limit),
        ]
    };
    let whole = counts(s);
    match s.recent.as_deref() {
        Some(r) => {
            let recent = counts(r);
            let before = std::array::from_fn(|i| whole[i].saturating_sub(recent[i]));
            Cow::Owned(vec![before, recent])
        }
        None => Cow::Owned(vec![whole]),
    }
}

/// The guard's overall judgement of the canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Enough traffic and within thresholds (or not yet failing long enough).
    Healthy,
    /// Not enough traffic to judge.
    Inconclusive,
    /// `failure_threshold` consecutive failing checks.
    Failing,
    /// Traffic was sent back to stable for this canary revision.
    RolledBack,
}

impl Verdict {
    /// Every verdict, in the order metrics list them.
    pub const ALL: [Verdict; 4] = [
        Verdict::Healthy,
        Verdict::Inconclusive,
        Verdict::Failing,
        Verdict::RolledBack,
    ];

    /// The name used in `/v1/state` and in the `state` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Failing => "failing",
            Verdict::RolledBack => "rolled_back",
        }
    }
}

/// Consecutive-failure state over successive checks.
#[derive(Clone, Debug)]
pub struct Policy {
    thresholds: Thresholds,
    consecutive_failures: u32,
    last_breach: Option<Breach>,
    verdict: Verdict,
}

impl Policy {
    /// A policy that has seen no checks yet (verdict `inconclusive`).
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            consecutive_failures: 0,
            last_breach: None,
            verdict: Verdict::Inconclusive,
        }
    }

    /// The thresholds in force.
    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Judges the next window and returns the resulting verdict.
    ///
    /// A failing check adds one to the count; a healthy or inconclusive one
    /// resets it, so only an unbroken run of failures makes the verdict
    /// `failing`. Once rolled back, the verdict stays until [`Policy::reset`].
    pub fn observe(&mut self, s: &Summary) -> Verdict {
        let check = self.thresholds.check(s);
        match &check {
            Check::Failing(b) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.last_breach = Some(b.clone());
            }
            Check::Healthy | Check::Inconclusive => {
                self.consecutive_failures = 0;
                self.last_breach = None;
            }
        }
        if self.verdict != Verdict::RolledBack {
            self.verdict = if self.consecutive_failures >= self.thresholds.failure_threshold {
                Verdict::Failing
            } else if check == Check::Inconclusive {
                Verdict::Inconclusive
            } else {
                Verdict::Healthy
            };
        }
        self.verdict
    }

    /// The current verdict.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Failing checks in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The numbers of the latest failing check, while the failure run lasts.
    pub fn last_breach(&self) -> Option<&Breach> {
        self.last_breach.as_ref()
    }

    /// Records that traffic was sent back to stable; the verdict sticks.
    pub fn mark_rolled_back(&mut self) {
        self.verdict = Verdict::RolledBack;
    }

    /// Starts over, e.g. for a new canary revision.
    pub fn reset(&mut self) {
        self.consecutive_failures = 0;
        self.last_breach = None;
        self.verdict = Verdict::Inconclusive;
    }
}

#[cfg(test)]
mod tests {
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
}
