//! Updates: PUT and PATCH (merge, JSON, and strategic merge without lists) of an existing
//! object, and the create a PUT may turn into.
//!
//! Design rule: both verbs end in one shared tail, `store_update`: optimistic concurrency on
//! the resourceVersion, immutable and server-owned fields kept, validation, and the
//! generation, where tracked, bumped only when more than metadata and status changed. A
//! write that changes nothing answers the stored object and does not move the
//! resourceVersion.

use serde_json::Value;

use super::changes::{next_version, put};
use super::create::create;
use super::object::{decode, meta_str, name, namespace, present, remove_meta, set_meta};
use super::{Key, State, Written};
use crate::embedded_api::call::{Call, PatchType, Verb};
use crate::embedded_api::patch;
use crate::embedded_api::resource::Resource;
use crate::embedded_api::status::{Status, StatusCause};
use crate::embedded_api::validate;

/// Resources a PUT may create when the object does not exist yet.
fn allows_create_on_update(resource: Resource) -> bool {
    matches!(resource, Resource::Leases | Resource::Events)
}

/// Resources a PUT without resourceVersion may overwrite.
fn allows_unconditional_update(resource: Resource) -> bool {
    matches!(
        resource,
        Resource::Events | Resource::Pods | Resource::Deployments
    )
}

pub(super) fn update(state: &mut State, call: &Call) -> Result<Written, Status> {
    let (ns, name) = (namespace(call)?, name(call)?);
    let object = decode(call, call.body.as_ref())?;
    check_identity(&object, ns, name)?;
    let key = (call.resource, ns.to_owned(), name.to_owned());
    if !state.objects.contains_key(&key) {
        if !allows_create_on_update(call.resource) {
            return Err(Status::not_found(call.resource, name));
        }
        let mut object = object;
        remove_meta(&mut object, "resourceVersion");
        let create_call = Call {
            verb: Verb::Create,
            body: Some(present(call.resource, &call.version, object)),
            ..call.clone()
        };
        return create(state, &create_call);
    }
    store_update(state, call, key, object, true)
}

/// The body's name and namespace must match the URL (a 400 on the real server).
fn check_identity(object: &Value, ns: &str, name: &str) -> Result<(), Status> {
    let given = meta_str(object, "name");
    if given != name {
        return Err(Status::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    let given_ns = meta_str(object, "namespace");
    if !given_ns.is_empty() && given_ns != ns {
        return Err(Status::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// Shared tail of update and patch: optimistic concurrency, immutable and server-owned
/// fields, validation, generation, storage.
fn store_update(
    state: &mut State,
    call: &Call,
    key: Key,
    mut object: Value,
    from_put: bool,
) -> Result<Written, Status> {
    let resource = call.resource;
    let name = key.2.clone();
    let Some(old) = state.objects.get(&key).cloned() else {
        return Err(Status::not_found(resource, &name));
    };
    let current = meta_str(&old, "resourceVersion").to_owned();
    let given = meta_str(&object, "resourceVersion").to_owned();
    if given.is_empty() {
        if from_put && !allows_unconditional_update(resource) {
            return Err(Status::invalid_resource_version(resource, &name));
        }
    } else if given != current {
        return Err(Status::conflict(resource, &name));
    }
    set_meta(&mut object, "namespace", key.1.clone().into());
    match meta_str(&object, "uid") {
        "" => set_meta(&mut object, "uid", old["metadata"]["uid"].clone()),
        uid if uid != meta_str(&old, "uid") => {
            let v = object["metadata"]["uid"].clone();
            return Err(Status::invalid(
                resource,
                &name,
                vec![StatusCause::new(
                    "FieldValueInvalid",
                    "metadata.uid",
                    format!("Invalid value: {v}: field is immutable"),
                )],
            ));
        }
        _ => {}
    }
    set_meta(
        &mut object,
        "creationTimestamp",
        old["metadata"]["creationTimestamp"].clone(),
    );
    remove_meta(&mut object, "generation");
    if !old["metadata"]["generation"].is_null() {
        set_meta(
            &mut object,
            "generation",
            old["metadata"]["generation"].clone(),
        );
    }
    if resource.has_status_subresource() {
        if let Some(o) = object.as_object_mut() {
            match old.get("status") {
                Some(s) => o.insert("status".to_owned(), s.clone()),
                None => o.remove("status"),
            };
        }
    }
    let causes = validate::all(resource, &object, false);
    if !causes.is_empty() {
        return Err(Status::invalid(resource, &name, causes));
    }
    set_meta(&mut object, "resourceVersion", current.clone().into());
    if object == old {
        // A no-op write does not bump the resourceVersion on the real server either.
        return Ok(Written {
            body: present(resource, &call.version, old.clone()),
            object: Some(old),
            created: false,
        });
    }
    if resource.tracks_generation() && without_meta(&object) != without_meta(&old) {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        set_meta(&mut object, "generation", generation.into());
    }
    if !call.dry_run {
        set_meta(&mut object, "resourceVersion", next_version(state).into());
        put(state, key, object.clone());
    }
    Ok(Written {
        body: present(resource, &call.version, object.clone()),
        object: Some(object),
        created: false,
    })
}

/// The object without metadata and status: what `generation` tracks.
fn without_meta(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
    }
    o
}

pub(super) fn patch_object(state: &mut State, call: &Call) -> Result<Written, Status> {
    let (ns, name) = (namespace(call)?, name(call)?);
    let resource = call.resource;
    let patch_type = call.patch_type.unwrap_or(PatchType::Merge);
    if patch_type == PatchType::Apply {
        return Err(Status::unsupported_media_type());
    }
    let patch_doc = call
        .body
        .as_ref()
        .ok_or_else(|| Status::bad_request("the request has no body"))?;
    if patch_type == PatchType::StrategicMerge
        && (resource.is_custom() || contains_array(patch_doc))
    {
        // Custom resources have no Go struct to take merge keys from; for built-in types
        // only patches without lists are served, where strategic merge equals merge patch.
        return Err(Status::unsupported_media_type());
    }
    let key = (resource, ns.to_owned(), name.to_owned());
    let Some(old) = state.objects.get(&key) else {
        return Err(Status::not_found(resource, name));
    };
    let mut doc = present(resource, &call.version, old.clone());
    match patch_type {
        PatchType::Json => {
            // A `test` compares the bytes that were sent, so use them when there are any.
            let text = call
                .raw_body
                .clone()
                .unwrap_or_else(|| patch_doc.to_string());
            patch::json_patch(&mut doc, &text)?
        }
        _ => {
            if !patch_doc.is_object() {
                return Err(Status::bad_request(
                    "the patch must be a JSON object for this patch type",
                ));
            }
            patch::merge_patch(&mut doc, patch_doc);
        }
    }
    // The patched document is decoded like a request body; a failure there is a 422.
    let patched_call = Call {
        body: Some(doc.clone()),
        ..call.clone()
    };
    let object = decode(&patched_call, Some(&doc)).map_err(|s| {
        Status::invalid(
            resource,
            name,
            vec![StatusCause::new(
                "FieldValueInvalid",
                "patch",
                format!("Invalid value: {}: {}", doc, s.message),
            )],
        )
    })?;
    check_identity(&object, ns, name)?;
    store_update(state, call, key, object, false)
}

fn contains_array(v: &Value) -> bool {
    match v {
        Value::Array(_) => true,
        Value::Object(m) => m.values().any(contains_array),
        _ => false,
    }
}
