//! HTTP/1 clients that give up: curl with --max-time through the guard, and a
//! hung app that must fail the canary as fast as a 5xx fault at the same rate.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use canary_guard::runtime::guard::Guard;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs `n` concurrent `curl --max-time MAX` calls of `url`; returns their exit codes.
async fn curls(n: usize, max_time: &str, url: &str) -> Vec<i32> {
    let runs = (0..n).map(|_| {
        let (max_time, url) = (max_time.to_string(), url.to_string());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "--max-time", &max_time, &url])
                .status()
                .unwrap_or_else(|e| panic!("curl is required ({e}); scripts/test installs it"))
                .code()
                .unwrap_or(-1)
        })
    });
    futures_util::future::join_all(runs)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_giving_up_after_the_limit_leaves_slow_requests() {
    let app = start_app().await;
    let guard = start_guard(app, |c| {
        c.thresholds.max_latency = ms(500);
        c.interval = ms(100);
    })
    .await;
    let url = format!("http://{}/delay/2000", guard.proxy_addr.unwrap());
    // curl's exit code 28: operation timed out.
    assert_eq!(curls(20, "0.6", &url).await, vec![28; 20]);
    let s = wait_state(&guard, |s| s["window"]["abandoned"] == 20).await;
    assert_eq!(outcomes(&guard).await, (0.0, 0.0, 20.0));
    assert_eq!(s["window"]["requests"], 20);
    assert_eq!(s["window"]["errors"], 0);
    // Each is a sample of at least the ~600 ms it waited.
    let p50 = s["window"]["p50_ms"].as_f64().unwrap();
    assert!(p50 >= 550.0, "p50 {p50}");
    let page = metrics(&guard).await;
    assert_eq!(
        series(
            &page,
            "canary_guard_request_duration_seconds_bucket{le=\"0.5\"}"
        ),
        Some(0.0)
    );
    promtool_check(&page);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_giving_up_before_the_limit_is_abandoned_not_judged() {
    let app = start_app().await;
    let guard = start_guard(app, |c| {
        c.thresholds.max_latency = ms(500);
        c.interval = ms(100);
    })
    .await;
    let url = format!("http://{}/delay/2000", guard.proxy_addr.unwrap());
    assert_eq!(curls(20, "0.2", &url).await, vec![28; 20]);
    let s = wait_state(&guard, |s| s["window"]["abandoned"] == 20).await;
    assert_eq!(outcomes(&guard).await, (0.0, 0.0, 20.0));
    assert_eq!(s["window"]["requests"], 0);
    assert_eq!(s["verdict"], "inconclusive");
    // And a client that waits for its answer is a success, counted once.
    let url = format!("http://{}/delay/1", guard.proxy_addr.unwrap());
    assert_eq!(curls(1, "5", &url).await, vec![0]);
    wait_state(&guard, |s| s["window"]["requests"] == 1).await;
    assert_eq!(outcomes(&guard).await, (1.0, 0.0, 20.0));
}

/// One HTTP/1.1 request on its own connection, given up (connection closed) after `patience`.
async fn impatient_get(proxy: SocketAddr, path: &str, patience: Duration) {
    let mut conn = TcpStream::connect(proxy).await.unwrap();
    conn.write_all(format!("GET {path} HTTP/1.1\r\nhost: app\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(patience, conn.read(&mut buf)).await;
}

/// Sends `rate` requests a second to `path` through `guard` (each given up
/// after 600 ms) until the verdict is failing; returns how long that took.
async fn time_to_failing(guard: &Guard, path: &'static str, rate: u32) -> Duration {
    let proxy = guard.proxy_addr.unwrap();
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut checks = guard.checks.clone();
    let deadline = start + Duration::from_secs(20);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                tokio::spawn(impatient_get(proxy, path, Duration::from_millis(600)));
            }
            _ = checks.changed() => {
                if guard.state.read().verdict.as_str() == "failing" {
                    return start.elapsed();
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never failed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_app_fails_as_fast_as_a_5xx_fault_at_the_same_rate() {
    let app = start_app().await;
    let configure = |c: &mut canary_guard::config::GuardConfig| {
        c.thresholds.max_latency = ms(500);
        c.interval = ms(250);
    };
    let hung = start_guard(app, configure).await;
    let broken = start_guard(app, configure).await;
    // Both at 20 requests a second, side by side.
    let (t_hung, t_5xx) = tokio::join!(
        time_to_failing(&hung, "/delay/5000", 20),
        time_to_failing(&broken, "/status/500", 20)
    );
    eprintln!("time to failing: hung app {t_hung:?}, 100% 5xx {t_5xx:?}");
    // The evidence: the hung app fails on latency, each sample over the limit.
    let s = state(&hung).await;
    let b = &s["breach"];
    assert_eq!(b["errors"], 0, "{s}");
    assert_eq!(b["over_limit"], b["latency_samples"], "{s}");
    assert!(b["over_limit"].as_u64().unwrap() >= 20, "{s}");
    let s = state(&broken).await;
    assert_eq!(s["breach"]["errors"], s["breach"]["requests"], "{s}");
    // A hung request is known slow once it has waited the 500 ms limit, not
    // when its client gives up; beyond that both need the same checks.
    assert!(
        t_hung <= t_5xx + Duration::from_millis(500 + 2 * 250 + 500),
        "hung {t_hung:?} vs 5xx {t_5xx:?}"
    );
}
