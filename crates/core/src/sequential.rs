//! Sequential evidence: a one-sided CUSUM of Bernoulli log-likelihood ratios,
//! computed from counts per one-second slot.
//!
//! Design rule: pure arithmetic on counts, no state. A reset-at-zero CUSUM at
//! time `t` equals the largest sum of increments over the suffixes of the
//! samples seen so far, so the statistic is a function of the window's slots
//! (newest last): the same code judges a guard's own window, a member's
//! published summary and the leader's aggregate, and it may be evaluated as
//! often as wanted without ever exceeding the per-request CUSUM it bounds.
//!
//! The test is between H0 "events happen at rate `p0` (the limit) or less"
//! and H1 "they happen at `p1` = [`ALTERNATIVE_FACTOR`] × the limit". Under
//! H0, `exp` of the sum of increments from any starting request is a
//! non-negative supermartingale, so (Ville's inequality) the chance that the
//! sum from one given request ever reaches `h` is at most `e^-h`: every
//! request starts a false alarm with probability at most `e^-h`.

/// H1 is this multiple of the limit: an error ratio four times the limit
/// (20% against 5%) is what the test is tuned to catch fastest; stronger
/// faults are caught sooner, and the whole-window test catches weaker ones.
pub const ALTERNATIVE_FACTOR: f64 = 4.0;

/// Counts of one judged slot: `events` of `trials` (errors of requests, or
/// samples over the latency limit of latency samples).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Bernoulli trials.
    pub trials: u64,
    /// Of those, events (errors, or samples over the limit).
    pub events: u64,
}

/// The strongest evidence over the suffixes of a slot series.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evidence {
    /// The log-likelihood ratio of H1 against H0 over that suffix (≥ 0).
    pub llr: f64,
    /// How many slots, counted back from the newest, the suffix spans (0 when no evidence).
    pub slots: usize,
    /// The suffix's totals.
    pub counts: Counts,
}

/// The log-likelihood-ratio increments of one limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Test {
    /// A limit of 0: any event is a breach.
    AnyEvent,
    /// A limit of 1 or more: nothing can exceed it.
    Never,
    /// `ln(p1/p0)` per event and `ln((1−p1)/(1−p0))` (negative) per non-event.
    Ratio {
        /// Increment per event.
        up: f64,
        /// Increment per non-event.
        down: f64,
    },
}

impl Test {
    /// The test of the limit `p0`, against [`ALTERNATIVE_FACTOR`] × `p0`
    /// (or half-way to 1 when that is closer).
    pub fn new(p0: f64) -> Self {
        if p0 <= 0.0 {
            return Test::AnyEvent;
        }
        if p0 >= 1.0 {
            return Test::Never;
        }
        let p1 = (p0 * ALTERNATIVE_FACTOR).min((1.0 + p0) / 2.0);
        Test::Ratio {
            up: (p1 / p0).ln(),
            down: ((1.0 - p1) / (1.0 - p0)).ln(),
        }
    }

    /// The log-likelihood ratio of `c`.
    pub fn increment(&self, c: Counts) -> f64 {
        let events = c.events.min(c.trials);
        match *self {
            Test::AnyEvent if events > 0 => f64::INFINITY,
            Test::AnyEvent | Test::Never => 0.0,
            Test::Ratio { up, down } => events as f64 * up + (c.trials - events) as f64 * down,
        }
    }

    /// The CUSUM at the newest slot: the largest increment sum over the
    /// suffixes of `slots` (oldest first). On ties the longer suffix wins, so
    /// the evidence names every slot that carries it.
    pub fn strongest<I>(&self, slots: I) -> Evidence
    where
        I: DoubleEndedIterator<Item = Counts>,
    {
        let mut best = Evidence::default();
        let (mut sum, mut total) = (0.0, Counts::default());
        for (i, c) in slots.rev().enumerate() {
            sum += self.increment(c);
            total.trials += c.trials;
            total.events += c.events;
            if sum > 0.0 && sum >= best.llr {
                best = Evidence {
                    llr: sum,
                    slots: i + 1,
                    counts: total,
                };
            }
        }
        best
    }
}

/// The CUSUM threshold `h` for a chance of at most `alpha` that any one
/// request starts a false alarm.
pub fn threshold(alpha: f64) -> f64 {
    (1.0 / alpha.clamp(f64::MIN_POSITIVE, 1.0)).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a small deterministic generator for the simulations.
    struct Rng(u64);

    impl Rng {
        fn unit(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn one(events: bool) -> Counts {
        Counts {
            trials: 1,
            events: u64::from(events),
        }
    }

    /// Requests until the CUSUM of `test` crosses `h`, or `None` after `limit`.
    fn requests_to_cross(t: &Test, h: f64, p: f64, rng: &mut Rng, limit: usize) -> Option<usize> {
        let mut cusum = 0.0f64;
        for n in 1..=limit {
            cusum = (cusum + t.increment(one(rng.unit() < p))).max(0.0);
            if cusum >= h {
                return Some(n);
            }
        }
        None
    }

    #[test]
    fn strong_faults_cross_within_a_handful_of_requests_weak_ones_later() {
        let t = Test::new(0.05);
        let h = threshold(1e-5 / 2.0);
        let mut rng = Rng(7);
        let mut median = |p: f64| {
            let mut xs: Vec<usize> = (0..201)
                .map(|_| requests_to_cross(&t, h, p, &mut rng, 100_000).expect("crosses"))
                .collect();
            xs.sort_unstable();
            xs[xs.len() / 2]
        };
        // ln 4 per error: 9 errors in a row pass ln(200,000) ≈ 12.2.
        assert_eq!(median(1.0), 9);
        let half = median(0.5);
        let fifth = median(0.2);
        assert!((15..=30).contains(&half), "{half}");
        assert!((60..=130).contains(&fifth), "{fifth}");
    }

    #[test]
    fn a_canary_at_exactly_its_limit_crosses_within_the_bound() {
        // Each request starts a false alarm with chance ≤ e^-h, so n requests
        // bring at most n·e^-h of them. Count them at exactly the limit,
        // starting over after each.
        let t = Test::new(0.05);
        let h = threshold(1e-3);
        let mut rng = Rng(11);
        let n = 2_000_000usize;
        let (mut alarms, mut cusum) = (0usize, 0.0f64);
        for _ in 0..n {
            cusum = (cusum + t.increment(one(rng.unit() < 0.05))).max(0.0);
            if cusum >= h {
                alarms += 1;
                cusum = 0.0;
            }
        }
        let bound = n as f64 * (-h).exp();
        assert!(
            alarms > 0,
            "at the limit some alarms must happen in 2M requests"
        );
        assert!((alarms as f64) <= bound, "{alarms} alarms > bound {bound}");
    }

    #[test]
    fn a_healthy_canary_well_under_its_limit_never_crosses() {
        let t = Test::new(0.05);
        let h = threshold(1e-5 / 2.0);
        let mut rng = Rng(3);
        assert_eq!(requests_to_cross(&t, h, 0.01, &mut rng, 5_000_000), None);
    }

    #[test]
    fn the_statistic_is_the_cusum_of_the_slots() {
        let t = Test::new(0.05);
        let slot = |trials, events| Counts { trials, events };
        // Healthy seconds bank no credit: the error burst at the end is judged alone.
        let slots = [slot(1000, 0), slot(10, 10), slot(0, 0)];
        let e = t.strongest(slots.iter().copied());
        assert_eq!((e.slots, e.counts), (2, slot(10, 10)));
        assert!((e.llr - 10.0 * 4f64.ln()).abs() < 1e-9);
        // Slot by slot, a running CUSUM reaches the same number.
        let mut cusum = 0.0f64;
        for c in slots {
            cusum = (cusum + t.increment(c)).max(0.0);
        }
        assert!((cusum - e.llr).abs() < 1e-9);
        assert_eq!(t.strongest([slot(100, 0)].into_iter()), Evidence::default());
    }

    #[test]
    fn edge_limits() {
        let c = Counts {
            trials: 5,
            events: 1,
        };
        assert_eq!(Test::new(0.0).increment(c), f64::INFINITY);
        assert_eq!(Test::new(1.0).increment(c), 0.0);
        // A limit of 0.4 is tested against 0.7, not an impossible 1.6.
        match Test::new(0.4) {
            Test::Ratio { up, down } => {
                assert!((up - (0.7f64 / 0.4).ln()).abs() < 1e-12);
                assert!((down - (0.3f64 / 0.6).ln()).abs() < 1e-12);
            }
            other => panic!("{other:?}"),
        }
        assert!((threshold(1e-5) - 100_000f64.ln()).abs() < 1e-9);
    }
}
