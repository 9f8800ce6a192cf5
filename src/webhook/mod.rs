//! `canary-guard webhook`: a mutating admission webhook that adds the guard to pods
//! labelled `canary-guard.io/inject: "true"`, with the same code as `inject`.
//!
//! AdmissionReview v1 over TLS (rustls with ring). The certificate and key files are
//! read again when they change on disk, so a rotated Secret needs no restart.

mod review;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use clap::Args;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use review::{mutate, review, INJECT_LABEL};
pub use tls::ReloadingCert;

use crate::inject::{Settings, SidecarArgs};

/// Largest AdmissionReview accepted; the API server sends at most a few MiB.
const MAX_BODY: usize = 8 << 20;

/// Flags of `canary-guard webhook`.
#[derive(Clone, Debug, Args)]
pub struct WebhookArgs {
    /// HTTPS listener.
    #[arg(
        long,
        env = "CANARY_GUARD_WEBHOOK_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:8443"
    )]
    pub listen: SocketAddr,

    /// PEM certificate chain, reloaded when the file changes.
    #[arg(long, env = "CANARY_GUARD_TLS_CERT", value_name = "PATH")]
    pub tls_cert: PathBuf,

    /// PEM private key, reloaded when the file changes.
    #[arg(long, env = "CANARY_GUARD_TLS_KEY", value_name = "PATH")]
    pub tls_key: PathBuf,

    /// The sidecar's settings.
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

/// A running webhook server.
pub struct Webhook {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Webhook {
    /// Stops accepting connections.
    pub fn stop(self) {
        self.task.abort();
    }
}

type Body = Full<Bytes>;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .expect("static response parts")
}

async fn handle(req: Request<Incoming>, settings: Arc<Settings>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "ok\n"),
        (&Method::POST, "/mutate") => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return reply(StatusCode::BAD_REQUEST, format!("{e}\n")),
            };
            match review(&body, &settings) {
                Ok(json) => reply(StatusCode::OK, json),
                Err(e) => reply(StatusCode::BAD_REQUEST, format!("{e}\n")),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "use POST /mutate or GET /healthz\n"),
    }
}

/// Binds and serves until stopped.
pub async fn start(args: &WebhookArgs) -> crate::Result<Webhook> {
    let cert = ReloadingCert::load(args.tls_cert.clone(), args.tls_key.clone())?;
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(cert)?));
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| crate::Error::Io {
            context: format!("binding {}", args.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| crate::Error::Io {
        context: "reading the listener's address".into(),
        source,
    })?;
    let settings = Arc::new(Settings::from(&args.sidecar));
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let settings = settings.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                };
                let service = hyper::service::service_fn(move |req| {
                    let settings = settings.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(req, settings).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    tracing::info!(%addr, "admission webhook listening");
    Ok(Webhook { addr, task })
}

/// `canary-guard webhook`: serves until SIGTERM or Ctrl-C.
pub async fn run(args: WebhookArgs) -> crate::Result<()> {
    let webhook = start(&args).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| crate::Error::Io {
            context: "installing the SIGTERM handler".into(),
            source,
        })?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    webhook.stop();
    Ok(())
}
