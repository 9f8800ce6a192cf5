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
use crate::config::{ClusterConfig, OnRollback};
use crate::domain::judge::{Judge, MemberSample, Recorded};
use crate::domain::leader::{self, Announce, Leader, Round, Write};
use crate::domain::policy::{Check, Thresholds, Verdict, FAST_LOOKS, SUSPECT};
use crate::domain::relative::Role;
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
pub struct ClusterLoop {
    /// Identity, names, the election and what a rollback does.
    pub config: ClusterConfig,
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

impl ClusterLoop {
    /// Bound on every API call of the cluster loop.
    ///
    /// A leader acts until its renew deadline; peers take over no sooner than a lease
    /// duration after its last renewal. A write started while leading and cut off after
    /// `lease_duration - renew_deadline` has therefore ended (on our side) before any
    /// peer can lead, which keeps two leaders' writes apart.
    fn call_timeout(&self) -> Duration {
        self.config
            .election
            .lease_duration
            .saturating_sub(self.config.election.renew_deadline)
            .clamp(Duration::from_millis(100), MAX_CALL_TIME)
    }
}

mod announce;
mod ask;
mod lead;
mod problems;
mod publish;
mod retry;

use announce::{announce_rollback, notify, publish, set_paused, vs_ref};
use lead::{leader_loop, LeaderRound};
use problems::{clear_problem, raise, report_problem, set_problem, settle, API_REASON};
use publish::{publish_loop, PublishSettings};
use retry::{bounded, Backoff, Streak};

/// Starts the elector, the member publisher and the leader loop. They stop
/// (the leader releasing its lease, the member deleting its own) when
/// `shutdown` carries `true`.
pub fn spawn(cluster: ClusterLoop, shutdown: watch::Receiver<bool>) -> Result<JoinHandle<()>> {
    let targets = cluster.config.targets.clone();
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let publisher = |requests| {
        tokio::spawn(publish_loop(
            leases.clone(),
            PublishSettings {
                config: cluster.config.clone(),
                every: cluster.config.publish_interval,
                interval: cluster.interval,
                thresholds: cluster.thresholds.clone(),
                call_timeout: cluster.call_timeout(),
            },
            cluster.window.clone(),
            cluster.metrics.clone(),
            cluster.state.clone(),
            requests,
            shutdown.clone(),
        ))
    };
    // A baseline guard only publishes: it never leads, so a stable pod needs no right
    // to the leader lease or the VirtualService.
    if cluster.config.role == Role::Baseline {
        let publisher = publisher(None);
        return Ok(tokio::spawn(async move {
            let _ = publisher.await;
        }));
    }
    let mut election = ElectionConfig::new(&cluster.config.group, cluster.config.pod_name.clone());
    election.lease_duration = cluster.config.election.lease_duration;
    election.renew_deadline = cluster.config.election.renew_deadline;
    election.retry_period = cluster.config.election.retry_period;
    let metrics = cluster.metrics.clone();
    let (asks, asked) = watch::channel(0);
    let elector = Elector::new(leases.clone(), election)
        .map_err(|e| Error::Config(e.to_string()))?
        .on_api_error(Arc::new(move |op: &'static str| metrics.kube_error(op)))
        .asking(asked);
    let publisher = publisher(Some(elector.publish_requests()));
    let leadership = elector.leadership();
    let elector_task = tokio::spawn(elector.run(super::signalled(shutdown.clone())));
    Ok(tokio::spawn(async move {
        leader_loop(cluster, targets, leases, leadership, asks, shutdown).await;
        let _ = publisher.await;
        let _ = elector_task.await;
    }))
}
