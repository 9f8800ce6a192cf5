//! `canary-guard status` and `canary-guard restore`: what an operator runs by
//! hand, in the spirit of `kubectl rollout status` and `kubectl rollout undo`.
//! `status --watch` redraws only when the report changes.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde::Serialize;
use serde_json::{json, Value};

use crate::admin::state::WindowView;
use crate::cluster::client;
use crate::cluster::deployment;
use crate::cluster::election::lease_name;
use crate::cluster::members::{MemberReader, GROUP_LABEL};
use crate::cluster::virtual_service::{self, RestoreOutcome, RollbackRecord};
use crate::domain::judge::{Judge, MemberSample};
use crate::domain::policy::Thresholds;
use crate::domain::relative::RelativeBreach;
use crate::domain::routes::{current_weights, CanaryTarget};
use crate::{Error, Result};

/// Where to find the group and the VirtualService.
#[derive(Clone, Debug, Args)]
pub struct Target {
    /// Namespace (default: the kubeconfig's).
    #[arg(long, short = 'n', env = "CANARY_GUARD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Kubeconfig file (default: in-cluster, then `KUBECONFIG`, then ~/.kube/config).
    #[arg(long, env = "CANARY_GUARD_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The VirtualService that splits the traffic.
    #[arg(long, env = "CANARY_GUARD_VIRTUAL_SERVICE", value_name = "NAME")]
    pub virtual_service: String,
    /// The networking.istio.io version to use.
    #[arg(long, default_value = "v1", value_parser = ["v1", "v1beta1", "v1alpha3"])]
    pub virtual_service_version: String,
}

/// Flags of `canary-guard status`.
#[derive(Clone, Debug, Args)]
pub struct StatusArgs {
    /// Guard group.
    #[arg(long, env = "CANARY_GUARD_GROUP")]
    pub group: String,
    /// The VirtualService and where it lives.
    #[command(flatten)]
    pub target: Target,
    /// The canary destination's host, to mark it in the weights.
    #[arg(long, env = "CANARY_GUARD_CANARY_HOST")]
    pub canary_host: Option<String>,
    /// The canary destination's subset, to mark it in the weights.
    #[arg(long, env = "CANARY_GUARD_CANARY_SUBSET")]
    pub canary_subset: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Look again every second and redraw when something changed; Ctrl-C ends it.
    #[arg(long, short = 'w')]
    pub watch: bool,
}

/// Time between two looks of `status --watch`.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// `status --watch`: clears the screen and draws the report each time it changes (an
/// error is drawn as the report, so a flapping API shows and the watch goes on); ends
/// with success on Ctrl-C.
pub async fn watch(args: StatusArgs, mut out: impl std::io::Write) -> Result<()> {
    let mut shown: Option<String> = None;
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One listener for the whole watch, so a Ctrl-C during a look is not lost.
    let stop = super::terminated();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return Ok(()),
        }
        let frame = tokio::select! {
            r = status(args.clone()) => match r {
                Ok(s) => s,
                Err(e) => format!("error: {e}\n"),
            },
            _ = &mut stop => return Ok(()),
        };
        if shown.as_deref() != Some(frame.as_str()) {
            // Clear the screen and home the cursor, as `watch` does.
            let _ = write!(out, "\x1b[2J\x1b[H{frame}");
            let _ = out.flush();
            shown = Some(frame);
        }
    }
}

/// Flags of `canary-guard restore`.
#[derive(Clone, Debug, Args)]
pub struct RestoreArgs {
    /// The VirtualService and where it lives.
    #[command(flatten)]
    pub target: Target,
    /// Also resume this Deployment's rollout (undo `--on-rollback=pause`).
    #[arg(long, value_name = "NAME")]
    pub deployment: Option<String>,
    /// Show what would change without writing.
    #[arg(long)]
    pub dry_run: bool,
}

async fn connect(t: &Target) -> Result<(kube::Client, String)> {
    let config = client::config(t.kubeconfig.as_deref()).await?;
    let c = client::client(config, t.namespace.as_deref())?;
    let ns = t
        .namespace
        .clone()
        .unwrap_or_else(|| c.default_namespace().to_string());
    Ok((c, ns))
}

fn kube_err(op: &str) -> impl FnOnce(kube::Error) -> Error + '_ {
    move |e| Error::Kube {
        op: op.to_string(),
        source: Box::new(e),
    }
}

/// One member in the status report.
#[derive(Debug, Serialize)]
struct MemberStatus {
    pod: String,
    revision: Option<String>,
    age_seconds: f64,
    /// `canary`, or `baseline` for a guard on a stable pod.
    role: &'static str,
    window: WindowView,
}

/// The status report.
#[derive(Debug, Serialize)]
struct Status {
    group: String,
    namespace: String,
    leader: Option<String>,
    members: Vec<MemberStatus>,
    aggregate: WindowView,
    /// The baseline members' windows added up, when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<WindowView>,
    /// Why the canary fails against its baseline, if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    relative_breach: Option<RelativeBreach>,
    /// Why a failing canary is not blamed: its baseline fails too.
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_degraded: Option<String>,
    verdict: &'static str,
    weights: Value,
    last_rollback: Option<RollbackRecord>,
}

/// `canary-guard status`: leader, members and their windows, verdict, weights.
pub async fn status(args: StatusArgs) -> Result<String> {
    let (c, ns) = connect(&args.target).await?;
    let leases: Api<Lease> = Api::namespaced(c.clone(), &ns);
    let leader = leases
        .get_opt(&lease_name(&args.group))
        .await
        .map_err(kube_err("get lease"))?
        .and_then(|l| l.spec.and_then(|s| s.holder_identity))
        .filter(|h| !h.is_empty());
    // A one-shot observer sees every lease as fresh; staleness needs two looks.
    let mut observer = MemberReader::new(&args.group, std::time::Duration::from_secs(3600));
    let listed = observer.list(&leases).await.map_err(|e| {
        Error::Config(format!(
            "listing leases with {GROUP_LABEL}={}: {e}",
            args.group
        ))
    })?;
    let mut members = Vec::new();
    let mut samples = Vec::new();
    for m in listed {
        members.push(MemberStatus {
            pod: m.pod.clone(),
            revision: m.revision.clone(),
            age_seconds: 0.0,
            role: m.role.as_str(),
            window: WindowView::from(&m.summary),
        });
        samples.push(MemberSample {
            pod: m.pod,
            revision: m.revision,
            summary: m.summary,
            role: m.role,
        });
    }
    // The canary's aggregate, and against the baseline members when there are any.
    let judgement = Judge::new(Thresholds::default(), false).judge(&samples);
    let vs_api = virtual_service::api(c.clone(), &ns, &args.target.virtual_service_version);
    let vs = vs_api
        .get(&args.target.virtual_service)
        .await
        .map_err(kube_err("get virtualservice"))?;
    let record = RollbackRecord::from_object(&vs).ok().flatten();
    let canary = CanaryTarget::new(args.canary_host.clone(), args.canary_subset.clone()).ok();
    let value = serde_json::to_value(&vs).unwrap_or(Value::Null);
    let weights = current_weights(&value, canary.as_ref()).map_err(|e| {
        Error::Config(format!(
            "VirtualService {}: {e}",
            args.target.virtual_service
        ))
    })?;
    let verdict = if record.as_ref().is_some_and(|r| r.restored_at.is_none()) {
        "rolled_back"
    } else {
        judgement.verdict.as_str()
    };
    let weights_json: Value = weights
        .iter()
        .map(|r| {
            json!({
                "route": r.route.to_string(),
                "destinations": r.destinations.iter().map(|d| json!({
                    "destination": d.destination.to_string(),
                    "weight": d.weight,
                    "canary": d.canary,
                })).collect::<Vec<_>>()
            })
        })
        .collect();
    let report = Status {
        group: args.group.clone(),
        namespace: ns,
        leader,
        aggregate: WindowView::from(&judgement.aggregate),
        baseline: judgement.baseline.as_ref().map(WindowView::from),
        relative_breach: judgement.relative,
        baseline_degraded: judgement.degraded,
        members,
        verdict,
        weights: weights_json,
        last_rollback: record,
    };
    if args.json {
        return Ok(serde_json::to_string_pretty(&report).expect("status serializes"));
    }
    Ok(render(&report))
}

fn render(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "group {} in {}: {}", s.group, s.namespace, s.verdict);
    let _ = writeln!(out, "leader: {}", s.leader.as_deref().unwrap_or("none"));
    let w = &s.aggregate;
    let _ = writeln!(
        out,
        "window: {} requests, {} errors (ratio {:.4}), p99 {}",
        w.requests,
        w.errors,
        w.error_ratio,
        w.p99_ms.map_or("-".into(), |p| format!("{p:.1}ms"))
    );
    if let Some(b) = &s.baseline {
        let _ = writeln!(
            out,
            "baseline: {} requests, {} errors (ratio {:.4}), p99 {}",
            b.requests,
            b.errors,
            b.error_ratio,
            b.p99_ms.map_or("-".into(), |p| format!("{p:.1}ms"))
        );
    }
    if let Some(r) = &s.relative_breach {
        let _ = writeln!(out, "against the baseline: {r}");
    }
    if let Some(why) = &s.baseline_degraded {
        let _ = writeln!(out, "inconclusive: {why}");
    }
    let _ = writeln!(out, "members ({}):", s.members.len());
    for m in &s.members {
        let _ = writeln!(
            out,
            "  {:<40} {:<8} rev {:<12} {:>6} req {:>5} err  p99 {}",
            m.pod,
            m.role,
            m.revision.as_deref().unwrap_or("-"),
            m.window.requests,
            m.window.errors,
            m.window.p99_ms.map_or("-".into(), |p| format!("{p:.1}ms"))
        );
    }
    let _ = writeln!(out, "weights:");
    for r in s.weights.as_array().into_iter().flatten() {
        let dests: Vec<String> = r["destinations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                format!(
                    "{}={}{}",
                    d["destination"].as_str().unwrap_or("?"),
                    d["weight"],
                    if d["canary"] == true { " (canary)" } else { "" }
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  {}: {}",
            r["route"].as_str().unwrap_or("?"),
            dests.join(", ")
        );
    }
    if let Some(r) = &s.last_rollback {
        let _ = writeln!(
            out,
            "last rollback: {} revision {} — {}{}",
            r.time,
            r.canary_revision,
            r.reason,
            r.restored_at
                .as_ref()
                .map_or(String::new(), |t| format!(" (restored {t})"))
        );
    }
    out
}

/// `canary-guard restore`: puts the recorded weights back (and resumes the rollout).
pub async fn restore(args: RestoreArgs) -> Result<String> {
    let (c, ns) = connect(&args.target).await?;
    let vs_api = virtual_service::api(c.clone(), &ns, &args.target.virtual_service_version);
    let outcome = virtual_service::restore(&vs_api, &args.target.virtual_service, args.dry_run)
        .await
        .map_err(|e| Error::Config(e.to_string()))?;
    let mut out = match outcome {
        RestoreOutcome::Restored {
            summary, skipped, ..
        } => {
            let mut s = format!("restored: {summary}\n");
            for k in skipped {
                let _ = writeln!(s, "not restored: {k}");
            }
            s
        }
        RestoreOutcome::NothingRecorded => format!(
            "VirtualService {} carries no rollback record: nothing to restore\n",
            args.target.virtual_service
        ),
        RestoreOutcome::AlreadyRestored { restored_at } => {
            format!("already restored at {restored_at}\n")
        }
        RestoreOutcome::DryRun { summary, .. } => format!("dry run: would restore {summary}\n"),
    };
    if let Some(d) = &args.deployment {
        if args.dry_run {
            let _ = writeln!(out, "dry run: would resume deployment {d}");
        } else {
            deployment::set_paused(c, &ns, d, false)
                .await
                .map_err(kube_err("patch deployment"))?;
            let _ = writeln!(out, "resumed deployment {d}");
        }
    }
    Ok(out)
}
