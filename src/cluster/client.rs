//! Building the Kubernetes client: in-cluster, `KUBECONFIG`, `--kubeconfig`,
//! or a plain-http URL (the embedded API of `demo`).

use std::path::Path;
use std::time::Duration;

use http::header::{HeaderValue, USER_AGENT};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::{Error, Result};

/// The User-Agent we send, so managedFields and audit logs name us.
pub fn user_agent() -> String {
    format!("canary-guard/{}", env!("CARGO_PKG_VERSION"))
}

/// The field manager recorded on our writes.
pub const FIELD_MANAGER: &str = "canary-guard";

fn kube_err(op: &str) -> impl FnOnce(kube::Error) -> Error + '_ {
    move |e| Error::Kube {
        op: op.to_string(),
        source: Box::new(e),
    }
}

/// Loads the client configuration: `kubeconfig` when given, otherwise kube's
/// inference (in-cluster service account, then `KUBECONFIG` / `~/.kube/config`).
pub async fn config(kubeconfig: Option<&Path>) -> Result<kube::Config> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| {
                Error::Config(format!("--kubeconfig {}: {e}", path.display()))
            })?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Config(format!("--kubeconfig {}: {e}", path.display())))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            Error::Config(format!(
                "no Kubernetes configuration found ({e}); run in a pod with a service account, set KUBECONFIG or --kubeconfig, or pass --standalone"
            ))
        })?,
    };
    set_user_agent(&mut config);
    bound_calls(&mut config);
    Ok(config)
}

/// A configuration for a plain-http API server at `url` (the embedded API).
pub fn config_for_url(url: &str, namespace: &str) -> Result<kube::Config> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| Error::Config(format!("API server URL {url}: {e}")))?;
    let mut config = kube::Config::new(uri);
    config.default_namespace = namespace.to_string();
    set_user_agent(&mut config);
    bound_calls(&mut config);
    Ok(config)
}

/// Time allowed to open a connection to the API server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for an answer on an open connection; the cluster loop bounds
/// each call more tightly, this only keeps a dead connection from lingering.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes every call end in bounded time and leaves retrying to the guard.
///
/// kube's default retry answers 429/503/504 up to 15 times with backoff up to
/// 1000 s (following `Retry-After`), so a single call could block the leader
/// for minutes, and it has no read timeout, so a hung API server would block
/// it forever. The cluster loop retries on its own schedule instead (capped
/// exponential backoff with jitter, honouring `Retry-After`).
pub fn bound_calls(config: &mut kube::Config) {
    config.default_retry = false;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    // Count from when the request is sent, not from when a pooled connection went idle.
    config.reset_reader_on_write = true;
}

fn set_user_agent(config: &mut kube::Config) {
    let agent = HeaderValue::from_str(&user_agent()).expect("the user agent is ASCII");
    config.headers.retain(|(k, _)| k != USER_AGENT);
    config.headers.push((USER_AGENT, agent));
}

/// Builds a client from a configuration, with `namespace` as its default when given.
pub fn client(mut config: kube::Config, namespace: Option<&str>) -> Result<kube::Client> {
    if let Some(ns) = namespace {
        config.default_namespace = ns.to_string();
    }
    kube::Client::try_from(config).map_err(kube_err("build client"))
}

#[cfg(test)]
mod tests {
    use canary_guard_test_api::embedded_api::EmbeddedApi;

    use super::*;

    /// The embedded API's clients, which the tests hand to the guard, write our bounds out
    /// (that crate depends on nothing of ours); they must not drift from them.
    #[tokio::test]
    async fn embedded_api_clients_are_bounded_as_ours() {
        let running = EmbeddedApi::new()
            .serve(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        let theirs = running.config("shop", "canary-guard-test/0").unwrap();
        let mut ours = theirs.clone();
        bound_calls(&mut ours);
        let bounds = |c: &kube::Config| {
            (
                c.default_retry,
                c.connect_timeout,
                c.read_timeout,
                c.write_timeout,
                c.reset_reader_on_write,
            )
        };
        assert_eq!(bounds(&theirs), bounds(&ours));
    }
}
