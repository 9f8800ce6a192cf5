//! HTTP/1.1 requests without a body to the app, over connections kept open
//! between requests.
//!
//! Design rule: a connection serves one request at a time and is driven by
//! that request ([`link`]), from the request's head to the end of the response
//! body through its [`Lease`]; no task of its own, no channel to another
//! thread. Idle connections wait on a last-in-first-out stack where nothing
//! polls them, so the most recently used goes out first. A connection the app
//! closed meanwhile shows it before anything is written, and the request is
//! then sent on another connection; as with hyper-util's
//! `retry_canceled_requests`, only a request that never left and only off a
//! connection that had served before. A request that may have reached the app
//! is never sent twice.

mod chunked;
mod head;
mod link;
#[cfg(test)]
mod tests;

use crate::BoxError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{header, HeaderValue, Request, Response};
use http_body::{Frame, SizeHint};
use parking_lot::Mutex;
use tokio::time::Instant;

pub use link::LinkError;
use link::{Link, Unanswered};

/// Why a request got no response from the app.
#[derive(Debug)]
pub enum Failure {
    /// No connection to the app could be opened.
    Connect(BoxError),
    /// The connection failed while the request was on it.
    Request(BoxError),
    /// No response headers came within the upstream timeout.
    Timeout,
}

/// The app's HTTP/1.1 connections: cheap to clone, all clones share them.
#[derive(Clone)]
pub struct Upstreams {
    shared: Arc<Shared>,
}

struct Shared {
    authority: Authority,
    /// `Host` for requests that came without one.
    host: HeaderValue,
    connect_timeout: Duration,
    /// Idle connections older than this are closed, never used.
    idle_timeout: Duration,
    /// Idle connections and when each became idle, the newest last.
    idle: Mutex<Vec<(Instant, Box<Link>)>>,
    /// Whether the task that closes expired idle connections runs.
    reaping: AtomicBool,
}

/// A connection lent to one response until its body ends.
pub struct Lease {
    /// Taken when the body ends and the connection goes back.
    link: Option<Box<Link>>,
    home: Arc<Shared>,
    /// Something went out (the head, data) and hyper has not been told to
    /// wait since.
    unflushed: bool,
    /// An error held back until hyper has written out what came before it.
    held: Option<LinkError>,
}

impl Upstreams {
    /// Connections to the app at `authority`.
    pub fn new(authority: Authority, connect_timeout: Duration, idle_timeout: Duration) -> Self {
        // As hyper-util writes it: the port only when it is not http's own.
        let host = match authority.port_u16() {
            Some(80) => authority.host(),
            _ => authority.as_str(),
        };
        let host = HeaderValue::from_str(host).expect("an authority is a valid Host");
        Self {
            shared: Arc::new(Shared {
                authority,
                host,
                connect_timeout,
                idle_timeout,
                idle: Mutex::new(Vec::new()),
                reaping: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `req` (its URI's path and query; a `Host` is added when it has
    /// none) and returns the response head, within `timeout` when there is
    /// one, with the connection its body will come over.
    pub async fn send(
        &self,
        mut req: Request<()>,
        timeout: Option<Duration>,
    ) -> Result<(Response<()>, Lease), Failure> {
        let deadline = timeout.map(|t| Instant::now() + t);
        req.headers_mut()
            .entry(header::HOST)
            .or_insert_with(|| self.shared.host.clone());
        loop {
            let (mut link, reused) = match self.checkout() {
                Some(link) => (link, true),
                None => (self.open(deadline).await?, false),
            };
            // Closed by the app while it waited: nothing was sent on it.
            if reused && link.stale() {
                continue;
            }
            match link.exchange(&req, deadline).await {
                Ok(resp) => {
                    let mut lease = Lease {
                        link: Some(link),
                        home: self.shared.clone(),
                        // The response head is not out yet either.
                        unflushed: true,
                        held: None,
                    };
                    // No body (HEAD, 204, 304, a length of 0): free at once.
                    if lease.ended() {
                        lease.release();
                    }
                    return Ok((resp, lease));
                }
                // The link drops with the request on it: closed.
                Err(Unanswered::TimedOut) => return Err(Failure::Timeout),
                // Never sent, on a connection that had served: it was closing.
                Err(Unanswered::Unsent(_)) if reused => {}
                Err(Unanswered::Unsent(e) | Unanswered::Failed(e)) => {
                    return Err(Failure::Request(e.into()))
                }
            }
        }
    }

    /// A new connection, by `deadline` when there is one. Boxed: connecting
    /// is rare, and its future would otherwise make every request's larger.
    async fn open(&self, deadline: Option<Instant>) -> Result<Box<Link>, Failure> {
        let s = &self.shared;
        let open = Box::pin(Link::open(&s.authority, s.connect_timeout));
        match deadline {
            Some(d) => tokio::time::timeout_at(d, open)
                .await
                .unwrap_or(Err(Failure::Timeout)),
            None => open.await,
        }
    }

    /// The newest idle connection that has not expired. It is not polled
    /// here: one the app closed meanwhile sees the close when the request
    /// drives it, before anything is written, and gives the request back.
    fn checkout(&self) -> Option<Box<Link>> {
        let mut idle = self.shared.idle.lock();
        let now = Instant::now();
        while let Some((since, link)) = idle.pop() {
            if now.saturating_duration_since(since) < self.shared.idle_timeout {
                return Some(link);
            }
        }
        None
    }
}

impl Lease {
    /// The next frame of the response body. The app cutting a response short
    /// can show right after its last data; hyper would then drop that data
    /// unwritten. Such an error waits for one more poll, as it would behind
    /// another task.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, LinkError>>> {
        if let Some(e) = self.held.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let Some(link) = &mut self.link else {
            return Poll::Ready(None);
        };
        let polled = link.poll_frame(cx);
        match polled {
            Poll::Ready(Some(Err(e))) if self.unflushed => {
                self.unflushed = false;
                self.held = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(None) => {
                self.release();
                Poll::Ready(None)
            }
            polled => {
                self.unflushed = matches!(polled, Poll::Ready(Some(Ok(_))));
                if link.ended() {
                    self.release();
                }
                polled
            }
        }
    }

    /// Whether the body has ended.
    pub fn ended(&self) -> bool {
        self.link.as_ref().is_none_or(|l| l.ended())
    }

    /// What is known of the rest of the body's length.
    pub fn size_hint(&self) -> SizeHint {
        self.link
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |l| l.size_hint())
    }

    /// Whether the body failed and hyper has not been told yet.
    pub fn failed(&self) -> bool {
        self.held.is_some()
    }

    /// The body ended: the connection goes back to the stack when it can
    /// serve again. Dropping a lease before instead closes the connection.
    fn release(&mut self) {
        if let Some(mut link) = self.link.take() {
            if link.idle() {
                link.shrink();
                self.home.put(link);
            }
        }
    }
}

impl Shared {
    fn put(self: &Arc<Self>, link: Box<Link>) {
        let now = Instant::now();
        let expired = {
            let mut idle = self.idle.lock();
            idle.push((now, link));
            self.take_expired(&mut idle, now)
        };
        // Closed outside the lock.
        drop(expired);
        // The first connection back starts the reaper; the load spares every
        // later one a look-up of the runtime, which a body dropped while the
        // runtime shuts down no longer has.
        if !self.reaping.load(Ordering::Relaxed) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                if !self.reaping.swap(true, Ordering::Relaxed) {
                    runtime.spawn(reap(Arc::downgrade(self), self.idle_timeout));
                }
            }
        }
    }

    /// Removes the connections idle for longer than the timeout (the oldest
    /// are at the bottom of the stack).
    fn take_expired(
        &self,
        idle: &mut Vec<(Instant, Box<Link>)>,
        now: Instant,
    ) -> Vec<(Instant, Box<Link>)> {
        let n = idle
            .iter()
            .take_while(|(since, _)| now.saturating_duration_since(*since) >= self.idle_timeout)
            .count();
        idle.drain(..n).collect()
    }
}

/// Closes expired idle connections while traffic is too light to do it.
async fn reap(shared: Weak<Shared>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let expired = shared.take_expired(&mut shared.idle.lock(), Instant::now());
        drop(expired);
    }
}
