//! One proxied request from its arrival to its single record.
//!
//! Design rule: a request that reached the app is recorded exactly once.
//! Whatever ends it first records it — its outcome, the client's own gRPC
//! deadline running out — and dropping it unrecorded (the client went away:
//! connection closed, RST_STREAM, cancel) records it as abandoned. Until its
//! response headers arrive it sits in the window's in-flight registry, so a
//! check can see it waiting.

use std::time::Duration;

use tokio::time::Instant;

use super::Recorder;
use crate::domain::in_flight::Ticket;
use crate::domain::window::Outcome;

/// A request that has not been recorded yet.
pub struct Pending {
    recorder: Recorder,
    start: Instant,
    /// Its place in the in-flight registry, until the headers arrive.
    ticket: Option<Ticket>,
    /// Time to the response headers, once they arrived.
    latency: Option<Duration>,
    /// When the app last sent anything (the request's start until then).
    progress: Instant,
    /// The deadline the client sent (`grpc-timeout`), if any.
    deadline: Option<Duration>,
    recorded: bool,
}

impl Pending {
    /// A request that arrived at `start`, with the client's gRPC deadline if it sent one.
    pub fn new(recorder: Recorder, start: Instant, deadline: Option<Duration>) -> Self {
        let ticket = Some(recorder.window.in_flight().enter(start.into_std()));
        Self {
            recorder,
            start,
            ticket,
            latency: None,
            progress: start,
            deadline,
            recorded: false,
        }
    }

    /// The response headers arrived now: the request's latency is the time to them.
    pub fn headers(&mut self) -> Duration {
        let now = Instant::now();
        let latency = now.saturating_duration_since(self.start);
        self.leave();
        self.latency = Some(latency);
        self.progress = now;
        latency
    }

    /// The app sent more of the response.
    pub fn progress(&mut self) {
        self.progress = Instant::now();
    }

    /// Whether the deadline the client sent has run out: an answer of
    /// DEADLINE_EXCEEDED now is the client's deadline, not the app failing.
    pub fn past_clients_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| self.start.elapsed() >= d)
    }

    /// Records the outcome, with the time to the headers (or until now,
    /// when none came) as its latency.
    pub fn finish(mut self, outcome: Outcome) {
        let latency = self.latency.unwrap_or_else(|| self.start.elapsed());
        self.leave();
        self.recorded = true;
        self.recorder
            .window
            .record(Instant::now().into_std(), latency, outcome);
    }

    /// Records a request the client gave up on (see [`Window::record_abandoned`]).
    ///
    /// [`Window::record_abandoned`]: crate::domain::window::Window::record_abandoned
    pub fn abandon(mut self) {
        self.record_abandoned();
    }

    /// Records a request whose own body broke off: the client's doing however
    /// long it took, so counted as abandoned and never judged.
    pub fn client_fault(mut self) {
        self.leave();
        self.recorded = true;
        let now = Instant::now();
        self.recorder
            .window
            .record_abandoned(now.into_std(), Duration::ZERO, None);
    }

    fn record_abandoned(&mut self) {
        if self.recorded {
            return;
        }
        self.leave();
        self.recorded = true;
        let now = Instant::now();
        let waited = now.saturating_duration_since(self.progress);
        self.recorder
            .window
            .record_abandoned(now.into_std(), waited, self.latency);
    }

    fn leave(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.recorder.window.in_flight().leave(t);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Dropped unrecorded: the client went away first.
        self.record_abandoned();
    }
}

#[cfg(test)]
mod tests;
