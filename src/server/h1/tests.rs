//! Parked HTTP/1 connections serve exactly as unparked ones: keep-alive,
//! pipelining, heads that arrive in pieces, bodies, `Connection: close`,
//! HTTP/1.0, the idle timeout and the drain.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::server::tests::TestServer;
use crate::server::{Limits, Plain, Refusal};

const IDLE: Duration = Duration::from_secs(10);

/// Answered by `/big` without reading the request body.
const BIG: usize = 16 << 20;

/// Answers with the request's path and, if any, `:` and its body; `/big`
/// answers `BIG` bytes at once, leaving the request body unread.
async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/big" {
        return Ok(Response::new(Full::new(Bytes::from(vec![b'x'; BIG]))));
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let text = match body {
        Ok(b) if !b.is_empty() => format!("{path}:{}", String::from_utf8_lossy(&b)),
        _ => path,
    };
    Ok(Response::new(Full::new(Bytes::from(text))))
}

/// A server that parks after every answer, so that every test crosses parks.
async fn start() -> TestServer {
    start_with(IDLE, Duration::ZERO).await
}

async fn start_with(header_read_timeout: Duration, park_after: Duration) -> TestServer {
    start_limited(Limits {
        header_read_timeout,
        park_after,
        ..Limits::default()
    })
    .await
}

async fn start_limited(limits: Limits) -> TestServer {
    TestServer::serving(Plain, hyper::service::service_fn(echo), limits).await
}

/// Reads one response; returns its head and body.
async fn response(io: &mut (impl AsyncRead + Unpin)) -> (String, String) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(io.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0; len];
    io.read_exact(&mut body).await.unwrap();
    (head, String::from_utf8(body).unwrap())
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: a\r\n\r\n").into_bytes()
}

/// The client sees the connection closed: EOF, or a reset.
async fn closed(io: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(1), io.read_to_end(&mut rest)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn keep_alive_pipelined_and_split_requests_are_served_in_order() {
    let server = start().await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    for path in ["/1", "/2", "/3"] {
        c.write_all(&get(path)).await.unwrap();
        assert_eq!(response(&mut c).await.1, path);
    }
    // Two requests in one write: the second waits in the bytes hyper read
    // past the first, and is answered after it.
    c.write_all(&[get("/4"), get("/5")].concat()).await.unwrap();
    assert_eq!(response(&mut c).await.1, "/4");
    assert_eq!(response(&mut c).await.1, "/5");
    // A whole request and part of the next one, the rest after a while.
    let next = get("/5b");
    c.write_all(&[&get("/5a")[..], &next[..7]].concat())
        .await
        .unwrap();
    assert_eq!(response(&mut c).await.1, "/5a");
    c.write_all(&next[7..]).await.unwrap();
    assert_eq!(response(&mut c).await.1, "/5b");
    // A head in pieces, the connection parked between them.
    let head = get("/6");
    c.write_all(&head[..5]).await.unwrap();
    tokio::task::yield_now().await;
    c.write_all(&head[5..]).await.unwrap();
    assert_eq!(response(&mut c).await.1, "/6");
    // A request with a body, then one without, on the same connection.
    c.write_all(b"POST /7 HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\nhi")
        .await
        .unwrap();
    assert_eq!(response(&mut c).await.1, "/7:hi");
    c.write_all(&get("/8")).await.unwrap();
    assert_eq!(response(&mut c).await.1, "/8");
    drop(c);
    server.stop.send(()).unwrap();
    assert_eq!(server.server.await.unwrap(), 0);
}

#[tokio::test]
async fn clients_that_ask_to_close_are_closed_after_their_answer() {
    let server = start().await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    c.write_all(&get("/a")).await.unwrap();
    response(&mut c).await;
    c.write_all(b"GET /close HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(response(&mut c).await.1, "/close");
    assert!(closed(&mut c).await, "kept open after connection: close");

    let mut old = TcpStream::connect(server.addr).await.unwrap();
    old.write_all(b"GET /old HTTP/1.0\r\n\r\n").await.unwrap();
    assert_eq!(response(&mut old).await.1, "/old");
    assert!(closed(&mut old).await, "an HTTP/1.0 connection kept open");
    server.stop.send(()).unwrap();
    assert_eq!(server.server.await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_at_the_timeout_and_not_counted() {
    let mut server = start().await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    c.write_all(&get("/a")).await.unwrap();
    response(&mut c).await;
    // Idle for just under the timeout, twice: each request starts it over.
    for path in ["/b", "/c"] {
        tokio::time::sleep(IDLE - Duration::from_millis(10)).await;
        c.write_all(&get(path)).await.unwrap();
        assert_eq!(response(&mut c).await.1, path);
    }
    let idle = tokio::time::Instant::now();
    let mut rest = Vec::new();
    assert_eq!(c.read_to_end(&mut rest).await.unwrap(), 0);
    assert!(idle.elapsed() >= IDLE, "{:?}", idle.elapsed());
    server.stop.send(()).unwrap();
    assert_eq!(server.server.await.unwrap(), 0);
    // Idling is the client's choice, not a refusal.
    assert_eq!(server.refused.recv().await, None);
}

#[tokio::test(start_paused = true)]
async fn a_head_that_stalls_after_a_park_is_a_header_timeout() {
    let mut server = start().await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    c.write_all(&get("/a")).await.unwrap();
    response(&mut c).await;
    c.write_all(b"GET /b HTTP/1.1\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest).await;
    assert_eq!(server.refused.recv().await, Some(Refusal::HeaderTimeout));
    server.stop.send(()).unwrap();
    assert_eq!(server.server.await.unwrap(), 0);
}

#[tokio::test]
async fn the_drain_closes_parked_connections_and_finishes_answers_in_flight() {
    let server = start().await;
    let mut parked = TcpStream::connect(server.addr).await.unwrap();
    parked.write_all(&get("/a")).await.unwrap();
    response(&mut parked).await;
    // In flight when the drain begins: its body has not all arrived.
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    busy.write_all(b"POST /b HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\n\r\nhi")
        .await
        .unwrap();
    tokio::task::yield_now().await;
    server.stop.send(()).unwrap();
    assert!(
        closed(&mut parked).await,
        "a parked connection outlived the drain"
    );
    busy.write_all(b"!!").await.unwrap();
    assert_eq!(response(&mut busy).await.1, "/b:hi!!");
    assert!(closed(&mut busy).await);
    assert_eq!(server.server.await.unwrap(), 0);
}

// Real time: under paused time tokio can move the clock past a timer while
// the bytes that beat it wait, unread, on a real socket.
#[tokio::test]
async fn a_parked_connection_gives_each_head_the_whole_header_timeout() {
    let timeout = Duration::from_secs(2);
    let server = start_with(timeout, Duration::ZERO).await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    c.write_all(&get("/a")).await.unwrap();
    response(&mut c).await;
    // Idle for most of the timeout, then a head that takes half of it: the
    // head's time counts from its first byte, when the parked connection got
    // a fresh hyper connection. An unparked one's timer would have run from
    // the end of the last answer and closed it before the head was whole.
    let head = get("/b");
    tokio::time::sleep(timeout * 3 / 4).await;
    c.write_all(&head[..5]).await.unwrap();
    tokio::time::sleep(timeout / 2).await;
    c.write_all(&head[5..]).await.unwrap();
    assert_eq!(response(&mut c).await.1, "/b");
    drop(c);
    server.stop.send(()).unwrap();
    assert_eq!(server.server.await.unwrap(), 0);
}

/// Counts "connection parked" events on this thread while it lives.
struct Parks {
    log: Arc<Mutex<Vec<u8>>>,
    _default: tracing::subscriber::DefaultGuard,
}

impl Parks {
    fn watch() -> Self {
        let log = Arc::new(Mutex::new(Vec::new()));
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || Log(writer.clone()))
            .finish();
        Self {
            log,
            _default: tracing::subscriber::set_default(subscriber),
        }
    }

    fn count(&self) -> usize {
        String::from_utf8_lossy(&self.log.lock())
            .matches("connection parked")
            .count()
    }
}

struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Real time, on this thread's runtime so the events reach `Parks`.
#[tokio::test]
async fn busy_connections_keep_hyper_and_resting_ones_are_parked() {
    let parks = Parks::watch();
    let rest = Duration::from_millis(300);
    let server = start_with(IDLE, rest).await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut served = 0;
    while started.elapsed() < rest * 3 {
        c.write_all(&get("/busy")).await.unwrap();
        assert_eq!(response(&mut c).await.1, "/busy");
        served += 1;
    }
    assert!(served > 10, "only {served} requests");
    assert_eq!(parks.count(), 0, "a busy connection was parked");
    // Resting: parked within two rest periods, then it serves again.
    while parks.count() == 0 {
        assert!(
            started.elapsed() < rest * 10,
            "a resting connection was never parked"
        );
        tokio::time::sleep(rest / 10).await;
    }
    c.write_all(&get("/again")).await.unwrap();
    assert_eq!(response(&mut c).await.1, "/again");
    drop(c);
    server.stop.send(()).unwrap();
    assert_eq!(server.server.await.unwrap(), 0);
}

#[tokio::test]
async fn past_the_resting_budget_connections_park_after_every_answer() {
    let parks = Parks::watch();
    let server = start_limited(Limits {
        // Long enough that no test connection parks for resting.
        park_after: Duration::from_secs(60),
        max_resting: 1,
        ..Limits::default()
    })
    .await;
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    first.write_all(&get("/1")).await.unwrap();
    response(&mut first).await;
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..3 {
        second.write_all(&get("/2")).await.unwrap();
        assert_eq!(response(&mut second).await.1, "/2");
    }
    // The first rests in the only place; the second parked after each answer
    // (the last park may still be on its way).
    let three = async {
        while parks.count() < 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), three)
        .await
        .expect("the connection past the budget did not park");
    // The first one leaves: its place goes to the next connection to rest.
    drop(first);
    second.write_all(&get("/2")).await.unwrap();
    response(&mut second).await;
    let parked = parks.count();
    for _ in 0..3 {
        second.write_all(&get("/2")).await.unwrap();
        response(&mut second).await;
    }
    assert!(
        parks.count() <= parked + 1,
        "still parking with a place free"
    );
    drop(second);
    server.stop.send(()).unwrap();
    assert_eq!(server.server.await.unwrap(), 0);
}

#[tokio::test]
async fn an_answer_that_leaves_the_upload_unread_arrives_whole() {
    let server = start().await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    // Most of the body never comes; the answer is larger than the socket
    // buffers, so hyper still holds part of it when it stops reading.
    c.write_all(b"POST /big HTTP/1.1\r\nhost: a\r\ncontent-length: 10000000\r\n\r\n")
        .await
        .unwrap();
    c.write_all(&[b'u'; 1024]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut all = Vec::new();
    let _ = c.read_to_end(&mut all).await;
    let head = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(all.len() - head, BIG, "the answer was cut short");
    server.stop.send(()).unwrap();
    assert_eq!(server.server.await.unwrap(), 0);
}

fn post(path: &str) -> Vec<u8> {
    format!("POST {path} HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\nhi").into_bytes()
}

// Real time, as above. A request with a body keeps its hyper connection, so
// only the serving loop's own header-read timeout can end these.
#[tokio::test]
async fn connections_that_do_not_park_are_closed_idle_and_cut_off_stalled() {
    let timeout = Duration::from_millis(400);
    let mut server = start_with(timeout, Duration::ZERO).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(&post("/a")).await.unwrap();
    assert_eq!(response(&mut idle).await.1, "/a:hi");
    let since = tokio::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(timeout * 10, idle.read_to_end(&mut rest)).await;
    assert_eq!(read.expect("an idle connection kept open").unwrap(), 0);
    assert!(since.elapsed() >= timeout, "{:?}", since.elapsed());

    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(&post("/b")).await.unwrap();
    assert_eq!(response(&mut stalled).await.1, "/b:hi");
    stalled.write_all(b"GET /c HTTP/1.1\r\n").await.unwrap();
    let read = tokio::time::timeout(timeout * 10, stalled.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a stalled head kept its connection");
    // Only the stalled head is a refusal.
    assert_eq!(server.refused.recv().await, Some(Refusal::HeaderTimeout));
    server.stop.send(()).unwrap();
    assert_eq!(server.server.await.unwrap(), 0);
    assert_eq!(server.refused.recv().await, None);
}

#[tokio::test]
async fn a_first_head_that_stalls_is_a_header_timeout() {
    let mut server = start_with(Duration::from_millis(300), Duration::ZERO).await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nhost").await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a stalled head kept its connection");
    assert!(
        rest.is_empty(),
        "answered: {}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(server.refused.recv().await, Some(Refusal::HeaderTimeout));
    server.stop.send(()).unwrap();
    assert_eq!(server.server.await.unwrap(), 0);
}

#[tokio::test]
async fn each_answer_gives_the_next_head_the_whole_timeout_again() {
    let timeout = Duration::from_millis(400);
    // Resting longer than the test: the hyper connection serves throughout.
    let server = start_with(timeout, Duration::from_secs(60)).await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    // Five times the timeout in all, each wait well inside it.
    for i in 0..8 {
        tokio::time::sleep(timeout / 2).await;
        let path = format!("/{i}");
        c.write_all(&get(&path)).await.unwrap();
        assert_eq!(response(&mut c).await.1, path);
    }
    drop(c);
    server.stop.send(()).unwrap();
    assert_eq!(server.server.await.unwrap(), 0);
}
