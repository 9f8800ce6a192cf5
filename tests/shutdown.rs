//! Graceful shutdown: in-flight requests finish, new ones are not accepted.

mod support;

use http::StatusCode;
use support::process::GuardProcess;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_after_shutdown_begins() {
    let app = start_app().await;
    let guard = start_guard(app, |_| {}).await;
    let mut arrivals = delay_arrivals();
    let before = *arrivals.borrow_and_update();
    let url = format!("http://{}/delay/300", guard.proxy_addr.unwrap());
    let in_flight = tokio::spawn(async move { get(&http1(), &url).await });
    // Shut down once the request has passed the guard: the app is sleeping on it.
    arrivals.wait_for(|n| *n > before).await.unwrap();
    let admin = guard.admin_addr;
    guard.shutdown();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"late\n");
    let proxy = guard.proxy_addr.unwrap();
    guard.wait().await;
    assert!(
        tokio::net::TcpStream::connect(proxy).await.is_err(),
        "still accepting"
    );
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "admin still up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_exits_zero() {
    let app = start_app().await;
    let mut g = GuardProcess::start(app, &["--drain-timeout", "5s"]).await;
    let mut arrivals = delay_arrivals();
    let before = *arrivals.borrow_and_update();
    let url = format!("http://{}/delay/500", g.proxy);
    let in_flight = tokio::spawn(async move { get(&http1(), &url).await });
    arrivals.wait_for(|n| *n > before).await.unwrap();
    g.terminate();
    let (status, _) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let exit = tokio::task::spawn_blocking(move || {
        let s = g.child.wait().unwrap();
        std::mem::forget(g);
        s
    })
    .await
    .unwrap();
    assert!(exit.success(), "exit status {exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_with_bounded_guard_memory() {
    use http_body_util::BodyExt;
    let app = start_app().await;
    let g = GuardProcess::start(app, &[]).await;
    let idle = g.peak_rss_kib();
    const SIZE: usize = 64 << 20;
    // Upload 64 MiB in 1 MiB chunks; the app streams it straight back.
    let chunk = bytes::Bytes::from(vec![7u8; 1 << 20]);
    let frames = (0..SIZE / chunk.len())
        .map(move |_| Ok::<_, hyper::Error>(hyper::body::Frame::data(chunk.clone())));
    let upload = http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed();
    let req = http::Request::post(format!("http://{}/echo", g.proxy))
        .body(upload)
        .unwrap();
    let mut resp = http1().request(req).await.unwrap().into_body();
    let mut echoed = 0usize;
    while let Some(frame) = resp.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            assert!(d.iter().all(|&b| b == 7));
            echoed += d.len();
        }
    }
    assert_eq!(echoed, SIZE);
    let (status, down) = get(&http1(), &format!("http://{}/bytes/{SIZE}", g.proxy)).await;
    assert_eq!((status, down.len()), (StatusCode::OK, SIZE));
    let peak = g.peak_rss_kib();
    eprintln!("guard peak RSS {peak} KiB (idle {idle} KiB)");
    // The guard streams: what it adds while moving 128 MiB stays far below one body.
    assert!(
        peak - idle < 16 * 1024,
        "guard peak RSS {peak} KiB (idle {idle} KiB) after 128 MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_upgraded_connection_does_not_hold_the_drain() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let drain = std::time::Duration::from_secs(60);
    let app = start_app().await;
    let guard = start_guard(app, |c| {
        c.proxy_settings().unwrap().limits.drain_timeout = drain
    })
    .await;
    let mut tunnel = tokio::net::TcpStream::connect(guard.proxy_addr.unwrap())
        .await
        .unwrap();
    tunnel
        .write_all(
            b"GET /upgrade HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tunnel.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    tunnel.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tunnel.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");

    let started = tokio::time::Instant::now();
    guard.shutdown();
    guard.wait().await;
    assert!(
        started.elapsed() < drain / 2,
        "the drain waited {:?} for the tunnel",
        started.elapsed()
    );
    // The tunnel was closed with the drain.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(drain / 2, tunnel.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the tunnel outlived the guard");
}
