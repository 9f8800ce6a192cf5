use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::future::select_all;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

use super::fixtures::{Net, Write, NS};
use super::*;
use crate::cluster::client::FIELD_MANAGER;

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

/// A candidate with `asks` as its publish requests, run on `net` until `stop`.
fn asking(
    net: &Net,
    id: &str,
    asks: watch::Receiver<u64>,
) -> (Leadership, watch::Receiver<u64>, Candidate) {
    let elector = Elector::new(net.client(id), ElectionConfig::new("reviews", id))
        .unwrap()
        .asking(asks);
    let (leadership, requests) = (elector.leadership(), elector.publish_requests());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async {
        let _ = stopped.await;
    }));
    let candidate = Candidate {
        id: id.to_owned(),
        task,
        stop,
    };
    (leadership, requests, candidate)
}

/// The leader's publish requests ride on its renewals, sent at once when it asks; a
/// candidate reads each within a retry period, and the leader never reads its own.
#[tokio::test(start_paused = true)]
async fn publish_requests_reach_candidates_within_a_retry_period() {
    let net = Net::default();
    let (asks, asked) = watch::channel(0);
    let (mut leadership, own, leader) = asking(&net, "guard-0", asked);
    timeout(SLACK, leadership.wait_until(true))
        .await
        .unwrap()
        .unwrap();
    let (_, quiet) = watch::channel(0);
    let (_, mut requests, candidate) = asking(&net, "guard-1", quiet);
    // Before any request the lease carries none.
    sleep(max_acquire_wait()).await;
    assert_eq!(*requests.borrow_and_update(), 0);
    assert!(net.peek(LEASE).unwrap().metadata.annotations.is_none());

    let writes = net.writes().len();
    asks.send_modify(|n| *n += 1);
    // An early renewal carries it, well before the next retry period.
    sleep(SLACK).await;
    assert_eq!(requests::read(&net.peek(LEASE).unwrap()), 1);
    assert_eq!(net.writes().len(), writes + 1);
    timeout(max_acquire_wait(), requests.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*requests.borrow_and_update(), 1);
    // The leader is asking, not asked.
    assert_eq!(*own.borrow(), 0);
    assert!(leadership.is_leader());

    // Two requests before the renewal goes out are one move: news is news.
    asks.send_modify(|n| *n += 1);
    asks.send_modify(|n| *n += 1);
    timeout(max_acquire_wait() + SLACK, requests.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*requests.borrow_and_update(), 2);
    assert_eq!(requests::read(&net.peek(LEASE).unwrap()), 2);
    leader.task.abort();
    candidate.task.abort();
}

/// A new leader's first request moves the Lease's counter on from its predecessor's,
/// so candidates read it as news, and a candidate's first read of an old counter is not.
#[tokio::test(start_paused = true)]
async fn a_new_leader_s_first_request_is_news() {
    let net = Net::default();
    let (first_asks, first_asked) = watch::channel(0);
    let (mut first, _, first_leader) = asking(&net, "guard-0", first_asked);
    timeout(SLACK, first.wait_until(true))
        .await
        .unwrap()
        .unwrap();
    first_asks.send_modify(|n| *n += 1);
    sleep(SLACK).await;
    assert_eq!(requests::read(&net.peek(LEASE).unwrap()), 1);

    // Started after that request: the counter they first read is not a request to them.
    let mut next: Vec<_> = ["guard-1", "guard-2"]
        .into_iter()
        .map(|id| {
            let (asks, asked) = watch::channel(0);
            let (leadership, requests, candidate) = asking(&net, id, asked);
            (asks, leadership, requests, candidate)
        })
        .collect();
    sleep(max_acquire_wait()).await;
    assert!(next.iter_mut().all(|n| *n.2.borrow_and_update() == 0));

    // The first leader hands over; whoever follows asks once, and the other reads it.
    first_leader.stop.send(()).unwrap();
    first_leader.task.await.unwrap();
    sleep(max_acquire_wait() + SLACK).await;
    let at = next
        .iter()
        .position(|n| n.1.is_leader())
        .expect("a new leader");
    let (asks, _, _, new_leader) = next.remove(at);
    let (_, _, mut requests, candidate) = next.remove(0);
    asks.send_modify(|n| *n += 1);
    sleep(SLACK).await;
    assert_eq!(requests::read(&net.peek(LEASE).unwrap()), 2);
    timeout(max_acquire_wait(), requests.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*requests.borrow(), 1);
    new_leader.task.abort();
    candidate.task.abort();
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
