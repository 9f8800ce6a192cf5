//! The server around the verbs: injected faults and latency, bounded and parsed bodies,
//! stopping; and, in process, waiting for a change.

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use super::{api_status, raw};
use crate::embedded_api::fixtures::{self, NS};
use crate::embedded_api::{
    EmbeddedApi, FaultAction, FaultRule, PatchType, Resource, Verb, MAX_BODY_BYTES,
};

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
