//! Property tests: any rollback plan keeps each touched route's total, zeroes the canary,
//! changes nothing but weights, is idempotent, and its restore gives back the original.

use super::*;
use proptest::prelude::*;
use serde_json::{json, Value};

fn apply(vs: &Value, ops: &[PatchOp]) -> Value {
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::to_value(ops).unwrap()).unwrap();
    let mut out = vs.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    out
}

fn entry() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just("reviews"),
            Just("reviews.default.svc.cluster.local"),
            Just("ratings")
        ],
        prop_oneof![Just("v1"), Just("v3"), Just("canary")],
        proptest::option::of(0u64..=1000),
        any::<bool>(),
    )
        .prop_map(|(host, subset, weight, extra)| {
            let mut e = json!({ "destination": { "host": host, "subset": subset } });
            if let Some(w) = weight {
                e["weight"] = json!(w);
            }
            if extra {
                e["headers"] = json!({ "request": { "set": { "x-canary": subset } } });
            }
            e
        })
}

fn route() -> impl Strategy<Value = Value> {
    (proptest::collection::vec(entry(), 1..=4), any::<bool>()).prop_map(|(entries, with_match)| {
        let mut r = json!({ "route": entries, "x-unknown": 1 });
        if with_match {
            r["match"] = json!([{ "port": 80 }]);
        }
        r
    })
}

fn virtual_service() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(route(), 0..=3),
        proptest::collection::vec(route(), 0..=2),
        proptest::collection::vec(route(), 0..=2),
    )
        .prop_map(|(mut http, tls, tcp)| {
            for (i, r) in http.iter_mut().enumerate() {
                r["name"] = json!(format!("route-{i}"));
            }
            json!({
                "metadata": { "name": "reviews", "namespace": "default" },
                "spec": { "hosts": ["reviews"], "http": http, "tls": tls, "tcp": tcp }
            })
        })
}

/// The object with every weight removed and the entries a rollback appended dropped.
fn without_weights(vs: &Value, appended: &[RecordedRoute]) -> Value {
    let mut out = vs.clone();
    for rec in appended.iter().filter(|r| r.added.is_some()) {
        let list = out
            .pointer_mut(&format!("{}/route", rec.route.pointer()))
            .unwrap();
        list.as_array_mut().unwrap().truncate(rec.weights.len());
    }
    for kind in RouteKind::ALL {
        for r in out["spec"][kind.as_str()]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            for e in r["route"].as_array_mut().into_iter().flatten() {
                e.as_object_mut().unwrap().remove("weight");
            }
        }
    }
    out
}

fn route_weights(vs: &Value, canary: &CanaryTarget) -> Vec<RouteWeights> {
    current_weights(vs, Some(canary)).unwrap()
}

proptest! {
    #[test]
    fn rollback_invariants(vs in virtual_service(), with_stable in any::<bool>()) {
        let canary = CanaryTarget::new(None, Some("canary".into())).unwrap();
        let stable = StableTarget::new(None, Some("v1".into())).unwrap();
        let stable = with_stable.then_some(&stable);
        let plan = match plan_rollback(&vs, &canary, stable, None) {
            Err(RouteError::CanaryNotFound { .. }) => {
                let found = route_weights(&vs, &canary).iter().any(|r| r.destinations.iter().any(|d| d.canary));
                prop_assert!(!found);
                return Ok(());
            }
            other => other.unwrap(),
        };
        let after = apply(&vs, &plan.ops);

        // Weights stay valid (non-negative int32), and nothing but weights changed.
        let before_w = route_weights(&vs, &canary);
        let after_w = route_weights(&after, &canary);
        prop_assert_eq!(before_w.len(), after_w.len());
        prop_assert_eq!(without_weights(&after, &plan.previous), without_weights(&vs, &[]));

        for (b, a) in before_w.iter().zip(&after_w) {
            let touched = plan.previous.iter().any(|p| p.route == b.route);
            let skipped = plan.skipped.iter().any(|s| s.route == b.route);
            if touched {
                prop_assert_eq!(a.total_weight(), b.total_weight(), "total of {}", b.route);
                prop_assert_eq!(a.canary_weight(), 0, "canary of {}", b.route);
            } else {
                prop_assert_eq!(a, b);
                prop_assert!(skipped || b.canary_weight() == 0);
            }
            if skipped {
                // Only a canary-only route without a stable target is left with traffic.
                prop_assert!(stable.is_none() && b.destinations.iter().all(|d| d.canary));
            }
        }

        prop_assert!(plan_rollback(&after, &canary, stable, None).unwrap().is_noop());
        let restore = plan_restore(&after, &plan.previous).unwrap();
        prop_assert_eq!(apply(&after, &restore.ops), vs);
    }
}
