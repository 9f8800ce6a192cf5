//! End-to-end tests: a real kube client against the served API. They are grouped by
//! behaviour: the verbs on objects (`objects`), watches (`watch_events`), and the server
//! around the verbs (`serving`).

mod objects;
mod serving;
mod watch_events;

use serde_json::Value;

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
