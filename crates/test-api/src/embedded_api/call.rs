//! What a caller asks of the API: verb, resource, target and options.

use serde_json::Value;

use super::resource::Resource;

/// An API verb, named as Kubernetes RBAC names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// Read one object.
    Get,
    /// Read a collection.
    List,
    /// Follow a collection's changes (a list request with `watch=true`).
    Watch,
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
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }

    /// True for create, update, patch and delete.
    pub fn is_write(self) -> bool {
        !matches!(self, Verb::Get | Verb::List | Verb::Watch)
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
    /// Namespace; `None` only for a list or watch across all namespaces.
    pub namespace: Option<String>,
    /// Object name (get, update, patch, delete).
    pub name: Option<String>,
    /// The object (create, update) or the patch document (patch).
    pub body: Option<Value>,
    /// The body exactly as sent over HTTP (patch only): a JSON patch `test` compares its
    /// bytes. In process, the body is taken as serde_json writes it, as kube sends it.
    pub raw_body: Option<String>,
    /// The patch flavour (patch only).
    pub patch_type: Option<PatchType>,
    /// The `labelSelector` (list and watch).
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
            raw_body: None,
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
