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
mod tests;
