use super::*;

#[test]
fn not_found_matches_the_real_body() {
    let s = Status::not_found(Resource::Leases, "x");
    assert_eq!(
        s.to_json(),
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"leases.coordination.k8s.io \"x\" not found","reason":"NotFound",
            "details":{"name":"x","group":"coordination.k8s.io","kind":"leases"},"code":404})
    );
}

#[test]
fn core_group_is_omitted_from_details() {
    let s = Status::not_found(Resource::Pods, "p").to_json();
    assert_eq!(s["message"], "pods \"p\" not found");
    assert!(s["details"].get("group").is_none());
}

#[test]
fn invalid_message_lists_causes() {
    let s = Status::invalid(
        Resource::Events,
        "e",
        vec![
            StatusCause::new("FieldValueRequired", "eventTime", "Required value"),
            StatusCause::new("FieldValueRequired", "action", "Required value"),
        ],
    );
    assert_eq!(
        s.message,
        "Event \"e\" is invalid: [eventTime: Required value, action: Required value]"
    );
    // Events are validated as core Events: no group in the details either.
    assert!(s.to_json()["details"].get("group").is_none());
    assert_eq!(s.to_json()["details"]["causes"][1]["field"], "action");
}
