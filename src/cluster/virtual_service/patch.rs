//! Reading the VirtualService and writing one guarded JSON patch to it: the named
//! [`Target`], the retry loop around a read, a plan and a patch, and the classification of
//! API failures into [`VirtualServiceError`].
//!
//! Design rule: every patch is pinned by [`pin`] to the resourceVersion it was planned from
//! (never to a free-text value; see the parent module's header), so it lands only on the
//! object it was planned from. When it does not land because the object changed (409,
//! 422), [`patch_with_retries`] reads and plans again, which keeps the other writer's edit;
//! any other failure ends the call.

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use super::{VirtualServiceError, FIELD_MANAGER};
use crate::domain::routes::{PatchOp, RouteError};

/// Reads and patches before giving up when the object keeps changing under us.
pub(super) const MAX_ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_millis(800);

/// Names the object in errors.
pub(super) struct Target<'a> {
    api: &'a Api<DynamicObject>,
    namespace: String,
    name: &'a str,
}

impl<'a> Target<'a> {
    pub(super) fn new(api: &'a Api<DynamicObject>, name: &'a str) -> Self {
        Self {
            api,
            namespace: api.namespace().unwrap_or_default().to_owned(),
            name,
        }
    }

    pub(super) fn kube_error(&self, verb: &'static str, err: kube::Error) -> VirtualServiceError {
        let (namespace, name) = (self.namespace.clone(), self.name.to_owned());
        match &err {
            kube::Error::Api(s) if s.is_not_found() => {
                VirtualServiceError::NotFound { namespace, name }
            }
            kube::Error::Api(s) if s.is_forbidden() => VirtualServiceError::Forbidden {
                verb,
                namespace,
                name,
            },
            _ => VirtualServiceError::Kube {
                verb,
                namespace,
                name,
                source: Box::new(err),
            },
        }
    }

    pub(super) fn routes_error(&self, source: RouteError) -> VirtualServiceError {
        VirtualServiceError::Routes {
            namespace: self.namespace.clone(),
            name: self.name.to_owned(),
            source,
        }
    }

    pub(super) fn bad_record(&self, source: serde_json::Error) -> VirtualServiceError {
        VirtualServiceError::BadRecord {
            namespace: self.namespace.clone(),
            name: self.name.to_owned(),
            source,
        }
    }

    fn conflict(&self, attempts: u32, last: &kube::Error) -> VirtualServiceError {
        VirtualServiceError::Conflict {
            namespace: self.namespace.clone(),
            name: self.name.to_owned(),
            attempts,
            last: crate::cluster::api_error::Readable(last).to_string(),
        }
    }

    pub(super) async fn get(&self) -> Result<(DynamicObject, Value), VirtualServiceError> {
        let obj = self
            .api
            .get(self.name)
            .await
            .map_err(|e| self.kube_error("get", e))?;
        // The domain planner works on the whole object as JSON so nothing unmodelled is lost.
        let value = serde_json::to_value(&obj)
            .map_err(|e| self.kube_error("get", kube::Error::SerdeError(e)))?;
        Ok((obj, value))
    }

    async fn patch(&self, ops: &[PatchOp]) -> Result<DynamicObject, kube::Error> {
        let patch: json_patch::Patch = serde_json::to_value(ops)
            .and_then(serde_json::from_value)
            .map_err(kube::Error::SerdeError)?;
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        self.api
            .patch(self.name, &params, &Patch::<()>::Json(patch))
            .await
    }
}

/// 409 (stale write) and 422 (a failed `test`, which the API server answers with no detail)
/// both mean the object changed between our read and our write.
fn changed_under_us(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.is_conflict() || s.is_invalid())
}

/// The `test` that pins a patch to the object as read (see the parent module's header), if
/// the object has a resourceVersion (every object an API server returns has one).
pub(super) fn pin(obj: &DynamicObject) -> Option<PatchOp> {
    obj.metadata
        .resource_version
        .as_ref()
        .map(|rv| PatchOp::Test {
            path: "/metadata/resourceVersion".to_owned(),
            value: Value::String(rv.clone()),
        })
}

/// What one attempt makes of the object it read.
pub(super) enum Attempt<T, F> {
    /// Finished without a write (nothing to change, or a dry run).
    Done(T),
    /// Send these operations; if they land, `F` makes the outcome from the patched object.
    Patch(Vec<PatchOp>, F),
}

/// Reads the object, lets `plan` decide on it, and sends the patch it asks for. When the
/// object changed between our read and our write, reads and plans again, up to
/// [`MAX_ATTEMPTS`] times with doubling backoff capped at [`MAX_BACKOFF`], so every
/// attempt keeps the other writer's edit.
pub(super) async fn patch_with_retries<T, F>(
    target: &Target<'_>,
    mut plan: impl FnMut(&DynamicObject, &Value) -> Result<Attempt<T, F>, VirtualServiceError>,
) -> Result<T, VirtualServiceError>
where
    F: FnOnce(DynamicObject) -> T,
{
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let (obj, value) = target.get().await?;
        let (ops, applied) = match plan(&obj, &value)? {
            Attempt::Done(outcome) => return Ok(outcome),
            Attempt::Patch(ops, applied) => (ops, applied),
        };
        match target.patch(&ops).await {
            Ok(patched) => return Ok(applied(patched)),
            Err(e) if changed_under_us(&e) => {
                if attempt == MAX_ATTEMPTS {
                    return Err(target.conflict(attempt, &e));
                }
                tracing::debug!(virtual_service = target.name, attempt, error = %e, "changed under us; reading again");
            }
            Err(e) => return Err(target.kube_error("patch", e)),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        attempt += 1;
    }
}
