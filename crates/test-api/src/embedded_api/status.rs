//! `Status` bodies, shaped and worded like the ones kube-apiserver sends.

use serde_json::{json, Map, Value};

use super::resource::Resource;

const METHOD_NOT_ALLOWED: &str = "the server does not allow this method on the requested resource";

/// A failed (or, for deletes, successful) API answer: the `meta.k8s.io/v1` `Status` kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// HTTP status code, e.g. 409.
    pub code: u16,
    /// Machine-readable reason, e.g. `Conflict`, `AlreadyExists`, `Invalid`.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// `details`, when the real server fills it in.
    pub details: Option<Box<StatusDetails>>,
}

/// The `details` of a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusDetails {
    /// Name of the object concerned.
    pub name: String,
    /// API group of the resource (empty for core).
    pub group: String,
    /// The resource plural (the real server puts the resource, not the kind, here).
    pub kind: String,
    /// UID of the object, when known.
    pub uid: String,
    /// Field-level causes.
    pub causes: Vec<StatusCause>,
    /// Seconds the client should wait before retrying.
    pub retry_after_seconds: Option<u32>,
}

/// One field-level cause of an `Invalid` status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCause {
    /// e.g. `FieldValueRequired`.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// Path of the offending field, e.g. `metadata.name`.
    pub field: String,
}

impl StatusCause {
    /// A cause for `field`.
    pub fn new(reason: &str, field: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_owned(),
            message: message.into(),
            field: field.to_owned(),
        }
    }
}

impl Status {
    fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_owned(),
            message: message.into(),
            details: None,
        }
    }

    fn with_object(mut self, resource: Resource, name: &str) -> Self {
        self.details = Some(Box::new(StatusDetails {
            name: name.to_owned(),
            group: resource.group().to_owned(),
            kind: resource.plural().to_owned(),
            ..StatusDetails::default()
        }));
        self
    }

    /// 404 `NotFound` for `name`.
    pub fn not_found(resource: Resource, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", resource.qualified()),
        )
        .with_object(resource, name)
    }

    /// 409 `AlreadyExists` on create.
    pub fn already_exists(resource: Resource, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", resource.qualified()),
        )
        .with_object(resource, name)
    }

    /// 409 `Conflict` on a stale resourceVersion.
    pub fn conflict(resource: Resource, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                resource.qualified()
            ),
        )
        .with_object(resource, name)
    }

    /// 422 `Invalid` listing field causes, worded like the real validation errors.
    pub fn invalid(resource: Resource, name: &str, causes: Vec<StatusCause>) -> Self {
        let list: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let message = match list.as_slice() {
            [one] => format!("{} \"{name}\" is invalid: {one}", resource.qualified_kind()),
            _ => format!(
                "{} \"{name}\" is invalid: [{}]",
                resource.qualified_kind(),
                list.join(", ")
            ),
        };
        let mut status = Self::new(422, "Invalid", message).with_object(resource, name);
        if let Some(d) = status.details.as_mut() {
            d.kind = resource.kind().to_owned();
            d.group = resource.validation_group().to_owned();
            d.causes = causes;
        }
        status
    }

    /// 422 for an update that does not carry a resourceVersion. The real server names the
    /// resource (not the kind) in this one message.
    pub fn invalid_resource_version(resource: Resource, name: &str) -> Self {
        let mut status = Self::new(
            422,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: metadata.resourceVersion: Invalid value: 0x0: \
                 must be specified for an update",
                resource.qualified()
            ),
        )
        .with_object(resource, name);
        if let Some(d) = status.details.as_mut() {
            d.causes = vec![StatusCause::new(
                "FieldValueInvalid",
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            )];
        }
        status
    }

    /// 409 `Conflict` for a delete whose preconditions do not hold.
    pub fn precondition_failed(message: String) -> Self {
        Self::new(409, "Conflict", message)
    }

    /// 422 `Invalid` with empty details and a fixed message: what any failed JSON patch
    /// operation gets (a failed `test`, a missing path, an index out of range).
    pub fn patch_failed() -> Self {
        let mut status = Self::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
        );
        status.details = Some(Box::default());
        status
    }

    /// 500 for a create that carries a resourceVersion: the real server sends no reason
    /// and no "Internal error occurred" prefix here.
    pub fn create_with_resource_version() -> Self {
        Self::new(
            500,
            "",
            "resourceVersion should not be set on objects to be created",
        )
    }

    /// 400 `BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 500 `InternalError`, e.g. for a create that carries a resourceVersion.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// 410 `Expired`: a watch from a resourceVersion older than the kept history, worded as
    /// the real watch cache words it, with the newest version no longer kept.
    pub fn expired(resource_version: u64, forgotten: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {resource_version} ({forgotten})"),
        )
    }

    /// 500 without a reason for a watch whose resourceVersion is not a number: the storage
    /// layer's parse error, which the real server passes through unwrapped.
    pub fn unparsable_resource_version(given: &str) -> Self {
        let why = if !given.is_empty() && given.bytes().all(|b| b.is_ascii_digit()) {
            "value out of range"
        } else {
            "invalid syntax"
        };
        Self::new(
            500,
            "",
            format!(
                "resourceVersion: Invalid value: {given:?}: strconv.ParseUint: parsing {given:?}: {why}"
            ),
        )
    }

    /// 405 `MethodNotAllowed`.
    pub fn method_not_allowed() -> Self {
        Self::new(405, "MethodNotAllowed", METHOD_NOT_ALLOWED)
    }

    /// 413 `RequestEntityTooLarge`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 415 `UnsupportedMediaType` for a patch type this resource does not take.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        )
    }

    /// 404 for a path that names no served resource.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// An injected failure with `code`, worded like the real server's answer for that code.
    pub fn injected(code: u16, verb: &str, resource: Resource, name: Option<&str>) -> Self {
        let target = match name {
            Some(n) => format!("{} \"{n}\"", resource.qualified()),
            None => resource.qualified(),
        };
        let (reason, message) = match code {
            401 => ("Unauthorized", "Unauthorized".to_owned()),
            403 => (
                "Forbidden",
                format!(
                    "{target} is forbidden: User \"system:serviceaccount:default:canary-guard\" \
                     cannot {verb} resource \"{}\" in API group \"{}\"",
                    resource.plural(),
                    resource.group()
                ),
            ),
            404 => ("NotFound", format!("{target} not found")),
            405 => ("MethodNotAllowed", METHOD_NOT_ALLOWED.to_owned()),
            409 => (
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {target}: the object has been modified; \
                     please apply your changes to the latest version and try again"
                ),
            ),
            429 => (
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later"
                    .to_owned(),
            ),
            503 => (
                "ServiceUnavailable",
                "the server is currently unable to handle the request".to_owned(),
            ),
            504 => (
                "Timeout",
                "the server was unable to return a response in the time allotted, but may still be processing the request".to_owned(),
            ),
            _ => (
                "InternalError",
                "Internal error occurred: injected failure".to_owned(),
            ),
        };
        let mut status = Self::new(code, reason, message);
        if name.is_some() || code == 403 {
            status = status.with_object(resource, name.unwrap_or(""));
        }
        status
    }

    /// Sets `details.retryAfterSeconds`.
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.details
            .get_or_insert_with(Box::default)
            .retry_after_seconds = Some(seconds);
        self
    }

    /// True for 409 `Conflict` (not `AlreadyExists`).
    pub fn is_conflict(&self) -> bool {
        self.reason == "Conflict"
    }

    /// The `Status` JSON body.
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            body["reason"] = Value::String(self.reason.clone());
        }
        if let Some(d) = &self.details {
            body["details"] = d.to_json();
        }
        body
    }
}

impl StatusDetails {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: &str| {
            if !v.is_empty() {
                m.insert(k.to_owned(), Value::String(v.to_owned()));
            }
        };
        put("name", &self.name);
        put("group", &self.group);
        put("kind", &self.kind);
        put("uid", &self.uid);
        if !self.causes.is_empty() {
            let causes = self
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            m.insert("causes".to_owned(), Value::Array(causes));
        }
        if let Some(s) = self.retry_after_seconds {
            m.insert("retryAfterSeconds".to_owned(), s.into());
        }
        Value::Object(m)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for Status {}

/// The `Status` a successful delete answers with, for resources that do not return the object.
pub fn delete_success(resource: Resource, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": resource.group(), "kind": resource.plural(), "uid": uid},
    })
}

#[cfg(test)]
mod tests;
