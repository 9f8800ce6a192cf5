//! The signal that the drain began, as each connection sees it.
//!
//! Design rule: a connection polls its drain on every wake-up, so after the
//! first poll it costs one atomic load. That poll leaves a waker with the
//! signal; it stays valid because every later poll comes from the same
//! connection task, whose waker never changes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::watch;

#[cfg(test)]
mod tests;

/// Resolves once the drain begins, or once its sender is gone.
pub(super) struct Drain {
    /// Read for the answer: `has_changed` is a load of the version.
    seen: watch::Receiver<()>,
    /// Polled once, to leave the connection task's waker with the sender.
    wake: Pin<Box<dyn Future<Output = ()> + Send>>,
    registered: bool,
}

impl Drain {
    pub(super) fn new(draining: &watch::Sender<()>) -> Self {
        let mut woken = draining.subscribe();
        Self {
            seen: draining.subscribe(),
            wake: Box::pin(async move {
                let _ = woken.changed().await;
            }),
            registered: false,
        }
    }
}

impl Future for Drain {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // An error: the sender is gone, so no drain can follow either.
        if self.seen.has_changed().unwrap_or(true) {
            return Poll::Ready(());
        }
        if !self.registered {
            self.registered = true;
            return self.wake.as_mut().poll(cx);
        }
        Poll::Pending
    }
}
