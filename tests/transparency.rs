//! The proxy forwards requests and responses unchanged.

mod support;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn method_path_query_headers_and_body_are_forwarded() {
    let app = start_app().await;
    let guard = start_guard(app, |_| {}).await;
    let payload: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!(
            "http://{}/echo/a%20b?x=1&y=%2F",
            guard.proxy_addr.unwrap()
        ))
        .header("host", "reviews.example:9080")
        .header("x-custom", "v1")
        .header("x-multi", "a")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "drop-me")
        .body(body(payload.clone()))
        .unwrap();
    let resp = http1().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(h["x-seen-method"], "PUT");
    assert_eq!(h["x-seen-uri"], "/echo/a%20b?x=1&y=%2F");
    let seen = h["x-seen-headers"].to_str().unwrap();
    assert!(seen.contains("host=reviews.example:9080;"), "{seen}");
    assert!(seen.contains("x-custom=v1;"), "{seen}");
    assert!(!seen.contains("x-hop"), "hop-by-hop header leaked: {seen}");
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "body changed");
}

#[tokio::test]
async fn chunked_request_and_large_streamed_response() {
    let app = start_app().await;
    let guard = start_guard(app, |_| {}).await;
    // A streamed (chunked) request body of unknown length.
    let chunks: Vec<Result<hyper::body::Frame<Bytes>, hyper::Error>> = (0..50)
        .map(|i| Ok(hyper::body::Frame::data(Bytes::from(vec![i as u8; 10_000]))))
        .collect();
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed();
    let req = Request::post(format!("http://{}/echo", guard.proxy_addr.unwrap()))
        .body(body)
        .unwrap();
    let resp = http1().request(req).await.unwrap();
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), 500_000);
    assert!(got
        .chunks(10_000)
        .enumerate()
        .all(|(i, c)| c.iter().all(|&b| b == i as u8)));

    let (status, big) = get(
        &http1(),
        &format!("http://{}/bytes/{}", guard.proxy_addr.unwrap(), 8 << 20),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(big.len(), 8 << 20);
}

#[tokio::test]
async fn http2_prior_knowledge_reaches_the_app_as_http2() {
    let app = start_app().await;
    let guard = start_guard(app, |_| {}).await;
    let req = Request::post(format!("http://{}/echo?h2=1", guard.proxy_addr.unwrap()))
        .version(Version::HTTP_2)
        .body(body("over h2"))
        .unwrap();
    let resp = http2().request(req).await.unwrap();
    assert_eq!(resp.headers()["x-seen-version"], "HTTP/2.0");
    let seen = resp.headers()["x-seen-headers"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        seen.contains(&format!("host={};", guard.proxy_addr.unwrap())),
        "{seen}"
    );
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&got[..], b"over h2");
}

#[tokio::test]
async fn upgrade_passes_through() {
    let app = start_app().await;
    let guard = start_guard(app, |_| {}).await;
    let mut conn = tokio::net::TcpStream::connect(guard.proxy_addr.unwrap())
        .await
        .unwrap();
    conn.write_all(
        b"GET /upgrade HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        conn.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap().to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    conn.write_all(b"ping over the tunnel").await.unwrap();
    let mut buf = [0u8; 20];
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping over the tunnel");
    let _ = TokioIo::new(conn);
}

/// Reads more of `io` into `buf`; false once it closed.
async fn read_more(io: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut more = [0u8; 4096];
    match io.read(&mut more).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&more[..n]);
            true
        }
    }
}

/// Reads until what came ends with `end`; panics if the connection closes first.
async fn read_until(io: &mut tokio::net::TcpStream, end: &[u8]) -> Vec<u8> {
    let mut read = Vec::new();
    while !read.ends_with(end) {
        assert!(
            read_more(io, &mut read).await,
            "closed: {}",
            String::from_utf8_lossy(&read)
        );
    }
    read
}

/// An app that answers each request as soon as its head is in, then reads its
/// body (`content-length`), and reports every body it read.
async fn answers_before_reading(
    bodies: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                        if !read_more(&mut tcp, &mut buf).await {
                            return;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    buf.drain(..end);
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .unwrap();
                    while buf.len() < length {
                        if !read_more(&mut tcp, &mut buf).await {
                            return;
                        }
                    }
                    bodies.send(buf.drain(..length).collect()).unwrap();
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_answer_before_the_upload_ends_reaches_the_client_and_the_whole_upload_the_app() {
    let (tx, mut bodies) = tokio::sync::mpsc::unbounded_channel();
    let app = answers_before_reading(tx).await;
    let guard = start_guard(app, |_| {}).await;
    let mut client = tokio::net::TcpStream::connect(guard.proxy_addr.unwrap())
        .await
        .unwrap();
    client
        .write_all(b"POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: 20\r\n\r\n0123456789")
        .await
        .unwrap();
    // The whole answer arrives while half the upload is still to come.
    let answer = read_until(&mut client, b"\r\n\r\nok").await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    client.write_all(b"abcdefghij").await.unwrap();
    assert_eq!(bodies.recv().await.unwrap(), b"0123456789abcdefghij");
    // The client's connection serves again.
    client
        .write_all(b"GET /again HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let again = read_until(&mut client, b"\r\n\r\nok").await;
    assert!(again.starts_with(b"HTTP/1.1 200"));
}
