//! The one accept loop behind every port canary-guard serves: the proxy and the
//! admin server over plain TCP, the admission webhook over TLS. HTTP/1.1 and
//! HTTP/2 (prior knowledge, or by ALPN under TLS) on one port, upgrades, a
//! connection cap, handshake and header-read timeouts for slow clients, idle
//! HTTP/1 connections parked without buffers, a pause when accept fails, and a
//! graceful drain on shutdown. Clients turned away before the service sees a
//! request are reported to the caller as [`Refusal`]s.
//!
//! Design rule: the loop only takes a slot and accepts. Whatever waits on a
//! client (the TLS handshake, the first request) runs in the connection's own
//! task, under a deadline and holding its slot. The [`Transport`] is a type
//! parameter, so the plain-TCP path is monomorphised and boxes nothing.

mod accept;
mod drain;
mod h1;
mod refusal;
mod rewind;
mod takeover;
#[cfg(test)]
mod tests;
mod transport;

pub use h1::connection_lists;
pub use refusal::{classify, Refusal};
pub use takeover::Takeover;
pub use transport::{Plain, Tls, Transport};

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use drain::Drain;
use refusal::{FirstRequest, Tracked};
use rewind::Rewind;

use crate::BoxError;

/// Limits applied to every inbound connection.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Open connections at most, handshakes included; further clients wait in
    /// the kernel's backlog.
    pub max_connections: usize,
    /// Time a new connection has to finish the transport's handshake (TLS;
    /// plain TCP has none).
    pub handshake_timeout: Duration,
    /// Time a client has to send complete request headers (HTTP/1), and a new
    /// connection to deliver its first request (HTTP/1 and HTTP/2).
    pub header_read_timeout: Duration,
    /// Largest request head accepted; beyond it HTTP/1 clients get 431.
    pub max_header_bytes: usize,
    /// Time in-flight requests get to finish after shutdown begins.
    pub drain_timeout: Duration,
    /// Time an HTTP/1 connection rests between requests, keeping hyper's
    /// buffers, before it is parked without them (plain TCP only; zero:
    /// parked after every answer).
    pub park_after: Duration,
    /// HTTP/1 connections resting at once, at most; the others are parked
    /// after every answer.
    pub max_resting: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            // As long as the header-read timeout: a handshake is a couple of
            // round trips, so a client still in it after 10 s is not coming.
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            drain_timeout: Duration::from_secs(20),
            // Setting a connection up again costs about 5% more CPU per
            // request when done after every answer; a quarter second keeps
            // that off busy connections and still frees idle ones quickly.
            park_after: Duration::from_millis(250),
            // hyper's two buffers are 16 KiB: at most 1 MiB held by resting
            // connections, against about 4 KiB for each parked one.
            max_resting: 64,
        }
    }
}

/// What every connection's task reads.
struct Shared<T, R> {
    transport: T,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    on_refusal: R,
    handshake_timeout: Duration,
    timing: h1::Timing,
    rests: Arc<h1::Rests>,
}

/// Serves `service` on `listener` over `transport` until `shutdown` resolves,
/// then stops accepting and gives open connections `limits.drain_timeout` to
/// finish. Every client refused before the service saw a request is passed to
/// `on_refusal`. Returns the number of connections still open when the drain
/// gave up.
pub async fn serve<T, S, B>(
    listener: TcpListener,
    transport: T,
    service: S,
    limits: Limits,
    on_refusal: impl Fn(Refusal) + Send + Sync + 'static,
    shutdown: impl Future<Output = ()>,
) -> usize
where
    T: Transport,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut http1 = http1::Builder::new();
    // No timer: the header-read timeout is `h1::serve`'s, which costs a
    // request no timer of its own.
    http1
        // hyper's minimum buffer is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192))
        // One buffer and one send(2) per write: vectored writes cost 800 more
        // instructions per proxied request and a slower system call (callgrind
        // and the peers bench), for a copy of body bytes this saves.
        .writev(false);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let shared = Arc::new(Shared {
        transport,
        http1,
        http2,
        on_refusal,
        handshake_timeout: limits.handshake_timeout,
        timing: h1::Timing {
            header_read_timeout: limits.header_read_timeout,
            park_after: limits.park_after,
        },
        rests: h1::Rests::new(limits.max_resting),
    });
    // Tells every connection that the drain began.
    let draining = watch::Sender::new(());
    let slots = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(slots));
    let mut backoff = accept::Backoff::default();
    tokio::pin!(shutdown);

    loop {
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => {
                backoff.succeeded();
                conn
            }
            Err(e) if accept::client_left(&e) => {
                tracing::debug!(error = %e, "a client left before it was accepted");
                continue;
            }
            Err(e) => {
                let (pause, log) = backoff.failed(Instant::now());
                if let Some(failures) = log {
                    tracing::warn!(error = %e, failures, ?pause, "accept failed; pausing");
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(
            shared.clone(),
            tcp,
            peer,
            service.clone(),
            Drain::new(&draining),
            slot,
        ));
    }
    drop(listener);
    draining.send_replace(());
    // Every connection holds its slot until it ends.
    let all = u32::try_from(slots).unwrap_or(u32::MAX);
    tokio::select! {
        _ = permits.acquire_many(all) => 0,
        () = tokio::time::sleep(limits.drain_timeout) => {
            let still_open = slots - permits.available_permits();
            tracing::warn!(still_open, "drain timeout reached; closing remaining connections");
            still_open
        }
    }
}

/// One connection from handshake to close, holding its `_slot` throughout.
async fn connection<T, S, B, R>(
    shared: Arc<Shared<T, R>>,
    tcp: TcpStream,
    peer: SocketAddr,
    service: S,
    drain: Drain,
    _slot: OwnedSemaphorePermit,
) where
    T: Transport,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    R: Fn(Refusal) + Send + Sync + 'static,
{
    // Also resolves once `serve` is gone.
    tokio::pin!(drain);
    // Plain TCP's handshake is ready at once: polled first, it never waits.
    // A client still in its handshake has asked nothing: nothing to drain.
    let handshake = tokio::time::timeout(shared.handshake_timeout, shared.transport.handshake(tcp));
    let io = tokio::select! {
        biased;
        done = handshake => match done {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "handshake failed");
                return;
            }
            Err(_) => {
                (shared.on_refusal)(Refusal::HandshakeTimeout);
                return;
            }
        },
        _ = &mut drain => return,
    };

    let mut io = Tracked {
        io,
        unanswered: Arc::new(AtomicBool::new(false)),
    };
    // A client that has not sent its first request (or told HTTP/1 from
    // HTTP/2) by the deadline is cut off and counted.
    let deadline = tokio::time::sleep(shared.timing.header_read_timeout);
    tokio::pin!(deadline);
    let preface = tokio::select! {
        biased;
        read = read_preface(&mut io) => match read {
            Ok(preface) => preface,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection ended before a request");
                return;
            }
        },
        () = &mut deadline => {
            (shared.on_refusal)(Refusal::HeaderTimeout);
            return;
        }
        _ = &mut drain => return,
    };
    let ended = match preface {
        Preface::Http2(read) => {
            http2(&shared, Rewind::new(read, io), service, deadline, drain).await
        }
        // The connection's own header-read timeout takes over from the deadline.
        Preface::Http1(read) => h1::serve::<T, _, _>(
            &shared.http1,
            io,
            read,
            service,
            shared.timing,
            &shared.rests,
            drain,
        )
        .await
        .map_err(BoxError::from),
    };
    match ended {
        Ok(Some(())) => {}
        Ok(None) => (shared.on_refusal)(Refusal::HeaderTimeout),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
            if let Some(refusal) = classify(&*e) {
                (shared.on_refusal)(refusal);
            }
        }
    }
}

/// What the first bytes of a connection said.
enum Preface {
    /// The HTTP/2 connection preface, read whole.
    Http2(Bytes),
    /// Anything else: HTTP/1, these bytes first.
    Http1(Bytes),
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes are the HTTP/2 preface or cannot become it. A
/// client that closes first is an error.
async fn read_preface(io: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Preface> {
    let mut buf = [0u8; 24];
    let mut len = 0;
    loop {
        let n = io.read(&mut buf[len..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        len += n;
        if buf[..len] != H2_PREFACE[..len] {
            return Ok(Preface::Http1(Bytes::copy_from_slice(&buf[..len])));
        }
        if len == H2_PREFACE.len() {
            return Ok(Preface::Http2(Bytes::from_static(H2_PREFACE)));
        }
    }
}

/// Serves HTTP/2 until the client leaves or the drain ends it. `Ok(None)`:
/// cut off at `deadline` before its first request.
async fn http2<T, S, B, R>(
    shared: &Shared<T, R>,
    io: Rewind<Tracked<T::Io>>,
    service: S,
    mut deadline: std::pin::Pin<&mut tokio::time::Sleep>,
    mut drain: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<()>, BoxError>
where
    T: Transport,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let requested = Arc::new(AtomicBool::new(false));
    let service = FirstRequest {
        inner: service,
        requested: requested.clone(),
    };
    let conn = shared.http2.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    // HTTP/2 has no header-read timer: without the deadline a client that
    // sent only the preface holds its slot forever. It is dropped as soon as
    // the first request is seen, rather than polled beside every later one.
    let mut waiting = true;
    let mut draining = false;
    poll_fn(|cx| {
        if let Poll::Ready(ended) = conn.as_mut().poll(cx) {
            return Poll::Ready(ended.map(Some).map_err(BoxError::from));
        }
        if !draining && drain.as_mut().poll(cx).is_ready() {
            draining = true;
            conn.as_mut().graceful_shutdown();
            cx.waker().wake_by_ref();
        }
        if waiting && requested.load(Ordering::Relaxed) {
            waiting = false;
        }
        if waiting && deadline.as_mut().poll(cx).is_ready() {
            // Dropped rather than shut down gracefully: an HTTP/2 goodbye
            // would wait for a ping the silent client never answers.
            return Poll::Ready(Ok(None));
        }
        Poll::Pending
    })
    .await
}
