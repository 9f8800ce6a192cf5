//! The restore: putting back the weights the last rollback recorded, and what came of it
//! ([`RestoreOutcome`]).
//!
//! Design rule: a restore only ever applies a record; it changes routes whose destinations
//! are still the recorded ones, reports the others, and marks the record with `restoredAt`
//! in the same patch, so a record is restored at most once. Nothing is written without an
//! unrestored record, or in a dry run.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject};

use super::patch::{patch_with_retries, pin, Attempt, Target};
use super::record::{annotation, annotation_op};
use super::{object_reference, RollbackRecord, VirtualServiceError};
use crate::domain::routes::{self, PatchOp, SkippedRoute};

/// What [`restore`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum RestoreOutcome {
    /// The recorded weights were put back where possible and the record marked restored.
    Restored {
        /// What changed.
        summary: String,
        /// Recorded routes that could not be restored, and why.
        skipped: Vec<SkippedRoute>,
        /// The VirtualService's resourceVersion after the patch.
        resource_version: Option<String>,
        /// The patched object, for Events.
        regarding: Box<ObjectReference>,
    },
    /// The VirtualService carries no rollback record.
    NothingRecorded,
    /// The record was already restored at this time (RFC 3339).
    AlreadyRestored {
        /// When.
        restored_at: String,
    },
    /// Dry run: this is what would be written.
    DryRun {
        /// What would change.
        summary: String,
        /// The route operations that would be sent (without the annotation).
        ops: Vec<PatchOp>,
    },
}

/// Puts back the weights recorded by the last rollback of VirtualService `name`, in routes
/// whose destinations are unchanged, and marks the record with `restoredAt` (also when
/// some routes could not be restored: they are reported in the outcome). The patch is
/// pinned to the object as read, so a rollback racing with the restore makes it retry.
pub async fn restore(
    api: &Api<DynamicObject>,
    name: &str,
    dry_run: bool,
) -> Result<RestoreOutcome, VirtualServiceError> {
    let target = Target::new(api, name);
    patch_with_retries(&target, |obj, value| {
        let Some(raw) = annotation(obj) else {
            return Ok(Attempt::Done(RestoreOutcome::NothingRecorded));
        };
        let mut record: RollbackRecord =
            serde_json::from_str(raw).map_err(|source| target.bad_record(source))?;
        if let Some(restored_at) = record.restored_at {
            return Ok(Attempt::Done(RestoreOutcome::AlreadyRestored {
                restored_at,
            }));
        }
        let plan =
            routes::plan_restore(value, &record.previous).map_err(|e| target.routes_error(e))?;
        let summary = plan.summary();
        if dry_run {
            tracing::info!(virtual_service = name, %summary, "dry run: restore not written");
            return Ok(Attempt::Done(RestoreOutcome::DryRun {
                summary,
                ops: plan.ops,
            }));
        }

        record.restored_at = Some(Timestamp::now().to_string());
        let record_json = serde_json::to_string(&record)
            .map_err(|e| target.kube_error("patch", kube::Error::SerdeError(e)))?;
        let mut ops: Vec<PatchOp> = pin(obj).into_iter().collect();
        ops.extend(plan.ops);
        ops.push(annotation_op(obj, record_json));

        Ok(Attempt::Patch(ops, move |patched: DynamicObject| {
            tracing::info!(virtual_service = name, %summary, "restored recorded weights");
            RestoreOutcome::Restored {
                summary,
                skipped: plan.skipped,
                resource_version: patched.metadata.resource_version.clone(),
                regarding: Box::new(object_reference(&patched)),
            }
        }))
    })
    .await
}
