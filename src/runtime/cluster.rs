//! The cluster loop: leader election, member summaries, and the leader's
//! rollback / re-assert / restore of the VirtualService.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::admin::metrics::Metrics;
use crate::admin::state::{MemberView, Problem, SharedState, WindowView};
use crate::cluster::election::{ElectionConfig, Elector, Leadership};
use crate::cluster::events::{self, EventSpec, EventType};
use crate::cluster::members;
use crate::cluster::virtual_service::{
    self, RestoreOutcome, RollbackOutcome, RollbackReason, RouteTargets, VirtualServiceError,
    FIELD_MANAGER,
};
use crate::config::{ClusterArgs, ClusterConfig, OnRollback};
use crate::domain::judge::{decide, Action, Judge, MemberSample, Recorded};
use crate::domain::policy::{Check, Thresholds, Verdict};
use crate::domain::routes::{CanaryTarget, StableTarget};
use crate::domain::window::{Summary, Window};
use crate::{Error, Result};

/// Shortest time between two looks at the VirtualService while a rollback is in force.
const REASSERT_EVERY: Duration = Duration::from_secs(2);
/// Longest wait between retries after the API or the VirtualService failed us.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Everything the cluster loop needs.
pub struct Cluster {
    /// Identity and names.
    pub config: ClusterConfig,
    /// The cluster flags.
    pub args: ClusterArgs,
    /// Namespace in use.
    pub namespace: String,
    /// API client.
    pub client: kube::Client,
    /// The local window.
    pub window: Arc<Window>,
    /// Thresholds.
    pub thresholds: Thresholds,
    /// Time between checks.
    pub interval: Duration,
    /// Exported metrics.
    pub metrics: Arc<Metrics>,
    /// `/v1/state`.
    pub state: SharedState,
}

impl Cluster {
    fn targets(&self) -> Result<RouteTargets> {
        let canary = CanaryTarget::new(
            self.args.canary_host.clone(),
            self.args.canary_subset.clone(),
        )
        .map_err(|e| Error::Config(format!("--canary-host/--canary-subset: {e}")))?;
        let stable = if self.args.stable_host.is_some() || self.args.stable_subset.is_some() {
            Some(
                StableTarget::new(
                    self.args.stable_host.clone(),
                    self.args.stable_subset.clone(),
                )
                .map_err(|e| Error::Config(format!("--stable-host/--stable-subset: {e}")))?,
            )
        } else {
            None
        };
        Ok(RouteTargets {
            canary,
            stable,
            route: self.args.route.clone(),
        })
    }
}

/// Starts the elector, the member publisher and the leader loop. They stop
/// (the leader releasing its lease, the member deleting its own) when
/// `shutdown` carries `true`.
pub fn spawn(cluster: Cluster, shutdown: watch::Receiver<bool>) -> Result<JoinHandle<()>> {
    let targets = cluster.targets()?;
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let mut election = ElectionConfig::new(&cluster.config.group, cluster.config.pod_name.clone());
    election.lease_duration = cluster.args.lease_duration;
    election.renew_deadline = cluster.args.renew_deadline;
    election.retry_period = cluster.args.retry_period;
    let metrics = cluster.metrics.clone();
    let elector = Elector::new(leases.clone(), election)
        .map_err(|e| Error::Config(e.to_string()))?
        .on_api_error(Arc::new(move |op: &'static str| metrics.kube_error(op)));
    let leadership = elector.leadership();
    let elector_task = tokio::spawn(elector.run(super::guard::signalled(shutdown.clone())));
    let publisher = tokio::spawn(publish_loop(
        leases.clone(),
        PublishSettings {
            config: cluster.config.clone(),
            every: cluster.args.publish_interval,
            interval: cluster.interval,
            thresholds: cluster.thresholds.clone(),
        },
        cluster.window.clone(),
        cluster.metrics.clone(),
        shutdown.clone(),
    ));
    Ok(tokio::spawn(async move {
        leader_loop(cluster, targets, leases, leadership, shutdown).await;
        let _ = publisher.await;
        let _ = elector_task.await;
    }))
}

/// Writes this guard's window to its member lease every publish interval,
/// and at once when the window starts or stops crossing a threshold, so the
/// leader learns of a fault within one check instead of one publish interval.
async fn publish_loop(
    leases: Api<Lease>,
    cluster: PublishSettings,
    window: Arc<Window>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = &cluster.config;
    let member = members::Member::new(&config.group, &config.pod_name)
        .pod_uid(config.pod_uid.clone())
        .revision(config.revision.clone())
        .publish_interval(cluster.every);
    // Judge every sample, however few: a member's share of traffic may be small.
    let eager = Thresholds {
        min_requests: 1,
        ..cluster.thresholds.clone()
    };
    // Looking is cheap (microseconds); publishing happens only when due.
    let mut tick = tokio::time::interval((cluster.interval / 4).min(cluster.every));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last: Option<(Instant, bool)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        let now = Instant::now();
        let summary = window.summary(now);
        let breach = matches!(eager.check(&summary), Check::Failing(_));
        let due = match last {
            None => true,
            Some((at, was)) => was != breach || now >= at + cluster.every,
        };
        if !due {
            continue;
        }
        match member.publish(&leases, &summary).await {
            Ok(()) => last = Some((now, breach)),
            Err(e) => {
                metrics.kube_error("lease_publish");
                tracing::debug!(error = %e, "could not publish the member summary");
            }
        }
    }
    // Leave at once so the leader stops counting us.
    let _ = member.leave(&leases).await;
}

/// What the publisher needs from the cluster settings.
struct PublishSettings {
    config: ClusterConfig,
    every: Duration,
    interval: Duration,
    thresholds: Thresholds,
}

/// State the leader keeps between rounds.
struct LeaderRound {
    judge: Judge,
    recorded: Option<Recorded>,
    next_vs_look: Instant,
    backoff: Duration,
    last_problem: Option<String>,
    observer: members::Observer,
}

async fn leader_loop(
    cluster: Cluster,
    targets: RouteTargets,
    leases: Api<Lease>,
    leadership: Leadership,
    mut shutdown: watch::Receiver<bool>,
) {
    let vs_api = virtual_service::api(
        cluster.client.clone(),
        &cluster.namespace,
        &cluster.args.virtual_service_version,
    );
    let recorder = events::Recorder::new(cluster.client.clone(), cluster.config.pod_name.clone());
    let mut tick = tokio::time::interval(cluster.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut round: Option<LeaderRound> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        let leader_state = leadership.state();
        cluster
            .metrics
            .leader
            .set(i64::from(leader_state.is_leader));
        if !leader_state.is_leader {
            round = None;
            cluster.metrics.members.set(0);
            let mut s = cluster.state.write();
            s.leader = false;
            s.leader_identity = leader_state.leader;
            s.members.clear();
            s.aggregate = None;
            continue;
        }
        let r = round.get_or_insert_with(|| LeaderRound {
            judge: Judge::new(cluster.thresholds.clone(), cluster.args.per_member),
            recorded: None,
            next_vs_look: Instant::now(),
            backoff: cluster.interval,
            last_problem: None,
            observer: members::Observer::new(&cluster.config.group, cluster.args.publish_interval),
        });
        lead_once(
            &cluster,
            &targets,
            &leases,
            &vs_api,
            &recorder,
            r,
            leader_state.leader,
        )
        .await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn lead_once(
    c: &Cluster,
    targets: &RouteTargets,
    leases: &Api<Lease>,
    vs_api: &Api<kube::api::DynamicObject>,
    recorder: &events::Recorder,
    r: &mut LeaderRound,
    identity: Option<String>,
) {
    let now = Instant::now();
    let own = c.window.summary(now);
    let listed = match r.observer.list(leases).await {
        Ok(m) => m,
        Err(e) => {
            c.metrics.kube_error("lease_list");
            tracing::warn!(error = %e, "could not list group members");
            return;
        }
    };
    let mut samples: Vec<MemberSample> = Vec::new();
    let mut ages = Vec::new();
    for m in listed {
        if m.pod == c.config.pod_name {
            continue;
        }
        match serde_json::from_value::<Summary>(m.summary.clone()) {
            Ok(summary) => {
                ages.push((m.pod.clone(), m.age));
                samples.push(MemberSample {
                    pod: m.pod,
                    revision: m.revision,
                    summary,
                });
            }
            Err(e) => {
                tracing::warn!(pod = %m.pod, error = %e, "ignoring a member's unreadable summary")
            }
        }
    }
    // Our own window is fresher than our lease.
    ages.push((c.config.pod_name.clone(), Duration::ZERO));
    samples.push(MemberSample {
        pod: c.config.pod_name.clone(),
        revision: c.config.revision.clone(),
        summary: own,
    });
    let judgement = r.judge.judge(&samples);
    let revisions: BTreeSet<Option<String>> = samples.iter().map(|s| s.revision.clone()).collect();

    // Look at the VirtualService's record every few seconds (sooner after our own writes).
    let looked = now >= r.next_vs_look;
    if looked {
        r.next_vs_look = now + REASSERT_EVERY;
        match virtual_service::read_record(vs_api, &c.config.virtual_service).await {
            Ok(record) => {
                r.recorded = record.as_ref().map(|rec| Recorded {
                    revision: rec.canary_revision.clone(),
                    restored: rec.restored_at.is_some(),
                });
                c.state.write().last_rollback =
                    record.and_then(|rec| serde_json::to_value(rec).ok());
                clear_problem(c, r);
            }
            Err(e) => report_problem(c, r, recorder, &e).await,
        }
    }

    let action = decide(
        judgement.verdict,
        &revisions,
        r.recorded.as_ref(),
        c.args.restore_on_new_revision,
    );
    let verdict = if action == Action::Reassert {
        Verdict::RolledBack
    } else {
        judgement.verdict
    };
    match action {
        // Re-assert only on the rounds that looked at the VirtualService: rate-limited.
        Action::None => {}
        Action::Reassert if !looked => {}
        Action::Rollback | Action::Reassert => {
            let reason = match &judgement.breach {
                Some((who, b)) => format!(
                    "{b} ({} over {}s; {} consecutive failing checks)",
                    if who == "aggregate" {
                        "all members".to_string()
                    } else {
                        format!("member {who}")
                    },
                    judgement.aggregate.seconds,
                    c.thresholds.failure_threshold
                ),
                None => "rollback re-asserted: the failed revision still runs".to_string(),
            };
            let failed_revision = match (&action, &r.recorded) {
                (Action::Reassert, Some(rec)) => rec.revision.clone(),
                _ => c.config.revision.clone().unwrap_or_default(),
            };
            let why = RollbackReason {
                reason,
                group: c.config.group.clone(),
                canary_revision: failed_revision.clone(),
            };
            match virtual_service::rollback(
                vs_api,
                &c.config.virtual_service,
                targets,
                &why,
                c.args.dry_run,
            )
            .await
            {
                Ok(RollbackOutcome::Applied {
                    summary,
                    reasserted,
                    regarding,
                    ..
                }) => {
                    c.metrics.rollbacks_total.inc();
                    clear_problem(c, r);
                    r.recorded = Some(Recorded {
                        revision: failed_revision,
                        restored: false,
                    });
                    r.next_vs_look = Instant::now();
                    let (reason, verb) = if reasserted {
                        (
                            events::reasons::CANARY_ROLLBACK_REASSERTED,
                            "re-asserted the rollback",
                        )
                    } else {
                        (events::reasons::CANARY_ROLLBACK, "rolled back")
                    };
                    tracing::warn!(%summary, why = %why.reason, "{verb}");
                    let note = format!("{verb}: {summary}; {}", why.reason);
                    publish(
                        recorder,
                        EventType::Warning,
                        reason,
                        events::actions::ROLLBACK,
                        &note,
                        *regarding,
                    )
                    .await;
                    if let Some(d) = deployment_ref(c) {
                        publish(
                            recorder,
                            EventType::Warning,
                            reason,
                            events::actions::ROLLBACK,
                            &note,
                            d,
                        )
                        .await;
                    }
                    if c.args.on_rollback == OnRollback::Pause && !c.args.dry_run {
                        set_paused(c, true).await;
                    }
                }
                Ok(RollbackOutcome::AlreadyRolledBack) => {
                    clear_problem(c, r);
                    if r.recorded.is_none() {
                        r.recorded = Some(Recorded {
                            revision: failed_revision,
                            restored: false,
                        });
                    }
                }
                Ok(RollbackOutcome::DryRun { summary, .. }) => {
                    tracing::warn!(%summary, why = %why.reason, "dry run: would roll back");
                }
                Ok(RollbackOutcome::Skipped { skipped }) => {
                    let list: Vec<String> = skipped.iter().map(ToString::to_string).collect();
                    let err = format!("the canary still has traffic only in routes that cannot be reverted: {}; set --stable-host/--stable-subset", list.join("; "));
                    set_problem(c, r, recorder, "CanaryRollbackSkipped", &err).await;
                }
                Err(e) => report_problem(c, r, recorder, &e).await,
            }
        }
        Action::Restore => {
            match virtual_service::restore(vs_api, &c.config.virtual_service, c.args.dry_run).await
            {
                Ok(RestoreOutcome::Restored {
                    summary, regarding, ..
                }) => {
                    r.recorded = None;
                    r.judge.reset();
                    clear_problem(c, r);
                    let note = format!("a new canary revision runs: restored {summary}");
                    tracing::info!(%summary, "restored the recorded weights");
                    publish(
                        recorder,
                        EventType::Normal,
                        events::reasons::CANARY_RESTORED,
                        events::actions::RESTORE,
                        &note,
                        *regarding,
                    )
                    .await;
                    if c.args.on_rollback == OnRollback::Pause {
                        set_paused(c, false).await;
                    }
                }
                Ok(RestoreOutcome::NothingRecorded | RestoreOutcome::AlreadyRestored { .. }) => {
                    r.recorded = None;
                }
                Ok(RestoreOutcome::DryRun { summary, .. }) => {
                    tracing::info!(%summary, "dry run: would restore");
                }
                Err(e) => report_problem(c, r, recorder, &e).await,
            }
        }
    }

    c.metrics.set_check(
        &judgement.aggregate,
        verdict,
        judgement.consecutive_failures,
    );
    c.metrics.members.set(samples.len() as i64);
    let members = samples
        .iter()
        .map(|s| MemberView {
            pod: s.pod.clone(),
            revision: s.revision.clone(),
            age_seconds: ages
                .iter()
                .find(|(p, _)| p == &s.pod)
                .map_or(0.0, |(_, a)| (a.as_secs_f64() * 10.0).round() / 10.0),
            window: WindowView::from(&s.summary),
            verdict: judgement
                .members
                .get(&s.pod)
                .copied()
                .unwrap_or(Verdict::Inconclusive),
        })
        .collect();
    let mut s = c.state.write();
    s.leader = true;
    s.leader_identity = identity;
    s.verdict = verdict;
    s.consecutive_failures = judgement.consecutive_failures;
    s.aggregate = Some(WindowView::from(&judgement.aggregate));
    s.members = members;
}

fn deployment_ref(c: &Cluster) -> Option<ObjectReference> {
    c.args.deployment.as_ref().map(|name| ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("Deployment".into()),
        name: Some(name.clone()),
        namespace: Some(c.namespace.clone()),
        ..ObjectReference::default()
    })
}

/// Pauses or resumes the canary Deployment's rollout, as `kubectl rollout pause` does.
async fn set_paused(c: &Cluster, paused: bool) {
    let Some(name) = c.args.deployment.as_deref() else {
        return;
    };
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), &c.namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    match api
        .patch(
            name,
            &params,
            &Patch::Merge(json!({"spec": {"paused": paused}})),
        )
        .await
    {
        Ok(_) => tracing::info!(
            deployment = name,
            paused,
            "updated the canary Deployment's rollout"
        ),
        Err(e) => {
            c.metrics.kube_error("patch_deployment");
            tracing::warn!(deployment = name, error = %e, "could not pause/resume the canary Deployment");
        }
    }
}

async fn publish(
    recorder: &events::Recorder,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
    regarding: ObjectReference,
) {
    recorder
        .publish(EventSpec {
            type_,
            reason: reason.into(),
            action: action.into(),
            note: note.into(),
            regarding,
        })
        .await;
}

async fn report_problem(
    c: &Cluster,
    r: &mut LeaderRound,
    recorder: &events::Recorder,
    e: &VirtualServiceError,
) {
    if matches!(
        e,
        VirtualServiceError::Kube { .. }
            | VirtualServiceError::Forbidden { .. }
            | VirtualServiceError::NotFound { .. }
    ) {
        c.metrics.kube_error("virtualservice");
    }
    set_problem(c, r, recorder, e.reason(), &e.to_string()).await;
}

/// Records a problem on `/v1/state`, logs it and emits one Event per distinct
/// message; the next look at the VirtualService backs off exponentially.
async fn set_problem(
    c: &Cluster,
    r: &mut LeaderRound,
    recorder: &events::Recorder,
    reason: &str,
    message: &str,
) {
    r.next_vs_look = Instant::now() + r.backoff;
    r.backoff = (r.backoff * 2).min(MAX_BACKOFF);
    if r.last_problem.as_deref() == Some(message) {
        return;
    }
    tracing::warn!(reason, message, "VirtualService problem");
    r.last_problem = Some(message.to_string());
    c.state.write().problems = vec![Problem {
        reason: reason.into(),
        message: message.into(),
    }];
    let regarding = ObjectReference {
        api_version: Some(format!(
            "networking.istio.io/{}",
            c.args.virtual_service_version
        )),
        kind: Some("VirtualService".into()),
        name: Some(c.config.virtual_service.clone()),
        namespace: Some(c.namespace.clone()),
        ..ObjectReference::default()
    };
    publish(
        recorder,
        EventType::Warning,
        events::reasons::VIRTUAL_SERVICE_INVALID,
        events::actions::ROLLBACK,
        message,
        regarding,
    )
    .await;
}

fn clear_problem(c: &Cluster, r: &mut LeaderRound) {
    r.backoff = c.interval;
    if r.last_problem.take().is_some() {
        c.state.write().problems.clear();
    }
}
