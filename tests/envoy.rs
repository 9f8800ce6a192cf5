//! Envoy mode: the guard reads the canary's traffic from the istio-proxy's
//! counters, with no proxy of its own.

mod support;

use http::StatusCode;
use support::envoy::*;
use support::*;

use canary_guard::config::GuardConfig;
use canary_guard::domain::counters::{LatencyUnit, Schema};
use canary_guard::observe::scrape::ScrapeConfig;

const CANARY: [(&str, &str); 1] = [("destination_workload", "reviews-v2")];

/// Envoy's page at `url`, scraped every `scrape_interval`.
fn scrape(url: &str, scrape_interval: u64) -> ScrapeConfig {
    let mut scrape = istio_scrape(url, &CANARY);
    scrape.interval = ms(scrape_interval);
    scrape
}

/// Scrapes and checks every 100 ms, in a 5-minute window.
fn fast(url: &str) -> ScrapeConfig {
    let mut scrape = scrape(url, 100);
    scrape.max_gap = ms(300_000);
    scrape
}

fn fast_checks(c: &mut GuardConfig) {
    c.interval = ms(100);
    c.window = ms(300_000);
}

async fn outcomes(guard: &canary_guard::runtime::guard::Guard) -> (f64, f64) {
    let page = metrics(guard).await;
    (
        series(&page, "canary_guard_requests_total{outcome=\"success\"}").unwrap(),
        series(&page, "canary_guard_requests_total{outcome=\"error\"}").unwrap(),
    )
}

async fn scrape_errors(guard: &canary_guard::runtime::guard::Guard, reason: &str) -> f64 {
    let page = metrics(guard).await;
    series(
        &page,
        &format!("canary_guard_scrape_errors_total{{reason=\"{reason}\"}}"),
    )
    .unwrap()
}

fn window(s: &serde_json::Value) -> (u64, u64) {
    (
        s["window"]["requests"].as_u64().unwrap(),
        s["window"]["errors"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_exactly_the_canarys_deltas_through_a_reset_and_a_garbage_page() {
    // Envoy has been up for a while: this history must not count.
    let stats = FakeStats::start(Answer::Page(istio_page(1000, 50, 10, 0))).await;
    let url = stats.url();
    let guard = start_envoy_guard(fast(&url), fast_checks).await;
    assert_eq!(guard.proxy_addr, None, "envoy mode has no proxy listener");

    two_more_scrapes(&guard).await;
    let s = state(&guard).await;
    assert_eq!(s["mode"], "envoy");
    assert_eq!(s["scrape"]["counting"], true);
    assert_eq!(s["scrape"]["series"], 7);
    assert_eq!(window(&s), (0, 0));
    assert_eq!(outcomes(&guard).await, (0.0, 0.0));

    // 120 more 200s and 30 more 503s; other reporters and codes move too.
    stats.set(Answer::Page(istio_page(1120, 80, 10, 500)));
    two_more_scrapes(&guard).await;
    assert_eq!(outcomes(&guard).await, (120.0, 30.0));
    let s = wait_state(&guard, |s| window(s) == (120 + 30, 30)).await;
    assert_eq!(s["window"]["error_ratio"], 0.2);
    // 200s under 25 ms, 503s in (100, 250] ms: Envoy's buckets land on ours.
    let p50 = s["window"]["p50_ms"].as_f64().unwrap();
    let p99 = s["window"]["p99_ms"].as_f64().unwrap();
    assert!((24.0..=25.0).contains(&p50), "p50 {p50}");
    assert!((240.0..=250.0).contains(&p99), "p99 {p99}");

    // Envoy restarts: its counters start again from zero.
    stats.set(Answer::Page(istio_page(7, 2, 0, 0)));
    two_more_scrapes(&guard).await;
    assert_eq!(outcomes(&guard).await, (127.0, 32.0));
    wait_state(&guard, |s| window(s) == (159, 32)).await;

    // A garbage page: an error of the scrape, not of the canary.
    stats.set(Answer::Page(
        "<html><body>no healthy upstream</body></html>\n".into(),
    ));
    two_more_scrapes(&guard).await;
    assert!(scrape_errors(&guard, "parse").await >= 1.0);
    assert_eq!(outcomes(&guard).await, (127.0, 32.0));
    let s = state(&guard).await;
    assert_eq!(window(&s), (159, 32));
    assert_eq!(s["scrape"]["last_error"]["reason"], "parse");
    assert!(
        s["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["reason"] == "ScrapeFailing"),
        "{s}"
    );

    // Back to normal: counting resumes from the last good page.
    stats.set(Answer::Page(istio_page(17, 2, 0, 0)));
    two_more_scrapes(&guard).await;
    assert_eq!(outcomes(&guard).await, (137.0, 32.0));
    let s = wait_state(&guard, |s| window(s) == (169, 32)).await;
    assert_eq!(s["problems"], serde_json::json!([]));
    assert!(s["scrape"]["errors"].as_u64().unwrap() >= 1);

    let page = metrics(&guard).await;
    // Scrapes carry no per-request latency: the duration histogram stays empty.
    assert_eq!(
        series(&page, "canary_guard_request_duration_seconds_count"),
        Some(0.0)
    );
    promtool_check(&page);
    guard.shutdown();
    guard.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_faults_are_counted_but_never_as_canary_errors() {
    let stats = FakeStats::start(Answer::Page(istio_page(1000, 50, 10, 0))).await;
    let guard = start_envoy_guard(scrape(&stats.url(), 500), |_| {}).await;
    two_more_scrapes(&guard).await;

    let big = "x".repeat(17 << 20);
    for (answer, reason) in [
        (Answer::Status(StatusCode::SERVICE_UNAVAILABLE), "status"),
        (Answer::Page(big.clone()), "too_large"),
        (Answer::Chunked(big.clone()), "too_large"),
        (Answer::Hang, "timeout"),
    ] {
        let before = scrape_errors(&guard, reason).await;
        stats.set(answer);
        two_more_scrapes(&guard).await;
        assert!(
            scrape_errors(&guard, reason).await > before,
            "{reason} not counted"
        );
        let s = state(&guard).await;
        assert_eq!(s["scrape"]["last_error"]["reason"], reason, "{s}");
        assert_eq!(outcomes(&guard).await, (0.0, 0.0));
    }
    // Meanwhile the canary's counters moved; the first good page counts them.
    stats.set(Answer::Page(istio_page(1010, 55, 10, 0)));
    two_more_scrapes(&guard).await;
    assert_eq!(outcomes(&guard).await, (10.0, 5.0));
    let (status, _) = get(&http1(), &format!("http://{}/healthz", guard.admin_addr)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_connect_error_and_no_data() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("http://{closed}/stats/prometheus");
    let guard = start_envoy_guard(fast(&url), fast_checks).await;
    two_more_scrapes(&guard).await;
    assert!(scrape_errors(&guard, "connect").await >= 2.0);
    let s = wait_state(&guard, |s| s["verdict"] == "inconclusive").await;
    assert_eq!(s["scrape"]["counting"], false);
    assert_eq!(s["scrape"]["last_error"]["reason"], "connect");
    assert_eq!(window(&s), (0, 0));
    assert_eq!(outcomes(&guard).await, (0.0, 0.0));
}

#[tokio::test]
async fn an_apps_own_metrics_in_milliseconds() {
    let page = |ok: u64, err: u64| {
        format!(
            "# HELP api_requests_total Requests.\n\
             # TYPE api_requests_total counter\n\
             api_requests_total{{handler=\"/api\",status=\"200\"}} {ok}\n\
             api_requests_total{{handler=\"/api\",status=\"500\"}} {err}\n\
             api_requests_total{{handler=\"/health\",status=\"500\"}} {err}\n\
             # TYPE api_latency_ms histogram\n\
             api_latency_ms_bucket{{handler=\"/api\",le=\"5\"}} 0\n\
             api_latency_ms_bucket{{handler=\"/api\",le=\"50\"}} {ok}\n\
             api_latency_ms_bucket{{handler=\"/api\",le=\"+Inf\"}} {}\n\
             api_latency_ms_sum{{handler=\"/api\"}} 1\n\
             api_latency_ms_count{{handler=\"/api\"}} {}\n",
            ok + err,
            ok + err
        )
    };
    let stats = FakeStats::start(Answer::Page(page(100, 1))).await;
    let url = stats.url();
    let scrape = ScrapeConfig {
        url: url.parse().unwrap(),
        schema: Schema {
            requests: "api_requests_total".into(),
            duration_buckets: Some("api_latency_ms_bucket".into()),
            unit: LatencyUnit::Milliseconds,
            status_label: "status".into(),
            grpc_status_label: None,
            grpc_server_errors: Vec::new(),
            flags_label: None,
            filters: vec![("handler".into(), "/api".into())],
        },
        ..scrape(&url, 100)
    };
    let guard = start_envoy_guard(scrape, |c| c.interval = ms(100)).await;
    two_more_scrapes(&guard).await;
    stats.set(Answer::Page(page(140, 11)));
    two_more_scrapes(&guard).await;
    assert_eq!(outcomes(&guard).await, (40.0, 10.0));
    let s = wait_state(&guard, |s| window(s) == (50, 10)).await;
    assert_eq!(s["scrape"]["url"], url.as_str());
    // 40 under 50 ms, 10 beyond the largest bound: p50 just under 50 ms.
    let p50 = s["window"]["p50_ms"].as_f64().unwrap();
    assert!((47.0..=50.0).contains(&p50), "p50 {p50}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_flags_a_client_that_left_as_abandoned_and_upstream_failures_as_errors() {
    let stats = FakeStats::start(Answer::Page(istio_page(1000, 50, 10, 0))).await;
    let guard = start_envoy_guard(fast(&stats.url()), fast_checks).await;
    two_more_scrapes(&guard).await;
    // 4 requests the client left (code 0, DC), 2 upstream timeouts (504, UT),
    // 1 upstream connection cut (503, UC).
    stats.set(Answer::Page(istio_page_with_flags(
        1000,
        50,
        10,
        0,
        [4, 2, 1],
    )));
    two_more_scrapes(&guard).await;
    assert_eq!(outcomes(&guard).await, (0.0, 3.0));
    let page = metrics(&guard).await;
    assert_eq!(
        series(&page, "canary_guard_requests_total{outcome=\"abandoned\"}"),
        Some(4.0)
    );
    let s = wait_state(&guard, |s| window(s) == (7, 3)).await;
    assert_eq!(s["window"]["abandoned"], 4);
}
