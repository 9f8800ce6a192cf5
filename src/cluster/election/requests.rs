//! Publish requests: the leader asks the group's candidates to write their windows
//! now, through the election Lease they read every retry period anyway.
//!
//! Design rule: no new object, and no call a guard does not make anyway. The leader
//! raises a counter in an annotation with a renewal (sent at once rather than at the
//! next retry period, so a request costs one early GET and PUT); a candidate answers
//! each move it reads with at most one member-lease write. A counter, not a flag, so
//! a request is never missed between two reads; one that only goes up, whoever
//! leads, so a new leader's first request is a move too.

use k8s_openapi::api::coordination::v1::Lease;

/// The annotation on the election Lease that carries the leader's request counter.
pub const ANNOTATION: &str = "canary-guard.io/publish-request";

/// The counter `lease` carries; 0 when there is none or it does not parse.
pub(super) fn read(lease: &Lease) -> u64 {
    lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Sets the counter on `lease`.
pub(super) fn write(lease: &mut Lease, counter: u64) {
    lease
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ANNOTATION.to_owned(), counter.to_string());
}
