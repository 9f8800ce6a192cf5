//! [`VirtualServiceError`]: why a rollback, a restore or a read of the record failed.
//!
//! Design rule: a variant says who must act. The API failing (`Kube`, `Timeout`) is
//! transient: retried soon, no Event. The others (missing object, RBAC, routes we cannot
//! change, an unreadable record, an object that keeps changing) need an operator, and each
//! has a stable [`VirtualServiceError::reason`] for `/v1/state` and Events. Every message
//! names the object and its namespace.

use std::time::Duration;

use super::{RESOURCE, ROLLBACK_ANNOTATION};
use crate::domain::routes::RouteError;

/// Errors of [`rollback`](fn@super::rollback) and [`restore`](fn@super::restore).
#[derive(Debug, thiserror::Error)]
pub enum VirtualServiceError {
    /// The VirtualService does not exist (or the served version is not the one configured).
    #[error("{RESOURCE} {name} not found in {namespace}")]
    NotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },

    /// RBAC denies the call.
    #[error("forbidden: {verb} {RESOURCE} {name} in {namespace} — grant it in the Role")]
    Forbidden {
        /// The denied verb (`get`, `patch`).
        verb: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },

    /// The object's routes do not allow the change (canary not found, malformed weights...).
    #[error("VirtualService {namespace}/{name}: {source}")]
    Routes {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// What is wrong.
        #[source]
        source: RouteError,
    },

    /// The rollback annotation is not a record we can read, so there is nothing to restore.
    #[error("VirtualService {namespace}/{name}: annotation {ROLLBACK_ANNOTATION} is unreadable: {source}")]
    BadRecord {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },

    /// Every attempt was rejected because the object changed between our read and write.
    #[error("VirtualService {namespace}/{name} kept changing under us: gave up after {attempts} attempts (last answer: {last})")]
    Conflict {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Attempts made.
        attempts: u32,
        /// The last API answer.
        last: String,
    },

    /// The API did not answer in time (the caller bounds every call).
    #[error("{RESOURCE} {name} in {namespace}: the API server did not answer within {after:?}")]
    Timeout {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The bound that was reached.
        after: Duration,
    },

    /// Any other API failure.
    #[error(
        "{verb} {RESOURCE} {name} in {namespace}: {}",
        crate::cluster::api_error::Readable(source)
    )]
    Kube {
        /// The verb that failed.
        verb: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
}

impl VirtualServiceError {
    /// Whether the API failed (retry soon, no Event) rather than the VirtualService or
    /// the permissions being wrong (an operator must act).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            VirtualServiceError::Kube { .. } | VirtualServiceError::Timeout { .. }
        )
    }

    /// The server's `Retry-After` (429, 503), if it sent one.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            VirtualServiceError::Kube { source, .. } => match source.as_ref() {
                kube::Error::Api(status) => status
                    .details
                    .as_ref()
                    .map(|d| std::time::Duration::from_secs(u64::from(d.retry_after_seconds)))
                    .filter(|d| !d.is_zero()),
                _ => None,
            },
            _ => None,
        }
    }

    /// A short machine-readable kind for `/v1/state` problems and Event reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            VirtualServiceError::NotFound { .. } => "VirtualServiceNotFound",
            VirtualServiceError::Forbidden { .. } => "Forbidden",
            VirtualServiceError::Routes { .. } => "VirtualServiceInvalid",
            VirtualServiceError::BadRecord { .. } => "RollbackRecordUnreadable",
            VirtualServiceError::Conflict { .. } => "VirtualServiceConflict",
            VirtualServiceError::Timeout { .. } | VirtualServiceError::Kube { .. } => {
                "KubernetesApiError"
            }
        }
    }
}
