//! A real gRPC client and server (grpcio, from PyPI) through the guard: every
//! call is counted once, client deadlines past the latency limit as slow,
//! quick cancels as abandoned, none of them as a success.
//!
//! Needs the Python that scripts/test prepares (`CANARY_GUARD_TEST_PYTHON`);
//! without it each test says it was skipped.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use canary_guard::runtime::guard::Guard;
use support::*;

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/peer.py");

fn python() -> Option<String> {
    match std::env::var("CANARY_GUARD_TEST_PYTHON") {
        Ok(p) => Some(p),
        Err(_) => {
            eprintln!("skipped: needs grpcio; run scripts/test (it sets CANARY_GUARD_TEST_PYTHON)");
            None
        }
    }
}

/// The grpcio server, stopped when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(python: &str) -> Self {
        let mut child = Command::new(python)
            .args([PEER, "serve"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the grpcio server did not start (printed {line:?})"));
        Self {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `n` concurrent calls of `case` through `guard` and returns what the client saw.
async fn call(python: &str, guard: &Guard, case: &str, n: u32) -> serde_json::Value {
    let target = guard.proxy_addr.unwrap().to_string();
    let (python, case, n) = (python.to_string(), case.to_string(), n.to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .args([PEER, "call", &target, &case, &n])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `case` against a fresh guard (500 ms limit) and returns the client's
/// tally, the guard's outcomes once all `n` are recorded, and its window once
/// a check shows what `window` expects.
async fn run(
    python: &str,
    case: &str,
    n: u32,
    window: impl Fn(&serde_json::Value) -> bool,
) -> (serde_json::Value, (f64, f64, f64), serde_json::Value) {
    let server = Server::start(python);
    let guard = start_guard(server.addr, |c| {
        c.thresholds.max_latency = ms(500);
        c.interval = ms(100);
    })
    .await;
    let seen = call(python, &guard, case, n).await;
    let total = f64::from(n);
    wait_metrics(&guard, |page| {
        let n = |o: &str| {
            series(
                page,
                &format!("canary_guard_requests_total{{outcome=\"{o}\"}}"),
            )
            .unwrap_or(0.0)
        };
        n("success") + n("error") + n("abandoned") >= total
    })
    .await;
    let s = wait_state(&guard, |s| window(&s["window"])).await;
    let counted = outcomes(&guard).await;
    eprintln!(
        "{case}: client {seen}, guard (success, error, abandoned) {counted:?}, window {}",
        s["window"]
    );
    (seen, counted, s["window"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_pass_through_untouched() {
    let Some(py) = python() else { return };
    let (seen, counted, window) = run(&py, "echo", 20, |w| w["requests"] == 20).await;
    assert_eq!(seen, serde_json::json!({"ok": 20}));
    assert_eq!(counted, (20.0, 0.0, 0.0));
    assert_eq!(
        (window["requests"].as_u64(), window["abandoned"].as_u64()),
        (Some(20), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_before_the_limit_is_abandoned_and_not_judged() {
    let Some(py) = python() else { return };
    let (seen, counted, window) =
        run(&py, "unary_deadline_300ms", 20, |w| w["abandoned"] == 20).await;
    assert_eq!(seen, serde_json::json!({"DEADLINE_EXCEEDED": 20}));
    // Whether the client's RST_STREAM or the app's own DEADLINE_EXCEEDED came first.
    assert_eq!(counted, (0.0, 0.0, 20.0));
    assert_eq!(window["requests"], 0);
    assert_eq!(window["abandoned"], 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_past_the_limit_is_slow_never_a_success() {
    let Some(py) = python() else { return };
    let (seen, counted, window) =
        run(&py, "unary_deadline_800ms", 20, |w| w["abandoned"] == 20).await;
    assert_eq!(seen, serde_json::json!({"DEADLINE_EXCEEDED": 20}));
    assert_eq!(counted, (0.0, 0.0, 20.0));
    assert_eq!(window["requests"], 20);
    assert_eq!(window["abandoned"], 20);
    // Every one a latency sample over the limit (at least the ~800 ms waited).
    assert!(window["p50_ms"].as_f64().unwrap() >= 700.0, "{window}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_hangs_until_the_deadline_is_slow_never_a_success() {
    let Some(py) = python() else { return };
    let (seen, counted, window) =
        run(&py, "stream_deadline_800ms", 20, |w| w["abandoned"] == 20).await;
    assert_eq!(seen, serde_json::json!({"DEADLINE_EXCEEDED": 20}));
    assert_eq!(counted, (0.0, 0.0, 20.0));
    assert_eq!(window["requests"], 20);
    assert_eq!(window["abandoned"], 20);
    assert!(window["p50_ms"].as_f64().unwrap() >= 600.0, "{window}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_client_cancels_is_abandoned_not_slow() {
    let Some(py) = python() else { return };
    let (seen, counted, window) =
        run(&py, "stream_cancel_after_5", 20, |w| w["abandoned"] == 20).await;
    assert_eq!(seen, serde_json::json!({"cancelled": 20}));
    assert_eq!(counted, (0.0, 0.0, 20.0));
    // Judged on their quick headers: abandoned, and not slow.
    assert_eq!(window["abandoned"], 20);
    assert!(window["p99_ms"].as_f64().unwrap() < 500.0, "{window}");
}
