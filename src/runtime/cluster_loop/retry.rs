//! Retrying without flooding: calls bounded in time, capped exponential
//! backoff with jitter, and failure streaks logged once and then as reminders.
//!
//! Design rule: no API calls of its own; the loops wrap theirs with these.

use super::*;

/// Runs `call` for at most `limit`; a call cut off is an error naming the limit.
pub(super) async fn bounded<T, E: std::fmt::Display>(
    limit: Duration,
    call: impl Future<Output = std::result::Result<T, E>>,
) -> std::result::Result<T, String> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// Capped exponential backoff with jitter: each wait is between half and all of
/// the current step, so guards that failed together do not retry together.
pub(super) struct Backoff {
    first: Duration,
    step: Duration,
    jitter: Jitter,
}

impl Backoff {
    pub(super) fn new(first: Duration, seed: &str) -> Self {
        Self {
            first,
            step: first,
            jitter: Jitter::new(seed),
        }
    }

    /// The wait after one more failure; at least `at_least` (the server's `Retry-After`).
    pub(super) fn next(&mut self, at_least: Option<Duration>) -> Duration {
        let wait = self.step.mul_f64(0.5 + 0.5 * self.jitter.next_unit());
        self.step = (self.step * 2).min(MAX_BACKOFF);
        wait.max(at_least.unwrap_or_default().min(MAX_RETRY_AFTER))
    }

    pub(super) fn reset(&mut self) {
        self.step = self.first;
    }
}

/// Logs a failure that may repeat every round without flooding the log: the first
/// failure of a streak and a new kind of failure are warned about, then a reminder
/// with the count at most every [`LOG_AGAIN_AFTER`]; the recovery is logged once.
#[derive(Default)]
pub(super) struct Streak {
    failures: u64,
    last_logged: Option<(Instant, String)>,
}

impl Streak {
    pub(super) fn failed(&mut self, what: &str, error: &str) {
        self.failures += 1;
        let now = Instant::now();
        let due = match &self.last_logged {
            None => true,
            Some((at, kind)) => kind != what || now >= *at + LOG_AGAIN_AFTER,
        };
        if due {
            tracing::warn!(failures = self.failures, error, "{what}");
            self.last_logged = Some((now, what.to_owned()));
        } else {
            tracing::debug!(failures = self.failures, error, "{what}");
        }
    }

    /// Ends the streak; true when there was one.
    pub(super) fn recovered(&mut self, what: &str) -> bool {
        let had = self.failures > 0;
        if had {
            tracing::info!(failures = self.failures, "{what}");
        }
        self.failures = 0;
        self.last_logged = None;
        had
    }
}
