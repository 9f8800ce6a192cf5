//! The header-read timeout of an HTTP/1 connection, kept by its serving loop
//! instead of by hyper, whose timer was a boxed timer set up, registered and
//! dropped again for every request head.
//!
//! Design rule: one timer per connection, armed once and looked at when it
//! fires. A wait for a head is timed from when it began (the hyper
//! connection's start or the last answer), so a request costs one clock read
//! and the timer only moves when it fires. The waker left by arming stays
//! valid: every pass comes from the connection's own task.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pub(super) struct HeadDeadline {
    timer: Pin<Box<Sleep>>,
    timeout: Duration,
    /// Polled since its last reset, so its firing wakes the task.
    armed: bool,
}

impl HeadDeadline {
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            timer: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            armed: false,
        }
    }

    /// Times a wait for a head that began at `since`.
    pub(super) fn restart(&mut self, since: Instant) {
        self.timer.as_mut().reset(since + self.timeout);
        self.armed = false;
    }

    /// Whether a head has been waited for longer than the timeout.
    /// `waiting_since` tells when the wait for the current head began, or
    /// `None` while a request is being answered; it is asked only once the
    /// timer fired.
    pub(super) fn expired(
        &mut self,
        cx: &mut Context<'_>,
        waiting_since: impl Fn() -> Option<Instant>,
    ) -> bool {
        loop {
            if !self.armed {
                self.armed = true;
                if self.timer.as_mut().poll(cx).is_pending() {
                    return false;
                }
            } else if !self.timer.is_elapsed() {
                return false;
            }
            let now = Instant::now();
            let next = match waiting_since() {
                Some(since) if now >= since + self.timeout => return true,
                Some(since) => since + self.timeout,
                None => now + self.timeout,
            };
            self.timer.as_mut().reset(next);
            self.armed = false;
        }
    }
}
