//! Reading the VirtualService: the routes that carry a `route[]` list, each entry's
//! destination and weight, what planning needs to address them (JSON pointers,
//! effective weights, short labels for summaries), and the check that the canary is
//! there at all.
//!
//! Design rule: read, never trust. Every value read is checked against the shape the
//! Istio API defines, and a bad one is an error naming its JSON pointer before any plan
//! is made; fields we do not model are not read at all.

use std::collections::BTreeSet;

use serde_json::Value;

use super::error::{malformed, RouteError};
use super::plan::PatchOp;
use super::route::{Destination, DestinationWeight, RecordedRoute, RouteKind, RouteRef};
use super::target::CanaryTarget;

/// Largest weight Istio accepts (the CRD declares `int32`).
pub(super) const MAX_WEIGHT: u64 = i32::MAX as u64;

/// A `route[]` entry as read.
#[derive(Debug, Clone)]
pub(super) struct ParsedDest {
    pub(super) destination: Destination,
    pub(super) weight: Option<u32>,
}

/// A route with a `route[]` list, as read.
#[derive(Debug)]
pub(super) struct ParsedRoute {
    pub(super) route: RouteRef,
    pub(super) dests: Vec<ParsedDest>,
}

impl ParsedRoute {
    pub(super) fn effective(&self, i: usize) -> u64 {
        effective_weight(self.dests[i].weight, self.dests.len())
    }

    pub(super) fn entry_pointer(&self, i: usize) -> String {
        format!("{}/route/{i}", self.route.pointer())
    }

    pub(super) fn weight_pointer(&self, i: usize) -> String {
        format!("{}/route/{i}/weight", self.route.pointer())
    }

    /// An operation setting entry `i`'s weight to `new` (`add` when the field is absent,
    /// so the patch is valid RFC 6902 too).
    pub(super) fn set_weight(&self, i: usize, new: u64) -> PatchOp {
        let path = self.weight_pointer(i);
        let value = Value::from(new);
        match self.dests[i].weight {
            Some(_) => PatchOp::Replace { path, value },
            None => PatchOp::Add { path, value },
        }
    }

    pub(super) fn recorded(&self, added: Option<Destination>) -> RecordedRoute {
        RecordedRoute {
            route: self.route.clone(),
            weights: self
                .dests
                .iter()
                .map(|d| DestinationWeight {
                    destination: d.destination.clone(),
                    weight: d.weight,
                })
                .collect(),
            added,
        }
    }

    /// Short names for the destinations in summaries: the subset when all entries share
    /// one host, the full destination otherwise.
    pub(super) fn labels(&self) -> Vec<String> {
        let one_host = self
            .dests
            .windows(2)
            .all(|w| w[0].destination.host == w[1].destination.host);
        self.dests
            .iter()
            .map(|d| label(&d.destination, one_host))
            .collect()
    }
}

pub(super) fn label(d: &Destination, one_host: bool) -> String {
    match (&d.subset, one_host) {
        (Some(s), true) => s.clone(),
        _ => d.to_string(),
    }
}

pub(super) fn effective_weight(weight: Option<u32>, entries: usize) -> u64 {
    match weight {
        Some(w) => u64::from(w),
        None if entries == 1 => 100,
        None => 0,
    }
}

/// The VirtualService's namespace and its routes that carry a `route[]` list (routes
/// that redirect, delegate or answer directly have none and cannot hold the canary).
pub(super) fn parse_routes(vs: &Value) -> Result<(Option<&str>, Vec<ParsedRoute>), RouteError> {
    let ns = vs.pointer("/metadata/namespace").and_then(Value::as_str);
    let spec = vs
        .get("spec")
        .filter(|s| s.is_object())
        .ok_or(RouteError::NoSpec)?;
    let mut routes = Vec::new();
    for kind in RouteKind::ALL {
        let list_path = format!("/spec/{}", kind.as_str());
        let list = match spec.get(kind.as_str()) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(list)) => list,
            Some(_) => return Err(malformed(list_path, "expected a list of routes")),
        };
        for (index, route) in list.iter().enumerate() {
            let path = format!("{list_path}/{index}");
            let obj = route
                .as_object()
                .ok_or_else(|| malformed(&path, "expected a route object"))?;
            let name = match obj.get("name") {
                None | Some(Value::Null) => None,
                Some(Value::String(n)) => Some(n.clone()),
                Some(_) => return Err(malformed(format!("{path}/name"), "expected a string")),
            };
            let raw = match obj.get("route") {
                None | Some(Value::Null) => continue,
                Some(raw) => raw,
            };
            let entries = raw.as_array().ok_or_else(|| {
                malformed(format!("{path}/route"), "expected a list of destinations")
            })?;
            let dests = entries
                .iter()
                .enumerate()
                .map(|(i, e)| parse_entry(e, &format!("{path}/route/{i}")))
                .collect::<Result<Vec<_>, _>>()?;
            routes.push(ParsedRoute {
                route: RouteRef { kind, index, name },
                dests,
            });
        }
    }
    Ok((ns, routes))
}

fn parse_entry(entry: &Value, path: &str) -> Result<ParsedDest, RouteError> {
    let obj = entry
        .as_object()
        .ok_or_else(|| malformed(path, "expected a route destination object"))?;
    let dpath = format!("{path}/destination");
    let d = obj
        .get("destination")
        .ok_or_else(|| malformed(path, "missing destination"))?
        .as_object()
        .ok_or_else(|| malformed(&dpath, "expected an object"))?;
    let host = d
        .get("host")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| malformed(format!("{dpath}/host"), "expected a non-empty string"))?;
    let subset = match d.get("subset") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(malformed(format!("{dpath}/subset"), "expected a string")),
    };
    let port =
        match d.get("port") {
            None | Some(Value::Null) => None,
            Some(p) => match p.get("number") {
                None | Some(Value::Null) => None,
                Some(n) => Some(n.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(
                    || {
                        malformed(
                            format!("{dpath}/port/number"),
                            format!("expected a port number, got {n}"),
                        )
                    },
                )?),
            },
        };
    let weight = match obj.get("weight") {
        None | Some(Value::Null) => None,
        Some(w) => Some(
            w.as_u64()
                .filter(|w| *w <= MAX_WEIGHT)
                .and_then(|w| u32::try_from(w).ok())
                .ok_or_else(|| {
                    malformed(
                        format!("{path}/weight"),
                        format!("weight must be an integer from 0 to {MAX_WEIGHT}, got {w}"),
                    )
                })?,
        ),
    };
    Ok(ParsedDest {
        destination: Destination {
            host: host.to_owned(),
            subset,
            port,
        },
        weight,
    })
}

pub(super) fn check_canary_present(
    routes: &[ParsedRoute],
    canary: &CanaryTarget,
    ns: Option<&str>,
) -> Result<(), RouteError> {
    let found = routes
        .iter()
        .flat_map(|r| &r.dests)
        .any(|d| canary.matches(&d.destination, ns));
    if found {
        return Ok(());
    }
    let present: BTreeSet<String> = routes
        .iter()
        .flat_map(|r| &r.dests)
        .map(|d| d.destination.to_string())
        .collect();
    Err(RouteError::CanaryNotFound {
        canary: canary.to_string(),
        present: present.into_iter().collect(),
    })
}
