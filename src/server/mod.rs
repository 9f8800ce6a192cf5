//! The one accept loop behind every port canary-guard serves: the proxy and the
//! admin server over plain TCP, the admission webhook over TLS. HTTP/1.1 and
//! HTTP/2 (prior knowledge, or by ALPN under TLS) on one port, upgrades, a
//! connection cap, handshake and header-read timeouts for slow clients, a pause
//! when accept fails, and a graceful drain on shutdown. Clients turned away
//! before the service sees a request are reported to the caller as
//! [`Refusal`]s.
//!
//! Design rule: the loop only takes a slot and accepts. Whatever waits on a
//! client (the TLS handshake, the first request) runs in the connection's own
//! task, under a deadline and holding its slot. The [`Transport`] is a type
//! parameter, so the plain-TCP path is monomorphised and boxes nothing.

mod accept;
mod refusal;
#[cfg(test)]
mod tests;
mod transport;

pub use refusal::{classify, Refusal};
pub use transport::{Plain, Tls, Transport};

use std::error::Error as StdError;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use refusal::{FirstRequest, Tracked};

type BoxError = Box<dyn StdError + Send + Sync>;

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
        }
    }
}

/// What every connection's task reads.
struct Shared<T, R> {
    transport: T,
    builder: auto::Builder<TokioExecutor>,
    on_refusal: R,
    handshake_timeout: Duration,
    first_request_timeout: Duration,
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
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's minimum buffer is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let shared = Arc::new(Shared {
        transport,
        builder,
        on_refusal,
        handshake_timeout: limits.handshake_timeout,
        first_request_timeout: limits.header_read_timeout,
    });
    let graceful = GracefulShutdown::new();
    // `graceful` can watch hyper connections only: this tells the connections
    // still in their handshake that the drain began.
    let draining = watch::Sender::new(());
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
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
            graceful.watcher(),
            draining.subscribe(),
            slot,
        ));
    }
    drop(listener);
    // A client still in its handshake has asked nothing: nothing to drain.
    draining.send_replace(());
    tokio::select! {
        () = graceful.shutdown() => 0,
        () = tokio::time::sleep(limits.drain_timeout) => {
            let still_open = limits.max_connections.max(1) - permits.available_permits();
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
    watcher: Watcher,
    mut draining: watch::Receiver<()>,
    _slot: OwnedSemaphorePermit,
) where
    T: Transport,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    R: Fn(Refusal) + Send + Sync + 'static,
{
    let handshake = tokio::time::timeout(shared.handshake_timeout, shared.transport.handshake(tcp));
    let io = tokio::select! {
        // Plain TCP's handshake is ready at once: polled first, it never waits.
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
        _ = draining.changed() => return,
    };
    let unanswered = Arc::new(AtomicBool::new(false));
    let io = Tracked {
        io,
        unanswered: unanswered.clone(),
    };
    let requested = Arc::new(AtomicBool::new(false));
    let service = FirstRequest {
        inner: service,
        requested: requested.clone(),
    };
    let conn = shared
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    let conn = watcher.watch(conn.into_owned());
    tokio::pin!(conn);
    // hyper's HTTP/1 header timer starts only once hyper-util has told HTTP/1
    // from the HTTP/2 preface, and HTTP/2 has none: without this deadline a
    // silent client holds its slot forever. Connections that served a request
    // are left to hyper's own timers: the deadline is dropped as soon as the
    // first request is seen, rather than polled beside every later one.
    let mut deadline = Some(Box::pin(tokio::time::sleep(shared.first_request_timeout)));
    let ended = poll_fn(|cx| {
        if let Poll::Ready(ended) = conn.as_mut().poll(cx) {
            return Poll::Ready(Some(ended));
        }
        if requested.load(Ordering::Relaxed) {
            deadline = None;
        }
        match deadline.as_mut().map(|sleep| sleep.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    })
    .await;
    let Some(ended) = ended else {
        // Dropped rather than shut down gracefully: an HTTP/2 goodbye would
        // wait for a ping the silent client never answers.
        (shared.on_refusal)(Refusal::HeaderTimeout);
        return;
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
        if let Some(refusal) = classify(&*e, unanswered.load(Ordering::Relaxed)) {
            (shared.on_refusal)(refusal);
        }
    }
}
