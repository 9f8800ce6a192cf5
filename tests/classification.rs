//! What counts against the canary, and what the guard answers itself.

mod support;

use std::time::Duration;

use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use support::*;

async fn counts(guard: &canary_guard::runtime::guard::Guard) -> (f64, f64) {
    let page = metrics(guard).await;
    (
        series(&page, "canary_guard_requests_total{outcome=\"success\"}").unwrap(),
        series(&page, "canary_guard_requests_total{outcome=\"error\"}").unwrap(),
    )
}

#[tokio::test]
async fn http_5xx_is_an_error_4xx_is_not() {
    let app = start_app().await;
    let guard = start_guard(app, |_| {}).await;
    let c = http1();
    for code in [200, 201, 404, 429, 500, 503, 599] {
        let (status, _) = get(
            &c,
            &format!("http://{}/status/{code}", guard.proxy_addr.unwrap()),
        )
        .await;
        assert_eq!(status.as_u16(), code, "the app's status is passed through");
    }
    assert_eq!(counts(&guard).await, (4.0, 3.0));
}

#[tokio::test]
async fn grpc_status_in_trailers_and_headers() {
    let app = start_app().await;
    let guard = start_guard(app, |_| {}).await;
    let c = http2();
    for path in [
        "grpc/0",
        "grpc/5",
        "grpc/13",
        "grpc/14",
        "grpc-only/0",
        "grpc-only/14",
    ] {
        let req = Request::post(format!("http://{}/{path}", guard.proxy_addr.unwrap()))
            .version(Version::HTTP_2)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body(&b"\0\0\0\0\0"[..]))
            .unwrap();
        let resp = c.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let collected = resp.into_body().collect().await.unwrap();
        if path.starts_with("grpc/") {
            let code = path.trim_start_matches("grpc/");
            let trailers = collected.trailers().expect("trailers are forwarded");
            assert_eq!(trailers["grpc-status"], code);
        }
    }
    // OK and NOT_FOUND are answers; INTERNAL and UNAVAILABLE are failures.
    assert_eq!(counts(&guard).await, (3.0, 3.0));
}

#[tokio::test]
async fn connect_failure_is_502_and_an_error() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let guard = start_guard(closed, |_| {}).await;
    let (status, _) = get(&http1(), &format!("http://{}/x", guard.proxy_addr.unwrap())).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(counts(&guard).await, (0.0, 1.0));
    let page = metrics(&guard).await;
    assert_eq!(
        series(
            &page,
            "canary_guard_proxy_refusals_total{reason=\"upstream_connect\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn upstream_timeout_is_504_and_an_error() {
    let app = start_app().await;
    let guard = start_guard(app, |c| {
        c.proxy_settings().unwrap().upstream.upstream_timeout = Some(ms(100))
    })
    .await;
    let (status, _) = get(
        &http1(),
        &format!("http://{}/delay/2000", guard.proxy_addr.unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let (status, _) = get(
        &http1(),
        &format!("http://{}/delay/1", guard.proxy_addr.unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(counts(&guard).await, (1.0, 1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_time_to_headers() {
    let app = start_app().await;
    let guard = start_guard(app, |c| c.thresholds.min_requests = 1).await;
    let c = http1();
    let mut sends = Vec::new();
    for _ in 0..4 {
        let c = c.clone();
        let url = format!("http://{}/delay/200", guard.proxy_addr.unwrap());
        sends.push(tokio::spawn(async move {
            for _ in 0..5 {
                assert_eq!(get(&c, &url).await.0, StatusCode::OK);
            }
        }));
    }
    for s in sends {
        s.await.unwrap();
    }
    let s = wait_state(&guard, |s| s["window"]["requests"] == 20).await;
    let p50 = s["window"]["p50_ms"].as_f64().unwrap();
    assert!(
        (180.0..=220.0).contains(&p50),
        "p50 {p50} ms not within 10% of 200 ms"
    );
    assert!(Duration::from_secs_f64(p50 / 1000.0) >= Duration::from_millis(190));
}
