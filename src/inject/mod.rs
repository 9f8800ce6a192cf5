//! `canary-guard inject`: adds the guard as a native sidecar to the workloads in a
//! stream of Kubernetes manifests, like `linkerd inject`.
//!
//! Documents are processed one by one. Workloads (Deployment, StatefulSet, DaemonSet,
//! Pod, and those inside a `List`) get the sidecar; Services can be rewired to reach it
//! in proxy mode; everything else is copied byte for byte. A workload that already
//! carries a `canary-guard` container is left as it is, so a second run changes nothing.

mod args;
mod documents;
mod node;
mod sidecar;

pub use args::{run, InjectArgs, SidecarArgs};
pub use documents::{inject, Document};
pub use node::Node;
pub use sidecar::{inject_pod, Settings, CONTAINER_NAME};

/// Annotation prefix for per-workload settings (`canary-guard.io/group`, ...).
pub const ANNOTATION_PREFIX: &str = "canary-guard.io/";

/// Why a stream could not be injected; names the document.
#[derive(Debug, thiserror::Error)]
#[error("document {index} (line {line}{what}): {message}")]
pub struct InjectError {
    /// 1-based position of the document in the stream.
    pub index: usize,
    /// Line where the document starts.
    pub line: usize,
    /// `, Kind/name` when known.
    pub what: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

#[cfg(test)]
mod tests;
