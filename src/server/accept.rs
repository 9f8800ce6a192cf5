//! What the accept loop does when `accept` itself fails.
//!
//! Design rule: never spin and never flood the log. A client that left before
//! it was accepted (ECONNABORTED and the like) is skipped at once: the next
//! connection is another client. Anything else (EMFILE, ENFILE, ENOBUFS...)
//! will fail again right away, so the loop pauses, 100 ms doubling to 1 s and
//! back to 100 ms after an accept succeeds, and a warning goes out at most
//! every 10 s, counting the failures since the last one.

use std::io;
use std::time::Duration;

use tokio::time::Instant;

const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Whether a failed accept was only a client that left before it was accepted.
pub(super) fn client_left(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// The pause after failed accepts, and when to log them.
#[derive(Debug)]
pub(super) struct Backoff {
    pause: Duration,
    logged_at: Option<Instant>,
    unlogged: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            pause: FIRST_PAUSE,
            logged_at: None,
            unlogged: 0,
        }
    }
}

impl Backoff {
    /// After an accept failed at `now` (and not because the client left): how
    /// long to pause, and `Some(failures since the last warning)` when it is
    /// time for another.
    pub(super) fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        let pause = self.pause;
        self.pause = (pause * 2).min(MAX_PAUSE);
        self.unlogged += 1;
        let log = self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
        if !log {
            return (pause, None);
        }
        self.logged_at = Some(now);
        (pause, Some(std::mem::take(&mut self.unlogged)))
    }

    /// After an accept succeeded: the next failure pauses briefly again.
    pub(super) fn succeeded(&mut self) {
        self.pause = FIRST_PAUSE;
    }
}
