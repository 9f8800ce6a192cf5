//! The demo's apps: HTTP servers on loopback that answer every request with their name. A
//! canary app turns bad on cue and then fails a share of its requests.
//!
//! Design rule: failures are deterministic, not drawn at random, so a run's error count
//! follows from its request count and the demo tells the same story every time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// What a failing request of the canary app does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answers 500.
    Error,
    /// Answers 200, this late.
    Delay(Duration),
}

/// The canary app's fault: off until [`Canary::start_failing`], then hitting `ratio` of the
/// requests that follow.
#[derive(Debug)]
pub struct Canary {
    faulty: AtomicBool,
    served: AtomicU64,
    fault: Fault,
    ratio: f64,
}

impl Canary {
    /// A healthy canary that will fail `ratio` (0..=1) of its requests with `fault`.
    pub fn new(fault: Fault, ratio: f64) -> Canary {
        Canary {
            faulty: AtomicBool::new(false),
            served: AtomicU64::new(0),
            fault,
            ratio,
        }
    }

    /// Turns the fault on.
    pub fn start_failing(&self) {
        self.faulty.store(true, Ordering::Relaxed);
    }

    /// Whether the next request fails: request n (counted from the fault's start) fails
    /// when floor((n+1)·ratio) > floor(n·ratio).
    fn hit(&self) -> bool {
        if !self.faulty.load(Ordering::Relaxed) {
            return false;
        }
        let n = self.served.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.ratio).floor() > (n * self.ratio).floor()
    }
}

/// Serves app `name` on a free loopback port until the runtime stops; with `canary`, its
/// fault decides which requests fail. Answers the bound address.
pub async fn serve(name: &'static str, canary: Option<Arc<Canary>>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        while let Ok((stream, _)) = listener.accept().await {
            let canary = canary.clone();
            let builder = builder.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let canary = canary.clone();
                        async move {
                            let mut status = StatusCode::OK;
                            if let Some(c) = canary.filter(|c| c.hit()) {
                                match c.fault {
                                    Fault::Error => status = StatusCode::INTERNAL_SERVER_ERROR,
                                    Fault::Delay(d) => tokio::time::sleep(d).await,
                                }
                            }
                            let mut resp =
                                Response::new(Full::new(Bytes::from(format!("{name}\n"))));
                            *resp.status_mut() = status;
                            Ok::<_, Infallible>(resp)
                        }
                    });
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_app_fails_the_exact_ratio() {
        let app = Canary::new(Fault::Error, 0.2);
        assert!(!(0..10).any(|_| app.hit()));
        app.start_failing();
        assert_eq!((0..100).filter(|_| app.hit()).count(), 20);
    }
}
