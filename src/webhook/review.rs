//! AdmissionReview in, AdmissionReview out: the JSON patch that adds the guard.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;

use crate::inject::{inject_pod, Node, Settings, ANNOTATION_PREFIX};

/// Pods with this label set to `"true"` get the guard. The
/// MutatingWebhookConfiguration's objectSelector sends only those; the check here
/// keeps a looser configuration from injecting everything.
pub const INJECT_LABEL: &str = "canary-guard.io/inject";

/// The JSON patch that adds the guard to `pod`, or `None` when the pod is not
/// labelled for injection or already has the guard.
pub fn mutate(
    pod: &serde_json::Value,
    settings: &Settings,
) -> Result<Option<json_patch::Patch>, String> {
    let labelled = pod["metadata"]["labels"][INJECT_LABEL].as_str() == Some("true");
    if !labelled {
        return Ok(None);
    }
    let mut node = Node::from(pod.clone());
    let settings = settings.for_workload(&node)?;
    // Pods made by a controller have only a generateName at admission time.
    let name = ["name", "generateName"]
        .iter()
        .find_map(|k| pod["metadata"][k].as_str())
        .unwrap_or_default()
        .to_string();
    if inject_pod(&mut node, &settings, "Pod", &name)?.is_none() {
        return Ok(None);
    }
    let after = serde_json::to_value(&node).map_err(|e| e.to_string())?;
    Ok(Some(json_patch::diff(pod, &after)))
}

/// Answers one AdmissionReview (JSON). Pods that cannot be injected are admitted
/// unchanged with a warning: the webhook never blocks a deployment.
pub fn review(body: &[u8], settings: &Settings) -> Result<Vec<u8>, String> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|e| format!("AdmissionReview without a request: {e}"))?;
    let mut response = AdmissionResponse::from(&request);
    let pod = request
        .object
        .as_ref()
        .filter(|_| request.kind.kind == "Pod")
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| e.to_string())?;
    let mut patch = None;
    if let Some(pod) = pod {
        match mutate(&pod, settings) {
            Ok(p) => patch = p,
            Err(e) => {
                tracing::warn!(namespace = ?request.namespace, error = %e, "pod admitted without the guard");
                response.warnings = Some(vec![format!(
                    "canary-guard: not injected: {e} (see the {ANNOTATION_PREFIX}* annotations)"
                )]);
            }
        }
    }
    let mut out = serde_json::to_value(response.into_review()).map_err(|e| e.to_string())?;
    if let Some(patch) = patch {
        // The API server reads `patch` as a []byte, which JSON carries as base64.
        // kube-core's AdmissionResponse::with_patch writes an array of numbers
        // instead, so the two fields are set here.
        let bytes = serde_json::to_vec(&patch).map_err(|e| e.to_string())?;
        out["response"]["patch"] = BASE64.encode(bytes).into();
        out["response"]["patchType"] = "JSONPatch".into();
    }
    serde_json::to_vec(&out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn settings() -> Settings {
        Settings {
            image: "guard:test".into(),
            virtual_service: Some("reviews".into()),
            canary_subset: Some("v2".into()),
            ..Settings::default()
        }
    }

    fn pod(inject: &str) -> serde_json::Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": "reviews-v2-",
                "labels": { INJECT_LABEL: inject, "pod-template-hash": "abc" },
                "annotations": { "canary-guard.io/group": "reviews" },
            },
            "spec": { "containers": [{ "name": "app", "image": "a", "ports": [{ "containerPort": 8080 }] }] },
        })
    }

    #[test]
    fn only_labelled_pods_are_patched_and_only_once() {
        assert!(mutate(&pod("false"), &settings()).unwrap().is_none());
        let mut p = pod("true");
        let patch = mutate(&p, &settings()).unwrap().expect("a patch");
        json_patch::patch(&mut p, &patch).unwrap();
        assert_eq!(p["spec"]["initContainers"][0]["name"], "canary-guard");
        // Reinvocation (reinvocationPolicy: IfNeeded) finds the guard and adds nothing.
        assert!(mutate(&p, &settings()).unwrap().is_none());
    }

    #[test]
    fn a_pod_without_name_or_group_is_reported() {
        let mut p = pod("true");
        p["metadata"]["annotations"] = json!({});
        let err = mutate(&p, &settings()).unwrap_err();
        assert!(err.contains("group"), "{err}");
    }
}
