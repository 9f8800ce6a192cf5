//! Telling a refused client from one that left: the [`Refusal`]s the accept loop
//! reports, and the wrappers around the stream and the service that give it the
//! facts to decide.
//!
//! Design rule: only a client the guard turned away is a refusal; clients that
//! leave, idle keep-alive connections and the drain are not, so a count of
//! refusals never blames the guard for a client's choice.

use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::service::Service;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A client answered or cut off before the service saw a request: by hyper
/// (HTTP/1) or by one of the accept loop's deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The request head outgrew `max_header_bytes`: 431 (414 for a URI over
    /// hyper's own limit), then close.
    HeaderTooLarge,
    /// A request head, or a new connection's first request, did not come
    /// complete within `header_read_timeout`: the connection is closed.
    HeaderTimeout,
    /// The request head did not parse as HTTP/1: 400, then close.
    MalformedRequest,
    /// The transport's handshake (TLS) did not finish within
    /// `handshake_timeout`: the connection is closed. Plain TCP has none.
    HandshakeTimeout,
}

impl Refusal {
    /// The `reason` label it is counted under.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::HeaderTooLarge => "header_too_large",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::MalformedRequest => "malformed_request",
            Refusal::HandshakeTimeout => "handshake_timeout",
        }
    }
}

/// Classifies the error a connection ended with: `Some` if hyper refused the
/// client. A request head past the header-read timeout is not an error but
/// an outcome of `h1::serve`, which tells it from an idle connection.
///
/// Clients that leave (EOF or reset, also mid-head), graceful shutdown and
/// HTTP/2 errors are not refusals.
pub fn classify(error: &(dyn StdError + 'static)) -> Option<Refusal> {
    // hyper-util's auto connection boxes hyper's error; look through the chain.
    let hyper = std::iter::successors(Some(error), |e| (*e).source())
        .find_map(|e| e.downcast_ref::<hyper::Error>())?;
    if hyper.is_parse_too_large() {
        Some(Refusal::HeaderTooLarge)
    } else if hyper.is_parse() {
        Some(Refusal::MalformedRequest)
    } else {
        None
    }
}

/// A client stream that notes whether bytes came in since the last write: when
/// the header-read timeout passes, that tells a slow client from an idle one.
/// Over TLS it counts the decrypted bytes, which are what hyper waits for.
pub(super) struct Tracked<T> {
    pub(super) io: T,
    pub(super) unanswered: Arc<AtomicBool>,
}

impl<T> Tracked<T> {
    fn answered(&self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.unanswered.store(false, Ordering::Relaxed);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.unanswered.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.answered(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.answered(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The service, noting that its connection delivered a request.
pub(super) struct FirstRequest<S> {
    pub(super) inner: S,
    pub(super) requested: Arc<AtomicBool>,
}

impl<S: Service<R>, R> Service<R> for FirstRequest<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, req: R) -> Self::Future {
        self.requested.store(true, Ordering::Relaxed);
        self.inner.call(req)
    }
}
