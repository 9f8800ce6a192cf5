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
