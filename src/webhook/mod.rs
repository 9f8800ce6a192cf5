//! `canary-guard webhook`: a mutating admission webhook that adds the guard to pods
//! labelled `canary-guard.io/inject: "true"`, with the same code as `inject`.
//!
//! AdmissionReview v1 over TLS (rustls with ring). The certificate and key files are
//! read again when they change on disk, so a rotated Secret needs no restart.
//!
//! Design rule: no server of its own. It serves through [`crate::server`], the
//! proxy's accept loop, over [`Tls`]: the same connection cap, handshake and
//! header-read timeouts, and drain on SIGTERM.

mod review;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use review::{mutate, review, INJECT_LABEL};
pub use tls::ReloadingCert;

use crate::inject::{Settings, SidecarArgs};
use crate::parse::parse_drain_timeout;
use crate::server::{self, Limits, Refusal, Tls};

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

    /// Open client connections at most, TLS handshakes included (1..=1000000).
    #[arg(long, env = "CANARY_GUARD_MAX_CONNECTIONS", value_name = "N",
          default_value = "1000", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// On SIGTERM, time in-flight reviews get to finish (0s..=10m).
    #[arg(long, env = "CANARY_GUARD_DRAIN_TIMEOUT", value_name = "DURATION",
          default_value = "20s", value_parser = parse_drain_timeout)]
    pub drain_timeout: Duration,

    /// The sidecar's settings.
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

/// A running webhook server.
pub struct Webhook {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<usize>,
}

impl Webhook {
    /// Stops accepting and gives in-flight reviews `--drain-timeout` to finish.
    /// Returns the number of connections still open when the drain gave up.
    /// Dropping the `Webhook` begins the same drain without waiting for it.
    pub async fn shutdown(self) -> usize {
        let _ = self.stop.send(());
        self.task.await.expect("the webhook's accept loop panicked")
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

/// Binds and serves until [`Webhook::shutdown`], or until the `Webhook` is dropped.
pub async fn start(args: &WebhookArgs) -> crate::Result<Webhook> {
    let cert = ReloadingCert::load(args.tls_cert.clone(), args.tls_key.clone())?;
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
    let service = hyper::service::service_fn(move |req| {
        let settings = settings.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(req, settings).await) }
    });
    let limits = Limits {
        max_connections: args.max_connections as usize,
        drain_timeout: args.drain_timeout,
        ..Limits::default()
    };
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server::serve(
        listener,
        Tls::new(Arc::new(tls::server_config(cert)?)),
        service,
        limits,
        // Its one client is the API server: a refusal means something is amiss.
        |r: Refusal| tracing::info!(reason = r.reason(), "refused a client"),
        async {
            let _ = stopped.await;
        },
    ));
    tracing::info!(%addr, "admission webhook listening");
    Ok(Webhook { addr, stop, task })
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
    tracing::info!("shutting down: draining in-flight reviews");
    webhook.shutdown().await;
    Ok(())
}
