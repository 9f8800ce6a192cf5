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
//!
//! The files, one job each: `target.rs` says which destinations the canary and stable
//! targets name, `parse.rs` reads the routes, `rollback.rs` and `restore.rs` plan the
//! patches (`plan.rs` holds what their plans share), `weights.rs` reads the weights as
//! they are; `route.rs` and `error.rs` hold the types and errors all of them use.

mod error;
mod parse;
mod plan;
mod restore;
mod rollback;
mod route;
mod target;
mod weights;

pub use error::RouteError;
pub use plan::{escape_pointer_token, PatchOp, SkippedRoute};
pub use restore::{plan_restore, RestorePlan};
pub use rollback::{plan_rollback, RollbackPlan};
pub use route::{Destination, DestinationWeight, RecordedRoute, RouteKind, RouteRef};
pub use target::{canonical_host, CanaryTarget, StableTarget, CLUSTER_DOMAIN};
pub use weights::{
    canary_weight, current_weights, CanaryWeights, RouteWeights, WeightedDestination,
};

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
