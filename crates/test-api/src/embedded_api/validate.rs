//! Field validation the real server runs before storing (the subset our resources need).

use serde_json::Value;

use super::resource::Resource;
use super::status::StatusCause;

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
(e.g. 'example.com', regex used for validation is \
'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' \
or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  \
or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// Total size the real server allows for all annotations of one object.
const ANNOTATIONS_LIMIT: usize = 256 * 1024;
const EVENT_FIELD_LIMIT: usize = 128;
const EVENT_NOTE_LIMIT: usize = 1024;

/// `Invalid value: <v>: <msg>` as Go's field errors print it.
fn invalid(field: &str, value: &Value, msg: &str) -> StatusCause {
    StatusCause::new(
        "FieldValueInvalid",
        field,
        format!("Invalid value: {value}: {msg}"),
    )
}

fn required(field: &str) -> StatusCause {
    StatusCause::new("FieldValueRequired", field, "Required value")
}

/// True for a DNS-1123 subdomain: lowercase alphanumerics, `-` and `.`, at most 253 chars.
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_qualified_name(value: &str) -> bool {
    let (prefix, name) = match value.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, value),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(|p| !p.is_empty() && is_dns_subdomain(p))
}

/// Object metadata checks on create and update: name, generateName, annotation size.
pub fn metadata(object: &Value, creating: bool) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let generate = meta["generateName"].as_str().unwrap_or_default();
    if creating && name.is_empty() && generate.is_empty() {
        causes.push(StatusCause::new(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required",
        ));
    }
    if !name.is_empty() && !is_dns_subdomain(name) {
        causes.push(invalid(
            "metadata.name",
            &meta["name"],
            DNS1123_SUBDOMAIN_MSG,
        ));
    }
    // A generateName is checked as a name prefix: a trailing '-' is allowed, a trailing '.' is not.
    if !generate.is_empty() && !is_dns_subdomain(generate.strip_suffix('-').unwrap_or(generate)) {
        causes.push(invalid(
            "metadata.generateName",
            &meta["generateName"],
            DNS1123_SUBDOMAIN_MSG,
        ));
    }
    if let Some(annotations) = meta["annotations"].as_object() {
        let size: usize = annotations
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if size > ANNOTATIONS_LIMIT {
            causes.push(StatusCause::new(
                "FieldValueTooLong",
                "metadata.annotations",
                format!("Too long: must have at most {ANNOTATIONS_LIMIT} bytes"),
            ));
        }
    }
    causes
}

/// Every check of the (normalised) object, in the order the real server reports them.
pub fn all(resource: Resource, object: &Value, creating: bool) -> Vec<StatusCause> {
    match resource {
        // Events pass the legacy core Event checks first, then metadata, then the new ones.
        Resource::Events => {
            let mut causes = legacy_event(object);
            causes.extend(metadata(object, creating));
            causes.extend(event(object));
            causes
        }
        Resource::Leases => {
            let mut causes = metadata(object, creating);
            causes.extend(lease(object));
            causes
        }
        _ => metadata(object, creating),
    }
}

fn lease(object: &Value) -> Vec<StatusCause> {
    let spec = &object["spec"];
    let mut causes = Vec::new();
    if spec["leaseDurationSeconds"]
        .as_i64()
        .is_some_and(|d| d <= 0)
    {
        causes.push(invalid(
            "spec.leaseDurationSeconds",
            &spec["leaseDurationSeconds"],
            "must be greater than 0",
        ));
    }
    if spec["leaseTransitions"].as_i64().is_some_and(|t| t < 0) {
        causes.push(invalid(
            "spec.leaseTransitions",
            &spec["leaseTransitions"],
            "must be greater than or equal to 0",
        ));
    }
    causes
}

/// The core Event checks every Event passes, with the core field names (`message` for
/// `note`, `involvedObject` for `regarding`) and its typo (`repotingIntance`).
fn legacy_event(e: &Value) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    let text = |f: &str| e[f].as_str().unwrap_or_default();
    let namespace = e["metadata"]["namespace"].as_str().unwrap_or_default();
    let regarding = e["regarding"]["namespace"].as_str().unwrap_or_default();
    let new_style = !text("eventTime").is_empty();
    let allowed: &[&str] = if new_style {
        &["default", "kube-system"]
    } else {
        &["", "default"]
    };
    if regarding.is_empty() && !allowed.contains(&namespace)
        || !new_style && !regarding.is_empty() && regarding != namespace
    {
        causes.push(invalid(
            "involvedObject.namespace",
            &e["regarding"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .into(),
            "does not match event.namespace",
        ));
    }
    if !new_style {
        return causes;
    }
    let controller = text("reportingController");
    if controller.is_empty() {
        // Required, and then also judged as a qualified name, as Go does.
        let empty = Value::String(String::new());
        causes.push(required("reportingController"));
        causes.push(invalid(
            "reportingController",
            &empty,
            "name part must be non-empty",
        ));
        causes.push(invalid("reportingController", &empty, QUALIFIED_NAME_MSG));
    } else if !is_qualified_name(controller) {
        causes.push(invalid(
            "reportingController",
            &e["reportingController"],
            QUALIFIED_NAME_MSG,
        ));
    }
    for (field, path, limit) in [
        ("reportingInstance", "repotingIntance", EVENT_FIELD_LIMIT),
        ("action", "action", EVENT_FIELD_LIMIT),
        ("reason", "reason", EVENT_FIELD_LIMIT),
        ("note", "message", EVENT_NOTE_LIMIT),
    ] {
        let v = text(field);
        if v.is_empty() && field != "note" {
            causes.push(required(field));
        } else if v.len() > limit {
            causes.push(invalid(
                path,
                &Value::String(String::new()),
                &format!("can have at most {limit} characters"),
            ));
        }
    }
    causes
}

/// The events.k8s.io/v1 rules: the new-style fields are required, the deprecated ones
/// must be unset (named by their core names).
fn event(e: &Value) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    let empty = Value::String(String::new());
    if let Some(series) = e.get("series").filter(|s| !s.is_null()) {
        if series["count"].as_i64().unwrap_or(0) < 2 {
            causes.push(invalid("series.count", &empty, "should be at least 2"));
        }
        if series["lastObservedTime"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            causes.push(required("series.lastObservedTime"));
        }
    }
    if e["eventTime"].as_str().unwrap_or_default().is_empty() {
        causes.push(required("eventTime"));
    }
    let kind = e["type"].as_str().unwrap_or_default();
    if !matches!(kind, "Normal" | "Warning") {
        causes.push(invalid(
            "type",
            &empty,
            &format!("has invalid value: {kind}"),
        ));
    }
    let set = |f: &str| !e[f].is_null() && e[f] != Value::Object(Default::default());
    for (field, path) in [
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
    ] {
        if set(field) {
            causes.push(invalid(path, &empty, "needs to be unset"));
        }
    }
    if e["deprecatedCount"].as_i64().is_some_and(|c| c != 0) {
        causes.push(invalid("count", &empty, "needs to be unset"));
    }
    if set("deprecatedSource") {
        causes.push(invalid("source", &empty, "needs to be unset"));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_prefixes() {
        assert!(is_dns_subdomain("canary-guard-reviews.v2"));
        assert!(!is_dns_subdomain("Reviews"));
        assert!(!is_dns_subdomain("reviews."));
        let m = |meta: Value| metadata(&json!({ "metadata": meta }), true);
        assert!(m(json!({"generateName": "reviews-"})).is_empty());
        assert_eq!(
            m(json!({"generateName": "reviews."}))[0].field,
            "metadata.generateName"
        );
        assert_eq!(m(json!({}))[0].field, "metadata.name");
        assert_eq!(m(json!({"name": "UPPER"}))[0].field, "metadata.name");
    }

    #[test]
    fn events_are_judged_like_core_events_first() {
        let event = json!({"metadata": {"name": "e", "namespace": "shop"},
            "eventTime": "2024-05-01T10:00:00.123456Z", "type": "Normal",
            "reportingController": "", "reportingInstance": "i", "action": "a", "reason": "r",
            "note": "n".repeat(1025), "regarding": {"name": "reviews"}});
        let fields: Vec<String> = all(Resource::Events, &event, true)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(
            fields,
            [
                "involvedObject.namespace",
                "reportingController",
                "reportingController",
                "reportingController",
                "message"
            ]
        );
        let mut in_default = event.clone();
        in_default["metadata"]["namespace"] = json!("default");
        in_default["reportingController"] = json!("canary-guard.io/guard");
        in_default["note"] = json!("ok");
        assert!(all(Resource::Events, &in_default, true).is_empty());
    }

    #[test]
    fn qualified_names() {
        assert!(is_qualified_name("canary-guard.io/guard"));
        assert!(is_qualified_name("guard"));
        assert!(!is_qualified_name("canary guard"));
        assert!(!is_qualified_name("/guard"));
        assert!(!is_qualified_name("Canary.IO/guard"));
    }
}
