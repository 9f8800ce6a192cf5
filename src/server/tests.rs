use super::*;
use bytes::Bytes;
use http_body_util::Empty;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};

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
/// does, with `client` at the other end. Returns how the connection ended
/// and what the client read.
async fn one_connection<F, Fut>(client: F) -> (hyper::Result<()>, String)
where
    F: FnOnce(DuplexStream) -> Fut,
    Fut: Future<Output = Vec<u8>> + Send + 'static,
{
    let (near, far) = tokio::io::duplex(64 * 1024);
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(8192)
        .serve_connection(TokioIo::new(far), ok_service());
    let client = tokio::spawn(client(near));
    let ended = conn.await;
    let read = client.await.unwrap();
    (ended, String::from_utf8_lossy(&read).into_owned())
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

fn refused(ended: &hyper::Result<()>) -> Option<Refusal> {
    classify(ended.as_ref().unwrap_err())
}

#[tokio::test(start_paused = true)]
async fn hypers_own_answers_are_refusals() {
    let mut big = b"GET / HTTP/1.1\r\nx-big: ".to_vec();
    big.resize(8192, b'x');
    let (ended, read) = one_connection(|c| send_and_read(c, big)).await;
    assert!(read.starts_with("HTTP/1.1 431"), "{read}");
    assert_eq!(refused(&ended), Some(Refusal::HeaderTooLarge));

    let garbage = b"NOT HTTP AT ALL\r\n\r\n".to_vec();
    let (ended, read) = one_connection(|c| send_and_read(c, garbage)).await;
    assert!(read.starts_with("HTTP/1.1 400"), "{read}");
    assert_eq!(refused(&ended), Some(Refusal::MalformedRequest));
}

#[tokio::test(start_paused = true)]
async fn clients_that_leave_or_idle_are_not_refusals() {
    // The client closes its idle keep-alive connection: no error at all.
    let (ended, read) = one_connection(|mut c| async move {
        c.write_all(REQUEST).await.unwrap();
        read_head(&mut c).await
    })
    .await;
    assert!(read.starts_with("HTTP/1.1 200"), "{read}");
    assert!(ended.is_ok(), "{ended:?}");

    // Connects and leaves without a byte: no error either.
    let (ended, _) = one_connection(|_| async { Vec::new() }).await;
    assert!(ended.is_ok(), "{ended:?}");

    // Leaves in the middle of a head: nothing was refused.
    let (ended, read) = one_connection(|mut c| async move {
        c.write_all(b"GET / HTTP/1.1\r\nhost:").await.unwrap();
        Vec::new()
    })
    .await;
    assert_eq!(read, "");
    assert!(ended.as_ref().unwrap_err().is_incomplete_message());
    assert_eq!(refused(&ended), None);
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
    let (ended, _) = one_connection(|c| send_and_read(c, garbage)).await;
    let boxed: BoxError = ended.unwrap_err().into();
    assert_eq!(classify(&*boxed), Some(Refusal::MalformedRequest));
    let outer = Outer(boxed);
    assert_eq!(classify(&outer), Some(Refusal::MalformedRequest));
    // Not hyper's: graceful shutdown cancelling a connection that never
    // sent a byte, resets.
    let cancelled = io::Error::new(io::ErrorKind::Interrupted, "Cancelled");
    assert_eq!(classify(&cancelled), None);
    assert_eq!(classify(&Outer(cancelled.into())), None);
}

#[test]
fn reasons_are_the_documented_labels() {
    assert_eq!(Refusal::HeaderTooLarge.reason(), "header_too_large");
    assert_eq!(Refusal::HeaderTimeout.reason(), "header_timeout");
    assert_eq!(Refusal::MalformedRequest.reason(), "malformed_request");
    assert_eq!(Refusal::HandshakeTimeout.reason(), "handshake_timeout");
}

/// `serve` on a loopback port, reporting its refusals, until `stop` is sent.
pub(super) struct TestServer {
    pub(super) addr: std::net::SocketAddr,
    pub(super) refused: tokio::sync::mpsc::UnboundedReceiver<Refusal>,
    pub(super) stop: tokio::sync::oneshot::Sender<()>,
    pub(super) server: tokio::task::JoinHandle<usize>,
}

impl TestServer {
    async fn start(limits: Limits) -> Self {
        Self::start_over(Plain, limits).await
    }

    async fn start_over(transport: impl Transport, limits: Limits) -> Self {
        Self::serving(transport, ok_service(), limits).await
    }

    /// `service` over `transport`.
    pub(super) async fn serving<S, B>(transport: impl Transport, service: S, limits: Limits) -> Self
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (refusals, refused) = tokio::sync::mpsc::unbounded_channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            transport,
            service,
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

#[tokio::test(start_paused = true)]
async fn accept_failures_pause_100ms_doubling_to_1s_and_warn_at_most_every_10s() {
    let ms = Duration::from_millis;
    let mut backoff = accept::Backoff::default();
    let start = Instant::now();
    let mut now = start;
    let mut failed = |at: Duration| {
        now = start + at;
        backoff.failed(now)
    };
    // The first failure warns at once; the next ones are counted.
    assert_eq!(failed(ms(0)), (ms(100), Some(1)));
    assert_eq!(failed(ms(100)), (ms(200), None));
    assert_eq!(failed(ms(300)), (ms(400), None));
    assert_eq!(failed(ms(700)), (ms(800), None));
    assert_eq!(failed(ms(1500)), (ms(1000), None));
    assert_eq!(failed(ms(2500)), (ms(1000), None));
    // Ten seconds after the last warning: one more, with the failures since.
    assert_eq!(failed(ms(10_000)), (ms(1000), Some(6)));
    backoff.succeeded();
    assert_eq!(backoff.failed(start + ms(10_100)), (ms(100), None));
    assert_eq!(backoff.failed(start + ms(20_000)), (ms(200), Some(2)));

    // A client that gave up before it was accepted is no failure of the loop.
    for kind in [
        io::ErrorKind::ConnectionAborted,
        io::ErrorKind::ConnectionReset,
    ] {
        assert!(accept::client_left(&kind.into()));
    }
    // EMFILE and ENFILE.
    for errno in [24, 23] {
        assert!(!accept::client_left(&io::Error::from_raw_os_error(errno)));
    }
}

/// A self-signed certificate for `localhost`: the server's TLS transport, and
/// a client connector that trusts it.
fn tls_pair() -> (Tls, tokio_rustls::TlsConnector) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = key.cert.der().clone();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der())),
        )
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (
        Tls::new(Arc::new(server)),
        tokio_rustls::TlsConnector::from(Arc::new(client)),
    )
}

/// One HTTP/1 request over TLS: the status of its answer.
async fn get_over_tls(addr: SocketAddr, connector: &tokio_rustls::TlsConnector) -> u16 {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let get = Request::get("/")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    sender.send_request(get).await.unwrap().status().as_u16()
}

#[tokio::test(start_paused = true)]
async fn tls_clients_that_stall_in_the_handshake_are_refused_without_holding_up_others() {
    let timeout = Limits::default().handshake_timeout;
    let (tls, connector) = tls_pair();
    let TestServer {
        addr,
        mut refused,
        stop,
        server,
    } = TestServer::start_over(
        tls,
        Limits {
            max_connections: 3,
            ..Limits::default()
        },
    )
    .await;
    let started = Instant::now();
    // Two slots: a client that never starts the handshake, and one that stops
    // inside its ClientHello (a record header announcing 512 bytes).
    let mut stalled = Vec::new();
    for sent in [&b""[..], b"\x16\x03\x01\x02\x00"] {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(sent).await.unwrap();
        stalled.push(conn);
    }
    // The third slot serves while they wait.
    assert_eq!(get_over_tls(addr, &connector).await, 200);
    assert!(started.elapsed() < timeout, "{:?}", started.elapsed());
    for mut conn in stalled {
        let closed = tokio::time::timeout(timeout * 2, conn.read_to_end(&mut Vec::new())).await;
        assert!(closed.is_ok(), "a stalled client is still connected");
    }
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    // Their slots are free again.
    assert_eq!(get_over_tls(addr, &connector).await, 200);

    stop.send(()).unwrap();
    assert_eq!(server.await.unwrap(), 0, "a connection outlived the drain");
    let mut reported = Vec::new();
    while let Some(refusal) = refused.recv().await {
        reported.push(refusal);
    }
    assert_eq!(reported, [Refusal::HandshakeTimeout; 2]);
}

#[tokio::test(start_paused = true)]
async fn the_drain_does_not_wait_for_clients_still_in_their_handshake() {
    let timeout = Limits::default().handshake_timeout;
    let (tls, connector) = tls_pair();
    let TestServer {
        addr,
        mut refused,
        stop,
        server,
    } = TestServer::start_over(tls, Limits::default()).await;
    let started = Instant::now();
    let silent = TcpStream::connect(addr).await.unwrap();
    // Connected after the silent client, so answered only once it was accepted.
    assert_eq!(get_over_tls(addr, &connector).await, 200);

    stop.send(()).unwrap();
    assert_eq!(server.await.unwrap(), 0, "a connection outlived the drain");
    assert!(started.elapsed() < timeout, "{:?}", started.elapsed());
    // Dropped by the drain, not refused.
    assert_eq!(refused.recv().await, None);
    drop(silent);
}
