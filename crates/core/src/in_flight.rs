//! Requests in flight: when each one started, so a check can count those that
//! have already waited longer than the latency limit.
//!
//! Design rule: entering and leaving cost one uncontended lock on one of
//! [`SHARDS`] small slabs (chosen round-robin by one atomic), never a global
//! lock per request; a check walks every shard. Nothing here is ever added to
//! a window: the overdue are counted afresh at each check, so a request that
//! later finishes or is abandoned is recorded once, by its own record.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Shards of the registry: enough that concurrent requests rarely share one.
const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    /// Start instants by slot; `None` is a free slot.
    starts: Vec<Option<Instant>>,
    /// Free slots, reused before the slab grows.
    free: Vec<usize>,
}

/// The registry of requests still waiting for their answer.
pub struct InFlight {
    next: AtomicUsize,
    shards: Box<[Mutex<Shard>]>,
}

/// A request's place in the registry; give it back with [`InFlight::leave`].
#[derive(Debug)]
pub struct Ticket {
    shard: usize,
    slot: usize,
}

impl InFlight {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            next: AtomicUsize::new(0),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    /// Registers a request that started at `start`.
    pub fn enter(&self, start: Instant) -> Ticket {
        let shard = self.next.fetch_add(1, Ordering::Relaxed) % SHARDS;
        let mut s = self.shards[shard].lock();
        let slot = match s.free.pop() {
            Some(slot) => {
                s.starts[slot] = Some(start);
                slot
            }
            None => {
                s.starts.push(Some(start));
                s.starts.len() - 1
            }
        };
        Ticket { shard, slot }
    }

    /// Removes a request from the registry.
    pub fn leave(&self, ticket: Ticket) {
        let mut s = self.shards[ticket.shard].lock();
        s.starts[ticket.slot] = None;
        s.free.push(ticket.slot);
    }

    /// Calls `f` with the age of every request that has waited longer than
    /// `limit` at `now`.
    pub fn overdue(&self, now: Instant, limit: Duration, mut f: impl FnMut(Duration)) {
        for shard in self.shards.iter() {
            for start in shard.lock().starts.iter().flatten() {
                let age = now.saturating_duration_since(*start);
                if age > limit {
                    f(age);
                }
            }
        }
    }
}

impl Default for InFlight {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ages(r: &InFlight, now: Instant, limit: Duration) -> Vec<Duration> {
        let mut v = Vec::new();
        r.overdue(now, limit, |a| v.push(a));
        v.sort();
        v
    }

    #[test]
    fn counts_only_requests_older_than_the_limit() {
        let t0 = Instant::now();
        let r = InFlight::new();
        let old = r.enter(t0);
        let _young = r.enter(t0 + ms(400));
        let exact = r.enter(t0 + ms(100));
        // At 600 ms: 600 ms old, 200 ms old, exactly 500 ms old (not over).
        assert_eq!(ages(&r, t0 + ms(600), ms(500)), vec![ms(600)]);
        r.leave(old);
        assert!(ages(&r, t0 + ms(600), ms(500)).is_empty());
        r.leave(exact);
        assert_eq!(ages(&r, t0 + ms(1000), ms(500)), vec![ms(600)]);
    }

    #[test]
    fn slots_are_reused_and_nothing_leaks() {
        let t0 = Instant::now();
        let r = InFlight::new();
        for round in 0..3u64 {
            let tickets: Vec<_> = (0..100).map(|_| r.enter(t0)).collect();
            assert_eq!(ages(&r, t0 + ms(1000), ms(500)).len(), 100, "round {round}");
            for t in tickets {
                r.leave(t);
            }
            assert!(ages(&r, t0 + ms(1000), ms(500)).is_empty());
        }
        let slots: usize = r.shards.iter().map(|s| s.lock().starts.len()).sum();
        // Round-robin spreads each round a little differently: at most one more per shard.
        assert!(
            slots <= 100 + SHARDS,
            "the slabs grew to {slots} instead of reusing slots"
        );
    }

    #[test]
    fn concurrent_entering_and_leaving_loses_nothing() {
        let t0 = Instant::now();
        let r = std::sync::Arc::new(InFlight::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut kept = Vec::new();
                    for i in 0..10_000 {
                        let t = r.enter(t0);
                        if i % 100 == 0 {
                            kept.push(t);
                        } else {
                            r.leave(t);
                        }
                    }
                    kept
                })
            })
            .collect();
        let kept: usize = threads.into_iter().map(|t| t.join().unwrap().len()).sum();
        assert_eq!(kept, 400);
        assert_eq!(ages(&r, t0 + ms(1000), ms(500)).len(), 400);
    }
}
