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

#[cfg(test)]
mod fixtures;

/// End-to-end tests: a real kube client against the served API.
#[cfg(test)]
mod tests {
    use super::fixtures::{self, NS, USER_AGENT};
    use super::*;
    use futures_util::{Stream, StreamExt, TryStreamExt};
    use http_body_util::BodyExt;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{
        Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
        WatchParams,
    };
    use serde_json::json;
    use std::time::Duration;

    /// The `Status` of a failed kube call.
    fn api_status<T: std::fmt::Debug>(result: kube::Result<T>) -> kube::core::Status {
        match result {
            Err(kube::Error::Api(status)) => *status,
            other => panic!("expected an API error, got {other:?}"),
        }
    }

    /// Sends a raw request through the kube client (for JSON patches and odd bodies).
    async fn raw(
        client: &kube::Client,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> kube::Result<Value> {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(body)
            .expect("request");
        client.request::<Value>(req).await
    }

    const VS_PATH: &str = "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/reviews";

    #[tokio::test]
    async fn lease_create_replace_conflict_and_errors() {
        let (running, client) = fixtures::served().await;
        let leases: Api<Lease> = Api::default_namespaced(client);
        let pp = PostParams::default();
        let created = leases
            .create(
                &pp,
                &fixtures::lease("canary-guard-reviews", "reviews", "a"),
            )
            .await
            .unwrap();
        let rv1 = created.metadata.resource_version.clone().unwrap();
        assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
        assert_eq!(created.metadata.namespace.as_deref(), Some(NS));

        let mut renewed = created.clone();
        renewed.spec.as_mut().unwrap().holder_identity = Some("b".into());
        let renewed = leases
            .replace("canary-guard-reviews", &pp, &renewed)
            .await
            .unwrap();
        let rv2 = renewed.metadata.resource_version.clone().unwrap();
        assert!(rv2.parse::<u64>().unwrap() > rv1.parse::<u64>().unwrap());

        // The stale copy loses.
        let stale = api_status(leases.replace("canary-guard-reviews", &pp, &created).await);
        assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
        assert!(stale.is_conflict() && !stale.is_already_exists());
        assert!(stale.message.contains("the object has been modified"));

        let mut unversioned = renewed.clone();
        unversioned.metadata.resource_version = None;
        let invalid = api_status(
            leases
                .replace("canary-guard-reviews", &pp, &unversioned)
                .await,
        );
        assert_eq!(invalid.code, 422);
        assert!(invalid.message.contains("must be specified for an update"));

        let dup = api_status(
            leases
                .create(
                    &pp,
                    &fixtures::lease("canary-guard-reviews", "reviews", "c"),
                )
                .await,
        );
        assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
        assert!(dup.is_already_exists() && !dup.is_conflict());

        let internal = api_status(leases.create(&pp, &renewed).await);
        assert_eq!(internal.code, 500);
        assert!(internal
            .message
            .contains("resourceVersion should not be set on objects to be created"));

        let missing = api_status(leases.get("nope").await);
        assert!(missing.is_not_found());
        assert_eq!(
            missing.message,
            "leases.coordination.k8s.io \"nope\" not found"
        );

        // Leases may be created by PUT, like on the real server.
        let put = leases
            .replace("by-put", &pp, &fixtures::lease("by-put", "reviews", "a"))
            .await
            .unwrap();
        assert_eq!(put.metadata.name.as_deref(), Some("by-put"));

        let deleted = leases
            .delete("by-put", &DeleteParams::default())
            .await
            .unwrap();
        assert!(deleted.is_right(), "leases answer a delete with a Status");
        assert!(api_status(leases.get("by-put").await).is_not_found());

        let history = running.api().history();
        let codes: Vec<(Verb, u16)> = history.iter().map(|r| (r.verb, r.code)).collect();
        assert_eq!(
            codes,
            [
                (Verb::Create, 201),
                (Verb::Update, 200),
                (Verb::Update, 409),
                (Verb::Update, 422),
                (Verb::Create, 409),
                (Verb::Create, 500),
                (Verb::Update, 201),
                (Verb::Delete, 200),
            ]
        );
        assert!(history
            .iter()
            .all(|r| r.user_agent.as_deref() == Some(USER_AGENT)));
        assert_eq!(history[1].resource_version.as_deref(), Some(rv2.as_str()));
        assert_eq!(
            history[1].object.as_ref().unwrap()["spec"]["holderIdentity"],
            "b"
        );
        assert!(history.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    }

    #[tokio::test]
    async fn label_selectors_filter_lists() {
        let (_running, client) = fixtures::served().await;
        let leases: Api<Lease> = Api::default_namespaced(client);
        for (name, group) in [("m1", "reviews"), ("m2", "reviews"), ("m3", "ratings")] {
            leases
                .create(&PostParams::default(), &fixtures::lease(name, group, name))
                .await
                .unwrap();
        }
        let names = |list: kube::core::ObjectList<Lease>| -> Vec<String> {
            list.items
                .into_iter()
                .filter_map(|l| l.metadata.name)
                .collect()
        };
        let eq = leases
            .list(&ListParams::default().labels("canary-guard.io/group=reviews"))
            .await
            .unwrap();
        assert!(eq.metadata.resource_version.is_some());
        assert_eq!(names(eq), ["m1", "m2"]);
        let set = leases
            .list(
                &ListParams::default()
                    .labels("canary-guard.io/group notin (reviews),canary-guard.io/group"),
            )
            .await
            .unwrap();
        assert_eq!(names(set), ["m3"]);
        let bad = api_status(leases.list(&ListParams::default().labels("a in (b")).await);
        assert_eq!(bad.code, 400);
        let all: Api<Lease> = Api::all(leases.into_client());
        assert_eq!(
            names(all.list(&ListParams::default()).await.unwrap()).len(),
            3
        );
    }

    #[tokio::test]
    async fn virtual_service_versions_and_patches() {
        let (running, client) = fixtures::served().await;
        let v1: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), NS, &fixtures::vs_resource("v1"));
        v1.create(&PostParams::default(), &fixtures::vs_object())
            .await
            .unwrap();
        for version in ["v1beta1", "v1alpha3"] {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), NS, &fixtures::vs_resource(version));
            let vs = api.get("reviews").await.unwrap();
            let av = vs.types.unwrap().api_version;
            assert_eq!(av, format!("networking.istio.io/{version}"));
            assert_eq!(vs.data["spec"]["http"][0]["route"][1]["weight"], 10);
        }

        // A JSON patch whose test fails: 422 Invalid, no causes, a fixed message, nothing stored.
        let stale = json!([
            {"op": "test", "path": "/spec/http/0/route/1/weight", "value": "10"},
            {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 0}
        ]);
        let failed = api_status(
            raw(
                &client,
                "PATCH",
                VS_PATH,
                "application/json-patch+json",
                stale.to_string().into(),
            )
            .await,
        );
        assert_eq!((failed.code, failed.reason.as_str()), (422, "Invalid"));
        assert!(failed.details.is_none_or(|d| d.causes.is_empty()));
        assert_eq!(
            failed.message,
            "the server rejected our request due to an error in our request"
        );

        let good = json!([
            {"op": "test", "path": "/spec/http/0/route/1/weight", "value": 10},
            {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 0},
            {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 100}
        ]);
        let path = format!("{VS_PATH}?fieldManager=canary-guard");
        let patched = raw(
            &client,
            "PATCH",
            &path,
            "application/json-patch+json",
            good.to_string().into(),
        )
        .await
        .unwrap();
        assert_eq!(patched["spec"]["http"][0]["route"][1]["weight"], 0);
        assert_eq!(patched["metadata"]["generation"], 2);
        assert_eq!(
            patched["spec"]["tcp"][0]["route"][1]["weight"], 10,
            "tcp untouched"
        );

        // A merge patch replaces the whole http list.
        let merge = json!({"spec": {"http": [{"route": [{"destination": {"host": "reviews", "subset": "stable"}}]}]}});
        let merged = v1
            .patch("reviews", &PatchParams::default(), &Patch::Merge(&merge))
            .await
            .unwrap();
        assert_eq!(merged.data["spec"]["http"], merge["spec"]["http"]);
        assert_eq!(merged.data["spec"]["hosts"], json!(["reviews"]));

        // A merge patch carrying a stale resourceVersion is conditional.
        let conditional = json!({"metadata": {"resourceVersion": "1"}, "spec": {"hosts": ["x"]}});
        let conflict = api_status(
            v1.patch(
                "reviews",
                &PatchParams::default(),
                &Patch::Merge(&conditional),
            )
            .await,
        );
        assert!(conflict.is_conflict());

        let strategic = api_status(
            v1.patch(
                "reviews",
                &PatchParams::default(),
                &Patch::Strategic(&merge),
            )
            .await,
        );
        assert_eq!(strategic.code, 415);

        let rename = json!({"metadata": {"name": "other"}});
        let renamed = api_status(
            v1.patch("reviews", &PatchParams::default(), &Patch::Merge(&rename))
                .await,
        );
        assert_eq!(renamed.code, 400);

        let dry = PatchParams {
            dry_run: true,
            ..PatchParams::default()
        };
        let hosts = json!({"spec": {"hosts": ["dry"]}});
        let answered = v1
            .patch("reviews", &dry, &Patch::Merge(&hosts))
            .await
            .unwrap();
        assert_eq!(answered.data["spec"]["hosts"], json!(["dry"]));
        assert_eq!(
            v1.get("reviews").await.unwrap().data["spec"]["hosts"],
            json!(["reviews"])
        );

        let patches: Vec<WriteRecord> = running
            .api()
            .history()
            .into_iter()
            .filter(|r| {
                r.verb == Verb::Patch
                    && r.resource == Resource::VirtualServices
                    && r.succeeded()
                    && !r.dry_run
            })
            .collect();
        assert_eq!(patches.len(), 2);
        assert_eq!(patches[0].field_manager.as_deref(), Some("canary-guard"));
        assert_eq!(patches[0].name, "reviews");

        let deleted = v1
            .delete("reviews", &DeleteParams::default())
            .await
            .unwrap();
        assert!(
            deleted.is_right(),
            "custom resources answer a delete with a Status, as kube-apiserver does"
        );
    }

    #[tokio::test]
    async fn events_are_validated_like_events_k8s_io_v1() {
        let (_running, client) = fixtures::served().await;
        let path = "/apis/events.k8s.io/v1/namespaces/shop/events";
        let post = |body: Value| {
            let client = client.clone();
            async move {
                raw(
                    &client,
                    "POST",
                    path,
                    "application/json",
                    body.to_string().into(),
                )
                .await
            }
        };
        let created = post(fixtures::event()).await.unwrap();
        let name = created["metadata"]["name"].as_str().unwrap();
        assert!(
            name.starts_with("reviews-") && name.len() == "reviews-".len() + 5,
            "{name}"
        );
        assert_eq!(created["eventTime"], "2026-01-02T03:04:05.123456Z");

        let mut bad = fixtures::event();
        for field in ["action", "reportingInstance"] {
            bad.as_object_mut().unwrap().remove(field);
        }
        bad["type"] = json!("Fatal");
        bad["reportingController"] = json!("canary guard");
        bad["reason"] = json!("r".repeat(129));
        bad["note"] = json!("n".repeat(1025));
        bad["deprecatedCount"] = json!(3);
        let status = api_status(post(bad).await);
        assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
        let mut fields: Vec<String> = status
            .details
            .unwrap()
            .causes
            .into_iter()
            .map(|c| c.field)
            .collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "action",
                "count",
                "message",
                "reason",
                "reportingController",
                "reportingInstance",
                "type"
            ]
        );
        // Without eventTime an Event is judged old-style: the reporting fields are not checked.
        let mut old_style = fixtures::event();
        old_style.as_object_mut().unwrap().remove("eventTime");
        old_style["action"] = json!("");
        let status = api_status(post(old_style).await);
        let fields: Vec<String> = status
            .details
            .unwrap()
            .causes
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(fields, ["eventTime"]);

        let mut dotted = fixtures::event();
        dotted["metadata"]["generateName"] = json!("reviews.");
        let status = api_status(post(dotted).await);
        assert_eq!(status.code, 422);
        assert!(status.message.contains("metadata.generateName"));

        let mut unnamed = fixtures::event();
        unnamed["metadata"] = json!({});
        assert_eq!(api_status(post(unnamed).await).code, 422);
    }

    #[tokio::test]
    async fn deployment_pause_bumps_generation_and_keeps_status() {
        let (running, client) = fixtures::served().await;
        running
            .api()
            .seed(
                Resource::Deployments,
                json!({"metadata": {"name": "reviews-v2", "namespace": NS},
                    "spec": {"selector": {"matchLabels": {"app": "reviews"}},
                        "template": {"metadata": {"labels": {"app": "reviews"}}}},
                    "status": {"replicas": 2}}),
            )
            .unwrap();
        let deployments: Api<Deployment> = Api::default_namespaced(client);
        let paused = deployments
            .patch(
                "reviews-v2",
                &PatchParams::apply("canary-guard"),
                &Patch::Merge(json!({"spec": {"paused": true}})),
            )
            .await
            .unwrap();
        assert_eq!(paused.spec.unwrap().paused, Some(true));
        assert_eq!(paused.metadata.generation, Some(2));
        assert_eq!(paused.status.unwrap().replicas, Some(2));
        let again = deployments
            .patch(
                "reviews-v2",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"paused": true}})),
            )
            .await
            .unwrap();
        assert_eq!(
            again.metadata.resource_version, paused.metadata.resource_version,
            "no-op patch"
        );
    }

    #[tokio::test]
    async fn faults_fail_delay_and_drop_requests() {
        let (running, client) = fixtures::served().await;
        let api = running.api();
        api.seed(
            Resource::Leases,
            json!({"metadata": {"name": "l", "namespace": NS}}),
        )
        .unwrap();
        let leases: Api<Lease> = Api::default_namespaced(client.clone());

        api.faults().add(
            FaultRule::status(500)
                .verb(Verb::Get)
                .resource(Resource::Leases)
                .times(1),
        );
        assert_eq!(api_status(leases.get("l").await).code, 500);
        leases.get("l").await.unwrap();

        api.faults().add(
            FaultRule::status(403)
                .resource(Resource::Leases)
                .name("l")
                .times(1),
        );
        let forbidden = api_status(leases.get("l").await);
        assert!(forbidden.is_forbidden());
        assert!(forbidden
            .message
            .contains("cannot get resource \"leases\" in API group \"coordination.k8s.io\""));

        // The guard's clients leave retrying to the guard: a 429 comes back with its
        // Retry-After, and the next call goes through.
        api.faults().add(
            FaultRule::new(FaultAction::Status {
                code: 429,
                retry_after: Some(3),
            })
            .verb(Verb::Patch)
            .times(1),
        );
        let params = PatchParams::default();
        let labels = Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}}));
        let patch = || leases.patch("l", &params, &labels);
        let throttled = api_status(patch().await);
        assert_eq!(throttled.code, 429);
        assert_eq!(throttled.details.map(|d| d.retry_after_seconds), Some(3));
        patch().await.unwrap();
        let patch_codes: Vec<u16> = api
            .history()
            .iter()
            .filter(|r| r.verb == Verb::Patch)
            .map(|r| r.code)
            .collect();
        assert_eq!(patch_codes, [429, 200]);

        api.faults()
            .add(FaultRule::new(FaultAction::Drop).verb(Verb::Get).times(1));
        match leases.get("l").await {
            Err(kube::Error::Api(s)) => panic!("a dropped connection answered {s:?}"),
            Err(_) => {}
            Ok(_) => panic!("a dropped connection answered"),
        }
        leases.get("l").await.unwrap();

        api.faults().set_refusing(true);
        assert!(leases.get("l").await.is_err());
        api.faults().set_refusing(false);
        leases.get("l").await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn injected_latency_follows_tokio_time() {
        let (running, client) = fixtures::served().await;
        let api = running.api();
        api.seed(
            Resource::Leases,
            json!({"metadata": {"name": "l", "namespace": NS}}),
        )
        .unwrap();
        api.faults()
            .add(FaultRule::new(FaultAction::Delay(std::time::Duration::from_secs(20))).times(1));
        let leases: Api<Lease> = Api::default_namespaced(client);
        let start = tokio::time::Instant::now();
        // Within the client's read timeout, which cuts off anything slower.
        leases.get("l").await.unwrap();
        assert!(start.elapsed() >= std::time::Duration::from_secs(20));
    }

    #[tokio::test]
    async fn bodies_are_bounded_and_parsed() {
        let (_running, client) = fixtures::served().await;
        let path = "/apis/coordination.k8s.io/v1/namespaces/shop/leases";
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(
            api_status(raw(&client, "POST", path, "application/json", huge).await).code,
            413
        );
        let broken = api_status(
            raw(
                &client,
                "POST",
                path,
                "application/json",
                b"{\"kind\":".to_vec(),
            )
            .await,
        );
        assert_eq!((broken.code, broken.reason.as_str()), (400, "BadRequest"));
        let unknown = api_status(
            raw(
                &client,
                "GET",
                "/apis/example.com/v1/namespaces/shop/things",
                "",
                Vec::new(),
            )
            .await,
        );
        assert_eq!(unknown.code, 404);
    }

    #[tokio::test]
    async fn stop_closes_the_listener() {
        let (running, client) = fixtures::served().await;
        let leases: Api<Lease> = Api::default_namespaced(client);
        assert!(leases
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty());
        let addr = running.addr();
        running.stop().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
        assert!(leases.list(&ListParams::default()).await.is_err());
    }

    #[tokio::test]
    async fn waiting_for_a_change_needs_no_sleep() {
        let api = EmbeddedApi::new();
        api.seed(Resource::VirtualServices, fixtures::virtual_service())
            .unwrap();
        let writer = api.clone();
        let task = tokio::spawn(async move {
            writer
                .patch(
                    Resource::VirtualServices,
                    NS,
                    "reviews",
                    PatchType::Merge,
                    json!({"spec": {"http": []}}),
                )
                .unwrap();
        });
        api.wait_for(|api| {
            api.get(Resource::VirtualServices, NS, "reviews")
                .is_ok_and(|vs| vs["spec"]["http"] == json!([]))
        })
        .await;
        task.await.unwrap();
    }

    /// Longest a test waits for a watch to say something; only a guard against a hang.
    const WATCH_GUARD: Duration = Duration::from_secs(10);

    /// The next `n` events of a watch; fails if it ends or errs first.
    async fn next_events<K, S>(stream: &mut S, n: usize) -> Vec<WatchEvent<K>>
    where
        S: Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
    {
        let mut events = Vec::new();
        while events.len() < n {
            let next = tokio::time::timeout(WATCH_GUARD, stream.try_next())
                .await
                .unwrap_or_else(|_| panic!("no event after {} of {n}", events.len()));
            match next {
                Ok(Some(event)) => events.push(event),
                other => panic!("the watch ended after {} events: {other:?}", events.len()),
            }
        }
        events
    }

    /// An event as (type, namespace/name, resourceVersion).
    fn summary(event: &WatchEvent<Lease>) -> (&'static str, String, String) {
        let (kind, lease) = match event {
            WatchEvent::Added(l) => ("ADDED", l),
            WatchEvent::Modified(l) => ("MODIFIED", l),
            WatchEvent::Deleted(l) => ("DELETED", l),
            other => panic!("not an object event: {other:?}"),
        };
        let meta = &lease.metadata;
        (
            kind,
            format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default()
            ),
            meta.resource_version.clone().unwrap_or_default(),
        )
    }

    fn holder(event: &WatchEvent<Lease>) -> Option<String> {
        match event {
            WatchEvent::Added(l) | WatchEvent::Modified(l) | WatchEvent::Deleted(l) => {
                l.spec.as_ref()?.holder_identity.clone()
            }
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_watch_sees_adds_changes_and_deletes_in_order_with_their_versions() {
        let (_running, client) = fixtures::served().await;
        let leases: Api<Lease> = Api::default_namespaced(client);
        let (pp, patch) = (PostParams::default(), PatchParams::default());
        let selector = "canary-guard.io/group=reviews";
        let m1 = leases
            .create(&pp, &fixtures::lease("m1", "reviews", "a"))
            .await
            .unwrap();
        let listed = leases
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        let from = listed.metadata.resource_version.unwrap();
        let mut stream = leases
            .watch(&WatchParams::default().labels(selector), &from)
            .await
            .unwrap()
            .boxed();

        let rv = |l: &Lease| l.metadata.resource_version.clone().unwrap();
        let relabel = |group: &str| {
            Patch::Merge(json!({"metadata": {"labels": {"canary-guard.io/group": group}}}))
        };
        let m2 = leases
            .create(&pp, &fixtures::lease("m2", "reviews", "b"))
            .await
            .unwrap();
        let mut renewed = m1.clone();
        renewed.spec.as_mut().unwrap().holder_identity = Some("c".into());
        let renewed = leases.replace("m1", &pp, &renewed).await.unwrap();
        // Never matches until relabelled: unseen until then.
        leases
            .create(&pp, &fixtures::lease("m3", "ratings", "d"))
            .await
            .unwrap();
        let m2_out = leases
            .patch("m2", &patch, &relabel("ratings"))
            .await
            .unwrap();
        let m3_in = leases
            .patch("m3", &patch, &relabel("reviews"))
            .await
            .unwrap();
        leases.delete("m1", &DeleteParams::default()).await.unwrap();
        let deleted_at = leases
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        assert!(deleted_at.parse::<u64>().unwrap() > rv(&m3_in).parse().unwrap());

        let events = next_events(&mut stream, 5).await;
        let seen: Vec<_> = events.iter().map(summary).collect();
        let at = |kind, name: &str, version: String| (kind, format!("{NS}/{name}"), version);
        assert_eq!(
            seen,
            [
                at("ADDED", "m2", rv(&m2)),
                at("MODIFIED", "m1", rv(&renewed)),
                at("DELETED", "m2", rv(&m2_out)),
                at("ADDED", "m3", rv(&m3_in)),
                at("DELETED", "m1", deleted_at),
            ]
        );
        // A DELETED event carries the last state that matched.
        let WatchEvent::Deleted(gone) = &events[2] else {
            unreachable!()
        };
        assert_eq!(
            gone.metadata.labels.as_ref().unwrap()["canary-guard.io/group"],
            "reviews"
        );
        assert_eq!(holder(&events[4]).as_deref(), Some("c"));
    }

    #[tokio::test]
    async fn a_watch_from_now_starts_with_the_matching_objects_of_its_namespace() {
        let (running, client) = fixtures::served().await;
        let api = running.api();
        let seed = |ns: &str, name: &str, group: &str| {
            api.seed(
                Resource::Leases,
                json!({"metadata": {"name": name, "namespace": ns,
                    "labels": {"canary-guard.io/group": group}}}),
            )
            .unwrap();
        };
        seed(NS, "m1", "reviews");
        seed("other", "m2", "reviews");
        seed(NS, "m3", "ratings");
        let params = WatchParams::default().labels("canary-guard.io/group=reviews");

        let all: Api<Lease> = Api::all(client.clone());
        let mut everywhere = all.watch(&params, "0").await.unwrap().boxed();
        let here: Api<Lease> = Api::default_namespaced(client.clone());
        let mut in_shop = here.watch(&params, "").await.unwrap().boxed();
        let names = |events: Vec<WatchEvent<Lease>>| -> Vec<(&'static str, String)> {
            events
                .iter()
                .map(|e| {
                    let (kind, name, _) = summary(e);
                    (kind, name)
                })
                .collect()
        };
        let added = |name: &str| ("ADDED", name.to_owned());
        assert_eq!(
            names(next_events(&mut everywhere, 2).await),
            [added("other/m2"), added("shop/m1")]
        );
        assert_eq!(
            names(next_events(&mut in_shop, 1).await),
            [added("shop/m1")]
        );
        // Then what changes: a write elsewhere reaches only the all-namespaces watch.
        seed("other", "m4", "reviews");
        seed(NS, "m5", "reviews");
        assert_eq!(
            names(next_events(&mut everywhere, 2).await),
            [added("other/m4"), added("shop/m5")]
        );
        assert_eq!(
            names(next_events(&mut in_shop, 1).await),
            [added("shop/m5")]
        );

        // Objects come as the version watched shows them.
        api.seed(Resource::VirtualServices, fixtures::virtual_service())
            .unwrap();
        let vs: Api<DynamicObject> =
            Api::namespaced_with(client, NS, &fixtures::vs_resource("v1alpha3"));
        let mut stream = vs
            .watch(&WatchParams::default(), "0")
            .await
            .unwrap()
            .boxed();
        let events = next_events(&mut stream, 1).await;
        let WatchEvent::Added(object) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(
            object.types.as_ref().unwrap().api_version,
            "networking.istio.io/v1alpha3"
        );
    }

    #[tokio::test]
    async fn a_watch_from_a_forgotten_version_is_told_it_expired() {
        let (running, client) = fixtures::served().await;
        let api = running.api();
        // Versions 1 and 2 fall out of the change log.
        for i in 0..store::CHANGE_LIMIT + 2 {
            api.seed(
                Resource::Leases,
                json!({"metadata": {"name": format!("l{i}"), "namespace": NS}}),
            )
            .unwrap();
        }
        let leases: Api<Lease> = Api::default_namespaced(client);
        let mut stream = leases
            .watch(&WatchParams::default(), "1")
            .await
            .unwrap()
            .boxed();
        let events = next_events(&mut stream, 1).await;
        let WatchEvent::Error(status) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(
            (status.code, status.reason.as_str(), status.message.as_str()),
            (410, "Expired", "too old resource version: 1 (2)")
        );
        let end = tokio::time::timeout(WATCH_GUARD, stream.try_next()).await;
        assert!(matches!(end, Ok(Ok(None))), "{end:?}");

        // The oldest version still covered is watched as usual.
        let mut stream = leases
            .watch(&WatchParams::default(), "2")
            .await
            .unwrap()
            .boxed();
        let events = next_events(&mut stream, 1).await;
        assert_eq!(
            summary(&events[0]),
            ("ADDED", format!("{NS}/l2"), "3".to_owned())
        );
    }

    #[tokio::test]
    async fn a_watch_ends_after_its_timeout() {
        let (_running, client) = fixtures::served().await;
        let leases: Api<Lease> = Api::default_namespaced(client);
        let start = tokio::time::Instant::now();
        let mut stream = leases
            .watch(&WatchParams::default().timeout(1), "0")
            .await
            .unwrap()
            .boxed();
        let end = tokio::time::timeout(WATCH_GUARD, stream.try_next())
            .await
            .expect("the watch to end");
        assert!(matches!(end, Ok(None)), "{end:?}");
        assert!(start.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn stopping_the_server_ends_an_open_watch_at_once() {
        let (running, client) = fixtures::served().await;
        let leases: Api<Lease> = Api::default_namespaced(client);
        let mut stream = leases
            .watch(&WatchParams::default(), "0")
            .await
            .unwrap()
            .boxed();
        running
            .api()
            .seed(
                Resource::Leases,
                json!({"metadata": {"name": "l", "namespace": NS}}),
            )
            .unwrap();
        next_events(&mut stream, 1).await;
        // Well under the 5 s that open answers get to finish: the watch must not hold it.
        tokio::time::timeout(Duration::from_secs(2), running.stop())
            .await
            .expect("the open watch held the shutdown");
        let end = tokio::time::timeout(WATCH_GUARD, stream.try_next())
            .await
            .expect("the watch to end");
        assert!(matches!(end, Ok(None)), "{end:?}");
    }

    #[tokio::test]
    async fn faults_refuse_watches_and_cut_open_ones() {
        let (running, client) = fixtures::served().await;
        let api = running.api();
        let leases: Api<Lease> = Api::default_namespaced(client);
        api.faults()
            .add(FaultRule::status(405).verb(Verb::Watch).times(1));
        match leases.watch(&WatchParams::default(), "0").await {
            Err(kube::Error::Api(s)) => {
                assert_eq!((s.code, s.reason.as_str()), (405, "MethodNotAllowed"))
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("the watch was not refused"),
        }
        // A rule on watches leaves lists alone, and is used up.
        leases.list(&ListParams::default()).await.unwrap();
        // Raw, because kube ends a watch stream quietly when its connection is cut.
        let watch = http::Request::get(
            "/apis/coordination.k8s.io/v1/namespaces/shop/leases?watch=true&resourceVersion=0",
        )
        .body(kube::client::Body::empty())
        .unwrap();
        let open = leases.into_client().send(watch).await.unwrap();
        assert_eq!(open.status(), 200);
        let body = tokio::spawn(open.into_body().collect());
        // The API going away cuts the watch: an error, not the end a timeout gives.
        api.faults().set_refusing(true);
        let cut = tokio::time::timeout(WATCH_GUARD, body)
            .await
            .expect("the watch to be cut")
            .unwrap();
        assert!(cut.is_err(), "the watch ended cleanly");
    }
}
