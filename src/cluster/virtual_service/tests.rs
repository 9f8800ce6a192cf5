//! Tests of the VirtualService adapter: its pure parts (resource names, the pinned patch
//! operations, the record's JSON and merging, error messages), then, in
//! `against_the_api`, rollback and restore through a real kube client against the
//! embedded API, with concurrent writers and injected faults.
//!
//! Design rule: the adapter is tested through its public functions and what the API
//! stored and answered; of its private helpers only the patch operations and the merge of
//! records are tested directly, as they decide what a patch may overwrite.

use std::collections::BTreeMap;

use super::patch::pin;
use super::record::{annotation_op, merge_previous};
use super::*;
use crate::domain::routes::{Destination, DestinationWeight, RecordedRoute, RouteKind, RouteRef};

fn recorded(index: usize, weight: u32) -> RecordedRoute {
    RecordedRoute {
        route: RouteRef {
            kind: RouteKind::Http,
            index,
            name: None,
        },
        weights: vec![DestinationWeight {
            destination: Destination {
                host: "reviews".into(),
                subset: Some("v2".into()),
                port: None,
            },
            weight: Some(weight),
        }],
        added: None,
    }
}

fn record(previous: Vec<RecordedRoute>, restored_at: Option<&str>) -> RollbackRecord {
    RollbackRecord {
        time: "2025-01-01T00:00:00Z".into(),
        reason: "error ratio 0.2 > 0.05".into(),
        group: "reviews".into(),
        canary_revision: "abc".into(),
        previous,
        restored_at: restored_at.map(str::to_owned),
    }
}

#[test]
fn resource_names_the_istio_group_and_version() {
    let ar = resource("v1beta1");
    assert_eq!(ar.api_version, "networking.istio.io/v1beta1");
    assert_eq!(ar.kind, "VirtualService");
    assert_eq!(ar.plural, "virtualservices");
}

#[test]
fn patches_are_pinned_to_the_resource_version_never_to_a_value() {
    let mut obj = DynamicObject::new("reviews", &resource(DEFAULT_VERSION));
    assert_eq!(pin(&obj), None);
    obj.metadata.resource_version = Some("42".into());
    assert_eq!(
        serde_json::to_value([pin(&obj).unwrap(), annotation_op(&obj, "{}".into())]).unwrap(),
        serde_json::json!([
            { "op": "test", "path": "/metadata/resourceVersion", "value": "42" },
            { "op": "add", "path": "/metadata/annotations", "value": { "canary-guard.io/rollback": "{}" } }
        ])
    );
    // A record holding `>` is replaced without being tested.
    obj.metadata.annotations = Some(BTreeMap::from([(
        ROLLBACK_ANNOTATION.into(),
        serde_json::to_string(&record(vec![], None)).unwrap(),
    )]));
    assert_eq!(
        serde_json::to_value(annotation_op(&obj, "{}".into())).unwrap(),
        serde_json::json!(
            { "op": "add", "path": "/metadata/annotations/canary-guard.io~1rollback", "value": "{}" }
        )
    );
}

#[test]
fn record_serializes_in_camel_case_and_reads_back() {
    let rec = record(vec![recorded(0, 10)], None);
    let json = serde_json::to_value(&rec).unwrap();
    assert_eq!(json["canaryRevision"], "abc");
    assert!(json.get("restoredAt").is_none());
    assert_eq!(json["previous"][0]["kind"], "http");
    let mut obj = DynamicObject::new("reviews", &resource(DEFAULT_VERSION));
    assert_eq!(RollbackRecord::from_object(&obj).unwrap(), None);
    obj.metadata.annotations = Some(BTreeMap::from([(
        ROLLBACK_ANNOTATION.to_owned(),
        serde_json::to_string(&rec).unwrap(),
    )]));
    assert_eq!(RollbackRecord::from_object(&obj).unwrap(), Some(rec));
}

#[test]
fn merge_keeps_untouched_routes_of_an_unrestored_record() {
    let earlier = record(vec![recorded(0, 10), recorded(1, 20)], None);
    let merged = merge_previous(Some(&earlier), &[recorded(0, 5)]);
    assert_eq!(merged, vec![recorded(0, 5), recorded(1, 20)]);
    let restored = record(vec![recorded(1, 20)], Some("2025-01-02T00:00:00Z"));
    assert_eq!(
        merge_previous(Some(&restored), &[recorded(0, 5)]),
        vec![recorded(0, 5)]
    );
}

#[test]
fn errors_name_verb_resource_and_namespace() {
    let err = VirtualServiceError::Forbidden {
        verb: "patch",
        namespace: "default".into(),
        name: "reviews".into(),
    };
    assert_eq!(
        err.to_string(),
        "forbidden: patch virtualservices.networking.istio.io reviews in default — grant it in the Role"
    );
    let err = VirtualServiceError::NotFound {
        namespace: "default".into(),
        name: "reviews".into(),
    };
    assert_eq!(
        err.to_string(),
        "virtualservices.networking.istio.io reviews not found in default"
    );
}

/// The adapter through a real kube client against the embedded API.
mod against_the_api {
    use canary_guard_test_api::embedded_api::{
        EmbeddedApi, FaultAction, FaultRule, Gate, PatchType, Resource, RunningApi, Verb,
        WriteRecord,
    };
    use k8s_openapi::jiff::Timestamp;
    use serde_json::{json, Value};

    use super::super::patch::MAX_ATTEMPTS;
    use super::*;
    use crate::domain::routes::CanaryTarget;

    const NS: &str = "shop";

    async fn served(vs: Value) -> (RunningApi, Api<DynamicObject>) {
        let embedded = EmbeddedApi::new();
        embedded.seed(Resource::VirtualServices, vs).unwrap();
        let running = embedded.serve(([127, 0, 0, 1], 0).into()).await.unwrap();
        let client = running.client(NS, "canary-guard-test/0").unwrap();
        (running, api(client, NS, DEFAULT_VERSION))
    }

    fn virtual_service(annotations: Option<Value>) -> Value {
        let mut vs = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": { "name": "reviews", "namespace": NS },
            "spec": {
                "hosts": ["reviews"],
                "http": [{ "name": "main", "route": [
                    { "destination": { "host": "reviews", "subset": "stable" }, "weight": 90 },
                    { "destination": { "host": "reviews", "subset": "canary" }, "weight": 10 }
                ]}]
            }
        });
        if let Some(a) = annotations {
            vs["metadata"]["annotations"] = a;
        }
        vs
    }

    fn targets() -> RouteTargets {
        RouteTargets {
            canary: CanaryTarget::new(None, Some("canary".into())).unwrap(),
            stable: None,
            route: None,
        }
    }

    fn reason() -> RollbackReason {
        RollbackReason {
            reason: "error ratio 0.31 > 0.05 over 30 s (412 requests)".into(),
            group: "reviews".into(),
            canary_revision: "7d9f8c".into(),
        }
    }

    fn stored(running: &RunningApi) -> Value {
        running
            .api()
            .get(Resource::VirtualServices, NS, "reviews")
            .unwrap()
    }

    fn weights(vs: &Value) -> Vec<u64> {
        vs["spec"]["http"][0]["route"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["weight"].as_u64().unwrap())
            .collect()
    }

    fn record_of(vs: &Value) -> RollbackRecord {
        serde_json::from_str(
            vs["metadata"]["annotations"][ROLLBACK_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap()
    }

    fn vs_writes(running: &RunningApi) -> Vec<WriteRecord> {
        running
            .api()
            .history()
            .into_iter()
            .filter(|w| w.resource == Resource::VirtualServices && w.verb == Verb::Patch)
            .collect()
    }

    #[tokio::test]
    async fn rollback_writes_one_patch_with_the_record_and_then_nothing() {
        let (running, api) = served(virtual_service(None)).await;
        let outcome = rollback(&api, "reviews", &targets(), &reason(), false)
            .await
            .unwrap();
        let RollbackOutcome::Applied {
            summary,
            previous,
            resource_version,
            reasserted,
            regarding,
            ..
        } = outcome
        else {
            panic!("expected Applied, got {outcome:?}");
        };
        assert_eq!(summary, r#"http[0] "main": stable 90→100, canary 10→0"#);
        assert!(!reasserted);
        assert_eq!(regarding.kind.as_deref(), Some("VirtualService"));
        assert_eq!(regarding.namespace.as_deref(), Some(NS));

        let vs = stored(&running);
        assert_eq!(weights(&vs), vec![100, 0]);
        assert_eq!(
            vs["metadata"]["resourceVersion"].as_str(),
            resource_version.as_deref()
        );
        let record = record_of(&vs);
        assert_eq!(record.previous, previous);
        assert_eq!(record.previous[0].weights[1].weight, Some(10));
        assert_eq!(record.reason, reason().reason);
        assert_eq!(record.canary_revision, "7d9f8c");
        assert!(record.time.parse::<Timestamp>().is_ok(), "{}", record.time);

        let writes = vs_writes(&running);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].field_manager.as_deref(), Some(FIELD_MANAGER));
        assert_eq!(writes[0].code, 200);

        let again = rollback(&api, "reviews", &targets(), &reason(), false)
            .await
            .unwrap();
        assert_eq!(again, RollbackOutcome::AlreadyRolledBack);
        assert_eq!(vs_writes(&running).len(), 1);
    }

    #[tokio::test]
    async fn existing_annotations_are_kept() {
        let (running, api) = served(virtual_service(Some(json!({ "team": "shop" })))).await;
        rollback(&api, "reviews", &targets(), &reason(), false)
            .await
            .unwrap();
        let vs = stored(&running);
        assert_eq!(vs["metadata"]["annotations"]["team"], "shop");
        assert_eq!(record_of(&vs).group, "reviews");
    }

    /// Holds our first patch at the server until the other writer's `edit` has landed:
    /// after our read, before our write.
    async fn edit_while_our_patch_is_held(
        running: &RunningApi,
        api: &Api<DynamicObject>,
        edit: Value,
    ) -> RollbackOutcome {
        let gate = Gate::new();
        running.api().faults().add(
            FaultRule::new(FaultAction::Hold(gate.clone()))
                .verb(Verb::Patch)
                .resource(Resource::VirtualServices)
                .times(1),
        );
        let (targets, reason) = (targets(), reason());
        let rollback = rollback(api, "reviews", &targets, &reason, false);
        tokio::pin!(rollback);
        tokio::select! {
            () = gate.arrived(1) => {}
            outcome = &mut rollback => panic!("finished without sending a patch: {outcome:?}"),
        }
        running
            .api()
            .patch(
                Resource::VirtualServices,
                NS,
                "reviews",
                PatchType::Merge,
                edit,
            )
            .unwrap();
        gate.open();
        rollback.await.unwrap()
    }

    #[tokio::test]
    async fn a_concurrent_route_edit_is_kept_and_the_rollback_recomputed() {
        let (running, api) = served(virtual_service(None)).await;
        // GitOps moves the split to 70/30 and adds a header while our patch is in flight.
        let edit = json!({ "spec": { "http": [{ "name": "main", "route": [
            { "destination": { "host": "reviews", "subset": "stable" }, "weight": 70,
              "headers": { "request": { "set": { "x-gitops": "1" } } } },
            { "destination": { "host": "reviews", "subset": "canary" }, "weight": 30 }
        ]}]}});
        let outcome = edit_while_our_patch_is_held(&running, &api, edit).await;
        assert!(
            matches!(&outcome, RollbackOutcome::Applied { summary, .. } if summary.contains("stable 70→100, canary 30→0")),
            "{outcome:?}"
        );

        let vs = stored(&running);
        assert_eq!(weights(&vs), vec![100, 0]);
        assert_eq!(
            vs["spec"]["http"][0]["route"][0]["headers"]["request"]["set"]["x-gitops"],
            "1"
        );
        assert_eq!(record_of(&vs).previous[0].weights[1].weight, Some(30));
        // The first patch failed its test (422), the second one landed.
        let codes: Vec<u16> = vs_writes(&running)
            .iter()
            .filter(|w| w.field_manager.is_some())
            .map(|w| w.code)
            .collect();
        assert_eq!(codes, vec![422, 200]);
    }

    #[tokio::test]
    async fn annotations_added_concurrently_are_not_wiped() {
        let (running, api) = served(virtual_service(None)).await;
        let edit = json!({ "metadata": { "annotations": { "team": "shop" } } });
        let outcome = edit_while_our_patch_is_held(&running, &api, edit).await;
        assert!(
            matches!(outcome, RollbackOutcome::Applied { .. }),
            "{outcome:?}"
        );
        let vs = stored(&running);
        assert_eq!(vs["metadata"]["annotations"]["team"], "shop");
        assert_eq!(record_of(&vs).previous[0].weights[0].weight, Some(90));
        assert_eq!(weights(&vs), vec![100, 0]);
        // The first patch was pinned to the resourceVersion we read, and failed.
        let codes: Vec<u16> = vs_writes(&running)
            .iter()
            .filter(|w| w.field_manager.is_some())
            .map(|w| w.code)
            .collect();
        assert_eq!(codes, vec![422, 200]);
    }

    #[tokio::test]
    async fn an_object_that_keeps_changing_gives_a_conflict_error() {
        let (running, api) = served(virtual_service(None)).await;
        running
            .api()
            .faults()
            .add(FaultRule::status(409).verb(Verb::Patch));
        let err = rollback(&api, "reviews", &targets(), &reason(), false)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                VirtualServiceError::Conflict {
                    attempts: MAX_ATTEMPTS,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(weights(&stored(&running)), vec![90, 10]);
    }

    #[tokio::test]
    async fn missing_forbidden_and_unknown_canary_are_reported() {
        let (running, api) = served(virtual_service(None)).await;
        let err = rollback(&api, "ratings", &targets(), &reason(), false)
            .await
            .unwrap_err();
        assert!(
            matches!(err, VirtualServiceError::NotFound { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "virtualservices.networking.istio.io ratings not found in shop"
        );

        let wrong = RouteTargets {
            canary: CanaryTarget::new(None, Some("v9".into())).unwrap(),
            ..targets()
        };
        let err = rollback(&api, "reviews", &wrong, &reason(), false)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "VirtualService shop/reviews: canary destination subset=v9 not found in any route; \
             destinations present: reviews/canary, reviews/stable"
        );

        running
            .api()
            .faults()
            .add(FaultRule::status(403).verb(Verb::Patch));
        let err = rollback(&api, "reviews", &targets(), &reason(), false)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "forbidden: patch virtualservices.networking.istio.io reviews in shop — grant it in the Role"
        );
        running.api().faults().clear();
        running
            .api()
            .faults()
            .add(FaultRule::status(403).verb(Verb::Get));
        let err = rollback(&api, "reviews", &targets(), &reason(), false)
            .await
            .unwrap_err();
        assert!(
            matches!(err, VirtualServiceError::Forbidden { verb: "get", .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn dry_run_writes_nothing() {
        let (running, api) = served(virtual_service(None)).await;
        let outcome = rollback(&api, "reviews", &targets(), &reason(), true)
            .await
            .unwrap();
        assert!(
            matches!(&outcome, RollbackOutcome::DryRun { ops, .. } if !ops.is_empty()),
            "{outcome:?}"
        );
        assert!(vs_writes(&running).is_empty());
    }

    #[tokio::test]
    async fn canary_only_route_without_stable_is_skipped_without_a_write() {
        let mut vs = virtual_service(None);
        vs["spec"]["http"][0]["route"] =
            json!([{ "destination": { "host": "reviews", "subset": "canary" } }]);
        let (running, api) = served(vs).await;
        let outcome = rollback(&api, "reviews", &targets(), &reason(), false)
            .await
            .unwrap();
        assert!(
            matches!(&outcome, RollbackOutcome::Skipped { skipped } if skipped.len() == 1),
            "{outcome:?}"
        );
        assert!(vs_writes(&running).is_empty());
    }

    #[tokio::test]
    async fn restore_puts_weights_back_and_marks_the_record() {
        let (running, api) = served(virtual_service(None)).await;
        assert_eq!(
            restore(&api, "reviews", false).await.unwrap(),
            RestoreOutcome::NothingRecorded
        );
        rollback(&api, "reviews", &targets(), &reason(), false)
            .await
            .unwrap();

        // GitOps puts the canary back; the same bad revision is rolled back again. The
        // record's reason holds `>`: a `test` of it fails on a real API server, and on the
        // embedded one, which compares as Go encodes (the re-assert and restore of issue 11).
        running
            .api()
            .patch(
                Resource::VirtualServices,
                NS,
                "reviews",
                PatchType::Json,
                json!([{ "op": "replace", "path": "/spec/http/0/route/1/weight", "value": 10 },
                       { "op": "replace", "path": "/spec/http/0/route/0/weight", "value": 90 }]),
            )
            .unwrap();
        let outcome = rollback(&api, "reviews", &targets(), &reason(), false)
            .await
            .unwrap();
        assert!(
            matches!(
                outcome,
                RollbackOutcome::Applied {
                    reasserted: true,
                    ..
                }
            ),
            "{outcome:?}"
        );

        let outcome = restore(&api, "reviews", false).await.unwrap();
        assert!(
            matches!(&outcome, RestoreOutcome::Restored { summary, skipped, .. }
            if summary == r#"http[0] "main": stable 100→90, canary 0→10"# && skipped.is_empty()),
            "{outcome:?}"
        );
        let vs = stored(&running);
        assert_eq!(weights(&vs), vec![90, 10]);
        assert!(record_of(&vs).restored_at.is_some());
        assert!(matches!(
            restore(&api, "reviews", false).await.unwrap(),
            RestoreOutcome::AlreadyRestored { .. }
        ));

        // A new failing revision starts a fresh record.
        let next = RollbackReason {
            canary_revision: "8e0a1b".into(),
            ..reason()
        };
        let outcome = rollback(&api, "reviews", &targets(), &next, false)
            .await
            .unwrap();
        assert!(
            matches!(
                outcome,
                RollbackOutcome::Applied {
                    reasserted: false,
                    ..
                }
            ),
            "{outcome:?}"
        );
        let record = record_of(&stored(&running));
        assert_eq!(
            (record.canary_revision.as_str(), record.restored_at),
            ("8e0a1b", None)
        );
    }

    #[tokio::test]
    async fn older_served_versions_work_the_same() {
        let (running, api_v1) = served(virtual_service(None)).await;
        let beta = api(api_v1.into_client(), NS, "v1beta1");
        let outcome = rollback(&beta, "reviews", &targets(), &reason(), false)
            .await
            .unwrap();
        assert!(
            matches!(outcome, RollbackOutcome::Applied { .. }),
            "{outcome:?}"
        );
        assert_eq!(weights(&stored(&running)), vec![100, 0]);
    }
}
