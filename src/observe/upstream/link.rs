//! One HTTP/1.1 connection to the app, driven by the request that holds it.
//!
//! Design rule: a link has no task of its own. Whoever holds it polls it: the
//! request while it waits for the response headers, the response body while it
//! streams, and the lease once more with a no-op waker when it goes back idle,
//! so that nothing wakes a task that no longer uses it. So a request costs no
//! task wake-up and no channel hop to another thread.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::client::conn::TrySendError;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::Failure;
use crate::observe::upload::Upload;

/// An open HTTP/1.1 connection to the app.
pub(super) struct Link {
    sender: SendRequest<Upload>,
    /// Dropped once its future completes (closed or failed): dropping it is
    /// what resolves a request still queued on it.
    conn: Option<Connection<TokioIo<TcpStream>, Upload>>,
    /// The deadline of the request on it, one timer for the link's life:
    /// moving a registered timer's deadline later is a store, registering a
    /// timer and dropping it again for every request took the timer wheel's
    /// lock twice.
    timer: Option<Pin<Box<Sleep>>>,
}

/// Why a request got no response headers over a link.
pub(super) enum Unanswered {
    /// The deadline passed; the request may have reached the app.
    TimedOut,
    /// The connection failed; the error holds the request when none of it
    /// was sent. Boxed: it is rare, and the answer's size is every request's.
    Failed(Box<TrySendError<Request<Upload>>>),
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
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(Failure::Connect(e.into())),
            Err(_) => {
                let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                return Err(Failure::Connect(e.into()));
            }
        };
        tcp.set_nodelay(true)
            .map_err(|e| Failure::Connect(e.into()))?;
        // One buffer and one send(2) per write, as the server side does.
        let (sender, conn) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| Failure::Connect(e.into()))?;
        Ok(Box::new(Self {
            sender,
            conn: Some(conn),
            timer: None,
        }))
    }

    /// Lets the connection read and write what it can.
    pub(super) fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = &mut self.conn {
            if conn.poll_without_shutdown(cx).is_ready() {
                self.conn = None;
            }
        }
    }

    /// Whether it can take a request now (polled first, so a close is seen).
    pub(super) fn ready(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx);
        !self.done() && self.sender.is_ready()
    }

    /// Whether the connection is finished for good.
    pub(super) fn done(&self) -> bool {
        self.conn.is_none()
    }

    /// Sends `req` and drives the connection until the response headers
    /// arrive, or until `deadline`.
    pub(super) async fn exchange(
        &mut self,
        req: Request<Upload>,
        deadline: Option<Instant>,
    ) -> Result<Response<Incoming>, Unanswered> {
        let mut answer = pin!(self.sender.try_send_request(req));
        if let Some(deadline) = deadline {
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        poll_fn(|cx| {
            self.drive(cx);
            // Once the connection is gone (dropped by `drive`), the answer is ready.
            if let Poll::Ready(answered) = answer.as_mut().poll(cx) {
                return Poll::Ready(answered.map_err(|e| Unanswered::Failed(Box::new(e))));
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
}
