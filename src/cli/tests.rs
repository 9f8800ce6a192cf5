//! The command line: defaults, ranges, cross-flag checks and what `resolve` builds.

use super::*;
use crate::config::{ClusterConfig, GuardConfig};
use crate::domain::counters::{LatencyUnit, Schema};
use crate::parse::*;

/// Serializes parsing with the test that sets `CANARY_GUARD_*` variables.
static ENV: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
    let _env = ENV.lock();
    parse_unlocked(args)
}

fn parse_unlocked(args: &[&str]) -> Result<RunArgs, clap::Error> {
    let mut argv = vec!["canary-guard", "run"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).map(|cli| match cli.command {
        Command::Run(a) => *a,
        other => panic!("parsed {other:?}"),
    })
}

#[test]
fn defaults() {
    let a = parse(&[]).unwrap();
    assert_eq!(a.mode, Mode::Proxy);
    assert_eq!(a.listen.port(), 4680);
    assert_eq!(a.admin_listen.port(), 4681);
    assert_eq!(a.upstream, "http://127.0.0.1:8080");
    assert_eq!(a.max_error_ratio, 0.05);
    assert_eq!(a.max_latency, ms(500));
    assert_eq!(a.latency_quantile, 0.99);
    assert_eq!(a.min_requests, 20);
    assert_eq!(a.window, ms(30_000));
    assert_eq!(a.interval, ms(1_000));
    assert_eq!(a.failure_threshold, 1);
    assert_eq!(a.confidence, crate::domain::policy::DEFAULT_CONFIDENCE);
    assert!(!a.standalone);
    assert_eq!(a.workers, 1);
    a.validate().unwrap();
}

/// `run`'s defaults, as `--help` shows them, are the values `demo` and the tests
/// start from.
#[test]
fn defaults_resolve_to_the_configs_defaults() {
    let standalone = parse(&["--standalone"]).unwrap().resolve(|_| None).unwrap();
    let upstream = "http://127.0.0.1:8080".parse().unwrap();
    assert_eq!(standalone, GuardConfig::proxy(upstream));

    let flags = [
        "--group",
        "reviews",
        "--pod-name",
        "reviews-v2-a",
        "--virtual-service",
        "reviews",
        "--canary-subset",
        "v2",
    ];
    let a = parse(&flags).unwrap();
    let cluster = a.resolve(|_| None).unwrap().cluster.unwrap();
    let targets = a.cluster.resolve(|_| None).unwrap().targets;
    assert_eq!(
        cluster,
        ClusterConfig::new("reviews", "reviews-v2-a", "reviews", targets)
    );
}

/// A baseline guard keeps a slightly longer window than the canary's, so that
/// its seconds cover every second of any canary guard's window.
#[test]
fn a_baseline_guard_keeps_a_longer_window() {
    let flags = [
        "--group",
        "reviews",
        "--pod-name",
        "reviews-v1-a",
        "--virtual-service",
        "reviews",
        "--canary-subset",
        "v2",
        "--window",
        "20s",
    ];
    let canary = parse(&flags).unwrap().resolve(|_| None).unwrap();
    assert_eq!(canary.kept_window(), ms(20_000));
    let baseline = parse(&[&flags[..], &["--role", "baseline"]].concat())
        .unwrap()
        .resolve(|_| None)
        .unwrap();
    assert_eq!(baseline.window, ms(20_000));
    assert_eq!(baseline.kept_window(), ms(22_000));
    let standalone = parse(&["--standalone", "--window", "20s"]).unwrap();
    assert_eq!(
        standalone.resolve(|_| None).unwrap().kept_window(),
        ms(20_000)
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms").unwrap(), ms(250));
    assert_eq!(parse_duration("2s").unwrap(), ms(2000));
    assert_eq!(parse_duration("1.5s").unwrap(), ms(1500));
    assert_eq!(parse_duration("1m").unwrap(), ms(60_000));
    assert!(parse_duration("5").unwrap_err().contains("missing unit"));
    assert!(parse_duration("5d").unwrap_err().contains("unknown unit"));
    assert!(parse_duration("ms").is_err());
    assert_eq!(fmt_duration(ms(1500)), "1500ms");
    assert_eq!(fmt_duration(ms(120_000)), "2m");
}

#[test]
fn bad_values_name_flag_value_and_range() {
    for (args, flag, value, range) in [
        (
            &["--max-error-ratio", "1.5"][..],
            "--max-error-ratio",
            "1.5",
            "between 0 and 1",
        ),
        (
            &["--max-latency", "2h"],
            "--max-latency",
            "2h",
            "between 1ms and 1m",
        ),
        (&["--window", "2s"], "--window", "2s", "between 5s and 10m"),
        (
            &["--confidence", "0.3"],
            "--confidence",
            "0.3",
            "between 0.5 and 0.999999",
        ),
        (
            &["--window", "7500ms"],
            "--window",
            "7500ms",
            "whole number of seconds",
        ),
        (
            &["--latency-quantile", "1"],
            "--latency-quantile",
            "1",
            "0.5 and 0.999",
        ),
        (
            &["--min-requests", "0"],
            "--min-requests",
            "0",
            "1..=1000000",
        ),
        (
            &["--failure-threshold", "0"],
            "--failure-threshold",
            "0",
            "1..=1000",
        ),
        (
            &["--upstream", "https://x:1"],
            "--upstream",
            "https://x:1",
            "http://",
        ),
        (&["--listen", "nope"], "--listen", "nope", "invalid"),
        (&["--workers", "0"], "--workers", "0", "1..=64"),
    ] {
        let e = parse(args).unwrap_err().to_string();
        assert!(
            e.contains(flag) && e.contains(value) && e.contains(range),
            "{args:?}: {e}"
        );
    }
    let e = parse(&["--no-such-flag"]).unwrap_err().to_string();
    assert!(e.contains("--no-such-flag"), "{e}");
}

#[test]
fn cross_flag_checks() {
    let e = parse(&["--interval", "10s", "--window", "5s"])
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("--interval") && e.contains("--window"), "{e}");
    let e = parse(&[
        "--listen",
        "127.0.0.1:9000",
        "--admin-listen",
        "127.0.0.1:9000",
    ])
    .unwrap()
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("--admin-listen"), "{e}");
    let e = parse(&[
        "--listen",
        "0.0.0.0:9000",
        "--upstream",
        "http://127.0.0.1:9000",
    ])
    .unwrap()
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("call itself"), "{e}");
}

#[test]
fn cluster_flags_resolve_from_downward_api() {
    let a = parse(&[
        "--group",
        "reviews",
        "--virtual-service",
        "reviews",
        "--canary-subset",
        "v2",
        "--per-member=false",
    ])
    .unwrap();
    assert!(!a.cluster.per_member);
    assert!(a.cluster.restore_on_new_revision);
    let env = |k: &str| match k {
        "POD_NAME" => Some("reviews-v2-abc".to_string()),
        "POD_NAMESPACE" => Some("shop".to_string()),
        "POD_TEMPLATE_HASH" => Some("5d9f".to_string()),
        _ => None,
    };
    let c = a.cluster.resolve(env).unwrap();
    assert_eq!(c.pod_name, "reviews-v2-abc");
    assert_eq!(c.namespace.as_deref(), Some("shop"));
    assert_eq!(c.revision.as_deref(), Some("5d9f"));
    let e = parse(&[])
        .unwrap()
        .cluster
        .resolve(|_| None)
        .unwrap_err()
        .to_string();
    for flag in [
        "--group",
        "--pod-name",
        "--virtual-service",
        "--canary-host",
        "--standalone",
    ] {
        assert!(e.contains(flag), "{e}");
    }
    let e = parse(&[
        "--group",
        "g",
        "--virtual-service",
        "v",
        "--canary-host",
        "h",
        "--lease-duration",
        "5s",
        "--renew-deadline",
        "5s",
    ])
    .unwrap()
    .cluster
    .resolve(env)
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--lease-duration 5s must be greater than --renew-deadline 5s"),
        "{e}"
    );
    assert!(parse(&["--group", "Bad_Group"])
        .unwrap_err()
        .to_string()
        .contains("--group"));
}

#[test]
fn kubectl_plugin_usage_names_kubectl() {
    let e = parse_args(["/usr/local/bin/kubectl-canary_guard", "status"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("Usage: kubectl canary-guard status"), "{e}");
    assert!(e.contains("--group"), "{e}");
    let help = parse_args(["kubectl-canary_guard", "--help"])
        .unwrap_err()
        .to_string();
    assert!(help.contains("Usage: kubectl canary-guard"), "{help}");
    assert!(
        help.contains("status") && help.contains("restore"),
        "{help}"
    );
    assert!(!help.contains("webhook"), "{help}");
    let cli = parse_args([
        "kubectl-canary_guard",
        "status",
        "--group",
        "reviews",
        "--virtual-service",
        "reviews",
        "--watch",
    ])
    .unwrap();
    assert!(matches!(cli.command, Command::Status(s) if s.watch));
    let e = parse_args(["canary-guard", "status"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("Usage: canary-guard status"), "{e}");
}

#[test]
fn notify_url_is_never_echoed() {
    let e = parse(&["--notify-url", "https://hooks.example/services/SECRET"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--notify-url") && e.contains("https is not supported"),
        "{e}"
    );
    assert!(!e.contains("SECRET"), "{e}");
    let a = parse(&[
        "--notify-url",
        "http://relay.monitoring:8080/hook/SECRET",
        "--notify-format",
        "slack",
    ])
    .unwrap();
    assert!(a.cluster.notify_url.is_some());
    assert_eq!(
        a.cluster.notify_format,
        crate::notify::message::NotifyFormat::Slack
    );
    assert!(!format!("{a:?}").contains("SECRET"));
}

#[test]
fn env_equivalents() {
    let _env = ENV.lock();
    std::env::set_var("CANARY_GUARD_MAX_ERROR_RATIO", "0.2");
    std::env::set_var("CANARY_GUARD_WINDOW", "1m");
    let a = parse_unlocked(&[]).unwrap();
    std::env::remove_var("CANARY_GUARD_MAX_ERROR_RATIO");
    std::env::remove_var("CANARY_GUARD_WINDOW");
    assert_eq!(a.max_error_ratio, 0.2);
    assert_eq!(a.window, ms(60_000));
}

#[test]
fn envoy_flags() {
    let a = parse(&["--mode", "envoy"]).unwrap();
    assert_eq!(a.mode, Mode::Envoy);
    assert_eq!(a.scrape.envoy_stats_url, DEFAULT_ENVOY_STATS_URL);
    assert_eq!(a.scrape.scrape_interval, ms(1_000));
    assert!(a.scrape.envoy_labels.is_empty() && a.scrape.metrics_url.is_none());
    assert_eq!(a.scrape.metrics_requests, "http_requests_total");
    assert_eq!(a.scrape.metrics_unit, MetricsUnit::Seconds);
    a.validate().unwrap();
    let a = parse(&[
        "--mode",
        "envoy",
        "--envoy-label",
        "destination_workload=reviews-v2",
        "--envoy-label",
        "destination_version = v2",
        "--metrics-unit",
        "milliseconds",
        // Unused in envoy mode, so not checked against each other.
        "--listen",
        "127.0.0.1:9000",
        "--admin-listen",
        "127.0.0.1:9000",
    ])
    .unwrap();
    a.validate().unwrap();
    assert_eq!(
        a.scrape.envoy_labels,
        [
            ("destination_workload".into(), "reviews-v2".into()),
            ("destination_version".into(), "v2".into())
        ]
    );
    assert_eq!(a.scrape.metrics_unit, MetricsUnit::Milliseconds);
    for (args, flag, value, range) in [
        (
            &["--scrape-interval", "10ms"][..],
            "--scrape-interval",
            "10ms",
            "between 100ms and 1m",
        ),
        (
            &["--envoy-stats-url", "https://x/stats"],
            "--envoy-stats-url",
            "https://x/stats",
            "http://",
        ),
        (
            &["--envoy-label", "workload"],
            "--envoy-label",
            "workload",
            "NAME=VALUE",
        ),
        (
            &["--envoy-label", "reporter=source"],
            "--envoy-label",
            "reporter=source",
            "always destination",
        ),
        (
            &["--metrics-requests", "9lives"],
            "--metrics-requests",
            "9lives",
            "metric name",
        ),
        (
            &["--metrics-status-label", "status-code"],
            "--metrics-status-label",
            "status-code",
            "label name",
        ),
        (
            &["--metrics-unit", "minutes"],
            "--metrics-unit",
            "minutes",
            "seconds, milliseconds",
        ),
    ] {
        let e = parse(args).unwrap_err().to_string();
        assert!(
            e.contains(flag) && e.contains(value) && e.contains(range),
            "{args:?}: {e}"
        );
    }
    let e = parse(&["--metrics-url", "http://127.0.0.1:9090/metrics"])
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--metrics-url") && e.contains("--mode envoy"),
        "{e}"
    );
    let e = parse(&[
        "--mode",
        "envoy",
        "--metrics-url",
        "http://127.0.0.1:9090/metrics",
        "--envoy-label",
        "destination_version=v2",
    ])
    .unwrap()
    .validate()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--envoy-label") && e.contains("--metrics-label"),
        "{e}"
    );
}

#[test]
fn metrics_url_flags_make_an_app_schema() {
    let cli = Cli::try_parse_from([
        "canary-guard",
        "run",
        "--mode",
        "envoy",
        "--metrics-url",
        "http://127.0.0.1:9090/metrics",
        "--metrics-label",
        "handler=/api",
    ])
    .unwrap();
    #[allow(unreachable_patterns)]
    let args = match cli.command {
        Command::Run(args) => args,
        _ => unreachable!(),
    };
    let c = args.scrape.resolve(args.window);
    assert_eq!(c.url, "http://127.0.0.1:9090/metrics");
    assert_eq!(c.schema.requests, "http_requests_total");
    assert_eq!(
        c.schema.duration_buckets.as_deref(),
        Some("http_request_duration_seconds_bucket")
    );
    assert_eq!(c.schema.status_label, "code");
    assert_eq!(c.schema.unit, LatencyUnit::Seconds);
    assert_eq!(
        c.schema.filters,
        [("handler".to_string(), "/api".to_string())]
    );
    let envoy = Schema::istio(&[("reporter".into(), "x".into())]);
    assert_eq!(
        envoy.filters,
        [("reporter".to_string(), "destination".to_string())]
    );
}
