//! The [`RollbackRecord`] kept in the annotation [`ROLLBACK_ANNOTATION`]: its JSON, reading
//! it from an object or through the API, the patch operation that writes it, and which
//! previous weights it keeps.
//!
//! Design rule: the record is the audit trail and the only memory of the weights to put
//! back, so it is never deleted: a restore marks it with `restoredAt`, and a rollback after
//! an unrestored one keeps the earlier weights of routes it does not touch. It is written
//! with `add` and never `test`ed: it holds free text (see the parent module's header).

use kube::api::{Api, DynamicObject};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::patch::Target;
use super::{VirtualServiceError, ROLLBACK_ANNOTATION};
use crate::domain::routes::{escape_pointer_token, PatchOp, RecordedRoute};

/// The JSON stored in [`ROLLBACK_ANNOTATION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRecord {
    /// When the rollback was written (RFC 3339).
    pub time: String,
    /// Why (see [`RollbackReason::reason`](super::RollbackReason::reason)).
    pub reason: String,
    /// The guard group.
    pub group: String,
    /// The canary revision that failed.
    pub canary_revision: String,
    /// The weights before the rollback, per route.
    pub previous: Vec<RecordedRoute>,
    /// When the weights were put back (RFC 3339), if they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_at: Option<String>,
}

impl RollbackRecord {
    /// The record on `obj`, if it has one.
    pub fn from_object(obj: &DynamicObject) -> Result<Option<Self>, serde_json::Error> {
        annotation(obj).map(serde_json::from_str).transpose()
    }
}

/// The raw JSON in [`ROLLBACK_ANNOTATION`] on `obj`, if it has the annotation.
pub(super) fn annotation(obj: &DynamicObject) -> Option<&str> {
    obj.metadata
        .annotations
        .as_ref()?
        .get(ROLLBACK_ANNOTATION)
        .map(String::as_str)
}

/// The operation that sets our annotation to `value`.
pub(super) fn annotation_op(obj: &DynamicObject, value: String) -> PatchOp {
    if obj.metadata.annotations.is_some() {
        // `add` on an object member creates or replaces it.
        PatchOp::Add {
            path: format!(
                "/metadata/annotations/{}",
                escape_pointer_token(ROLLBACK_ANNOTATION)
            ),
            value: Value::String(value),
        }
    } else {
        PatchOp::Add {
            path: "/metadata/annotations".to_owned(),
            value: serde_json::json!({ ROLLBACK_ANNOTATION: value }),
        }
    }
}

/// The weights to record: this rollback's, plus those of an earlier unrestored record for
/// routes this rollback does not touch (their pre-rollback weights are still the ones to
/// restore).
pub(super) fn merge_previous(
    earlier: Option<&RollbackRecord>,
    now: &[RecordedRoute],
) -> Vec<RecordedRoute> {
    let mut merged = now.to_vec();
    if let Some(earlier) = earlier.filter(|r| r.restored_at.is_none()) {
        for old in &earlier.previous {
            let touched = now
                .iter()
                .any(|n| n.route.kind == old.route.kind && n.route.index == old.route.index);
            if !touched {
                merged.push(old.clone());
            }
        }
    }
    merged
}

/// Reads the rollback record on VirtualService `name`, if it carries one.
pub async fn read_record(
    api: &Api<DynamicObject>,
    name: &str,
) -> Result<Option<RollbackRecord>, VirtualServiceError> {
    let target = Target::new(api, name);
    let (obj, _) = target.get().await?;
    RollbackRecord::from_object(&obj).map_err(|source| target.bad_record(source))
}
