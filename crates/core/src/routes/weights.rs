//! Reading the weights as they are: every route's effective weights for `status`, and
//! the canary's share to tell whether a rollback must be (re)asserted.
//!
//! Design rule: read-only. The weights are the effective ones (a lone destination
//! without a weight counts as 100) and nothing here plans a change.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::RouteError;
use super::parse::{check_canary_present, parse_routes, ParsedRoute};
use super::route::{Destination, RouteRef};
use super::target::CanaryTarget;

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
