//! Planning a restore: the weights recorded by a rollback go back.
//!
//! Design rule: restore only what is provably the same route. A recorded route is put
//! back only while it still has the destinations it had (a named http route that moved
//! is found by its name); anything else is reported as skipped, never guessed at.

use serde_json::Value;

use super::error::RouteError;
use super::parse::{effective_weight, parse_routes, ParsedRoute};
use super::plan::{summarize, PatchOp, SkippedRoute};
use super::route::{Destination, RecordedRoute, RouteRef};

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
