//! `canary-guard run`: the proxy (or, in envoy mode, the
//! scraper), the local check loop, the cluster loop unless standalone, and the
//! admin server, wired together.

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::admin::metrics::Metrics;
use crate::admin::server::{Admin, Readiness};
use crate::admin::state::{GuardState, SharedState, WindowView};
use crate::config::{GuardConfig, Observe};
use crate::domain::policy::{Policy, FAST_LOOKS, SUSPECT};
use crate::domain::window::Window;
use crate::notify::Notifier;
use crate::observe::proxy::Proxy;
use crate::observe::scrape::Scraper;
use crate::observe::Recorder;
use crate::server::{self, Limits};
use crate::{Error, Result};

/// A running guard.
pub struct Guard {
    /// Where the proxy listens (`None` in envoy mode: there is no proxy).
    pub proxy_addr: Option<SocketAddr>,
    /// Where the admin server listens.
    pub admin_addr: SocketAddr,
    /// The state behind `/v1/state`.
    pub state: SharedState,
    /// The exported metrics.
    pub metrics: Arc<Metrics>,
    /// Number of checks run so far; changes after every check.
    pub checks: watch::Receiver<u64>,
    /// Number of scrapes attempted so far (envoy mode); changes after each is counted.
    pub scrapes: watch::Receiver<u64>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Guard {
    /// Begins a graceful shutdown: stop accepting, drain, then stop.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits until the guard has stopped.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

async fn bind(addr: SocketAddr, flag: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Io {
        context: format!("{flag} {addr}: cannot listen (is another process using the port?)"),
        source,
    })
}

/// Binds the listeners and starts every task of the guard: standalone, or
/// with the cluster loop (client from the kubeconfig / in-cluster config).
pub async fn start(config: &GuardConfig) -> Result<Guard> {
    start_with_client(config, None).await
}

/// Like [`start`], with a ready Kubernetes client for the cluster loop (the
/// demo and tests use the embedded API's).
pub async fn start_with_client(
    config: &GuardConfig,
    client: Option<kube::Client>,
) -> Result<Guard> {
    let cluster = match &config.cluster {
        None => None,
        Some(cluster) => {
            let client = match client {
                Some(c) => c,
                None => crate::cluster::client::client(
                    crate::cluster::client::config(cluster.kubeconfig.as_deref()).await?,
                    cluster.namespace.as_deref(),
                )?,
            };
            Some((cluster.clone(), client))
        }
    };
    let thresholds = &config.thresholds;
    let metrics = Arc::new(Metrics::new());
    metrics.set_limits(
        thresholds.max_error_ratio,
        thresholds.max_latency,
        thresholds.latency_quantile,
    );
    let window = Arc::new(
        Window::new(config.kept_window(), Instant::now().into_std())
            .with_latency_limit(thresholds.max_latency),
    );
    let mut initial = GuardState::new(config.observe.mode());
    if let Some((cluster, _)) = &cluster {
        initial.group = Some(cluster.group.clone());
        initial.pod = Some(cluster.pod_name.clone());
        initial.revision = cluster.revision.clone();
    }
    let state: SharedState = Arc::new(RwLock::new(initial));
    let ready = Arc::new(Readiness::default());
    // Proxy mode times every request; envoy mode's latency buckets come from
    // scraped histograms and are not exported as ours.
    metrics.export_totals(window.clone(), matches!(config.observe, Observe::Proxy(_)));
    let recorder = Recorder::new(window.clone(), metrics.clone());
    let admin_listener = bind(config.admin_listen, "--admin-listen").await?;
    let admin_addr = admin_listener
        .local_addr()
        .expect("bound socket has an address");
    let (source, limits) = match &config.observe {
        Observe::Proxy(p) => (
            Source::Proxy(
                Proxy::new(&p.upstream, recorder)?,
                bind(p.listen, "--listen").await?,
            ),
            p.limits.clone(),
        ),
        Observe::Envoy(scrape) => (
            Source::Envoy(Scraper::new(scrape.clone(), recorder, state.clone())),
            Limits::default(),
        ),
    };
    let proxy_addr = match &source {
        Source::Proxy(_, l) => Some(l.local_addr().expect("bound socket has an address")),
        Source::Envoy(_) => None,
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (checks_tx, checks) = watch::channel(0u64);
    let (scrapes_tx, scrapes) = watch::channel(0u64);
    let admin = Admin {
        metrics: metrics.clone(),
        state: state.clone(),
        ready: ready.clone(),
    };
    let admin_stop = watch::channel(false);
    let admin_task = tokio::spawn(server::serve(
        admin_listener,
        server::Plain,
        admin.service(),
        Limits::default(),
        // The metric counts refusals on the proxy port only.
        |_| {},
        super::signalled(admin_stop.1),
    ));
    let suspect = Arc::new(Notify::new());
    let cluster_task = match cluster {
        None => None,
        Some((cluster, client)) => {
            let namespace = cluster
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string());
            let notifier = cluster
                .notify
                .clone()
                .map(|n| Notifier::spawn(n, metrics.clone()));
            Some(super::cluster_loop::spawn(
                super::cluster_loop::ClusterLoop {
                    config: cluster,
                    namespace,
                    client,
                    window: window.clone(),
                    thresholds: thresholds.clone(),
                    interval: config.interval,
                    metrics: metrics.clone(),
                    state: state.clone(),
                    notifier,
                    suspect: suspect.clone(),
                },
                shutdown_rx.clone(),
            )?)
        }
    };
    let checker = tokio::spawn(
        CheckLoop {
            window,
            policy: Policy::new(thresholds.clone()),
            metrics: metrics.clone(),
            state: state.clone(),
            interval: config.interval,
            suspect,
            checks: checks_tx,
        }
        .run(shutdown_rx.clone()),
    );
    ready.set(true);
    match (proxy_addr, &config.observe) {
        (Some(proxy_addr), Observe::Proxy(p)) => {
            tracing::info!(%proxy_addr, %admin_addr, upstream = %p.upstream.upstream, "canary-guard serving")
        }
        _ => tracing::info!(%admin_addr, "canary-guard serving, envoy mode (no proxy)"),
    }

    let proxy_ready = ready.clone();
    let refusal_metrics = metrics.clone();
    let mut drain_rx = shutdown_rx.clone();
    let task = tokio::spawn(async move {
        let draining = async move {
            let _ = drain_rx.wait_for(|s| *s).await;
            // Tell the kubelet first so new traffic stops before the listener closes.
            proxy_ready.set(false);
            tracing::info!("shutting down: draining in-flight requests");
        };
        match source {
            Source::Proxy(proxy, listener) => {
                let refused = move |r: server::Refusal| refusal_metrics.proxy_refusal(r.reason());
                let left = server::serve(
                    listener,
                    server::Plain,
                    proxy.service(),
                    limits,
                    refused,
                    draining,
                )
                .await;
                if left > 0 {
                    tracing::warn!(left, "connections still open after the drain timeout");
                }
            }
            Source::Envoy(scraper) => {
                tokio::join!(scraper.run(scrapes_tx, shutdown_rx), draining);
            }
        }
        checker.abort();
        if let Some(t) = cluster_task {
            // The leader releases its lease and the member deletes its own.
            let _ = t.await;
        }
        admin_stop.0.send_replace(true);
        let _ = admin_task.await;
        tracing::info!("stopped");
    });

    Ok(Guard {
        proxy_addr,
        admin_addr,
        state,
        metrics,
        checks,
        scrapes,
        shutdown: shutdown_tx,
        task,
    })
}

/// Where samples come from.
enum Source {
    /// The reverse proxy in front of the app, and its listener.
    Proxy(Proxy, TcpListener),
    /// Scrapes of the stats endpoint: no proxy listener at all.
    Envoy(Scraper),
}

/// The local check: the window, its policy, and where the results go.
struct CheckLoop {
    window: Arc<Window>,
    policy: Policy,
    metrics: Arc<Metrics>,
    state: SharedState,
    interval: std::time::Duration,
    /// Poked while the window gathers evidence: the leader judges at once.
    suspect: Arc<Notify>,
    /// Counts the checks run.
    checks: watch::Sender<u64>,
}

impl CheckLoop {
    /// Judges the local window [`FAST_LOOKS`] times per interval (a summary
    /// costs microseconds, and the sequential test decides when its evidence
    /// crosses, not at the next interval), pokes `suspect` while the window
    /// gathers evidence, and publishes the result.
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let CheckLoop {
            window,
            mut policy,
            metrics,
            state,
            interval,
            suspect,
            checks,
        } = self;
        let mut tick = tokio::time::interval(interval / FAST_LOOKS);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let summary = window.summary(Instant::now().into_std());
            if policy.thresholds().evidence(&summary) >= SUSPECT {
                suspect.notify_one();
            }
            let before = policy.verdict();
            let verdict = policy.observe(&summary);
            // On the leader, the cluster loop publishes the group's verdict instead.
            let leading = state.read().leader;
            if leading {
                state.write().window = WindowView::from(&summary);
                checks.send_modify(|n| *n += 1);
                continue;
            }
            metrics.set_check(&summary, verdict, policy.consecutive_failures());
            if verdict != before {
                match policy.last_breach() {
                    Some(b) => {
                        tracing::warn!(verdict = verdict.as_str(), breach = %b, "verdict changed")
                    }
                    None => tracing::info!(verdict = verdict.as_str(), "verdict changed"),
                }
            }
            let mut s = state.write();
            s.window = WindowView::from(&summary);
            s.verdict = verdict;
            s.consecutive_failures = policy.consecutive_failures();
            s.breach = policy.last_breach().cloned();
            drop(s);
            checks.send_modify(|n| *n += 1);
        }
    }
}
