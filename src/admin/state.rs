//! What `/v1/state` reports: the guard's latest view of itself and its group.

use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;

use crate::domain::policy::{Breach, Verdict};
use crate::domain::relative::RelativeBreach;
use crate::domain::window::Summary;

/// Window totals as `/v1/state` shows them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WindowView {
    /// Window length in seconds.
    pub seconds: u64,
    /// Requests in the window.
    pub requests: u64,
    /// Errors in the window.
    pub errors: u64,
    /// Requests whose clients gave up before the answer was complete; those
    /// that had waited past the latency limit are also in `requests`, as slow.
    pub abandoned: u64,
    /// Of `requests`, still waiting for the app past the latency limit (counted as slow).
    pub in_flight_overdue: u64,
    /// Errors over requests.
    pub error_ratio: f64,
    /// Median latency in ms, when there was traffic.
    pub p50_ms: Option<f64>,
    /// 90th percentile latency in ms.
    pub p90_ms: Option<f64>,
    /// 99th percentile latency in ms.
    pub p99_ms: Option<f64>,
    /// The same for the window's last seconds, judged beside the whole window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent: Option<Box<WindowView>>,
}

impl From<&Summary> for WindowView {
    fn from(s: &Summary) -> Self {
        let ms = |q| {
            s.latency_quantile(q)
                .map(|d| (d.as_secs_f64() * 1_000_000.0).round() / 1000.0)
        };
        Self {
            seconds: s.seconds,
            requests: s.requests,
            errors: s.errors,
            abandoned: s.abandoned,
            in_flight_overdue: s.overdue,
            error_ratio: s.error_ratio(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            recent: s.recent.as_deref().map(|r| Box::new(WindowView::from(r))),
        }
    }
}

/// One group member as the leader sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemberView {
    /// Pod name.
    pub pod: String,
    /// The member's canary revision (pod-template-hash).
    pub revision: Option<String>,
    /// Seconds since the member's summary last changed.
    pub age_seconds: f64,
    /// The member's window.
    pub window: WindowView,
    /// The member's own check, when it has enough traffic to judge alone.
    pub verdict: Verdict,
    /// `canary`, or `baseline` for a guard on a stable pod.
    pub role: &'static str,
}

/// A condition that needs an operator's attention (missing VirtualService, 403, ...).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Problem {
    /// Short machine-readable kind, e.g. `VirtualServiceNotFound`.
    pub reason: String,
    /// What went wrong and how to fix it.
    pub message: String,
}

/// The last failed scrape (envoy mode).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScrapeErrorView {
    /// Reason, as in `canary_guard_scrape_errors_total{reason}`.
    pub reason: &'static str,
    /// What went wrong.
    pub message: String,
    /// When, in Unix milliseconds.
    pub unix_ms: u64,
}

/// How scraping the stats endpoint goes (envoy mode).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ScrapeView {
    /// The endpoint scraped.
    pub url: String,
    /// Scrapes attempted.
    pub scrapes: u64,
    /// Scrapes failed.
    pub errors: u64,
    /// Whether deltas are counted (false until a first good scrape set the baseline).
    pub counting: bool,
    /// Request series that matched the filters on the last good page (0: no data yet).
    pub series: usize,
    /// Last good scrape, in Unix milliseconds.
    pub last_success_unix_ms: Option<u64>,
    /// The latest failure, if any.
    pub last_error: Option<ScrapeErrorView>,
}

/// Everything `/v1/state` returns.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GuardState {
    /// Guard group (one per canary), when running in a cluster.
    pub group: Option<String>,
    /// This guard's pod.
    pub pod: Option<String>,
    /// This guard's canary revision.
    pub revision: Option<String>,
    /// `proxy` or `envoy`.
    pub mode: &'static str,
    /// Whether this guard is the group's leader (always false when standalone).
    pub leader: bool,
    /// The current leader's identity, when known.
    pub leader_identity: Option<String>,
    /// The verdict on the window this guard judges (the aggregate on the leader).
    pub verdict: Verdict,
    /// This guard's own window.
    pub window: WindowView,
    /// Failing checks in a row.
    pub consecutive_failures: u32,
    /// The numbers of this guard's latest failing check while the failure run lasts:
    /// which window, how many requests, errors and samples over the latency limit.
    pub breach: Option<Breach>,
    /// The group's live members (leader only; empty elsewhere).
    pub members: Vec<MemberView>,
    /// The aggregate window over all canary members (leader only).
    pub aggregate: Option<WindowView>,
    /// The aggregate window over the baseline members, when there are any (leader only).
    pub baseline: Option<WindowView>,
    /// Why the canary is judged worse than its baseline, while it is (leader only).
    pub relative_breach: Option<RelativeBreach>,
    /// Why a failing canary is not blamed, while its baseline fails too: the verdict is
    /// then inconclusive (leader only).
    pub baseline_degraded: Option<String>,
    /// The latest rollback this guard knows of, as recorded on the VirtualService.
    pub last_rollback: Option<serde_json::Value>,
    /// Conditions an operator should look at.
    pub problems: Vec<Problem>,
    /// The stats endpoint's scrapes (envoy mode only).
    pub scrape: Option<ScrapeView>,
}

impl GuardState {
    /// The state before the first check.
    pub fn new(mode: &'static str) -> Self {
        Self {
            group: None,
            pod: None,
            revision: None,
            mode,
            leader: false,
            leader_identity: None,
            verdict: Verdict::Inconclusive,
            window: WindowView::default(),
            consecutive_failures: 0,
            breach: None,
            members: Vec::new(),
            aggregate: None,
            baseline: None,
            relative_breach: None,
            baseline_degraded: None,
            last_rollback: None,
            problems: Vec::new(),
            scrape: None,
        }
    }
}

/// The state shared between the loops that update it and the admin server.
pub type SharedState = Arc<RwLock<GuardState>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn window_view_rounds_to_microseconds() {
        let mut s = Summary::empty(30);
        s.requests = 4;
        s.errors = 1;
        for _ in 0..4 {
            s.latency.record(Duration::from_millis(200));
        }
        let v = WindowView::from(&s);
        assert_eq!(v.error_ratio, 0.25);
        let p50 = v.p50_ms.unwrap();
        assert!((190.0..=210.0).contains(&p50), "{p50}");
        assert_eq!((p50 * 1000.0).fract(), 0.0);
        assert_eq!(WindowView::from(&Summary::empty(30)).p99_ms, None);
    }

    #[test]
    fn state_json_has_the_documented_fields() {
        let v = serde_json::to_value(GuardState::new("proxy")).unwrap();
        for key in [
            "group",
            "pod",
            "revision",
            "leader",
            "verdict",
            "window",
            "consecutive_failures",
            "members",
            "last_rollback",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["verdict"], "inconclusive");
        for key in [
            "seconds",
            "requests",
            "errors",
            "abandoned",
            "in_flight_overdue",
            "error_ratio",
            "p50_ms",
            "p90_ms",
            "p99_ms",
        ] {
            assert!(v["window"].get(key).is_some(), "missing window.{key}");
        }
    }
}
