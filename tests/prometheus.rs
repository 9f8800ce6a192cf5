//! A real Prometheus (Debian's `prometheus` package) scrapes a running guard, and its
//! HTTP API returns exactly the requests the test sent.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::process::free_port;
use support::*;

/// A Prometheus server on the loopback with its storage in a temporary directory;
/// killed and cleaned up on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "canary-guard-prometheus-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: canary-guard\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `prometheus` ({e}): install Debian's `prometheus` package \
                     (`apt-get install prometheus`; scripts/test does it)"
                )
            });
        Prometheus { child, dir, addr }
    }

    async fn get(&self, path_and_query: &str) -> Option<serde_json::Value> {
        let url = format!("http://{}{path_and_query}", self.addr);
        let resp = http1()
            .request(http::Request::get(url).body(empty()).unwrap())
            .await
            .ok()?;
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .ok()?
            .to_bytes();
        serde_json::from_slice(&body).ok()
    }

    /// `outcome` -> value of `canary_guard_requests_total` as the server stores it.
    async fn requests_total(&self) -> Vec<(String, String, String)> {
        let Some(v) = self
            .get("/api/v1/query?query=canary_guard_requests_total")
            .await
        else {
            return Vec::new();
        };
        let mut series: Vec<_> = v["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                (
                    r["metric"]["outcome"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    r["metric"]["instance"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    r["value"][1].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        series.sort();
        series
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_exactly_the_requests_sent() {
    let app = start_app().await;
    let guard = start_guard(app, &[]).await;
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
    let prom = Prometheus::start(guard.admin_addr);
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
