//! The leader's decisions between its API calls: what it remembers of the
//! VirtualService, when it reads it, which write a round calls for, with what
//! reason and failed revision, and what each write's outcome changes.
//!
//! Design rule: a state machine the runtime drives and nothing else. The runtime
//! reports what it saw (the members judged, the record read, the outcome of a
//! write) with the time it saw it, and executes the [`Write`] it gets back; no I/O
//! and no clock reads here, so every branch is a unit test.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::judge::{decide, Action, Judge, Judgement, MemberSample, Recorded};
use crate::policy::Verdict;
use crate::relative::Role;

/// How the leader was configured.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The revision this guard's own pod runs: the one a first rollback names.
    pub own_revision: Option<String>,
    /// Put the recorded weights back once only new revisions run.
    pub restore_on_new_revision: bool,
    /// `--failure-threshold`, quoted in the reason.
    pub failure_threshold: u32,
    /// How often the record is read when nothing prompts it sooner (and so how
    /// often a rollback is re-asserted at most).
    pub look_every: Duration,
}

/// A write to the VirtualService that the round calls for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Send the canary's traffic to stable (again, when `reassert`).
    Rollback {
        /// Why, with the numbers: goes into the record, the Event and the log.
        reason: String,
        /// The revision the record names as failed.
        failed_revision: String,
        /// The failed revision still runs and someone gave it weight back.
        reassert: bool,
    },
    /// Only new revisions run: put the recorded weights back.
    Restore,
}

/// What became of a [`Write::Rollback`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollbackOutcome {
    /// The patch was applied.
    Applied,
    /// The canary already had no weight.
    AlreadyRolledBack,
    /// Nothing was written: `--dry-run`, or no route could be reverted.
    NotWritten,
    /// The call failed; `maybe_applied` when its answer never came.
    Failed {
        /// A patch whose answer was lost may still have landed.
        maybe_applied: bool,
    },
}

/// What a rollback outcome asks the runtime to announce (count, log, Events, notify).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announce {
    /// Nothing new happened.
    Nothing,
    /// Our write changed the weights now.
    Rollback,
    /// An earlier attempt whose answer was lost had landed: say so once.
    EarlierAttempt,
}

/// What the outcome of a [`Write::Restore`] was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// The recorded weights are back: the new revision gets its trial.
    Restored,
    /// No record, or one already restored.
    NothingToRestore,
    /// `--dry-run` or a failed call: nothing changed.
    Unchanged,
}

/// One judged round.
#[derive(Debug)]
pub struct Round {
    /// The group's judgement.
    pub judgement: Judgement,
    /// The verdict to show: `rolled_back` while a rollback is held in force.
    pub verdict: Verdict,
    /// The write to attempt, if any and if allowed.
    pub write: Option<Write>,
}

/// The leader's memory between rounds.
pub struct Leader {
    settings: Settings,
    judge: Judge,
    recorded: Option<Recorded>,
    /// A rollback patch was sent but its answer never came.
    unconfirmed: bool,
    /// No record read before this; `None`: read at the next chance.
    next_look: Option<Instant>,
}

impl Leader {
    /// A leader that has not read the record yet and judges with `judge`.
    pub fn new(settings: Settings, judge: Judge) -> Self {
        Self {
            settings,
            judge,
            recorded: None,
            unconfirmed: false,
            next_look: None,
        }
    }

    /// Whether this round reads the record; if so, the next look is scheduled.
    pub fn look_due(&mut self, now: Instant) -> bool {
        if self.next_look.is_some_and(|at| now < at) {
            return false;
        }
        self.next_look = Some(now + self.settings.look_every);
        true
    }

    /// Read the record at the next chance (after our own write, or when the API answers again).
    pub fn look_soon(&mut self) {
        self.next_look = None;
    }

    /// Read nothing before `at` (a backoff after a failed call).
    pub fn look_not_before(&mut self, at: Instant) {
        self.next_look = Some(at);
    }

    /// What the VirtualService records, as just read.
    pub fn record_read(&mut self, recorded: Option<Recorded>) {
        self.recorded = recorded;
    }

    /// The rollback in force, as last read or written.
    pub fn recorded(&self) -> Option<&Recorded> {
        self.recorded.as_ref()
    }

    /// Judges the members and picks the round's write. `looked`: the record was read
    /// this round (re-asserts happen only then, so they are rate-limited); `may_write`:
    /// no backoff pending, every call of the round so far succeeded, and we still lead.
    pub fn round(&mut self, samples: &[MemberSample], looked: bool, may_write: bool) -> Round {
        let judgement = self.judge.judge(samples);
        // Baseline members run the stable revision: they say nothing of the canary's.
        let revisions: BTreeSet<Option<String>> = samples
            .iter()
            .filter(|s| s.role == Role::Canary)
            .map(|s| s.revision.clone())
            .collect();
        let action = decide(
            judgement.verdict,
            &revisions,
            self.recorded.as_ref(),
            self.settings.restore_on_new_revision,
        );
        let verdict = if action == Action::Reassert {
            Verdict::RolledBack
        } else {
            judgement.verdict
        };
        let write = match action {
            Action::None => None,
            _ if !may_write => None,
            Action::Reassert if !looked => None,
            Action::Rollback | Action::Reassert => Some(Write::Rollback {
                reason: self.reason(&judgement),
                failed_revision: match (&action, &self.recorded) {
                    (Action::Reassert, Some(r)) => r.revision.clone(),
                    _ => self.settings.own_revision.clone().unwrap_or_default(),
                },
                reassert: action == Action::Reassert,
            }),
            Action::Restore => Some(Write::Restore),
        };
        Round {
            judgement,
            verdict,
            write,
        }
    }

    /// Records what a rollback of `failed_revision` came to, and what to announce.
    pub fn rolled_back(&mut self, failed_revision: &str, outcome: RollbackOutcome) -> Announce {
        let record = |revision: &str| Recorded {
            revision: revision.to_owned(),
            restored: false,
        };
        match outcome {
            RollbackOutcome::Applied => {
                self.unconfirmed = false;
                self.recorded = Some(record(failed_revision));
                // Read back what we wrote at once: another writer may be racing us.
                self.next_look = None;
                Announce::Rollback
            }
            RollbackOutcome::AlreadyRolledBack => {
                if self.recorded.is_none() {
                    self.recorded = Some(record(failed_revision));
                }
                if std::mem::take(&mut self.unconfirmed) {
                    Announce::EarlierAttempt
                } else {
                    Announce::Nothing
                }
            }
            RollbackOutcome::NotWritten => Announce::Nothing,
            RollbackOutcome::Failed { maybe_applied } => {
                self.unconfirmed |= maybe_applied;
                Announce::Nothing
            }
        }
    }

    /// Records what a restore came to. After a restore the new revision is judged afresh.
    pub fn restore_done(&mut self, outcome: RestoreOutcome) {
        match outcome {
            RestoreOutcome::Restored => {
                self.recorded = None;
                self.judge.reset();
            }
            RestoreOutcome::NothingToRestore => self.recorded = None,
            RestoreOutcome::Unchanged => {}
        }
    }

    /// The rollback's reason: the breach with its numbers and who crossed.
    fn reason(&self, j: &Judgement) -> String {
        if let Some(r) = &j.relative {
            return format!(
                "{r} (all members against the baseline; {} consecutive failing checks)",
                self.settings.failure_threshold
            );
        }
        match &j.breach {
            Some((who, b)) => format!(
                "{b} ({} over {}s; {} consecutive failing checks)",
                if who == "aggregate" {
                    "all members".to_string()
                } else {
                    format!("member {who}")
                },
                b.seconds,
                self.settings.failure_threshold
            ),
            None => "rollback re-asserted: the failed revision still runs".to_string(),
        }
    }
}

#[cfg(test)]
mod tests;
