//! The leader's publish requests: while the canary gathers evidence against its
//! baseline and another canary member's lease is an interval old or more, the
//! leader asks the group's candidates to write their windows now (through the
//! election lease, see [`crate::cluster::election::requests`]).
//!
//! Design rule: a request costs one early leader-lease renewal and up to one write
//! per member, so it is made only when it can change the verdict, at most once per
//! retry period. The relative tests see only what members wrote, and a member
//! cannot tell from its own window that it fails against a baseline it never sees.

use std::time::Duration;

use tokio::time::Instant;

use crate::domain::judge::{Judgement, MemberSample};
use crate::domain::policy::{Verdict, SUSPECT};
use crate::domain::relative::Role;

/// Whether the leader asks now: baseline members take part, the evidence builds but
/// has not failed, some canary member's window is `interval` old or more, and the
/// last request (if any) is `every` old or more.
pub(super) fn due(
    j: &Judgement,
    stale_member: bool,
    last: Option<Duration>,
    every: Duration,
) -> bool {
    j.baseline.is_some()
        && j.evidence >= SUSPECT
        && j.verdict != Verdict::Failing
        && stale_member
        && last.is_none_or(|since| since >= every)
}

/// Whether a canary member's window, as the leader holds it, is `interval` old or
/// more. An idle member stays stale, so while evidence builds the leader may ask every
/// retry period for nothing: one early renewal each, which bounds the cost.
pub(super) fn stale_member(
    samples: &[MemberSample],
    ages: &[(String, Duration)],
    interval: Duration,
) -> bool {
    samples
        .iter()
        .filter(|s| s.role == Role::Canary)
        .filter_map(|s| ages.iter().find(|(pod, _)| *pod == s.pod))
        .any(|(_, age)| *age >= interval)
}

/// Asks when [`due`]: moves the counter the elector carries, and notes when.
pub(super) fn maybe(
    asks: &tokio::sync::watch::Sender<u64>,
    asked_at: &mut Option<Instant>,
    j: &Judgement,
    stale_member: bool,
    every: Duration,
    now: Instant,
) {
    let last = asked_at.map(|at| now.saturating_duration_since(at));
    if due(j, stale_member, last, every) {
        *asked_at = Some(now);
        asks.send_modify(|n| *n += 1);
        tracing::debug!(
            evidence = j.evidence,
            "asked the group's members to publish"
        );
    }
}

#[cfg(test)]
mod tests;
