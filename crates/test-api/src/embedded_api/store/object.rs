//! Calls and objects as values: the namespace and name a call targets, a request body
//! decoded as the real server decodes it, an object presented at the caller's version, and
//! its metadata fields read and written.
//!
//! Design rule: nothing here touches the store's state; these functions only read and shape
//! values, so every verb checks, decodes and presents objects the same way.

use serde_json::{Map, Value};

use crate::embedded_api::call::Call;
use crate::embedded_api::resource::Resource;
use crate::embedded_api::status::Status;

/// The object as the caller's version shows it.
pub fn present(resource: Resource, version: &str, mut object: Value) -> Value {
    object["apiVersion"] = Value::String(resource.api_version(version));
    object["kind"] = Value::String(resource.kind().to_owned());
    object
}

pub(super) fn namespace(call: &Call) -> Result<&str, Status> {
    call.namespace
        .as_deref()
        .ok_or_else(|| Status::bad_request("a namespace is required for this request"))
}

pub(super) fn name(call: &Call) -> Result<&str, Status> {
    call.name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Status::bad_request("a name is required for this request"))
}

/// Decodes a request body as the real server does: it must be an object of the right
/// apiVersion and kind, then typed resources go through their Go type.
pub(super) fn decode(call: &Call, body: Option<&Value>) -> Result<Value, Status> {
    let body = body.ok_or_else(|| Status::bad_request("the request has no body"))?;
    if !body.is_object() {
        return Err(Status::bad_request(
            "the body of the request was in an unknown format",
        ));
    }
    let expected = call.resource.api_version(&call.version);
    match (body["apiVersion"].as_str(), body["kind"].as_str()) {
        (_, None) | (_, Some("")) => {
            return Err(Status::bad_request(format!(
                "Object 'Kind' is missing in '{body}'"
            )))
        }
        (Some(v), Some(k)) if v == expected && k == call.resource.kind() => {}
        (v, Some(k)) => {
            return Err(Status::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({expected}) \
                 or the kind ({k}) is not {}",
                v.unwrap_or_default(),
                call.resource.kind()
            )))
        }
    }
    // Typed resources are stored at their one version; custom ones keep what was sent.
    let mut object = call.resource.normalize(body.clone()).map_err(|e| {
        let kind = call.resource.kind();
        Status::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: {e}",
            call.version
        ))
    })?;
    object["apiVersion"] =
        Value::String(call.resource.api_version(call.resource.preferred_version()));
    Ok(object)
}

pub(super) fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object["metadata"][field].as_str().unwrap_or_default()
}

pub(super) fn set_meta(object: &mut Value, field: &str, value: Value) {
    if !object["metadata"].is_object() {
        object["metadata"] = Value::Object(Map::new());
    }
    object["metadata"][field] = value;
}

pub(super) fn remove_meta(object: &mut Value, field: &str) {
    if let Some(m) = object["metadata"].as_object_mut() {
        m.remove(field);
    }
}
