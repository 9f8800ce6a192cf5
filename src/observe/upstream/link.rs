//! One HTTP/1.1 connection to the app, driven by the request that holds it.
//!
//! Design rule: a link has no task and no codec but its own. Whoever holds it
//! reads and writes its socket directly: the request until the response head
//! has come, then the response body until its end. So a request costs no task
//! wake-up, no channel hop and no second parse. Only requests without a body
//! travel on links; the response may be framed any way HTTP/1.1 allows.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::uri::Authority;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::chunked::{BadChunk, Chunked, Step};
use super::head::{self, Framing, Malformed, Parsed};
use super::Failure;

/// Free room below which the read buffer grows before a read.
const MIN_ROOM: usize = 4 * 1024;
/// How much it grows by at first (hyper's first read buffer too), and at most.
const GROW: usize = 8 * 1024;
const MAX_GROW: usize = 128 * 1024;

/// Why a link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("app connection failed: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Malformed(#[from] Malformed),
    #[error(transparent)]
    Chunk(#[from] BadChunk),
    #[error("the app closed the connection before its response was complete")]
    Closed,
}

/// An open HTTP/1.1 connection to the app.
pub(super) struct Link {
    io: TcpStream,
    /// Bytes read from the app and not yet handed on.
    buf: BytesMut,
    /// The request head being written.
    out: BytesMut,
    /// Where the response body being read is.
    body: Body,
    /// How much room the next read gets: doubled after a read that filled
    /// it, so a large body takes few system calls; back to `GROW` per response.
    grow: usize,
    /// The connection may serve another request once the body ends.
    keep_alive: bool,
    /// The deadline of the request on it, one timer for the link's life:
    /// moving a registered timer's deadline later is a store, registering a
    /// timer and dropping it again for every request took the timer wheel's
    /// lock twice.
    timer: Option<Pin<Box<Sleep>>>,
}

/// Where the response body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    /// This many bytes to come.
    Length(u64),
    Chunked(Chunked),
    /// Until the app closes.
    Close,
    /// Ended (or no response yet).
    Done,
    /// Broken off: the connection is not used again.
    Failed,
}

/// Why a request got no response head over a link.
pub(super) enum Unanswered {
    /// The deadline passed; the request may have reached the app.
    TimedOut,
    /// Nothing of the request was written: it can go over another link.
    Unsent(LinkError),
    /// The request may have reached the app.
    Failed(LinkError),
}

impl Link {
    /// Connects to the app, within `timeout`. Boxed: a link travels from the
    /// stack to a request and into its response body, which hyper moves often.
    pub(super) async fn open(
        authority: &Authority,
        timeout: Duration,
    ) -> Result<Box<Self>, Failure> {
        // `[::1]` is an IPv6 host in a URI, `::1` to the resolver.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let io = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(Failure::Connect(e.into())),
            Err(_) => {
                let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                return Err(Failure::Connect(e.into()));
            }
        };
        io.set_nodelay(true)
            .map_err(|e| Failure::Connect(e.into()))?;
        Ok(Box::new(Self {
            io,
            buf: BytesMut::new(),
            out: BytesMut::new(),
            body: Body::Done,
            grow: GROW,
            keep_alive: true,
            timer: None,
        }))
    }

    /// Whether the app closed the idle connection (or wrote to it unasked).
    /// Read only when the socket showed readiness, so usually no system call.
    pub(super) fn stale(&mut self) -> bool {
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        !Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
    }

    /// Whether it can serve another request.
    pub(super) fn idle(&self) -> bool {
        self.body == Body::Done && self.keep_alive && self.buf.is_empty()
    }

    /// Lets go of buffers a large answer or head grew, before the link idles.
    pub(super) fn shrink(&mut self) {
        if self.buf.capacity() > 2 * GROW {
            self.buf = BytesMut::new();
        }
        if self.out.capacity() > 2 * GROW {
            self.out = BytesMut::new();
        }
    }

    /// The bytes its buffers hold room for.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.buf.capacity() + self.out.capacity()
    }

    /// Writes `req`'s head and reads until the response head has come, or
    /// until `deadline`.
    pub(super) async fn exchange(
        &mut self,
        req: &Request<()>,
        deadline: Option<Instant>,
    ) -> Result<Response<()>, Unanswered> {
        self.out.clear();
        self.grow = GROW;
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        head::encode(req.method(), target, req.headers(), &mut self.out);
        if let Some(deadline) = deadline {
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let mut written = 0;
        poll_fn(|cx| {
            if let Poll::Ready(answered) = self.poll_exchange(req, &mut written, cx) {
                return Poll::Ready(answered);
            }
            match &mut self.timer {
                Some(timer) if deadline.is_some() => {
                    timer.as_mut().poll(cx).map(|()| Err(Unanswered::TimedOut))
                }
                _ => Poll::Pending,
            }
        })
        .await
    }

    fn poll_exchange(
        &mut self,
        req: &Request<()>,
        written: &mut usize,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<()>, Unanswered>> {
        while *written < self.out.len() {
            let sent = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[*written..]));
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(self.unsent(*written, io::ErrorKind::WriteZero.into())))
                }
                Ok(n) => *written += n,
                Err(e) => return Poll::Ready(Err(self.unsent(*written, e))),
            }
        }
        loop {
            if !self.buf.is_empty() {
                match head::parse(&mut self.buf, req.method()) {
                    Ok(Some(Parsed::Interim)) => continue,
                    Ok(Some(Parsed::Final(head))) => {
                        self.keep_alive = head.keep_alive;
                        self.body = match head.framing {
                            Framing::Length(0) => Body::Done,
                            Framing::Length(n) => Body::Length(n),
                            Framing::Chunked => Body::Chunked(Chunked::default()),
                            Framing::Close => Body::Close,
                        };
                        return Poll::Ready(Ok(head.response));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.keep_alive = false;
                        return Poll::Ready(Err(Unanswered::Failed(e.into())));
                    }
                }
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => {
                    self.keep_alive = false;
                    return Poll::Ready(Err(Unanswered::Failed(LinkError::Closed)));
                }
                Ok(_) => {}
                Err(e) => {
                    self.keep_alive = false;
                    return Poll::Ready(Err(Unanswered::Failed(e.into())));
                }
            }
        }
    }

    /// A write failed: with nothing of the request out, it may go elsewhere.
    fn unsent(&mut self, written: usize, e: io::Error) -> Unanswered {
        self.keep_alive = false;
        if written == 0 {
            Unanswered::Unsent(e.into())
        } else {
            Unanswered::Failed(e.into())
        }
    }

    /// Reads more of the response into the buffer.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < MIN_ROOM {
            self.buf.reserve(self.grow);
        }
        let room = self.buf.capacity() - self.buf.len();
        let read = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.buf
        ));
        if matches!(read, Ok(n) if n == room) {
            self.grow = (self.grow * 2).min(MAX_GROW);
        }
        Poll::Ready(read)
    }

    /// The next frame of the response body.
    pub(super) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, LinkError>>> {
        loop {
            match &mut self.body {
                Body::Done | Body::Failed => return Poll::Ready(None),
                Body::Length(0) => {
                    self.body = Body::Done;
                    return Poll::Ready(None);
                }
                Body::Length(left) if !self.buf.is_empty() => {
                    let take =
                        usize::try_from(*left).map_or(self.buf.len(), |l| l.min(self.buf.len()));
                    *left -= take as u64;
                    if *left == 0 {
                        self.body = Body::Done;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(self.buf.split_to(take).freeze()))));
                }
                Body::Chunked(chunked) => match chunked.step(&mut self.buf) {
                    Ok(Step::Frame(frame)) => {
                        if *chunked == Chunked::Done {
                            self.body = Body::Done;
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    Ok(Step::End) => {
                        self.body = Body::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Step::More) => {}
                    Err(e) => return Poll::Ready(Some(Err(self.broken(e.into())))),
                },
                Body::Close if !self.buf.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(self.buf.split().freeze()))));
                }
                Body::Length(_) | Body::Close => {}
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) if self.body == Body::Close => {
                    self.body = Body::Done;
                    self.keep_alive = false;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(self.broken(LinkError::Closed)))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(self.broken(e.into())))),
            }
        }
    }

    /// The body failed: the connection is not used again.
    fn broken(&mut self, e: LinkError) -> LinkError {
        self.keep_alive = false;
        self.body = Body::Failed;
        e
    }

    /// Whether the response body has ended.
    pub(super) fn ended(&self) -> bool {
        self.body == Body::Done
    }

    /// What is known of the rest of the body's length.
    pub(super) fn size_hint(&self) -> SizeHint {
        match self.body {
            Body::Length(n) => SizeHint::with_exact(n),
            Body::Done => SizeHint::with_exact(0),
            Body::Chunked(_) | Body::Close | Body::Failed => SizeHint::default(),
        }
    }
}
