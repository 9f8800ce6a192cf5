//! Tests of the exported metrics: every documented name, label and value appears in the
//! rendered text, in proxy mode and in envoy mode (counts but no per-request duration).
//!
//! Design rule: metrics are checked as Prometheus reads them, line by line in
//! [`Metrics::render`]'s text, so a renamed metric or label fails here before a dashboard
//! or an alert rule breaks.

use super::*;
use crate::domain::window::Outcome;
use std::time::Instant;

#[test]
fn exports_the_documented_names() {
    let m = Metrics::new();
    let t0 = Instant::now();
    let window = Arc::new(Window::new(Duration::from_secs(30), t0));
    window.record(t0, Duration::from_millis(3), Outcome::Success);
    window.record(t0, Duration::from_millis(200), Outcome::Error);
    window.record(t0, Duration::from_millis(5), Outcome::Abandoned);
    window.record_abandoned(t0, Duration::from_millis(10), None);
    m.export_totals(window, true);
    m.kube_error("patch_virtualservice");
    m.init_scrape_errors(&["timeout", "parse"]);
    m.scrape_error("parse");
    m.member_summary_rejected("unknown_version");
    m.notification(notification_results::SENT);
    m.set_limits(0.05, Duration::from_millis(500), 0.99);
    m.set_virtual_service_problem(Some("Forbidden"));
    m.set_virtual_service_problem(Some("VirtualServiceInvalid"));
    let mut s = Summary::empty(30);
    s.requests = 2;
    s.errors = 1;
    m.set_check(&s, Verdict::Failing, 3);
    let text = m.render();
    for line in [
        "canary_guard_requests_total{outcome=\"success\"} 1",
        "canary_guard_requests_total{outcome=\"error\"} 1",
        "canary_guard_requests_total{outcome=\"abandoned\"} 2",
        "canary_guard_request_duration_seconds_count 3",
        "canary_guard_request_duration_seconds_sum 0.208",
        "canary_guard_request_duration_seconds_bucket{le=\"0.001\"} 0",
        "canary_guard_request_duration_seconds_bucket{le=\"0.005\"} 1",
        "canary_guard_request_duration_seconds_bucket{le=\"0.01\"} 2",
        "canary_guard_request_duration_seconds_bucket{le=\"0.25\"} 3",
        "canary_guard_request_duration_seconds_bucket{le=\"+Inf\"} 3",
        "canary_guard_window_requests 2",
        "canary_guard_window_error_ratio 0.5",
        "canary_guard_window_latency_seconds{quantile=\"0.99\"} 0",
        "canary_guard_window_latency_seconds_count 0",
        "canary_guard_consecutive_failures 3",
        "canary_guard_verdict{state=\"failing\"} 1",
        "canary_guard_verdict{state=\"healthy\"} 0",
        "canary_guard_leader 0",
        "canary_guard_members 0",
        "canary_guard_rollbacks_total 0",
        "canary_guard_kube_errors_total{op=\"patch_virtualservice\"} 1",
        "canary_guard_scrape_errors_total{reason=\"parse\"} 1",
        "canary_guard_scrape_errors_total{reason=\"timeout\"} 0",
        "canary_guard_member_summaries_rejected_total{reason=\"unknown_version\"} 1",
        "canary_guard_notifications_total{result=\"sent\"} 1",
        "canary_guard_notifications_total{result=\"dropped\"} 0",
        "canary_guard_max_error_ratio 0.05",
        "canary_guard_max_latency_seconds{latency_quantile=\"0.99\"} 0.5",
        "canary_guard_virtualservice_problem{reason=\"Forbidden\"} 0",
        "canary_guard_virtualservice_problem{reason=\"VirtualServiceInvalid\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[test]
fn envoy_mode_exports_counts_but_no_duration() {
    let m = Metrics::new();
    let t0 = Instant::now();
    let window = Arc::new(Window::new(Duration::from_secs(30), t0));
    window.record_counts(t0, 10, 3, 2);
    window.record_latency_bucket(t0, 5, 10);
    m.export_totals(window, false);
    let text = m.render();
    for line in [
        "canary_guard_requests_total{outcome=\"success\"} 5",
        "canary_guard_requests_total{outcome=\"error\"} 3",
        "canary_guard_requests_total{outcome=\"abandoned\"} 2",
        "canary_guard_request_duration_seconds_count 0",
        "canary_guard_request_duration_seconds_bucket{le=\"+Inf\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}
