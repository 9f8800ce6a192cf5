//! The rollback: what it moves ([`RouteTargets`]), why ([`RollbackReason`]), the plan it
//! makes on each read and what came of it ([`RollbackOutcome`]).
//!
//! Design rule: one patch carries both the route changes and the record of the weights
//! they replace, so traffic never moves without its record; and nothing is written when
//! the canary already has no traffic, when only routes that cannot be rolled back still
//! hold it, or in a dry run. Every attempt plans on the object it just read.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject};

use super::patch::{patch_with_retries, pin, Attempt, Target};
use super::record::{annotation_op, merge_previous};
use super::{object_reference, RollbackRecord, VirtualServiceError};
use crate::domain::routes::{
    self, CanaryTarget, PatchOp, RecordedRoute, SkippedRoute, StableTarget,
};

/// Which destinations a rollback moves traffic from and to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTargets {
    /// The canary destination.
    pub canary: CanaryTarget,
    /// Where a route whose only destination is the canary sends its traffic instead.
    pub stable: Option<StableTarget>,
    /// Only the http route with this `name` (`--route`); tls and tcp routes have no name.
    pub route: Option<String>,
}

/// Why the rollback happens, for the record and the Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackReason {
    /// Human text with the numbers that crossed the thresholds,
    /// e.g. `error ratio 0.12 > 0.05 (144 of 1200 requests) (all members over 30s; 2 consecutive failing checks)`.
    pub reason: String,
    /// The guard group.
    pub group: String,
    /// The canary revision (`pod-template-hash`) that failed.
    pub canary_revision: String,
}

/// What [`rollback`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum RollbackOutcome {
    /// One patch was written.
    Applied {
        /// What changed, e.g. `http[0] "reviews-route": v1 90→100, v2 10→0`.
        summary: String,
        /// The weights before the patch, as recorded in the annotation.
        previous: Vec<RecordedRoute>,
        /// Routes holding the canary that were not touched.
        skipped: Vec<SkippedRoute>,
        /// The VirtualService's resourceVersion after the patch.
        resource_version: Option<String>,
        /// True when an earlier, unrestored rollback of the same canary revision had been
        /// undone by someone and this one asserts it again.
        reasserted: bool,
        /// The patched object, for Events.
        regarding: Box<ObjectReference>,
    },
    /// The canary already receives no traffic; nothing was written.
    AlreadyRolledBack,
    /// Dry run: this is what would be written.
    DryRun {
        /// What would change.
        summary: String,
        /// The route operations that would be sent (without the annotation).
        ops: Vec<PatchOp>,
    },
    /// The canary still has traffic, but only in routes that cannot be rolled back
    /// (e.g. canary-only routes without a stable target); nothing was written.
    Skipped {
        /// The routes and why.
        skipped: Vec<SkippedRoute>,
    },
}

/// Sends the canary's traffic back to stable in every route of VirtualService `name` that
/// holds it, in one guarded JSON patch that also records the previous weights in
/// [`ROLLBACK_ANNOTATION`](super::ROLLBACK_ANNOTATION). Writes nothing when the canary
/// already receives no traffic or when `dry_run` is set. Retries a few times when the
/// object changes under us; the other writer's edit is kept since every attempt re-plans
/// on a fresh read.
pub async fn rollback(
    api: &Api<DynamicObject>,
    name: &str,
    targets: &RouteTargets,
    reason: &RollbackReason,
    dry_run: bool,
) -> Result<RollbackOutcome, VirtualServiceError> {
    let target = Target::new(api, name);
    patch_with_retries(&target, |obj, value| {
        let plan = routes::plan_rollback(
            value,
            &targets.canary,
            targets.stable.as_ref(),
            targets.route.as_deref(),
        )
        .map_err(|e| target.routes_error(e))?;
        if plan.is_noop() {
            return Ok(Attempt::Done(if plan.skipped.is_empty() {
                RollbackOutcome::AlreadyRolledBack
            } else {
                tracing::warn!(virtual_service = name, summary = %plan.summary(), "canary still receives traffic in routes that cannot be rolled back");
                RollbackOutcome::Skipped {
                    skipped: plan.skipped,
                }
            }));
        }
        let summary = plan.summary();
        if dry_run {
            tracing::info!(virtual_service = name, %summary, "dry run: rollback not written");
            return Ok(Attempt::Done(RollbackOutcome::DryRun {
                summary,
                ops: plan.ops,
            }));
        }

        let earlier = RollbackRecord::from_object(obj).unwrap_or_else(|e| {
            tracing::warn!(virtual_service = name, error = %e, "replacing an unreadable rollback record");
            None
        });
        let reasserted = earlier.as_ref().is_some_and(|r| {
            r.restored_at.is_none() && r.canary_revision == reason.canary_revision
        });
        let record = RollbackRecord {
            time: Timestamp::now().to_string(),
            reason: reason.reason.clone(),
            group: reason.group.clone(),
            canary_revision: reason.canary_revision.clone(),
            previous: merge_previous(earlier.as_ref(), &plan.previous),
            restored_at: None,
        };
        let record_json = serde_json::to_string(&record)
            .map_err(|e| target.kube_error("patch", kube::Error::SerdeError(e)))?;
        let mut ops: Vec<PatchOp> = pin(obj).into_iter().collect();
        ops.extend(plan.ops);
        ops.push(annotation_op(obj, record_json));

        Ok(Attempt::Patch(ops, move |patched: DynamicObject| {
            tracing::info!(virtual_service = name, %summary, reasserted, "rolled back to stable");
            RollbackOutcome::Applied {
                summary,
                previous: plan.previous,
                skipped: plan.skipped,
                resource_version: patched.metadata.resource_version.clone(),
                reasserted,
                regarding: Box::new(object_reference(&patched)),
            }
        }))
    })
    .await
}
