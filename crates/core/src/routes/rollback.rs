//! Planning a rollback: the canary's weight goes to 0 and moves to the other
//! destinations of its route.
//!
//! Design rule: idempotent and exact. Each route keeps its total weight to the unit
//! (largest remainder), a route already at 0 for the canary is left alone, so planning
//! again after applying the plan gives an empty patch; and what the patch touches is
//! recorded so that `restore.rs` can put it back.

use serde_json::Value;

use super::error::{malformed, RouteError};
use super::parse::{check_canary_present, label, parse_routes, ParsedRoute, MAX_WEIGHT};
use super::plan::{summarize, PatchOp, SkippedRoute};
use super::route::{RecordedRoute, RouteKind};
use super::target::{CanaryTarget, StableTarget};

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

/// Splits `total` over entries in proportion to `weights`, preserving the sum exactly
/// (largest remainder; ties go to the earlier entry). All-zero weights split evenly.
pub(super) fn redistribute(total: u64, weights: &[u64]) -> Vec<u64> {
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
