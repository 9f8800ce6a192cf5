//! The canary and the stable target as configured, and which destinations they name.
//!
//! Design rule: one rule decides whether a destination is the canary: every field the
//! target sets must equal the destination's, hosts compared in their canonical form (a
//! short service name resolved in the VirtualService's namespace, see the `routes`
//! module docs). Planning a rollback and reading the weights both ask
//! [`CanaryTarget::matches`].

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::RouteError;
use super::route::Destination;

/// The cluster DNS domain assumed when expanding short service names.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// The canary, named by host and/or subset. A destination is the canary when every field
/// set here equals the destination's (hosts compared as described in the `routes` module
/// docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryTarget {
    /// Service host, short or fully qualified.
    pub host: Option<String>,
    /// Subset name from the DestinationRule.
    pub subset: Option<String>,
}

impl CanaryTarget {
    /// Builds a target; at least one of `host` and `subset` must be set and non-empty.
    pub fn new(host: Option<String>, subset: Option<String>) -> Result<Self, RouteError> {
        let (host, subset) =
            non_empty_pair(host, subset).ok_or(RouteError::EmptyTarget("canary"))?;
        Ok(Self { host, subset })
    }

    /// Whether `d` is the canary, in a VirtualService of namespace `ns`.
    pub fn matches(&self, d: &Destination, ns: Option<&str>) -> bool {
        target_matches(self.host.as_deref(), self.subset.as_deref(), d, ns)
    }
}

impl fmt::Display for CanaryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_target(self.host.as_deref(), self.subset.as_deref(), f)
    }
}

/// Where the traffic goes for a route whose only destination is the canary
/// (`--stable-host` / `--stable-subset`). A missing host means the canary's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StableTarget {
    /// Service host; defaults to the canary destination's host.
    pub host: Option<String>,
    /// Subset name.
    pub subset: Option<String>,
}

impl StableTarget {
    /// Builds a target; at least one of `host` and `subset` must be set and non-empty.
    pub fn new(host: Option<String>, subset: Option<String>) -> Result<Self, RouteError> {
        let (host, subset) =
            non_empty_pair(host, subset).ok_or(RouteError::EmptyTarget("stable"))?;
        Ok(Self { host, subset })
    }

    /// The destination that replaces `canary`. The port is kept only when the service stays
    /// the same, since another service may listen elsewhere.
    pub(super) fn destination_for(&self, canary: &Destination) -> Destination {
        match &self.host {
            Some(host) => Destination {
                host: host.clone(),
                subset: self.subset.clone(),
                port: if host == &canary.host {
                    canary.port
                } else {
                    None
                },
            },
            None => Destination {
                host: canary.host.clone(),
                subset: self.subset.clone(),
                port: canary.port,
            },
        }
    }
}

fn non_empty_pair(
    host: Option<String>,
    subset: Option<String>,
) -> Option<(Option<String>, Option<String>)> {
    let host = host.filter(|h| !h.is_empty());
    let subset = subset.filter(|s| !s.is_empty());
    (host.is_some() || subset.is_some()).then_some((host, subset))
}

fn fmt_target(host: Option<&str>, subset: Option<&str>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match (host, subset) {
        (Some(h), Some(s)) => write!(f, "host={h} subset={s}"),
        (Some(h), None) => write!(f, "host={h}"),
        (None, Some(s)) => write!(f, "subset={s}"),
        (None, None) => write!(f, "(any)"),
    }
}

fn target_matches(
    host: Option<&str>,
    subset: Option<&str>,
    d: &Destination,
    ns: Option<&str>,
) -> bool {
    host.is_none_or(|h| canonical_host(h, ns) == canonical_host(&d.host, ns))
        && subset.is_none_or(|s| d.subset.as_deref() == Some(s))
}

/// The fully qualified form of `host` when it names a service of namespace `ns` (see the
/// `routes` module docs); any other host is returned lower-cased, without trailing dot.
pub fn canonical_host(host: &str, ns: Option<&str>) -> String {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    let Some(ns) = ns.map(str::to_ascii_lowercase) else {
        return h;
    };
    let labels: Vec<&str> = h.split('.').collect();
    match labels.as_slice() {
        [svc] if !svc.is_empty() && *svc != "*" => format!("{svc}.{ns}.svc.{CLUSTER_DOMAIN}"),
        [svc, n] if *n == ns => format!("{svc}.{ns}.svc.{CLUSTER_DOMAIN}"),
        [svc, n, "svc"] if *n == ns => format!("{svc}.{ns}.svc.{CLUSTER_DOMAIN}"),
        _ => h,
    }
}
