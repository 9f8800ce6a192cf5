//! Leader election through a `coordination.k8s.io/v1` Lease, with client-go semantics.
//!
//! One Lease, `canary-guard-<group>`, names the leader in `holderIdentity`. Every
//! candidate polls it every retry period; the holder renews it. Three rules keep two
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
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use super::client::FIELD_MANAGER;

/// Name of the election Lease for a guard group.
pub fn lease_name(group: &str) -> String {
    format!("canary-guard-{group}")
}

/// Why a [`LeaseStore`] call failed, reduced to what the protocol needs to know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The Lease does not exist (404).
    #[error("lease not found")]
    NotFound,
    /// A replace carried a stale `resourceVersion` (409 `Conflict`).
    #[error("lease was modified concurrently (conflict)")]
    Conflict,
    /// A create lost against an existing Lease (409 `AlreadyExists`).
    #[error("lease already exists")]
    AlreadyExists,
    /// Anything else: network, timeouts, 5xx, 422, permissions.
    #[error("{0}")]
    Other(String),
}

impl From<kube::Error> for StoreError {
    fn from(err: kube::Error) -> Self {
        match &err {
            // AlreadyExists is also a 409, so it must be recognised before Conflict.
            kube::Error::Api(s) if s.is_already_exists() => StoreError::AlreadyExists,
            kube::Error::Api(s) if s.is_conflict() => StoreError::Conflict,
            kube::Error::Api(s) if s.is_not_found() => StoreError::NotFound,
            _ => StoreError::Other(super::api_error::Readable(&err).to_string()),
        }
    }
}

/// The Lease operations used by the elector and by member publishing, with the real
/// API server's semantics.
///
/// Implementations must behave like the server: `create` fails with
/// [`StoreError::AlreadyExists`] when the name is taken (and rejects an object that
/// still carries a `resourceVersion`); `replace` is conditional on the object's
/// `metadata.resourceVersion` and fails with [`StoreError::Conflict`] when it is stale.
pub trait LeaseStore: Send + Sync + 'static {
    /// Reads one Lease by name.
    fn get(&self, name: &str) -> impl Future<Output = Result<Lease, StoreError>> + Send;
    /// Creates a Lease; `metadata.resourceVersion` must be unset.
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<Lease, StoreError>> + Send;
    /// Replaces the Lease named in `metadata.name`, conditional on its
    /// `metadata.resourceVersion` (which must be set).
    fn replace(&self, lease: &Lease) -> impl Future<Output = Result<Lease, StoreError>> + Send;
    /// Lists Leases matching a label selector such as `canary-guard.io/group=reviews`.
    fn list(
        &self,
        label_selector: &str,
    ) -> impl Future<Output = Result<Vec<Lease>, StoreError>> + Send;
    /// Deletes a Lease by name.
    fn delete(&self, name: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    }
}

impl LeaseStore for Api<Lease> {
    async fn get(&self, name: &str) -> Result<Lease, StoreError> {
        Ok(Api::get(self, name).await?)
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, StoreError> {
        Ok(Api::create(self, &post_params(), lease).await?)
    }

    async fn replace(&self, lease: &Lease) -> Result<Lease, StoreError> {
        let name = lease
            .metadata
            .name
            .as_deref()
            .ok_or_else(|| StoreError::Other("lease to replace has no name".into()))?;
        // An unconditional PUT would overwrite a peer's write; refuse it here so a bug
        // cannot turn into two leaders.
        if lease.metadata.resource_version.is_none() {
            return Err(StoreError::Other(format!(
                "refusing to replace lease {name} without a resourceVersion"
            )));
        }
        Ok(Api::replace(self, name, &post_params(), lease).await?)
    }

    async fn list(&self, label_selector: &str) -> Result<Vec<Lease>, StoreError> {
        let lp = ListParams::default().labels(label_selector);
        Ok(Api::list(self, &lp).await?.items)
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        Api::delete(self, name, &DeleteParams::default()).await?;
        Ok(())
    }
}

/// Called with the operation name (`lease_get`, `lease_create`, `lease_replace`,
/// `lease_list`, `lease_delete`, or `lease_timeout` when the elector gave up waiting
/// for an answer) each time a Kubernetes call fails unexpectedly, so the caller can
/// count `canary_guard_kube_errors_total{op}`.
///
/// Outcomes the protocol expects are not reported: a 404 on `get` of a Lease that does
/// not exist yet, and 409 on conditional writes that lost a race.
pub type ApiErrorHook = Arc<dyn Fn(&'static str) + Send + Sync>;

pub(crate) fn no_hook() -> ApiErrorHook {
    Arc::new(|_| {})
}

/// Reports `err` to `hook` unless it is one of the outcomes the protocol expects.
pub(crate) fn report(hook: &ApiErrorHook, op: &'static str, err: &StoreError) {
    let expected = match err {
        StoreError::NotFound => op == "lease_get",
        StoreError::Conflict | StoreError::AlreadyExists => true,
        StoreError::Other(_) => false,
    };
    if !expected {
        hook(op);
    }
}

/// Wall-clock now, truncated to microseconds as the API server stores MicroTime, so the
/// record we write compares equal to the record we read back.
pub(crate) fn micro_now() -> MicroTime {
    let now = Timestamp::now();
    MicroTime(Timestamp::from_microsecond(now.as_microsecond()).unwrap_or(now))
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
        })
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
        loop {
            self.step().await;
            let wait = self.next_wait();
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(wait) => {}
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
        match self.store.replace(&next).await {
            Ok(written) => {
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

/// Test fixtures: the embedded API's Lease store seen through a simulated network with
/// latency and per-caller partitions.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    use canary_guard_test_api::embedded_api::{Call, EmbeddedApi, Resource, Verb};
    use k8s_openapi::api::coordination::v1::Lease;
    use parking_lot::Mutex;
    use serde_json::Value;
    use tokio::time::Instant;

    use super::{LeaseStore, StoreError, FIELD_MANAGER};

    /// Namespace of the test leases.
    pub(crate) const NS: &str = "shop";
    /// Simulated round trip; each call waits this long before it reaches the store.
    const LATENCY: Duration = Duration::from_millis(3);

    /// The Leases of one namespace of an in-process [`EmbeddedApi`], without HTTP.
    #[derive(Debug, Clone)]
    pub(crate) struct InProcessLeases {
        api: EmbeddedApi,
        namespace: String,
    }

    impl InProcessLeases {
        /// Leases in `namespace` of `api`.
        pub(crate) fn new(api: EmbeddedApi, namespace: impl Into<String>) -> Self {
            Self {
                api,
                namespace: namespace.into(),
            }
        }

        fn call(
            &self,
            verb: Verb,
            name: Option<&str>,
            body: Option<&Lease>,
        ) -> Result<Value, StoreError> {
            let mut call = Call::new(verb, Resource::Leases, Some(&self.namespace));
            call.name = name.map(str::to_owned);
            call.field_manager = Some(FIELD_MANAGER.to_owned());
            if let Some(lease) = body {
                call.body = Some(
                    serde_json::to_value(lease).map_err(|e| StoreError::Other(e.to_string()))?,
                );
            }
            self.api
                .call(call)
                .map_err(|status| match (status.code, status.reason.as_str()) {
                    (404, _) => StoreError::NotFound,
                    (409, "AlreadyExists") => StoreError::AlreadyExists,
                    (409, _) => StoreError::Conflict,
                    _ => StoreError::Other(format!(
                        "{} {}: {}",
                        status.code, status.reason, status.message
                    )),
                })
        }

        fn lease(value: Value) -> Result<Lease, StoreError> {
            serde_json::from_value(value).map_err(|e| StoreError::Other(e.to_string()))
        }
    }

    impl LeaseStore for InProcessLeases {
        async fn get(&self, name: &str) -> Result<Lease, StoreError> {
            Self::lease(self.call(Verb::Get, Some(name), None)?)
        }

        async fn create(&self, lease: &Lease) -> Result<Lease, StoreError> {
            Self::lease(self.call(Verb::Create, None, Some(lease))?)
        }

        async fn replace(&self, lease: &Lease) -> Result<Lease, StoreError> {
            let name = lease.metadata.name.as_deref().unwrap_or_default();
            Self::lease(self.call(Verb::Update, Some(name), Some(lease))?)
        }

        async fn list(&self, label_selector: &str) -> Result<Vec<Lease>, StoreError> {
            let mut call = Call::new(Verb::List, Resource::Leases, Some(&self.namespace));
            call.label_selector = Some(label_selector.to_owned());
            let list = self
                .api
                .call(call)
                .map_err(|s| StoreError::Other(s.message))?;
            let items = list
                .get("items")
                .cloned()
                .unwrap_or(Value::Array(Vec::new()));
            serde_json::from_value(items).map_err(|e| StoreError::Other(e.to_string()))
        }

        async fn delete(&self, name: &str) -> Result<(), StoreError> {
            self.call(Verb::Delete, Some(name), None).map(|_| ())
        }
    }

    /// One successful Lease write as the store applied it.
    #[derive(Debug, Clone)]
    pub(crate) struct Write {
        pub at: Instant,
        pub name: String,
        pub lease: Option<Lease>,
    }

    impl Write {
        pub(crate) fn holder(&self) -> Option<&str> {
            self.lease.as_ref().and_then(super::holder)
        }

        pub(crate) fn duration_seconds(&self) -> Option<i32> {
            self.lease.as_ref()?.spec.as_ref()?.lease_duration_seconds
        }

        pub(crate) fn transitions(&self) -> Option<i32> {
            self.lease.as_ref()?.spec.as_ref()?.lease_transitions
        }
    }

    /// The embedded API plus the set of partitioned callers.
    #[derive(Clone, Default)]
    pub(crate) struct Net {
        pub api: EmbeddedApi,
        partitioned: Arc<Mutex<HashSet<String>>>,
    }

    impl Net {
        /// A client for caller `who`.
        pub(crate) fn client(&self, who: &str) -> NetClient {
            NetClient {
                store: InProcessLeases::new(self.api.clone(), NS),
                who: who.to_owned(),
                partitioned: self.partitioned.clone(),
            }
        }

        /// Makes every call from `who` fail, or heals it.
        pub(crate) fn partition(&self, who: &str, partitioned: bool) {
            let mut set = self.partitioned.lock();
            if partitioned {
                set.insert(who.to_owned());
            } else {
                set.remove(who);
            }
        }

        /// Every successful Lease write so far, in order.
        pub(crate) fn writes(&self) -> Vec<Write> {
            self.api
                .history()
                .into_iter()
                .filter(|w| w.resource == Resource::Leases && w.succeeded())
                .map(|w| Write {
                    at: w.at,
                    name: w.name,
                    lease: w.object.and_then(|o| serde_json::from_value(o).ok()),
                })
                .collect()
        }

        /// The stored Lease, read directly.
        pub(crate) fn peek(&self, name: &str) -> Option<Lease> {
            let value = self.api.get(Resource::Leases, NS, name).ok()?;
            serde_json::from_value(value).ok()
        }
    }

    /// One caller's connection to the [`Net`].
    #[derive(Clone)]
    pub(crate) struct NetClient {
        store: InProcessLeases,
        who: String,
        partitioned: Arc<Mutex<HashSet<String>>>,
    }

    impl NetClient {
        async fn travel(&self) -> Result<&InProcessLeases, StoreError> {
            tokio::time::sleep(LATENCY).await;
            if self.partitioned.lock().contains(&self.who) {
                return Err(StoreError::Other(format!("{} is partitioned", self.who)));
            }
            Ok(&self.store)
        }
    }

    impl LeaseStore for NetClient {
        async fn get(&self, name: &str) -> Result<Lease, StoreError> {
            self.travel().await?.get(name).await
        }

        async fn create(&self, lease: &Lease) -> Result<Lease, StoreError> {
            self.travel().await?.create(lease).await
        }

        async fn replace(&self, lease: &Lease) -> Result<Lease, StoreError> {
            self.travel().await?.replace(lease).await
        }

        async fn list(&self, label_selector: &str) -> Result<Vec<Lease>, StoreError> {
            self.travel().await?.list(label_selector).await
        }

        async fn delete(&self, name: &str) -> Result<(), StoreError> {
            self.travel().await?.delete(name).await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::future::select_all;
    use parking_lot::Mutex;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;
    use tokio::time::{sleep, timeout};

    use super::fixtures::{Net, Write, NS};
    use super::*;

    const LEASE: &str = "canary-guard-reviews";
    const LEASE_DURATION: Duration = Duration::from_secs(15);
    const RENEW_DEADLINE: Duration = Duration::from_secs(10);
    const RETRY: Duration = Duration::from_secs(2);
    /// A few simulated round trips.
    const SLACK: Duration = Duration::from_millis(50);

    fn max_acquire_wait() -> Duration {
        RETRY.mul_f64(1.0 + ACQUIRE_JITTER)
    }

    struct Candidate {
        id: String,
        task: JoinHandle<()>,
        stop: oneshot::Sender<()>,
    }

    /// Three (or more) candidates on one fake API, plus a monitor that samples every
    /// 5 ms of virtual time that at most one live candidate acts as leader.
    struct Cluster {
        net: Net,
        candidates: Vec<Candidate>,
        live: Arc<Mutex<Vec<(String, Leadership)>>>,
        overlaps: Arc<AtomicUsize>,
        errors: Arc<Mutex<Vec<(String, &'static str)>>>,
        monitor: JoinHandle<()>,
    }

    impl Cluster {
        fn start(n: usize) -> Self {
            let live: Arc<Mutex<Vec<(String, Leadership)>>> = Arc::default();
            let overlaps = Arc::new(AtomicUsize::new(0));
            let monitor = tokio::spawn({
                let (live, overlaps) = (live.clone(), overlaps.clone());
                async move {
                    loop {
                        sleep(Duration::from_millis(5)).await;
                        let leaders = live.lock().iter().filter(|(_, l)| l.is_leader()).count();
                        if leaders > 1 {
                            overlaps.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            });
            let mut cluster = Self {
                net: Net::default(),
                candidates: Vec::new(),
                live,
                overlaps,
                errors: Arc::default(),
                monitor,
            };
            for i in 0..n {
                cluster.spawn(&format!("guard-{i}"));
            }
            cluster
        }

        fn spawn(&mut self, id: &str) -> Leadership {
            let errors = self.errors.clone();
            let who = id.to_owned();
            let elector = Elector::new(self.net.client(id), ElectionConfig::new("reviews", id))
                .unwrap()
                .on_api_error(Arc::new(move |op| errors.lock().push((who.clone(), op))));
            let leadership = elector.leadership();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(elector.run(async {
                let _ = stopped.await;
            }));
            self.live.lock().push((id.to_owned(), leadership.clone()));
            self.candidates.push(Candidate {
                id: id.to_owned(),
                task,
                stop,
            });
            leadership
        }

        fn take(&mut self, id: &str) -> Candidate {
            let i = self.candidates.iter().position(|c| c.id == id).unwrap();
            self.candidates.remove(i)
        }

        /// The pod dies: no release, its last state is simply gone.
        fn kill(&mut self, id: &str) {
            self.live.lock().retain(|(c, _)| c != id);
            self.take(id).task.abort();
        }

        /// Graceful shutdown; returns once the candidate has released.
        async fn stop(&mut self, id: &str) {
            let candidate = self.take(id);
            candidate.stop.send(()).unwrap();
            candidate.task.await.unwrap();
            self.live.lock().retain(|(c, _)| c != id);
        }

        fn leadership(&self, id: &str) -> Leadership {
            let live = self.live.lock();
            live.iter().find(|(c, _)| c == id).unwrap().1.clone()
        }

        fn leaders(&self) -> Vec<String> {
            let live = self.live.lock();
            live.iter()
                .filter(|(_, l)| l.is_leader())
                .map(|(id, _)| id.clone())
                .collect()
        }

        /// Waits until some live candidate other than `except` leads, and names it.
        async fn wait_for_leader(&self, except: Option<&str>) -> String {
            let handles: Vec<(String, Leadership)> = self
                .live
                .lock()
                .iter()
                .filter(|(id, _)| Some(id.as_str()) != except)
                .cloned()
                .collect();
            let waits = handles.into_iter().map(|(id, mut l)| {
                Box::pin(async move {
                    l.wait_until(true).await.expect("elector stopped");
                    id
                })
            });
            select_all(waits).await.0
        }

        fn errors_of(&self, id: &str) -> Vec<&'static str> {
            let errors = self.errors.lock();
            errors
                .iter()
                .filter(|(c, _)| c == id)
                .map(|(_, op)| *op)
                .collect()
        }

        fn lease(&self) -> LeaseSpec {
            self.net.peek(LEASE).unwrap().spec.unwrap()
        }

        /// Final checks shared by every scenario.
        fn finish(self) -> Vec<Write> {
            self.monitor.abort();
            assert_eq!(
                self.overlaps.load(Ordering::SeqCst),
                0,
                "two candidates acted as leader at the same instant"
            );
            let writes: Vec<Write> = self
                .net
                .writes()
                .into_iter()
                .filter(|w| w.name == LEASE)
                .collect();
            assert_no_overlapping_terms(&writes);
            writes
        }
    }

    /// A write that hands the lease from A to B must come after A's last write plus its
    /// lease duration, unless A released it in between.
    fn assert_no_overlapping_terms(writes: &[Write]) {
        for pair in writes.windows(2) {
            let (prev, next) = (&pair[0], &pair[1]);
            if let (Some(a), Some(b)) = (prev.holder(), next.holder()) {
                if a != b {
                    let secs = prev.duration_seconds().unwrap() as u64;
                    let term_end = prev.at + Duration::from_secs(secs);
                    assert!(
                        next.at >= term_end,
                        "{b} took the lease {:?} before {a}'s term ended",
                        term_end - next.at
                    );
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn exactly_one_leader_and_it_keeps_the_lease() {
        let cluster = Cluster::start(3);
        let leader = timeout(SLACK, cluster.wait_for_leader(None)).await.unwrap();
        sleep(Duration::from_secs(60)).await;

        assert_eq!(cluster.leaders(), vec![leader.clone()]);
        for id in ["guard-0", "guard-1", "guard-2"] {
            assert_eq!(
                cluster.leadership(id).leader().as_deref(),
                Some(leader.as_str())
            );
            // Losing a create or a replace race is expected, not an API error.
            assert!(
                cluster.errors_of(id).is_empty(),
                "{id}: {:?}",
                cluster.errors_of(id)
            );
        }
        let spec = cluster.lease();
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        let writes = cluster.finish();
        assert!(writes.iter().all(|w| w.holder() == Some(leader.as_str())));
        // One create, then a renewal every retry period.
        assert!((29..=32).contains(&writes.len()), "{} writes", writes.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_leader_is_replaced_after_the_lease_duration() {
        let mut cluster = Cluster::start(3);
        let old = timeout(SLACK, cluster.wait_for_leader(None)).await.unwrap();
        sleep(Duration::from_secs(30)).await;

        let died = Instant::now();
        cluster.kill(&old);
        let bound = LEASE_DURATION + max_acquire_wait() + SLACK;
        let new = timeout(bound, cluster.wait_for_leader(None)).await.unwrap();
        let took = died.elapsed();

        assert_ne!(new, old);
        // The last renewal was at most one retry period before the death; peers only
        // start counting when they see it.
        assert!(
            took >= LEASE_DURATION - RETRY,
            "took over after only {took:?}"
        );
        assert_eq!(cluster.leaders(), vec![new.clone()]);
        let spec = cluster.lease();
        assert_eq!(spec.holder_identity.as_deref(), Some(new.as_str()));
        assert_eq!(spec.lease_transitions, Some(1));
        cluster.finish();
    }

    #[tokio::test(start_paused = true)]
    async fn graceful_shutdown_hands_over_within_a_retry_period() {
        let mut cluster = Cluster::start(3);
        let old = timeout(SLACK, cluster.wait_for_leader(None)).await.unwrap();
        sleep(Duration::from_secs(7)).await;

        let stopping = Instant::now();
        let mut old_leadership = cluster.leadership(&old);
        cluster.stop(&old).await;
        assert!(!old_leadership.is_leader());
        // It saw its own release, and its elector is gone.
        assert_eq!(old_leadership.leader(), None);
        timeout(SLACK, async {
            while old_leadership.changed().await.is_ok() {}
        })
        .await
        .expect("the elector should have stopped");
        let new = timeout(max_acquire_wait() + SLACK, cluster.wait_for_leader(None))
            .await
            .unwrap();
        assert!(stopping.elapsed() <= max_acquire_wait() + SLACK);
        assert_ne!(new, old);

        let writes = cluster.finish();
        let release = &writes[writes.len() - 2];
        assert_eq!(release.holder(), None);
        assert_eq!(release.duration_seconds(), Some(1));
        let takeover = writes.last().unwrap();
        assert_eq!(takeover.holder(), Some(new.as_str()));
        assert_eq!(takeover.transitions(), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_renew_steps_down_before_others_take_over() {
        let cluster = Cluster::start(3);
        let old = timeout(SLACK, cluster.wait_for_leader(None)).await.unwrap();
        sleep(Duration::from_secs(30)).await;

        let mut old_leadership = cluster.leadership(&old);
        let failed = Instant::now();
        cluster.net.partition(&old, true);
        timeout(RENEW_DEADLINE + SLACK, old_leadership.wait_until(false))
            .await
            .expect("a leader that cannot renew must step down")
            .unwrap();
        let stepped_down = Instant::now();
        let new = timeout(LEASE_DURATION, cluster.wait_for_leader(Some(&old)))
            .await
            .unwrap();
        let took_over = Instant::now();

        // Its last good renewal was within one retry period before the failure.
        let down_after = stepped_down - failed;
        assert!(
            down_after >= RENEW_DEADLINE - RETRY && down_after <= RENEW_DEADLINE + SLACK,
            "stepped down after {down_after:?}"
        );
        // Peers wait a full lease duration from when they saw the last renewal.
        assert!(
            took_over - stepped_down >= LEASE_DURATION - RENEW_DEADLINE - SLACK,
            "gap between step-down and takeover: {:?}",
            took_over - stepped_down
        );
        assert!(cluster.errors_of(&old).contains(&"lease_get"));

        // Once healed, the old leader follows the new one.
        cluster.net.partition(&old, false);
        sleep(Duration::from_secs(20)).await;
        assert_eq!(cluster.leaders(), vec![new.clone()]);
        assert_eq!(
            cluster.leadership(&old).leader().as_deref(),
            Some(new.as_str())
        );
        cluster.finish();
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_leader_with_the_same_name_continues_its_term() {
        let mut cluster = Cluster::start(3);
        let old = timeout(SLACK, cluster.wait_for_leader(None)).await.unwrap();
        sleep(Duration::from_secs(9)).await;
        let before = cluster.lease();

        cluster.kill(&old);
        let mut restarted = cluster.spawn(&old);
        timeout(SLACK, restarted.wait_until(true))
            .await
            .unwrap()
            .unwrap();
        sleep(Duration::from_secs(30)).await;

        assert_eq!(cluster.leaders(), vec![old.clone()]);
        let after = cluster.lease();
        assert_eq!(after.holder_identity, before.holder_identity);
        assert_eq!(after.lease_transitions, before.lease_transitions);
        assert_eq!(after.acquire_time, before.acquire_time);
        let writes = cluster.finish();
        assert!(writes.iter().all(|w| w.holder() == Some(old.as_str())));
    }

    /// A peer whose wall clock is a year off writes `renewTime` values far in the past or
    /// the future: expiry is still judged by our monotonic clock since the record changed.
    #[tokio::test(start_paused = true)]
    async fn peer_clocks_far_off_change_nothing_only_local_time_counts() {
        let year = k8s_openapi::jiff::SignedDuration::from_hours(24 * 365);
        for skew in [-year, year] {
            let net = Net::default();
            let peer = net.client("far-clock");
            let skewed = || MicroTime(Timestamp::now().checked_add(skew).unwrap());
            let mut lease = peer
                .create(&Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE.into()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some("far-clock".into()),
                        lease_duration_seconds: Some(15),
                        acquire_time: Some(skewed()),
                        renew_time: Some(skewed()),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                })
                .await
                .unwrap();
            let elector = Elector::new(
                net.client("guard-0"),
                ElectionConfig::new("reviews", "guard-0"),
            )
            .unwrap();
            let mut leadership = elector.leadership();
            let task = tokio::spawn(elector.run(std::future::pending()));
            // The peer renews every retry period for a minute: never taken over.
            for _ in 0..30 {
                sleep(RETRY).await;
                lease.spec.as_mut().unwrap().renew_time = Some(skewed());
                lease = peer.replace(&lease).await.unwrap();
                assert!(!leadership.is_leader(), "skew {skew:?}: took a live lease");
            }
            assert_eq!(leadership.leader().as_deref(), Some("far-clock"));
            // The peer stops: taken over one lease duration later by our clock, not a
            // year early or late.
            let stopped = Instant::now();
            // Seen at our next poll, then a lease duration, then our next poll.
            timeout(
                LEASE_DURATION + max_acquire_wait() * 2 + SLACK,
                leadership.wait_until(true),
            )
            .await
            .unwrap_or_else(|_| panic!("skew {skew:?}: never took the abandoned lease"))
            .unwrap();
            assert!(
                stopped.elapsed() >= LEASE_DURATION - RETRY,
                "skew {skew:?}: took over after {:?}",
                stopped.elapsed()
            );
            let writes = net.writes();
            assert_no_overlapping_terms(&writes);
            task.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_candidate_takes_a_released_lease_at_once() {
        let net = Net::default();
        let released = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(String::new()),
                lease_duration_seconds: Some(1),
                lease_transitions: Some(4),
                ..LeaseSpec::default()
            }),
        };
        let released = net.client("someone").create(&released).await.unwrap();
        let elector = Elector::new(
            net.client("guard-9"),
            ElectionConfig::new("reviews", "guard-9"),
        )
        .unwrap();
        let mut leadership = elector.leadership();
        let task = tokio::spawn(elector.run(std::future::pending()));
        timeout(SLACK, leadership.wait_until(true))
            .await
            .unwrap()
            .unwrap();
        let spec = net.peek(LEASE).unwrap().spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("guard-9"));
        assert_eq!(spec.lease_transitions, Some(5));
        assert_ne!(
            net.peek(LEASE).unwrap().metadata.resource_version,
            released.metadata.resource_version
        );
        task.abort();
    }

    /// The whole protocol through kube 5 over HTTP against the served embedded API, in
    /// real time with short durations.
    #[tokio::test]
    async fn elects_and_hands_over_through_a_kube_client_over_http() {
        let net = Net::default();
        let running = net.api.serve(([127, 0, 0, 1], 0).into()).await.unwrap();
        let mut guards = Vec::new();
        for i in 0..3 {
            let client = running.client(NS, "canary-guard-test/0").unwrap();
            let mut config = ElectionConfig::new("reviews", format!("guard-{i}"));
            config.lease_duration = Duration::from_secs(2);
            config.renew_deadline = Duration::from_secs(1);
            config.retry_period = Duration::from_millis(100);
            let elector = Elector::new(Api::<Lease>::namespaced(client, NS), config).unwrap();
            let leadership = elector.leadership();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(elector.run(async {
                let _ = stopped.await;
            }));
            guards.push((leadership, stop, task));
        }
        let wait_any = |guards: &[(Leadership, oneshot::Sender<()>, JoinHandle<()>)]| {
            let waits = guards.iter().enumerate().map(|(i, (l, _, _))| {
                let mut l = l.clone();
                Box::pin(async move {
                    l.wait_until(true).await.unwrap();
                    i
                })
            });
            timeout(Duration::from_secs(1), select_all(waits))
        };
        let first = wait_any(&guards).await.expect("a leader within 1s").0;
        let leaders = guards.iter().filter(|(l, _, _)| l.is_leader()).count();
        assert_eq!(leaders, 1);

        let (_, stop, task) = guards.remove(first);
        stop.send(()).unwrap();
        task.await.unwrap();
        let second = wait_any(&guards).await.expect("handover within 1s").0;
        let lease = net.peek(LEASE).unwrap();
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity, guards[second].0.leader());
        assert_eq!(spec.lease_transitions, Some(1));

        let writes = net.writes();
        assert!(writes
            .iter()
            .any(|w| w.holder().is_none() && w.duration_seconds() == Some(1)));
        assert_no_overlapping_terms(&writes);
        let managers: Vec<_> = net
            .api
            .history()
            .into_iter()
            .filter(|w| w.succeeded())
            .map(|w| w.field_manager)
            .collect();
        assert!(
            managers.iter().all(|m| m.as_deref() == Some(FIELD_MANAGER)),
            "{managers:?}"
        );
        for (_, _, task) in guards {
            task.abort();
        }
        running.stop().await;
    }

    #[test]
    fn config_errors_name_the_flags() {
        let mut c = ElectionConfig::new("reviews", "guard-0");
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.lease_name, LEASE);

        c.renew_deadline = Duration::from_secs(15);
        let msg = c.validate().unwrap_err().to_string();
        assert!(
            msg.contains("--lease-duration") && msg.contains("--renew-deadline"),
            "{msg}"
        );

        c.renew_deadline = Duration::from_secs(2);
        let msg = c.validate().unwrap_err().to_string();
        assert!(
            msg.contains("--renew-deadline") && msg.contains("--retry-period"),
            "{msg}"
        );

        c.retry_period = Duration::ZERO;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--retry-period"));

        let mut c = ElectionConfig::new("reviews", "");
        assert!(matches!(
            c.validate(),
            Err(ElectionConfigError::Identity(_))
        ));
        c.identity = "guard-0".into();
        c.lease_duration = Duration::from_millis(1500);
        c.renew_deadline = Duration::from_secs(1);
        c.retry_period = Duration::from_millis(200);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.lease_duration_seconds(), 2, "rounded up, never down");
    }

    #[test]
    fn kube_errors_map_to_the_protocol_outcomes() {
        use kube::core::Status;
        let api = |reason: &str, code: u16| {
            StoreError::from(kube::Error::Api(
                Status::failure("x", reason).with_code(code).boxed(),
            ))
        };
        assert_eq!(api("AlreadyExists", 409), StoreError::AlreadyExists);
        assert_eq!(api("Conflict", 409), StoreError::Conflict);
        assert_eq!(api("NotFound", 404), StoreError::NotFound);
        assert!(matches!(api("Invalid", 422), StoreError::Other(_)));
    }

    #[tokio::test]
    async fn the_kube_store_refuses_an_unconditional_replace() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let api: Api<Lease> = Api::namespaced(client, "default");
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE.into()),
                ..ObjectMeta::default()
            },
            spec: None,
        };
        let err = LeaseStore::replace(&api, &lease).await.unwrap_err();
        assert!(
            err.to_string().contains("without a resourceVersion"),
            "{err}"
        );
    }
}
