//! The reverse proxy: forwards every request to the app unchanged, times it to
//! the response headers and classifies the outcome.
//!
//! Design rule: every request that reaches the app is recorded exactly once,
//! by its [`Pending`], including those whose clients go away (this future or
//! the response body dropped) — see `pending` for what those count as.

use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use super::body::{AtEnd, ProxyBody, Source};
use super::classify::{self, AtHeaders};
use super::headers::{is_upgrade, strip_hop_by_hop};
use super::pending::Pending;
use super::upload::{BrokeOff, Upload};
use super::upstream::{Failure, Upstreams};
use super::Recorder;
use crate::domain::window::Outcome;
use crate::server::Takeover;

/// How to reach the app.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyConfig {
    /// The app's base URL (`http://host:port`).
    pub upstream: Uri,
    /// Time allowed to open a TCP connection to the app.
    pub connect_timeout: Duration,
    /// Time allowed for the app's response headers; `None` waits forever.
    pub upstream_timeout: Option<Duration>,
    /// Idle pooled connections are closed after this; keep it below the
    /// app's own keep-alive timeout so we never reuse a connection it is closing.
    pub pool_idle_timeout: Duration,
}

/// The proxy service: cheap to clone, one per connection.
#[derive(Clone)]
pub struct Proxy {
    scheme: Scheme,
    authority: Authority,
    /// HTTP/1.1 requests without a body, on connections they drive themselves.
    links: Upstreams,
    /// Upgrades, uploads and HTTP/1.0, through hyper-util's pool.
    http1: Client<HttpConnector, Upload>,
    http2: Client<HttpConnector, Upload>,
    upstream_timeout: Option<Duration>,
    recorder: Recorder,
}

impl Proxy {
    /// Builds the proxy and its clients (HTTP/1.1 and HTTP/2 prior knowledge).
    pub fn new(config: &ProxyConfig, recorder: Recorder) -> crate::Result<Self> {
        let scheme = config.upstream.scheme().cloned().unwrap_or(Scheme::HTTP);
        if scheme != Scheme::HTTP {
            return Err(crate::Error::Config(format!(
                "--upstream {}: only http:// is supported (the app is on the pod's loopback)",
                config.upstream
            )));
        }
        let authority = config.upstream.authority().cloned().ok_or_else(|| {
            crate::Error::Config(format!(
                "--upstream {}: expected http://HOST:PORT",
                config.upstream
            ))
        })?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .retry_canceled_requests(true);
        let http1 = builder.build(connector.clone());
        let http2 = builder.http2_only(true).build(connector);
        let links = Upstreams::new(
            authority.clone(),
            config.connect_timeout,
            config.pool_idle_timeout,
        );
        Ok(Self {
            scheme,
            authority,
            links,
            http1,
            http2,
            upstream_timeout: config.upstream_timeout,
            recorder,
        })
    }

    /// Forwards one request.
    pub async fn handle(&self, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let start = Instant::now();
        let upgrade = req.version() == Version::HTTP_11 && is_upgrade(req.headers());
        // The accept loop joins the client's side to the app's after a 101.
        let takeover = upgrade
            .then(|| req.extensions_mut().remove::<Takeover>())
            .flatten();
        let is_h2 = req.version() == Version::HTTP_2;

        if let Err(resp) = self.rewrite(&mut req, upgrade) {
            return resp;
        }
        // From here the request is on its way to the app: recorded once, however it ends.
        let mut pending = Pending::new(
            self.recorder.clone(),
            start,
            is_h2
                .then(|| classify::grpc_timeout(req.headers()))
                .flatten(),
        );
        let (parts, body) = req.into_parts();
        // Upgrades keep hyper-util's pool, which hands over the upgraded
        // connection; so do uploads, which hyper's client streams.
        let linked = parts.version == Version::HTTP_11
            && !upgrade
            && parts.method != Method::CONNECT
            && body.is_end_stream();
        let (result, broke) = if linked {
            let sent = self
                .links
                .send(Request::from_parts(parts, ()), self.upstream_timeout)
                .await;
            let linked = sent.map(|(resp, lease)| resp.map(|()| Source::Link(lease)));
            (linked, BrokeOff::default())
        } else {
            let (upload, broke) = Upload::new(body);
            let sent = self.send(Request::from_parts(parts, upload), is_h2).await;
            (sent.map(|resp| resp.map(Source::Hyper)), broke)
        };
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => return self.upstream_error(e, pending),
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(takeover) = takeover {
                takeover.join(hyper::upgrade::on(&mut resp));
            }
            pending.headers();
            pending.finish(Outcome::Success);
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers, true);
            return Response::from_parts(parts, ProxyBody::upstream(body));
        }

        let (mut parts, body) = resp.into_parts();
        let at_headers = classify::response(parts.status, &parts.headers);
        let body = match at_headers {
            // Trailers-only: the client's deadline ran out before any answer,
            // as if its RST_STREAM had come first.
            // The deadline first: only gRPC requests have one.
            AtHeaders::Done(_)
                if pending.past_clients_deadline()
                    && classify::grpc_status(&parts.headers)
                        == Some(classify::DEADLINE_EXCEEDED) =>
            {
                pending.abandon();
                ProxyBody::upstream(body)
            }
            AtHeaders::Done(Outcome::Success) if !body.is_end_stream() => {
                pending.headers();
                ProxyBody::watched(body, pending, AtEnd::Outcome(Outcome::Success), broke)
            }
            // An error is an error whatever becomes of its body.
            AtHeaders::Done(outcome) => {
                pending.headers();
                pending.finish(outcome);
                ProxyBody::upstream(body)
            }
            AtHeaders::AwaitTrailers => {
                pending.headers();
                ProxyBody::watched(body, pending, AtEnd::Trailers, broke)
            }
        };
        strip_hop_by_hop(&mut parts.headers, false);
        Response::from_parts(parts, body)
    }

    /// Sends the request to the app through hyper-util's pools, within the
    /// upstream timeout.
    async fn send(&self, req: Request<Upload>, is_h2: bool) -> Result<Response<Incoming>, Failure> {
        let client = if is_h2 { &self.http2 } else { &self.http1 };
        let sent = client.request(req);
        let result = match self.upstream_timeout {
            Some(t) => match tokio::time::timeout(t, sent).await {
                Ok(r) => r,
                Err(_) => return Err(Failure::Timeout),
            },
            None => sent.await,
        };
        match result {
            Ok(resp) => Ok(resp),
            Err(e) if e.is_connect() => Err(Failure::Connect(e.into())),
            Err(e) => Err(Failure::Request(e.into())),
        }
    }

    /// Points the request at the app and strips hop-by-hop headers.
    #[allow(clippy::result_large_err)]
    fn rewrite(
        &self,
        req: &mut Request<Incoming>,
        upgrade: bool,
    ) -> Result<(), Response<ProxyBody>> {
        // Take the parts instead of cloning them: the request's URI is replaced anyway.
        let parts = std::mem::take(req.uri_mut()).into_parts();
        // HTTP/2 carries the host in :authority, which we replace; keep it as Host.
        if req.version() == Version::HTTP_2 && !req.headers().contains_key(header::HOST) {
            if let Some(a) = &parts.authority {
                if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                    req.headers_mut().insert(header::HOST, v);
                }
            }
        }
        let mut target = http::uri::Parts::default();
        target.scheme = Some(self.scheme.clone());
        target.authority = Some(self.authority.clone());
        target.path_and_query = Some(
            parts
                .path_and_query
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        match Uri::from_parts(target) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => {
                self.recorder.metrics().proxy_refusal("bad_request");
                return Err(local(StatusCode::BAD_REQUEST, "invalid request target\n"));
            }
        }
        strip_hop_by_hop(req.headers_mut(), upgrade);
        Ok(())
    }

    fn upstream_error(&self, failure: Failure, pending: Pending) -> Response<ProxyBody> {
        let e = match failure {
            Failure::Connect(e) => {
                tracing::warn!(error = %e, "upstream connect failed");
                pending.finish(Outcome::Error);
                self.recorder.metrics().proxy_refusal("upstream_connect");
                return local(StatusCode::BAD_GATEWAY, "upstream connection failed\n");
            }
            Failure::Timeout => {
                pending.finish(Outcome::Error);
                self.recorder.metrics().proxy_refusal("upstream_timeout");
                return local(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n");
            }
            Failure::Request(e) => e,
        };
        if client_at_fault(&*e) {
            // The client's own request body broke off: not the canary's fault.
            pending.client_fault();
            self.recorder.metrics().proxy_refusal("client_error");
            return local(StatusCode::BAD_REQUEST, "request body ended early\n");
        }
        tracing::warn!(error = %e, "upstream request failed");
        pending.finish(Outcome::Error);
        self.recorder.metrics().proxy_refusal("upstream_error");
        local(StatusCode::BAD_GATEWAY, "upstream request failed\n")
    }

    /// A hyper service over [`Proxy::handle`].
    pub fn service(
        self,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<ProxyBody>,
        Error = std::convert::Infallible,
        Future = impl std::future::Future<
            Output = Result<Response<ProxyBody>, std::convert::Infallible>,
        > + Send,
    > + Clone {
        // One reference count per request instead of a clone of every field.
        let proxy = std::sync::Arc::new(self);
        hyper::service::service_fn(move |req| {
            let proxy = proxy.clone();
            async move { Ok(proxy.handle(req).await) }
        })
    }
}

/// Whether a failed upstream call was caused by the inbound request's body.
fn client_at_fault(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_user() || h.is_body_write_aborted() {
                return true;
            }
        }
        source = s.source();
    }
    false
}

fn local(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::local(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
