use std::collections::HashMap;

use super::*;
use crate::domain::window::Summary;

fn judgement(evidence: f64, verdict: Verdict, baseline: bool) -> Judgement {
    Judgement {
        aggregate: Summary::empty(30),
        verdict,
        consecutive_failures: 0,
        evidence,
        members: HashMap::new(),
        breach: None,
        baseline: baseline.then(|| Summary::empty(32)),
        relative: None,
        degraded: None,
    }
}

const EVERY: Duration = Duration::from_secs(2);

#[test]
fn asks_while_evidence_builds_against_the_baseline() {
    let building = judgement(SUSPECT, Verdict::Healthy, true);
    assert!(due(&building, true, None, EVERY));
    assert!(due(&building, true, Some(EVERY), EVERY));
    // Not again within a retry period.
    assert!(!due(&building, true, Some(EVERY / 2), EVERY));
    // Nothing to gain: every canary member wrote within the interval.
    assert!(!due(&building, false, None, EVERY));
}

#[test]
fn never_asks_without_a_baseline_evidence_or_once_failing() {
    let quiet = judgement(SUSPECT / 2.0, Verdict::Healthy, true);
    assert!(!due(&quiet, true, None, EVERY));
    // Members' own triggers serve the absolute limits.
    let absolute = judgement(0.9, Verdict::Healthy, false);
    assert!(!due(&absolute, true, None, EVERY));
    // The verdict is in: the write, not more evidence, is what is needed.
    let failing = judgement(1.2, Verdict::Failing, true);
    assert!(!due(&failing, true, None, EVERY));
}

#[test]
fn a_member_is_stale_once_its_window_is_an_interval_old() {
    let sample = |pod: &str, role| MemberSample {
        pod: pod.into(),
        revision: None,
        summary: Summary::empty(30),
        role,
    };
    let samples = [
        sample("canary-a", Role::Canary),
        sample("stable-a", Role::Baseline),
        sample("leader", Role::Canary),
    ];
    let ages = |canary: u64, stable: u64| {
        vec![
            ("canary-a".to_string(), Duration::from_millis(canary)),
            ("stable-a".to_string(), Duration::from_millis(stable)),
            ("leader".to_string(), Duration::ZERO),
        ]
    };
    let interval = Duration::from_secs(1);
    assert!(stale_member(&samples, &ages(1000, 0), interval));
    assert!(!stale_member(&samples, &ages(999, 0), interval));
    // Baseline members are not asked: they run no elector and read no request.
    assert!(!stale_member(&samples, &ages(0, 9000), interval));
}

#[tokio::test(start_paused = true)]
async fn each_request_moves_the_counter_once() {
    let (tx, rx) = tokio::sync::watch::channel(0);
    let mut asked_at = None;
    let building = judgement(SUSPECT, Verdict::Healthy, true);
    let start = Instant::now();
    maybe(&tx, &mut asked_at, &building, true, EVERY, start);
    maybe(
        &tx,
        &mut asked_at,
        &building,
        true,
        EVERY,
        start + EVERY / 2,
    );
    assert_eq!(*rx.borrow(), 1);
    maybe(&tx, &mut asked_at, &building, true, EVERY, start + EVERY);
    assert_eq!(*rx.borrow(), 2);
    assert_eq!(asked_at, Some(start + EVERY));
}
