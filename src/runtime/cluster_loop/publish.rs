//! The member side: this guard's window written to its member lease, as a
//! heartbeat while healthy and at once while it gathers evidence.
//!
//! Design rule: a look is cheap and a write is not; write only what is new or due.

use super::*;
use crate::domain::relative::drift;

/// Writes this guard's window to its member lease every publish interval,
/// and at once when the window starts or stops crossing a threshold, so the
/// leader learns of a fault within one check instead of one publish interval;
/// also once for each publish request of the leader (`requests`, read from the
/// election lease) that finds something new in the window.
/// After a failed write it backs off instead of trying at every look.
pub(super) async fn publish_loop(
    leases: Api<Lease>,
    cluster: PublishSettings,
    window: Arc<Window>,
    metrics: Arc<Metrics>,
    state: SharedState,
    mut requests: Option<watch::Receiver<u64>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = &cluster.config;
    let member = members::Member::new(&config.group, &config.pod_name)
        .pod_uid(config.pod_uid.clone())
        .revision(config.revision.clone())
        .role(config.role)
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
    let mut published: Option<Summary> = None;
    // The elector counts requests from its first read of the lease: earlier ones were
    // others' to answer, and our first write comes anyway.
    let mut answered = requests.as_mut().map_or(0, |r| *r.borrow_and_update());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(Ok(())) = async { Some(requests.as_mut()?.changed().await) } => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        let now = Instant::now();
        if retry_at.is_some_and(|at| now < at) {
            continue;
        }
        let summary = window.summary(now.into_std());
        // Worse lately than what the leader last read: news for the comparison with the
        // baseline, which no absolute trigger sees (a canary at 4% against 0.5%, stable
        // pods degrading below the limits).
        let drifted = published
            .as_ref()
            .is_some_and(|last| drift::drifted(last, &summary, &cluster.thresholds));
        let breach = matches!(eager.check(&summary), Check::Failing(_))
            || cluster.thresholds.evidence(&summary) >= SUSPECT
            || drifted;
        // While the window crosses a limit or gathers sequential evidence, publish each
        // new batch of evidence at the fast pace; a look that saw nothing new writes nothing.
        let seen = evidence_seen(&summary);
        let request = requests.as_mut().map_or(0, |r| *r.borrow_and_update());
        let asked = request != answered;
        let due = match last {
            None => true,
            Some((at, was, before)) => {
                was != breach
                    || now >= at + cluster.every
                    || (breach && now >= at + fast && seen != before)
                    || (asked && seen != before)
            }
        };
        if !due {
            // A request that finds nothing new is answered by the lease as it stands.
            answered = request;
            continue;
        }
        match bounded(cluster.call_timeout, member.publish(&leases, &summary)).await {
            Ok(()) => {
                last = Some((now, breach, seen));
                published = Some(summary);
                answered = request;
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
pub(super) fn evidence_seen(s: &Summary) -> [u64; 4] {
    [s.requests, s.errors, s.abandoned, s.overdue]
}

/// What the publisher needs from the cluster settings.
pub(super) struct PublishSettings {
    pub(super) config: ClusterConfig,
    pub(super) every: Duration,
    pub(super) interval: Duration,
    pub(super) thresholds: Thresholds,
    pub(super) call_timeout: Duration,
}
