//! The leader side: each round reads the members, lets the core's [`Leader`]
//! judge and decide, and carries out its one write (rollback, re-assert or
//! restore), then updates metrics and `/v1/state`.
//!
//! Design rule: decisions are the core's; this file only calls the API and
//! reports what the calls did.

use super::*;

/// State the leader keeps between rounds.
pub(super) struct LeaderRound {
    /// The decisions: judge, record, which write, and what its outcome changes.
    pub(super) leader: Leader,
    /// The strongest sequential evidence of the last round.
    pub(super) evidence: f64,
    /// After a failure: no VirtualService call before this.
    pub(super) retry_at: Option<Instant>,
    pub(super) backoff: Backoff,
    /// The VirtualService problem on `/v1/state`, by reason, and whether an Event told of it.
    pub(super) vs_problem: Option<(&'static str, bool)>,
    pub(super) vs_streak: Streak,
    pub(super) list_streak: Streak,
    pub(super) reader: members::MemberReader,
    /// Since when a write waits for the baseline's latest seconds (see [`wait_for_baseline`]).
    pub(super) waiting_since: Option<Instant>,
    /// Whether the last round held a failing canary inconclusive for a degraded baseline.
    pub(super) degraded: bool,
    /// When this leader last asked its members to publish (see [`ask`]).
    pub(super) asked_at: Option<Instant>,
    /// The member leases, kept by a watch while this guard leads.
    pub(super) watch: MemberWatch,
}

pub(super) async fn leader_loop(
    cluster: ClusterLoop,
    targets: RouteTargets,
    leases: Api<Lease>,
    leadership: Leadership,
    asks: watch::Sender<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let vs_api = virtual_service::api(
        cluster.client.clone(),
        &cluster.namespace,
        &cluster.config.virtual_service_version,
    );
    let apis = LeaderApis {
        targets,
        leases,
        vs: vs_api,
        events: events::EventWriter::new(cluster.client.clone(), cluster.config.pod_name.clone()),
        leadership,
        asks,
    };
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
        let leader_state = apis.leadership.state();
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
            let reader =
                members::MemberReader::new(&cluster.config.group, cluster.config.publish_interval)
                    .on_rejected(move |why| metrics.member_summary_rejected(why.as_str()));
            LeaderRound {
                leader: Leader::new(
                    leader::Settings {
                        own_revision: cluster.config.revision.clone(),
                        restore_on_new_revision: cluster.config.restore_on_new_revision,
                        failure_threshold: cluster.thresholds.failure_threshold,
                        look_every: REASSERT_EVERY,
                    },
                    Judge::new(cluster.thresholds.clone(), cluster.config.per_member)
                        .with_relative(cluster.config.relative.clone()),
                ),
                evidence: 0.0,
                degraded: false,
                asked_at: None,
                waiting_since: None,
                retry_at: None,
                backoff: Backoff::new(cluster.interval, &cluster.config.pod_name),
                vs_problem: None,
                vs_streak: Streak::default(),
                list_streak: Streak::default(),
                watch: MemberWatch::start(apis.leases.clone(), reader.selector()),
                reader,
            }
        });
        lead_once(&cluster, &apis, r).await;
    }
    // Give queued notifications a bounded moment to go out; shutdown does not wait longer.
    let limit = cluster.call_timeout();
    if let Some(n) = cluster.notifier {
        let _ = tokio::time::timeout(limit, n.close()).await;
    }
}

/// What a round calls: the routes it rewrites, the API handles and the lease it holds.
struct LeaderApis {
    targets: RouteTargets,
    leases: Api<Lease>,
    vs: Api<kube::api::DynamicObject>,
    events: events::EventWriter,
    leadership: Leadership,
    /// The publish-request counter the elector carries (see [`ask`]).
    asks: watch::Sender<u64>,
}

/// One round: read the members (and, when due, the record), let the core decide,
/// carry out its write, then report.
async fn lead_once(c: &ClusterLoop, apis: &LeaderApis, r: &mut LeaderRound) {
    let LeaderApis {
        targets,
        leases,
        vs: vs_api,
        events: event_writer,
        leadership,
        asks,
    } = apis;
    let now = Instant::now();
    let own = c.window.summary(now.into_std());
    let timeout = c.call_timeout();
    let from_watch = match r.watch.view() {
        View::Synced(leases) => Some(Ok(r.reader.observe(leases))),
        // A new leader's first list is under way: judge at the next round.
        View::Pending => return,
        View::Failing(why) => Some(Err(why)),
        View::Unsupported => None,
    };
    let listed = match from_watch {
        Some(result) => result,
        None => bounded(timeout, r.reader.list(leases)).await,
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
        let summary = match m.role {
            // A baseline member writes on news and heartbeats: line its seconds up
            // with ours, so the canary is compared with the same seconds.
            Role::Baseline => m.summary.aged(m.age.as_secs()),
            Role::Canary => m.summary,
        };
        samples.push(MemberSample {
            pod: m.pod,
            revision: m.revision,
            summary,
            role: m.role,
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
                report_problem(c, r, event_writer, &e).await;
                vs_ok = false;
            }
        }
    }

    // A leader that lost its lease while this round ran must not write.
    let may_write =
        may_call && vs_ok && leadership.is_leader() && !wait_for_baseline(c, r, &samples, now);
    let Round {
        judgement,
        verdict,
        write,
    } = r.leader.round(&samples, looked, may_write);
    r.evidence = judgement.evidence;
    // A guard that lost the lease during the round must not leave a request to carry later.
    if leadership.is_leader() {
        let stale = ask::stale_member(&samples, &ages, c.interval);
        let every = c.config.election.retry_period;
        ask::maybe(asks, &mut r.asked_at, &judgement, stale, every, now);
    }
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
                    c.config.dry_run,
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
                    announce_rollback(c, event_writer, &summary, &why, reasserted, *regarding)
                        .await;
                }
                Ok(RollbackOutcome::AlreadyRolledBack) => {
                    vs_answered = true;
                    if done(r, leader::RollbackOutcome::AlreadyRolledBack)
                        == Announce::EarlierAttempt
                    {
                        announce_rollback(
                            c,
                            event_writer,
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
                    set_problem(
                        c,
                        r,
                        event_writer,
                        "CanaryRollbackSkipped",
                        &err,
                        true,
                        None,
                    )
                    .await;
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
                    report_problem(c, r, event_writer, &e).await;
                    vs_ok = false;
                }
            }
        }
        Some(Write::Restore) => {
            let outcome = bounded_vs(
                c,
                virtual_service::restore(vs_api, &c.config.virtual_service, c.config.dry_run),
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
                        event_writer,
                        EventType::Normal,
                        events::reasons::CANARY_RESTORED,
                        events::actions::RESTORE,
                        &note,
                        *regarding,
                    )
                    .await;
                    if c.config.on_rollback == OnRollback::Pause {
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
                    report_problem(c, r, event_writer, &e).await;
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
    let baselines = samples.iter().filter(|s| s.role == Role::Baseline).count();
    c.metrics.baseline_members.set(baselines as i64);
    c.metrics
        .baseline_degraded
        .set(i64::from(judgement.degraded.is_some()));
    tell_degraded(c, event_writer, r, judgement.degraded.as_deref()).await;
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
            role: s.role.as_str(),
        })
        .collect();
    let mut s = c.state.write();
    s.leader = true;
    s.leader_identity = leadership.leader();
    s.verdict = verdict;
    s.consecutive_failures = judgement.consecutive_failures;
    s.aggregate = Some(WindowView::from(&judgement.aggregate));
    s.baseline = judgement.baseline.as_ref().map(WindowView::from);
    s.relative_breach = judgement.relative.clone();
    s.baseline_degraded = judgement.degraded.clone();
    s.members = members;
}

/// Whether a write waits for the baseline's latest seconds: for one interval (at least
/// [`BASELINE_WAIT_FLOOR`]) from the round the canary's evidence started to build. A
/// fault the canary shares with its stable pods reaches the baseline members' leases a
/// look and a write after it reaches ours, and their first write may hold only its
/// first requests; without the wait, our own window could roll back before the
/// baseline could excuse it. Waiting out the whole span rather than for a first write
/// lets their writes of each new batch of evidence come in.
fn wait_for_baseline(
    c: &ClusterLoop,
    r: &mut LeaderRound,
    samples: &[MemberSample],
    now: Instant,
) -> bool {
    // Groups without baseline members never wait, and pay nothing for it.
    let suspect = || {
        r.evidence >= SUSPECT
            || samples
                .iter()
                .any(|s| s.role == Role::Canary && c.thresholds.evidence(&s.summary) >= SUSPECT)
    };
    if !samples.iter().any(|s| s.role == Role::Baseline) || !suspect() {
        r.waiting_since = None;
        return false;
    }
    let since = *r.waiting_since.get_or_insert(now);
    now < since + c.interval.max(BASELINE_WAIT_FLOOR)
}

/// The shortest wait for the baseline's latest seconds: a baseline member's write takes
/// a look, an API round trip and the watch's delivery, several hundred milliseconds on
/// a busy node, which a short `--interval` would not cover.
const BASELINE_WAIT_FLOOR: Duration = Duration::from_secs(1);

/// Logs and announces (one Warning Event per episode) a failing canary that is not
/// blamed because its baseline fails too, and the episode's end.
async fn tell_degraded(
    c: &ClusterLoop,
    event_writer: &events::EventWriter,
    r: &mut LeaderRound,
    degraded: Option<&str>,
) {
    match (degraded, r.degraded) {
        (Some(why), false) => {
            r.degraded = true;
            tracing::warn!(%why, "the canary fails but so does its baseline: not rolling back");
            let note =
                format!("the canary fails, but not alone: {why}; no rollback while it lasts");
            publish(
                c,
                event_writer,
                EventType::Warning,
                events::reasons::BASELINE_DEGRADED,
                events::actions::JUDGE,
                &note,
                vs_ref(c),
            )
            .await;
        }
        (None, true) => {
            r.degraded = false;
            tracing::info!("the baseline is no longer degraded");
        }
        _ => {}
    }
}

/// Runs a VirtualService operation within the call timeout.
async fn bounded_vs<T>(
    c: &ClusterLoop,
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
