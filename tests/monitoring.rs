//! deploy/monitoring: the alerting rules pass promtool's checks and unit tests, the
//! PrometheusRule holds exactly the rules of the plain file, the rules and the dashboard
//! name only metrics the guard exports, and every dashboard query returns data from a real
//! Prometheus that scraped a guard through traffic, an API error and a rollback.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use canary_guard::admin::metrics::Metrics;
use canary_guard_test_api::embedded_api::{FaultRule, Resource, Verb};
use serde_json::Value;
use support::cluster::*;
use support::prometheus::Prometheus;
use support::*;

fn monitoring(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/monitoring")
        .join(file)
}

fn yaml(file: &str) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(monitoring(file)).unwrap()).unwrap()
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(monitoring("dashboard.json")).unwrap()).unwrap()
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `promtool` ({e}): install Debian's `prometheus` package (scripts/test does it)")
        });
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_prometheus_rule_holds_the_plain_rules() {
    let plain = yaml("rules.yaml");
    let rule = yaml("prometheus-rule.yaml");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["spec"]["groups"], plain["groups"]);
    let alerts = plain["groups"][0]["rules"].as_array().unwrap();
    assert_eq!(alerts.len(), 8);
    for a in alerts {
        let summary = a["annotations"]["summary"].as_str().unwrap();
        assert!(
            summary.contains("{{ $labels.group }}") && summary.contains("{{ $labels.namespace }}"),
            "{summary}"
        );
        assert!(a["labels"]["severity"].is_string(), "{a}");
        let anchor = a["alert"].as_str().unwrap().to_lowercase();
        assert!(
            a["annotations"]["runbook_url"]
                .as_str()
                .unwrap()
                .ends_with(&format!("docs/runbook.md#{anchor}")),
            "{a}"
        );
        let runbook =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/runbook.md"))
                .unwrap();
        assert!(
            runbook.contains(&format!("## {}", a["alert"].as_str().unwrap())),
            "docs/runbook.md has no section for {}",
            a["alert"]
        );
    }
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    promtool(&["check", "rules", monitoring("rules.yaml").to_str().unwrap()]);
    promtool(&[
        "test",
        "rules",
        monitoring("rules.test.yaml").to_str().unwrap(),
    ]);
}

/// Every PromQL expression of the dashboard: panel targets, annotations, variables.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().unwrap() {
        out.push((
            format!("annotation {}", a["name"]),
            a["expr"].as_str().unwrap().to_string(),
        ));
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(SELECTOR, LABEL) returns data when SELECTOR does and carries LABEL.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.rsplit_once(','))
                .unwrap_or_else(|| panic!("variable {}: {q}", v["name"]));
            out.push((
                format!("variable {}", v["name"]),
                format!("count by ({}) ({})", inner.1.trim(), inner.0),
            ));
        }
    }
    out
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("canary_guard_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn rules_and_dashboard_name_only_exported_metrics() {
    // A labelled family is listed once it has a series: give each one.
    let m = Metrics::new();
    m.kube_error("lease_list");
    m.scrape_error("timeout");
    m.member_summary_rejected("malformed");
    m.proxy_refusal("upstream_connect");
    m.set_virtual_service_problem(Some("Forbidden"));
    m.set_limits(0.05, Duration::from_millis(500), 0.99);
    m.notification("failed");
    let page = m.render();
    // And every family, the new ones included, is one promtool accepts.
    promtool_check(&page);
    let exported: BTreeSet<String> = page
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let used = metric_names(&std::fs::read_to_string(monitoring("rules.yaml")).unwrap())
        .into_iter()
        .chain(metric_names(
            &std::fs::read_to_string(monitoring("dashboard.json")).unwrap(),
        ));
    for name in used {
        assert!(
            exported.contains(&name),
            "{name} is not exported (exported: {exported:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_after_traffic_and_a_rollback() {
    let app = start_app().await;
    let (api, running) = start_api().await;
    // As a server without watches: the leader lists the member leases every round, so the
    // failed list below is one it makes.
    api.faults().add(
        FaultRule::status(405)
            .verb(Verb::Watch)
            .resource(Resource::Leases),
    );
    let pod = "reviews-v2-aaa";
    let guard = start_member(&running, app, pod, "r1", |_| {}).await;
    wait_api(&api, 10, "a leader", |api| holder(api).is_some()).await;
    let prom = Prometheus::start(
        guard.admin_addr,
        &[("namespace", NS), ("group", "reviews"), ("pod", pod)],
    );
    // The rollback counter must be seen at 0 before it moves, as on a real cluster.
    let deadline = Instant::now() + Duration::from_secs(60);
    while prom
        .query("count_over_time(canary_guard_rollbacks_total[1m]) >= 2")
        .await
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the guard"
        );
        // Another process: nothing to await but its next scrape.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // One failed list of the member leases: an API error for its panel.
    api.faults().add(
        FaultRule::status(500)
            .verb(Verb::List)
            .resource(Resource::Leases)
            .times(1),
    );
    send(&guard, "/status/200", 20).await;
    send(&guard, "/status/500", 30).await;
    wait_api(&api, 15, "a rollback", |api| weights(api) == (100, 0)).await;

    let queries = dashboard_queries(&dashboard());
    assert!(queries.len() >= 14, "{queries:?}");
    let mut results = Vec::new();
    for (what, expr) in &queries {
        let expr = expr
            .replace("$namespace", NS)
            .replace("$group", "reviews")
            .replace("$__rate_interval", "1m");
        let found = loop {
            let r = prom.query(&expr).await;
            if !r.is_empty() {
                break r;
            }
            assert!(
                Instant::now() < deadline + Duration::from_secs(30),
                "{what}: `{expr}` returned no data"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        results.push((what.clone(), found));
    }
    let get = |title: &str| {
        results
            .iter()
            .filter(|(w, _)| w == title)
            .flat_map(|(_, r)| r.iter())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("Leader")[0]["metric"]["pod"], pod);
    assert!(get("Error ratio against the limit")
        .iter()
        .any(|r| r["value"][1] == "0.05"));
    assert!(get("Kubernetes API errors by operation")
        .iter()
        .any(|r| r["metric"]["op"] == "lease_list"));
}
