//! Watches through a kube client: events in order with their versions, the start from now,
//! `410 Expired` past the change log, the timeout, the server stopping, and faults.

use std::time::Duration;

use futures_util::{Stream, StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use serde_json::json;

use crate::embedded_api::fixtures::{self, NS};
use crate::embedded_api::{store, FaultRule, Resource, Verb};

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
