use super::*;

fn api(code: u16, reason: &str, message: &str) -> kube::Error {
    let mut s = kube::core::Status::failure(message, reason);
    s.code = code;
    kube::Error::Api(Box::new(s))
}

#[test]
fn an_api_answer_reads_as_code_reason_message_and_hint() {
    let e = api(
        403,
        "Forbidden",
        r#"leases.coordination.k8s.io "canary-guard-reviews" is forbidden: User "nobody" cannot get resource "leases""#,
    );
    let text = Readable(&e).to_string();
    assert_eq!(
        text,
        r#"403 Forbidden: leases.coordination.k8s.io "canary-guard-reviews" is forbidden: User "nobody" cannot get resource "leases" (grant the verb in the Role bound to the guard's ServiceAccount (deploy/base/rbac.yaml))"#
    );
    assert!(!text.contains("Status {"), "{text}");
}

#[test]
fn an_answer_without_detail_still_says_what_it_means() {
    // A failed JSON patch `test`: 422 with an empty message.
    let text = Readable(&api(422, "Invalid", "")).to_string();
    assert!(text.starts_with("422 Invalid ("), "{text}");
    assert!(text.contains("changed under us"), "{text}");
    let text = Readable(&api(418, "", "teapot")).to_string();
    assert_eq!(text, "418 Failure: teapot");
}

#[test]
fn other_failures_keep_their_own_text() {
    let e = kube::Error::LinesCodecMaxLineLengthExceeded;
    assert_eq!(Readable(&e).to_string(), e.to_string());
}
