//! Kubernetes Events (`events.k8s.io/v1`) about what the guard did.
//!
//! Events are best effort: a failure to publish one is logged and never stops a rollback.
//! The API server's rules are applied before sending: `reason` and `action` at most 128
//! characters, `note` at most 1024, `generateName` ending in `-`, `eventTime` set and
//! `deprecatedCount` left unset.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;

/// `reportingController` of our Events.
pub const REPORTING_CONTROLLER: &str = "canary-guard.io/guard";

/// Limits the API server enforces on Event fields.
const MAX_NOTE: usize = 1024;
const MAX_REASON: usize = 128;
/// Object names are DNS subdomains (253 characters); the server appends 5 to `generateName`.
const MAX_GENERATE_NAME: usize = 253 - 5;
const GENERATE_SUFFIX: &str = ".canary-guard-";

/// Event `reason` values.
pub mod reasons {
    /// The leader sent the canary's traffic back to stable.
    pub const CANARY_ROLLBACK: &str = "CanaryRollback";
    /// Someone put traffic back on a rolled-back revision and the leader reverted it again.
    pub const CANARY_ROLLBACK_REASSERTED: &str = "CanaryRollbackReasserted";
    /// The weights recorded before a rollback were put back.
    pub const CANARY_RESTORED: &str = "CanaryRestored";
    /// The canary is failing but some routes holding it cannot be rolled back.
    pub const CANARY_ROLLBACK_SKIPPED: &str = "CanaryRollbackSkipped";
    /// The VirtualService cannot be rolled back (canary not found, malformed routes...).
    pub const VIRTUAL_SERVICE_INVALID: &str = "VirtualServiceInvalid";
    /// The canary fails, but so do its stable pods: it is not blamed.
    pub const BASELINE_DEGRADED: &str = "BaselineDegraded";
}

/// Event `action` values.
pub mod actions {
    /// Patching routes to stable.
    pub const ROLLBACK: &str = "Rollback";
    /// Patching recorded weights back.
    pub const RESTORE: &str = "Restore";
    /// Judging the canary (and holding back a rollback).
    pub const JUDGE: &str = "Judge";
}

/// Event `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Expected operation.
    Normal,
    /// Something a person should look at.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// What to report; see [`reasons`] and [`actions`].
#[derive(Debug, Clone, PartialEq)]
pub struct EventSpec {
    /// Normal or Warning.
    pub type_: EventType,
    /// Machine-readable cause, e.g. [`reasons::CANARY_ROLLBACK`].
    pub reason: String,
    /// What was done, e.g. [`actions::ROLLBACK`].
    pub action: String,
    /// Human text; cut to 1024 characters.
    pub note: String,
    /// The object the Event is about (the VirtualService, or a Deployment).
    pub regarding: ObjectReference,
}

/// Publishes Events as one guard instance.
#[derive(Clone)]
pub struct EventWriter {
    client: Client,
    instance: String,
}

impl EventWriter {
    /// An Event writer reporting as `instance` (the pod name).
    pub fn new(client: Client, instance: impl Into<String>) -> Self {
        Self {
            client,
            instance: instance.into(),
        }
    }

    /// Publishes `spec` in the namespace of the object it regards. Errors are logged, not
    /// returned: an Event must never stop the guard.
    pub async fn publish(&self, spec: EventSpec) {
        let Some(namespace) = spec.regarding.namespace.clone() else {
            tracing::warn!(reason = %spec.reason, "event not published: the object it regards has no namespace");
            return;
        };
        let event = build_event(&self.instance, spec, Timestamp::now());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(
                reason = event.reason.as_deref().unwrap_or_default(),
                error = %super::api_error::Readable(&e),
                "could not publish event"
            );
        }
    }
}

/// The Event for `spec`, as `instance` would report it at `now`.
pub fn build_event(instance: &str, spec: EventSpec, now: Timestamp) -> Event {
    let base = spec.regarding.name.as_deref().unwrap_or("canary-guard");
    Event {
        metadata: ObjectMeta {
            generate_name: Some(generate_name(base)),
            namespace: spec.regarding.namespace.clone(),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(spec.type_.as_str().to_owned()),
        reporting_controller: Some(REPORTING_CONTROLLER.to_owned()),
        reporting_instance: Some(truncate(instance, MAX_REASON).to_owned()),
        action: Some(truncate(&spec.action, MAX_REASON).to_owned()),
        reason: Some(truncate(&spec.reason, MAX_REASON).to_owned()),
        note: Some(truncate(&spec.note, MAX_NOTE).to_owned()),
        regarding: Some(spec.regarding),
        ..Event::default()
    }
}

/// `<name>.canary-guard-`: ends with `-` as the API server requires (a name ending in `.`
/// is rejected), and short enough for the random suffix.
pub fn generate_name(name: &str) -> String {
    let base = truncate(name, MAX_GENERATE_NAME - GENERATE_SUFFIX.len());
    format!("{base}{GENERATE_SUFFIX}")
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
/// The API server counts bytes of the UTF-8 encoding, so bytes are the safe measure.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs_ref() -> ObjectReference {
        ObjectReference {
            api_version: Some("networking.istio.io/v1".into()),
            kind: Some("VirtualService".into()),
            name: Some("reviews".into()),
            namespace: Some("default".into()),
            ..ObjectReference::default()
        }
    }

    #[test]
    fn event_has_every_field_the_api_server_requires() {
        let now: Timestamp = "2025-03-01T10:00:00.123456789Z".parse().unwrap();
        let event = build_event(
            "reviews-v2-abc",
            EventSpec {
                type_: EventType::Warning,
                reason: reasons::CANARY_ROLLBACK.into(),
                action: actions::ROLLBACK.into(),
                note: "é".repeat(600),
                regarding: vs_ref(),
            },
            now,
        );
        assert_eq!(
            event.metadata.generate_name.as_deref(),
            Some("reviews.canary-guard-")
        );
        assert_eq!(event.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(
            event.reporting_controller.as_deref(),
            Some("canary-guard.io/guard")
        );
        assert_eq!(event.reporting_instance.as_deref(), Some("reviews-v2-abc"));
        assert_eq!(event.action.as_deref(), Some("Rollback"));
        assert_eq!(event.reason.as_deref(), Some("CanaryRollback"));
        assert_eq!(event.deprecated_count, None);
        assert_eq!(event.regarding, Some(vs_ref()));
        // 600 two-byte characters cut at 1024 bytes: 512 whole characters.
        assert_eq!(event.note.as_deref().map(|n| n.chars().count()), Some(512));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["eventTime"], "2025-03-01T10:00:00.123456Z");
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("日本", 4), "日");
    }

    #[test]
    fn generate_name_is_short_and_ends_with_a_dash() {
        let long = "r".repeat(300);
        let name = generate_name(&long);
        assert!(name.len() <= 248, "{}", name.len());
        assert!(name.ends_with('-'));
    }
}

/// Publishing through a real kube client against the embedded API.
#[cfg(test)]
mod against_the_api {
    use super::*;
    use canary_guard_test_api::embedded_api::{EmbeddedApi, FaultRule, Resource, Verb};

    #[tokio::test]
    async fn published_events_are_accepted_and_failures_are_not_fatal() {
        let running = EmbeddedApi::new()
            .serve(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        let writer = EventWriter::new(
            running.client("shop", "canary-guard-test/0").unwrap(),
            "reviews-v2-abc",
        );
        let mut regarding = ObjectReference {
            api_version: Some("networking.istio.io/v1".into()),
            kind: Some("VirtualService".into()),
            name: Some("reviews".into()),
            namespace: Some("shop".into()),
            ..ObjectReference::default()
        };
        let spec = |regarding: &ObjectReference| EventSpec {
            type_: EventType::Warning,
            reason: reasons::CANARY_ROLLBACK.into(),
            action: actions::ROLLBACK.into(),
            note: "x".repeat(2000),
            regarding: regarding.clone(),
        };
        writer.publish(spec(&regarding)).await;

        let events = running
            .api()
            .list(Resource::Events, Some("shop"), None)
            .unwrap();
        let items = events["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{events}");
        let event = &items[0];
        assert!(event["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("reviews.canary-guard-"));
        assert_eq!(event["reason"], "CanaryRollback");
        assert_eq!(event["note"].as_str().unwrap().len(), 1024);
        assert_eq!(event["regarding"]["kind"], "VirtualService");

        // Refused or impossible publishes only log.
        running
            .api()
            .faults()
            .add(FaultRule::status(403).verb(Verb::Create));
        writer.publish(spec(&regarding)).await;
        regarding.namespace = None;
        writer.publish(spec(&regarding)).await;
        let events = running
            .api()
            .list(Resource::Events, Some("shop"), None)
            .unwrap();
        assert_eq!(events["items"].as_array().unwrap().len(), 1);
    }
}
