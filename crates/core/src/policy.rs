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
        let confidence = self.look_confidence();
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

    /// The confidence of each of a window test's two looks (the whole window
    /// and its recent part), which share the false-positive budget.
    pub(crate) fn look_confidence(&self) -> f64 {
        if self.confidence <= 0.5 {
            self.confidence
        } else {
            1.0 - (1.0 - self.confidence) / 2.0
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
pub(crate) fn slot_series(s: &Summary, limit: Duration) -> Cow<'_, [[u64; 4]]> {
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
mod tests;
