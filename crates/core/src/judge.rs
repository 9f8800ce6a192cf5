//! What the leader decides from its members' windows: the aggregate verdict,
//! each member's own verdict, and whether to roll back, re-assert or restore.
//!
//! Members of [`Role::Baseline`] (guards on stable pods) are never judged as
//! canaries: their aggregate is the bar of the relative tests
//! ([`super::relative`]) and excuses a canary's absolute failure when it is
//! degraded too. Without them, judging is exactly as before.

use std::collections::{BTreeSet, HashMap};

use super::policy::{Breach, Policy, Thresholds, Verdict};
use super::relative::{self, Relative, RelativeBreach, Role};
use super::window::Summary;

/// One live member's latest window, as read from its member lease.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberSample {
    /// Pod name.
    pub pod: String,
    /// The member's canary revision.
    pub revision: Option<String>,
    /// Its window.
    pub summary: Summary,
    /// Canary, or a stable pod of the baseline.
    pub role: Role,
}

/// The result of judging one round of member windows.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// All members' windows added up.
    pub aggregate: Summary,
    /// The verdict on the aggregate (or `failing` when a member alone fails).
    pub verdict: Verdict,
    /// Consecutive failing checks of the aggregate.
    pub consecutive_failures: u32,
    /// The strongest sequential evidence of the round, aggregate or member
    /// (a fraction of the threshold: 1 fails).
    pub evidence: f64,
    /// Each member's own verdict, by pod.
    pub members: HashMap<String, Verdict>,
    /// Why the verdict is failing on an absolute limit: who (`aggregate` or
    /// a pod) and the numbers.
    pub breach: Option<(String, Breach)>,
    /// The baseline members' windows added up, when there are any.
    pub baseline: Option<Summary>,
    /// Why the verdict is failing against the baseline (set instead of `breach`).
    pub relative: Option<RelativeBreach>,
    /// Why an absolute failure was not blamed on the canary (the verdict is
    /// then `inconclusive`): the baseline was degraded too.
    pub degraded: Option<String>,
}

/// Keeps a failure count for the aggregate and for each member.
pub struct Judge {
    thresholds: Thresholds,
    per_member: bool,
    aggregate: Policy,
    members: HashMap<String, Policy>,
    relative: Relative,
    /// Consecutive failing relative checks.
    relative_failures: u32,
}

impl Judge {
    /// A judge with no history. With `per_member`, a member with enough
    /// traffic that fails alone makes the verdict `failing` too.
    pub fn new(thresholds: Thresholds, per_member: bool) -> Self {
        Self {
            aggregate: Policy::new(thresholds.clone()),
            thresholds,
            per_member,
            members: HashMap::new(),
            relative: Relative::default(),
            relative_failures: 0,
        }
    }

    /// The same judge, comparing the canary with its baseline by `relative`.
    pub fn with_relative(mut self, relative: Relative) -> Self {
        self.relative = relative;
        self
    }

    /// Judges one round; members no longer present are forgotten.
    pub fn judge(&mut self, all: &[MemberSample]) -> Judgement {
        let (samples, stable): (Vec<&MemberSample>, Vec<&MemberSample>) =
            all.iter().partition(|s| s.role == Role::Canary);
        let mut aggregate = Summary::empty(0);
        for s in &samples {
            aggregate.merge(&s.summary);
        }
        self.members
            .retain(|pod, _| samples.iter().any(|s| &s.pod == pod));
        let mut verdict = self.aggregate.observe(&aggregate);
        let mut breach = self
            .aggregate
            .last_breach()
            .filter(|_| verdict == Verdict::Failing)
            .map(|b| ("aggregate".to_string(), b.clone()));
        let mut evidence = self.thresholds.evidence(&aggregate);
        let mut members = HashMap::new();
        // Failing members' breaches, for the baseline to excuse or not.
        let mut failed = Vec::new();
        for s in &samples {
            if self.per_member {
                evidence = evidence.max(self.thresholds.evidence(&s.summary));
            }
            let policy = self
                .members
                .entry(s.pod.clone())
                .or_insert_with(|| Policy::new(self.thresholds.clone()));
            let v = policy.observe(&s.summary);
            members.insert(s.pod.clone(), v);
            if self.per_member && v == Verdict::Failing {
                if let Some(b) = policy.last_breach() {
                    failed.push((s.pod.clone(), b.clone()));
                }
                if breach.is_none() {
                    verdict = Verdict::Failing;
                    breach = failed.last().cloned();
                }
            }
        }
        let mut judgement = Judgement {
            aggregate,
            verdict,
            consecutive_failures: self.aggregate.consecutive_failures(),
            evidence,
            members,
            breach,
            baseline: None,
            relative: None,
            degraded: None,
        };
        if !stable.is_empty() {
            let mut baseline = Summary::empty(0);
            for s in &stable {
                baseline.merge(&s.summary);
            }
            self.against(&mut judgement, baseline, failed);
        }
        judgement
    }

    /// Adds the baseline's say to `j`: the relative tests, and which absolute
    /// failures (the aggregate's first, then `failed` members') it excuses.
    fn against(&mut self, j: &mut Judgement, baseline: Summary, failed: Vec<(String, Breach)>) {
        let check = relative::check(&j.aggregate, &baseline, &self.thresholds, &self.relative);
        if let Some(c) = &check {
            j.evidence = j.evidence.max(c.evidence);
            if c.breach.is_some() {
                self.relative_failures = self.relative_failures.saturating_add(1);
            } else {
                self.relative_failures = 0;
            }
        } else {
            self.relative_failures = 0;
        }
        // The baseline excuses absolute failures only when it has enough traffic to say so.
        if check.is_some() && j.verdict == Verdict::Failing {
            let aggregate = j
                .breach
                .iter()
                .filter(|(who, _)| who == "aggregate")
                .cloned();
            let mut first_excuse = None;
            let blamed = aggregate.chain(failed).find(|(_, b)| {
                match relative::degraded(b, &baseline, &self.thresholds) {
                    Some(why) => {
                        first_excuse.get_or_insert(why);
                        false
                    }
                    None => true,
                }
            });
            if blamed.is_none() && first_excuse.is_some() {
                j.verdict = Verdict::Inconclusive;
                j.degraded = first_excuse;
            }
            j.breach = blamed;
        }
        if self.relative_failures > 0 && self.relative_failures >= self.thresholds.failure_threshold
        {
            j.verdict = Verdict::Failing;
            j.relative = check.and_then(|c| c.breach);
        }
        j.baseline = Some(baseline);
    }

    /// Forgets every failure count (e.g. after a new revision or a rollback).
    pub fn reset(&mut self) {
        self.aggregate.reset();
        self.members.clear();
        self.relative_failures = 0;
    }
}

/// A rollback the VirtualService records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The revision that failed.
    pub revision: String,
    /// Whether the weights were already put back.
    pub restored: bool,
}

/// What the leader should do to the VirtualService this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Send the canary's traffic to stable.
    Rollback,
    /// The failed revision still runs: make sure the canary still gets nothing.
    Reassert,
    /// Every live member runs a new revision: put the recorded weights back.
    Restore,
}

/// Decides the action from the verdict, the live members' revisions and the
/// VirtualService's rollback record.
pub fn decide(
    verdict: Verdict,
    revisions: &BTreeSet<Option<String>>,
    recorded: Option<&Recorded>,
    restore_on_new_revision: bool,
) -> Action {
    if let Some(r) = recorded.filter(|r| !r.restored) {
        let failed_still_runs = revisions.contains(&Some(r.revision.clone()));
        if failed_still_runs {
            return Action::Reassert;
        }
        if !revisions.is_empty() {
            // Only new revisions are live: they get their trial.
            return if restore_on_new_revision {
                Action::Restore
            } else {
                Action::None
            };
        }
        // No live member at all: leave the record in force.
        return Action::None;
    }
    if verdict == Verdict::Failing {
        Action::Rollback
    } else {
        Action::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample(pod: &str, requests: u64, errors: u64) -> MemberSample {
        let mut summary = Summary::empty(30);
        summary.requests = requests;
        summary.errors = errors;
        for _ in 0..requests.min(10) {
            summary.latency.record(Duration::from_millis(5));
        }
        MemberSample {
            pod: pod.into(),
            revision: Some("r1".into()),
            summary,
            role: Role::Canary,
        }
    }

    fn judge(per_member: bool) -> Judge {
        Judge::new(
            Thresholds {
                failure_threshold: 2,
                ..Thresholds::default()
            },
            per_member,
        )
    }

    #[test]
    fn aggregate_fails_after_consecutive_checks() {
        let mut j = judge(true);
        let round = [sample("a", 50, 10), sample("b", 50, 10)];
        assert_eq!(j.judge(&round).verdict, Verdict::Healthy);
        let second = j.judge(&round);
        assert_eq!(second.verdict, Verdict::Failing);
        assert_eq!(second.aggregate.requests, 100);
        assert_eq!(second.breach.unwrap().0, "aggregate");
    }

    #[test]
    fn one_bad_member_fails_alone_only_with_per_member() {
        // a: 30% errors on 40 requests; b: healthy and busy, so the aggregate passes.
        let round = [sample("a", 40, 12), sample("b", 400, 0)];
        let mut with = judge(true);
        with.judge(&round);
        let j = with.judge(&round);
        assert_eq!(j.verdict, Verdict::Failing);
        assert_eq!(j.breach.unwrap().0, "a");
        assert_eq!(j.members["b"], Verdict::Healthy);

        let mut without = judge(false);
        without.judge(&round);
        assert_eq!(without.judge(&round).verdict, Verdict::Healthy);
    }

    #[test]
    fn members_that_leave_are_forgotten() {
        let mut j = judge(true);
        j.judge(&[sample("a", 40, 12)]);
        j.judge(&[sample("b", 40, 0)]);
        // "a" comes back: its failure count starts over.
        let back = j.judge(&[sample("a", 40, 12)]);
        assert_eq!(back.members["a"], Verdict::Healthy);
    }

    #[test]
    fn low_traffic_members_never_fail_alone() {
        let mut j = judge(true);
        for _ in 0..5 {
            let r = j.judge(&[sample("a", 5, 5), sample("b", 0, 0)]);
            assert_eq!(r.verdict, Verdict::Inconclusive);
        }
    }

    fn revs(list: &[&str]) -> BTreeSet<Option<String>> {
        list.iter().map(|r| Some(r.to_string())).collect()
    }

    #[test]
    fn decisions() {
        let rec = Recorded {
            revision: "bad".into(),
            restored: false,
        };
        let done = Recorded {
            restored: true,
            ..rec.clone()
        };
        assert_eq!(
            decide(Verdict::Healthy, &revs(&["r"]), None, true),
            Action::None
        );
        assert_eq!(
            decide(Verdict::Failing, &revs(&["r"]), None, true),
            Action::Rollback
        );
        // Sticky while the failed revision runs, whatever the verdict.
        assert_eq!(
            decide(Verdict::Healthy, &revs(&["bad"]), Some(&rec), true),
            Action::Reassert
        );
        assert_eq!(
            decide(Verdict::Healthy, &revs(&["bad", "new"]), Some(&rec), true),
            Action::Reassert
        );
        assert_eq!(
            decide(Verdict::Healthy, &revs(&["new"]), Some(&rec), true),
            Action::Restore
        );
        assert_eq!(
            decide(Verdict::Healthy, &revs(&["new"]), Some(&rec), false),
            Action::None
        );
        assert_eq!(
            decide(Verdict::Healthy, &revs(&[]), Some(&rec), true),
            Action::None
        );
        // A restored record no longer binds: a failing new revision is rolled back again.
        assert_eq!(
            decide(Verdict::Failing, &revs(&["bad"]), Some(&done), true),
            Action::Rollback
        );
    }
}
