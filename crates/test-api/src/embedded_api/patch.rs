//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902) as kube-apiserver applies them.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::go_json;
use super::status::Status;

/// Applies an RFC 7386 merge patch: objects merge recursively, `null` deletes, anything
/// else (arrays included) replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// One JSON patch operation as the Go library reads it: member names to raw JSON, so a
/// `test` can compare the bytes that were sent.
type Operation<'a> = BTreeMap<String, &'a RawValue>;

/// Applies an RFC 6902 JSON patch given as the text that was sent. A malformed document is
/// a 400; an operation that cannot apply (failed `test`, missing path, index out of range)
/// is the real server's 422 `Invalid` with an empty `details` and a fixed message.
pub fn json_patch(target: &mut Value, patch: &str) -> Result<(), Status> {
    let ops: Vec<Operation> = serde_json::from_str(patch).map_err(|_| {
        Status::bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    })?;
    for op in &ops {
        apply_op(target, op).map_err(|why| {
            // The real server says no more than this either; the reason is for debugging.
            tracing::debug!(%why, "embedded API: JSON patch operation failed");
            Status::patch_failed()
        })?;
    }
    Ok(())
}

fn field(op: &Operation, name: &str) -> Result<String, String> {
    op.get(name)
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .ok_or_else(|| format!("operation missing \"{name}\" string"))
}

/// The `value` member; `null` and absent are the same to the Go library.
fn raw_value<'a>(op: &Operation<'a>) -> Option<&'a RawValue> {
    op.get("value").copied().filter(|raw| raw.get() != "null")
}

fn value(op: &Operation) -> Result<Value, String> {
    raw_value(op).map_or(Ok(Value::Null), |raw| {
        serde_json::from_str(raw.get()).map_err(|e| e.to_string())
    })
}

fn apply_op(doc: &mut Value, op: &Operation) -> Result<(), String> {
    let kind = field(op, "op")?;
    let path = field(op, "path")?;
    match kind.as_str() {
        "add" => add(doc, &path, value(op)?),
        "remove" => remove(doc, &path).map(drop),
        "replace" => replace(doc, &path, value(op)?),
        "move" => {
            let from = field(op, "from")?;
            if path != from && path.starts_with(&format!("{from}/")) {
                return Err(format!(
                    "move operation: cannot move {from} into its own child {path}"
                ));
            }
            let v = remove(doc, &from)?;
            add(doc, &path, v)
        }
        "copy" => {
            let from = field(op, "from")?;
            let v = get(doc, &from)?.clone();
            add(doc, &path, v)
        }
        "test" => test(doc, &path, raw_value(op)),
        other => Err(format!("Unexpected kind: {other}")),
    }
}

/// `test`: a missing object key equals an absent or `null` value; a missing parent or an
/// index out of range fails; anything else compares as Go's encoder wrote it.
fn test(doc: &Value, path: &str, expected: Option<&RawValue>) -> Result<(), String> {
    let (parent_path, last) = path.rsplit_once('/').unwrap_or(("", path));
    let container = get(doc, parent_path)?;
    let last = unescape(last);
    let actual = match container {
        Value::Object(m) => m.get(&last),
        Value::Array(a) => Some(&a[index(&last, a.len(), false)?]),
        _ => return Err(format!("doc is missing path: {path}")),
    };
    let equal = match (actual, expected) {
        (None, None) => true,
        (Some(actual), Some(expected)) => go_json::test_equal(actual, expected),
        _ => false,
    };
    equal
        .then_some(())
        .ok_or_else(|| format!("testing value {path} failed"))
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Splits a JSON pointer into unescaped tokens.
fn tokens(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok(rest.split('/').map(unescape).collect())
}

/// An array index as the Go library reads it: `strconv.Atoi` (so `01` and `+1` are 1) and
/// negative indices counted from the end; `len` is the last valid position plus one when
/// `allow_end` (insertion), the length otherwise.
fn index(token: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    let bad = || format!("Unable to access invalid index: {token}");
    let i: i64 = token.parse().map_err(|_| bad())?;
    let size = i64::try_from(len).map_err(|_| bad())? + i64::from(allow_end);
    let i = if i < 0 { i + size } else { i };
    if (0..size).contains(&i) {
        usize::try_from(i).map_err(|_| bad())
    } else {
        Err(bad())
    }
}

fn get<'a>(doc: &'a Value, path: &str) -> Result<&'a Value, String> {
    let mut cur = doc;
    for t in tokens(path)? {
        cur = match cur {
            Value::Object(m) => m.get(&t),
            Value::Array(a) => a.get(index(&t, a.len(), false)?),
            _ => None,
        }
        .ok_or_else(|| format!("doc is missing path: {path}: missing value"))?;
    }
    Ok(cur)
}

/// The container holding the last token of `path`, and that token.
fn parent<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), String> {
    let mut toks = tokens(path)?;
    let last = toks
        .pop()
        .ok_or_else(|| "cannot operate on the whole document".to_owned())?;
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(&t),
            Value::Array(a) => {
                let i = index(&t, a.len(), false)?;
                a.get_mut(i)
            }
            _ => None,
        }
        .ok_or_else(|| format!("doc is missing path: {path}: missing value"))?;
    }
    Ok((cur, last))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (container, last) = parent(doc, path)?;
    match container {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                index(&last, a.len(), true)?
            };
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!(
            "add operation does not apply: doc is missing path: {path}"
        )),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (container, last) = parent(doc, path)?;
    match container {
        Value::Object(m) => m
            .remove(&last)
            .ok_or_else(|| format!("remove operation does not apply: doc is missing key: {path}")),
        Value::Array(a) => {
            let i = index(&last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(format!(
            "remove operation does not apply: doc is missing path: {path}"
        )),
    }
}

/// `replace`, with the real server's quirk: a missing object key is added, not refused.
fn replace(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (container, last) = parent(doc, path)?;
    match container {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            let i = index(&last, a.len(), false)?;
            a[i] = value;
            Ok(())
        }
        _ => Err(format!(
            "replace operation does not apply: doc is missing path: {path}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jp(doc: Value, patch: Value) -> Result<Value, Status> {
        let mut d = doc;
        json_patch(&mut d, &patch.to_string()).map(|()| d)
    }

    #[test]
    fn merge_patch_rfc7386_examples() {
        let mut t = json!({"a":"b","c":{"d":"e","f":"g"},"l":[1,2]});
        merge_patch(&mut t, &json!({"a":"z","c":{"f":null},"l":[3],"n":{"x":1}}));
        assert_eq!(t, json!({"a":"z","c":{"d":"e"},"l":[3],"n":{"x":1}}));
    }

    #[test]
    fn json_patch_operations() {
        let doc =
            json!({"spec":{"http":[{"route":[{"weight":90},{"weight":10}]}]},"a/b":1,"m~n":2});
        let out = jp(
            doc,
            json!([
                {"op":"test","path":"/spec/http/0/route/1/weight","value":10},
                {"op":"replace","path":"/spec/http/0/route/1/weight","value":0},
                {"op":"replace","path":"/spec/http/0/route/0/weight","value":100},
                {"op":"add","path":"/spec/http/0/route/-","value":{"weight":5}},
                {"op":"copy","from":"/a~1b","path":"/copied"},
                {"op":"move","from":"/m~0n","path":"/moved"},
                {"op":"remove","path":"/a~1b"},
                {"op":"replace","path":"/absent","value":"added"}
            ]),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"spec":{"http":[{"route":[{"weight":100},{"weight":0},{"weight":5}]}]},
                "copied":1,"moved":2,"absent":"added"})
        );
    }

    #[test]
    fn failures_are_422_without_details() {
        let doc = json!({"w":30,"l":[1]});
        for patch in [
            json!([{"op":"test","path":"/w","value":"30"}]),
            json!([{"op":"test","path":"/w","value":31}]),
            json!([{"op":"replace","path":"/l/1","value":0}]),
            json!([{"op":"remove","path":"/nope"}]),
            json!([{"op":"add","path":"/x/y","value":0}]),
            json!([{"op":"add","path":"/l/2","value":0}]),
            json!([{"op":"test","path":"/w","value":30.0}]),
            json!([{"op":"test","path":"/l/1","value":null}]),
            json!([{"op":"test","path":"/nope/deeper","value":null}]),
            json!([{"op":"frobnicate","path":"/w"}]),
        ] {
            assert_eq!(
                jp(doc.clone(), patch.clone()),
                Err(Status::patch_failed()),
                "{patch}"
            );
        }
        assert_eq!(Status::patch_failed().to_json()["details"], json!({}));
        assert!(jp(
            doc.clone(),
            json!([{"op":"test","path":"/nope","value":null}])
        )
        .is_ok());
        assert_eq!(jp(doc, json!({"op":"add"})).unwrap_err().code, 400);
    }

    #[test]
    fn indices_are_read_as_go_reads_them() {
        let doc = json!({"l":["a","b"]});
        let out = jp(
            doc.clone(),
            json!([
                {"op":"test","path":"/l/01","value":"b"},
                {"op":"test","path":"/l/+1","value":"b"},
                {"op":"test","path":"/l/-1","value":"b"},
                {"op":"add","path":"/l/-1","value":"end"},
                {"op":"remove","path":"/l/-3"}
            ]),
        )
        .unwrap();
        assert_eq!(out, json!({"l":["b","end"]}));
        assert!(jp(doc, json!([{"op":"test","path":"/l/-3","value":"a"}])).is_err());
    }

    #[test]
    fn test_compares_the_bytes_sent() {
        let mut doc = json!({"r":"x > y"});
        assert!(json_patch(
            &mut doc,
            r#"[{"op":"test","path":"/r","value":"x \u003e y"}]"#
        )
        .is_ok());
        assert!(json_patch(&mut doc, r#"[{"op":"test","path":"/r","value":"x > y"}]"#).is_err());
    }
}
