//! Leader election through a `coordination.k8s.io/v1` Lease, with client-go semantics.
//!
//! One Lease, `canary-guard-<group>`, names the leader in `holderIdentity`. Every
//! candidate polls it every retry period; the holder renews it then, and at once to
//! carry a publish request (see [`requests`]). Three rules keep two
//! guards from acting as leader at the same time:
//!
//! - every write is conditional on the `resourceVersion` we read (stale → 409), and a
//!   create loses with 409 `AlreadyExists` if someone else created the Lease first;
//! - a candidate judges expiry by its own monotonic clock: the lease is free once the
//!   record has not changed for `leaseDurationSeconds` since this candidate first saw
//!   it in that state. Another pod's `renewTime` is never compared with our clock;
//! - a leader that has not renewed within `renew_deadline` (< lease duration) stops
//!   acting as leader, before any peer can consider the lease expired.
//!
//! On shutdown the leader releases the lease (empty holder, `leaseDurationSeconds: 1`)
//! so a peer takes over within about one retry period.
//!
//! The loop talks to the API through [`LeaseStore`], implemented for `kube::Api<Lease>`,
//! and in the tests for the in-process embedded API (`fixtures::InProcessLeases`).

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use tokio::sync::watch;
use tokio::time::Instant;

use super::lease_store::{micro_now, no_hook, report};
pub use super::lease_store::{ApiErrorHook, LeaseStore, StoreError};

/// Name of the election Lease for a guard group.
pub fn lease_name(group: &str) -> String {
    format!("canary-guard-{group}")
}

/// Timing of the election, with client-go's meaning and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionConfig {
    /// Name of the election Lease (see [`lease_name`]).
    pub lease_name: String,
    /// Our identity in `holderIdentity`: the pod name.
    pub identity: String,
    /// How long a non-leader waits after the last observed change before taking over
    /// (`--lease-duration`, default 15 s). Written in whole seconds, rounded up.
    pub lease_duration: Duration,
    /// How long a leader keeps acting without a successful renewal
    /// (`--renew-deadline`, default 10 s).
    pub renew_deadline: Duration,
    /// Interval between attempts to acquire or renew (`--retry-period`, default 2 s).
    pub retry_period: Duration,
}

/// An [`ElectionConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElectionConfigError {
    /// A timing does not respect `lease-duration > renew-deadline > retry-period > 0`.
    #[error("{0}")]
    Timing(String),
    /// The identity or lease name is empty.
    #[error("{0}")]
    Identity(String),
}

impl ElectionConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(group: &str, identity: impl Into<String>) -> Self {
        Self {
            lease_name: lease_name(group),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Checks `lease-duration > renew-deadline > retry-period > 0`, a lease duration of
    /// at least one second (the field is in seconds) and a non-empty identity.
    pub fn validate(&self) -> Result<(), ElectionConfigError> {
        let (l, d, r) = (self.lease_duration, self.renew_deadline, self.retry_period);
        if self.identity.is_empty() {
            return Err(ElectionConfigError::Identity(
                "leader election needs a non-empty identity (POD_NAME)".into(),
            ));
        }
        if self.lease_name.is_empty() {
            return Err(ElectionConfigError::Identity(
                "leader election needs a lease name".into(),
            ));
        }
        if r.is_zero() {
            return Err(ElectionConfigError::Timing(
                "--retry-period must be greater than zero".into(),
            ));
        }
        if l < Duration::from_secs(1) {
            return Err(ElectionConfigError::Timing(format!(
                "--lease-duration ({l:?}) must be at least 1s"
            )));
        }
        if l <= d {
            return Err(ElectionConfigError::Timing(format!(
                "--lease-duration ({l:?}) must be greater than --renew-deadline ({d:?})"
            )));
        }
        if d <= r {
            return Err(ElectionConfigError::Timing(format!(
                "--renew-deadline ({d:?}) must be greater than --retry-period ({r:?})"
            )));
        }
        Ok(())
    }

    /// The lease duration as written in `leaseDurationSeconds`, rounded up so peers
    /// never wait less than we assume.
    fn lease_duration_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

/// What this guard knows about the election.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderState {
    /// True while this guard acts as leader.
    pub is_leader: bool,
    /// `holderIdentity` of the election Lease as last seen (ours when leading); `None`
    /// when no one holds it or it has not been read yet.
    pub leader: Option<String>,
}

/// Read side of the election, cheap to clone and share.
#[derive(Debug, Clone)]
pub struct Leadership {
    rx: watch::Receiver<LeaderState>,
}

impl Leadership {
    /// True while this guard acts as leader.
    pub fn is_leader(&self) -> bool {
        self.rx.borrow().is_leader
    }

    /// The current holder of the election Lease as last seen, if any.
    pub fn leader(&self) -> Option<String> {
        self.rx.borrow().leader.clone()
    }

    /// A snapshot of the whole state.
    pub fn state(&self) -> LeaderState {
        self.rx.borrow().clone()
    }

    /// Waits until the state changes (leadership or leader identity). Returns an error
    /// once the elector has stopped.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.rx.changed().await
    }

    /// Waits until this guard's leadership equals `leader`. Returns an error if the
    /// elector stops first.
    pub async fn wait_until(&mut self, leader: bool) -> Result<(), watch::error::RecvError> {
        self.rx
            .wait_for(|s| s.is_leader == leader)
            .await
            .map(|_| ())
    }
}

/// The last version of the election Lease this candidate saw, and when (locally).
struct Observed {
    lease: Lease,
    /// Local monotonic time at which the record was first seen in this state.
    since: Instant,
}

/// The parts of the record whose change restarts the expiry clock.
fn record_key(lease: &Lease) -> (Option<&str>, Option<&MicroTime>, Option<&str>) {
    let spec = lease.spec.as_ref();
    (
        spec.and_then(|s| s.holder_identity.as_deref()),
        spec.and_then(|s| s.renew_time.as_ref()),
        lease.metadata.resource_version.as_deref(),
    )
}

fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// Small xorshift generator for retry jitter; quality does not matter, only that
/// candidates started together spread out.
pub(crate) struct Jitter(u64);

impl Jitter {
    /// A generator seeded from `identity` and the process's random hasher keys.
    pub(crate) fn new(identity: &str) -> Self {
        let mut h = RandomState::new().build_hasher();
        h.write(identity.as_bytes());
        Self(h.finish() | 1)
    }

    /// A factor in [0, 1).
    pub(crate) fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Share of the retry period added at random to a non-leader's wait. client-go uses up
/// to 1.2 retry periods; we keep it smaller so failover stays within
/// `lease_duration + 1.2 × retry_period` while candidates still spread out.
const ACQUIRE_JITTER: f64 = 0.2;

/// Runs the election for one candidate. Create with [`Elector::new`], take a
/// [`Leadership`] handle, then drive [`Elector::run`] on a task.
pub struct Elector<S> {
    store: S,
    config: ElectionConfig,
    on_error: ApiErrorHook,
    tx: watch::Sender<LeaderState>,
    observed: Option<Observed>,
    /// When leading: the time the last successful write was sent. Peers cannot see the
    /// lease expire before this + lease duration, so we stop at this + renew deadline.
    renewed_at: Option<Instant>,
    jitter: Jitter,
    /// Lease calls timed out in a row.
    timeouts: u32,
    /// While leading: our publish requests (see [`requests`]), and how many of them
    /// the Lease has carried.
    asks: Option<(watch::Receiver<u64>, u64)>,
    /// Another leader's publish requests read from the Lease since we started.
    requests: watch::Sender<u64>,
    /// The Lease's request counter when we last read it.
    lease_counter: Option<u64>,
}

impl<S: LeaseStore> Elector<S> {
    /// Validates `config` and prepares a candidate that is not yet running.
    pub fn new(store: S, config: ElectionConfig) -> Result<Self, ElectionConfigError> {
        config.validate()?;
        let (tx, _) = watch::channel(LeaderState::default());
        let jitter = Jitter::new(&config.identity);
        Ok(Self {
            store,
            config,
            on_error: no_hook(),
            tx,
            observed: None,
            renewed_at: None,
            jitter,
            timeouts: 0,
            asks: None,
            requests: watch::channel(0).0,
            lease_counter: None,
        })
    }

    /// While leading, carries each move of `asks`' counter to the Lease with a renewal
    /// sent at once, so the group's candidates publish their windows (see [`requests`]).
    pub fn asking(mut self, asks: watch::Receiver<u64>) -> Self {
        let carried = *asks.borrow();
        self.asks = Some((asks, carried));
        self
    }

    /// How many publish requests of another leader this candidate has read, counted
    /// from its first read of the Lease.
    pub fn publish_requests(&self) -> watch::Receiver<u64> {
        self.requests.subscribe()
    }

    /// Sets the hook that counts failed API calls (see [`ApiErrorHook`]).
    pub fn on_api_error(mut self, hook: ApiErrorHook) -> Self {
        self.on_error = hook;
        self
    }

    /// A handle on this candidate's leadership; valid before and after `run`.
    pub fn leadership(&self) -> Leadership {
        Leadership {
            rx: self.tx.subscribe(),
        }
    }

    /// Campaigns, leads and renews until `shutdown` completes, then stops acting as
    /// leader and releases the Lease if we hold it.
    ///
    /// API calls are not interrupted by `shutdown` (a cancelled write may still land
    /// and make the release conflict); each is bounded by the renew deadline.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut asks = self.asks.as_ref().map(|(rx, _)| rx.clone());
        loop {
            self.step().await;
            let wait = self.next_wait();
            let leading = self.renewed_at.is_some();
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(wait) => {}
                // A request goes out with a renewal now, not at the next retry period.
                Some(Ok(())) = async { Some(asks.as_mut()?.changed().await) }, if leading => {}
            }
        }
        self.set_leading(false);
        self.release().await;
    }

    /// How long to wait before the next attempt.
    fn next_wait(&mut self) -> Duration {
        let retry = self.config.retry_period;
        match self.leader_deadline() {
            // Wake up at the renew deadline at the latest, to step down on time.
            Some(deadline) => retry.min(deadline.saturating_duration_since(Instant::now())),
            None => retry.mul_f64(1.0 + ACQUIRE_JITTER * self.jitter.next_unit()),
        }
    }

    /// While leading: the instant by which a renewal must succeed or we step down.
    fn leader_deadline(&self) -> Option<Instant> {
        self.renewed_at.map(|at| at + self.config.renew_deadline)
    }

    /// One attempt to acquire or renew, then leadership is updated from the outcome.
    async fn step(&mut self) {
        self.step_down_if_past_deadline();
        // A leader's call must not outlive its renew deadline; a candidate's is bounded
        // by the same amount so a hung connection cannot stall the loop.
        let sent = Instant::now();
        let limit = self
            .leader_deadline()
            .unwrap_or(sent + self.config.renew_deadline);
        match tokio::time::timeout_at(limit, self.try_acquire_or_renew()).await {
            Ok(true) => {
                self.timeouts = 0;
                if self.renewed_at.is_none() {
                    tracing::info!(identity = %self.config.identity, "became leader");
                }
                self.renewed_at = Some(sent);
                self.set_leading(true);
            }
            // Someone else holds the lease: stop at once rather than at the deadline.
            Ok(false) if self.renewed_at.is_some() && !self.held_by_us() => {
                tracing::warn!(identity = %self.config.identity, "lost the leader lease");
                self.set_leading(false);
            }
            Ok(false) => {}
            Err(_elapsed) => {
                (self.on_error)("lease_timeout");
                self.timeouts += 1;
                // Once per streak: a hung API would otherwise warn every retry period.
                if self.timeouts == 1 {
                    tracing::warn!(identity = %self.config.identity, "lease call timed out");
                } else {
                    tracing::debug!(identity = %self.config.identity, timeouts = self.timeouts, "lease call timed out");
                }
            }
        }
        self.step_down_if_past_deadline();
    }

    fn step_down_if_past_deadline(&mut self) {
        if self.leader_deadline().is_some_and(|d| Instant::now() >= d) {
            tracing::warn!(
                identity = %self.config.identity,
                "could not renew the leader lease within the renew deadline; stepping down"
            );
            self.set_leading(false);
        }
    }

    fn held_by_us(&self) -> bool {
        self.observed
            .as_ref()
            .is_some_and(|o| holder(&o.lease) == Some(self.config.identity.as_str()))
    }

    /// client-go's `tryAcquireOrRenew`: read, judge, write conditionally. Returns true
    /// when the write succeeded and we hold the lease.
    async fn try_acquire_or_renew(&mut self) -> bool {
        let current = match self.store.get(&self.config.lease_name).await {
            Ok(lease) => lease,
            Err(StoreError::NotFound) => return self.create().await,
            Err(err) => {
                report(&self.on_error, "lease_get", &err);
                tracing::debug!(error = %err, "reading the leader lease failed");
                return false;
            }
        };
        self.observe(current.clone());

        let me = self.config.identity.as_str();
        let current_holder = holder(&current);
        if let Some(other) = current_holder.filter(|h| *h != me) {
            if !self.observed_expired() {
                tracing::trace!(leader = other, "lease held by another guard");
                return false;
            }
            tracing::info!(previous = other, "leader lease expired; taking over");
        }

        let old = current.spec.clone().unwrap_or_default();
        let now = micro_now();
        let ours = current_holder == Some(me);
        let mut next = current;
        next.spec = Some(LeaseSpec {
            holder_identity: Some(me.to_owned()),
            lease_duration_seconds: Some(self.config.lease_duration_seconds()),
            acquire_time: if ours {
                old.acquire_time
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if ours {
                old.lease_transitions.unwrap_or(0)
            } else {
                old.lease_transitions.unwrap_or(0) + 1
            }),
            ..old
        });
        // The Lease's counter only goes up, whoever leads: a candidate reads any move.
        let ask = self
            .asks
            .as_ref()
            .map(|(rx, carried)| (*rx.borrow(), *carried));
        let ask = ask.filter(|(asked, carried)| asked != carried);
        if ask.is_some() {
            let counter = requests::read(&next) + 1;
            requests::write(&mut next, counter);
        }
        match self.store.replace(&next).await {
            Ok(written) => {
                if let (Some((asked, _)), Some((_, carried))) = (ask, self.asks.as_mut()) {
                    *carried = asked;
                }
                self.observe(written);
                true
            }
            Err(err) => {
                report(&self.on_error, "lease_replace", &err);
                tracing::debug!(error = %err, "writing the leader lease failed");
                false
            }
        }
    }

    async fn create(&mut self) -> bool {
        let now = micro_now();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.lease_name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(self.config.lease_duration_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        match self.store.create(&lease).await {
            Ok(written) => {
                self.observe(written);
                true
            }
            Err(err) => {
                report(&self.on_error, "lease_create", &err);
                tracing::debug!(error = %err, "creating the leader lease failed");
                false
            }
        }
    }

    /// Records `lease` as observed, restarting the expiry clock if the record changed.
    fn observe(&mut self, lease: Lease) {
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|o| record_key(&o.lease) != record_key(&lease));
        let since = match &self.observed {
            Some(o) if !changed => o.since,
            _ => Instant::now(),
        };
        let leader = holder(&lease).map(str::to_owned);
        // A move since our last read is a request; our own requests are for the others.
        let counter = requests::read(&lease);
        let before = self.lease_counter.replace(counter);
        if before.is_some_and(|b| b != counter)
            && leader.as_deref() != Some(self.config.identity.as_str())
        {
            self.requests.send_modify(|n| *n += 1);
        }
        self.observed = Some(Observed { lease, since });
        self.tx.send_if_modified(|s| {
            let modified = s.leader != leader;
            s.leader = leader;
            modified
        });
    }

    /// True when the observed record has not changed for its own lease duration.
    fn observed_expired(&self) -> bool {
        let Some(o) = &self.observed else {
            return false;
        };
        let secs = o
            .lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok());
        let duration = secs.map_or(self.config.lease_duration, Duration::from_secs);
        Instant::now() >= o.since + duration
    }

    fn set_leading(&mut self, leading: bool) {
        if !leading {
            self.renewed_at = None;
        }
        self.tx.send_if_modified(|s| {
            let modified = s.is_leader != leading;
            s.is_leader = leading;
            modified
        });
    }

    /// Clears the holder so a peer takes over at its next attempt. Reads first so a
    /// stale cached version cannot make the release conflict needlessly.
    async fn release(&mut self) {
        let name = self.config.lease_name.clone();
        let current = match self.store.get(&name).await {
            Ok(lease) => lease,
            Err(err) => {
                report(&self.on_error, "lease_get", &err);
                return;
            }
        };
        if holder(&current) != Some(self.config.identity.as_str()) {
            return;
        }
        let mut released = current;
        let spec = released.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(micro_now());
        match self.store.replace(&released).await {
            Ok(written) => {
                tracing::info!(identity = %self.config.identity, "released the leader lease");
                self.observe(written);
            }
            Err(err) => {
                report(&self.on_error, "lease_replace", &err);
                tracing::warn!(error = %err, "releasing the leader lease failed");
            }
        }
    }
}

pub mod requests;

#[cfg(test)]
pub(crate) mod fixtures;

#[cfg(test)]
mod tests;
