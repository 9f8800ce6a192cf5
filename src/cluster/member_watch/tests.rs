use super::*;
use canary_guard_test_api::embedded_api::{
    EmbeddedApi, FaultAction, FaultRule, Gate, Resource, RunningApi, Verb,
};
use serde_json::json;

const GROUP: &str = "canary-guard.io/group=reviews";

async fn served() -> (RunningApi, Api<Lease>) {
    let running = EmbeddedApi::new()
        .serve(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let client = running.client("default", "canary-guard-test/0").unwrap();
    (running, Api::namespaced(client, "default"))
}

fn member(name: &str) -> serde_json::Value {
    json!({"metadata": {"name": name, "namespace": "default",
        "labels": {"canary-guard.io/group": "reviews"}}})
}

/// Waits until the view satisfies `done` and returns it. The watch has no change signal
/// of its own, so its view is looked at again every few milliseconds; the timeout only
/// stops a test that would hang.
async fn until(watch: &MemberWatch, what: &str, done: impl Fn(&View) -> bool) -> View {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let view = watch.view();
            if done(&view) {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "timed out waiting for {what}; the view is {:?}",
            watch.view()
        )
    })
}

fn names(view: &View) -> Vec<String> {
    match view {
        View::Synced(leases) => leases
            .iter()
            .filter_map(|l| l.metadata.name.clone())
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn a_server_that_cannot_watch_says_so_and_the_leader_lists_instead() {
    let (running, leases) = served().await;
    // A server without watches answers 405, as the embedded API did before it served them.
    running
        .api()
        .faults()
        .add(FaultRule::status(405).verb(Verb::Watch));
    let watch = MemberWatch::start(leases, GROUP.into());
    until(&watch, "the server to be reported unable to watch", |v| {
        *v == View::Unsupported
    })
    .await;
}

#[tokio::test]
async fn the_leader_watches_the_embedded_api_and_sees_members_come_and_go() {
    let (running, leases) = served().await;
    let api = running.api();
    api.seed(Resource::Leases, member("m1")).unwrap();
    // The first watch waits at the gate: by then the list has answered, and a lease
    // created now is one the list cannot have seen.
    let gate = Gate::new();
    api.faults()
        .add(FaultRule::new(FaultAction::Hold(gate.clone())).verb(Verb::Watch));
    let watch = MemberWatch::start(leases, GROUP.into());
    gate.arrived(1).await;
    assert_eq!(names(&watch.view()), ["m1"]);
    // From here on only the watch can bring news: another list would fail.
    api.faults().add(FaultRule::status(500).verb(Verb::List));
    api.seed(Resource::Leases, member("m2")).unwrap();
    gate.open();
    woken_until(&watch, "the member created after the list", |v| {
        names(v) == ["m1", "m2"]
    })
    .await;
    api.delete(Resource::Leases, "default", "m1").unwrap();
    woken_until(&watch, "the deleted member to go", |v| names(v) == ["m2"]).await;
    assert_eq!(gate.arrivals(), 1, "the watch was opened again");
}

/// Waits on [`MemberWatch::changed`] alone, as the leader does: fails unless every
/// change that matters wakes the waiter.
async fn woken_until(watch: &MemberWatch, what: &str, done: impl Fn(&View) -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !done(&watch.view()) {
            watch.changed().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no wake-up brought {what}; the view is {:?}", watch.view()))
}

#[tokio::test]
async fn a_server_that_is_down_is_a_readable_failure() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config =
        crate::cluster::client::config_for_url(&format!("http://127.0.0.1:{port}"), "default")
            .unwrap();
    let client = crate::cluster::client::client(config, None).unwrap();
    let watch = MemberWatch::start(Api::namespaced(client, "default"), "a=b".into());
    let why = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let View::Failing(why) = watch.view() {
                if why.starts_with("list: ") {
                    return why;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a failure");
    assert!(!why.contains("Status {"), "{why}");
}
