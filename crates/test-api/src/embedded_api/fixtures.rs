//! Objects and a served API shared by the tests.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{ApiResource, DynamicObject, ObjectMeta};
use kube::core::GroupVersionKind;
use serde_json::{json, Value};

use super::{EmbeddedApi, RunningApi};

pub const NS: &str = "shop";
pub const USER_AGENT: &str = "canary-guard-test/0";

/// A served API and a kube client for it.
pub async fn served() -> (RunningApi, kube::Client) {
    let running = EmbeddedApi::new()
        .serve(([127, 0, 0, 1], 0).into())
        .await
        .expect("bind loopback");
    let client = running.client(NS, USER_AGENT).expect("client");
    (running, client)
}

/// A member Lease of guard group `group`, held by `holder`.
pub fn lease(name: &str, group: &str, holder: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some([("canary-guard.io/group".to_owned(), group.to_owned())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }),
    }
}

/// The VirtualService resource at `version`.
pub fn vs_resource(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", version, "VirtualService"),
        "virtualservices",
    )
}

/// `reviews`, 90% stable and 10% canary on http and tcp.
pub fn virtual_service() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": NS},
        "spec": {
            "hosts": ["reviews"],
            "http": [{"route": [
                {"destination": {"host": "reviews", "subset": "stable"}, "weight": 90},
                {"destination": {"host": "reviews", "subset": "canary"}, "weight": 10}
            ]}],
            "tcp": [{"route": [
                {"destination": {"host": "reviews", "subset": "stable"}, "weight": 90},
                {"destination": {"host": "reviews", "subset": "canary"}, "weight": 10}
            ]}]
        }
    })
}

pub fn vs_object() -> DynamicObject {
    serde_json::from_value(virtual_service()).expect("fixture VirtualService")
}

/// A valid events.k8s.io/v1 Event named by `generateName`.
pub fn event() -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"generateName": "reviews-"},
        "eventTime": "2026-01-02T03:04:05.123456Z",
        "type": "Warning",
        "reason": "CanaryRolledBack",
        "action": "Rollback",
        "note": "error ratio 0.31 over 0.05",
        "reportingController": "canary-guard.io/guard",
        "reportingInstance": "reviews-v2-abcde",
        "regarding": {"kind": "VirtualService", "name": "reviews", "namespace": NS,
            "apiVersion": "networking.istio.io/v1"}
    })
}
