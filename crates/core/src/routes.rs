//! VirtualService route rewriting: send the canary's traffic back to stable, and put
//! recorded weights back later.
//!
//! Everything here works on the whole VirtualService as a [`serde_json::Value`], so no
//! field we do not model is lost, and produces RFC 6902 JSON patch operations instead of
//! a rewritten object. The operations only say what changes; the caller makes the patch
//! conditional on the object it planned from (see `cluster::virtual_service`).
//!
//! Istio semantics followed here:
//! - `spec.http[]`, `spec.tls[]` and `spec.tcp[]` routes all carry `route[]` entries of
//!   `{destination: {host, subset, port: {number}}, weight}`; only http routes have a `name`.
//! - Weights are relative integers. A lone destination without a weight gets everything
//!   (counted as 100); in a route with several destinations a missing weight is 0.
//!
//! Host matching: Istio resolves a short host relative to the VirtualService's namespace,
//! so with the namespace `ns` taken from `metadata.namespace`, the hosts `reviews`,
//! `reviews.ns`, `reviews.ns.svc` and `reviews.ns.svc.cluster.local` all name the same
//! service (case-insensitive, trailing dot ignored). A host naming another namespace, a
//! wildcard or an external name is compared as written. Without a namespace, hosts are
//! compared as written (case-insensitive).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The cluster DNS domain assumed when expanding short service names.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Largest weight Istio accepts (the CRD declares `int32`).
const MAX_WEIGHT: u64 = i32::MAX as u64;

/// Errors found while reading a VirtualService or planning a change to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A target with neither host nor subset would match every destination.
    #[error("a {0} target needs a host, a subset or both")]
    EmptyTarget(&'static str),

    /// The object has no `spec` object.
    #[error("the VirtualService has no spec")]
    NoSpec,

    /// No route of the VirtualService holds the canary destination.
    #[error("canary destination {canary} not found in any route; destinations present: {}", list_or_none(.present))]
    CanaryNotFound {
        /// The canary as configured.
        canary: String,
        /// Every destination the VirtualService routes to.
        present: Vec<String>,
    },

    /// `--route` names no http route of the VirtualService.
    #[error("no http route named {name:?}; http route names: {}", list_or_none(.present))]
    RouteNotFound {
        /// The requested route name.
        name: String,
        /// The names the http routes have.
        present: Vec<String>,
    },

    /// A value in the object does not have the shape the Istio API defines.
    #[error("malformed VirtualService at {path}: {problem}")]
    Malformed {
        /// JSON pointer of the offending value.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

fn malformed(path: impl Into<String>, problem: impl Into<String>) -> RouteError {
    RouteError::Malformed {
        path: path.into(),
        problem: problem.into(),
    }
}

/// The canary, named by host and/or subset. A destination is the canary when every field
/// set here equals the destination's (hosts compared as described in the module docs).
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
    fn destination_for(&self, canary: &Destination) -> Destination {
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

/// The fully qualified form of `host` when it names a service of namespace `ns`
/// (see the module docs); any other host is returned lower-cased, without trailing dot.
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

/// Which list of `spec` a route lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    /// `spec.http[]`
    Http,
    /// `spec.tls[]`
    Tls,
    /// `spec.tcp[]`
    Tcp,
}

impl RouteKind {
    /// All kinds, in the order routes are visited.
    pub const ALL: [RouteKind; 3] = [RouteKind::Http, RouteKind::Tls, RouteKind::Tcp];

    /// The field name under `spec`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Http => "http",
            RouteKind::Tls => "tls",
            RouteKind::Tcp => "tcp",
        }
    }
}

/// Identifies one route of a VirtualService.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRef {
    /// The list it lives in.
    pub kind: RouteKind,
    /// Its index in that list.
    pub index: usize,
    /// Its `name` (http routes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl RouteRef {
    /// JSON pointer of the route object.
    pub fn pointer(&self) -> String {
        format!("/spec/{}/{}", self.kind.as_str(), self.index)
    }
}

impl fmt::Display for RouteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.kind.as_str(), self.index)?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        Ok(())
    }
}

/// An Istio `Destination`: where a route entry sends traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Destination {
    /// Service host as written in the VirtualService.
    pub host: String,
    /// Subset name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// `port.number`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

impl Destination {
    /// The Istio JSON form of this destination.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("host".into(), Value::String(self.host.clone()));
        if let Some(s) = &self.subset {
            m.insert("subset".into(), Value::String(s.clone()));
        }
        if let Some(p) = self.port {
            m.insert("port".into(), serde_json::json!({ "number": p }));
        }
        Value::Object(m)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        if let Some(s) = &self.subset {
            write!(f, "/{s}")?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// A destination with its weight exactly as written (`None`: no `weight` field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationWeight {
    /// The destination.
    pub destination: Destination,
    /// The `weight` field; `None` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// What a route looked like before a rollback: enough to put it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRoute {
    /// The route.
    #[serde(flatten)]
    pub route: RouteRef,
    /// Its `route[]` entries before the rollback, in order.
    pub weights: Vec<DestinationWeight>,
    /// The stable destination the rollback appended to a canary-only route, if any;
    /// a restore removes it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<Destination>,
}

/// One RFC 6902 JSON patch operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum PatchOp {
    /// Fail the whole patch unless the value at `path` equals `value`.
    Test {
        /// JSON pointer.
        path: String,
        /// Expected value.
        value: Value,
    },
    /// Set an object member or insert an array element.
    Add {
        /// JSON pointer.
        path: String,
        /// New value.
        value: Value,
    },
    /// Replace an existing value.
    Replace {
        /// JSON pointer.
        path: String,
        /// New value.
        value: Value,
    },
    /// Remove a value.
    Remove {
        /// JSON pointer.
        path: String,
    },
}

/// Escapes one JSON pointer reference token (RFC 6901): `~` → `~0`, `/` → `~1`.
pub fn escape_pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A route the plan leaves alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRoute {
    /// The route.
    pub route: RouteRef,
    /// Why it is not touched.
    pub reason: String,
}

impl fmt::Display for SkippedRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.route, self.reason)
    }
}

/// What a rollback changes, as a guarded JSON patch plus a record of the old weights.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackPlan {
    /// The patch; empty when nothing needs to change.
    pub ops: Vec<PatchOp>,
    /// The weights of every route the patch touches, before the patch.
    pub previous: Vec<RecordedRoute>,
    /// One line per touched route, e.g. `http[0] "reviews-route": v1 90→100, v2 10→0`.
    pub changes: Vec<String>,
    /// Routes that hold a canary with traffic but are not touched.
    pub skipped: Vec<SkippedRoute>,
}

impl RollbackPlan {
    /// True when applying the plan would change nothing.
    pub fn is_noop(&self) -> bool {
        self.ops.is_empty()
    }

    /// The changes and skipped routes on one line, for logs, Events and annotations.
    pub fn summary(&self) -> String {
        summarize(&self.changes, &self.skipped)
    }
}

/// What a restore changes.
#[derive(Debug, Clone, PartialEq)]
pub struct RestorePlan {
    /// The patch; empty when nothing needs to change.
    pub ops: Vec<PatchOp>,
    /// One line per touched route.
    pub changes: Vec<String>,
    /// Recorded routes that cannot be restored (gone, or their destinations changed).
    pub skipped: Vec<SkippedRoute>,
}

impl RestorePlan {
    /// True when applying the plan would change nothing.
    pub fn is_noop(&self) -> bool {
        self.ops.is_empty()
    }

    /// The changes and skipped routes on one line.
    pub fn summary(&self) -> String {
        summarize(&self.changes, &self.skipped)
    }
}

fn summarize(changes: &[String], skipped: &[SkippedRoute]) -> String {
    let mut parts: Vec<String> = changes.to_vec();
    parts.extend(skipped.iter().map(|s| format!("skipped {s}")));
    if parts.is_empty() {
        "no change".to_owned()
    } else {
        parts.join("; ")
    }
}

/// A destination with the share of traffic it receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedDestination {
    /// The destination.
    pub destination: Destination,
    /// Its effective weight (a lone destination without a weight counts as 100).
    pub weight: u32,
    /// Whether it is the canary.
    pub canary: bool,
}

/// The effective weights of one route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteWeights {
    /// The route.
    pub route: RouteRef,
    /// Its destinations in order.
    pub destinations: Vec<WeightedDestination>,
}

impl RouteWeights {
    /// Sum of the canary destinations' weights.
    pub fn canary_weight(&self) -> u64 {
        self.destinations
            .iter()
            .filter(|d| d.canary)
            .map(|d| u64::from(d.weight))
            .sum()
    }

    /// Sum of all weights.
    pub fn total_weight(&self) -> u64 {
        self.destinations.iter().map(|d| u64::from(d.weight)).sum()
    }
}

/// The canary's weights across the routes that hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryWeights {
    /// Every route holding a canary destination.
    pub routes: Vec<RouteWeights>,
}

impl CanaryWeights {
    /// Whether any route still sends the canary a non-zero share.
    pub fn receives_traffic(&self) -> bool {
        self.routes.iter().any(|r| r.canary_weight() > 0)
    }
}

/// A `route[]` entry as read.
#[derive(Debug, Clone)]
struct ParsedDest {
    destination: Destination,
    weight: Option<u32>,
}

/// A route with a `route[]` list, as read.
#[derive(Debug)]
struct ParsedRoute {
    route: RouteRef,
    dests: Vec<ParsedDest>,
}

impl ParsedRoute {
    fn effective(&self, i: usize) -> u64 {
        effective_weight(self.dests[i].weight, self.dests.len())
    }

    fn entry_pointer(&self, i: usize) -> String {
        format!("{}/route/{i}", self.route.pointer())
    }

    fn weight_pointer(&self, i: usize) -> String {
        format!("{}/route/{i}/weight", self.route.pointer())
    }

    /// An operation setting entry `i`'s weight to `new` (`add` when the field is absent,
    /// so the patch is valid RFC 6902 too).
    fn set_weight(&self, i: usize, new: u64) -> PatchOp {
        let path = self.weight_pointer(i);
        let value = Value::from(new);
        match self.dests[i].weight {
            Some(_) => PatchOp::Replace { path, value },
            None => PatchOp::Add { path, value },
        }
    }

    fn recorded(&self, added: Option<Destination>) -> RecordedRoute {
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
    fn labels(&self) -> Vec<String> {
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

fn label(d: &Destination, one_host: bool) -> String {
    match (&d.subset, one_host) {
        (Some(s), true) => s.clone(),
        _ => d.to_string(),
    }
}

fn effective_weight(weight: Option<u32>, entries: usize) -> u64 {
    match weight {
        Some(w) => u64::from(w),
        None if entries == 1 => 100,
        None => 0,
    }
}

/// The VirtualService's namespace and its routes that carry a `route[]` list (routes
/// that redirect, delegate or answer directly have none and cannot hold the canary).
fn parse_routes(vs: &Value) -> Result<(Option<&str>, Vec<ParsedRoute>), RouteError> {
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

/// Splits `total` over entries in proportion to `weights`, preserving the sum exactly
/// (largest remainder; ties go to the earlier entry). All-zero weights split evenly.
fn redistribute(total: u64, weights: &[u64]) -> Vec<u64> {
    if weights.is_empty() {
        return Vec::new();
    }
    let sum: u64 = weights.iter().sum();
    let (mut shares, remainders): (Vec<u64>, Vec<u128>) = if sum == 0 {
        let n = weights.len() as u64;
        (vec![total / n; weights.len()], vec![0; weights.len()])
    } else {
        weights
            .iter()
            .map(|&w| {
                let scaled = u128::from(total) * u128::from(w);
                // The quotient is at most `total`, so it fits in u64.
                ((scaled / u128::from(sum)) as u64, scaled % u128::from(sum))
            })
            .unzip()
    };
    let left = total - shares.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| remainders[b].cmp(&remainders[a]).then(a.cmp(&b)));
    for &i in order.iter().take(left as usize) {
        shares[i] += 1;
    }
    shares
}

fn check_weight(route: &ParsedRoute, i: usize, w: u64) -> Result<(), RouteError> {
    if w > MAX_WEIGHT {
        return Err(malformed(
            route.weight_pointer(i),
            format!(
                "moving the canary's weight here gives {w}, above the Istio maximum {MAX_WEIGHT}"
            ),
        ));
    }
    Ok(())
}

/// Plans a rollback: in every route holding the canary (`spec.http`, `spec.tls`,
/// `spec.tcp`; http routes only those named `route_filter` when given), the canary's
/// weight goes to 0 and moves to the other destinations in proportion to their weights
/// (evenly when they are all 0), keeping the route's total exactly. A route whose only
/// destinations are the canary gets `stable` appended with the whole weight, or is
/// reported in [`RollbackPlan::skipped`] when `stable` is `None`. Routes where the canary
/// already has weight 0 are left alone, so planning again after applying the plan gives
/// an empty patch.
pub fn plan_rollback(
    vs: &Value,
    canary: &CanaryTarget,
    stable: Option<&StableTarget>,
    route_filter: Option<&str>,
) -> Result<RollbackPlan, RouteError> {
    let (ns, routes) = parse_routes(vs)?;
    check_canary_present(&routes, canary, ns)?;
    check_route_filter(&routes, route_filter)?;

    let mut plan = RollbackPlan {
        ops: Vec::new(),
        previous: Vec::new(),
        changes: Vec::new(),
        skipped: Vec::new(),
    };
    for route in &routes {
        let is_canary: Vec<bool> = route
            .dests
            .iter()
            .map(|d| canary.matches(&d.destination, ns))
            .collect();
        let canary_total: u64 = (0..route.dests.len())
            .filter(|&i| is_canary[i])
            .map(|i| route.effective(i))
            .sum();
        if canary_total == 0 {
            continue;
        }
        if let (Some(wanted), RouteKind::Http) = (route_filter, route.route.kind) {
            if route.route.name.as_deref() != Some(wanted) {
                plan.skipped.push(SkippedRoute {
                    route: route.route.clone(),
                    reason: format!("not selected by --route {wanted}"),
                });
                continue;
            }
        }
        let labels = route.labels();
        let stable_idx: Vec<usize> = (0..route.dests.len()).filter(|&i| !is_canary[i]).collect();
        let mut ops = Vec::new();
        let mut parts = Vec::new();
        let mut added = None;

        // The canary entries go to 0 in both cases below.
        for i in (0..route.dests.len()).filter(|&i| is_canary[i]) {
            let old = route.effective(i);
            if old != 0 {
                ops.push(route.set_weight(i, 0));
                parts.push((i, format!("{} {old}→0", labels[i])));
            }
        }

        if stable_idx.is_empty() {
            let Some(stable) = stable else {
                plan.skipped.push(SkippedRoute {
                    route: route.route.clone(),
                    reason: "all its traffic goes to the canary and no stable destination \
                             (--stable-host/--stable-subset) is configured"
                        .to_owned(),
                });
                continue;
            };
            let first_canary = &route.dests[0].destination;
            let dest = stable.destination_for(first_canary);
            if canary.matches(&dest, ns) {
                plan.skipped.push(SkippedRoute {
                    route: route.route.clone(),
                    reason: format!("the stable destination {dest} is the canary itself"),
                });
                continue;
            }
            if canary_total > MAX_WEIGHT {
                return Err(malformed(
                    format!("{}/route", route.route.pointer()),
                    format!("the canary weights add up to {canary_total}, above the Istio maximum {MAX_WEIGHT}"),
                ));
            }
            ops.push(PatchOp::Add {
                path: route.entry_pointer(route.dests.len()),
                value: serde_json::json!({ "destination": dest.to_json(), "weight": canary_total }),
            });
            let added_label = label(&dest, dest.host == first_canary.host);
            parts.push((
                route.dests.len(),
                format!("{added_label} (added) 0→{canary_total}"),
            ));
            added = Some(dest);
        } else {
            let old: Vec<u64> = stable_idx.iter().map(|&i| route.effective(i)).collect();
            let total = canary_total + old.iter().sum::<u64>();
            let new = redistribute(total, &old);
            for ((&i, &o), &n) in stable_idx.iter().zip(&old).zip(&new) {
                check_weight(route, i, n)?;
                if n != o {
                    ops.push(route.set_weight(i, n));
                    parts.push((i, format!("{} {o}→{n}", labels[i])));
                }
            }
        }
        // Summaries read best in route order.
        parts.sort_by_key(|(i, _)| *i);
        let parts: Vec<String> = parts.into_iter().map(|(_, p)| p).collect();

        plan.ops.extend(ops);
        plan.previous.push(route.recorded(added));
        plan.changes
            .push(format!("{}: {}", route.route, parts.join(", ")));
    }
    Ok(plan)
}

fn check_canary_present(
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

fn check_route_filter(
    routes: &[ParsedRoute],
    route_filter: Option<&str>,
) -> Result<(), RouteError> {
    let Some(wanted) = route_filter else {
        return Ok(());
    };
    let http_names = || {
        routes
            .iter()
            .filter(|r| r.route.kind == RouteKind::Http)
            .filter_map(|r| r.route.name.clone())
    };
    if http_names().any(|n| n == wanted) {
        return Ok(());
    }
    Err(RouteError::RouteNotFound {
        name: wanted.to_owned(),
        present: http_names().collect(),
    })
}

/// Plans putting back the weights recorded by a rollback. A recorded route is restored
/// only if it still has the same destinations in the same order (plus the stable entry
/// the rollback appended, which is removed); otherwise it is reported in
/// [`RestorePlan::skipped`]. A named http route that moved is found by its name.
/// Routes already at their recorded weights produce no operations.
pub fn plan_restore(vs: &Value, recorded: &[RecordedRoute]) -> Result<RestorePlan, RouteError> {
    let (_, routes) = parse_routes(vs)?;
    let mut plan = RestorePlan {
        ops: Vec::new(),
        changes: Vec::new(),
        skipped: Vec::new(),
    };
    for rec in recorded {
        let Some(route) = find_recorded(&routes, &rec.route) else {
            plan.skipped.push(SkippedRoute {
                route: rec.route.clone(),
                reason: "the route no longer exists".to_owned(),
            });
            continue;
        };
        let expected: Vec<&Destination> = rec
            .weights
            .iter()
            .map(|w| &w.destination)
            .chain(rec.added.as_ref())
            .collect();
        let current: Vec<&Destination> = route.dests.iter().map(|d| &d.destination).collect();
        if expected != current {
            let show = |ds: &[&Destination]| {
                ds.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            plan.skipped.push(SkippedRoute {
                route: route.route.clone(),
                reason: format!(
                    "its destinations changed since the rollback: now [{}], expected [{}]",
                    show(&current),
                    show(&expected)
                ),
            });
            continue;
        }

        let labels = route.labels();
        let mut ops = Vec::new();
        let mut parts = Vec::new();
        for (i, want) in rec.weights.iter().enumerate() {
            let have = route.dests[i].weight;
            if have == want.weight {
                continue;
            }
            let path = route.weight_pointer(i);
            ops.push(match want.weight {
                None => PatchOp::Remove { path },
                Some(w) if have.is_some() => PatchOp::Replace {
                    path,
                    value: Value::from(w),
                },
                Some(w) => PatchOp::Add {
                    path,
                    value: Value::from(w),
                },
            });
            let n = rec.weights.len() + usize::from(rec.added.is_some());
            parts.push(format!(
                "{} {}→{}",
                labels[i],
                effective_weight(have, n),
                effective_weight(want.weight, rec.weights.len())
            ));
        }
        if rec.added.is_some() {
            // Weights were set above by index; removing the last entry shifts none of them.
            let last = route.dests.len() - 1;
            ops.push(PatchOp::Remove {
                path: route.entry_pointer(last),
            });
            parts.push(format!("{} (removed)", labels[last]));
        }
        if parts.is_empty() {
            continue;
        }
        plan.ops.extend(ops);
        let moved = if route.route.index != rec.route.index {
            format!(" (was {}[{}])", rec.route.kind.as_str(), rec.route.index)
        } else {
            String::new()
        };
        plan.changes
            .push(format!("{}{moved}: {}", route.route, parts.join(", ")));
    }
    Ok(plan)
}

fn find_recorded<'r>(routes: &'r [ParsedRoute], rec: &RouteRef) -> Option<&'r ParsedRoute> {
    let at_index = routes
        .iter()
        .find(|r| r.route.kind == rec.kind && r.route.index == rec.index);
    match &rec.name {
        Some(name) if at_index.and_then(|r| r.route.name.as_ref()) != Some(name) => routes
            .iter()
            .find(|r| r.route.kind == rec.kind && r.route.name.as_ref() == Some(name)),
        _ => at_index,
    }
}

/// The effective weights of every route that has a `route[]` list, with the canary
/// destinations marked when `canary` is given. For `status` output.
pub fn current_weights(
    vs: &Value,
    canary: Option<&CanaryTarget>,
) -> Result<Vec<RouteWeights>, RouteError> {
    let (ns, routes) = parse_routes(vs)?;
    Ok(weights_of(&routes, canary, ns))
}

fn weights_of(
    routes: &[ParsedRoute],
    canary: Option<&CanaryTarget>,
    ns: Option<&str>,
) -> Vec<RouteWeights> {
    routes
        .iter()
        .map(|r| RouteWeights {
            route: r.route.clone(),
            destinations: r
                .dests
                .iter()
                .enumerate()
                .map(|(i, d)| WeightedDestination {
                    destination: d.destination.clone(),
                    // Parsed weights are at most i32::MAX, and 100 for a lone entry.
                    weight: u32::try_from(r.effective(i)).unwrap_or(u32::MAX),
                    canary: canary.is_some_and(|c| c.matches(&d.destination, ns)),
                })
                .collect(),
        })
        .collect()
}

/// The canary's weights in every route that holds it; errors when no route does.
/// [`CanaryWeights::receives_traffic`] tells whether a rollback must be (re)asserted.
pub fn canary_weight(vs: &Value, canary: &CanaryTarget) -> Result<CanaryWeights, RouteError> {
    let (ns, routes) = parse_routes(vs)?;
    check_canary_present(&routes, canary, ns)?;
    let routes = weights_of(&routes, Some(canary), ns)
        .into_iter()
        .filter(|r| r.destinations.iter().any(|d| d.canary))
        .collect();
    Ok(CanaryWeights { routes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canary_subset(s: &str) -> CanaryTarget {
        CanaryTarget::new(None, Some(s.into())).unwrap()
    }

    fn stable_subset(s: &str) -> StableTarget {
        StableTarget::new(None, Some(s.into())).unwrap()
    }

    /// Applies `ops` with an independent RFC 6902 implementation.
    fn apply(vs: &Value, ops: &[PatchOp]) -> Result<Value, String> {
        let patch: json_patch::Patch =
            serde_json::from_value(serde_json::to_value(ops).unwrap()).unwrap();
        let mut out = vs.clone();
        json_patch::patch(&mut out, &patch).map_err(|e| e.to_string())?;
        Ok(out)
    }

    fn dest(subset: &str, weight: Option<u64>) -> Value {
        let mut e = json!({ "destination": { "host": "reviews", "subset": subset } });
        if let Some(w) = weight {
            e["weight"] = json!(w);
        }
        e
    }

    fn vs_with(spec: Value) -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": { "name": "reviews", "namespace": "default", "resourceVersion": "7" },
            "spec": spec,
        })
    }

    fn vs_90_10() -> Value {
        vs_with(json!({
            "hosts": ["reviews"],
            "http": [{
                "name": "reviews-route",
                "route": [dest("v1", Some(90)), dest("v2", Some(10))]
            }]
        }))
    }

    fn weights_at(vs: &Value, path: &str) -> Vec<Option<u64>> {
        vs.pointer(path)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.get("weight").and_then(Value::as_u64))
            .collect()
    }

    /// Plans, applies, checks that planning again is a no-op and that restoring gives
    /// back the original object exactly.
    fn rollback_roundtrip(
        vs: &Value,
        canary: &CanaryTarget,
        stable: Option<&StableTarget>,
    ) -> (RollbackPlan, Value) {
        let plan = plan_rollback(vs, canary, stable, None).unwrap();
        let after = apply(vs, &plan.ops).unwrap();
        let again = plan_rollback(&after, canary, stable, None).unwrap();
        assert!(again.is_noop(), "second plan not empty: {:?}", again.ops);
        let restore = plan_restore(&after, &plan.previous).unwrap();
        assert!(restore.skipped.is_empty(), "{:?}", restore.skipped);
        assert_eq!(
            &apply(&after, &restore.ops).unwrap(),
            vs,
            "restore did not give back the original"
        );
        (plan, after)
    }

    #[test]
    fn ninety_ten_moves_canary_weight_to_stable() {
        let vs = vs_90_10();
        let plan = plan_rollback(&vs, &canary_subset("v2"), None, None).unwrap();
        assert_eq!(
            plan.ops,
            vec![
                PatchOp::Replace {
                    path: "/spec/http/0/route/1/weight".into(),
                    value: json!(0)
                },
                PatchOp::Replace {
                    path: "/spec/http/0/route/0/weight".into(),
                    value: json!(100)
                },
            ]
        );
        assert_eq!(
            plan.changes,
            vec![r#"http[0] "reviews-route": v1 90→100, v2 10→0"#]
        );
        assert_eq!(
            plan.summary(),
            r#"http[0] "reviews-route": v1 90→100, v2 10→0"#
        );
        assert!(plan.skipped.is_empty());
        assert_eq!(
            plan.previous,
            vec![RecordedRoute {
                route: RouteRef {
                    kind: RouteKind::Http,
                    index: 0,
                    name: Some("reviews-route".into())
                },
                weights: vec![
                    DestinationWeight {
                        destination: Destination {
                            host: "reviews".into(),
                            subset: Some("v1".into()),
                            port: None
                        },
                        weight: Some(90)
                    },
                    DestinationWeight {
                        destination: Destination {
                            host: "reviews".into(),
                            subset: Some("v2".into()),
                            port: None
                        },
                        weight: Some(10)
                    },
                ],
                added: None,
            }]
        );
        let (_, after) = rollback_roundtrip(&vs, &canary_subset("v2"), None);
        let mut expected = vs.clone();
        expected["spec"]["http"][0]["route"][0]["weight"] = json!(100);
        expected["spec"]["http"][0]["route"][1]["weight"] = json!(0);
        assert_eq!(after, expected);
    }

    #[test]
    fn two_stable_destinations_keep_their_ratio() {
        let vs = vs_with(json!({ "http": [{ "route": [
            dest("v1", Some(60)), dest("v3", Some(30)), dest("v2", Some(10))
        ]}]}));
        let (plan, after) = rollback_roundtrip(&vs, &canary_subset("v2"), None);
        assert_eq!(
            weights_at(&after, "/spec/http/0/route"),
            vec![Some(67), Some(33), Some(0)]
        );
        assert_eq!(plan.changes, vec!["http[0]: v1 60→67, v3 30→33, v2 10→0"]);
    }

    #[test]
    fn weights_not_summing_to_100_keep_their_total() {
        let vs = vs_with(json!({ "http": [{ "route": [
            dest("v1", Some(30)), dest("v3", Some(20)), dest("v2", Some(10))
        ]}]}));
        let (_, after) = rollback_roundtrip(&vs, &canary_subset("v2"), None);
        assert_eq!(
            weights_at(&after, "/spec/http/0/route"),
            vec![Some(36), Some(24), Some(0)]
        );

        // 1000 over 3 equal stables: 333.33 each, remainder to the first.
        let vs = vs_with(json!({ "http": [{ "route": [
            dest("a", Some(1)), dest("b", Some(1)), dest("c", Some(1)), dest("v2", Some(997))
        ]}]}));
        let (_, after) = rollback_roundtrip(&vs, &canary_subset("v2"), None);
        assert_eq!(
            weights_at(&after, "/spec/http/0/route"),
            vec![Some(334), Some(333), Some(333), Some(0)]
        );
    }

    #[test]
    fn stable_destinations_at_zero_share_evenly() {
        let vs = vs_with(json!({ "http": [{ "route": [
            dest("v1", Some(0)), dest("v3", None), dest("v2", Some(101))
        ]}]}));
        let (plan, after) = rollback_roundtrip(&vs, &canary_subset("v2"), None);
        assert_eq!(
            weights_at(&after, "/spec/http/0/route"),
            vec![Some(51), Some(50), Some(0)]
        );
        // A missing weight is added, not replaced, so the patch is valid RFC 6902.
        assert!(plan.ops.contains(&PatchOp::Add {
            path: "/spec/http/0/route/1/weight".into(),
            value: json!(50)
        }));
    }

    #[test]
    fn lone_canary_without_weight_gets_stable_appended() {
        let vs = vs_with(json!({ "http": [{ "route": [dest("v2", None)] }] }));
        let stable = stable_subset("v1");
        let (plan, after) = rollback_roundtrip(&vs, &canary_subset("v2"), Some(&stable));
        assert_eq!(
            after["spec"]["http"][0]["route"],
            json!([dest("v2", Some(0)), dest("v1", Some(100))])
        );
        assert_eq!(plan.changes, vec!["http[0]: v2 100→0, v1 (added) 0→100"]);
        assert_eq!(
            plan.previous[0].added,
            Some(Destination {
                host: "reviews".into(),
                subset: Some("v1".into()),
                port: None
            })
        );
    }

    #[test]
    fn lone_canary_with_stable_host_drops_the_port_of_another_service() {
        let vs = vs_with(json!({ "tcp": [{ "route": [
            { "destination": { "host": "reviews-canary", "port": { "number": 9080 } }, "weight": 100 }
        ]}]}));
        let canary = CanaryTarget::new(Some("reviews-canary".into()), None).unwrap();
        let stable = StableTarget::new(Some("reviews-stable".into()), None).unwrap();
        let (_, after) = rollback_roundtrip(&vs, &canary, Some(&stable));
        assert_eq!(
            after["spec"]["tcp"][0]["route"],
            json!([
                { "destination": { "host": "reviews-canary", "port": { "number": 9080 } }, "weight": 0 },
                { "destination": { "host": "reviews-stable" }, "weight": 100 }
            ])
        );
    }

    #[test]
    fn lone_canary_without_stable_is_reported_not_touched() {
        let vs = vs_with(json!({ "http": [
            { "name": "only-canary", "route": [dest("v2", None)] },
            { "name": "split", "route": [dest("v1", Some(80)), dest("v2", Some(20))] }
        ]}));
        let plan = plan_rollback(&vs, &canary_subset("v2"), None, None).unwrap();
        assert_eq!(plan.skipped.len(), 1);
        assert_eq!(plan.skipped[0].route.index, 0);
        assert!(
            plan.skipped[0].reason.contains("--stable-host"),
            "{}",
            plan.skipped[0].reason
        );
        assert!(plan.ops.iter().all(|op| !matches!(op, PatchOp::Replace { path, .. } | PatchOp::Add { path, .. } if path.starts_with("/spec/http/0/"))));
        let after = apply(&vs, &plan.ops).unwrap();
        assert_eq!(after["spec"]["http"][0], vs["spec"]["http"][0]);
        assert_eq!(
            weights_at(&after, "/spec/http/1/route"),
            vec![Some(100), Some(0)]
        );
        assert!(plan
            .summary()
            .contains(r#"skipped http[0] "only-canary": all its traffic goes to the canary"#));
    }

    #[test]
    fn stable_target_equal_to_canary_is_refused() {
        let vs = vs_with(json!({ "http": [{ "route": [dest("v2", None)] }] }));
        let plan =
            plan_rollback(&vs, &canary_subset("v2"), Some(&stable_subset("v2")), None).unwrap();
        assert!(plan.is_noop());
        assert!(plan.skipped[0].reason.contains("is the canary itself"));
    }

    #[test]
    fn tls_and_tcp_routes_are_rolled_back_too() {
        let route = |canary_w| {
            json!({ "route": [
                { "destination": { "host": "reviews", "subset": "v1", "port": { "number": 443 } }, "weight": 100 - canary_w },
                { "destination": { "host": "reviews", "subset": "v2", "port": { "number": 443 } }, "weight": canary_w }
            ]})
        };
        let mut tls = route(25);
        tls["match"] = json!([{ "port": 443, "sniHosts": ["reviews.example.com"] }]);
        let vs = vs_with(json!({ "tls": [tls], "tcp": [route(0), route(40)] }));
        let (plan, after) = rollback_roundtrip(&vs, &canary_subset("v2"), None);
        assert_eq!(
            weights_at(&after, "/spec/tls/0/route"),
            vec![Some(100), Some(0)]
        );
        assert_eq!(
            weights_at(&after, "/spec/tcp/0/route"),
            vec![Some(100), Some(0)]
        );
        assert_eq!(
            weights_at(&after, "/spec/tcp/1/route"),
            vec![Some(100), Some(0)]
        );
        assert_eq!(
            plan.changes,
            vec!["tls[0]: v1 75→100, v2 25→0", "tcp[1]: v1 60→100, v2 40→0"]
        );
        assert_eq!(
            after["spec"]["tls"][0]["match"],
            vs["spec"]["tls"][0]["match"]
        );
    }

    #[test]
    fn route_filter_limits_http_routes() {
        let vs = vs_with(json!({
            "http": [
                { "name": "api", "route": [dest("v1", Some(90)), dest("v2", Some(10))] },
                { "name": "web", "route": [dest("v1", Some(50)), dest("v2", Some(50))] }
            ],
            "tcp": [{ "route": [dest("v1", Some(70)), dest("v2", Some(30))] }]
        }));
        let plan = plan_rollback(&vs, &canary_subset("v2"), None, Some("web")).unwrap();
        let after = apply(&vs, &plan.ops).unwrap();
        assert_eq!(after["spec"]["http"][0], vs["spec"]["http"][0]);
        assert_eq!(
            weights_at(&after, "/spec/http/1/route"),
            vec![Some(100), Some(0)]
        );
        // tls and tcp routes have no name in the Istio API; the filter does not apply.
        assert_eq!(
            weights_at(&after, "/spec/tcp/0/route"),
            vec![Some(100), Some(0)]
        );
        assert_eq!(
            plan.skipped,
            vec![SkippedRoute {
                route: RouteRef {
                    kind: RouteKind::Http,
                    index: 0,
                    name: Some("api".into())
                },
                reason: "not selected by --route web".into()
            }]
        );

        let err = plan_rollback(&vs, &canary_subset("v2"), None, Some("nope")).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"no http route named "nope"; http route names: api, web"#
        );
    }

    #[test]
    fn canary_at_zero_is_left_alone() {
        let vs =
            vs_with(json!({ "http": [{ "route": [dest("v1", Some(100)), dest("v2", Some(0))] }] }));
        let plan = plan_rollback(&vs, &canary_subset("v2"), None, None).unwrap();
        assert!(plan.is_noop());
        assert!(plan.previous.is_empty());
        assert_eq!(plan.summary(), "no change");
        // A missing weight next to other destinations is 0 too.
        let vs =
            vs_with(json!({ "http": [{ "route": [dest("v1", Some(100)), dest("v2", None)] }] }));
        assert!(plan_rollback(&vs, &canary_subset("v2"), None, None)
            .unwrap()
            .is_noop());
    }

    #[test]
    fn fields_we_do_not_model_are_untouched() {
        let vs = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": { "name": "reviews", "namespace": "default", "labels": { "app": "reviews" } },
            "spec": {
                "hosts": ["reviews"],
                "gateways": ["mesh"],
                "x-unknown": { "kept": true },
                "http": [
                    { "name": "redirect", "match": [{ "uri": { "prefix": "/old" } }], "redirect": { "uri": "/new" } },
                    {
                        "name": "main",
                        "match": [{ "headers": { "end-user": { "exact": "jason" } } }],
                        "retries": { "attempts": 3, "perTryTimeout": "2s" },
                        "timeout": "10s",
                        "headers": { "request": { "set": { "x-a": "b" } } },
                        "route": [
                            { "destination": { "host": "reviews", "subset": "v1" }, "weight": 90,
                              "headers": { "response": { "add": { "x-v": "1" } } } },
                            { "destination": { "host": "reviews", "subset": "v2" }, "weight": 10, "x-extra": [1, 2] }
                        ]
                    }
                ]
            }
        });
        let (_, after) = rollback_roundtrip(&vs, &canary_subset("v2"), None);
        let mut expected = vs.clone();
        expected["spec"]["http"][1]["route"][0]["weight"] = json!(100);
        expected["spec"]["http"][1]["route"][1]["weight"] = json!(0);
        assert_eq!(after, expected);
    }

    #[test]
    fn plans_only_change_never_test_values() {
        // A `test` of a value is compared byte for byte with Go's encoding of the stored
        // object by a real API server; the caller pins the patch to the resourceVersion.
        let vs = vs_90_10();
        let plan = plan_rollback(&vs, &canary_subset("v2"), None, None).unwrap();
        assert!(!plan.is_noop());
        assert!(plan
            .ops
            .iter()
            .all(|op| !matches!(op, PatchOp::Test { .. })));
        let after = apply(&vs, &plan.ops).unwrap();
        let restore = plan_restore(&after, &plan.previous).unwrap();
        assert!(!restore.is_noop());
        assert!(restore
            .ops
            .iter()
            .all(|op| !matches!(op, PatchOp::Test { .. })));
    }

    #[test]
    fn short_and_qualified_hosts_match_in_the_virtualservice_namespace() {
        let ns = Some("default");
        let full = "reviews.default.svc.cluster.local";
        for h in [
            "reviews",
            "reviews.default",
            "reviews.default.svc",
            full,
            "Reviews.Default.svc.cluster.local.",
        ] {
            assert_eq!(canonical_host(h, ns), full, "{h}");
        }
        assert_eq!(canonical_host("reviews.other", ns), "reviews.other");
        assert_eq!(canonical_host("*", ns), "*");
        assert_eq!(canonical_host("reviews", None), "reviews");

        let vs = vs_with(json!({ "http": [{ "route": [
            { "destination": { "host": "reviews.default.svc.cluster.local" }, "weight": 80 },
            { "destination": { "host": "reviews-canary.default.svc.cluster.local" }, "weight": 20 }
        ]}]}));
        let canary = CanaryTarget::new(Some("reviews-canary".into()), None).unwrap();
        let (_, after) = rollback_roundtrip(&vs, &canary, None);
        assert_eq!(
            weights_at(&after, "/spec/http/0/route"),
            vec![Some(100), Some(0)]
        );

        // A same-named service of another namespace is not the canary.
        let mut other_ns = vs.clone();
        other_ns["metadata"]["namespace"] = json!("prod");
        let err = plan_rollback(&other_ns, &canary, None, None).unwrap_err();
        assert!(matches!(err, RouteError::CanaryNotFound { .. }), "{err}");
    }

    #[test]
    fn host_and_subset_must_both_match_when_both_are_set() {
        let vs = vs_with(json!({ "http": [{ "route": [
            { "destination": { "host": "ratings", "subset": "v2" }, "weight": 50 },
            dest("v1", Some(30)), dest("v2", Some(20))
        ]}]}));
        let canary = CanaryTarget::new(Some("reviews".into()), Some("v2".into())).unwrap();
        let (_, after) = rollback_roundtrip(&vs, &canary, None);
        // 100 split over 50/30: 62.5 and 37.5, the tie goes to the first.
        assert_eq!(
            weights_at(&after, "/spec/http/0/route"),
            vec![Some(63), Some(37), Some(0)]
        );
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let canary = canary_subset("v2");
        assert_eq!(
            plan_rollback(&json!({ "metadata": {} }), &canary, None, None).unwrap_err(),
            RouteError::NoSpec
        );
        let err = plan_rollback(&vs_90_10(), &canary_subset("v9"), None, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "canary destination subset=v9 not found in any route; destinations present: reviews/v1, reviews/v2"
        );
        for (bad, shown) in [
            (json!("10"), "\"10\""),
            (json!(-5), "-5"),
            (json!(2.5), "2.5"),
            (json!(3_000_000_000u64), "3000000000"),
        ] {
            let mut vs = vs_90_10();
            vs["spec"]["http"][0]["route"][1]["weight"] = bad;
            let err = plan_rollback(&vs, &canary, None, None).unwrap_err();
            assert_eq!(
                err,
                RouteError::Malformed {
                    path: "/spec/http/0/route/1/weight".into(),
                    problem: format!("weight must be an integer from 0 to 2147483647, got {shown}")
                }
            );
        }
        let mut vs = vs_90_10();
        vs["spec"]["http"][0]["route"][0]["destination"] = json!({ "subset": "v1" });
        assert_eq!(
            plan_rollback(&vs, &canary, None, None).unwrap_err().to_string(),
            "malformed VirtualService at /spec/http/0/route/0/destination/host: expected a non-empty string"
        );
        let vs = vs_with(json!({ "tcp": { "route": [] } }));
        assert!(
            matches!(plan_rollback(&vs, &canary, None, None), Err(RouteError::Malformed { path, .. }) if path == "/spec/tcp")
        );
        assert_eq!(
            CanaryTarget::new(Some(String::new()), None).unwrap_err(),
            RouteError::EmptyTarget("canary")
        );
        assert_eq!(
            StableTarget::new(None, None).unwrap_err(),
            RouteError::EmptyTarget("stable")
        );
    }

    #[test]
    fn merged_weight_above_the_istio_maximum_is_an_error() {
        let vs = vs_with(
            json!({ "http": [{ "route": [dest("v1", Some(2_000_000_000)), dest("v2", Some(2_000_000_000))] }] }),
        );
        let err = plan_rollback(&vs, &canary_subset("v2"), None, None).unwrap_err();
        assert!(
            matches!(err, RouteError::Malformed { ref path, .. } if path == "/spec/http/0/route/0/weight"),
            "{err}"
        );
    }

    #[test]
    fn restore_puts_back_recorded_weights_only_where_the_shape_is_unchanged() {
        let vs = vs_with(json!({ "http": [
            { "name": "a", "route": [dest("v1", Some(90)), dest("v2", Some(10))] },
            { "name": "b", "route": [dest("v1", Some(50)), dest("v2", Some(50))] }
        ]}));
        let plan = plan_rollback(&vs, &canary_subset("v2"), None, None).unwrap();
        let mut after = apply(&vs, &plan.ops).unwrap();
        // Someone adds a destination to route b after the rollback.
        after["spec"]["http"][1]["route"]
            .as_array_mut()
            .unwrap()
            .push(dest("v3", Some(0)));
        let restore = plan_restore(&after, &plan.previous).unwrap();
        assert_eq!(restore.changes, vec![r#"http[0] "a": v1 100→90, v2 0→10"#]);
        assert_eq!(restore.skipped.len(), 1);
        assert!(
            restore.skipped[0].reason.contains(
                "now [reviews/v1, reviews/v2, reviews/v3], expected [reviews/v1, reviews/v2]"
            ),
            "{}",
            restore.skipped[0].reason
        );
        let restored = apply(&after, &restore.ops).unwrap();
        assert_eq!(restored["spec"]["http"][0], vs["spec"]["http"][0]);
        assert_eq!(restored["spec"]["http"][1], after["spec"]["http"][1]);
        // Restoring again changes nothing.
        assert!(plan_restore(&restored, &plan.previous).unwrap().is_noop());
    }

    #[test]
    fn restore_finds_a_named_route_that_moved_and_reports_a_missing_one() {
        let vs = vs_90_10();
        let plan = plan_rollback(&vs, &canary_subset("v2"), None, None).unwrap();
        let mut after = apply(&vs, &plan.ops).unwrap();
        after["spec"]["http"].as_array_mut().unwrap().insert(
            0,
            json!({ "name": "new-first", "route": [dest("v1", None)] }),
        );
        let restore = plan_restore(&after, &plan.previous).unwrap();
        assert_eq!(
            restore.changes,
            vec![r#"http[1] "reviews-route" (was http[0]): v1 100→90, v2 0→10"#]
        );
        let restored = apply(&after, &restore.ops).unwrap();
        assert_eq!(restored["spec"]["http"][1], vs["spec"]["http"][0]);

        after["spec"]["http"].as_array_mut().unwrap().remove(1);
        let restore = plan_restore(&after, &plan.previous).unwrap();
        assert!(restore.is_noop());
        assert_eq!(restore.skipped[0].reason, "the route no longer exists");
    }

    #[test]
    fn recorded_routes_serialize_compactly_and_read_back() {
        let stable = stable_subset("v1");
        let vs = vs_with(json!({ "http": [{ "name": "r", "route": [dest("v2", None)] }] }));
        let plan = plan_rollback(&vs, &canary_subset("v2"), Some(&stable), None).unwrap();
        let json = serde_json::to_value(&plan.previous).unwrap();
        assert_eq!(
            json,
            json!([{
                "kind": "http", "index": 0, "name": "r",
                "weights": [{ "destination": { "host": "reviews", "subset": "v2" } }],
                "added": { "host": "reviews", "subset": "v1" }
            }])
        );
        let back: Vec<RecordedRoute> = serde_json::from_value(json).unwrap();
        assert_eq!(back, plan.previous);
    }

    #[test]
    fn canary_weight_tells_whether_the_canary_gets_traffic() {
        let vs = vs_90_10();
        let canary = canary_subset("v2");
        let before = canary_weight(&vs, &canary).unwrap();
        assert!(before.receives_traffic());
        assert_eq!(before.routes.len(), 1);
        assert_eq!(before.routes[0].canary_weight(), 10);
        assert_eq!(before.routes[0].total_weight(), 100);
        let plan = plan_rollback(&vs, &canary, None, None).unwrap();
        let after = apply(&vs, &plan.ops).unwrap();
        assert!(!canary_weight(&after, &canary).unwrap().receives_traffic());
        assert!(matches!(
            canary_weight(&vs, &canary_subset("v9")),
            Err(RouteError::CanaryNotFound { .. })
        ));

        let all = current_weights(&vs, None).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(
            all[0]
                .destinations
                .iter()
                .map(|d| d.weight)
                .collect::<Vec<_>>(),
            vec![90, 10]
        );
        assert!(all[0].destinations.iter().all(|d| !d.canary));
        let lone = vs_with(json!({ "tcp": [{ "route": [dest("v1", None)] }] }));
        assert_eq!(
            current_weights(&lone, None).unwrap()[0].destinations[0].weight,
            100
        );
    }

    #[test]
    fn patch_ops_serialize_as_rfc6902() {
        let ops = vec![
            PatchOp::Test {
                path: "/a".into(),
                value: json!(1),
            },
            PatchOp::Remove { path: "/b".into() },
        ];
        assert_eq!(
            serde_json::to_value(&ops).unwrap(),
            json!([{ "op": "test", "path": "/a", "value": 1 }, { "op": "remove", "path": "/b" }])
        );
        assert_eq!(
            escape_pointer_token("canary-guard.io/rollback"),
            "canary-guard.io~1rollback"
        );
        assert_eq!(escape_pointer_token("a~/b"), "a~0~1b");
    }

    #[test]
    fn redistribute_preserves_the_total_deterministically() {
        assert_eq!(redistribute(100, &[60, 30]), vec![67, 33]);
        assert_eq!(redistribute(100, &[1, 1, 1]), vec![34, 33, 33]);
        assert_eq!(redistribute(7, &[0, 0]), vec![4, 3]);
        assert_eq!(redistribute(0, &[0, 5]), vec![0, 0]);
        assert_eq!(redistribute(10, &[]), Vec::<u64>::new());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn apply(vs: &Value, ops: &[PatchOp]) -> Value {
        let patch: json_patch::Patch =
            serde_json::from_value(serde_json::to_value(ops).unwrap()).unwrap();
        let mut out = vs.clone();
        json_patch::patch(&mut out, &patch).unwrap();
        out
    }

    fn entry() -> impl Strategy<Value = Value> {
        (
            prop_oneof![
                Just("reviews"),
                Just("reviews.default.svc.cluster.local"),
                Just("ratings")
            ],
            prop_oneof![Just("v1"), Just("v3"), Just("canary")],
            proptest::option::of(0u64..=1000),
            any::<bool>(),
        )
            .prop_map(|(host, subset, weight, extra)| {
                let mut e = json!({ "destination": { "host": host, "subset": subset } });
                if let Some(w) = weight {
                    e["weight"] = json!(w);
                }
                if extra {
                    e["headers"] = json!({ "request": { "set": { "x-canary": subset } } });
                }
                e
            })
    }

    fn route() -> impl Strategy<Value = Value> {
        (proptest::collection::vec(entry(), 1..=4), any::<bool>()).prop_map(
            |(entries, with_match)| {
                let mut r = json!({ "route": entries, "x-unknown": 1 });
                if with_match {
                    r["match"] = json!([{ "port": 80 }]);
                }
                r
            },
        )
    }

    fn virtual_service() -> impl Strategy<Value = Value> {
        (
            proptest::collection::vec(route(), 0..=3),
            proptest::collection::vec(route(), 0..=2),
            proptest::collection::vec(route(), 0..=2),
        )
            .prop_map(|(mut http, tls, tcp)| {
                for (i, r) in http.iter_mut().enumerate() {
                    r["name"] = json!(format!("route-{i}"));
                }
                json!({
                    "metadata": { "name": "reviews", "namespace": "default" },
                    "spec": { "hosts": ["reviews"], "http": http, "tls": tls, "tcp": tcp }
                })
            })
    }

    /// The object with every weight removed and the entries a rollback appended dropped.
    fn without_weights(vs: &Value, appended: &[RecordedRoute]) -> Value {
        let mut out = vs.clone();
        for rec in appended.iter().filter(|r| r.added.is_some()) {
            let list = out
                .pointer_mut(&format!("{}/route", rec.route.pointer()))
                .unwrap();
            list.as_array_mut().unwrap().truncate(rec.weights.len());
        }
        for kind in RouteKind::ALL {
            for r in out["spec"][kind.as_str()]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                for e in r["route"].as_array_mut().into_iter().flatten() {
                    e.as_object_mut().unwrap().remove("weight");
                }
            }
        }
        out
    }

    fn route_weights(vs: &Value, canary: &CanaryTarget) -> Vec<RouteWeights> {
        current_weights(vs, Some(canary)).unwrap()
    }

    proptest! {
        #[test]
        fn rollback_invariants(vs in virtual_service(), with_stable in any::<bool>()) {
            let canary = CanaryTarget::new(None, Some("canary".into())).unwrap();
            let stable = StableTarget::new(None, Some("v1".into())).unwrap();
            let stable = with_stable.then_some(&stable);
            let plan = match plan_rollback(&vs, &canary, stable, None) {
                Err(RouteError::CanaryNotFound { .. }) => {
                    let found = route_weights(&vs, &canary).iter().any(|r| r.destinations.iter().any(|d| d.canary));
                    prop_assert!(!found);
                    return Ok(());
                }
                other => other.unwrap(),
            };
            let after = apply(&vs, &plan.ops);

            // Weights stay valid (non-negative int32), and nothing but weights changed.
            let before_w = route_weights(&vs, &canary);
            let after_w = route_weights(&after, &canary);
            prop_assert_eq!(before_w.len(), after_w.len());
            prop_assert_eq!(without_weights(&after, &plan.previous), without_weights(&vs, &[]));

            for (b, a) in before_w.iter().zip(&after_w) {
                let touched = plan.previous.iter().any(|p| p.route == b.route);
                let skipped = plan.skipped.iter().any(|s| s.route == b.route);
                if touched {
                    prop_assert_eq!(a.total_weight(), b.total_weight(), "total of {}", b.route);
                    prop_assert_eq!(a.canary_weight(), 0, "canary of {}", b.route);
                } else {
                    prop_assert_eq!(a, b);
                    prop_assert!(skipped || b.canary_weight() == 0);
                }
                if skipped {
                    // Only a canary-only route without a stable target is left with traffic.
                    prop_assert!(stable.is_none() && b.destinations.iter().all(|d| d.canary));
                }
            }

            prop_assert!(plan_rollback(&after, &canary, stable, None).unwrap().is_noop());
            let restore = plan_restore(&after, &plan.previous).unwrap();
            prop_assert_eq!(apply(&after, &restore.ops), vs);
        }
    }
}
