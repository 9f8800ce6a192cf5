use serde_json::json;

use super::history::HISTORY_LIMIT;
use super::*;

const NS: &str = "shop";

fn call(verb: Verb, resource: Resource, name: Option<&str>, body: Option<Value>) -> Call {
    let mut c = Call::new(verb, resource, Some(NS));
    c.name = name.map(str::to_owned);
    c.body = body;
    c
}

fn vs(status: Value, weight: u32) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": NS},
        "spec": {"http": [{"route": [{"destination": {"host": "reviews"}, "weight": weight}]}]},
        "status": status})
}

#[test]
fn generate_name_and_dry_run() {
    let store = Store::default();
    let mut c = call(
        Verb::Create,
        Resource::Leases,
        None,
        Some(
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"generateName": "member-"}}),
        ),
    );
    c.dry_run = true;
    let answer = store.call(c.clone());
    let obj = answer.result.unwrap();
    let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
    let suffix = name.strip_prefix("member-").unwrap();
    assert_eq!(suffix.len(), 5);
    assert!(suffix
        .bytes()
        .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
    assert!(obj["metadata"].get("resourceVersion").is_none());
    assert_eq!(answer.code, 201);
    let get = store.call(call(Verb::Get, Resource::Leases, Some(&name), None));
    assert_eq!(get.result.unwrap_err().code, 404);
    c.dry_run = false;
    let stored = store.call(c).result.unwrap();
    assert_eq!(stored["metadata"]["resourceVersion"], "1");
    assert!(store.history()[0].dry_run && !store.history()[1].dry_run);
}

#[test]
fn status_is_kept_and_generation_follows_spec() {
    let store = Store::default();
    let seeded = store
        .seed(
            Resource::VirtualServices,
            vs(json!({"observedGeneration": 1}), 10),
        )
        .unwrap();
    assert_eq!(seeded["metadata"]["generation"], 1);
    let rv = seeded["metadata"]["resourceVersion"].clone();

    // Only the status differs: the write is a no-op, as the status subresource owns it.
    let mut same = vs(json!({"observedGeneration": 9}), 10);
    same["metadata"]["resourceVersion"] = rv.clone();
    let put = store.call(call(
        Verb::Update,
        Resource::VirtualServices,
        Some("reviews"),
        Some(same),
    ));
    let put = put.result.unwrap();
    assert_eq!(put["metadata"]["resourceVersion"], rv);
    assert_eq!(put["status"]["observedGeneration"], 1);

    let mut changed = vs(Value::Null, 0);
    changed["metadata"]["resourceVersion"] = rv;
    let put = store.call(call(
        Verb::Update,
        Resource::VirtualServices,
        Some("reviews"),
        Some(changed),
    ));
    let put = put.result.unwrap();
    assert_eq!(put["metadata"]["generation"], 2);
    assert_eq!(put["status"]["observedGeneration"], 1);
    assert_eq!(put["metadata"]["uid"], seeded["metadata"]["uid"]);
}

#[test]
fn identity_checks_on_update() {
    let store = Store::default();
    let seeded = store
        .seed(Resource::VirtualServices, vs(Value::Null, 10))
        .unwrap();
    let mut other = seeded.clone();
    other["metadata"]["name"] = json!("other");
    let renamed = store.call(call(
        Verb::Update,
        Resource::VirtualServices,
        Some("reviews"),
        Some(other),
    ));
    assert_eq!(renamed.result.unwrap_err().code, 400);
    let mut uid = seeded.clone();
    uid["metadata"]["uid"] = json!("not-the-uid");
    let err = store
        .call(call(
            Verb::Update,
            Resource::VirtualServices,
            Some("reviews"),
            Some(uid),
        ))
        .result
        .unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    let mut wrong_version = seeded;
    wrong_version["apiVersion"] = json!("networking.istio.io/v1beta1");
    let err = store
        .call(call(
            Verb::Update,
            Resource::VirtualServices,
            Some("reviews"),
            Some(wrong_version),
        ))
        .result
        .unwrap_err();
    assert_eq!(err.code, 400);
}

#[test]
fn delete_honours_preconditions_and_moves_the_version() {
    let store = Store::default();
    let seeded = store
        .seed(Resource::VirtualServices, vs(Value::Null, 10))
        .unwrap();
    let mut changes = store.subscribe();
    changes.mark_unchanged();
    let stale = json!({"preconditions": {"resourceVersion": "0"}});
    let err = store
        .call(call(
            Verb::Delete,
            Resource::VirtualServices,
            Some("reviews"),
            Some(stale),
        ))
        .result
        .unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(!changes.has_changed().unwrap());
    let ok = json!({"preconditions": {"uid": seeded["metadata"]["uid"]}});
    let deleted = store
        .call(call(
            Verb::Delete,
            Resource::VirtualServices,
            Some("reviews"),
            Some(ok),
        ))
        .result
        .unwrap();
    assert_eq!(
        (&deleted["kind"], &deleted["status"]),
        (&json!("Status"), &json!("Success"))
    );
    assert!(changes.has_changed().unwrap());
    assert_eq!(*changes.borrow_and_update(), 2);
    let history = store.history();
    assert_eq!(
        history.last().unwrap().object.as_ref().unwrap()["metadata"]["name"],
        "reviews"
    );
}

#[test]
fn pods_start_pending_unless_seeded() {
    let store = Store::default();
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"containers": [{"name": "app", "image": "app"}]},
            "status": {"phase": "Running"}})
    };
    let created = store.call(call(Verb::Create, Resource::Pods, None, Some(pod("a"))));
    assert_eq!(
        created.result.unwrap()["status"],
        json!({"phase": "Pending"})
    );
    let seeded = store.seed(Resource::Pods, pod("b")).unwrap();
    assert_eq!(seeded["status"]["phase"], "Running");
    let mut list = Call::new(Verb::List, Resource::Pods, None);
    list.label_selector = Some("app".into());
    assert_eq!(store.call(list).result.unwrap()["items"], json!([]));
}

#[test]
fn every_stored_write_logs_one_change_and_the_log_is_bounded() {
    let store = Store::default();
    let lease = |holder: &str| json!({"metadata": {"name": "a", "namespace": NS}, "spec": {"holderIdentity": holder}});
    store.seed(Resource::Leases, lease("x")).unwrap();
    store.seed(Resource::Leases, lease("y")).unwrap();
    let mut dry = call(
        Verb::Create,
        Resource::Leases,
        None,
        Some(
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "b"}}),
        ),
    );
    dry.dry_run = true;
    store.call(dry).result.unwrap();
    store
        .call(call(Verb::Delete, Resource::Leases, Some("a"), None))
        .result
        .unwrap();
    let holder = |o: &Option<Value>| {
        o.as_ref()
            .map(|o| o["spec"]["holderIdentity"].as_str().unwrap().to_owned())
    };
    let log: Vec<_> = store
        .changes_since(0)
        .unwrap()
        .iter()
        .map(|c| (c.resource_version, holder(&c.object), holder(&c.previous)))
        .collect();
    let some = |h: &str| Some(h.to_owned());
    assert_eq!(
        log,
        [
            (1, some("x"), None),
            (2, some("y"), some("x")),
            (3, None, some("y")),
        ]
    );
    assert_eq!(store.changes_since(2).unwrap().len(), 1);
    assert!(store.changes_since(3).unwrap().is_empty());
    assert!(store.changes_since(99).unwrap().is_empty());

    for _ in 0..CHANGE_LIMIT {
        store.seed(Resource::Leases, lease("z")).unwrap();
    }
    assert_eq!(store.changes_since(2).unwrap_err(), 3);
    let kept = store.changes_since(3).unwrap();
    assert_eq!(kept.len(), CHANGE_LIMIT);
    assert_eq!(kept[0].resource_version, 4);
}

#[test]
fn history_is_bounded() {
    let store = Store::default();
    let nameless = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {}});
    for _ in 0..=HISTORY_LIMIT {
        let answer = store.call(call(
            Verb::Create,
            Resource::Leases,
            None,
            Some(nameless.clone()),
        ));
        assert_eq!(answer.code, 422);
    }
    let history = store.history();
    assert_eq!(history.len(), HISTORY_LIMIT);
    assert_eq!(history[0].seq, 2);
}
