//! A real Prometheus (Debian's `prometheus` package) on the loopback, scraping a guard.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::process::free_port;
use super::{empty, http1};

/// A Prometheus server on the loopback with its storage in a temporary directory;
/// killed and cleaned up on drop.
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Prometheus {
    /// Scrapes `target` every second, adding `labels` to its series (as a PodMonitor's
    /// relabelings would).
    pub fn start(target: SocketAddr, labels: &[(&str, &str)]) -> Self {
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
                 scrape_configs:\n  - job_name: canary-guard\n    static_configs:\n      - targets: ['{target}']\n        labels: {{{}}}\n",
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}: '{v}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
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

    pub async fn get(&self, path_and_query: &str) -> Option<serde_json::Value> {
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

    /// The result of an instant query (empty when there is none yet or the query failed).
    pub async fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let mut q = String::new();
        for b in expr.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                q.push(b as char);
            } else {
                q.push_str(&format!("%{b:02X}"));
            }
        }
        self.get(&format!("/api/v1/query?query={q}"))
            .await
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// `outcome` -> value of `canary_guard_requests_total` as the server stores it.
    pub async fn requests_total(&self) -> Vec<(String, String, String)> {
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
