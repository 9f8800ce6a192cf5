use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn counts_and_ratio() {
    let t0 = Instant::now();
    let w = Window::new(Duration::from_secs(30), t0);
    for i in 0..200 {
        let outcome = if i < 40 {
            Outcome::Error
        } else {
            Outcome::Success
        };
        w.record(t0, ms(5), outcome);
    }
    let s = w.summary(t0);
    assert_eq!((s.requests, s.errors), (200, 40));
    assert!((s.error_ratio() - 0.2).abs() < 1e-12);
    assert_eq!(s.latency.total(), 200);
}

#[test]
fn old_seconds_roll_out() {
    let t0 = Instant::now();
    let w = Window::new(Duration::from_secs(3), t0);
    w.record(t0, ms(1), Outcome::Error);
    w.record(t0 + ms(1500), ms(1), Outcome::Success);
    assert_eq!(w.summary(t0 + ms(2999)).requests, 2);
    // Second 0 leaves the 3 s window when second 3 begins.
    let s = w.summary(t0 + ms(3000));
    assert_eq!((s.requests, s.errors), (1, 0));
    // A slot reused for a new second starts from zero.
    w.record(t0 + ms(3100), ms(1), Outcome::Success);
    assert_eq!(w.summary(t0 + ms(3100)).requests, 2);
    assert_eq!(w.summary(t0 + Duration::from_secs(60)).requests, 0);
}

#[test]
fn totals_keep_what_rolled_out() {
    let t0 = Instant::now();
    let w = Window::new(Duration::from_secs(2), t0);
    w.record(t0, ms(3), Outcome::Error);
    w.record(t0 + ms(1000), ms(200), Outcome::Success);
    w.record_counts(t0 + ms(1000), 5, 1, 0);
    w.record_latency_bucket(t0 + ms(1000), histogram::bucket_index(ms(40)), 2);
    let before = w.totals();
    // Second 2 reuses second 0's slot, second 3 second 1's.
    w.record(t0 + ms(2500), ms(7), Outcome::Success);
    w.record(t0 + ms(3500), ms(7), Outcome::Success);
    assert_eq!(w.summary(t0 + ms(3500)).requests, 2);
    let t = w.totals();
    assert_eq!((t.requests, t.errors), (9, 2));
    assert_eq!(t.latency.total(), 6);
    assert_eq!(t.latency.counts()[histogram::bucket_index(ms(3))], 1);
    assert_eq!(t.latency.counts()[histogram::bucket_index(ms(40))], 2);
    assert!((t.latency_sum_seconds - 0.217).abs() < 1e-9, "{t:?}");
    assert!(t.requests > before.requests && t.latency.total() > before.latency.total());
}

#[test]
fn length_is_clamped() {
    let t0 = Instant::now();
    assert_eq!(Window::new(Duration::ZERO, t0).seconds(), 1);
    assert_eq!(Window::new(ms(1500), t0).seconds(), 2);
    assert_eq!(Window::new(Duration::from_secs(3600), t0).seconds(), 600);
}

#[test]
fn concurrent_recording_loses_nothing() {
    let t0 = Instant::now();
    let w = std::sync::Arc::new(Window::new(Duration::from_secs(30), t0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let w = w.clone();
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    w.record(t0, ms(2), Outcome::Success);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(w.summary(t0).requests, 40_000);
    assert_eq!(w.totals().latency.total(), 40_000);
}

#[test]
fn summary_json_is_compact_and_round_trips() {
    let t0 = Instant::now();
    let w = Window::new(Duration::from_secs(30), t0);
    w.record(t0, ms(200), Outcome::Success);
    w.record(t0, ms(200), Outcome::Error);
    let s = w.summary(t0);
    let json = serde_json::to_string(&s).unwrap();
    let idx = histogram::bucket_index(ms(200));
    assert_eq!(
        json,
        format!(
            r#"{{"v":1,"s":30,"n":2,"e":1,"h":[[{idx},2]],"q":[[2,1,2,0]],"r":{{"v":1,"s":5,"n":2,"e":1,"h":[[{idx},2]]}}}}"#
        )
    );
    let back: Summary = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    // A guard that predates the recent part sends none; that still reads.
    let old: Summary =
        serde_json::from_str(&format!(r#"{{"v":1,"s":30,"n":2,"e":1,"h":[[{idx},2]]}}"#)).unwrap();
    assert_eq!((old.requests, old.recent), (2, None));
}

#[test]
fn the_recent_part_holds_the_last_five_seconds() {
    let t0 = Instant::now();
    let w = Window::new(Duration::from_secs(30), t0);
    for sec in 0..40u64 {
        let outcome = if sec % 2 == 0 {
            Outcome::Error
        } else {
            Outcome::Success
        };
        w.record(t0 + Duration::from_secs(sec), ms(1), outcome);
    }
    let s = w.summary(t0 + Duration::from_millis(39_500));
    assert_eq!((s.requests, s.errors), (30, 15));
    let r = s.recent.as_deref().expect("a recent part");
    // Seconds 35..=39: errors at 36 and 38.
    assert_eq!(
        (r.seconds, r.requests, r.errors, r.latency.total()),
        (5, 5, 2, 5)
    );
    // A window no longer than the recent part has none.
    let short = Window::new(Duration::from_secs(RECENT_SECONDS), t0);
    short.record(t0, ms(1), Outcome::Success);
    assert_eq!(short.summary(t0).recent, None);
}

#[test]
fn seconds_are_listed_oldest_first_and_merge_aligned_on_the_newest() {
    let t0 = Instant::now();
    let w = Window::new(Duration::from_secs(30), t0).with_latency_limit(ms(500));
    w.record(t0 + ms(1000), ms(900), Outcome::Error);
    w.record(t0 + ms(3000), ms(5), Outcome::Success);
    let _slow = w.in_flight().enter(t0 + ms(3000));
    // The second before the first request is left out; the one in flight past
    // the limit is slow evidence in the newest second.
    let s = w.summary(t0 + ms(3600));
    assert_eq!(s.slots, vec![[1, 1, 1, 1], [0, 0, 0, 0], [2, 0, 2, 1]]);
    let mut agg = Summary::empty(0);
    let other = Window::new(Duration::from_secs(30), t0);
    other.record(t0 + ms(9000), ms(5), Outcome::Error);
    agg.merge(&other.summary(t0 + ms(9000)));
    agg.merge(&s);
    assert_eq!(agg.slots, vec![[1, 1, 1, 1], [0, 0, 0, 0], [3, 1, 3, 1]]);
}

#[test]
fn merging_adds_recent_parts_too() {
    let t0 = Instant::now();
    let (a, b) = (
        Window::new(Duration::from_secs(30), t0),
        Window::new(Duration::from_secs(30), t0),
    );
    a.record(t0, ms(1), Outcome::Error);
    b.record(t0 + Duration::from_secs(20), ms(1), Outcome::Success);
    let now = t0 + Duration::from_secs(20);
    let mut agg = Summary::empty(0);
    agg.merge(&a.summary(now));
    agg.merge(&b.summary(now));
    assert_eq!((agg.requests, agg.errors), (2, 1));
    let r = agg.recent.as_deref().expect("a recent part");
    assert_eq!((r.requests, r.errors), (1, 0));
}

#[test]
fn abandoned_requests_are_slow_only_after_waiting_past_the_limit() {
    let t0 = Instant::now();
    let w = Window::new(Duration::from_secs(30), t0).with_latency_limit(ms(500));
    // Gave up after 600 ms without an answer: a slow request.
    w.record_abandoned(t0, ms(600), None);
    // After 300 ms without an answer: the client's choice, never judged.
    w.record_abandoned(t0, ms(300), None);
    // Headers after 5 ms, then gone 100 ms later: judged on its 5 ms.
    w.record_abandoned(t0, ms(100), Some(ms(5)));
    // Headers after 900 ms, gone 700 ms after the app last sent anything.
    w.record_abandoned(t0, ms(700), Some(ms(900)));
    let s = w.summary(t0);
    assert_eq!((s.requests, s.errors, s.abandoned), (3, 0, 4));
    assert_eq!(s.latency.total(), 3);
    assert_eq!(s.latency.count_from(ms(500)), 2);
    let idx = |d| histogram::bucket_index(d);
    for d in [ms(600), ms(5), ms(900)] {
        assert_eq!(s.latency.counts()[idx(d)], 1, "{d:?}");
    }
    let r = s.recent.as_deref().unwrap();
    assert_eq!((r.requests, r.abandoned), (3, 4));
    let t = w.totals();
    assert_eq!((t.requests, t.abandoned, t.abandoned_early), (3, 3, 1));
    // Without a limit no wait is slow.
    let plain = Window::new(Duration::from_secs(30), t0);
    plain.record_abandoned(t0, ms(600), None);
    let s = plain.summary(t0);
    assert_eq!((s.requests, s.abandoned, s.latency.total()), (0, 1, 0));
}

#[test]
fn requests_in_flight_past_the_limit_count_as_slow_until_recorded() {
    let t0 = Instant::now();
    let w = Window::new(Duration::from_secs(30), t0).with_latency_limit(ms(500));
    let ticket = w.in_flight().enter(t0);
    let s = w.summary(t0 + ms(400));
    assert_eq!((s.requests, s.overdue), (0, 0));
    for at in [ms(600), ms(1700)] {
        let s = w.summary(t0 + at);
        assert_eq!(
            (s.requests, s.overdue, s.latency.count_from(ms(500))),
            (1, 1, 1)
        );
        assert_eq!(s.latency.counts()[histogram::bucket_index(at)], 1);
        assert_eq!(s.recent.as_deref().unwrap().overdue, 1);
    }
    // It finishes: counted once, by its record.
    w.in_flight().leave(ticket);
    w.record(t0 + ms(1800), ms(1800), Outcome::Success);
    let s = w.summary(t0 + ms(1800));
    assert_eq!((s.requests, s.overdue, s.latency.total()), (1, 0, 1));
    // Summaries never leave a trace in the totals.
    assert_eq!(w.totals().requests, 1);
    // A window without a limit never counts the overdue.
    let plain = Window::new(Duration::from_secs(30), t0);
    let _t = plain.in_flight().enter(t0);
    assert_eq!(plain.summary(t0 + ms(9000)).requests, 0);
}

#[test]
fn abandoned_and_overdue_are_on_the_wire_only_when_present() {
    let mut s = Summary::empty(30);
    s.requests = 3;
    s.abandoned = 2;
    s.overdue = 1;
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(json, r#"{"v":1,"s":30,"n":3,"e":0,"a":2,"w":1,"h":[]}"#);
    assert_eq!(serde_json::from_str::<Summary>(&json).unwrap(), s);
    let mut merged = s.clone();
    merged.merge(&s);
    assert_eq!((merged.abandoned, merged.overdue), (4, 2));
}

#[test]
fn merge_adds_members() {
    let mut a = Summary::empty(30);
    a.requests = 10;
    a.errors = 1;
    a.latency.record(ms(10));
    let mut b = Summary::empty(30);
    b.requests = 30;
    b.errors = 9;
    b.latency.record(ms(900));
    a.merge(&b);
    assert_eq!((a.requests, a.errors), (40, 10));
    assert!((a.error_ratio() - 0.25).abs() < 1e-12);
    assert_eq!(a.latency.total(), 2);
}

#[test]
fn an_aged_summary_ends_its_seconds_that_much_earlier() {
    let t0 = Instant::now();
    let w = Window::new(Duration::from_secs(30), t0);
    w.record(t0, Duration::from_millis(5), Outcome::Error);
    let s = w.summary(t0);
    let aged = s.clone().aged(3);
    assert_eq!(aged.slots.len(), s.slots.len() + 3);
    assert_eq!(aged.slots[s.slots.len() - 1], s.slots[s.slots.len() - 1]);
    assert!(aged.slots[s.slots.len()..].iter().all(|c| *c == [0; 4]));
    assert_eq!((aged.requests, aged.errors), (s.requests, s.errors));
    // Merged with a fresh summary, its error lines up three seconds back.
    let mut fresh = Summary::empty(30);
    fresh.merge(&w.summary(t0));
    fresh.merge(&aged);
    let n = fresh.slots.len();
    assert_eq!(fresh.slots[n - 1][1], 1);
    assert_eq!(fresh.slots[n - 4][1], 1);
    // A summary without seconds (an older guard's) has nothing to line up.
    assert!(Summary::empty(30).aged(5).slots.is_empty());
}
