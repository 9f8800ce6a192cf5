//! A fake istio-proxy stats endpoint whose page the test changes as it goes,
//! and a standalone guard in envoy mode pointed at it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use canary_guard::config::{GuardConfig, Observe};
use canary_guard::domain::counters::Schema;
use canary_guard::observe::scrape::ScrapeConfig;
use canary_guard::runtime::guard::{self, Guard};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::TcpListener;

use super::BoxBody;

/// istio-proxy output with `{{ok}}`, `{{err}}`, `{{grpc_err}}` (and `_sum`)
/// placeholders for the canary's inbound 200s, 503s and gRPC UNAVAILABLEs, and
/// `{{dc}}`, `{{ut}}`, `{{uc}}` for requests Envoy flagged: the client left
/// (code 0, `DC`), the upstream timed out (504, `UT`) or cut the connection (503, `UC`).
const FIXTURE: &str = include_str!("../fixtures/istio-proxy-stats.txt");

/// The fixture with the canary's counters filled in: `ok` 200s (all under
/// 25 ms), `err` 503s (all in 100–250 ms) and `grpc_err` gRPC UNAVAILABLEs.
/// `extra` is added to the pod's outbound series (`reporter="source"`), which
/// the guard must not count.
pub fn istio_page(ok: u64, err: u64, grpc_err: u64, extra: u64) -> String {
    istio_page_with_flags(ok, err, grpc_err, extra, [0, 0, 0])
}

/// [`istio_page`] with `[dc, ut, uc]` requests flagged by Envoy.
pub fn istio_page_with_flags(
    ok: u64,
    err: u64,
    grpc_err: u64,
    extra: u64,
    [dc, ut, uc]: [u64; 3],
) -> String {
    let page = FIXTURE
        .replace("{{dc}}", &dc.to_string())
        .replace("{{ut}}", &ut.to_string())
        .replace("{{uc}}", &uc.to_string())
        .replace("{{ok_sum}}", &(ok * 20).to_string())
        .replace("{{err_sum}}", &(err * 200).to_string())
        .replace("{{ok}}", &ok.to_string())
        .replace("{{err}}", &err.to_string())
        .replace("{{grpc_err}}", &grpc_err.to_string());
    page.lines()
        .map(|l| {
            let moving =
                l.starts_with("istio_requests_total{") && l.contains("reporter=\"source\"");
            match l.rsplit_once(' ') {
                Some((head, v)) if moving => {
                    format!("{head} {}\n", v.parse::<u64>().unwrap() + extra)
                }
                _ => format!("{l}\n"),
            }
        })
        .collect()
}

/// What the fake endpoint answers.
#[derive(Clone)]
pub enum Answer {
    /// 200 with this page (and a Content-Length).
    Page(String),
    /// 200 with this page streamed in chunks, without a Content-Length.
    Chunked(String),
    /// This status and a short body.
    Status(StatusCode),
    /// Accept the request and never answer.
    Hang,
}

/// A stats endpoint on 127.0.0.1 whose answer can be changed at any time.
pub struct FakeStats {
    /// Where it listens.
    pub addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
}

impl FakeStats {
    /// Starts the endpoint answering `answer`.
    pub async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(answer));
        let current = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let current = current.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        let answer = current.lock().clone();
                        respond(answer)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            answer: shared,
        }
    }

    /// Changes what the next requests get.
    pub fn set(&self, answer: Answer) {
        *self.answer.lock() = answer;
    }

    /// The endpoint's URL.
    pub fn url(&self) -> String {
        format!("http://{}/stats/prometheus", self.addr)
    }
}

async fn respond(answer: Answer) -> Result<Response<BoxBody>, Infallible> {
    let full = |b: Bytes| Full::new(b).map_err(|never| match never {}).boxed();
    Ok(match answer {
        Answer::Page(p) => Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(full(Bytes::from(p)))
            .unwrap(),
        Answer::Chunked(p) => {
            let bytes = Bytes::from(p);
            let chunks: Vec<_> = (0..bytes.len())
                .step_by(256 * 1024)
                .map(|i| {
                    Ok::<_, hyper::Error>(Frame::data(
                        bytes.slice(i..(i + 256 * 1024).min(bytes.len())),
                    ))
                })
                .collect();
            Response::new(StreamBody::new(futures_util::stream::iter(chunks)).boxed())
        }
        Answer::Status(s) => Response::builder()
            .status(s)
            .body(full(Bytes::from_static(b"upstream connect error\n")))
            .unwrap(),
        Answer::Hang => std::future::pending().await,
    })
}

/// Starts a standalone envoy-mode guard reading `scrape`, with `configure`'s
/// changes to `run`'s defaults.
pub async fn start_envoy_guard(
    scrape: ScrapeConfig,
    configure: impl FnOnce(&mut GuardConfig),
) -> Guard {
    let mut config = GuardConfig::proxy("http://127.0.0.1:1".parse().unwrap());
    config.admin_listen = super::LOOPBACK;
    config.observe = Observe::Envoy(scrape);
    configure(&mut config);
    guard::start(&config).await.unwrap()
}

/// `run`'s envoy-mode defaults for Envoy's page at `url`, counting the series of `labels`.
pub fn istio_scrape(url: &str, labels: &[(&str, &str)]) -> ScrapeConfig {
    let labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ScrapeConfig::new(
        url.parse().unwrap(),
        Schema::istio(&labels),
        std::time::Duration::from_secs(1),
        canary_guard::config::DEFAULT_WINDOW,
    )
}

/// Waits until the guard has finished two more scrapes: the second began after
/// this call, so it saw whatever the endpoint serves now.
pub async fn two_more_scrapes(guard: &Guard) {
    let mut scrapes = guard.scrapes.clone();
    let target = *scrapes.borrow_and_update() + 2;
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        scrapes.wait_for(|n| *n >= target),
    )
    .await
    .expect("the guard stopped scraping")
    .unwrap();
}
