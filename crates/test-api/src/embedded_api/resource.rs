//! The resources the embedded API serves and what the real server knows about each.

use serde_json::Value;

/// A resource served by the embedded API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// `coordination.k8s.io/v1` `leases`.
    Leases,
    /// `networking.istio.io` `virtualservices` (v1, v1beta1, v1alpha3; one store).
    VirtualServices,
    /// `events.k8s.io/v1` `events`.
    Events,
    /// core `v1` `pods`.
    Pods,
    /// `apps/v1` `deployments`.
    Deployments,
}

impl Resource {
    /// Every served resource.
    pub const ALL: [Resource; 5] = [
        Resource::Leases,
        Resource::VirtualServices,
        Resource::Events,
        Resource::Pods,
        Resource::Deployments,
    ];

    /// The URL plural, e.g. `leases`.
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Leases => "leases",
            Resource::VirtualServices => "virtualservices",
            Resource::Events => "events",
            Resource::Pods => "pods",
            Resource::Deployments => "deployments",
        }
    }

    /// API group; empty for core.
    pub fn group(self) -> &'static str {
        match self {
            Resource::Leases => "coordination.k8s.io",
            Resource::VirtualServices => "networking.istio.io",
            Resource::Events => "events.k8s.io",
            Resource::Pods => "",
            Resource::Deployments => "apps",
        }
    }

    /// Served versions, preferred (storage) version first.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Resource::VirtualServices => &["v1", "v1beta1", "v1alpha3"],
            _ => &["v1"],
        }
    }

    /// The preferred version.
    pub fn preferred_version(self) -> &'static str {
        self.versions()[0]
    }

    /// The object kind, e.g. `Lease`.
    pub fn kind(self) -> &'static str {
        match self {
            Resource::Leases => "Lease",
            Resource::VirtualServices => "VirtualService",
            Resource::Events => "Event",
            Resource::Pods => "Pod",
            Resource::Deployments => "Deployment",
        }
    }

    /// `apiVersion` for `version`, e.g. `coordination.k8s.io/v1` or `v1` for core.
    pub fn api_version(self, version: &str) -> String {
        if self.group().is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group())
        }
    }

    /// `plural.group` as the real server names it in messages (`pods` for core).
    pub fn qualified(self) -> String {
        qualify(self.plural(), self.group())
    }

    /// `Kind.group` as validation messages name it (`Pod` for core).
    pub fn qualified_kind(self) -> String {
        qualify(self.kind(), self.validation_group())
    }

    /// The group validation errors name: events.k8s.io Events are validated as the core
    /// Event they are stored as, so their errors name no group.
    pub fn validation_group(self) -> &'static str {
        match self {
            Resource::Events => "",
            r => r.group(),
        }
    }

    /// Finds the resource served at `group`/`version`/`plural`.
    pub fn lookup(group: &str, version: &str, plural: &str) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|r| r.group() == group && r.plural() == plural && r.versions().contains(&version))
    }

    /// Custom resources (no built-in Go type): strategic merge patch is refused on them.
    pub fn is_custom(self) -> bool {
        self == Resource::VirtualServices
    }

    /// Resources whose delete answers with the object rather than a `Status` (graceful
    /// deletion); custom resources answer a `Status`.
    pub fn delete_returns_object(self) -> bool {
        self == Resource::Pods
    }

    /// Resources with a status subresource: writes to the main resource keep the old status.
    pub fn has_status_subresource(self) -> bool {
        matches!(
            self,
            Resource::VirtualServices | Resource::Pods | Resource::Deployments
        )
    }

    /// Resources whose `metadata.generation` tracks changes outside metadata and status.
    pub fn tracks_generation(self) -> bool {
        matches!(self, Resource::VirtualServices | Resource::Deployments)
    }

    /// Decodes `object` as the real server would into its Go type and encodes it back:
    /// unknown fields are dropped, wrong types are rejected, times are normalised.
    /// Custom resources pass through unchanged (the CRD schema is not enforced).
    pub fn normalize(self, object: Value) -> Result<Value, String> {
        use k8s_openapi::api::{apps, coordination, core, events};
        fn round_trip<T>(v: Value) -> Result<Value, String>
        where
            T: serde::de::DeserializeOwned + serde::Serialize,
        {
            let typed: T = serde_json::from_value(v).map_err(|e| e.to_string())?;
            serde_json::to_value(typed).map_err(|e| e.to_string())
        }
        let mut out = match self {
            Resource::Leases => round_trip::<coordination::v1::Lease>(object)?,
            Resource::Events => {
                for time in [&object["eventTime"], &object["series"]["lastObservedTime"]] {
                    time.as_str().map_or(Ok(()), check_micro_time)?;
                }
                round_trip::<events::v1::Event>(object)?
            }
            Resource::Pods => round_trip::<core::v1::Pod>(object)?,
            Resource::Deployments => round_trip::<apps::v1::Deployment>(object)?,
            Resource::VirtualServices => return Ok(object),
        };
        // Go writes struct fields that are not pointers even when empty.
        let empty: &[(&str, Value)] = match self {
            Resource::Leases => &[("spec", Value::Object(Default::default()))],
            Resource::Events => &[
                ("deprecatedSource", Value::Object(Default::default())),
                ("deprecatedFirstTimestamp", Value::Null),
                ("deprecatedLastTimestamp", Value::Null),
            ],
            _ => &[],
        };
        if let Some(m) = out.as_object_mut() {
            for (field, value) in empty {
                m.entry(*field).or_insert_with(|| value.clone());
            }
        }
        Ok(out)
    }
}

/// Go parses a MicroTime with the fixed layout below: exactly six fractional digits.
const MICRO_TIME_LAYOUT: &str = "2006-01-02T15:04:05.000000Z07:00";

/// The real server's check of a MicroTime's fraction and zone, worded as Go's parser.
fn check_micro_time(value: &str) -> Result<(), String> {
    let fail = |rest: &str, part: &str| {
        Err(format!(
            "parsing time \"{value}\" as \"{MICRO_TIME_LAYOUT}\": cannot parse \"{rest}\" as \"{part}\""
        ))
    };
    // The date and time of day are left to the typed decoding that follows.
    let Some(rest) = value.get(19..) else {
        return Ok(());
    };
    let digits = rest.get(1..7).unwrap_or_default();
    if !rest.starts_with('.') || digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return fail(rest, ".000000");
    }
    let zone = &rest[7..];
    let offset = zone.as_bytes();
    let is_offset = offset.len() == 6
        && matches!(offset[0], b'+' | b'-')
        && offset[3] == b':'
        && [1, 2, 4, 5].iter().all(|&i| offset[i].is_ascii_digit());
    if zone == "Z" || is_offset {
        Ok(())
    } else {
        fail(zone, "Z07:00")
    }
}

fn qualify(name: &str, group: &str) -> String {
    if group.is_empty() {
        name.to_owned()
    } else {
        format!("{name}.{group}")
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.plural())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lookup_finds_every_served_version() {
        for v in ["v1", "v1beta1", "v1alpha3"] {
            assert_eq!(
                Resource::lookup("networking.istio.io", v, "virtualservices"),
                Some(Resource::VirtualServices)
            );
        }
        assert_eq!(
            Resource::lookup("coordination.k8s.io", "v1beta1", "leases"),
            None
        );
        assert_eq!(Resource::lookup("", "v1", "pods"), Some(Resource::Pods));
    }

    #[test]
    fn micro_times_need_six_fractional_digits() {
        assert!(check_micro_time("2024-05-01T10:00:00.123456Z").is_ok());
        assert!(check_micro_time("2024-05-01T10:00:00.123456+02:00").is_ok());
        assert_eq!(
            check_micro_time("2024-05-01T10:00:00.123456789Z").unwrap_err(),
            "parsing time \"2024-05-01T10:00:00.123456789Z\" as \"2006-01-02T15:04:05.000000Z07:00\": \
             cannot parse \"789Z\" as \"Z07:00\""
        );
        assert!(check_micro_time("2024-05-01T10:00:00Z")
            .unwrap_err()
            .ends_with("cannot parse \"Z\" as \".000000\""));
        assert!(check_micro_time("2024-05-01T10:00:00.123Z").is_err());
    }

    #[test]
    fn normalize_writes_empty_structs_as_go_does() {
        let lease =
            json!({"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"a"}});
        assert_eq!(
            Resource::Leases.normalize(lease).unwrap()["spec"],
            json!({})
        );
    }

    #[test]
    fn normalize_drops_unknown_fields_and_rejects_wrong_types() {
        let lease = json!({"apiVersion":"coordination.k8s.io/v1","kind":"Lease",
            "metadata":{"name":"a"},"spec":{"holderIdentity":"x","bogus":1}});
        let out = Resource::Leases.normalize(lease).unwrap();
        assert_eq!(out["spec"], json!({"holderIdentity":"x"}));
        let bad = json!({"apiVersion":"coordination.k8s.io/v1","kind":"Lease",
            "metadata":{"name":"a"},"spec":{"holderIdentity":5}});
        assert!(Resource::Leases.normalize(bad).is_err());
    }
}
