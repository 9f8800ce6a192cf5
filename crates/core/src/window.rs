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

    /// The same window as seen `secs` seconds after it was taken: its seconds
    /// end that much before now, and the seconds since hold nothing yet. The
    /// leader lines a member's seconds up with its own this way (at most a
    /// window's length: older members are stale anyway).
    pub fn aged(mut self, secs: u64) -> Self {
        if !self.slots.is_empty() {
            let pad = secs.min(self.seconds) as usize;
            self.slots.extend(std::iter::repeat_n([0u64; 4], pad));
        }
        self
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
mod tests;
