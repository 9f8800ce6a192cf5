//! Wiring: the pieces put together into the commands users run.

pub mod cluster_loop;
#[cfg(feature = "demo")]
pub mod demo;
pub mod guard;
pub mod ops;
#[cfg(test)]
mod tests;

use crate::config::GuardConfig;
use crate::Result;

/// The runtime for `workers` threads. One gets a current-thread runtime:
/// no work stealing and no wake-ups across threads, which the peers bench
/// measured at a fifth less CPU per proxied request than one or two workers of
/// a multi-threaded runtime, alone and beside a busy app. `None` is tokio's
/// default, a worker per CPU.
pub fn tokio_runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

/// `canary-guard run`: serves until SIGTERM or Ctrl-C, then drains.
pub async fn run(config: GuardConfig) -> Result<()> {
    let guard = guard::start(&config).await?;
    terminated().await;
    guard.shutdown();
    guard.wait().await;
    Ok(())
}

/// Resolves on SIGTERM (what the kubelet sends) or Ctrl-C.
pub async fn terminated() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// A future that resolves once `rx` carries `true`.
pub async fn signalled(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
