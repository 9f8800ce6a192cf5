//! Shared test fixtures: a real upstream app on 127.0.0.1, a guard started
//! in-process on ephemeral ports, and a real HTTP client.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use canary_guard::config::GuardConfig;
use canary_guard::runtime::guard::{self, Guard};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub mod cluster;
pub mod differential;
pub mod envoy;
pub mod pod;
pub mod process;
pub mod prometheus;
pub mod realk8s;

pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

fn full(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// The test app's routes:
/// - `/echo…`: 200, body = request body, request line and headers in `x-seen-*`
/// - `/status/N`: answers N
/// - `/delay/MS`: waits, then 200
/// - `/bytes/N`: streams N bytes in 64 KiB chunks
/// - `/grpc/N`: gRPC response with `grpc-status: N` in the trailers
/// - `/grpc-only/N`: trailers-only gRPC response (`grpc-status` in the headers)
/// - `/upgrade`: 101, then echoes bytes on the upgraded connection
async fn app(mut req: Request<Incoming>) -> Result<Response<BoxBody>, Infallible> {
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let head = parts.next().unwrap_or_default().to_string();
    let arg = parts.next().unwrap_or_default().to_string();
    let num = arg.parse::<u64>().unwrap_or(0);
    let resp = match head.as_str() {
        "echo" => {
            let mut seen = String::new();
            for (k, v) in req.headers() {
                seen.push_str(&format!("{k}={};", v.to_str().unwrap_or("?")));
            }
            let version = format!("{:?}", req.version());
            let b = Response::builder()
                .header("x-seen-method", req.method().as_str())
                .header("x-seen-uri", req.uri().to_string())
                .header("x-seen-version", version)
                .header("x-seen-headers", seen);
            b.body(req.into_body().boxed()).unwrap()
        }
        "status" => Response::builder()
            .status(StatusCode::from_u16(num as u16).unwrap())
            .body(full("status\n"))
            .unwrap(),
        "delay" => {
            arrivals_tx().send_modify(|n| *n += 1);
            tokio::time::sleep(Duration::from_millis(num)).await;
            Response::new(full("late\n"))
        }
        "bytes" => {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let n = num as usize;
            let stream = futures_util::stream::iter((0..n.div_ceil(chunk.len())).map(move |i| {
                let len = (n - i * chunk.len()).min(chunk.len());
                Ok::<_, hyper::Error>(Frame::data(chunk.slice(..len)))
            }));
            Response::new(StreamBody::new(stream).boxed())
        }
        "grpc" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", num.to_string().parse().unwrap());
            let frames = vec![
                Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
                Ok(Frame::trailers(trailers)),
            ];
            Response::builder()
                .header("content-type", "application/grpc")
                .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
                .unwrap()
        }
        "grpc-only" => Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", num.to_string())
            .body(full(""))
            .unwrap(),
        "upgrade" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on.await {
                    let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "echo")
                .body(full(""))
                .unwrap()
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(full("no route\n"))
            .unwrap(),
    };
    Ok(resp)
}

fn arrivals_tx() -> &'static tokio::sync::watch::Sender<u64> {
    static TX: std::sync::OnceLock<tokio::sync::watch::Sender<u64>> = std::sync::OnceLock::new();
    TX.get_or_init(|| tokio::sync::watch::channel(0).0)
}

/// Counts requests that reached the app's `/delay/…` route (in this test binary).
pub fn delay_arrivals() -> tokio::sync::watch::Receiver<u64> {
    arrivals_tx().subscribe()
}

/// Starts the test app on an ephemeral port (HTTP/1.1 and HTTP/2 prior knowledge).
pub async fn start_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let builder = builder.clone();
            tokio::spawn(async move {
                let _ = builder
                    .serve_connection_with_upgrades(
                        TokioIo::new(stream),
                        hyper::service::service_fn(app),
                    )
                    .await;
            });
        }
    });
    addr
}

/// Ephemeral loopback ports for every listener.
pub const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// `run`'s defaults for a standalone guard in front of `app`, on ephemeral ports.
pub fn guard_config(app: SocketAddr) -> GuardConfig {
    let mut config = GuardConfig::proxy(format!("http://{app}").parse().unwrap());
    config.admin_listen = LOOPBACK;
    config.proxy_settings().unwrap().listen = LOOPBACK;
    config
}

/// Starts a standalone guard in front of `app`, with `configure`'s changes to the defaults.
pub async fn start_guard(app: SocketAddr, configure: impl FnOnce(&mut GuardConfig)) -> Guard {
    let mut config = guard_config(app);
    configure(&mut config);
    guard::start(&config).await.unwrap()
}

/// Milliseconds.
pub const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A pooled HTTP/1.1 client.
pub fn http1() -> Client<HttpConnector, BoxBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// An HTTP/2 prior-knowledge client.
pub fn http2() -> Client<HttpConnector, BoxBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// GET `url` and return status and body.
pub async fn get(client: &Client<HttpConnector, BoxBody>, url: &str) -> (StatusCode, Bytes) {
    let resp = client
        .request(Request::get(url).body(full(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// The body of an empty request.
pub fn empty() -> BoxBody {
    full(Bytes::new())
}

/// A request body from bytes.
pub fn body(b: impl Into<Bytes>) -> BoxBody {
    full(b)
}

/// `canary_guard_requests_total` by outcome: (success, error, abandoned).
pub async fn outcomes(guard: &Guard) -> (f64, f64, f64) {
    let page = metrics(guard).await;
    let n = |o: &str| {
        series(
            &page,
            &format!("canary_guard_requests_total{{outcome=\"{o}\"}}"),
        )
        .unwrap()
    };
    (n("success"), n("error"), n("abandoned"))
}

/// `/v1/state` of a guard as JSON.
pub async fn state(guard: &Guard) -> serde_json::Value {
    let (_, b) = get(&http1(), &format!("http://{}/v1/state", guard.admin_addr)).await;
    serde_json::from_slice(&b).unwrap()
}

/// `/metrics` of a guard.
pub async fn metrics(guard: &Guard) -> String {
    let (_, b) = get(&http1(), &format!("http://{}/metrics", guard.admin_addr)).await;
    String::from_utf8(b.to_vec()).unwrap()
}

/// The value of an exact series line in a metrics page, e.g. `m{l="v"}`.
pub fn series(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until `/metrics` satisfies `pred`, looking again after each of the guard's checks.
pub async fn wait_metrics(guard: &Guard, pred: impl Fn(&str) -> bool) -> String {
    let mut checks = guard.checks.clone();
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let page = metrics(guard).await;
            if pred(&page) {
                return page;
            }
            checks.changed().await.unwrap();
        }
    })
    .await;
    match waited {
        Ok(page) => page,
        Err(_) => panic!("metrics never matched:\n{}", metrics(guard).await),
    }
}

/// Waits until `/v1/state` satisfies `pred`, looking again after each of the guard's checks.
pub async fn wait_state(
    guard: &Guard,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut checks = guard.checks.clone();
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let s = state(guard).await;
            if pred(&s) {
                return s;
            }
            checks.changed().await.unwrap();
        }
    })
    .await;
    match waited {
        Ok(s) => s,
        Err(_) => panic!("state never matched: {}", state(guard).await),
    }
}

/// Checks a metrics page with `promtool check metrics`.
pub fn promtool_check(page: &str) {
    let mut child = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!(
            "promtool is required ({e}); install Debian's `prometheus` package (scripts/test does)"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejected /metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
