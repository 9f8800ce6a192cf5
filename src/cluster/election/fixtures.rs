//! Test fixtures: the embedded API's Lease store seen through a simulated network with
//! latency and per-caller partitions.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use canary_guard_test_api::embedded_api::{Call, EmbeddedApi, Resource, Verb};
use k8s_openapi::api::coordination::v1::Lease;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;

use super::{LeaseStore, StoreError};
use crate::cluster::client::FIELD_MANAGER;

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
            call.body =
                Some(serde_json::to_value(lease).map_err(|e| StoreError::Other(e.to_string()))?);
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
