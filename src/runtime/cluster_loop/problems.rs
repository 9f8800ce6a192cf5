//! Problems on `/v1/state`: one per reason, raised while a failure lasts and
//! settled when it ends; the VirtualService's with backoff, a metric and one
//! Warning Event per reason.
//!
//! Design rule: every problem the cluster loop shows goes through here, so a
//! reason is raised and settled in one place.

use super::*;

/// Sets the `/v1/state` problem with this reason (one per reason).
pub(super) fn raise(state: &SharedState, reason: &str, message: &str) {
    let mut s = state.write();
    match s.problems.iter_mut().find(|p| p.reason == reason) {
        Some(p) if p.message == message => {}
        Some(p) => p.message = message.to_owned(),
        None => s.problems.push(Problem {
            reason: reason.to_owned(),
            message: message.to_owned(),
        }),
    }
}

/// Removes the `/v1/state` problem with this reason.
pub(super) fn settle(state: &SharedState, reason: &str) {
    let mut s = state.write();
    if s.problems.iter().any(|p| p.reason == reason) {
        s.problems.retain(|p| p.reason != reason);
    }
}

/// The `/v1/state` reason of every API-level VirtualService failure (5xx, 429,
/// timeouts, refused connections), so a flapping API shows as one problem.
pub(super) const API_REASON: &str = "KubernetesApiError";

pub(super) async fn report_problem(
    c: &ClusterLoop,
    r: &mut LeaderRound,
    event_writer: &events::EventWriter,
    e: &VirtualServiceError,
) {
    if matches!(
        e,
        VirtualServiceError::Kube { .. }
            | VirtualServiceError::Timeout { .. }
            | VirtualServiceError::Forbidden { .. }
            | VirtualServiceError::NotFound { .. }
    ) {
        c.metrics.kube_error("virtualservice");
    }
    let transient = e.is_transient();
    let reason = if transient { API_REASON } else { e.reason() };
    set_problem(
        c,
        r,
        event_writer,
        reason,
        &e.to_string(),
        !transient,
        e.retry_after(),
    )
    .await;
}

/// Records a problem on `/v1/state` and backs off the next VirtualService call
/// (capped exponential backoff with jitter, at least the server's `Retry-After`).
/// Logs without flooding, and emits one Warning Event per reason while the
/// problem lasts when `event` is set (an API outage gets none: it could not be
/// delivered, and it is not the VirtualService's fault).
pub(super) async fn set_problem(
    c: &ClusterLoop,
    r: &mut LeaderRound,
    event_writer: &events::EventWriter,
    reason: &'static str,
    message: &str,
    event: bool,
    at_least: Option<Duration>,
) {
    let wait = r.backoff.next(at_least);
    let now = Instant::now();
    r.retry_at = Some(now + wait);
    r.leader.look_not_before((now + wait).into_std());
    r.vs_streak.failed("VirtualService problem", message);
    let already_told = match r.vs_problem {
        Some((old, told)) if old == reason => told,
        Some((old, _)) => {
            settle(&c.state, old);
            false
        }
        None => false,
    };
    raise(&c.state, reason, message);
    c.metrics.set_virtual_service_problem(Some(reason));
    r.vs_problem = Some((reason, already_told || event));
    if event && !already_told {
        publish(
            c,
            event_writer,
            EventType::Warning,
            events::reasons::VIRTUAL_SERVICE_INVALID,
            events::actions::ROLLBACK,
            message,
            vs_ref(c),
        )
        .await;
    }
}

pub(super) fn clear_problem(c: &ClusterLoop, r: &mut LeaderRound) {
    r.backoff.reset();
    r.retry_at = None;
    if let Some((reason, _)) = r.vs_problem.take() {
        r.vs_streak.recovered("VirtualService problem resolved");
        settle(&c.state, reason);
        c.metrics.set_virtual_service_problem(None);
    }
}
