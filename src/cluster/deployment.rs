//! The canary Deployment's rollout: pause and resume it, as `kubectl rollout pause` and
//! `kubectl rollout resume` do.
//!
//! Design rule: one merge patch of `spec.paused` under our field manager, and nothing
//! else of the Deployment is touched; callers decide when, with what time limit, and what
//! a failure means to them.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;

use super::client::FIELD_MANAGER;

/// Pauses (`paused`) or resumes the rollout of Deployment `name` in `namespace`.
pub async fn set_paused(
    client: Client,
    namespace: &str,
    name: &str,
    paused: bool,
) -> Result<(), kube::Error> {
    let api: Api<Deployment> = Api::namespaced(client, namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(
        name,
        &params,
        &Patch::Merge(json!({"spec": {"paused": paused}})),
    )
    .await
    .map(drop)
}
