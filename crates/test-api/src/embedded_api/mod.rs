//! An in-memory Kubernetes API for tests and `canary-guard demo`.
//!
//! It serves, over plain HTTP, exactly the resources the guard touches — Leases,
//! VirtualServices (v1, v1beta1, v1alpha3 from one store), events.k8s.io Events, Pods and
//! Deployments — with the real kube-apiserver's semantics: a global resourceVersion,
//! optimistic concurrency, merge and JSON patches, label selectors, watches from a
//! resourceVersion (with `410 Expired` past a bounded change log), validation and `Status`
//! bodies. The same operations, watches aside, are available in process through
//! [`EmbeddedApi`], and the HTTP layer is a thin wrapper over them. Writes are recorded in
//! a history, and faults can be injected into HTTP answers, watches included.
//!
//! Not served: watch bookmarks, field selectors (ignored), server-side apply, strategic
//! merge on lists, subresources, deletecollection, defaulting, and the VirtualService
//! OpenAPI schema. A differential test holds it to a real server; the differences kept are
//! listed in `docs/embedded-api.md`.

mod call;
mod faults;
mod go_json;
mod ids;
mod patch;
mod resource;
mod selector;
mod server;
mod status;
mod store;
mod validate;
mod watches;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{oneshot, watch};

pub use call::{Call, PatchType, Verb};
pub use faults::{FaultAction, FaultId, FaultRule, Faults, Gate};
pub use resource::Resource;
pub use server::MAX_BODY_BYTES;
pub use status::{Status, StatusCause, StatusDetails};
pub use store::WriteRecord;

use store::Store;

/// The embedded API: objects, history and fault rules. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct EmbeddedApi {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    store: Store,
    faults: Faults,
}

impl std::fmt::Debug for EmbeddedApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedApi").finish_non_exhaustive()
    }
}

impl EmbeddedApi {
    /// An empty API.
    pub fn new() -> EmbeddedApi {
        EmbeddedApi::default()
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The fault rules and the refuse switch (they act on HTTP requests only).
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// Runs one call exactly as the HTTP layer would.
    pub fn call(&self, call: Call) -> Result<Value, Status> {
        self.store().call(call).result
    }

    /// Stores `object` (namespace from its metadata, `default` if unset) as given, status
    /// included, creating or overwriting it. For setting the scene in tests and the demo.
    pub fn seed(&self, resource: Resource, object: Value) -> Result<Value, Status> {
        self.store().seed(resource, object)
    }

    /// Creates `object` in `namespace` (POST semantics: 409 if it exists, 500 if it carries a
    /// resourceVersion, `generateName` honoured). `apiVersion` and `kind` must be set.
    pub fn create(
        &self,
        resource: Resource,
        namespace: &str,
        object: Value,
    ) -> Result<Value, Status> {
        self.call(Call::new(Verb::Create, resource, Some(namespace)).body(object))
    }

    /// Reads one object.
    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Result<Value, Status> {
        self.call(Call::new(Verb::Get, resource, Some(namespace)).name(name))
    }

    /// Lists objects in `namespace` (all namespaces if `None`) matching `label_selector`.
    pub fn list(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Value, Status> {
        let mut call = Call::new(Verb::List, resource, namespace);
        call.label_selector = label_selector.map(str::to_owned);
        self.call(call)
    }

    /// Replaces an object (PUT semantics: resourceVersion checked).
    pub fn replace(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        object: Value,
    ) -> Result<Value, Status> {
        self.call(
            Call::new(Verb::Update, resource, Some(namespace))
                .name(name)
                .body(object),
        )
    }

    /// Patches an object.
    pub fn patch(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        patch_type: PatchType,
        patch: Value,
    ) -> Result<Value, Status> {
        let mut call = Call::new(Verb::Patch, resource, Some(namespace))
            .name(name)
            .body(patch);
        call.patch_type = Some(patch_type);
        self.call(call)
    }

    /// Deletes an object; answers the object or a success `Status`, as the real server does
    /// for that resource.
    pub fn delete(&self, resource: Resource, namespace: &str, name: &str) -> Result<Value, Status> {
        self.call(Call::new(Verb::Delete, resource, Some(namespace)).name(name))
    }

    /// Every write so far (the most recent 10 000), oldest first.
    pub fn history(&self) -> Vec<WriteRecord> {
        self.store().history()
    }

    /// Receives the global resourceVersion after each stored write.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.store().subscribe()
    }

    /// Waits until `condition` holds, re-checking after every stored write.
    pub async fn wait_for(&self, mut condition: impl FnMut(&EmbeddedApi) -> bool) {
        let mut changes = self.subscribe();
        while !condition(self) {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// Serves the API over HTTP on `addr` (port 0 picks a free port).
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<RunningApi> {
        let (addr, stop, task) = server::spawn(self.clone(), addr).await?;
        Ok(RunningApi {
            api: self.clone(),
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// Time a client of [`RunningApi::client`] allows to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client of [`RunningApi::client`] allows for an answer on an open connection.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why [`RunningApi::client`] could not build a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The User-Agent asked for cannot be sent as a header.
    #[error("user agent {0:?} is not a valid header value")]
    UserAgent(String),
    /// kube refused the configuration.
    #[error("building a client of the embedded API: {0}")]
    Kube(#[from] kube::Error),
}

/// A served [`EmbeddedApi`]; stops serving when dropped or on [`RunningApi::stop`].
#[derive(Debug)]
pub struct RunningApi {
    api: EmbeddedApi,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningApi {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, the base URL of the API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The API being served.
    pub fn api(&self) -> &EmbeddedApi {
        &self.api
    }

    /// A kube client configuration for this server: `namespace` as default namespace,
    /// `user_agent` as User-Agent (fault rules and the history match on it), and calls
    /// bounded as canary-guard bounds its own, so a test sees what the guard would: kube's
    /// retries off, so an injected 429 or 5xx reaches the caller as injected, and connect
    /// and read timeouts, so a hung answer ends. The bounds are written out here because
    /// this crate depends on nothing of the product; canary-guard's `cluster::client`
    /// tests keep them equal to its `bound_calls`.
    pub fn config(&self, namespace: &str, user_agent: &str) -> Result<kube::Config, ClientError> {
        let uri: http::Uri = self
            .url()
            .parse()
            .expect("http:// and a socket address make a URI");
        let mut config = kube::Config::new(uri);
        config.default_namespace = namespace.to_owned();
        let agent = http::HeaderValue::from_str(user_agent)
            .map_err(|_| ClientError::UserAgent(user_agent.to_owned()))?;
        config.headers.push((http::header::USER_AGENT, agent));
        config.default_retry = false;
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(READ_TIMEOUT);
        config.reset_reader_on_write = true;
        Ok(config)
    }

    /// A kube client built from [`RunningApi::config`].
    pub fn client(&self, namespace: &str, user_agent: &str) -> Result<kube::Client, ClientError> {
        Ok(kube::Client::try_from(self.config(namespace, user_agent)?)?)
    }

    /// Stops accepting, ends open watches, lets other open requests finish (up to a few
    /// seconds), and waits.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The error that makes hyper close a connection without answering, or cut an answer short.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped on purpose")]
pub struct Dropped;

#[cfg(test)]
mod fixtures;

#[cfg(test)]
mod tests;
