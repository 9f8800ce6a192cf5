//! The object store and the verbs, with the real server's semantics. The HTTP layer is a
//! thin wrapper over [`Store::call`]; watches read the log of stored changes it keeps.
//!
//! Design rule: every stored write bumps the global resourceVersion by one and logs one
//! [`Change`]; both logs (writes for tests, changes for watches) are bounded.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::call::{Call, PatchType, Verb};
use super::ids::{now_time, random_suffix, random_uid};
use super::patch;
use super::resource::Resource;
use super::selector::Selector;
use super::status::{self, Status, StatusCause};
use super::validate;

/// How many write records are kept; older ones are dropped so memory stays bounded.
const HISTORY_LIMIT: usize = 10_000;

/// How many stored changes are kept for watches, all resources together (the real server
/// keeps a window per resource, 100 events and up). A watch from an older resourceVersion
/// is told `410 Expired` and must list again.
pub const CHANGE_LIMIT: usize = 1_000;

/// One write (create, update, patch, delete), successful or not.
#[derive(Debug, Clone)]
pub struct WriteRecord {
    /// Position among all writes, from 1, without gaps.
    pub seq: u64,
    /// When it was answered (tokio time, so it follows a paused clock).
    pub at: Instant,
    /// Wall-clock time of the answer.
    pub wall: SystemTime,
    /// The verb.
    pub verb: Verb,
    /// The resource.
    pub resource: Resource,
    /// The namespace.
    pub namespace: String,
    /// The object name (the generated one, for a successful `generateName` create).
    pub name: String,
    /// `User-Agent` of the caller, if any.
    pub user_agent: Option<String>,
    /// `fieldManager` query parameter, if any.
    pub field_manager: Option<String>,
    /// resourceVersion after the write (for a failure, the stored one, if any).
    pub resource_version: Option<String>,
    /// The object after the write (before it, for a delete); `None` if there is none.
    pub object: Option<Value>,
    /// HTTP status code of the answer.
    pub code: u16,
    /// `dryRun=All`: nothing was stored.
    pub dry_run: bool,
}

impl WriteRecord {
    /// True if the write was answered with a 2xx.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

type Key = (Resource, String, String);

/// One stored write, as watches see it.
#[derive(Debug)]
pub struct Change {
    /// The resourceVersion the write produced.
    pub resource_version: u64,
    /// The resource written.
    pub resource: Resource,
    /// The namespace written in.
    pub namespace: String,
    /// The stored object after the write; `None` for a delete.
    pub object: Option<Value>,
    /// The stored object before the write; `None` for a create.
    pub previous: Option<Value>,
}

struct State {
    objects: BTreeMap<Key, Value>,
    resource_version: u64,
    history: VecDeque<WriteRecord>,
    next_seq: u64,
    /// The last [`CHANGE_LIMIT`] changes, oldest first; shared with watches reading them.
    change_log: VecDeque<Arc<Change>>,
    /// The resourceVersion of the newest change dropped from `change_log` (0: none yet).
    forgotten: u64,
}

/// All objects of all served resources, one global resourceVersion counter, and the
/// write history.
pub struct Store {
    state: Mutex<State>,
    changes: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                resource_version: 0,
                history: VecDeque::new(),
                next_seq: 1,
                change_log: VecDeque::new(),
                forgotten: 0,
            }),
            changes: watch::channel(0).0,
        }
    }
}

/// The answer of a call: the object or list, or the failure `Status`, plus the success code.
pub struct Answer {
    /// 200, or 201 for a create.
    pub code: u16,
    /// The body or the failure.
    pub result: Result<Value, Status>,
}

impl Store {
    /// Receives the latest resourceVersion after every stored write.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A copy of the write history, oldest first.
    pub fn history(&self) -> Vec<WriteRecord> {
        self.state.lock().history.iter().cloned().collect()
    }

    /// Runs one call and records it in the history if it is a write.
    pub fn call(&self, call: Call) -> Answer {
        let mut state = self.state.lock();
        let outcome = match call.verb {
            Verb::Get => get(&state, &call),
            Verb::List => list(&state, &call),
            // A watch is a stream: only the HTTP layer serves it, from `changes_since`.
            Verb::Watch => Err(Status::method_not_allowed()),
            Verb::Create => create(&mut state, &call),
            Verb::Update => update(&mut state, &call),
            Verb::Patch => patch_object(&mut state, &call),
            Verb::Delete => delete(&mut state, &call),
        };
        let code = match (&outcome, call.verb) {
            (Ok(_), Verb::Create) | (Ok(Written { created: true, .. }), _) => 201,
            (Ok(_), _) => 200,
            (Err(s), _) => s.code,
        };
        if call.verb.is_write() {
            record(&mut state, &call, &outcome, code);
            if outcome.is_ok() && !call.dry_run {
                self.changes.send_replace(state.resource_version);
            }
        }
        Answer {
            code,
            result: outcome.map(|w| w.body),
        }
    }

    /// The objects of `resource` in `namespace` (every namespace for `None`), by namespace
    /// and name, and the resourceVersion they are current at.
    pub fn snapshot(&self, resource: Resource, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let state = self.state.lock();
        let objects = state
            .objects
            .iter()
            .filter(|((r, ns, _), _)| *r == resource && namespace.is_none_or(|want| want == ns))
            .map(|(_, o)| o.clone())
            .collect();
        (objects, state.resource_version)
    }

    /// Every change after `resource_version`, oldest first; `Err` with the newest forgotten
    /// version if some of them are no longer kept.
    pub fn changes_since(&self, resource_version: u64) -> Result<Vec<Arc<Change>>, u64> {
        let state = self.state.lock();
        if resource_version < state.forgotten {
            return Err(state.forgotten);
        }
        let first = state
            .change_log
            .partition_point(|c| c.resource_version <= resource_version);
        Ok(state.change_log.range(first..).cloned().collect())
    }

    /// Records a write that an injected fault answered (`code` 0: the connection was dropped).
    pub(crate) fn record_injected(&self, call: &Call, code: u16) {
        let mut state = self.state.lock();
        let failure = Err(Status::internal("injected fault"));
        record(&mut state, call, &failure, code);
    }

    /// Stores `object` as given (status included, no strategy applied), creating or
    /// overwriting it; server fields (uid, creationTimestamp, resourceVersion) are set.
    /// For test and demo set-up; recorded in the history as a `create` without user agent.
    pub fn seed(&self, resource: Resource, object: Value) -> Result<Value, Status> {
        let mut state = self.state.lock();
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let call = Call::new(Verb::Create, resource, Some(&namespace)).body(object.clone());
        let outcome = seed(&mut state, resource, &namespace, object);
        let code = outcome.as_ref().map_or_else(|s| s.code, |_| 201);
        record(&mut state, &call, &outcome, code);
        if outcome.is_ok() {
            self.changes.send_replace(state.resource_version);
        }
        outcome.map(|w| w.body)
    }
}

/// A successful call: what to answer, and what to record.
struct Written {
    body: Value,
    /// For writes: the stored object (before it, for a delete).
    object: Option<Value>,
    created: bool,
}

impl Written {
    fn read(body: Value) -> Written {
        Written {
            body,
            object: None,
            created: false,
        }
    }
}

fn record(state: &mut State, call: &Call, outcome: &Result<Written, Status>, code: u16) {
    let key_name = call.name.clone().unwrap_or_default();
    let (object, name) = match outcome {
        Ok(w) => {
            let name = w
                .object
                .as_ref()
                .and_then(|o| o["metadata"]["name"].as_str())
                .map_or(key_name, str::to_owned);
            (w.object.clone(), name)
        }
        Err(_) => (None, key_name),
    };
    let namespace = call.namespace.clone().unwrap_or_default();
    let resource_version = match &object {
        Some(o) => o["metadata"]["resourceVersion"].as_str().map(str::to_owned),
        None => state
            .objects
            .get(&(call.resource, namespace.clone(), name.clone()))
            .and_then(|o| o["metadata"]["resourceVersion"].as_str())
            .map(str::to_owned),
    };
    let seq = state.next_seq;
    state.next_seq += 1;
    if state.history.len() == HISTORY_LIMIT {
        state.history.pop_front();
    }
    state.history.push_back(WriteRecord {
        seq,
        at: Instant::now(),
        wall: SystemTime::now(),
        verb: call.verb,
        resource: call.resource,
        namespace,
        name,
        user_agent: call.user_agent.clone(),
        field_manager: call.field_manager.clone(),
        resource_version,
        object,
        code,
        dry_run: call.dry_run,
    });
}

/// The object as the caller's version shows it.
pub fn present(resource: Resource, version: &str, mut object: Value) -> Value {
    object["apiVersion"] = Value::String(resource.api_version(version));
    object["kind"] = Value::String(resource.kind().to_owned());
    object
}

fn namespace(call: &Call) -> Result<&str, Status> {
    call.namespace
        .as_deref()
        .ok_or_else(|| Status::bad_request("a namespace is required for this request"))
}

fn name(call: &Call) -> Result<&str, Status> {
    call.name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Status::bad_request("a name is required for this request"))
}

fn get(state: &State, call: &Call) -> Result<Written, Status> {
    let (ns, name) = (namespace(call)?, name(call)?);
    state
        .objects
        .get(&(call.resource, ns.to_owned(), name.to_owned()))
        .map(|o| Written::read(present(call.resource, &call.version, o.clone())))
        .ok_or_else(|| Status::not_found(call.resource, name))
}

fn list(state: &State, call: &Call) -> Result<Written, Status> {
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

/// Decodes a request body as the real server does: it must be an object of the right
/// apiVersion and kind, then typed resources go through their Go type.
fn decode(call: &Call, body: Option<&Value>) -> Result<Value, Status> {
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

fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object["metadata"][field].as_str().unwrap_or_default()
}

fn set_meta(object: &mut Value, field: &str, value: Value) {
    if !object["metadata"].is_object() {
        object["metadata"] = Value::Object(Map::new());
    }
    object["metadata"][field] = value;
}

fn remove_meta(object: &mut Value, field: &str) {
    if let Some(m) = object["metadata"].as_object_mut() {
        m.remove(field);
    }
}

fn next_version(state: &mut State) -> String {
    state.resource_version += 1;
    state.resource_version.to_string()
}

/// Stores `object` (already at the new resourceVersion) and logs the change.
fn put(state: &mut State, key: Key, object: Value) {
    let previous = state.objects.insert(key.clone(), object.clone());
    log_change(state, key, Some(object), previous);
}

/// Removes the object at `key`, moves the resourceVersion on and logs the change.
fn remove(state: &mut State, key: Key) {
    let previous = state.objects.remove(&key);
    next_version(state);
    log_change(state, key, None, previous);
}

fn log_change(state: &mut State, key: Key, object: Option<Value>, previous: Option<Value>) {
    if state.change_log.len() == CHANGE_LIMIT {
        if let Some(oldest) = state.change_log.pop_front() {
            state.forgotten = oldest.resource_version;
        }
    }
    let (resource, namespace, _) = key;
    state.change_log.push_back(Arc::new(Change {
        resource_version: state.resource_version,
        resource,
        namespace,
        object,
        previous,
    }));
}

fn create(state: &mut State, call: &Call) -> Result<Written, Status> {
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

fn seed(
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

fn update(state: &mut State, call: &Call) -> Result<Written, Status> {
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

fn patch_object(state: &mut State, call: &Call) -> Result<Written, Status> {
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

fn delete(state: &mut State, call: &Call) -> Result<Written, Status> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "shop";

    fn call(verb: Verb, resource: Resource, name: Option<&str>, body: Option<Value>) -> Call {
        let mut c = Call::new(verb, resource, Some(NS));
        c.name = name.map(str::to_owned);
        c.body = body;
        c
    }

    fn vs(status: Value, weight: u32) -> Value {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": NS},
            "spec": {"http": [{"route": [{"destination": {"host": "reviews"}, "weight": weight}]}]},
            "status": status})
    }

    #[test]
    fn generate_name_and_dry_run() {
        let store = Store::default();
        let mut c = call(
            Verb::Create,
            Resource::Leases,
            None,
            Some(
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"generateName": "member-"}}),
            ),
        );
        c.dry_run = true;
        let answer = store.call(c.clone());
        let obj = answer.result.unwrap();
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        let suffix = name.strip_prefix("member-").unwrap();
        assert_eq!(suffix.len(), 5);
        assert!(suffix
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
        assert!(obj["metadata"].get("resourceVersion").is_none());
        assert_eq!(answer.code, 201);
        let get = store.call(call(Verb::Get, Resource::Leases, Some(&name), None));
        assert_eq!(get.result.unwrap_err().code, 404);
        c.dry_run = false;
        let stored = store.call(c).result.unwrap();
        assert_eq!(stored["metadata"]["resourceVersion"], "1");
        assert!(store.history()[0].dry_run && !store.history()[1].dry_run);
    }

    #[test]
    fn status_is_kept_and_generation_follows_spec() {
        let store = Store::default();
        let seeded = store
            .seed(
                Resource::VirtualServices,
                vs(json!({"observedGeneration": 1}), 10),
            )
            .unwrap();
        assert_eq!(seeded["metadata"]["generation"], 1);
        let rv = seeded["metadata"]["resourceVersion"].clone();

        // Only the status differs: the write is a no-op, as the status subresource owns it.
        let mut same = vs(json!({"observedGeneration": 9}), 10);
        same["metadata"]["resourceVersion"] = rv.clone();
        let put = store.call(call(
            Verb::Update,
            Resource::VirtualServices,
            Some("reviews"),
            Some(same),
        ));
        let put = put.result.unwrap();
        assert_eq!(put["metadata"]["resourceVersion"], rv);
        assert_eq!(put["status"]["observedGeneration"], 1);

        let mut changed = vs(Value::Null, 0);
        changed["metadata"]["resourceVersion"] = rv;
        let put = store.call(call(
            Verb::Update,
            Resource::VirtualServices,
            Some("reviews"),
            Some(changed),
        ));
        let put = put.result.unwrap();
        assert_eq!(put["metadata"]["generation"], 2);
        assert_eq!(put["status"]["observedGeneration"], 1);
        assert_eq!(put["metadata"]["uid"], seeded["metadata"]["uid"]);
    }

    #[test]
    fn identity_checks_on_update() {
        let store = Store::default();
        let seeded = store
            .seed(Resource::VirtualServices, vs(Value::Null, 10))
            .unwrap();
        let mut other = seeded.clone();
        other["metadata"]["name"] = json!("other");
        let renamed = store.call(call(
            Verb::Update,
            Resource::VirtualServices,
            Some("reviews"),
            Some(other),
        ));
        assert_eq!(renamed.result.unwrap_err().code, 400);
        let mut uid = seeded.clone();
        uid["metadata"]["uid"] = json!("not-the-uid");
        let err = store
            .call(call(
                Verb::Update,
                Resource::VirtualServices,
                Some("reviews"),
                Some(uid),
            ))
            .result
            .unwrap_err();
        assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
        let mut wrong_version = seeded;
        wrong_version["apiVersion"] = json!("networking.istio.io/v1beta1");
        let err = store
            .call(call(
                Verb::Update,
                Resource::VirtualServices,
                Some("reviews"),
                Some(wrong_version),
            ))
            .result
            .unwrap_err();
        assert_eq!(err.code, 400);
    }

    #[test]
    fn delete_honours_preconditions_and_moves_the_version() {
        let store = Store::default();
        let seeded = store
            .seed(Resource::VirtualServices, vs(Value::Null, 10))
            .unwrap();
        let mut changes = store.subscribe();
        changes.mark_unchanged();
        let stale = json!({"preconditions": {"resourceVersion": "0"}});
        let err = store
            .call(call(
                Verb::Delete,
                Resource::VirtualServices,
                Some("reviews"),
                Some(stale),
            ))
            .result
            .unwrap_err();
        assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
        assert!(!changes.has_changed().unwrap());
        let ok = json!({"preconditions": {"uid": seeded["metadata"]["uid"]}});
        let deleted = store
            .call(call(
                Verb::Delete,
                Resource::VirtualServices,
                Some("reviews"),
                Some(ok),
            ))
            .result
            .unwrap();
        assert_eq!(
            (&deleted["kind"], &deleted["status"]),
            (&json!("Status"), &json!("Success"))
        );
        assert!(changes.has_changed().unwrap());
        assert_eq!(*changes.borrow_and_update(), 2);
        let history = store.history();
        assert_eq!(
            history.last().unwrap().object.as_ref().unwrap()["metadata"]["name"],
            "reviews"
        );
    }

    #[test]
    fn pods_start_pending_unless_seeded() {
        let store = Store::default();
        let pod = |name: &str| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
                "spec": {"containers": [{"name": "app", "image": "app"}]},
                "status": {"phase": "Running"}})
        };
        let created = store.call(call(Verb::Create, Resource::Pods, None, Some(pod("a"))));
        assert_eq!(
            created.result.unwrap()["status"],
            json!({"phase": "Pending"})
        );
        let seeded = store.seed(Resource::Pods, pod("b")).unwrap();
        assert_eq!(seeded["status"]["phase"], "Running");
        let mut list = Call::new(Verb::List, Resource::Pods, None);
        list.label_selector = Some("app".into());
        assert_eq!(store.call(list).result.unwrap()["items"], json!([]));
    }

    #[test]
    fn every_stored_write_logs_one_change_and_the_log_is_bounded() {
        let store = Store::default();
        let lease = |holder: &str| json!({"metadata": {"name": "a", "namespace": NS}, "spec": {"holderIdentity": holder}});
        store.seed(Resource::Leases, lease("x")).unwrap();
        store.seed(Resource::Leases, lease("y")).unwrap();
        let mut dry = call(
            Verb::Create,
            Resource::Leases,
            None,
            Some(
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "b"}}),
            ),
        );
        dry.dry_run = true;
        store.call(dry).result.unwrap();
        store
            .call(call(Verb::Delete, Resource::Leases, Some("a"), None))
            .result
            .unwrap();
        let holder = |o: &Option<Value>| {
            o.as_ref()
                .map(|o| o["spec"]["holderIdentity"].as_str().unwrap().to_owned())
        };
        let log: Vec<_> = store
            .changes_since(0)
            .unwrap()
            .iter()
            .map(|c| (c.resource_version, holder(&c.object), holder(&c.previous)))
            .collect();
        let some = |h: &str| Some(h.to_owned());
        assert_eq!(
            log,
            [
                (1, some("x"), None),
                (2, some("y"), some("x")),
                (3, None, some("y")),
            ]
        );
        assert_eq!(store.changes_since(2).unwrap().len(), 1);
        assert!(store.changes_since(3).unwrap().is_empty());
        assert!(store.changes_since(99).unwrap().is_empty());

        for _ in 0..CHANGE_LIMIT {
            store.seed(Resource::Leases, lease("z")).unwrap();
        }
        assert_eq!(store.changes_since(2).unwrap_err(), 3);
        let kept = store.changes_since(3).unwrap();
        assert_eq!(kept.len(), CHANGE_LIMIT);
        assert_eq!(kept[0].resource_version, 4);
    }

    #[test]
    fn history_is_bounded() {
        let store = Store::default();
        let nameless =
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {}});
        for _ in 0..=HISTORY_LIMIT {
            let answer = store.call(call(
                Verb::Create,
                Resource::Leases,
                None,
                Some(nameless.clone()),
            ));
            assert_eq!(answer.code, 422);
        }
        let history = store.history();
        assert_eq!(history.len(), HISTORY_LIMIT);
        assert_eq!(history[0].seq, 2);
    }
}
