//! canary-guard: a sidecar that measures a canary pod's traffic, shares a compact
//! summary with its peers through Kubernetes Leases, and lets one elected leader
//! revert the Istio VirtualService to stable when the canary crosses its thresholds.
//!
//! Layout:
//! - [`domain`]: pure logic (window, policy, route rewriting) that knows nothing of I/O;
//!   the `canary-guard-core` crate (`crates/core`), re-exported under this name.
//! - [`observe`]: where samples come from (the reverse proxy).
//! - [`admin`]: the admin server (`/metrics`, `/healthz`, `/readyz`, `/v1/state`).
//! - [`cluster`]: Kubernetes adapters (leases, leader election, VirtualService, Events).
//! - [`notify`]: the leader's rollback / re-assert / restore notifications (webhook, Slack).
//! - [`inject`]: `canary-guard inject`, the sidecar added to manifests.
//! - [`webhook`]: `canary-guard webhook`, the same injection as an admission webhook.
//! - [`runtime`]: wiring of the pieces into the `run`, `demo` and `status` commands.
//!
//! The in-memory Kubernetes API and the demo's apps and load generator are stand-ins, not
//! the product: they live in the `canary-guard-test-api` crate (`crates/test-api`), a
//! dev-dependency, and a dependency of the `demo` feature alone.
#![forbid(unsafe_code)]

/// Any error, boxed to cross a hyper or tokio boundary.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod inject;
pub mod notify;
pub mod observe;
pub mod parse;
pub mod runtime;
pub mod server;
pub mod webhook;

/// The core crate keeps its old path, so `crate::domain::...` reads as before. It
/// takes std's `Instant`: callers read tokio's clock (paused in tests) and pass
/// `Instant::into_std()`, which keeps the paused time.
pub use canary_guard_core as domain;

/// Errors surfaced by canary-guard.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or environment variable has a value we cannot use.
    #[error("{0}")]
    Config(String),

    /// Binding or serving a socket failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// `inject` could not process a document.
    #[error(transparent)]
    Inject(#[from] crate::inject::InjectError),

    /// A Kubernetes API call failed.
    #[error(
        "kubernetes API call {op} failed: {}",
        cluster::api_error::Readable(source)
    )]
    Kube {
        /// The operation, e.g. `patch virtualservice`.
        op: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
}

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
