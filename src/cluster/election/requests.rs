//! Publish requests: the leader asks the group's candidates to write their windows
//! now, through the election Lease they read every retry period anyway.
//!
//! Design rule: no new object and no new call. The leader carries a counter in an
//! annotation of the renewal it sends anyway (sent early when the counter moves);
//! a candidate answers each value it has not seen with at most one member-lease
//! write. A counter, not a flag, so a request is never missed between two reads.

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

/// Sets the counter on `lease`; a leader that never asked (0) leaves it as it was.
pub(super) fn write(lease: &mut Lease, counter: u64) {
    if counter > 0 {
        lease
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ANNOTATION.to_owned(), counter.to_string());
    }
}
