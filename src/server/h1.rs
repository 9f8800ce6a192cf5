//! HTTP/1 connections that let hyper's buffers go while they wait. hyper
//! keeps an 8 KiB read and an 8 KiB write buffer for as long as its
//! connection lives and has no setting to release them. So a connection that
//! rests between requests for `park_after`, or any connection once
//! `max_resting` others rest, has its socket taken back from hyper and parked
//! until the client's next bytes arrive; a fresh hyper connection serves
//! them. Busy connections keep theirs: setting one up again for every request
//! costs about 5% more CPU per request.
//!
//! Design rule: a connection is parked only at a clean boundary: an HTTP/1.1
//! request with no body that did not ask to close, whose response body is
//! gone, and no switch of protocols. Anything else keeps its hyper connection
//! to the end, as it would without parking.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

mod head_deadline;
#[cfg(test)]
mod tests;

use super::refusal::Tracked;
use super::rewind::Rewind;
use super::takeover::{self, Takeover};
use super::transport::Transport;
use super::BoxError;
use head_deadline::HeadDeadline;

/// What a connection's requests tell its loop.
struct Turn {
    /// Requests seen, so the loop can tell whether one came meanwhile.
    requests: AtomicU64,
    /// The latest request may end its hyper connection once answered.
    parkable: AtomicBool,
    /// The latest request's response body is gone.
    answered: AtomicBool,
    /// When it went, in nanoseconds since `epoch`: hyper waits for the next
    /// head from then.
    answered_at: AtomicU64,
    epoch: Instant,
}

impl Turn {
    fn new() -> Self {
        Self {
            requests: AtomicU64::new(0),
            parkable: AtomicBool::new(false),
            answered: AtomicBool::new(false),
            answered_at: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Whether the hyper connection is between requests at a clean boundary.
    fn at_rest(&self) -> bool {
        self.parkable.load(Ordering::Relaxed) && self.answered.load(Ordering::Relaxed)
    }

    /// The latest response body is gone.
    fn answer(&self) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.answered_at.store(nanos, Ordering::Relaxed);
        self.answered.store(true, Ordering::Relaxed);
    }

    /// Since when hyper has been waiting for a head: from `started` if no
    /// request came since `first` was the count, from the last answer if it
    /// went; `None` while a request is being answered.
    fn waiting_since(&self, first: u64, started: Instant) -> Option<Instant> {
        if self.requests.load(Ordering::Relaxed) == first {
            Some(started)
        } else if self.answered.load(Ordering::Relaxed) {
            let nanos = self.answered_at.load(Ordering::Relaxed);
            Some(self.epoch + Duration::from_nanos(nanos))
        } else {
            None
        }
    }
}

/// When connections wait and park.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timing {
    /// Longest wait for a request: a new connection's first, a parked one's
    /// next (as long as hyper's header-read timer let connections idle).
    pub(super) header_read_timeout: Duration,
    /// How long a connection rests (keeps its hyper connection between
    /// requests) before it is parked: busy connections pay nothing for
    /// parking. Zero parks after every answer.
    pub(super) park_after: Duration,
}

/// How many connections may rest at once; the others park after every
/// answer, so memory stays bounded however many clients keep connections.
pub(super) struct Rests {
    resting: AtomicUsize,
    max: usize,
}

impl Rests {
    pub(super) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            resting: AtomicUsize::new(0),
            max,
        })
    }

    fn take(self: &Arc<Self>) -> Option<Rest> {
        if self.resting.fetch_add(1, Ordering::Relaxed) < self.max {
            Some(Rest(self.clone()))
        } else {
            self.resting.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }
}

/// One connection's place among the resting, given back when dropped.
struct Rest(Arc<Rests>);

impl Drop for Rest {
    fn drop(&mut self) {
        self.0.resting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves HTTP/1 on `io` (after `prefix`, bytes already read from it) until
/// the client leaves, hyper fails the connection, it idles for
/// `timing.header_read_timeout` between requests, or `drain` resolves.
/// `Ok(None)`: a request head did not come whole within that timeout.
pub(super) async fn serve<T, S, B>(
    builder: &http1::Builder,
    mut io: Tracked<T::Io>,
    mut prefix: Bytes,
    service: S,
    timing: Timing,
    rests: &Arc<Rests>,
    drain: Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<()>, hyper::Error>
where
    T: Transport,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let turn = Arc::new(Turn::new());
    let unanswered = io.unanswered.clone();
    let mut head = HeadDeadline::new(timing.header_read_timeout);
    let takeover = Takeover::default();
    let mut service = Parking {
        inner: Box::new(service),
        turn: turn.clone(),
        takeover: takeover.clone(),
    };
    let mut drain = drain;
    // One timer per connection, for resting and then for waiting parked.
    let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
    loop {
        // Nothing asked on this connection yet.
        turn.answered.store(false, Ordering::Relaxed);
        let (first, started) = (turn.requests.load(Ordering::Relaxed), Instant::now());
        head.restart(started);
        let mut conn = builder.serve_connection(TokioIo::new(Rewind::new(prefix, io)), service);
        let (mut asked, mut draining) = (false, false);
        // While resting: the request count when the rest began.
        let mut rest: Option<(u64, Rest)> = None;
        let ended = poll_fn(|cx| loop {
            if let Poll::Ready(ended) = conn.poll_without_shutdown(cx) {
                return Poll::Ready(Some(ended));
            }
            if !draining && drain.as_mut().poll(cx).is_ready() {
                draining = true;
                Pin::new(&mut conn).graceful_shutdown();
                continue;
            }
            if !asked && head.expired(cx, || turn.waiting_since(first, started)) {
                return Poll::Ready(None);
            }
            if !T::PARKS || asked || !turn.at_rest() {
                return Poll::Pending;
            }
            // The timer is armed once and checked when it fires, not reset
            // per request: a busy connection costs one timer per rest period.
            let seen = turn.requests.load(Ordering::Relaxed);
            match &rest {
                None => {
                    let place = (!timing.park_after.is_zero())
                        .then(|| rests.take())
                        .flatten();
                    if let Some(place) = place {
                        rest = Some((seen, place));
                        timer.as_mut().reset(Instant::now() + timing.park_after);
                        continue;
                    }
                }
                Some((since, _)) => {
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if *since != seen {
                        // Requests came meanwhile: rest again from now.
                        rest = None;
                        continue;
                    }
                }
            }
            // Its head is written (hyper drops a body only after its head),
            // so no `Connection: close` is added: hyper finishes the response
            // and hands the socket back.
            asked = true;
            Pin::new(&mut conn).graceful_shutdown();
        })
        .await;
        drop(rest);
        let Some(ended) = ended else {
            // Past the header-read timeout: closed unanswered, as hyper's own
            // timer did. A refusal if the client had sent part of a head.
            drop(conn);
            return Ok((!unanswered.load(Ordering::Relaxed)).then_some(()));
        };
        ended?;
        let upgrade = takeover.take();
        if upgrade.is_none() && (!asked || draining) {
            // hyper ended it (the client left or asked to close, or the
            // request body was left unread), or the drain did. Polled as a
            // future, hyper sends what it still holds before it shuts the
            // stream down; `into_parts` would drop those bytes.
            return conn.await.map(Some);
        }
        let http1::Parts {
            io: hyper_io,
            read_buf,
            service: back,
            ..
        } = conn.into_parts();
        service = back;
        let (left, tracked) = hyper_io.into_inner().into_parts();
        let unread = unread(&read_buf, &left);
        // hyper's read buffer goes now, not when the connection next wakes.
        drop(read_buf);
        if let Some(upstream) = upgrade {
            if !draining {
                takeover::join(Rewind::new(unread, tracked), upstream, drain).await;
            }
            return Ok(Some(()));
        }
        io = tracked;
        prefix = unread;
        tracing::trace!(unread = prefix.len(), "connection parked");
        if prefix.is_empty() {
            timer
                .as_mut()
                .reset(Instant::now() + timing.header_read_timeout);
            let woke = poll_fn(|cx| {
                if drain.as_mut().poll(cx).is_ready() || timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(false);
                }
                T::poll_read_ready(&mut io.io, cx).map(|_| true)
            })
            .await;
            if !woke {
                // Idle past the timeout, or draining: nothing is in flight.
                return Ok(Some(()));
            }
        }
    }
}

/// `a` then `b`, copied: a slice of hyper's read buffer, even an empty one,
/// would keep all of the buffer alive.
fn unread(a: &[u8], b: &[u8]) -> Bytes {
    if a.is_empty() && b.is_empty() {
        return Bytes::new();
    }
    let mut both = BytesMut::with_capacity(a.len() + b.len());
    both.extend_from_slice(a);
    both.extend_from_slice(b);
    both.freeze()
}

/// Whether a request leaves its connection reusable at a clean boundary
/// once answered.
fn parkable(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.body().is_end_stream()
        && !connection_lists(req.headers(), "close")
}

/// Whether the `Connection` header lists `token` (in any case).
pub fn connection_lists(headers: &HeaderMap, token: &str) -> bool {
    // Bytes, not strings: no validation and no pattern searcher per value.
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The service, telling the loop when its connection can be parked.
struct Parking<S> {
    /// Boxed: hyper hands a connection back only when its service is `Unpin`.
    inner: Box<S>,
    turn: Arc<Turn>,
    takeover: Takeover,
}

impl<S, B> Service<Request<Incoming>> for Parking<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Watched<B>>;
    type Error = S::Error;
    type Future = Answer<S::Future>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        self.turn.requests.fetch_add(1, Ordering::Relaxed);
        self.turn.parkable.store(parkable(&req), Ordering::Relaxed);
        self.turn.answered.store(false, Ordering::Relaxed);
        // Only where a switch may follow: a first insert allocates the map.
        if req.headers().contains_key(header::UPGRADE) {
            req.extensions_mut().insert(self.takeover.clone());
        }
        Answer {
            inner: Box::pin(self.inner.call(req)),
            turn: Some(self.turn.clone()),
        }
    }
}

/// The service's answer, its body watched. The service's future is boxed:
/// hyper hands a connection back only when its future is `Unpin`; boxed on
/// its own (not inside another future) it is copied once per request.
pub(super) struct Answer<F> {
    inner: Pin<Box<F>>,
    turn: Option<Arc<Turn>>,
}

impl<F, B, E> Future for Answer<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Watched<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let resp = std::task::ready!(self.inner.as_mut().poll(cx))?;
        let turn = self
            .turn
            .take()
            .expect("an answer is polled once it is ready");
        Poll::Ready(Ok(resp.map(|inner| Watched { inner, turn })))
    }
}

/// A response body that tells the connection's loop when it is gone.
pub(super) struct Watched<B> {
    inner: B,
    turn: Arc<Turn>,
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        self.turn.answer();
    }
}

impl<B: Body + Unpin> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
