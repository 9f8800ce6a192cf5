//! Member leases: every guard writes its window summary into its own Lease
//! `canary-guard-<group>-<pod>`; the leader lists them by label and keeps the
//! live ones. Staleness is judged by local monotonic time since a member's
//! lease last changed, never by the writer's clock.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use super::lease_store::{micro_now, LeaseStore, StoreError};
use crate::domain::histogram::LAYOUT_VERSION;
use crate::domain::relative::Role;
use crate::domain::window::{Summary, MAX_WINDOW};

/// Label that ties member leases to their group.
pub const GROUP_LABEL: &str = "canary-guard.io/group";
/// Annotation carrying the member's window summary (JSON).
pub const SUMMARY_ANNOTATION: &str = "canary-guard.io/summary";
/// Annotation carrying the member's canary revision.
pub const REVISION_ANNOTATION: &str = "canary-guard.io/revision";
/// Annotation saying the member guards a stable pod (`baseline`); absent on canary members.
pub const ROLE_ANNOTATION: &str = "canary-guard.io/role";
/// Largest summary accepted from a peer; larger ones are ignored.
pub const MAX_SUMMARY_BYTES: usize = 64 * 1024;

/// Name of a member's lease (a DNS subdomain: at most 253 characters).
pub fn lease_name(group: &str, pod: &str) -> String {
    let mut name = format!("canary-guard-{group}-{pod}");
    name.truncate(253);
    name
}

/// This guard as a group member.
pub struct Member {
    group: String,
    pod: String,
    pod_uid: Option<String>,
    revision: Option<String>,
    role: Role,
    publish_interval: Duration,
    /// resourceVersion of our last write, for the next conditional replace.
    last_version: Mutex<Option<String>>,
}

impl Member {
    /// Member `pod` of `group`.
    pub fn new(group: &str, pod: &str) -> Self {
        Self {
            group: group.to_string(),
            pod: pod.to_string(),
            pod_uid: None,
            revision: None,
            role: Role::Canary,
            publish_interval: Duration::from_secs(10),
            last_version: Mutex::new(None),
        }
    }

    /// Sets the Pod UID; the lease is then owned by (and deleted with) the Pod.
    pub fn pod_uid(mut self, uid: Option<String>) -> Self {
        self.pod_uid = uid;
        self
    }

    /// Sets the canary revision published with the summary.
    pub fn revision(mut self, revision: Option<String>) -> Self {
        self.revision = revision;
        self
    }

    /// Sets the member's role (a baseline member is announced by [`ROLE_ANNOTATION`]).
    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// Sets how often we publish (the lease duration is three of them).
    pub fn publish_interval(mut self, every: Duration) -> Self {
        self.publish_interval = every;
        self
    }

    fn lease(&self, summary: &str) -> Lease {
        let mut annotations =
            BTreeMap::from([(SUMMARY_ANNOTATION.to_string(), summary.to_string())]);
        if let Some(r) = &self.revision {
            annotations.insert(REVISION_ANNOTATION.to_string(), r.clone());
        }
        // Canary members carry no role, so guards that predate roles read them as before.
        if self.role != Role::Canary {
            annotations.insert(ROLE_ANNOTATION.to_string(), self.role.as_str().to_string());
        }
        let duration = (self.publish_interval * 3).as_secs().max(1);
        Lease {
            metadata: ObjectMeta {
                name: Some(lease_name(&self.group, &self.pod)),
                labels: Some(BTreeMap::from([(
                    GROUP_LABEL.to_string(),
                    self.group.clone(),
                )])),
                annotations: Some(annotations),
                owner_references: self.pod_uid.as_ref().map(|uid| {
                    vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Pod".into(),
                        name: self.pod.clone(),
                        uid: uid.clone(),
                        block_owner_deletion: Some(false),
                        controller: Some(false),
                    }]
                }),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.pod.clone()),
                lease_duration_seconds: Some(i32::try_from(duration).unwrap_or(i32::MAX)),
                renew_time: Some(micro_now()),
                ..LeaseSpec::default()
            }),
        }
    }

    /// Writes `summary` to our lease: create when missing, else a replace
    /// conditional on the version we last wrote (re-read once on conflict).
    pub async fn publish<S: LeaseStore, T: Serialize>(
        &self,
        store: &S,
        summary: &T,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(summary).map_err(|e| StoreError::Other(e.to_string()))?;
        let mut lease = self.lease(&json);
        let known = self.last_version.lock().clone();
        let written = match known {
            Some(rv) => {
                lease.metadata.resource_version = Some(rv);
                match store.replace(&lease).await {
                    Err(StoreError::Conflict) => {
                        let current = store.get(&lease_name(&self.group, &self.pod)).await?;
                        lease.metadata.resource_version = current.metadata.resource_version;
                        store.replace(&lease).await
                    }
                    Err(StoreError::NotFound) => {
                        lease.metadata.resource_version = None;
                        store.create(&lease).await
                    }
                    other => other,
                }
            }
            None => match store.create(&lease).await {
                // Our own lease from before a restart: take it over.
                Err(StoreError::AlreadyExists) => {
                    let current = store.get(&lease_name(&self.group, &self.pod)).await?;
                    lease.metadata.resource_version = current.metadata.resource_version;
                    store.replace(&lease).await
                }
                other => other,
            },
        };
        match written {
            Ok(l) => {
                *self.last_version.lock() = l.metadata.resource_version;
                Ok(())
            }
            Err(e) => {
                *self.last_version.lock() = None;
                Err(e)
            }
        }
    }

    /// Deletes our lease so the leader stops counting us at once.
    pub async fn leave<S: LeaseStore>(&self, store: &S) -> Result<(), StoreError> {
        store.delete(&lease_name(&self.group, &self.pod)).await
    }
}

/// A live member as the leader sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberReport {
    /// Pod name (the lease's holder).
    pub pod: String,
    /// Its canary revision.
    pub revision: Option<String>,
    /// A canary member, or a baseline one on a stable pod.
    pub role: Role,
    /// Its window, decoded and checked for plausibility.
    pub summary: Summary,
    /// Local time since its lease last changed.
    pub age: Duration,
}

/// Why a member's summary was ignored; [`Rejection::as_str`] is the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// No holder or no summary annotation.
    Missing,
    /// Larger than [`MAX_SUMMARY_BYTES`].
    TooLarge,
    /// Not JSON, or not the shape of a [`Summary`].
    Malformed,
    /// A summary format this guard does not know (a guard of another version).
    UnknownVersion,
    /// Numbers no real window can hold (more errors than requests, counts near `u64::MAX`...).
    Implausible,
}

impl Rejection {
    /// The `reason` label of `canary_guard_member_summaries_rejected_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::TooLarge => "too_large",
            Rejection::Malformed => "malformed",
            Rejection::UnknownVersion => "unknown_version",
            Rejection::Implausible => "implausible",
        }
    }
}

/// More requests than any real window holds: 2^40 is 1.8 billion requests a second
/// over the longest window, so anything above is garbage, not traffic.
pub const MAX_PLAUSIBLE_REQUESTS: u64 = 1 << 40;

/// Decodes a peer's summary annotation and checks that it could describe real traffic.
///
/// The version is read before the rest so that a guard of a newer version (whose
/// summary may have another shape) is told apart from garbage. A rejected summary is
/// never judged: a peer's bad data must not cause a rollback by itself.
pub fn decode_summary(raw: &str) -> Result<Summary, (Rejection, String)> {
    if raw.len() > MAX_SUMMARY_BYTES {
        return Err((
            Rejection::TooLarge,
            format!("summary of {} bytes exceeds {MAX_SUMMARY_BYTES}", raw.len()),
        ));
    }
    let value: Value = serde_json::from_str(raw)
        .map_err(|e| (Rejection::Malformed, format!("summary is not JSON: {e}")))?;
    match value.get("v").and_then(Value::as_u64) {
        Some(v) if v == u64::from(LAYOUT_VERSION) => {}
        Some(v) => {
            return Err((
                Rejection::UnknownVersion,
                format!("summary format version {v}; this guard reads version {LAYOUT_VERSION}"),
            ))
        }
        None => {
            return Err((
                Rejection::Malformed,
                "summary has no numeric version \"v\"".to_owned(),
            ))
        }
    }
    let summary: Summary = serde_json::from_value(value).map_err(|e| {
        (
            Rejection::Malformed,
            format!("summary does not decode: {e}"),
        )
    })?;
    check_plausible(&summary).map_err(|why| (Rejection::Implausible, why))?;
    Ok(summary)
}

fn check_plausible(s: &Summary) -> Result<(), String> {
    if s.seconds == 0 || s.seconds > MAX_WINDOW.as_secs() {
        return Err(format!(
            "window of {}s is outside 1..={}s",
            s.seconds,
            MAX_WINDOW.as_secs()
        ));
    }
    if s.requests > MAX_PLAUSIBLE_REQUESTS {
        return Err(format!("{} requests in one window", s.requests));
    }
    if s.errors > s.requests {
        return Err(format!(
            "{} errors out of {} requests",
            s.errors, s.requests
        ));
    }
    // Every sample is one request (in both modes), so more samples than requests is made up;
    // left in, they could drag the group's latency quantile over the limit on their own.
    let samples = s.latency.total();
    if samples > s.requests {
        return Err(format!(
            "{samples} latency samples for {} requests",
            s.requests
        ));
    }
    if let Some(r) = &s.recent {
        if r.recent.is_some() || r.seconds > s.seconds {
            return Err("recent part is not a part of the window".to_owned());
        }
        if r.requests > s.requests || r.errors > s.errors {
            return Err(format!(
                "recent part holds more than the window ({} requests, {} errors)",
                r.requests, r.errors
            ));
        }
        check_plausible(r).map_err(|why| format!("recent part: {why}"))?;
    }
    Ok(())
}

/// What the observer remembers about one member lease.
struct Seen {
    /// The lease's resourceVersion when last read.
    version: String,
    /// Local time it was first seen at that version.
    since: Instant,
    /// Its decoded content (decoded once per version).
    parsed: Result<MemberReport, Rejection>,
}

/// Lists a group's member leases and keeps the live ones.
pub struct MemberReader {
    group: String,
    stale_after: Duration,
    seen: HashMap<String, Seen>,
    on_rejected: Box<dyn Fn(Rejection) + Send + Sync>,
}

impl MemberReader {
    /// An observer for `group` whose members publish every `publish_interval`;
    /// a member silent for three intervals is stale.
    pub fn new(group: &str, publish_interval: Duration) -> Self {
        Self {
            group: group.to_string(),
            stale_after: publish_interval * 3,
            seen: HashMap::new(),
            on_rejected: Box::new(|_| {}),
        }
    }

    /// Calls `hook` once for every member summary ignored (once per version of its lease).
    pub fn on_rejected(mut self, hook: impl Fn(Rejection) + Send + Sync + 'static) -> Self {
        self.on_rejected = Box::new(hook);
        self
    }

    /// The live members whose summaries could be read. A rejected summary is
    /// reported once per version of the lease (warned about when the reason is new
    /// for that lease), so a bad peer republishing cannot flood the log.
    pub async fn list<S: LeaseStore>(
        &mut self,
        store: &S,
    ) -> Result<Vec<MemberReport>, StoreError> {
        let leases = store.list(&self.selector()).await?;
        Ok(self.observe(leases))
    }

    /// The label selector of the group's member leases.
    pub fn selector(&self) -> String {
        format!("{GROUP_LABEL}={}", self.group)
    }

    /// The live members among `leases` (the group's member leases, as listed or as a
    /// watch keeps them), as [`MemberReader::list`] reports them.
    pub fn observe(&mut self, leases: Vec<Lease>) -> Vec<MemberReport> {
        let now = Instant::now();
        let mut live = Vec::new();
        let mut names = Vec::with_capacity(leases.len());
        for lease in leases {
            let (Some(name), Some(rv)) = (
                lease.metadata.name.clone(),
                lease.metadata.resource_version.clone(),
            ) else {
                continue;
            };
            names.push(name.clone());
            let known = self.seen.get(&name).is_some_and(|s| s.version == rv);
            if !known {
                let previous = self
                    .seen
                    .get(&name)
                    .and_then(|s| s.parsed.as_ref().err().copied());
                let parsed = parse(&lease).map_err(|(reason, why)| {
                    (self.on_rejected)(reason);
                    if previous == Some(reason) {
                        tracing::debug!(lease = %name, reason = reason.as_str(), %why, "ignoring a member summary");
                    } else {
                        tracing::warn!(lease = %name, reason = reason.as_str(), %why, "ignoring a member summary");
                    }
                    reason
                });
                self.seen.insert(
                    name.clone(),
                    Seen {
                        version: rv,
                        since: now,
                        parsed,
                    },
                );
            }
            let seen = &self.seen[&name];
            let age = now.saturating_duration_since(seen.since);
            if age > self.stale_after {
                continue;
            }
            if let Ok(report) = &seen.parsed {
                live.push(MemberReport {
                    age,
                    ..report.clone()
                });
            }
        }
        // Forget leases that are gone, so memory follows the group's size.
        self.seen.retain(|n, _| names.contains(n));
        live
    }
}

fn parse(lease: &Lease) -> Result<MemberReport, (Rejection, String)> {
    let missing = |what: &str| (Rejection::Missing, format!("no {what}"));
    let pod = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| missing("holderIdentity"))?;
    let annotations = lease
        .metadata
        .annotations
        .as_ref()
        .ok_or_else(|| missing("annotations"))?;
    let raw = annotations
        .get(SUMMARY_ANNOTATION)
        .ok_or_else(|| missing("summary annotation"))?;
    let role = match annotations.get(ROLE_ANNOTATION).map(String::as_str) {
        None | Some("canary") => Role::Canary,
        Some("baseline") => Role::Baseline,
        // A role of a newer version: judging it as a canary could blame the wrong pods.
        Some(other) => {
            return Err((
                Rejection::UnknownVersion,
                format!("role {other:?}; this guard knows canary and baseline"),
            ))
        }
    };
    Ok(MemberReport {
        pod,
        revision: annotations.get(REVISION_ANNOTATION).cloned(),
        role,
        summary: decode_summary(raw)?,
        age: Duration::ZERO,
    })
}

#[cfg(test)]
mod tests;
