//! The object store and the verbs, with the real server's semantics. The HTTP layer is a
//! thin wrapper over [`Store::call`].

use std::collections::{BTreeMap, VecDeque};
use std::time::SystemTime;

use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::patch;
use super::resource::Resource;
use super::selector::Selector;
use super::status::{self, Status, StatusCause};
use super::validate;

/// How many write records are kept; older ones are dropped so memory stays bounded.
const HISTORY_LIMIT: usize = 10_000;

/// An API verb, named as Kubernetes RBAC names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// Read one object.
    Get,
    /// Read a collection.
    List,
    /// POST a new object.
    Create,
    /// PUT a whole object.
    Update,
    /// PATCH an object.
    Patch,
    /// DELETE an object.
    Delete,
}

impl Verb {
    /// The RBAC verb, e.g. `update`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }

    /// True for create, update, patch and delete.
    pub fn is_write(self) -> bool {
        !matches!(self, Verb::Get | Verb::List)
    }
}

/// The patch flavours, by their `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/apply-patch+yaml` (server-side apply; not served).
    Apply,
}

impl PatchType {
    /// The patch type named by a `Content-Type` header value (parameters ignored).
    pub fn from_content_type(value: &str) -> Option<PatchType> {
        match value.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/apply-patch+yaml" => Some(PatchType::Apply),
            _ => None,
        }
    }

    /// The `Content-Type` of this patch type.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Merge => "application/merge-patch+json",
            PatchType::Json => "application/json-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

/// One API call, as the HTTP layer or an in-process caller makes it.
#[derive(Debug, Clone)]
pub struct Call {
    /// What to do.
    pub verb: Verb,
    /// On which resource.
    pub resource: Resource,
    /// The API version the caller speaks; the answer's `apiVersion` follows it.
    pub version: String,
    /// Namespace; `None` only for a list across all namespaces.
    pub namespace: Option<String>,
    /// Object name (get, update, patch, delete).
    pub name: Option<String>,
    /// The object (create, update) or the patch document (patch).
    pub body: Option<Value>,
    /// The patch flavour (patch only).
    pub patch_type: Option<PatchType>,
    /// The `labelSelector` (list only).
    pub label_selector: Option<String>,
    /// The `fieldManager` query parameter.
    pub field_manager: Option<String>,
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
    /// The caller's `User-Agent`.
    pub user_agent: Option<String>,
}

impl Call {
    /// A call of `verb` on `resource` in `namespace`, at the preferred version.
    pub fn new(verb: Verb, resource: Resource, namespace: Option<&str>) -> Call {
        Call {
            verb,
            resource,
            version: resource.preferred_version().to_owned(),
            namespace: namespace.map(str::to_owned),
            name: None,
            body: None,
            patch_type: None,
            label_selector: None,
            field_manager: None,
            dry_run: false,
            user_agent: None,
        }
    }

    /// Sets the object name.
    pub fn name(mut self, name: &str) -> Call {
        self.name = Some(name.to_owned());
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: Value) -> Call {
        self.body = Some(body);
        self
    }
}

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

struct State {
    objects: BTreeMap<Key, Value>,
    resource_version: u64,
    history: VecDeque<WriteRecord>,
    next_seq: u64,
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
fn present(resource: Resource, version: &str, mut object: Value) -> Value {
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
        .map(|(_, o)| present(call.resource, &call.version, o.clone()))
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
    let mut object = call
        .resource
        .normalize(body.clone())
        .map_err(|e| Status::bad_request(format!("error decoding request body: {e}")))?;
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

fn now_time() -> Value {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let now = k8s_openapi::jiff::Timestamp::try_from(SystemTime::now()).unwrap_or_default();
    serde_json::to_value(Time(now)).unwrap_or(Value::Null)
}

fn next_version(state: &mut State) -> String {
    state.resource_version += 1;
    state.resource_version.to_string()
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
    let mut causes = validate::metadata(&object, true);
    causes.extend(validate::object(resource, &object));
    if !causes.is_empty() {
        return Err(Status::invalid(resource, &name, causes));
    }
    if !meta_str(&object, "resourceVersion").is_empty() {
        return Err(Status::internal(
            "resourceVersion should not be set on objects to be created",
        ));
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
        state.objects.insert(key, object.clone());
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
    state.objects.insert(key, object.clone());
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
    let mut causes = validate::metadata(&object, false);
    causes.extend(validate::object(resource, &object));
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
        state.objects.insert(key, object.clone());
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
        return Err(Status::unsupported_media_type(patch_type.content_type()));
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
        return Err(Status::unsupported_media_type(patch_type.content_type()));
    }
    let key = (resource, ns.to_owned(), name.to_owned());
    let Some(old) = state.objects.get(&key) else {
        return Err(Status::not_found(resource, name));
    };
    let mut doc = present(resource, &call.version, old.clone());
    match patch_type {
        PatchType::Json => patch::json_patch(&mut doc, patch_doc)?,
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
    let old = if call.dry_run {
        state.objects.get(&key).cloned()
    } else {
        state.objects.remove(&key)
    };
    let old = old.ok_or_else(|| Status::not_found(resource, name))?;
    if !call.dry_run {
        // A delete is a write: the global resourceVersion moves on.
        next_version(state);
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

/// A pseudo-random `u64` from std's randomly keyed SipHash; names and uids need
/// uniqueness, not secrecy.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// Five characters from the real name generator's alphabet (no vowels, no confusables).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = random_u64();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize];
            n /= ALPHABET.len() as u64;
            char::from(c)
        })
        .collect()
}

/// A random version-4 UUID.
fn random_uid() -> String {
    let (a, b) = (random_u64(), random_u64());
    let hi = (a & 0xffff_ffff_ffff_0fff) | 0x4000;
    let lo = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}
