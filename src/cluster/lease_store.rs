//! The Lease store the election and the member leases talk to: its trait, its errors
//! reduced to what the protocol needs, and its implementation for `kube::Api<Lease>`.
//!
//! Design rule: every write is conditional (a create fails if the Lease exists, a replace
//! carries the resourceVersion we read), so no bug above this can overwrite a peer's write;
//! outcomes the protocol expects (404 on a first get, 409 on a lost race) are not errors to
//! count.

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use super::client::FIELD_MANAGER;

/// Why a [`LeaseStore`] call failed, reduced to what the protocol needs to know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The Lease does not exist (404).
    #[error("lease not found")]
    NotFound,
    /// A replace carried a stale `resourceVersion` (409 `Conflict`).
    #[error("lease was modified concurrently (conflict)")]
    Conflict,
    /// A create lost against an existing Lease (409 `AlreadyExists`).
    #[error("lease already exists")]
    AlreadyExists,
    /// Anything else: network, timeouts, 5xx, 422, permissions.
    #[error("{0}")]
    Other(String),
}

impl From<kube::Error> for StoreError {
    fn from(err: kube::Error) -> Self {
        match &err {
            // AlreadyExists is also a 409, so it must be recognised before Conflict.
            kube::Error::Api(s) if s.is_already_exists() => StoreError::AlreadyExists,
            kube::Error::Api(s) if s.is_conflict() => StoreError::Conflict,
            kube::Error::Api(s) if s.is_not_found() => StoreError::NotFound,
            _ => StoreError::Other(super::api_error::Readable(&err).to_string()),
        }
    }
}

/// The Lease operations used by the elector and by member publishing, with the real
/// API server's semantics.
///
/// Implementations must behave like the server: `create` fails with
/// [`StoreError::AlreadyExists`] when the name is taken (and rejects an object that
/// still carries a `resourceVersion`); `replace` is conditional on the object's
/// `metadata.resourceVersion` and fails with [`StoreError::Conflict`] when it is stale.
pub trait LeaseStore: Send + Sync + 'static {
    /// Reads one Lease by name.
    fn get(&self, name: &str) -> impl Future<Output = Result<Lease, StoreError>> + Send;
    /// Creates a Lease; `metadata.resourceVersion` must be unset.
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<Lease, StoreError>> + Send;
    /// Replaces the Lease named in `metadata.name`, conditional on its
    /// `metadata.resourceVersion` (which must be set).
    fn replace(&self, lease: &Lease) -> impl Future<Output = Result<Lease, StoreError>> + Send;
    /// Lists Leases matching a label selector such as `canary-guard.io/group=reviews`.
    fn list(
        &self,
        label_selector: &str,
    ) -> impl Future<Output = Result<Vec<Lease>, StoreError>> + Send;
    /// Deletes a Lease by name.
    fn delete(&self, name: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    }
}

impl LeaseStore for Api<Lease> {
    async fn get(&self, name: &str) -> Result<Lease, StoreError> {
        Ok(Api::get(self, name).await?)
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, StoreError> {
        Ok(Api::create(self, &post_params(), lease).await?)
    }

    async fn replace(&self, lease: &Lease) -> Result<Lease, StoreError> {
        let name = lease
            .metadata
            .name
            .as_deref()
            .ok_or_else(|| StoreError::Other("lease to replace has no name".into()))?;
        // An unconditional PUT would overwrite a peer's write; refuse it here so a bug
        // cannot turn into two leaders.
        if lease.metadata.resource_version.is_none() {
            return Err(StoreError::Other(format!(
                "refusing to replace lease {name} without a resourceVersion"
            )));
        }
        Ok(Api::replace(self, name, &post_params(), lease).await?)
    }

    async fn list(&self, label_selector: &str) -> Result<Vec<Lease>, StoreError> {
        let lp = ListParams::default().labels(label_selector);
        Ok(Api::list(self, &lp).await?.items)
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        Api::delete(self, name, &DeleteParams::default()).await?;
        Ok(())
    }
}

/// Called with the operation name (`lease_get`, `lease_create`, `lease_replace`,
/// `lease_list`, `lease_delete`, or `lease_timeout` when the elector gave up waiting
/// for an answer) each time a Kubernetes call fails unexpectedly, so the caller can
/// count `canary_guard_kube_errors_total{op}`.
///
/// Outcomes the protocol expects are not reported: a 404 on `get` of a Lease that does
/// not exist yet, and 409 on conditional writes that lost a race.
pub type ApiErrorHook = Arc<dyn Fn(&'static str) + Send + Sync>;

pub(crate) fn no_hook() -> ApiErrorHook {
    Arc::new(|_| {})
}

/// Reports `err` to `hook` unless it is one of the outcomes the protocol expects.
pub(crate) fn report(hook: &ApiErrorHook, op: &'static str, err: &StoreError) {
    let expected = match err {
        StoreError::NotFound => op == "lease_get",
        StoreError::Conflict | StoreError::AlreadyExists => true,
        StoreError::Other(_) => false,
    };
    if !expected {
        hook(op);
    }
}

/// Wall-clock now, truncated to microseconds as the API server stores MicroTime, so the
/// record we write compares equal to the record we read back.
pub(crate) fn micro_now() -> MicroTime {
    let now = Timestamp::now();
    MicroTime(Timestamp::from_microsecond(now.as_microsecond()).unwrap_or(now))
}
