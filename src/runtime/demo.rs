//! `canary-guard demo`: the whole loop on one machine. An embedded Kubernetes
//! API holds a VirtualService `reviews` split 90/10 (`--canary-weight`) between
//! subsets v1 and v2; a stable app and a canary app run on loopback, three canary guards in proxy
//! mode front the canary (with `--fault relative`, baseline guards front the stable pods
//! too), and a load generator splits its traffic by the
//! VirtualService's current weights, as Envoy would. The canary turns bad on
//! cue; the demo reports when the leader sent its traffic back to stable.
//!
//! Design rule: the stand-ins (the API, the apps, the load generator) come from the
//! `canary-guard-test-api` crate, a dependency of the `demo` feature only; this module is
//! the command's flags, the wiring of real guards to them, and the timeline.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use canary_guard_test_api::apps::{self, Canary, Fault};
use canary_guard_test_api::embedded_api::{EmbeddedApi, Resource, RunningApi, Verb};
use canary_guard_test_api::load::{Load, Second};
use clap::{Args, ValueEnum};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::guard;
use crate::cluster::client;
use crate::cluster::virtual_service::RouteTargets;
use crate::config::{ClusterConfig, GuardConfig};
use crate::domain::relative::Role;
use crate::domain::routes::{current_weights, CanaryTarget};
use crate::notify::NotifyConfig;
use crate::{Error, Result};

const NAMESPACE: &str = "default";
const VIRTUAL_SERVICE: &str = "reviews";
const REVISION: &str = "7c9d5b6f4";
const STABLE_REVISION: &str = "5f8c7d9b2";

/// What goes wrong with the canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A share of requests answer 500.
    Errors,
    /// A share of requests take twice the latency limit.
    Latency,
    /// The canary answers 500 to 4% of its requests (under the 5% limit) while the
    /// stable pods, guarded as baseline, fail 0.5%: only the comparison catches it.
    Relative,
}

/// The stable pods' own error ratio with `--fault relative`.
const STABLE_ERRORS: f64 = 0.005;

/// Flags of `canary-guard demo`.
#[derive(Clone, Debug, Args)]
pub struct DemoArgs {
    /// Requests per second sent to the service (both versions together).
    #[arg(long, default_value = "200", value_parser = clap::value_parser!(u32).range(1..=2000))]
    pub rate: u32,

    /// What goes wrong with the canary.
    #[arg(long, value_enum, default_value = "errors")]
    pub fault: FaultKind,

    /// Share of canary requests the fault hits (0.01..=1; default 0.5, and 0.04 with
    /// `--fault relative`).
    #[arg(long, value_parser = parse_fault_ratio)]
    pub fault_ratio: Option<f64>,

    /// Healthy traffic before the fault starts.
    #[arg(long, default_value = "5s", value_parser = crate::parse::parse_duration)]
    pub fault_after: Duration,

    /// Give up (exit 1) if no rollback happened this long after the fault started.
    #[arg(long, default_value = "30s", value_parser = crate::parse::parse_duration)]
    pub timeout: Duration,

    /// Traffic kept flowing after the rollback, to show where it goes.
    #[arg(long, default_value = "3s", value_parser = crate::parse::parse_duration)]
    pub linger: Duration,

    /// The canary's share of the VirtualService's weight, in percent.
    #[arg(long, default_value = "10", value_parser = clap::value_parser!(u32).range(1..=99))]
    pub canary_weight: u32,

    /// The guards' `--max-error-ratio` (their default when not given).
    #[arg(long)]
    pub max_error_ratio: Option<f64>,

    /// The guards' `--confidence` (their default when not given): lower decides sooner.
    #[arg(long, value_name = "C", value_parser = crate::parse::parse_confidence)]
    pub confidence: Option<f64>,

    /// Print one JSON object at the end instead of the timeline.
    #[arg(long)]
    pub json: bool,

    /// The guards' `--notify-url`: watch the leader's rollback notification arrive.
    #[arg(long, env = "CANARY_GUARD_NOTIFY_URL", value_name = "URL", hide_env_values = true,
          value_parser = crate::notify::url::NotifyUrlParser)]
    pub notify_url: Option<crate::notify::url::NotifyUrl>,

    /// The guards' `--notify-format`.
    #[arg(long, value_enum, default_value = "json")]
    pub notify_format: crate::notify::message::NotifyFormat,
}

fn parse_fault_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.01..=1.0).contains(&v) => Ok(v),
        _ => Err("must be between 0.01 and 1, e.g. 0.5".into()),
    }
}

/// The demo's final report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Whether the VirtualService was rolled back.
    pub rolled_back: bool,
    /// Seconds from fault start to the VirtualService write.
    pub time_to_rollback_s: Option<f64>,
    /// The guard that wrote the rollback.
    pub leader: Option<String>,
    /// Weights before, by subset.
    pub weights_before: BTreeMap<String, u32>,
    /// Weights after, by subset.
    pub weights_after: BTreeMap<String, u32>,
    /// The fault that was injected.
    pub fault: FaultKind,
    /// Its ratio.
    pub fault_ratio: f64,
    /// Offered load.
    pub rate: u32,
    /// Requests sent to each version, and canary errors.
    pub requests: BTreeMap<String, u64>,
    /// The rollback annotation the leader wrote.
    pub rollback_record: Option<Value>,
}

fn virtual_service(canary_weight: u32) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": VIRTUAL_SERVICE, "namespace": NAMESPACE},
        "spec": {
            "hosts": ["reviews"],
            "http": [{
                "name": "reviews-route",
                "route": [
                    {"destination": {"host": "reviews", "subset": "v1"}, "weight": 100 - canary_weight},
                    {"destination": {"host": "reviews", "subset": "v2"}, "weight": canary_weight}
                ]
            }]
        }
    })
}

/// Weights of the first route by subset (host when there is none).
fn weights(api: &EmbeddedApi) -> BTreeMap<String, u32> {
    let Ok(vs) = api.get(Resource::VirtualServices, NAMESPACE, VIRTUAL_SERVICE) else {
        return BTreeMap::new();
    };
    current_weights(&vs, None)
        .ok()
        .and_then(|routes| routes.into_iter().next())
        .map(|r| {
            r.destinations
                .into_iter()
                .map(|d| {
                    let key = d.destination.subset.unwrap_or(d.destination.host);
                    (key, d.weight)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Starts the guard of `pod` in front of `app`, as `run` would with the group's flags.
async fn start_guard(
    args: &DemoArgs,
    running: &RunningApi,
    pod: &str,
    app: SocketAddr,
    role: Role,
) -> Result<guard::Guard> {
    let upstream = format!("http://{app}")
        .parse()
        .map_err(|_| Error::Config(format!("app address {app}")))?;
    let targets = RouteTargets {
        canary: CanaryTarget::new(Some("reviews".into()), Some("v2".into()))
            .map_err(|e| Error::Config(e.to_string()))?,
        stable: None,
        route: None,
    };
    let mut cluster = ClusterConfig::new("reviews", pod, VIRTUAL_SERVICE, targets);
    cluster.namespace = Some(NAMESPACE.into());
    cluster.revision = Some(match role {
        Role::Canary => REVISION.into(),
        Role::Baseline => STABLE_REVISION.into(),
    });
    cluster.role = role;
    cluster.notify = args
        .notify_url
        .clone()
        .map(|url| NotifyConfig::new(url, args.notify_format));
    let loopback = "127.0.0.1:0".parse().expect("valid address");
    let mut config = GuardConfig::proxy(upstream);
    config.admin_listen = loopback;
    if let Some(p) = config.proxy_settings() {
        p.listen = loopback;
    }
    if let Some(r) = args.max_error_ratio {
        config.thresholds.max_error_ratio = r;
    }
    if let Some(c) = args.confidence {
        config.thresholds.confidence = c;
    }
    config.cluster = Some(cluster);
    // The guard's own client configuration, as `run` builds it for a plain-http URL.
    let client = client::client(client::config_for_url(&running.url(), NAMESPACE)?, None)?;
    guard::start_with_client(&config, Some(client)).await
}

/// Runs the demo; `Ok(true)` when the rollback happened.
pub async fn run(args: DemoArgs) -> Result<bool> {
    let api = EmbeddedApi::new();
    api.seed(
        Resource::VirtualServices,
        virtual_service(args.canary_weight),
    )
    .map_err(|s| Error::Config(format!("seeding the demo VirtualService: {}", s.message)))?;
    let api_addr = "127.0.0.1:0".parse().expect("valid address");
    let running: RunningApi = api.serve(api_addr).await.map_err(|source| Error::Io {
        context: format!("binding the embedded API on {api_addr}"),
        source,
    })?;

    let io = |context: &str| {
        let context = context.to_string();
        move |source| Error::Io { context, source }
    };
    let relative = args.fault == FaultKind::Relative;
    let fault_ratio = args
        .fault_ratio
        .unwrap_or(if relative { 0.04 } else { 0.5 });
    // With `--fault relative` the stable pods fail a little all along.
    let stable_fault = relative.then(|| {
        let f = Arc::new(Canary::new(Fault::Error, STABLE_ERRORS));
        f.start_failing();
        f
    });
    let stable_addr = apps::serve("reviews-v1", stable_fault)
        .await
        .map_err(io("starting the stable app"))?;
    let fault = match args.fault {
        FaultKind::Errors | FaultKind::Relative => Fault::Error,
        FaultKind::Latency => Fault::Delay(Duration::from_millis(1000)),
    };
    let canary = Arc::new(Canary::new(fault, fault_ratio));
    let canary_addr = apps::serve("reviews-v2", Some(canary.clone()))
        .await
        .map_err(io("starting the canary app"))?;

    let mut guards = Vec::new();
    for suffix in ["x7k2p", "m4q9z", "b8n3w"] {
        let pod = format!("reviews-v2-{REVISION}-{suffix}");
        let guard = start_guard(&args, &running, &pod, canary_addr, Role::Canary).await?;
        guards.push((pod, guard));
    }
    // Stable pods guarded as baseline with `--fault relative`; else the stable app directly.
    let mut baseline = Vec::new();
    if relative {
        for suffix in ["q2w8e", "t5y1u"] {
            let pod = format!("reviews-v1-{STABLE_REVISION}-{suffix}");
            baseline.push(start_guard(&args, &running, &pod, stable_addr, Role::Baseline).await?);
        }
    }
    let stables: Vec<SocketAddr> = match baseline.is_empty() {
        true => vec![stable_addr],
        false => baseline.iter().filter_map(|g| g.proxy_addr).collect(),
    };

    let say = |t: Duration, line: String| {
        if !args.json {
            println!("{:>6.1}s  {line}", t.as_secs_f64());
        }
    };
    let start = Instant::now();
    let before = weights(&api);
    say(
        Duration::ZERO,
        format!(
        "embedded API at {}; VirtualService {VIRTUAL_SERVICE}: {}; {} canary guards in proxy mode{}",
        running.url(), fmt_weights(&before), guards.len(),
        if baseline.is_empty() { String::new() } else {
            format!(", {} baseline guards on the stable pods (failing {:.1}%)", baseline.len(), STABLE_ERRORS * 100.0)
        }
    ),
    );
    say(
        Duration::ZERO,
        format!(
            "load: {} rps split by the VirtualService's weights; fault in {:.0}s",
            args.rate,
            args.fault_after.as_secs_f64()
        ),
    );

    let seconds: Arc<Mutex<Vec<Second>>> = Arc::default();
    let load = Load {
        rate: args.rate,
        stables,
        canary_subset: "v2".into(),
        canaries: guards.iter().filter_map(|(_, g)| g.proxy_addr).collect(),
    };
    let reader = api.clone();
    let load = tokio::spawn(load.run(
        move || weights(&reader),
        api.subscribe(),
        seconds.clone(),
        start,
    ));

    let mut leader: Option<String> = None;
    let mut saw_failing = false;
    let mut fault_start: Option<Instant> = None;
    let mut rollback: Option<(Instant, String)> = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut printed_seconds = 0usize;
    loop {
        ticker.tick().await;
        let now = Instant::now();
        if fault_start.is_none() && now >= start + args.fault_after {
            canary.start_failing();
            fault_start = Some(now);
            say(
                now - start,
                format!(
                    "fault injected: the canary now {} {:.0}% of its requests",
                    match args.fault {
                        FaultKind::Errors | FaultKind::Relative => "answers 500 to",
                        FaultKind::Latency => "takes 1s (twice the 500ms limit) on",
                    },
                    fault_ratio * 100.0
                ),
            );
        }
        for (pod, g) in &guards {
            let s = g.state.read();
            if s.leader && leader.as_deref() != Some(pod) {
                leader = Some(pod.clone());
                say(now - start, format!("leader elected: {pod}"));
            }
            if s.leader && !saw_failing && s.verdict == crate::domain::policy::Verdict::Failing {
                saw_failing = true;
                let agg = s.aggregate.clone().unwrap_or_default();
                say(now - start, format!(
                    "verdict failing on the leader: {} requests in the window, error ratio {:.3}, p99 {:.1}ms",
                    agg.requests, agg.error_ratio, agg.p99_ms.unwrap_or(0.0)
                ));
            }
        }
        if rollback.is_none() {
            if let Some(w) = api.history().into_iter().find(|w| {
                w.verb == Verb::Patch
                    && w.resource == Resource::VirtualServices
                    && w.succeeded()
                    && w.user_agent
                        .as_deref()
                        .is_some_and(|a| a.starts_with("canary-guard"))
            }) {
                let by = leader.clone().unwrap_or_else(|| "a guard".into());
                say(
                    w.at.saturating_duration_since(start),
                    format!(
                        "VirtualService patched by {by}: {} -> {}",
                        fmt_weights(&before),
                        fmt_weights(&weights(&api))
                    ),
                );
                rollback = Some((w.at, by));
            }
        }
        let done = {
            let secs = seconds.lock();
            let full = secs.len().saturating_sub(1);
            for (i, s) in secs.iter().enumerate().take(full).skip(printed_seconds) {
                say(
                    Duration::from_secs(i as u64 + 1),
                    format!(
                        "traffic in second {:>2}: stable {:>4}, canary {:>3} ({} errors)",
                        i + 1,
                        s.stable,
                        s.canary,
                        s.canary_errors
                    ),
                );
            }
            printed_seconds = printed_seconds.max(full);
            // Show `--linger` of traffic after the rollback.
            match (&rollback, fault_start) {
                (Some((at, _)), _) => now >= *at + args.linger,
                (None, Some(f)) => now >= f + args.timeout,
                _ => false,
            }
        };
        if done {
            break;
        }
    }
    load.abort();

    let after = weights(&api);
    let record = api
        .get(Resource::VirtualServices, NAMESPACE, VIRTUAL_SERVICE)
        .ok()
        .and_then(|vs| {
            vs.pointer("/metadata/annotations/canary-guard.io~1rollback")
                .and_then(Value::as_str)
                .and_then(|s| serde_json::from_str(s).ok())
        });
    let totals = seconds
        .lock()
        .iter()
        .fold(Second::default(), |a, s| Second {
            stable: a.stable + s.stable,
            canary: a.canary + s.canary,
            canary_errors: a.canary_errors + s.canary_errors,
        });
    let report = Report {
        rolled_back: rollback.is_some(),
        time_to_rollback_s: rollback.as_ref().zip(fault_start).map(|((at, _), f)| {
            (at.saturating_duration_since(f).as_secs_f64() * 1000.0).round() / 1000.0
        }),
        leader: rollback.as_ref().map(|(_, by)| by.clone()),
        weights_before: before,
        weights_after: after,
        fault: args.fault,
        fault_ratio,
        rate: args.rate,
        requests: BTreeMap::from([
            ("stable".to_string(), totals.stable),
            ("canary".to_string(), totals.canary),
            ("canary_errors".to_string(), totals.canary_errors),
        ]),
        rollback_record: record,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        );
    } else {
        match report.time_to_rollback_s {
            Some(t) => println!("rolled back {t:.2}s after the fault started"),
            None => println!(
                "no rollback within {:.0}s of the fault",
                args.timeout.as_secs_f64()
            ),
        }
    }
    for g in guards.iter().map(|(_, g)| g).chain(&baseline) {
        g.shutdown();
    }
    for g in guards.into_iter().map(|(_, g)| g).chain(baseline) {
        g.wait().await;
    }
    running.stop().await;
    Ok(report.rolled_back)
}

fn fmt_weights(w: &BTreeMap<String, u32>) -> String {
    w.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
