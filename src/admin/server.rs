//! The admin HTTP endpoints. Read-only by design: nothing here changes state.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;

use super::metrics::Metrics;
use super::state::SharedState;

type AdminResult = Result<Response<Full<Bytes>>, Infallible>;

/// Readiness as `/readyz` reports it.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    /// Marks the guard ready (listeners bound) or not (draining).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether the guard is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What the admin endpoints read from.
#[derive(Clone)]
pub struct Admin {
    /// The exported metrics.
    pub metrics: Arc<Metrics>,
    /// The state behind `/v1/state`.
    pub state: SharedState,
    /// Readiness behind `/readyz`.
    pub ready: Arc<Readiness>,
}

impl Admin {
    /// Answers one admin request.
    pub fn handle<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "the admin port is read-only: use GET\n",
            );
        }
        match req.uri().path() {
            "/metrics" => Response::builder()
                .header(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )
                .body(Full::new(Bytes::from(self.metrics.render())))
                .expect("static headers are valid"),
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.ready.get() => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            "/v1/state" => {
                let body = serde_json::to_vec_pretty(&*self.state.read())
                    .expect("state serializes to JSON");
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .expect("static headers are valid")
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz, /readyz or /v1/state\n",
            ),
        }
    }

    /// A hyper service over [`Admin::handle`].
    pub fn service(self) -> impl hyper::service::Service<
        Request<hyper::body::Incoming>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = std::future::Ready<AdminResult>,
    > + Clone {
        hyper::service::service_fn(move |req| std::future::ready(Ok(self.handle(&req))))
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static headers are valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::state::GuardState;
    use http_body_util::BodyExt;

    fn admin() -> Admin {
        Admin {
            metrics: Arc::new(Metrics::new()),
            state: Arc::new(parking_lot::RwLock::new(GuardState::new("proxy"))),
            ready: Arc::new(Readiness::default()),
        }
    }

    async fn body(r: Response<Full<Bytes>>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    #[tokio::test]
    async fn endpoints() {
        let a = admin();
        assert_eq!(a.handle(&get("/healthz")).status(), StatusCode::OK);
        assert_eq!(
            a.handle(&get("/readyz")).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        a.ready.set(true);
        assert_eq!(a.handle(&get("/readyz")).status(), StatusCode::OK);
        let m = body(a.handle(&get("/metrics"))).await;
        assert!(m.contains("canary_guard_requests_total"));
        let s: serde_json::Value =
            serde_json::from_str(&body(a.handle(&get("/v1/state"))).await).unwrap();
        assert_eq!(s["leader"], false);
        assert_eq!(a.handle(&get("/nope")).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn nothing_changes_state() {
        let a = admin();
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let req = Request::builder()
                .method(m)
                .uri("/v1/state")
                .body(())
                .unwrap();
            assert_eq!(a.handle(&req).status(), StatusCode::METHOD_NOT_ALLOWED);
        }
    }
}
