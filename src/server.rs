//! The accept loop shared by the proxy and the admin server: HTTP/1.1 and
//! HTTP/2 (prior knowledge) on one port, upgrades, a connection cap, a
//! header-read timeout for slow clients and a graceful drain on shutdown.
//! Clients turned away before the service sees a request, by hyper or by the
//! header-read timeout, are reported to the caller as [`Refusal`]s.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Limits applied to every inbound connection.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open connections at most; further clients wait in the kernel's backlog.
    pub max_connections: usize,
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
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// A client answered or cut off before the service saw a request: by hyper
/// (HTTP/1) or by the accept loop's first-request deadline.
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
}

impl Refusal {
    /// The `reason` label it is counted under.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::HeaderTooLarge => "header_too_large",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::MalformedRequest => "malformed_request",
        }
    }
}

/// Classifies the error a connection ended with: `Some` if hyper refused the
/// client. `unanswered` says whether the client had sent bytes since the last
/// bytes written to it; hyper's header-read timer also closes idle keep-alive
/// connections, and those are no refusal.
///
/// Clients that leave (EOF or reset, also mid-head), graceful shutdown and
/// HTTP/2 errors are not refusals.
pub fn classify(error: &(dyn StdError + 'static), unanswered: bool) -> Option<Refusal> {
    // hyper-util's auto connection boxes hyper's error; look through the chain.
    let hyper = std::iter::successors(Some(error), |e| (*e).source())
        .find_map(|e| e.downcast_ref::<hyper::Error>())?;
    if hyper.is_parse_too_large() {
        Some(Refusal::HeaderTooLarge)
    } else if hyper.is_parse() {
        Some(Refusal::MalformedRequest)
    } else if hyper.is_timeout() && unanswered {
        Some(Refusal::HeaderTimeout)
    } else {
        None
    }
}

/// A client socket that notes whether bytes came in since the last write: when
/// hyper's header-read timer fires, that tells a slow client from an idle one.
struct Tracked<T> {
    io: T,
    unanswered: Arc<AtomicBool>,
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
struct FirstRequest<S> {
    inner: S,
    requested: Arc<AtomicBool>,
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

impl<T> Tracked<T> {
    fn answered(&self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.unanswered.store(false, Ordering::Relaxed);
        }
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then stops
/// accepting and gives open connections `limits.drain_timeout` to finish.
/// Every client hyper refuses itself is passed to `on_refusal`.
/// Returns the number of connections still open when the drain gave up.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    on_refusal: impl Fn(Refusal) + Send + Sync + 'static,
    shutdown: impl Future<Output = ()>,
) -> usize
where
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
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let on_refusal = Arc::new(on_refusal);
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        let (stream, _) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let unanswered = Arc::new(AtomicBool::new(false));
        let stream = Tracked {
            io: stream,
            unanswered: unanswered.clone(),
        };
        let requested = Arc::new(AtomicBool::new(false));
        let service = FirstRequest {
            inner: service.clone(),
            requested: requested.clone(),
        };
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        let on_refusal = on_refusal.clone();
        let first_request_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            // hyper's HTTP/1 header timer starts only once hyper-util has told
            // HTTP/1 from the HTTP/2 preface, and HTTP/2 has none: without this
            // deadline a silent client holds its permit forever. Connections
            // that served a request are left to hyper's own timers.
            let ended = match tokio::time::timeout(first_request_timeout, &mut conn).await {
                Ok(ended) => ended,
                Err(_) if requested.load(Ordering::Relaxed) => conn.await,
                // Dropped rather than shut down gracefully: an HTTP/2 goodbye
                // would wait for a ping the silent client never answers.
                Err(_) => {
                    on_refusal(Refusal::HeaderTimeout);
                    return;
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
                if let Some(refusal) = classify(&*e, unanswered.load(Ordering::Relaxed)) {
                    on_refusal(refusal);
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => 0,
        () = tokio::time::sleep(limits.drain_timeout) => {
            let still_open = limits.max_connections.max(1) - permits.available_permits();
            tracing::warn!(still_open, "drain timeout reached; closing remaining connections");
            still_open
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Empty;
    use std::convert::Infallible;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::net::TcpStream;

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";

    fn ok_service() -> impl Service<
        Request<Incoming>,
        Response = Response<Empty<Bytes>>,
        Error = Infallible,
        Future = impl Future + Send,
    > + Clone
           + Send
           + 'static {
        hyper::service::service_fn(|_| async { Ok(Response::new(Empty::new())) })
    }

    /// Serves one HTTP/1 connection over an in-memory pipe the way `serve`
    /// does, with `client` at the other end. Returns how the connection ended,
    /// whether it ended unanswered and what the client read.
    async fn one_connection<F, Fut>(client: F) -> (hyper::Result<()>, bool, String)
    where
        F: FnOnce(DuplexStream) -> Fut,
        Fut: Future<Output = Vec<u8>> + Send + 'static,
    {
        let (near, far) = tokio::io::duplex(64 * 1024);
        let unanswered = Arc::new(AtomicBool::new(false));
        let io = TokioIo::new(Tracked {
            io: far,
            unanswered: unanswered.clone(),
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .max_buf_size(8192)
            .serve_connection(io, ok_service());
        let client = tokio::spawn(client(near));
        let ended = conn.await;
        let read = client.await.unwrap();
        (
            ended,
            unanswered.load(Ordering::Relaxed),
            String::from_utf8_lossy(&read).into_owned(),
        )
    }

    /// Sends `bytes`, then reads until the server closes.
    async fn send_and_read(mut near: DuplexStream, bytes: Vec<u8>) -> Vec<u8> {
        near.write_all(&bytes).await.unwrap();
        let mut read = Vec::new();
        near.read_to_end(&mut read).await.unwrap();
        read
    }

    /// Reads one response head (the test service's bodies are empty).
    async fn read_head(io: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(io.read_u8().await.unwrap());
        }
        head
    }

    fn refused(ended: &hyper::Result<()>, unanswered: bool) -> Option<Refusal> {
        classify(ended.as_ref().unwrap_err(), unanswered)
    }

    #[tokio::test(start_paused = true)]
    async fn hypers_own_answers_are_refusals() {
        let mut big = b"GET / HTTP/1.1\r\nx-big: ".to_vec();
        big.resize(8192, b'x');
        let (ended, unanswered, read) = one_connection(|c| send_and_read(c, big)).await;
        assert!(read.starts_with("HTTP/1.1 431"), "{read}");
        assert_eq!(refused(&ended, unanswered), Some(Refusal::HeaderTooLarge));

        let garbage = b"NOT HTTP AT ALL\r\n\r\n".to_vec();
        let (ended, unanswered, read) = one_connection(|c| send_and_read(c, garbage)).await;
        assert!(read.starts_with("HTTP/1.1 400"), "{read}");
        assert_eq!(refused(&ended, unanswered), Some(Refusal::MalformedRequest));

        // Half a head, then nothing: cut off at the header-read timeout.
        let half = b"GET / HTTP/1.1\r\nhost: a\r\n".to_vec();
        let (ended, unanswered, read) = one_connection(|c| send_and_read(c, half)).await;
        assert_eq!(read, "");
        assert_eq!(refused(&ended, unanswered), Some(Refusal::HeaderTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn clients_that_leave_or_idle_are_not_refusals() {
        // A keep-alive connection left idle: hyper's header-read timer closes
        // it with the same error as a slow client's, but nothing was pending.
        let (ended, unanswered, read) =
            one_connection(|c| send_and_read(c, REQUEST.to_vec())).await;
        assert!(read.starts_with("HTTP/1.1 200"), "{read}");
        assert!(ended.as_ref().unwrap_err().is_timeout());
        assert_eq!(refused(&ended, unanswered), None);

        // The client closes its idle keep-alive connection: no error at all.
        let (ended, _, read) = one_connection(|mut c| async move {
            c.write_all(REQUEST).await.unwrap();
            read_head(&mut c).await
        })
        .await;
        assert!(read.starts_with("HTTP/1.1 200"), "{read}");
        assert!(ended.is_ok(), "{ended:?}");

        // Connects and leaves without a byte: no error either.
        let (ended, _, _) = one_connection(|_| async { Vec::new() }).await;
        assert!(ended.is_ok(), "{ended:?}");

        // Leaves in the middle of a head: nothing was refused.
        let (ended, unanswered, read) = one_connection(|mut c| async move {
            c.write_all(b"GET / HTTP/1.1\r\nhost:").await.unwrap();
            Vec::new()
        })
        .await;
        assert_eq!(read, "");
        assert!(ended.as_ref().unwrap_err().is_incomplete_message());
        assert_eq!(refused(&ended, unanswered), None);
    }

    #[derive(Debug)]
    struct Outer(BoxError);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer")
        }
    }

    impl StdError for Outer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.0)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hypers_error_is_found_inside_boxes_and_sources() {
        let garbage = b"NOT HTTP\r\n\r\n".to_vec();
        let (ended, _, _) = one_connection(|c| send_and_read(c, garbage)).await;
        let boxed: BoxError = ended.unwrap_err().into();
        assert_eq!(classify(&*boxed, true), Some(Refusal::MalformedRequest));
        let outer = Outer(boxed);
        assert_eq!(classify(&outer, true), Some(Refusal::MalformedRequest));
        // Not hyper's: graceful shutdown cancelling a connection that never
        // sent a byte, resets.
        let cancelled = io::Error::new(io::ErrorKind::Interrupted, "Cancelled");
        assert_eq!(classify(&cancelled, false), None);
        assert_eq!(classify(&Outer(cancelled.into()), true), None);
    }

    #[test]
    fn reasons_are_the_documented_labels() {
        assert_eq!(Refusal::HeaderTooLarge.reason(), "header_too_large");
        assert_eq!(Refusal::HeaderTimeout.reason(), "header_timeout");
        assert_eq!(Refusal::MalformedRequest.reason(), "malformed_request");
    }

    /// `serve` on a loopback port, reporting its refusals, until `stop` is sent.
    struct TestServer {
        addr: std::net::SocketAddr,
        refused: tokio::sync::mpsc::UnboundedReceiver<Refusal>,
        stop: tokio::sync::oneshot::Sender<()>,
        server: tokio::task::JoinHandle<usize>,
    }

    impl TestServer {
        async fn start(limits: Limits) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (refusals, refused) = tokio::sync::mpsc::unbounded_channel();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(serve(
                listener,
                ok_service(),
                limits,
                move |r| refusals.send(r).unwrap(),
                async {
                    let _ = stopped.await;
                },
            ));
            Self {
                addr,
                refused,
                stop,
                server,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn silent_clients_are_cut_off_at_the_header_timeout_but_served_ones_are_kept() {
        let timeout = Duration::from_secs(10);
        let TestServer {
            addr,
            mut refused,
            stop,
            server,
        } = TestServer::start(Limits {
            max_connections: 4,
            header_read_timeout: timeout,
            ..Limits::default()
        })
        .await;
        let started = tokio::time::Instant::now();
        // First slot: an HTTP/2 client that asks at once and keeps its connection.
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (mut h2, h2_conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(h2_conn);
        let get = || {
            Request::get("http://a/")
                .body(Empty::<Bytes>::new())
                .unwrap()
        };
        assert_eq!(h2.send_request(get()).await.unwrap().status(), 200);
        // The other slots: a client that sends nothing, one that stops inside
        // the HTTP/2 preface, one that sends the preface and SETTINGS only.
        let mut silent = Vec::new();
        for sent in [
            &b""[..],
            b"PRI * HTTP/2.0\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0",
        ] {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            conn.write_all(sent).await.unwrap();
            silent.push(conn);
        }
        // Waits in the backlog until the silent clients are cut off.
        let mut late = TcpStream::connect(addr).await.unwrap();
        late.write_all(REQUEST).await.unwrap();
        let head = tokio::time::timeout(timeout * 6, read_head(&mut late))
            .await
            .expect("the silent clients held every slot");
        assert!(head.starts_with(b"HTTP/1.1 200"));
        assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
        for mut conn in silent {
            let mut rest = Vec::new();
            // EOF or a reset: either way the guard closed it.
            let closed = tokio::time::timeout(timeout, conn.read_to_end(&mut rest)).await;
            assert!(closed.is_ok(), "a silent client is still connected");
        }
        // Accepted before the silent ones, so past the same deadline, but it had
        // asked in time: its connection still serves.
        assert_eq!(h2.send_request(get()).await.unwrap().status(), 200);

        stop.send(()).unwrap();
        assert_eq!(server.await.unwrap(), 0, "a connection outlived the drain");
        let mut reported = Vec::new();
        while let Some(refusal) = refused.recv().await {
            reported.push(refusal);
        }
        assert_eq!(reported, [Refusal::HeaderTimeout; 3]);
    }

    #[tokio::test]
    async fn serve_reports_refusals_but_not_idle_clients_or_a_graceful_shutdown() {
        let TestServer {
            addr,
            mut refused,
            stop,
            server,
        } = TestServer::start(Limits {
            max_header_bytes: 8192,
            ..Limits::default()
        })
        .await;
        // Connected first, so accepted before the keep-alive client's request
        // is answered; it never sends a byte.
        let silent = TcpStream::connect(addr).await.unwrap();
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(REQUEST).await.unwrap();
        assert!(read_head(&mut idle).await.starts_with(b"HTTP/1.1 200"));
        let mut leaves = TcpStream::connect(addr).await.unwrap();
        leaves.write_all(REQUEST).await.unwrap();
        read_head(&mut leaves).await;
        drop(leaves);
        // Exactly the buffer's size, so no unread byte turns the close into a reset.
        let mut big = TcpStream::connect(addr).await.unwrap();
        let mut head = b"GET / HTTP/1.1\r\nx-big: ".to_vec();
        head.resize(8192, b'x');
        big.write_all(&head).await.unwrap();
        let mut answer = Vec::new();
        big.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 431"));
        let first = tokio::time::timeout(Duration::from_secs(10), refused.recv()).await;
        assert_eq!(first, Ok(Some(Refusal::HeaderTooLarge)));

        stop.send(()).unwrap();
        assert_eq!(server.await.unwrap(), 0, "a connection outlived the drain");
        // The channel closes once every connection task has dropped the hook.
        assert_eq!(refused.recv().await, None);
        drop((silent, idle));
    }
}
