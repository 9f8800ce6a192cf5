//! A one-sided binomial test: are `k` events out of `n` trials too many to be
//! explained by a true rate of at most `p`?
//!
//! The policy asks this twice per check — errors against `max-error-ratio`, and
//! samples over the latency limit against `1 − quantile` — so that a handful of
//! unlucky requests in a small window is not mistaken for a bad canary.

use std::f64::consts::PI;

/// Whether `k` of `n` is significantly above the rate `p`: the chance of
/// seeing `k` or more under a true rate of `p` is below `1 − confidence`.
///
/// A `confidence` of 0.5 or less asks no significance at all: any `k` above
/// `n·p` counts. A rate of 0 is exceeded by any event; a rate of 1 never is.
pub fn significantly_above(k: u64, n: u64, p: f64, confidence: f64) -> bool {
    if k > n || n == 0 {
        return false;
    }
    if p <= 0.0 {
        return k > 0;
    }
    if p >= 1.0 || k as f64 <= n as f64 * p {
        return false;
    }
    if confidence <= 0.5 {
        return true;
    }
    ln_upper_tail(k, n, p) < (1.0 - confidence).ln()
}

/// `ln P(X ≥ k)` for `X ~ Binomial(n, p)`, for `n·p < k ≤ n` and `0 < p < 1`.
///
/// Sums the first terms exactly and bounds the rest by a geometric series:
/// above the mean each term is a shrinking fraction of the previous one.
fn ln_upper_tail(k: u64, n: u64, p: f64) -> f64 {
    const EXACT_TERMS: u64 = 64;
    let odds = p / (1.0 - p);
    let mut term = 1.0;
    let mut sum = 1.0;
    let mut i = k;
    while i < n && i < k.saturating_add(EXACT_TERMS) {
        term *= (n - i) as f64 / (i + 1) as f64 * odds;
        sum += term;
        i += 1;
    }
    if i < n {
        // The ratio of the next term to this one, which only shrinks further on.
        let ratio = (n - i) as f64 / (i + 1) as f64 * odds;
        sum += term * ratio / (1.0 - ratio);
    }
    ln_pmf(k, n, p) + sum.ln()
}

/// `ln P(X = k)` for `X ~ Binomial(n, p)`, in the saddle-point form (Loader,
/// 2000) that stays accurate for windows of millions of requests, where the
/// plain `ln n! − ln k! − …` would cancel away its precision.
fn ln_pmf(k: u64, n: u64, p: f64) -> f64 {
    let q = 1.0 - p;
    if k == 0 {
        return n as f64 * (-p).ln_1p();
    }
    if k == n {
        return n as f64 * p.ln();
    }
    let (kf, nf) = (k as f64, n as f64);
    let rest = nf - kf;
    // n · KL(k/n ‖ p), written to avoid dividing small by large.
    let deviance = kf * (kf / (nf * p)).ln() + rest * (rest / (nf * q)).ln();
    stirling_error(n) - stirling_error(k) - stirling_error(n - k) - deviance
        + 0.5 * (nf / (2.0 * PI * kf * rest)).ln()
}

/// `ln m! − (m ln m − m + ½ ln 2πm)`: what Stirling's formula leaves out.
fn stirling_error(m: u64) -> f64 {
    if m < 16 {
        let ln_factorial: f64 = (2..=m).map(|i| (i as f64).ln()).sum();
        let mf = m as f64;
        return ln_factorial - (mf * mf.ln() - mf + 0.5 * (2.0 * PI * mf).ln());
    }
    let m = m as f64;
    let m2 = m * m;
    (1.0 / 12.0 - (1.0 / 360.0 - 1.0 / (1260.0 * m2)) / m2) / m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `P(X ≥ k)` by summing every term, each from scratch in log space.
    fn brute_tail(k: u64, n: u64, p: f64) -> f64 {
        let mut ln_fact = vec![0.0f64; n as usize + 1];
        for i in 2..=n as usize {
            ln_fact[i] = ln_fact[i - 1] + (i as f64).ln();
        }
        let n_us = n as usize;
        (k as usize..=n_us)
            .map(|i| {
                (ln_fact[n_us] - ln_fact[i] - ln_fact[n_us - i]
                    + i as f64 * p.ln()
                    + (n_us - i) as f64 * (1.0 - p).ln())
                .exp()
            })
            .sum()
    }

    #[test]
    fn tail_matches_the_sum_of_every_term() {
        for &n in &[1u64, 2, 5, 20, 30, 50, 100, 300, 1000] {
            for &p in &[0.001, 0.01, 0.05, 0.2, 0.5, 0.9] {
                let mean = n as f64 * p;
                for k in (mean.floor() as u64 + 1)..=n {
                    let want = brute_tail(k, n, p);
                    if want < 1e-300 {
                        continue;
                    }
                    let got = ln_upper_tail(k, n, p).exp();
                    let rel = (got - want).abs() / want;
                    // The geometric bound on the rest may only overestimate.
                    assert!(
                        rel < 1e-6 || (got > want && rel < 0.05),
                        "n={n} p={p} k={k}: {got:e} vs {want:e}"
                    );
                }
            }
        }
    }

    #[test]
    fn pmf_stays_accurate_for_large_windows() {
        // Symmetric case with a closed form: P(X = n/2) for p = ½ is C(n, n/2) / 2^n,
        // whose log is known through the central binomial coefficient's expansion.
        let n = 2_000_000u64;
        let m = (n / 2) as f64;
        let want = -0.5 * (PI * m).ln() - 1.0 / (8.0 * m);
        let got = ln_pmf(n / 2, n, 0.5);
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }

    #[test]
    fn significance_follows_the_confidence() {
        // 3 errors of 50 at a 1% background is unusual (1.4%) but not at 99.9%.
        let p3 = brute_tail(3, 50, 0.01);
        assert!((0.01..0.02).contains(&p3), "{p3}");
        assert!(significantly_above(3, 50, 0.01, 0.98));
        assert!(!significantly_above(3, 50, 0.01, 0.99));
        // Every one of 20 requests failing is far beyond a 5% limit.
        assert!(significantly_above(20, 20, 0.05, 0.999_999));
        // At or under the expected count is never significant.
        assert!(!significantly_above(5, 100, 0.05, 0.5));
        assert!(significantly_above(6, 100, 0.05, 0.5));
    }

    #[test]
    fn edge_rates_and_counts() {
        assert!(significantly_above(1, 10, 0.0, 0.999));
        assert!(!significantly_above(0, 10, 0.0, 0.999));
        assert!(!significantly_above(10, 10, 1.0, 0.5));
        assert!(!significantly_above(0, 0, 0.05, 0.999));
        assert!(!significantly_above(11, 10, 0.05, 0.999));
        assert!(significantly_above(u64::MAX / 2, u64::MAX / 2, 0.5, 0.999));
    }
}
