//! Rolling an Istio VirtualService back to stable, and restoring it, through the
//! Kubernetes API.
//!
//! The object is read as a [`DynamicObject`] (no typed Istio crate fits kube 5) and changed
//! only by JSON patches planned in [`crate::domain::routes`], so fields we do not model are
//! never lost. Decisions worth knowing:
//! - Concurrency: every patch starts with a `test` of `/metadata/resourceVersion` as we
//!   read it, so it lands only on the object it was planned from. Any write since (another
//!   writer's edit of a route, a newer leader's rollback or restore) fails it with 422; we
//!   then read again, re-plan on the new object (keeping the other writer's edit) and
//!   retry a few times with capped backoff. A patch that lands late, from a leader whose
//!   lease ran out while it was in flight, therefore cannot overwrite its successor's
//!   write. We never `test` free-text values: the API server compares a `test` value's raw
//!   bytes with Go's encoding of the stored object (which writes `>` as `\u003e`), so a
//!   `test` of a string holding `>`, `<` or `&` fails every time. A resourceVersion is an
//!   opaque ASCII token, the same in both encodings.
//! - Record: the rollback stores a [`RollbackRecord`] as JSON in the annotation
//!   [`ROLLBACK_ANNOTATION`]. A restore does not delete it but sets `restoredAt`, which
//!   keeps the audit trail visible in `kubectl get -o yaml` and tells the next rollback
//!   to start a fresh record.
//! - Dry run computes and logs the plan but never sends a write, not even with
//!   `dryRun=All`, so it needs no `patch` permission.
//!
//! Layout, one job per file: this root names the resource (group, versions, RBAC name, the
//! [`Api`] handle, the reference Events carry); `patch` reads the object and sends the
//! guarded patch with its retries; `record` is the annotation's [`RollbackRecord`];
//! `rollback` and `restore` plan the two writes; `error` is [`VirtualServiceError`].
//! Everything public is re-exported here, so callers name only
//! `crate::cluster::virtual_service::...`.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::Client;

mod error;
mod patch;
mod record;
mod restore;
mod rollback;

pub use super::client::FIELD_MANAGER;
pub use error::VirtualServiceError;
pub use record::{read_record, RollbackRecord};
pub use restore::{restore, RestoreOutcome};
pub use rollback::{rollback, RollbackOutcome, RollbackReason, RouteTargets};

/// API group of Istio's networking resources.
pub const ISTIO_GROUP: &str = "networking.istio.io";
/// The VirtualService version used unless configured otherwise. Older clusters serve only
/// `v1beta1` or `v1alpha3`, which have the same schema.
pub const DEFAULT_VERSION: &str = "v1";
/// The resource as RBAC names it.
pub const RESOURCE: &str = "virtualservices.networking.istio.io";
/// Annotation holding the [`RollbackRecord`] of the last rollback.
pub const ROLLBACK_ANNOTATION: &str = "canary-guard.io/rollback";

/// The [`ApiResource`] of VirtualServices at `version` (e.g. `v1`, `v1beta1`).
pub fn resource(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(ISTIO_GROUP, version, "VirtualService"),
        "virtualservices",
    )
}

/// An [`Api`] for the VirtualServices of `namespace` at `version`.
pub fn api(client: Client, namespace: &str, version: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, namespace, &resource(version))
}

/// A reference to `obj` for Events.
pub fn object_reference(obj: &DynamicObject) -> ObjectReference {
    ObjectReference {
        api_version: obj.types.as_ref().map(|t| t.api_version.clone()),
        kind: obj.types.as_ref().map(|t| t.kind.clone()),
        name: obj.metadata.name.clone(),
        namespace: obj.metadata.namespace.clone(),
        uid: obj.metadata.uid.clone(),
        resource_version: obj.metadata.resource_version.clone(),
        field_path: None,
    }
}

#[cfg(test)]
mod tests;
