//! canary-guard's core: the pure decisions the sidecar is built around. The
//! window of recent requests and its summary, the policy's tests (binomial and
//! sequential), the leader's judgement of its members, VirtualService route
//! rewriting, the canary's comparison with its baseline, counter deltas between scrapes and the registry of requests in flight.
//!
//! Design rule: pure decisions, no I/O and no Kubernetes types; callers bring the
//! samples, the scraped pages and the VirtualService, and act on what comes back.
//! The compiler enforces it: this crate depends on serde, serde_json, thiserror and
//! parking_lot only (no kube, hyper or tokio). Nothing here reads the clock outside
//! tests: time is always a parameter (`at`, `now`, a [`std::time::Instant`]), so the
//! caller's clock, tokio's paused one in its tests, is the only one.
#![forbid(unsafe_code)]

pub mod binomial;
pub mod classify;
pub mod counters;
pub mod histogram;
pub mod in_flight;
pub mod judge;
pub mod leader;
pub mod policy;
pub mod relative;
pub mod routes;
pub mod sequential;
pub mod window;
