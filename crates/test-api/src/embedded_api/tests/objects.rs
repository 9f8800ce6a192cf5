//! The verbs on objects through a kube client: creates, reads, lists with label selectors,
//! replaces, patches and deletes, with the real server's answers and errors.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use super::{api_status, raw};
use crate::embedded_api::fixtures::{self, NS, USER_AGENT};
use crate::embedded_api::{Resource, Verb, WriteRecord};

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
