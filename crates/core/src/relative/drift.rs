//! When a member should publish before its heartbeat for the relative
//! judgement: its recent seconds are significantly worse than the window it
//! last published.
//!
//! Design rule: a member knows nothing of the baseline, so it cannot tell
//! whether it fails relatively; but the leader can only judge what it was
//! sent, and a canary at 4% against a 0.5% baseline crosses no absolute
//! trigger, so without this its members' windows reach the leader up to a
//! heartbeat (10 s) late. The same holds for baseline members whose stable
//! pods degrade below the absolute limits: their fresh seconds raise the bar.
//! A healthy member writes no more than before: the tests ask
//! [`DRIFT_CONFIDENCE`], and the comparison is with the member's own past.

use super::super::binomial::significantly_above;
use super::super::policy::Thresholds;
use super::super::window::Summary;

/// How sure a member must be that its recent part got worse before it
/// writes early: one needless write in 10,000 looks of a steady member.
pub const DRIFT_CONFIDENCE: f64 = 0.9999;

/// Whether `now`'s recent part has significantly more errors, or more
/// samples over `last`'s latency quantile, than `last` (the window the member
/// last published) had.
pub fn drifted(last: &Summary, now: &Summary, t: &Thresholds) -> bool {
    let Some(recent) = now.recent.as_deref() else {
        return false;
    };
    // One more error than seen, so a window without errors does not make any error news.
    let ratio = (last.errors + 1) as f64 / (last.requests + 1) as f64;
    let errors = significantly_above(recent.errors, recent.requests, ratio, DRIFT_CONFIDENCE);
    let q = t.latency_quantile;
    let slower = last.latency_quantile(q).is_some_and(|bar| {
        let over = recent.latency.count_from(bar);
        significantly_above(over, recent.latency.total(), 1.0 - q, DRIFT_CONFIDENCE)
    });
    errors || slower
}
