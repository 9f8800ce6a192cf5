use super::*;
use crate::policy::Thresholds;
use crate::relative::Role;
use crate::window::Summary;

const LOOK_EVERY: Duration = Duration::from_secs(2);

fn leader() -> Leader {
    Leader::new(
        Settings {
            own_revision: Some("r1".into()),
            restore_on_new_revision: true,
            failure_threshold: 1,
            look_every: LOOK_EVERY,
        },
        Judge::new(Thresholds::default(), true),
    )
}

fn member(pod: &str, revision: &str, requests: u64, errors: u64) -> MemberSample {
    let mut summary = Summary::empty(30);
    summary.requests = requests;
    summary.errors = errors;
    MemberSample {
        pod: pod.into(),
        revision: Some(revision.into()),
        summary,
        role: Role::Canary,
    }
}

fn failing() -> Vec<MemberSample> {
    vec![member("a", "r1", 100, 50), member("b", "r1", 100, 50)]
}

fn healthy(revision: &str) -> Vec<MemberSample> {
    vec![member("a", revision, 100, 0), member("b", revision, 100, 0)]
}

fn recorded(revision: &str) -> Option<Recorded> {
    Some(Recorded {
        revision: revision.into(),
        restored: false,
    })
}

#[test]
fn a_failing_group_is_rolled_back_naming_our_revision_and_the_numbers() {
    let mut l = leader();
    let round = l.round(&failing(), true, true);
    assert_eq!(round.verdict, Verdict::Failing);
    let Some(Write::Rollback {
        reason,
        failed_revision,
        reassert,
    }) = round.write
    else {
        panic!("expected a rollback, got {:?}", round.write);
    };
    assert_eq!(failed_revision, "r1");
    assert!(!reassert);
    assert!(reason.contains("100 of 200"), "{reason}");
    assert!(
        reason.contains("all members") && reason.ends_with("1 consecutive failing checks)"),
        "{reason}"
    );

    let now = Instant::now();
    assert!(l.look_due(now));
    assert_eq!(
        l.rolled_back("r1", RollbackOutcome::Applied),
        Announce::Rollback
    );
    assert_eq!(l.recorded(), recorded("r1").as_ref());
    // What we wrote is read back at once, not at the next scheduled look.
    assert!(l.look_due(now));
}

#[test]
fn no_write_while_not_allowed_and_nothing_written_records_nothing() {
    let mut l = leader();
    assert_eq!(l.round(&failing(), true, false).write, None);
    assert_eq!(
        l.rolled_back("r1", RollbackOutcome::NotWritten),
        Announce::Nothing
    );
    assert_eq!(l.recorded(), None);
}

#[test]
fn the_failed_revision_still_running_is_reasserted_only_on_rounds_that_looked() {
    let mut l = leader();
    // Another leader rolled r0 back; r0 still runs next to a healthy r1.
    l.record_read(recorded("r0"));
    let mut samples = healthy("r1");
    samples.push(member("c", "r0", 0, 0));
    let round = l.round(&samples, false, true);
    assert_eq!(round.verdict, Verdict::RolledBack);
    assert_eq!(
        round.write, None,
        "re-asserts wait for a round that read the record"
    );
    match l.round(&samples, true, true).write {
        Some(Write::Rollback {
            reason,
            failed_revision,
            reassert: true,
        }) => {
            assert_eq!(failed_revision, "r0", "the record's revision, not ours");
            assert_eq!(
                reason,
                "rollback re-asserted: the failed revision still runs"
            );
        }
        other => panic!("expected a re-assert, got {other:?}"),
    }
}

#[test]
fn only_new_revisions_get_the_weights_back_and_a_fresh_judge() {
    let mut l = leader();
    l.round(&failing(), true, true);
    l.rolled_back("r1", RollbackOutcome::Applied);
    let round = l.round(&healthy("r2"), true, true);
    assert_eq!(round.write, Some(Write::Restore));
    l.restore_done(RestoreOutcome::Restored);
    assert_eq!(l.recorded(), None);
    // The old revision's failing checks are forgotten: one healthy round reads healthy.
    let round = l.round(&healthy("r2"), true, true);
    assert_eq!((round.verdict, round.write), (Verdict::Healthy, None));
    assert_eq!(round.judgement.consecutive_failures, 0);
}

#[test]
fn restoring_is_optional_and_a_failed_restore_keeps_the_record() {
    let mut l = leader();
    l.record_read(recorded("r1"));
    l.restore_done(RestoreOutcome::Unchanged);
    assert_eq!(l.recorded(), recorded("r1").as_ref());
    l.settings.restore_on_new_revision = false;
    assert_eq!(l.round(&healthy("r2"), true, true).write, None);
    l.restore_done(RestoreOutcome::NothingToRestore);
    assert_eq!(l.recorded(), None);
}

#[test]
fn a_patch_whose_answer_was_lost_is_announced_once_when_found_applied() {
    let mut l = leader();
    assert_eq!(
        l.rolled_back(
            "r1",
            RollbackOutcome::Failed {
                maybe_applied: true
            }
        ),
        Announce::Nothing
    );
    assert_eq!(
        l.rolled_back("r1", RollbackOutcome::AlreadyRolledBack),
        Announce::EarlierAttempt
    );
    assert_eq!(l.recorded(), recorded("r1").as_ref());
    assert_eq!(
        l.rolled_back("r1", RollbackOutcome::AlreadyRolledBack),
        Announce::Nothing
    );
    // A failure that surely did not land leaves nothing to announce.
    let mut l = leader();
    l.rolled_back(
        "r1",
        RollbackOutcome::Failed {
            maybe_applied: false,
        },
    );
    assert_eq!(
        l.rolled_back("r1", RollbackOutcome::AlreadyRolledBack),
        Announce::Nothing
    );
}

#[test]
fn the_record_is_read_every_look_interval_and_sooner_when_asked() {
    let mut l = leader();
    let t0 = Instant::now();
    assert!(l.look_due(t0), "a new leader reads the record first");
    assert!(!l.look_due(t0 + LOOK_EVERY / 2));
    assert!(l.look_due(t0 + LOOK_EVERY));
    l.look_not_before(t0 + LOOK_EVERY * 10);
    assert!(!l.look_due(t0 + LOOK_EVERY * 5));
    l.look_soon();
    assert!(l.look_due(t0 + LOOK_EVERY * 5));
}
