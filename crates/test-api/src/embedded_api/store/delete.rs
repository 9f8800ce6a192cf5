//! Deletes, with `DeleteOptions` preconditions.
//!
//! Design rule: a delete is a write like any other, moving the global resourceVersion on;
//! it answers the object or a success `Status`, as the real server does for that resource.

use serde_json::Value;

use super::changes::remove;
use super::object::{meta_str, name, namespace, present};
use super::{State, Written};
use crate::embedded_api::call::Call;
use crate::embedded_api::status::{self, Status};

pub(super) fn delete(state: &mut State, call: &Call) -> Result<Written, Status> {
    let (ns, name) = (namespace(call)?, name(call)?);
    let resource = call.resource;
    let key = (resource, ns.to_owned(), name.to_owned());
    let old = state
        .objects
        .get(&key)
        .cloned()
        .ok_or_else(|| Status::not_found(resource, name))?;
    check_preconditions(call, &old)?;
    if !call.dry_run {
        // A delete is a write: the global resourceVersion moves on.
        remove(state, key);
    }
    let body = if resource.delete_returns_object() {
        present(resource, &call.version, old.clone())
    } else {
        status::delete_success(resource, name, meta_str(&old, "uid"))
    };
    Ok(Written {
        body,
        object: Some(old),
        created: false,
    })
}

/// `DeleteOptions.preconditions`: the delete only happens if uid and resourceVersion match.
fn check_preconditions(call: &Call, old: &Value) -> Result<(), Status> {
    let preconditions = call.body.as_ref().map(|b| &b["preconditions"]);
    let Some(pre) = preconditions.filter(|p| p.is_object()) else {
        return Ok(());
    };
    for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
        if let Some(want) = pre[field].as_str() {
            let have = meta_str(old, field);
            if want != have {
                return Err(Status::precondition_failed(format!(
                    "Precondition failed: {label} in precondition: {want}, {label} in object meta: {have}"
                )));
            }
        }
    }
    Ok(())
}
