//! How the real server's Go encoder writes JSON leaves, and the JSON patch `test` that
//! compares them with the raw bytes of a patch (evanphx/json-patch v4, as kube-apiserver
//! 1.24 vendors it).
//!
//! Design rule: never compare decoded values. Objects and arrays compare key by key and
//! item by item; a leaf is equal only if the patch's bytes are exactly what Go writes for
//! the stored leaf, so `"a > b"` (Go writes `"a \u003e b"`), `"30"`, `30.0` and `3e1` all
//! differ from a stored `30`, as they do on the real server.

use std::collections::HashMap;
use std::fmt::Write;

use serde_json::value::RawValue;
use serde_json::Value;

/// True if the patch value `raw` tests equal to the stored `value`.
pub fn test_equal(value: &Value, raw: &RawValue) -> bool {
    match value {
        Value::Object(stored) => {
            let Ok(given) = serde_json::from_str::<HashMap<String, &RawValue>>(raw.get()) else {
                return false;
            };
            given.len() == stored.len()
                && stored
                    .iter()
                    .all(|(k, v)| given.get(k).is_some_and(|r| test_equal(v, r)))
        }
        Value::Array(stored) => {
            let Ok(given) = serde_json::from_str::<Vec<&RawValue>>(raw.get()) else {
                return false;
            };
            given.len() == stored.len() && stored.iter().zip(given).all(|(v, r)| test_equal(v, r))
        }
        leaf => encode_leaf(leaf) == raw.get(),
    }
}

/// A string, number, boolean or null as Go's `encoding/json` writes it (HTML-safe).
pub fn encode_leaf(value: &Value) -> String {
    match value {
        Value::String(s) => encode_string(s),
        Value::Number(n) => match n.as_f64() {
            Some(f) if !(n.is_i64() || n.is_u64()) => encode_float(f),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn encode_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Control characters (Go 1.18 has no short form for \b and \f), the HTML
            // characters and the JavaScript line separators.
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go writes floats in the shortest form that round-trips, without an exponent between
/// 1e-6 and 1e21 (so a stored `30.0` is `30`), else as `1e+21` / `1e-7`.
fn encode_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
            _ => s,
        }
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_go_escapes_them() {
        assert_eq!(
            encode_leaf(&json!("a > b & <c> \"q\" \\ \n\u{8}\u{1f}")),
            r#""a \u003e b \u0026 \u003cc\u003e \"q\" \\ \n\u0008\u001f""#
        );
        assert_eq!(
            encode_leaf(&json!("a\u{2028}b\u{2029}")),
            r#""a\u2028b\u2029""#
        );
        assert_eq!(encode_leaf(&json!("café ✓\u{7f}")), "\"café ✓\u{7f}\"");
    }

    #[test]
    fn numbers_are_written_as_go_writes_them() {
        assert_eq!(encode_leaf(&json!(30)), "30");
        assert_eq!(encode_leaf(&json!(-7)), "-7");
        assert_eq!(encode_leaf(&json!(30.0)), "30");
        assert_eq!(encode_leaf(&json!(0.31)), "0.31");
        assert_eq!(encode_leaf(&json!(1e21)), "1e+21");
        assert_eq!(encode_leaf(&json!(1e-7)), "1e-7");
        assert_eq!(encode_leaf(&json!(true)), "true");
        assert_eq!(encode_leaf(&Value::Null), "null");
    }

    #[test]
    fn leaves_compare_by_bytes_and_containers_by_structure() {
        let stored = json!({"w": 30, "r": "x > y", "l": ["a", 1]});
        assert!(test_equal(&stored["w"], &raw("30")));
        for differs in ["30.0", "3e1", "\"30\"", "31"] {
            assert!(!test_equal(&stored["w"], &raw(differs)), "{differs}");
        }
        assert!(!test_equal(&stored["r"], &raw(r#""x > y""#)));
        assert!(test_equal(&stored["r"], &raw(r#""x \u003e y""#)));
        assert!(!test_equal(&stored["r"], &raw(r#""x \u003E y""#)));
        assert!(test_equal(
            &stored,
            &raw(r#"{ "l" : ["a", 1], "r":"x \u003e y","w":30 }"#)
        ));
        assert!(!test_equal(&stored, &raw(r#"{"l":["a",1],"w":30}"#)));
        assert!(!test_equal(&stored["l"], &raw(r#"["a"]"#)));
        assert!(!test_equal(&stored["l"], &raw(r#""a""#)));
    }
}
