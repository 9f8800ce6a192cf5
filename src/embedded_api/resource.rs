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
        qualify(self.kind(), self.group())
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

    /// Resources whose delete answers with the object rather than a `Status`.
    pub fn delete_returns_object(self) -> bool {
        matches!(self, Resource::VirtualServices | Resource::Pods)
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
        match self {
            Resource::Leases => round_trip::<coordination::v1::Lease>(object),
            Resource::Events => round_trip::<events::v1::Event>(object),
            Resource::Pods => round_trip::<core::v1::Pod>(object),
            Resource::Deployments => round_trip::<apps::v1::Deployment>(object),
            Resource::VirtualServices => Ok(object),
        }
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
