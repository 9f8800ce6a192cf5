//! Bad input on the proxy: the guard refuses what it must, serves everything
//! the app would have served, and never blames the canary for a client's fault.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::process::GuardProcess;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn counts(guard: &canary_guard::runtime::guard::Guard) -> (f64, f64) {
    let page = metrics(guard).await;
    (
        series(&page, "canary_guard_requests_total{outcome=\"success\"}").unwrap(),
        series(&page, "canary_guard_requests_total{outcome=\"error\"}").unwrap(),
    )
}

/// `canary_guard_requests_total{outcome="abandoned"}`.
async fn abandoned(guard: &canary_guard::runtime::guard::Guard) -> f64 {
    let page = metrics(guard).await;
    series(&page, "canary_guard_requests_total{outcome=\"abandoned\"}").unwrap()
}

/// `canary_guard_proxy_refusals_total{reason}` in a metrics page (absent: 0).
fn refusals(page: &str, reason: &str) -> f64 {
    series(
        page,
        &format!("canary_guard_proxy_refusals_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Waits until hyper's refusals for `reason` reach `n`; returns all three counts
/// (header_too_large, header_timeout, malformed_request).
async fn refused(guard: &canary_guard::runtime::guard::Guard, reason: &str, n: f64) -> [f64; 3] {
    let page = wait_metrics(guard, |p| refusals(p, reason) >= n).await;
    ["header_too_large", "header_timeout", "malformed_request"].map(|r| refusals(&page, r))
}

/// Reads until the peer closes or `limit` passes; returns what came.
async fn read_all(conn: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, conn.read_to_end(&mut out)).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_and_are_not_the_canarys_fault() {
    let app = start_app().await;
    let guard = start_guard(app, |c| {
        c.proxy_settings().unwrap().limits.max_header_bytes = 16384
    })
    .await;
    let mut conn = TcpStream::connect(guard.proxy_addr.unwrap()).await.unwrap();
    let big = "x".repeat(40_000);
    conn.write_all(
        format!("GET /status/200 HTTP/1.1\r\nhost: a\r\nx-big: {big}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let answer =
        String::from_utf8_lossy(&read_all(&mut conn, Duration::from_secs(5)).await).to_string();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // A normal request right after is served.
    let (status, _) = get(
        &http1(),
        &format!("http://{}/status/200", guard.proxy_addr.unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(counts(&guard).await, (1.0, 0.0));
    // Counted as a refusal by hyper, apart from the canary's requests.
    assert_eq!(
        refused(&guard, "header_too_large", 1.0).await,
        [1.0, 0.0, 0.0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_gets_400_and_nothing_reaches_the_app() {
    let app = start_app().await;
    let guard = start_guard(app, |_| {}).await;
    for garbage in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let mut conn = TcpStream::connect(guard.proxy_addr.unwrap()).await.unwrap();
        conn.write_all(garbage).await.unwrap();
        let answer = read_all(&mut conn, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty()
                || text.starts_with("HTTP/1.1 400")
                || text.starts_with("HTTP/1.1 505"),
            "{text}"
        );
    }
    assert_eq!(counts(&guard).await, (0.0, 0.0));
    assert_eq!(
        refused(&guard, "malformed_request", 3.0).await,
        [0.0, 0.0, 3.0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_cut_off_after_the_header_timeout() {
    let app = start_app().await;
    let guard = start_guard(app, |c| {
        c.proxy_settings().unwrap().limits.header_read_timeout = ms(1000)
    })
    .await;
    // hyper closes an idle keep-alive connection on the same timer; that is no refusal.
    let mut idle = TcpStream::connect(guard.proxy_addr.unwrap()).await.unwrap();
    idle.write_all(b"GET /status/200 HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut answer))
        .await
        .expect("the idle connection was never closed")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    let mut slow = TcpStream::connect(guard.proxy_addr.unwrap()).await.unwrap();
    slow.write_all(b"GET /status/200 HTTP/1.1\r\nhost: a\r\nx-one: 1\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    // The guard answers 408 or closes; either way the connection ends.
    let answer = read_all(&mut slow, Duration::from_secs(10)).await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "held {waited:?}");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // Meanwhile everyone else was served.
    let (status, _) = get(
        &http1(),
        &format!("http://{}/status/200", guard.proxy_addr.unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(counts(&guard).await, (2.0, 0.0));
    // Only the slow client is a refusal (the idle one ended a second earlier).
    assert_eq!(
        refused(&guard, "header_timeout", 1.0).await,
        [0.0, 1.0, 0.0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_vanishing_mid_upload_is_not_the_canarys_fault() {
    let app = start_app().await;
    let guard = start_guard(app, |_| {}).await;
    let mut conn = TcpStream::connect(guard.proxy_addr.unwrap()).await.unwrap();
    conn.write_all(b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: 1000000\r\n\r\n")
        .await
        .unwrap();
    conn.write_all(&[b'x'; 300_000]).await.unwrap();
    // The app answers while the upload goes on (it streams the echo back); leave once
    // its answer has begun. Leaving earlier races hyper's read of the request head.
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("the app's answer began")
            .unwrap();
        assert!(n > 0, "the guard closed before answering");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    drop(conn);
    // The client left before the app's whole answer: abandoned, the client's
    // doing, never a canary error (nor a success).
    let mut checks = guard.checks.clone();
    checks.borrow_and_update();
    tokio::time::timeout(Duration::from_secs(10), async {
        while abandoned(&guard).await < 1.0 {
            checks.changed().await.unwrap();
        }
    })
    .await
    .expect("the request was never recorded");
    assert_eq!(counts(&guard).await, (0.0, 0.0));
    assert_eq!(abandoned(&guard).await, 1.0);
    let (status, _) = get(
        &http1(),
        &format!("http://{}/status/200", guard.proxy_addr.unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_breaks_mid_body_breaks_the_client_too_and_the_guard_goes_on() {
    // A raw app: headers promising 100 bytes, three bytes, then a hang-up.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc")
                    .await;
            });
        }
    });
    let guard = start_guard(app, |_| {}).await;
    let resp = http1()
        .request(
            http::Request::get(format!("http://{}/x", guard.proxy_addr.unwrap()))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The client sees the same broken body it would have seen from the app.
    assert!(http_body_util::BodyExt::collect(resp.into_body())
        .await
        .is_err());
    // A body the app cut short is never a success: the canary's error.
    assert_eq!(counts(&guard).await, (0.0, 1.0));
    assert_eq!(abandoned(&guard).await, 0.0);
    let (status, _) = get(&http1(), &format!("http://{}/healthz", guard.admin_addr)).await;
    assert_eq!(status, StatusCode::OK);
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_connections_with_bounded_memory_and_no_fd_leak() {
    let app = start_app().await;
    // Opening 5,000 connections can outlast the default 10 s header timeout on a busy
    // machine, which would close the first ones before they are counted.
    let g = GuardProcess::start(app, &["--header-read-timeout", "5m"]).await;
    let pid = g.child.id();
    let fds_before = open_fds(pid);
    let rss_before = g.peak_rss_kib();
    let mut conns = Vec::new();
    for _ in 0..5_000 {
        let mut c = TcpStream::connect(g.proxy).await.unwrap();
        // Half-sent requests keep the connections open inside the guard.
        c.write_all(b"GET /status/200 HTTP/1.1\r\nhost: a\r\n")
            .await
            .unwrap();
        conns.push(c);
    }
    // Everyone else is still served while 5,000 connections hang.
    let (status, _) = get(&http1(), &format!("http://{}/status/200", g.proxy)).await;
    assert_eq!(status, StatusCode::OK);
    let fds_open = open_fds(pid);
    assert!(fds_open >= fds_before + 4_000, "only {fds_open} fds open");
    let peak = g.peak_rss_kib();
    eprintln!(
        "5,000 connections: fds {fds_before} -> {fds_open}, peak RSS {rss_before} -> {peak} KiB"
    );
    // Memory is per open connection (hyper's buffers and a task), capped by
    // --max-connections; it must not grow with anything else.
    let per_conn = (peak - rss_before) / 5_000;
    assert!(
        per_conn < 32,
        "{per_conn} KiB per connection (peak {rss_before} -> {peak} KiB)"
    );
    drop(conns);
    // All of them are closed again: poll the guard's fd table (another process).
    for _ in 0..200 {
        if open_fds(pid) <= fds_before + 10 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fds leaked: {} open, {fds_before} before", open_fds(pid));
}
