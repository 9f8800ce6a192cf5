//! A proxy made of `Upstreams` alone, in front of an app scripted over raw TCP
//! that counts its connections and the requests it read.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::observe::body::{ProxyBody, Source};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// What the app does with the request it just read (numbered from 1).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Then {
    /// Answers and waits for the next request.
    Answer,
    /// Answers after 100 ms.
    AnswerLater,
    /// Answers, then closes the connection a moment later, unannounced (as an
    /// app whose keep-alive timer runs out does).
    AnswerThenClose,
    /// Closes the connection without answering.
    Close,
    /// Answers 10 of the 100 bytes it announces, then waits.
    Partial,
    /// Answers 10 of the 100 bytes it announces, then closes.
    PartialThenClose,
    /// Sends the head of an answer of 100 bytes, then closes.
    HeadThenClose,
    /// Answers in chunks, with a trailer.
    AnswerChunked,
    /// Answers with no length, then closes to end the body.
    AnswerUntilClose,
    /// Sends `100 Continue`, then answers.
    InterimThenAnswer,
    /// Answers `204 No Content`.
    NoContent,
    /// Answers with two different lengths.
    TwoLengths,
}

struct App {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// Every request head read, lowercased.
    heads: Arc<Mutex<Vec<String>>>,
}

impl App {
    fn counts(&self) -> (usize, usize) {
        (
            self.connections.load(Ordering::SeqCst),
            self.requests.load(Ordering::SeqCst),
        )
    }
}

async fn app(script: fn(usize) -> Then) -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = App {
        addr: listener.local_addr().unwrap(),
        connections: Arc::default(),
        requests: Arc::default(),
        heads: Arc::default(),
    };
    let (connections, requests) = (app.connections.clone(), app.requests.clone());
    let heads = app.heads.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(tcp, requests.clone(), heads.clone(), script));
        }
    });
    app
}

async fn serve(
    mut tcp: TcpStream,
    requests: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
    script: fn(usize) -> Then,
) {
    let mut buf = Vec::new();
    loop {
        let Some(head) = read_head(&mut tcp, &mut buf).await else {
            return;
        };
        heads.lock().push(head.clone());
        let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
        match script(n) {
            Then::Answer => tcp.write_all(OK).await.unwrap(),
            Then::AnswerLater => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                tcp.write_all(OK).await.unwrap();
            }
            Then::AnswerThenClose => {
                tcp.write_all(OK).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                return;
            }
            Then::Close => return,
            Then::PartialThenClose => {
                let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789";
                tcp.write_all(head).await.unwrap();
                return;
            }
            Then::HeadThenClose => {
                let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n";
                tcp.write_all(head).await.unwrap();
                return;
            }
            Then::Partial => {
                let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789";
                tcp.write_all(head).await.unwrap();
                std::future::pending::<()>().await;
            }
            Then::AnswerChunked => {
                let chunked =
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n\
                    2\r\nok\r\n3\r\n!!!\r\n0\r\nx-sum: 5\r\n\r\n";
                tcp.write_all(chunked).await.unwrap();
            }
            Then::AnswerUntilClose => {
                tcp.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil close")
                    .await
                    .unwrap();
                return;
            }
            Then::InterimThenAnswer => {
                tcp.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .unwrap();
                tcp.write_all(OK).await.unwrap();
            }
            Then::NoContent => tcp
                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap(),
            Then::TwoLengths => tcp
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok")
                .await
                .unwrap(),
        }
    }
}

/// Reads one request head off `tcp` (leaving what follows it in `buf`).
async fn read_head(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf.drain(..end + 4).collect()).unwrap();
            return Some(head.to_ascii_lowercase());
        }
        let mut more = [0u8; 4096];
        match tcp.read(&mut more).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&more[..n]),
        }
    }
}

/// A proxy in front of `app`: 503 when it could not connect, 502 when the
/// request failed, 504 past the timeout an `x-timeout-ms` header asks for.
async fn proxy(app: SocketAddr, idle_timeout: Duration) -> SocketAddr {
    let authority: Authority = app.to_string().parse().unwrap();
    let upstreams = Upstreams::new(authority, Duration::from_secs(1), idle_timeout);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let upstreams = upstreams.clone();
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let upstreams = upstreams.clone();
                async move {
                    let (parts, _) = req.into_parts();
                    let timeout = parts
                        .headers
                        .get("x-timeout-ms")
                        .map(|v| Duration::from_millis(v.to_str().unwrap().parse().unwrap()));
                    let req = Request::from_parts(parts, ());
                    let resp = match upstreams.send(req, timeout).await {
                        Ok((resp, lease)) => {
                            resp.map(|()| ProxyBody::upstream(Source::Link(lease)))
                        }
                        Err(failure) => {
                            let mut resp = Response::new(ProxyBody::local("failed\n"));
                            *resp.status_mut() = match failure {
                                Failure::Connect(_) => StatusCode::SERVICE_UNAVAILABLE,
                                Failure::Request(_) => StatusCode::BAD_GATEWAY,
                                Failure::Timeout => StatusCode::GATEWAY_TIMEOUT,
                            };
                            resp
                        }
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    addr
}

type Client = hyper::client::conn::http1::SendRequest<ProxyBody>;

async fn client(proxy: SocketAddr) -> Client {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

fn get() -> Request<ProxyBody> {
    Request::get("/")
        .header("host", "app")
        .body(ProxyBody::local(""))
        .unwrap()
}

/// The status and the whole body of a GET on a fresh client connection.
async fn fetch(proxy: SocketAddr) -> (StatusCode, Bytes) {
    fetch_within(proxy, None).await
}

/// The same, with the upstream timeout of `timeout_ms` when there is one.
async fn fetch_within(proxy: SocketAddr, timeout_ms: Option<u64>) -> (StatusCode, Bytes) {
    let mut req = get();
    if let Some(ms) = timeout_ms {
        req.headers_mut().insert("x-timeout-ms", ms.into());
    }
    let resp = client(proxy).await.send_request(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn requests_one_after_another_share_one_connection() {
    let app = app(|_| Then::Answer).await;
    let proxy = proxy(app.addr, MINUTE).await;
    for _ in 0..3 {
        assert_eq!(fetch(proxy).await, (StatusCode::OK, Bytes::from("ok")));
    }
    assert_eq!(app.counts(), (1, 3));
}

#[tokio::test]
async fn the_app_gets_the_path_and_query_and_a_host_when_the_client_sent_none() {
    let app = app(|_| Then::Answer).await;
    let proxy = proxy(app.addr, MINUTE).await;
    let absolute = Request::get("http://elsewhere.example/x?y=1")
        .body(ProxyBody::local(""))
        .unwrap();
    let resp = client(proxy).await.send_request(absolute).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let head = app.heads.lock()[0].clone();
    assert!(head.starts_with("get /x?y=1 http/1.1\r\n"), "{head}");
    assert!(head.contains(&format!("host: {}\r\n", app.addr)), "{head}");
}

#[tokio::test]
async fn concurrent_requests_each_get_a_connection_and_leave_it_for_the_next() {
    let app = app(|_| Then::AnswerLater).await;
    let proxy = proxy(app.addr, MINUTE).await;
    let together = futures_util::future::join_all((0..4).map(|_| fetch(proxy))).await;
    assert!(together.iter().all(|(s, _)| *s == StatusCode::OK));
    for _ in 0..4 {
        assert_eq!(fetch(proxy).await.0, StatusCode::OK);
    }
    assert_eq!(app.counts(), (4, 8));
}

#[tokio::test]
async fn a_request_past_its_deadline_times_out_and_its_connection_is_not_reused() {
    let app = app(|n| {
        if n == 1 {
            Then::AnswerLater
        } else {
            Then::Answer
        }
    })
    .await;
    let proxy = proxy(app.addr, MINUTE).await;
    assert_eq!(
        fetch_within(proxy, Some(20)).await.0,
        StatusCode::GATEWAY_TIMEOUT
    );
    // The late answer must not be read as the next request's.
    assert_eq!(fetch(proxy).await, (StatusCode::OK, Bytes::from("ok")));
    assert_eq!(app.counts(), (2, 2));
}

#[tokio::test]
async fn each_request_on_a_connection_has_its_own_deadline() {
    let app = app(|n| {
        if n == 1 {
            Then::Answer
        } else {
            Then::AnswerLater
        }
    })
    .await;
    let proxy = proxy(app.addr, MINUTE).await;
    // The link's one timer: set far, then nearer (the 100 ms answer comes too
    // late), then, after it fired, far again.
    assert_eq!(fetch_within(proxy, Some(10_000)).await.0, StatusCode::OK);
    assert_eq!(app.counts(), (1, 1));
    let (status, _) = fetch_within(proxy, Some(30)).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(fetch_within(proxy, Some(10_000)).await.0, StatusCode::OK);
    assert_eq!(app.counts(), (2, 3));
}

#[tokio::test]
async fn a_connection_the_app_closed_while_idle_is_replaced_and_the_request_sent_once() {
    let app = app(|_| Then::AnswerThenClose).await;
    let proxy = proxy(app.addr, MINUTE).await;
    assert_eq!(fetch(proxy).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fetch(proxy).await.0, StatusCode::OK);
    assert_eq!(app.counts(), (2, 2));
}

#[tokio::test]
async fn a_request_the_app_read_is_never_sent_again() {
    let app = app(|n| if n == 1 { Then::Answer } else { Then::Close }).await;
    let proxy = proxy(app.addr, MINUTE).await;
    assert_eq!(fetch(proxy).await.0, StatusCode::OK);
    // Read by the app on the reused connection, then no answer: an error,
    // not a second try.
    assert_eq!(fetch(proxy).await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(app.counts(), (1, 2));
}

#[tokio::test]
async fn a_request_on_a_fresh_connection_that_fails_is_not_retried() {
    let app = app(|_| Then::Close).await;
    let proxy = proxy(app.addr, MINUTE).await;
    assert_eq!(fetch(proxy).await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(app.counts(), (1, 1));
}

#[tokio::test]
async fn an_app_that_is_not_listening_is_a_connect_failure() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let proxy = proxy(addr, MINUTE).await;
    assert_eq!(fetch(proxy).await.0, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn connections_idle_past_the_timeout_are_not_used() {
    let app = app(|_| Then::Answer).await;
    let proxy = proxy(app.addr, Duration::from_millis(50)).await;
    assert_eq!(fetch(proxy).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(fetch(proxy).await.0, StatusCode::OK);
    assert_eq!(app.counts(), (2, 2));
}

#[tokio::test]
async fn a_response_dropped_midway_closes_its_connection() {
    let app = app(|n| if n == 1 { Then::Partial } else { Then::Answer }).await;
    let proxy = proxy(app.addr, MINUTE).await;
    let resp = client(proxy).await.send_request(get()).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, Bytes::from("0123456789"));
    drop(body);
    assert_eq!(fetch(proxy).await, (StatusCode::OK, Bytes::from("ok")));
    assert_eq!(app.counts(), (2, 2));
}

#[tokio::test]
async fn a_response_the_app_cuts_short_reaches_the_client_cut_short() {
    let app = app(|_| Then::PartialThenClose).await;
    let proxy = proxy(app.addr, MINUTE).await;
    let resp = client(proxy).await.send_request(get()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, Bytes::from("0123456789"));
    assert!(body.collect().await.is_err());
}

#[tokio::test]
async fn an_answer_the_app_cuts_off_after_its_head_reaches_the_client_cut_off() {
    let app = app(|_| Then::HeadThenClose).await;
    let proxy = proxy(app.addr, MINUTE).await;
    let resp = client(proxy).await.send_request(get()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.into_body().collect().await.is_err());
}

#[tokio::test]
async fn a_chunked_answer_arrives_with_its_trailers_and_its_connection_serves_again() {
    let app = app(|n| {
        if n == 1 {
            Then::AnswerChunked
        } else {
            Then::Answer
        }
    })
    .await;
    let proxy = proxy(app.addr, MINUTE).await;
    let mut req = get();
    // hyper sends the trailers the head announced to a client that takes them.
    req.headers_mut().insert("te", "trailers".parse().unwrap());
    let resp = client(proxy).await.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap();
    assert_eq!(body.trailers().unwrap()["x-sum"], "5");
    assert_eq!(body.to_bytes(), "ok!!!");
    assert_eq!(fetch(proxy).await, (StatusCode::OK, Bytes::from("ok")));
    assert_eq!(app.counts(), (1, 2));
}

#[tokio::test]
async fn an_answer_that_ends_at_close_arrives_whole_and_its_connection_is_not_reused() {
    let app = app(|n| {
        if n == 1 {
            Then::AnswerUntilClose
        } else {
            Then::Answer
        }
    })
    .await;
    let proxy = proxy(app.addr, MINUTE).await;
    assert_eq!(
        fetch(proxy).await,
        (StatusCode::OK, Bytes::from("until close"))
    );
    assert_eq!(fetch(proxy).await, (StatusCode::OK, Bytes::from("ok")));
    assert_eq!(app.counts(), (2, 2));
}

#[tokio::test]
async fn interim_answers_are_skipped_and_answers_without_a_body_free_the_connection() {
    let app = app(|n| match n {
        1 => Then::InterimThenAnswer,
        2 => Then::NoContent,
        _ => Then::Answer,
    })
    .await;
    let proxy = proxy(app.addr, MINUTE).await;
    assert_eq!(fetch(proxy).await, (StatusCode::OK, Bytes::from("ok")));
    assert_eq!(fetch(proxy).await, (StatusCode::NO_CONTENT, Bytes::new()));
    assert_eq!(fetch(proxy).await, (StatusCode::OK, Bytes::from("ok")));
    assert_eq!(app.counts(), (1, 3));
}

#[tokio::test]
async fn an_answer_framed_two_ways_is_a_failed_request_and_its_connection_closes() {
    let app = app(|n| {
        if n == 1 {
            Then::TwoLengths
        } else {
            Then::Answer
        }
    })
    .await;
    let proxy = proxy(app.addr, MINUTE).await;
    assert_eq!(fetch(proxy).await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(fetch(proxy).await, (StatusCode::OK, Bytes::from("ok")));
    assert_eq!(app.counts(), (2, 2));
}

/// An app on raw TCP that reads each request and writes `answer`.
async fn answering(answer: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while read_head(&mut tcp, &mut buf).await.is_some() {
                    if tcp.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_response_head_that_never_ends_is_refused_not_buffered() {
    let mut answer = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    answer.resize(answer.len() + (4 << 20), b'a');
    let proxy = proxy(answering(answer).await, MINUTE).await;
    let got = tokio::time::timeout(Duration::from_secs(10), fetch(proxy)).await;
    let (status, _) = got.expect("still buffering a 4 MiB head after 10 s");
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn an_uncommon_reason_phrase_reaches_the_client() {
    let answer = b"HTTP/1.1 200 Alright\r\ncontent-length: 2\r\n\r\nok".to_vec();
    let proxy = proxy(answering(answer).await, MINUTE).await;
    let resp = client(proxy).await.send_request(get()).await.unwrap();
    let reason = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
    assert_eq!(reason.as_deref(), Some("Alright"));
}

#[tokio::test]
async fn an_idle_link_does_not_keep_a_large_bodys_buffer() {
    let mut answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", 4 << 20).into_bytes();
    answer.resize(answer.len() + (4 << 20), b'x');
    let authority: Authority = answering(answer).await.to_string().parse().unwrap();
    let upstreams = Upstreams::new(authority, Duration::from_secs(1), MINUTE);
    let req = Request::get("/").body(()).unwrap();
    let (_, lease) = upstreams.send(req, None).await.ok().unwrap();
    let body = ProxyBody::upstream(Source::Link(lease));
    assert_eq!(body.collect().await.unwrap().to_bytes().len(), 4 << 20);
    let idle = upstreams.shared.idle.lock();
    assert_eq!(idle.len(), 1, "the link went back");
    let held = idle[0].1.held();
    assert!(
        held <= 32 * 1024,
        "an idle link holds {held} bytes of buffer"
    );
}
