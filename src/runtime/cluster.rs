//! The cluster loop: leader election, member summaries, and the leader's
//! rollback / re-assert / restore of the VirtualService, announced by Events
//! and notifications once written.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::Api;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::admin::metrics::Metrics;
use crate::admin::state::{MemberView, Problem, SharedState, WindowView};
use crate::cluster::api_error::Readable;
use crate::cluster::deployment;
use crate::cluster::election::{ElectionConfig, Elector, Jitter, Leadership};
use crate::cluster::events::{self, EventSpec, EventType};
use crate::cluster::member_watch::{MemberWatch, View};
use crate::cluster::members;
use crate::cluster::virtual_service::{
    self, RestoreOutcome, RollbackOutcome, RollbackReason, RouteTargets, VirtualServiceError,
};
use crate::config::{ClusterArgs, ClusterConfig, OnRollback};
use crate::domain::judge::{Judge, MemberSample, Recorded};
use crate::domain::leader::{self, Announce, Leader, Round, Write};
use crate::domain::policy::{Check, Thresholds, Verdict, FAST_LOOKS, SUSPECT};
use crate::domain::relative::Role;
use crate::domain::routes::{CanaryTarget, StableTarget};
use crate::domain::window::{Summary, Window};
use crate::notify::message::{Kind, Notification};
use crate::notify::Notifier;
use crate::{Error, Result};

/// Shortest time between two looks at the VirtualService while a rollback is in force.
const REASSERT_EVERY: Duration = Duration::from_secs(2);
/// Longest wait between retries after the API or the VirtualService failed us.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest `Retry-After` we honour; a larger one is treated as this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// While a failure lasts, it is logged again at most this often.
const LOG_AGAIN_AFTER: Duration = Duration::from_secs(60);
/// Longest time any one API call (or a whole rollback with its conflict retries) may take.
const MAX_CALL_TIME: Duration = Duration::from_secs(10);

/// `/v1/state` problem reasons of the member leases.
mod lease_problems {
    /// The leader could not list the group's member leases.
    pub const LIST: &str = "MemberLeasesUnreadable";
    /// This guard could not write its member lease.
    pub const PUBLISH: &str = "MemberLeaseNotWritten";
}

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
    /// Sends rollback / re-assert / restore notifications (`--notify-url`).
    pub notifier: Option<Notifier>,
    /// Poked by the local check while its window is suspect: the leader judges at once.
    pub suspect: Arc<Notify>,
}

impl Cluster {
    /// Bound on every API call of the cluster loop.
    ///
    /// A leader acts until its renew deadline; peers take over no sooner than a lease
    /// duration after its last renewal. A write started while leading and cut off after
    /// `lease_duration - renew_deadline` has therefore ended (on our side) before any
    /// peer can lead, which keeps two leaders' writes apart.
    fn call_timeout(&self) -> Duration {
        self.args
            .lease_duration
            .saturating_sub(self.args.renew_deadline)
            .clamp(Duration::from_millis(100), MAX_CALL_TIME)
    }

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
            call_timeout: cluster.call_timeout(),
        },
        cluster.window.clone(),
        cluster.metrics.clone(),
        cluster.state.clone(),
        shutdown.clone(),
    ));
    Ok(tokio::spawn(async move {
        leader_loop(cluster, targets, leases, leadership, shutdown).await;
        let _ = publisher.await;
        let _ = elector_task.await;
    }))
}

/// Runs `call` for at most `limit`; a call cut off is an error naming the limit.
async fn bounded<T, E: std::fmt::Display>(
    limit: Duration,
    call: impl Future<Output = std::result::Result<T, E>>,
) -> std::result::Result<T, String> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// Capped exponential backoff with jitter: each wait is between half and all of
/// the current step, so guards that failed together do not retry together.
struct Backoff {
    first: Duration,
    step: Duration,
    jitter: Jitter,
}

impl Backoff {
    fn new(first: Duration, seed: &str) -> Self {
        Self {
            first,
            step: first,
            jitter: Jitter::new(seed),
        }
    }

    /// The wait after one more failure; at least `at_least` (the server's `Retry-After`).
    fn next(&mut self, at_least: Option<Duration>) -> Duration {
        let wait = self.step.mul_f64(0.5 + 0.5 * self.jitter.next_unit());
        self.step = (self.step * 2).min(MAX_BACKOFF);
        wait.max(at_least.unwrap_or_default().min(MAX_RETRY_AFTER))
    }

    fn reset(&mut self) {
        self.step = self.first;
    }
}

/// Logs a failure that may repeat every round without flooding the log: the first
/// failure of a streak and a new kind of failure are warned about, then a reminder
/// with the count at most every [`LOG_AGAIN_AFTER`]; the recovery is logged once.
#[derive(Default)]
struct Streak {
    failures: u64,
    last_logged: Option<(Instant, String)>,
}

impl Streak {
    fn failed(&mut self, what: &str, error: &str) {
        self.failures += 1;
        let now = Instant::now();
        let due = match &self.last_logged {
            None => true,
            Some((at, kind)) => kind != what || now >= *at + LOG_AGAIN_AFTER,
        };
        if due {
            tracing::warn!(failures = self.failures, error, "{what}");
            self.last_logged = Some((now, what.to_owned()));
        } else {
            tracing::debug!(failures = self.failures, error, "{what}");
        }
    }

    /// Ends the streak; true when there was one.
    fn recovered(&mut self, what: &str) -> bool {
        let had = self.failures > 0;
        if had {
            tracing::info!(failures = self.failures, "{what}");
        }
        self.failures = 0;
        self.last_logged = None;
        had
    }
}

/// Sets the `/v1/state` problem with this reason (one per reason).
fn raise(state: &SharedState, reason: &str, message: &str) {
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
fn settle(state: &SharedState, reason: &str) {
    let mut s = state.write();
    if s.problems.iter().any(|p| p.reason == reason) {
        s.problems.retain(|p| p.reason != reason);
    }
}

/// Writes this guard's window to its member lease every publish interval,
/// and at once when the window starts or stops crossing a threshold, so the
/// leader learns of a fault within one check instead of one publish interval.
/// After a failed write it backs off instead of trying at every look.
async fn publish_loop(
    leases: Api<Lease>,
    cluster: PublishSettings,
    window: Arc<Window>,
    metrics: Arc<Metrics>,
    state: SharedState,
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
        confidence: 0.5,
        ..cluster.thresholds.clone()
    };
    let fast = cluster.interval / FAST_LOOKS;
    // Looking is cheap (microseconds); publishing happens only when due.
    let mut tick = tokio::time::interval(fast.min(cluster.every));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last: Option<(Instant, bool, [u64; 4])> = None;
    let mut backoff = Backoff::new(cluster.interval, &config.pod_name);
    let mut retry_at: Option<Instant> = None;
    let mut streak = Streak::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        let now = Instant::now();
        if retry_at.is_some_and(|at| now < at) {
            continue;
        }
        let summary = window.summary(now.into_std());
        let breach = matches!(eager.check(&summary), Check::Failing(_))
            || cluster.thresholds.evidence(&summary) >= SUSPECT;
        // While the window crosses a limit or gathers sequential evidence, publish each
        // new batch of evidence at the fast pace; a look that saw nothing new writes nothing.
        let seen = evidence_seen(&summary);
        let due = match last {
            None => true,
            Some((at, was, before)) => {
                was != breach
                    || now >= at + cluster.every
                    || (breach && now >= at + fast && seen != before)
            }
        };
        if !due {
            continue;
        }
        match bounded(cluster.call_timeout, member.publish(&leases, &summary)).await {
            Ok(()) => {
                last = Some((now, breach, seen));
                retry_at = None;
                backoff.reset();
                if streak.recovered("member lease written again") {
                    settle(&state, lease_problems::PUBLISH);
                }
            }
            Err(e) => {
                metrics.kube_error("lease_publish");
                streak.failed("could not write the member lease", &e);
                retry_at = Some(Instant::now() + backoff.next(None));
                raise(
                    &state,
                    lease_problems::PUBLISH,
                    &format!(
                        "cannot write member lease {}: {e}",
                        members::lease_name(&config.group, &config.pod_name)
                    ),
                );
            }
        }
    }
    // Leave at once so the leader stops counting us.
    let _ = bounded(cluster.call_timeout, member.leave(&leases)).await;
}

/// What a summary has seen: it changes when a request finishes, is given up or becomes overdue.
fn evidence_seen(s: &Summary) -> [u64; 4] {
    [s.requests, s.errors, s.abandoned, s.overdue]
}

/// What the publisher needs from the cluster settings.
struct PublishSettings {
    config: ClusterConfig,
    every: Duration,
    interval: Duration,
    thresholds: Thresholds,
    call_timeout: Duration,
}

/// State the leader keeps between rounds.
struct LeaderRound {
    /// The decisions: judge, record, which write, and what its outcome changes.
    leader: Leader,
    /// The strongest sequential evidence of the last round.
    evidence: f64,
    /// After a failure: no VirtualService call before this.
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// The VirtualService problem on `/v1/state`, by reason, and whether an Event told of it.
    vs_problem: Option<(&'static str, bool)>,
    vs_streak: Streak,
    list_streak: Streak,
    observer: members::Observer,
    /// The member leases, kept by a watch while this guard leads.
    watch: MemberWatch,
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
    let mut round: Option<LeaderRound> = None;
    let fast_pace = cluster.interval / FAST_LOOKS;
    let mut next = Instant::now();
    let mut last_round: Option<Instant> = None;
    loop {
        let member_news = async {
            match &round {
                Some(r) => r.watch.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            // Our own window gathers evidence: judge now, not at the next interval.
            _ = cluster.suspect.notified() => {}
            // A member published: judge now, but never more often than the fast pace,
            // so a hundred members publishing during an incident cost ten rounds a second.
            _ = member_news => {
                let soon = last_round.map_or(Instant::now(), |at| at + fast_pace);
                if soon > Instant::now() {
                    next = next.min(soon);
                    continue;
                }
            }
            _ = shutdown.wait_for(|s| *s) => break,
        }
        let now = Instant::now();
        last_round = Some(now);
        // While the group's evidence builds, judge at the fast pace.
        let fast = round.as_ref().is_some_and(|r| r.evidence >= SUSPECT);
        next = now + if fast { fast_pace } else { cluster.interval };
        let leader_state = leadership.state();
        cluster
            .metrics
            .leader
            .set(i64::from(leader_state.is_leader));
        if !leader_state.is_leader {
            if round.take().is_some() {
                let mut s = cluster.state.write();
                // Problems the leader raised are the new leader's to report.
                s.problems.retain(|p| p.reason == lease_problems::PUBLISH);
                cluster.metrics.set_virtual_service_problem(None);
            }
            cluster.metrics.members.set(0);
            let mut s = cluster.state.write();
            s.leader = false;
            s.leader_identity = leader_state.leader;
            s.members.clear();
            s.aggregate = None;
            continue;
        }
        // Say we lead before acting: a patch or an Event of ours must never be seen while
        // `/v1/state` still calls us a member.
        if !cluster.state.read().leader {
            let mut s = cluster.state.write();
            s.leader = true;
            s.leader_identity = leader_state.leader.clone();
        }
        let r = round.get_or_insert_with(|| {
            let metrics = cluster.metrics.clone();
            let observer =
                members::Observer::new(&cluster.config.group, cluster.args.publish_interval)
                    .on_rejected(move |why| metrics.member_summary_rejected(why.as_str()));
            LeaderRound {
                leader: Leader::new(
                    leader::Settings {
                        own_revision: cluster.config.revision.clone(),
                        restore_on_new_revision: cluster.args.restore_on_new_revision,
                        failure_threshold: cluster.thresholds.failure_threshold,
                        look_every: REASSERT_EVERY,
                    },
                    Judge::new(cluster.thresholds.clone(), cluster.args.per_member),
                ),
                evidence: 0.0,
                retry_at: None,
                backoff: Backoff::new(cluster.interval, &cluster.config.pod_name),
                vs_problem: None,
                vs_streak: Streak::default(),
                list_streak: Streak::default(),
                watch: MemberWatch::start(leases.clone(), observer.selector()),
                observer,
            }
        });
        lead_once(
            &cluster,
            &targets,
            &leases,
            &vs_api,
            &recorder,
            r,
            &leadership,
        )
        .await;
    }
    // Give queued notifications a bounded moment to go out; shutdown does not wait longer.
    let limit = cluster.call_timeout();
    if let Some(n) = cluster.notifier {
        let _ = tokio::time::timeout(limit, n.close()).await;
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
    leadership: &Leadership,
) {
    let now = Instant::now();
    let own = c.window.summary(now.into_std());
    let timeout = c.call_timeout();
    let from_watch = match r.watch.view() {
        View::Synced(leases) => Some(Ok(r.observer.observe(leases))),
        // A new leader's first list is under way: judge at the next round.
        View::Pending => return,
        View::Failing(why) => Some(Err(why)),
        View::Unsupported => None,
    };
    let listed = match from_watch {
        Some(result) => result,
        None => bounded(timeout, r.observer.list(leases)).await,
    };
    let listed = match listed {
        Ok(m) => m,
        Err(e) => {
            c.metrics.kube_error("lease_list");
            r.list_streak.failed("could not list group members", &e);
            raise(
                &c.state,
                lease_problems::LIST,
                &format!("cannot list the group's member leases: {e}"),
            );
            return;
        }
    };
    if r.list_streak.recovered("group members listed again") {
        settle(&c.state, lease_problems::LIST);
        // The API answers again: a rollback that waits on the API must not wait out its backoff.
        if r.vs_problem.is_some_and(|(reason, _)| reason == API_REASON) {
            r.retry_at = None;
            r.leader.look_soon();
        }
    }
    let mut samples: Vec<MemberSample> = Vec::new();
    let mut ages = Vec::new();
    for m in listed {
        if m.pod == c.config.pod_name {
            continue;
        }
        ages.push((m.pod.clone(), m.age));
        samples.push(MemberSample {
            pod: m.pod,
            revision: m.revision,
            summary: m.summary,
            role: Role::Canary,
        });
    }
    // Our own window is fresher than our lease.
    ages.push((c.config.pod_name.clone(), Duration::ZERO));
    samples.push(MemberSample {
        pod: c.config.pod_name.clone(),
        revision: c.config.revision.clone(),
        summary: own,
        role: Role::Canary,
    });
    // After a failure, no VirtualService call until the backoff has passed.
    let may_call = r.retry_at.is_none_or(|at| now >= at);
    // Look at the VirtualService's record every few seconds (sooner after our own writes).
    let looked = may_call && r.leader.look_due(now.into_std());
    // A problem is cleared only by a round in which every VirtualService call
    // succeeded, so a read that works cannot reset the backoff of a patch that fails.
    let mut vs_ok = true;
    let mut vs_answered = false;
    if looked {
        match bounded_vs(
            c,
            virtual_service::read_record(vs_api, &c.config.virtual_service),
        )
        .await
        {
            Ok(record) => {
                r.leader.record_read(record.as_ref().map(|rec| Recorded {
                    revision: rec.canary_revision.clone(),
                    restored: rec.restored_at.is_some(),
                }));
                c.state.write().last_rollback =
                    record.and_then(|rec| serde_json::to_value(rec).ok());
                vs_answered = true;
            }
            Err(e) => {
                report_problem(c, r, recorder, &e).await;
                vs_ok = false;
            }
        }
    }

    // A leader that lost its lease while this round ran must not write.
    let may_write = may_call && vs_ok && leadership.is_leader();
    let Round {
        judgement,
        verdict,
        write,
    } = r.leader.round(&samples, looked, may_write);
    r.evidence = judgement.evidence;
    match write {
        None => {}
        Some(Write::Rollback {
            reason,
            failed_revision,
            reassert: _,
        }) => {
            let why = RollbackReason {
                reason,
                group: c.config.group.clone(),
                canary_revision: failed_revision.clone(),
            };
            let outcome = bounded_vs(
                c,
                virtual_service::rollback(
                    vs_api,
                    &c.config.virtual_service,
                    targets,
                    &why,
                    c.args.dry_run,
                ),
            )
            .await;
            let done = |r: &mut LeaderRound, result| r.leader.rolled_back(&failed_revision, result);
            match outcome {
                Ok(RollbackOutcome::Applied {
                    summary,
                    reasserted,
                    regarding,
                    ..
                }) => {
                    vs_answered = true;
                    done(r, leader::RollbackOutcome::Applied);
                    announce_rollback(c, recorder, &summary, &why, reasserted, *regarding).await;
                }
                Ok(RollbackOutcome::AlreadyRolledBack) => {
                    vs_answered = true;
                    if done(r, leader::RollbackOutcome::AlreadyRolledBack)
                        == Announce::EarlierAttempt
                    {
                        announce_rollback(
                            c,
                            recorder,
                            "the canary receives no traffic (written by an earlier attempt whose answer was lost)",
                            &why,
                            false,
                            vs_ref(c),
                        )
                        .await;
                    }
                }
                Ok(RollbackOutcome::DryRun { summary, .. }) => {
                    done(r, leader::RollbackOutcome::NotWritten);
                    tracing::warn!(%summary, why = %why.reason, "dry run: would roll back");
                }
                Ok(RollbackOutcome::Skipped { skipped }) => {
                    done(r, leader::RollbackOutcome::NotWritten);
                    let list: Vec<String> = skipped.iter().map(ToString::to_string).collect();
                    let err = format!("the canary still has traffic only in routes that cannot be reverted: {}; set --stable-host/--stable-subset", list.join("; "));
                    set_problem(c, r, recorder, "CanaryRollbackSkipped", &err, true, None).await;
                    vs_ok = false;
                }
                Err(e) => {
                    // A patch whose answer never came may still have been applied.
                    let maybe_applied = matches!(
                        e,
                        VirtualServiceError::Timeout { .. }
                            | VirtualServiceError::Kube { verb: "patch", .. }
                    );
                    done(r, leader::RollbackOutcome::Failed { maybe_applied });
                    report_problem(c, r, recorder, &e).await;
                    vs_ok = false;
                }
            }
        }
        Some(Write::Restore) => {
            let outcome = bounded_vs(
                c,
                virtual_service::restore(vs_api, &c.config.virtual_service, c.args.dry_run),
            )
            .await;
            r.leader.restore_done(match &outcome {
                Ok(RestoreOutcome::Restored { .. }) => leader::RestoreOutcome::Restored,
                Ok(RestoreOutcome::NothingRecorded | RestoreOutcome::AlreadyRestored { .. }) => {
                    leader::RestoreOutcome::NothingToRestore
                }
                Ok(RestoreOutcome::DryRun { .. }) | Err(_) => leader::RestoreOutcome::Unchanged,
            });
            match outcome {
                Ok(RestoreOutcome::Restored {
                    summary, regarding, ..
                }) => {
                    vs_answered = true;
                    let note = format!("a new canary revision runs: restored {summary}");
                    tracing::info!(%summary, "restored the recorded weights");
                    notify(
                        c,
                        Kind::Restore,
                        c.config.revision.as_deref().unwrap_or_default(),
                        &summary,
                        "a new canary revision runs",
                    );
                    publish(
                        c,
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
                    vs_answered = true;
                }
                Ok(RestoreOutcome::DryRun { summary, .. }) => {
                    tracing::info!(%summary, "dry run: would restore");
                }
                Err(e) => {
                    report_problem(c, r, recorder, &e).await;
                    vs_ok = false;
                }
            }
        }
    }
    if vs_ok && vs_answered {
        clear_problem(c, r);
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
    s.leader_identity = leadership.leader();
    s.verdict = verdict;
    s.consecutive_failures = judgement.consecutive_failures;
    s.aggregate = Some(WindowView::from(&judgement.aggregate));
    s.members = members;
}

/// Runs a VirtualService operation within the call timeout.
async fn bounded_vs<T>(
    c: &Cluster,
    call: impl Future<Output = std::result::Result<T, VirtualServiceError>>,
) -> std::result::Result<T, VirtualServiceError> {
    let limit = c.call_timeout();
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(VirtualServiceError::Timeout {
            namespace: c.namespace.clone(),
            name: c.config.virtual_service.clone(),
            after: limit,
        })
    })
}

/// Counts, logs and announces (Events on the VirtualService and the Deployment) a rollback.
async fn announce_rollback(
    c: &Cluster,
    recorder: &events::Recorder,
    summary: &str,
    why: &RollbackReason,
    reasserted: bool,
    regarding: ObjectReference,
) {
    let reason = why.reason.as_str();
    c.metrics.rollbacks_total.inc();
    // Queued only: a slow receiver must not delay the Events or the next round.
    notify(
        c,
        if reasserted {
            Kind::Reassert
        } else {
            Kind::Rollback
        },
        &why.canary_revision,
        summary,
        reason,
    );
    let (event_reason, verb) = if reasserted {
        (
            events::reasons::CANARY_ROLLBACK_REASSERTED,
            "re-asserted the rollback",
        )
    } else {
        (events::reasons::CANARY_ROLLBACK, "rolled back")
    };
    tracing::warn!(%summary, why = %reason, "{verb}");
    let note = format!("{verb}: {summary}; {reason}");
    publish(
        c,
        recorder,
        EventType::Warning,
        event_reason,
        events::actions::ROLLBACK,
        &note,
        regarding,
    )
    .await;
    if let Some(d) = deployment_ref(c) {
        publish(
            c,
            recorder,
            EventType::Warning,
            event_reason,
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

/// Queues a notification for `--notify-url`, if set.
fn notify(c: &Cluster, event: Kind, revision: &str, summary: &str, reason: &str) {
    if let Some(n) = &c.notifier {
        n.notify(Notification {
            event,
            group: c.config.group.clone(),
            namespace: c.namespace.clone(),
            virtual_service: c.config.virtual_service.clone(),
            revision: revision.to_owned(),
            summary: summary.to_owned(),
            reason: reason.to_owned(),
            leader: c.config.pod_name.clone(),
            time: k8s_openapi::jiff::Timestamp::now().to_string(),
        });
    }
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

fn vs_ref(c: &Cluster) -> ObjectReference {
    ObjectReference {
        api_version: Some(format!(
            "networking.istio.io/{}",
            c.args.virtual_service_version
        )),
        kind: Some("VirtualService".into()),
        name: Some(c.config.virtual_service.clone()),
        namespace: Some(c.namespace.clone()),
        ..ObjectReference::default()
    }
}

/// Pauses or resumes the canary Deployment's rollout, as `kubectl rollout pause` does.
async fn set_paused(c: &Cluster, paused: bool) {
    let Some(name) = c.args.deployment.as_deref() else {
        return;
    };
    let call = async {
        deployment::set_paused(c.client.clone(), &c.namespace, name, paused)
            .await
            .map_err(|e| Readable(&e).to_string())
    };
    match bounded(c.call_timeout(), call).await {
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

/// Publishes an Event, best effort and bounded: an API that hangs must not stall the leader.
async fn publish(
    c: &Cluster,
    recorder: &events::Recorder,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
    regarding: ObjectReference,
) {
    let spec = EventSpec {
        type_,
        reason: reason.into(),
        action: action.into(),
        note: note.into(),
        regarding,
    };
    if tokio::time::timeout(c.call_timeout(), recorder.publish(spec))
        .await
        .is_err()
    {
        c.metrics.kube_error("event_create");
        tracing::debug!(
            reason,
            "event not published: the API did not answer in time"
        );
    }
}

/// The `/v1/state` reason of every API-level VirtualService failure (5xx, 429,
/// timeouts, refused connections), so a flapping API shows as one problem.
const API_REASON: &str = "KubernetesApiError";

async fn report_problem(
    c: &Cluster,
    r: &mut LeaderRound,
    recorder: &events::Recorder,
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
        recorder,
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
#[allow(clippy::too_many_arguments)]
async fn set_problem(
    c: &Cluster,
    r: &mut LeaderRound,
    recorder: &events::Recorder,
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
            recorder,
            EventType::Warning,
            events::reasons::VIRTUAL_SERVICE_INVALID,
            events::actions::ROLLBACK,
            message,
            vs_ref(c),
        )
        .await;
    }
}

fn clear_problem(c: &Cluster, r: &mut LeaderRound) {
    r.backoff.reset();
    r.retry_at = None;
    if let Some((reason, _)) = r.vs_problem.take() {
        r.vs_streak.recovered("VirtualService problem resolved");
        settle(&c.state, reason);
        c.metrics.set_virtual_service_problem(None);
    }
}
