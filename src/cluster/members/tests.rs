//! Tests of member summaries as the leader reads them from peers' Leases: good summaries
//! decode and bad ones say why (the reasons it counts), and properties: decoding never
//! panics on any text and accepts only plausible summaries, published summaries
//! round-trip, and merging adds up in any order.
//!
//! Design rule: a peer's annotation is untrusted input, so decoding is tested on raw text,
//! hand-written and generated, not only on what this guard publishes.

use super::*;
use proptest::prelude::*;

fn reason(raw: &str) -> Option<&'static str> {
    decode_summary(raw).err().map(|(r, _)| r.as_str())
}

#[test]
fn good_summaries_decode_and_bad_ones_say_why() {
    let good = r#"{"v":1,"s":30,"n":200,"e":40,"h":[[300,200]]}"#;
    let s = decode_summary(good).unwrap();
    assert_eq!((s.requests, s.errors, s.latency.total()), (200, 40, 200));
    assert_eq!(reason("{"), Some("malformed"));
    assert_eq!(reason("[1,2]"), Some("malformed"));
    assert_eq!(reason(r#"{"s":30,"n":1,"e":0,"h":[]}"#), Some("malformed"));
    assert_eq!(
        reason(r#"{"v":"1","s":30,"n":1,"e":0,"h":[]}"#),
        Some("malformed")
    );
    assert_eq!(
        reason(r#"{"v":1,"s":30,"n":-1,"e":0,"h":[]}"#),
        Some("malformed")
    );
    assert_eq!(
        reason(r#"{"v":2,"s":30,"n":1,"e":1,"h":[]}"#),
        Some("unknown_version")
    );
    assert_eq!(
        reason(r#"{"v":1,"s":30,"n":1,"e":2,"h":[]}"#),
        Some("implausible")
    );
    assert_eq!(
        reason(r#"{"v":1,"s":0,"n":1,"e":0,"h":[]}"#),
        Some("implausible")
    );
    assert_eq!(
        reason(r#"{"v":1,"s":86400,"n":1,"e":0,"h":[]}"#),
        Some("implausible")
    );
    let max = u64::MAX;
    assert_eq!(
        reason(&format!(r#"{{"v":1,"s":30,"n":{max},"e":{max},"h":[]}}"#)),
        Some("implausible")
    );
    assert_eq!(
        reason(r#"{"v":1,"s":30,"n":1,"e":0,"h":[[3,5]]}"#),
        Some("implausible")
    );
    let huge = format!(
        r#"{{"v":1,"s":30,"n":1,"e":0,"h":[],"x":"{}"}}"#,
        "a".repeat(MAX_SUMMARY_BYTES)
    );
    assert_eq!(reason(&huge), Some("too_large"));
    // The recent part must be a part of the window.
    let with_recent = |r: &str| format!(r#"{{"v":1,"s":30,"n":200,"e":40,"h":[],"r":{r}}}"#);
    let s = decode_summary(&with_recent(r#"{"v":1,"s":5,"n":50,"e":40,"h":[]}"#)).unwrap();
    assert_eq!(s.recent.map(|r| (r.requests, r.errors)), Some((50, 40)));
    for bad in [
        r#"{"v":1,"s":5,"n":201,"e":0,"h":[]}"#,
        r#"{"v":1,"s":5,"n":50,"e":41,"h":[]}"#,
        r#"{"v":1,"s":60,"n":1,"e":0,"h":[]}"#,
        r#"{"v":1,"s":5,"n":1,"e":0,"h":[[3,5]]}"#,
        r#"{"v":1,"s":5,"n":1,"e":0,"h":[],"r":{"v":1,"s":5,"n":1,"e":0,"h":[]}}"#,
    ] {
        assert_eq!(reason(&with_recent(bad)), Some("implausible"), "{bad}");
    }
    assert_eq!(reason(&with_recent("[1]")), Some("malformed"));
}

fn summary() -> impl Strategy<Value = Summary> {
    (
        1u64..=600,
        0u64..1_000_000,
        proptest::collection::vec(
            (0usize..crate::domain::histogram::bucket_count(), 0u64..1000),
            0..20,
        ),
    )
        .prop_flat_map(|(seconds, requests, buckets)| {
            (Just(seconds), Just(requests), 0..=requests, Just(buckets))
        })
        .prop_map(|(seconds, requests, errors, buckets)| {
            let mut s = Summary::empty(seconds);
            s.requests = requests;
            s.errors = errors;
            let mut left = requests;
            for (i, n) in buckets {
                let n = n.min(left);
                s.latency.add(i, n);
                left -= n;
            }
            s
        })
}

proptest! {
    #[test]
    fn decoding_never_panics_on_any_text(raw in ".{0,300}") {
        let _ = decode_summary(&raw);
    }

    #[test]
    fn decoding_never_panics_on_json_shaped_text(
        v in 0u64..4, s in any::<u64>(), n in any::<u64>(), e in any::<u64>(),
        h in proptest::collection::vec((any::<u16>(), any::<u64>()), 0..8),
    ) {
        let raw = serde_json::json!({"v": v, "s": s, "n": n, "e": e, "h": h}).to_string();
        if let Ok(d) = decode_summary(&raw) {
            prop_assert!(d.errors <= d.requests);
            prop_assert!(d.latency.total() <= d.requests);
            prop_assert!(d.requests <= MAX_PLAUSIBLE_REQUESTS);
        }
    }

    #[test]
    fn published_summaries_round_trip(s in summary()) {
        let raw = serde_json::to_string(&s).unwrap();
        prop_assert_eq!(decode_summary(&raw).unwrap(), s);
    }

    #[test]
    fn merging_adds_up_in_any_order(a in summary(), b in summary(), c in summary()) {
        let mut ab_c = a.clone();
        ab_c.merge(&b);
        ab_c.merge(&c);
        let mut c_ba = c.clone();
        c_ba.merge(&b);
        c_ba.merge(&a);
        prop_assert_eq!(&ab_c, &c_ba);
        prop_assert_eq!(ab_c.requests, a.requests + b.requests + c.requests);
        prop_assert_eq!(ab_c.errors, a.errors + b.errors + c.errors);
        prop_assert_eq!(ab_c.latency.total(), a.latency.total() + b.latency.total() + c.latency.total());
        prop_assert_eq!(ab_c.seconds, a.seconds.max(b.seconds).max(c.seconds));
        prop_assert!(ab_c.error_ratio() <= 1.0);
    }
}
