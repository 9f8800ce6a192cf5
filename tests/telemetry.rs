//! What the guard exports: `/metrics` (checked by promtool) and `/v1/state`.

mod support;

use std::process::Command;
use std::time::Duration;

use support::process::GuardProcess;
use support::*;

async fn admin_get(g: &GuardProcess, path: &str) -> String {
    let (_, b) = get(&http1(), &format!("http://{}{path}", g.admin)).await;
    String::from_utf8(b.to_vec()).unwrap()
}

/// Polls the child's `/v1/state` until `pred` holds (another process: nothing to await).
async fn wait_child_state(
    g: &GuardProcess,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..400 {
        let s: serde_json::Value = serde_json::from_str(&admin_get(g, "/v1/state").await).unwrap();
        if pred(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("state never matched: {}", admin_get(g, "/v1/state").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_errors_in_two_hundred_fail_the_canary() {
    let app = start_app().await;
    let g = GuardProcess::start(app, &[]).await;
    let c = http1();
    for i in 0..200 {
        let code = if i % 5 == 0 { 500 } else { 200 };
        let (status, _) = get(&c, &format!("http://{}/status/{code}", g.proxy)).await;
        assert_eq!(status.as_u16(), code);
    }
    let page = admin_get(&g, "/metrics").await;
    assert_eq!(
        series(&page, "canary_guard_requests_total{outcome=\"error\"}"),
        Some(40.0)
    );
    assert_eq!(
        series(&page, "canary_guard_requests_total{outcome=\"success\"}"),
        Some(160.0)
    );
    // The sequential test may fail the canary before all 200 are in: wait for them too.
    let s = wait_child_state(&g, |s| {
        s["verdict"] == "failing" && s["window"]["requests"] == 200
    })
    .await;
    assert_eq!(s["window"]["requests"], 200);
    assert_eq!(s["window"]["errors"], 40);
    assert_eq!(s["window"]["error_ratio"], 0.2);
    // The default --failure-threshold: one failing check decides.
    assert!(s["consecutive_failures"].as_u64().unwrap() >= 1);
    // Why, in numbers: the sequential test failed on errors, not on latency,
    // over the seconds that hold the requests.
    assert!(s["breach"]["seconds"].as_u64().unwrap() <= s["window"]["seconds"].as_u64().unwrap());
    assert!(
        s["breach"]["evidence"].as_f64().unwrap() > 12.0,
        "{}",
        s["breach"]
    );
    assert_eq!(s["breach"]["errors"], 40);
    assert_eq!(s["breach"]["error_ratio"], 0.2);
    assert!(s["breach"].get("latency_ms").is_none(), "{}", s["breach"]);
    assert_eq!(s["window"]["recent"]["seconds"], 5);
    assert_eq!(s["leader"], false);
    assert_eq!(s["members"], serde_json::json!([]));
    let page = admin_get(&g, "/metrics").await;
    assert_eq!(
        series(&page, "canary_guard_verdict{state=\"failing\"}"),
        Some(1.0)
    );
    assert_eq!(series(&page, "canary_guard_window_error_ratio"), Some(0.2));
    promtool_check(&page);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_healthy() {
    let app = start_app().await;
    let g = GuardProcess::start(app, &["--interval", "200ms"]).await;
    let c = http1();
    for _ in 0..50 {
        get(&c, &format!("http://{}/status/200", g.proxy)).await;
    }
    let s = wait_child_state(&g, |s| {
        s["window"]["requests"] == 50 && s["verdict"] != "inconclusive"
    })
    .await;
    assert_eq!(s["verdict"], "healthy");
    assert_eq!(s["consecutive_failures"], 0);
    assert_eq!(s["breach"], serde_json::Value::Null);
    let page = admin_get(&g, "/metrics").await;
    assert_eq!(
        series(&page, "canary_guard_verdict{state=\"healthy\"}"),
        Some(1.0)
    );
    promtool_check(&page);
}

#[test]
fn bad_flags_exit_non_zero_naming_the_flag() {
    for (args, needle) in [
        (&["--max-error-ratio", "7"][..], "--max-error-ratio"),
        (&["--window", "1s"], "--window"),
        (&["--bogus"], "--bogus"),
        (&["--interval", "1m", "--window", "30s"], "--interval"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_canary-guard"))
            .args(["run", "--standalone"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn a_port_in_use_exits_non_zero_naming_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for flag in ["--listen", "--admin-listen"] {
        let free = format!("127.0.0.1:{}", support::process::free_port());
        let other = if flag == "--listen" {
            "--admin-listen"
        } else {
            "--listen"
        };
        let out = Command::new(env!("CARGO_BIN_EXE_canary-guard"))
            .args(["run", "--standalone", flag, &addr, other, &free])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{flag} {addr}: cannot listen")),
            "{err}"
        );
    }
}
