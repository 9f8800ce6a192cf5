use super::*;
use canary_guard_test_api::embedded_api::EmbeddedApi;

#[tokio::test]
async fn a_server_that_cannot_watch_says_so_and_the_leader_lists_instead() {
    // The embedded API answers 405 to a watch, as a server without watches would.
    let running = EmbeddedApi::new()
        .serve(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let client = running.client("default", "canary-guard-test/0").unwrap();
    let watch = MemberWatch::start(
        Api::namespaced(client, "default"),
        "canary-guard.io/group=reviews".into(),
    );
    tokio::time::timeout(Duration::from_secs(10), async {
        while watch.view() != View::Unsupported {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the watch to report the server cannot watch");
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
