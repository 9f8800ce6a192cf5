//! Creates: POST with the real server's checks, and seeding, which stores an object as
//! given for test and demo set-up.
//!
//! Design rule: the server sets uid, creationTimestamp and resourceVersion, and a create
//! resets what the resource's create strategy resets (generation, and the status where a
//! status subresource owns it); a seed stores the object as given, status included, with
//! only the server's fields set.

use serde_json::{json, Value};

use super::changes::{next_version, put};
use super::object::{decode, meta_str, namespace, present, remove_meta, set_meta};
use super::{State, Written};
use crate::embedded_api::call::Call;
use crate::embedded_api::ids::{now_time, random_suffix, random_uid};
use crate::embedded_api::resource::Resource;
use crate::embedded_api::status::Status;
use crate::embedded_api::validate;

pub(super) fn create(state: &mut State, call: &Call) -> Result<Written, Status> {
    let ns = namespace(call)?;
    let mut object = decode(call, call.body.as_ref())?;
    let resource = call.resource;
    match meta_str(&object, "namespace") {
        "" => set_meta(&mut object, "namespace", ns.into()),
        given if given != ns => return Err(Status::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {}
    }
    if meta_str(&object, "name").is_empty() && !meta_str(&object, "generateName").is_empty() {
        let generated = format!("{}{}", meta_str(&object, "generateName"), random_suffix());
        set_meta(&mut object, "name", generated.into());
    }
    let name = meta_str(&object, "name").to_owned();
    let causes = validate::all(resource, &object, true);
    if !causes.is_empty() {
        return Err(Status::invalid(resource, &name, causes));
    }
    if !meta_str(&object, "resourceVersion").is_empty() {
        return Err(Status::create_with_resource_version());
    }
    let key = (resource, ns.to_owned(), name.clone());
    if state.objects.contains_key(&key) {
        return Err(Status::already_exists(resource, &name));
    }
    prepare_create(resource, &mut object);
    set_meta(&mut object, "uid", random_uid().into());
    set_meta(&mut object, "creationTimestamp", now_time());
    if !call.dry_run {
        set_meta(&mut object, "resourceVersion", next_version(state).into());
        put(state, key, object.clone());
    }
    Ok(Written {
        body: present(resource, &call.version, object.clone()),
        object: Some(object),
        created: true,
    })
}

/// What the create strategies of the real resources reset.
fn prepare_create(resource: Resource, object: &mut Value) {
    for field in [
        "generation",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        remove_meta(object, field);
    }
    if resource.tracks_generation() {
        set_meta(object, "generation", 1.into());
    }
    if let Some(o) = object.as_object_mut() {
        match resource {
            Resource::Pods => {
                o.insert("status".to_owned(), json!({"phase": "Pending"}));
            }
            r if r.has_status_subresource() => {
                o.remove("status");
            }
            _ => {}
        }
    }
}

pub(super) fn seed(
    state: &mut State,
    resource: Resource,
    ns: &str,
    mut object: Value,
) -> Result<Written, Status> {
    let version = resource.preferred_version();
    object["apiVersion"] = Value::String(resource.api_version(version));
    object["kind"] = Value::String(resource.kind().to_owned());
    let mut object = resource
        .normalize(object)
        .map_err(|e| Status::bad_request(format!("error decoding object: {e}")))?;
    set_meta(&mut object, "namespace", ns.into());
    let name = meta_str(&object, "name").to_owned();
    let causes = validate::metadata(&object, true);
    if !causes.is_empty() {
        return Err(Status::invalid(resource, &name, causes));
    }
    let key = (resource, ns.to_owned(), name);
    if let Some(old) = state.objects.get(&key) {
        for field in ["uid", "creationTimestamp"] {
            set_meta(&mut object, field, old["metadata"][field].clone());
        }
    } else {
        set_meta(&mut object, "uid", random_uid().into());
        set_meta(&mut object, "creationTimestamp", now_time());
    }
    if resource.tracks_generation() && object["metadata"]["generation"].is_null() {
        set_meta(&mut object, "generation", 1.into());
    }
    set_meta(&mut object, "resourceVersion", next_version(state).into());
    put(state, key, object.clone());
    Ok(Written {
        body: present(resource, version, object.clone()),
        object: Some(object),
        created: true,
    })
}
