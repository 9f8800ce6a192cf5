//! A sliding window of one-second slots.
//!
//! Recording is a handful of relaxed atomic adds on the current slot; a slot is
//! cleared by the first recorder of a new second under a per-slot lock that is
//! taken once per second at most. Reads add up the live slots into a
//! [`Summary`]. Memory is fixed by the window length, never by traffic.
//!
//! A slot's counts are moved into the window's [`Totals`] when the slot is
//! reused, so the counts since start (what Prometheus counters export) cost
//! no update per request beyond the slot's.
//!
//! Requests still waiting for their answer are not in any slot: the window's
//! [`InFlight`] registry holds them, and a summary counts those already past
//! the latency limit as slow, afresh each time, so each request is recorded
//! once, by its own record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::histogram::{self, Histogram, LAYOUT_VERSION};
use super::in_flight::InFlight;

/// Length of the recent part judged beside the whole window, in seconds: a
/// fault that starts after a long healthy stretch shows there at full
/// strength instead of diluted by the healthy seconds before it.
pub const RECENT_SECONDS: u64 = 5;

/// Longest window we accept: bounds memory at `slots × buckets × 8` bytes.
pub const MAX_WINDOW: Duration = Duration::from_secs(600);

/// "Never written" marker for a slot's second.
const EMPTY: u64 = u64::MAX;

struct Slot {
    /// The second (since the window's origin) this slot holds.
    second: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    /// Of `requests`, abandoned by their clients.
    abandoned: AtomicU64,
    /// Abandoned before the latency limit and before any answer: in no other count.
    abandoned_early: AtomicU64,
    /// Sum of the latencies given to [`Window::record`], in nanoseconds.
    latency_sum_ns: AtomicU64,
    buckets: Box<[AtomicU64]>,
    rotate: Mutex<()>,
}

impl Slot {
    fn new() -> Self {
        Self {
            second: AtomicU64::new(EMPTY),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            abandoned_early: AtomicU64::new(0),
            latency_sum_ns: AtomicU64::new(0),
            buckets: (0..histogram::bucket_count())
                .map(|_| AtomicU64::new(0))
                .collect(),
            rotate: Mutex::new(()),
        }
    }
}

/// The outcome of one request as the window counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Served without a server-side error.
    Success,
    /// A 5xx, a gRPC server error, or an upstream failure.
    Error,
    /// The client gave up before the answer was complete; never a success,
    /// and not an error the canary answered either.
    Abandoned,
}

/// Everything a window has counted since it was created.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// Requests counted.
    pub requests: u64,
    /// Failed requests counted.
    pub errors: u64,
    /// Of `requests`, abandoned by their clients.
    pub abandoned: u64,
    /// Requests abandoned early (see [`Window::record_abandoned`]): not in `requests`.
    pub abandoned_early: u64,
    /// Sum of the latencies given to [`Window::record`], in seconds.
    pub latency_sum_seconds: f64,
    /// Latency samples per bucket, from [`Window::record`] and
    /// [`Window::record_latency_bucket`] alike.
    pub latency: Histogram,
}

/// A ring of one-second slots.
pub struct Window {
    origin: Instant,
    slots: Box<[Slot]>,
    /// Counts moved out of slots that were reused for a later second.
    retired: Mutex<Totals>,
    in_flight: InFlight,
    /// Waiting longer than this is slow: for abandoned and in-flight requests.
    latency_limit: Option<Duration>,
}

impl Window {
    /// A window of `length` (rounded up to whole seconds, at least 1 s, at most [`MAX_WINDOW`]).
    pub fn new(length: Duration, origin: Instant) -> Self {
        let secs = length.min(MAX_WINDOW).as_secs_f64().ceil().max(1.0) as usize;
        Self {
            origin,
            slots: (0..secs).map(|_| Slot::new()).collect(),
            retired: Mutex::new(Totals::default()),
            in_flight: InFlight::new(),
            latency_limit: None,
        }
    }

    /// The same window, judging waits against `limit`: a request abandoned
    /// after waiting longer, or still in flight after it, counts as slow.
    /// Without it, neither ever does.
    pub fn with_latency_limit(mut self, limit: Duration) -> Self {
        self.latency_limit = Some(limit);
        self
    }

    /// The requests still waiting for their answer.
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// Window length in seconds.
    pub fn seconds(&self) -> u64 {
        self.slots.len() as u64
    }

    fn second_of(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_secs()
    }

    fn slot_for(&self, second: u64) -> &Slot {
        let slot = &self.slots[(second % self.slots.len() as u64) as usize];
        if slot.second.load(Ordering::Acquire) != second {
            let _guard = slot.rotate.lock();
            // Another recorder may have rotated it while we waited.
            if slot.second.load(Ordering::Acquire) != second {
                // Swapped, not cleared: a count added meanwhile lands either in
                // the totals or in the new second, never in both or neither.
                let mut retired = self.retired.lock();
                retired.requests += slot.requests.swap(0, Ordering::Relaxed);
                retired.errors += slot.errors.swap(0, Ordering::Relaxed);
                retired.abandoned += slot.abandoned.swap(0, Ordering::Relaxed);
                retired.abandoned_early += slot.abandoned_early.swap(0, Ordering::Relaxed);
                retired.latency_sum_seconds +=
                    slot.latency_sum_ns.swap(0, Ordering::Relaxed) as f64 / 1e9;
                for (i, b) in slot.buckets.iter().enumerate() {
                    if b.load(Ordering::Relaxed) != 0 {
                        retired.latency.add(i, b.swap(0, Ordering::Relaxed));
                    }
                }
                slot.second.store(second, Ordering::Release);
            }
        }
        slot
    }

    /// Counts `n` requests (of which `errors` failed and `abandoned` were
    /// given up by their clients) at `at` without latency samples.
    pub fn record_counts(&self, at: Instant, n: u64, errors: u64, abandoned: u64) {
        let slot = self.slot_for(self.second_of(at));
        slot.requests.fetch_add(n, Ordering::Relaxed);
        slot.errors.fetch_add(errors, Ordering::Relaxed);
        slot.abandoned.fetch_add(abandoned, Ordering::Relaxed);
    }

    /// Counts a request whose client gave up at `at` after waiting `waited`
    /// for the app (since the request, or since the app last sent anything),
    /// with `latency` its time to response headers if they had arrived.
    ///
    /// Waiting past the latency limit is evidence that the canary is slow: a
    /// latency sample of at least the wait. A client that gave up sooner chose
    /// to; with no headers nothing is known of the latency, so the request is
    /// counted as abandoned early and never judged.
    pub fn record_abandoned(&self, at: Instant, waited: Duration, latency: Option<Duration>) {
        let slow = self.latency_limit.is_some_and(|limit| waited > limit);
        match latency {
            _ if slow => self.record(
                at,
                waited.max(latency.unwrap_or_default()),
                Outcome::Abandoned,
            ),
            Some(latency) => self.record(at, latency, Outcome::Abandoned),
            None => {
                let slot = self.slot_for(self.second_of(at));
                slot.abandoned_early.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts one request that finished at `at` after `latency`.
    #[inline]
    pub fn record(&self, at: Instant, latency: Duration, outcome: Outcome) {
        let slot = self.record_bucket(at, histogram::bucket_index(latency), 1, outcome);
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        slot.latency_sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Adds `n` latency samples to bucket `bucket` without touching request counts.
    pub fn record_latency_bucket(&self, at: Instant, bucket: usize, n: u64) {
        if let Some(b) = self.slot_for(self.second_of(at)).buckets.get(bucket) {
            b.fetch_add(n, Ordering::Relaxed);
        }
    }

    #[inline]
    fn record_bucket(&self, at: Instant, bucket: usize, n: u64, outcome: Outcome) -> &Slot {
        let slot = self.slot_for(self.second_of(at));
        slot.requests.fetch_add(n, Ordering::Relaxed);
        match outcome {
            Outcome::Success => {}
            Outcome::Error => {
                slot.errors.fetch_add(n, Ordering::Relaxed);
            }
            Outcome::Abandoned => {
                slot.abandoned.fetch_add(n, Ordering::Relaxed);
            }
        }
        if let Some(b) = slot.buckets.get(bucket) {
            b.fetch_add(n, Ordering::Relaxed);
        }
        slot
    }

    /// Everything counted since the window was created.
    pub fn totals(&self) -> Totals {
        // Slots are retired under this lock: holding it, every count is seen
        // exactly once, so totals never go down between two calls.
        let retired = self.retired.lock();
        let mut totals = retired.clone();
        for slot in self.slots.iter() {
            totals.requests += slot.requests.load(Ordering::Relaxed);
            totals.errors += slot.errors.load(Ordering::Relaxed);
            totals.abandoned += slot.abandoned.load(Ordering::Relaxed);
            totals.abandoned_early += slot.abandoned_early.load(Ordering::Relaxed);
            totals.latency_sum_seconds += slot.latency_sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
            for (i, b) in slot.buckets.iter().enumerate() {
                let c = b.load(Ordering::Relaxed);
                if c > 0 {
                    totals.latency.add(i, c);
                }
            }
        }
        totals
    }

    /// The totals of the last `seconds()` seconds up to and including `now`'s
    /// second, with those of the last [`RECENT_SECONDS`] beside them when the
    /// window is longer; requests in flight past the latency limit at `now`
    /// are in both, as slow requests.
    pub fn summary(&self, now: Instant) -> Summary {
        let current = self.second_of(now);
        let oldest = current.saturating_sub(self.seconds() - 1);
        let recent_from = current.saturating_sub(RECENT_SECONDS - 1);
        let mut summary = Summary::empty(self.seconds());
        // Oldest first, one entry per second, for the sequential test.
        let mut series = vec![[0u64; 4]; (current - oldest + 1) as usize];
        let over_from = self.latency_limit.map(histogram::first_bucket_from);
        let mut recent =
            (self.seconds() > RECENT_SECONDS).then(|| Box::new(Summary::empty(RECENT_SECONDS)));
        for slot in self.slots.iter() {
            let s = slot.second.load(Ordering::Acquire);
            if s == EMPTY || s < oldest || s > current {
                continue;
            }
            // Each counter is read once, so the recent part never exceeds the whole.
            let mut recent = recent.as_deref_mut().filter(|_| s >= recent_from);
            let requests = slot.requests.load(Ordering::Relaxed);
            let errors = slot.errors.load(Ordering::Relaxed);
            let abandoned = slot.abandoned.load(Ordering::Relaxed)
                + slot.abandoned_early.load(Ordering::Relaxed);
            for t in std::iter::once(&mut summary).chain(recent.as_deref_mut()) {
                t.requests += requests;
                t.errors += errors;
                t.abandoned += abandoned;
            }
            let counts = &mut series[(s - oldest) as usize];
            counts[0] = requests;
            counts[1] = errors;
            for (i, b) in slot.buckets.iter().enumerate() {
                let c = b.load(Ordering::Relaxed);
                if c > 0 {
                    counts[2] += c;
                    if over_from.is_some_and(|f| i >= f) {
                        counts[3] += c;
                    }
                    summary.latency.add(i, c);
                    if let Some(r) = recent.as_deref_mut() {
                        r.latency.add(i, c);
                    }
                }
            }
        }
        if let Some(limit) = self.latency_limit {
            self.in_flight.overdue(now, limit, |age| {
                let bucket = histogram::bucket_index(age);
                for t in std::iter::once(&mut summary).chain(recent.as_deref_mut()) {
                    t.requests += 1;
                    t.overdue += 1;
                    t.latency.add(bucket, 1);
                }
                // Slow now, so evidence now: in the newest second.
                if let Some(newest) = series.last_mut() {
                    newest[0] += 1;
                    newest[2] += 1;
                    newest[3] += 1;
                }
            });
        }
        // Seconds before the first request carry no evidence either way.
        let first = series
            .iter()
            .position(|c| *c != [0; 4])
            .unwrap_or(series.len());
        series.drain(..first);
        summary.slots = series;
        summary.recent = recent;
        summary
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Window totals: what a guard publishes and what the policy judges.
///
/// Mergeable (the leader adds up members) and serialized compactly as
/// `{"v":1,"s":30,"n":200,"e":40,"a":3,"w":1,"h":[[idx,count],...],"r":{...}}`,
/// where `r` is the recent part in the same form. `a` and `w` are left out
/// when zero; guards that predate them ignore them, and they read as zero
/// from such guards: their meaning is also in `n` and `h`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Bucket layout version, so guards of two versions can tell each other apart.
    #[serde(rename = "v")]
    pub version: u32,
    /// Window length in seconds.
    #[serde(rename = "s")]
    pub seconds: u64,
    /// Requests in the window.
    #[serde(rename = "n")]
    pub requests: u64,
    /// Failed requests in the window.
    #[serde(rename = "e")]
    pub errors: u64,
    /// Requests whose clients gave up before the answer was complete. Those
    /// that had waited past the latency limit, or had their response headers,
    /// are also in `requests` with a latency sample; those abandoned early are
    /// in no other count.
    #[serde(rename = "a", default, skip_serializing_if = "is_zero")]
    pub abandoned: u64,
    /// Of `requests`, still in flight and past the latency limit when summarized
    /// (each with a latency sample of its age).
    #[serde(rename = "w", default, skip_serializing_if = "is_zero")]
    pub overdue: u64,
    /// Latency histogram (sparse on the wire).
    #[serde(rename = "h")]
    pub latency: Histogram,
    /// The window second by second, oldest first and ending at the second it
    /// was taken in: `[requests, errors, latency samples, samples over the
    /// latency limit]`, for the sequential test. Seconds before the first
    /// request are left out; guards that predate it send none.
    #[serde(rename = "q", default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<[u64; 4]>,
    /// The last [`RECENT_SECONDS`] of the window, when the window is longer
    /// (absent from guards that predate it; they ignore it when reading).
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub recent: Option<Box<Summary>>,
}

impl Summary {
    /// A summary with no traffic.
    pub fn empty(seconds: u64) -> Self {
        Self {
            version: LAYOUT_VERSION,
            seconds,
            requests: 0,
            errors: 0,
            abandoned: 0,
            overdue: 0,
            latency: Histogram::default(),
            slots: Vec::new(),
            recent: None,
        }
    }

    /// Adds another guard's totals to these, recent part included (a guard
    /// that sends none adds nothing to it).
    pub fn merge(&mut self, other: &Summary) {
        self.add(other);
        // Aligned on the newest second: each summary ends at the second it was taken in.
        if self.slots.len() < other.slots.len() {
            let pad = other.slots.len() - self.slots.len();
            self.slots.splice(0..0, std::iter::repeat_n([0u64; 4], pad));
        }
        let offset = self.slots.len() - other.slots.len();
        for (mine, theirs) in self.slots[offset..].iter_mut().zip(&other.slots) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a = a.saturating_add(*b);
            }
        }
        if let Some(theirs) = &other.recent {
            self.recent
                .get_or_insert_with(|| Box::new(Summary::empty(theirs.seconds)))
                .add(theirs);
        }
    }

    fn add(&mut self, other: &Summary) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.abandoned = self.abandoned.saturating_add(other.abandoned);
        self.overdue = self.overdue.saturating_add(other.overdue);
        self.seconds = self.seconds.max(other.seconds);
        self.latency.merge(&other.latency);
    }

    /// Errors over requests, 0 when there is no traffic.
    pub fn error_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The latency at quantile `q`, if any latency was recorded.
    pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
        self.latency.quantile(q)
    }
}

#[cfg(test)]
mod tests {
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
            serde_json::from_str(&format!(r#"{{"v":1,"s":30,"n":2,"e":1,"h":[[{idx},2]]}}"#))
                .unwrap();
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
}
