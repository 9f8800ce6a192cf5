//! Reads: get and list, the list filtered by label selector.
//!
//! Design rule: a read changes nothing, not even the history. Objects come as the caller's
//! version shows them, and a list carries the resourceVersion it is current at, so a watch
//! can start from it.

use serde_json::{json, Value};

use super::object::{name, namespace, present};
use super::{State, Written};
use crate::embedded_api::call::Call;
use crate::embedded_api::selector::Selector;
use crate::embedded_api::status::Status;

pub(super) fn get(state: &State, call: &Call) -> Result<Written, Status> {
    let (ns, name) = (namespace(call)?, name(call)?);
    state
        .objects
        .get(&(call.resource, ns.to_owned(), name.to_owned()))
        .map(|o| Written::read(present(call.resource, &call.version, o.clone())))
        .ok_or_else(|| Status::not_found(call.resource, name))
}

pub(super) fn list(state: &State, call: &Call) -> Result<Written, Status> {
    let selector = match call.label_selector.as_deref() {
        Some(s) => Selector::parse(s).map_err(Status::bad_request)?,
        None => Selector::default(),
    };
    let items: Vec<Value> = state
        .objects
        .iter()
        .filter(|((r, ns, _), _)| {
            *r == call.resource && call.namespace.as_ref().is_none_or(|want| want == ns)
        })
        .filter(|(_, o)| selector.matches(o["metadata"]["labels"].as_object()))
        .map(|(_, o)| {
            let mut item = present(call.resource, &call.version, o.clone());
            // Items of built-in types are written without apiVersion and kind; custom
            // resources are unstructured and keep theirs.
            if !call.resource.is_custom() {
                if let Some(m) = item.as_object_mut() {
                    m.remove("apiVersion");
                    m.remove("kind");
                }
            }
            item
        })
        .collect();
    Ok(Written::read(json!({
        "kind": format!("{}List", call.resource.kind()),
        "apiVersion": call.resource.api_version(&call.version),
        "metadata": {"resourceVersion": state.resource_version.to_string()},
        "items": items,
    })))
}
