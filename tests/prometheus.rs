//! A real Prometheus (Debian's `prometheus` package) scrapes a running guard, and its
//! HTTP API returns exactly the requests the test sent.

mod support;

use std::time::{Duration, Instant};

use support::prometheus::Prometheus;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_exactly_the_requests_sent() {
    let app = start_app().await;
    let guard = start_guard(app, |_| {}).await;
    let c = http1();
    for i in 0..37 {
        let code = if i % 5 == 0 { 503 } else { 200 };
        let (status, _) = get(
            &c,
            &format!("http://{}/status/{code}", guard.proxy_addr.unwrap()),
        )
        .await;
        assert_eq!(status.as_u16(), code);
    }
    let prom = Prometheus::start(guard.admin_addr, &[]);
    let instance = guard.admin_addr.to_string();
    let want = vec![
        ("abandoned".to_string(), instance.clone(), "0".to_string()),
        ("error".to_string(), instance.clone(), "8".to_string()),
        ("success".to_string(), instance.clone(), "29".to_string()),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        seen = prom.requests_total().await;
        if !seen.is_empty() {
            break;
        }
        // Another process: nothing to await but its next scrape.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        seen, want,
        "what Prometheus stored after scraping the guard"
    );
    // The scrape itself was healthy.
    let up = prom.get("/api/v1/query?query=up").await.unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
}
