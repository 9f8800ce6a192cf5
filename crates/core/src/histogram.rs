//! Fixed log-linear latency buckets shared by every sample source.
//!
//! Boundaries are in nanoseconds. Each decade from 10 µs to 60 s is split
//! linearly in three bands (`1–2` by 0.05, `2–5` by 0.1, `5–10` by 0.25), so no
//! bucket is wider than 5% of its lower bound, and the set contains every
//! bucket boundary Envoy uses for `istio_request_duration_milliseconds`
//! (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000 and
//! 60000 ms), so Envoy's histograms map onto ours exactly.

use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Upper bound of the highest finite bucket; slower samples land in the overflow bucket.
pub const MAX_TRACKED: Duration = Duration::from_secs(60);

/// Version of the bucket layout, carried in serialized summaries.
pub const LAYOUT_VERSION: u32 = 1;

/// Lower bounds (ns) of every bucket; bucket `i` is `[bounds[i], bounds[i+1])`,
/// the first starts at 0 and the last is open-ended.
/// The first bucket [`Histogram::count_from`] counts for `limit`.
pub fn first_bucket_from(limit: Duration) -> usize {
    let ns = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
    lower_bounds().partition_point(|&b| b < ns)
}

fn lower_bounds() -> &'static [u64] {
    static BOUNDS: OnceLock<Vec<u64>> = OnceLock::new();
    BOUNDS.get_or_init(|| {
        // Mantissas in hundredths so every boundary is an integer number of ns.
        let mut mantissas = Vec::new();
        mantissas.extend((100..200).step_by(5));
        mantissas.extend((200..500).step_by(10));
        mantissas.extend((500..1000).step_by(25));
        let max = MAX_TRACKED.as_nanos() as u64;
        let mut bounds = vec![0];
        // 10 µs = 10^4 ns; the mantissa unit is 1/100, so start at 10^2.
        let mut scale = 100u64;
        'outer: loop {
            for m in &mantissas {
                let b = m * scale;
                if b > max {
                    break 'outer;
                }
                bounds.push(b);
            }
            scale *= 10;
        }
        bounds
    })
}

/// Number of buckets (including the `[0, 10µs)` and `[60s, ∞)` buckets).
pub fn bucket_count() -> usize {
    lower_bounds().len()
}

/// Index of the bucket that holds a sample of `latency`.
#[inline]
pub fn bucket_index(latency: Duration) -> usize {
    let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
    // partition_point returns the count of bounds <= ns, which is at least 1.
    lower_bounds().partition_point(|&b| b <= ns) - 1
}

/// Index of the bucket whose upper bound is exactly `upper`, if `upper` is a boundary.
pub fn index_of_upper_bound(upper: Duration) -> Option<usize> {
    let ns = u64::try_from(upper.as_nanos()).ok()?;
    let bounds = lower_bounds();
    bounds
        .binary_search(&ns)
        .ok()
        .filter(|&i| i > 0)
        .map(|i| i - 1)
}

/// `[lower, upper)` of bucket `i` in nanoseconds; the last bucket's upper is `None`.
pub fn bucket_range(i: usize) -> (u64, Option<u64>) {
    let b = lower_bounds();
    (b[i], b.get(i + 1).copied())
}

/// A dense latency histogram with counts per bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; bucket_count()],
        }
    }
}

impl Histogram {
    /// Adds `n` samples to bucket `i`; out-of-range indexes are ignored.
    pub fn add(&mut self, i: usize, n: u64) {
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.saturating_add(n);
        }
    }

    /// Adds one sample of `latency`.
    pub fn record(&mut self, latency: Duration) {
        self.add(bucket_index(latency), 1);
    }

    /// Adds every bucket of `other` to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
    }

    /// Total number of samples.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }

    /// Counts per bucket.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Samples at or above `limit`, counting whole buckets from the first
    /// boundary at or above it (so at most 5% above `limit`): a bucket that
    /// straddles the limit is not counted, since its samples may all be under it.
    pub fn count_from(&self, limit: Duration) -> u64 {
        self.counts
            .iter()
            .skip(first_bucket_from(limit))
            .fold(0u64, |a, &c| a.saturating_add(c))
    }

    /// The `q` quantile (0 < q ≤ 1), interpolated linearly inside its bucket, or
    /// `None` when the histogram is empty. Samples past [`MAX_TRACKED`] report it.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if (seen + c) as f64 >= rank {
                let (lo, hi) = bucket_range(i);
                let Some(hi) = hi else {
                    return Some(Duration::from_nanos(lo));
                };
                let frac = (rank - seen as f64) / c as f64;
                let ns = lo as f64 + frac * (hi - lo) as f64;
                return Some(Duration::from_nanos(ns as u64));
            }
            seen += c;
        }
        None
    }

    /// The sum of all samples, taking each at its bucket's midpoint (the
    /// overflow bucket at its lower bound).
    pub fn estimated_sum(&self) -> Duration {
        let ns: f64 = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| {
                let (lo, hi) = bucket_range(i);
                let mid = hi.map_or(lo as f64, |hi| (lo + hi) as f64 / 2.0);
                mid * c as f64
            })
            .sum();
        Duration::from_secs_f64(ns / 1e9)
    }

    /// The sparse form: `(bucket index, count)` for every non-empty bucket.
    pub fn to_sparse(&self) -> Vec<(u16, u64)> {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| (i as u16, c))
            .collect()
    }

    /// Builds a histogram from its sparse form; rejects unknown bucket indexes.
    pub fn from_sparse(sparse: &[(u16, u64)]) -> Result<Self, String> {
        let mut h = Histogram::default();
        for &(i, c) in sparse {
            let i = usize::from(i);
            if i >= h.counts.len() {
                return Err(format!(
                    "bucket index {i} out of range (layout has {})",
                    h.counts.len()
                ));
            }
            h.add(i, c);
        }
        Ok(h)
    }
}

impl Serialize for Histogram {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_sparse().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Histogram {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let sparse = Vec::<(u16, u64)>::deserialize(d)?;
        Histogram::from_sparse(&sparse).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_boundaries_are_bucket_boundaries() {
        for ms in [
            0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
            30000.0, 60000.0,
        ] {
            let d = Duration::from_secs_f64(ms / 1000.0);
            assert!(
                index_of_upper_bound(d).is_some(),
                "{ms} ms is not a boundary"
            );
        }
    }

    #[test]
    fn count_from_counts_whole_buckets_at_or_above_the_limit() {
        let ms = Duration::from_millis;
        let mut h = Histogram::default();
        h.record(ms(400));
        h.record(ms(499));
        h.record(ms(500));
        h.record(ms(2000));
        h.record(MAX_TRACKED * 2);
        // 500 ms is a boundary: its bucket and everything above count.
        assert_eq!(h.count_from(ms(500)), 3);
        // 510 ms falls inside [500, 525): that bucket may hold samples under it.
        assert_eq!(h.count_from(ms(510)), 2);
        assert_eq!(h.count_from(Duration::ZERO), 5);
        assert_eq!(h.count_from(Duration::MAX), 0);
    }

    #[test]
    fn buckets_are_at_most_five_percent_wide() {
        for i in 1..bucket_count() - 1 {
            let (lo, hi) = bucket_range(i);
            let hi = hi.unwrap();
            assert!(hi > lo);
            assert!((hi - lo) as f64 / lo as f64 <= 0.05 + 1e-9, "bucket {i}");
        }
        assert_eq!(bucket_range(bucket_count() - 1), (60_000_000_000, None));
    }

    #[test]
    fn index_matches_range() {
        for ns in [
            0u64,
            9_999,
            10_000,
            10_499,
            10_500,
            499_999,
            500_000,
            59_999_999_999,
        ] {
            let i = bucket_index(Duration::from_nanos(ns));
            let (lo, hi) = bucket_range(i);
            assert!(lo <= ns && hi.is_none_or(|h| ns < h), "{ns} in bucket {i}");
        }
        assert_eq!(bucket_index(Duration::from_secs(3600)), bucket_count() - 1);
    }

    #[test]
    fn quantiles_within_five_percent() {
        // A spread of latencies from 1 ms to 10 s: the true p99 is the 9,900th of 10,000.
        let mut h = Histogram::default();
        let samples: Vec<Duration> = (1..=10_000u64)
            .map(|i| Duration::from_micros(1_000 + i * 999))
            .collect();
        for s in &samples {
            h.record(*s);
        }
        for (q, idx) in [(0.5, 4_999), (0.9, 8_999), (0.99, 9_899)] {
            let truth = samples[idx].as_secs_f64();
            let got = h.quantile(q).unwrap().as_secs_f64();
            assert!((got - truth).abs() / truth < 0.05, "q{q}: {got} vs {truth}");
        }
    }

    #[test]
    fn quantile_of_empty_is_none_and_overflow_reports_limit() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.99), None);
        h.record(Duration::from_secs(120));
        assert_eq!(h.quantile(0.99), Some(MAX_TRACKED));
    }

    #[test]
    fn sparse_round_trip_and_merge() {
        let mut a = Histogram::default();
        a.record(Duration::from_millis(3));
        a.record(Duration::from_millis(3));
        let mut b = Histogram::default();
        b.record(Duration::from_millis(700));
        let json = serde_json::to_string(&a).unwrap();
        let back: Histogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        a.merge(&b);
        assert_eq!(a.total(), 3);
        assert_eq!(a.to_sparse().len(), 2);
        assert!(serde_json::from_str::<Histogram>("[[60000,1]]").is_err());
    }
}
