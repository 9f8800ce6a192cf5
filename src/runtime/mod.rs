//! Wiring: the pieces put together into the commands users run.

pub mod cluster_loop;
#[cfg(feature = "demo")]
pub mod demo;
pub mod guard;
pub mod ops;

use crate::config::GuardConfig;
use crate::Result;

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
