//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902) as kube-apiserver applies them.

use serde_json::{Map, Value};

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

/// Applies an RFC 6902 JSON patch. A malformed document is a 400; an operation that cannot
/// apply (failed `test`, missing path, index out of range) is a 422 `Invalid` without details,
/// as the real server answers.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), Status> {
    let ops = patch.as_array().ok_or_else(|| {
        Status::bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    })?;
    for op in ops {
        apply_op(target, op).map_err(Status::invalid_bare)?;
    }
    Ok(())
}

fn field<'a>(op: &'a Value, name: &str) -> Result<&'a str, String> {
    op.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("operation missing \"{name}\" string"))
}

fn apply_op(doc: &mut Value, op: &Value) -> Result<(), String> {
    let kind = field(op, "op")?;
    let path = field(op, "path")?;
    let value = || {
        op.get("value")
            .cloned()
            .ok_or_else(|| format!("{kind} operation missing value"))
    };
    match kind {
        "add" => add(doc, path, value()?),
        "remove" => remove(doc, path).map(drop),
        "replace" => replace(doc, path, value()?),
        "move" => {
            let from = field(op, "from")?;
            if path != from && path.starts_with(&format!("{from}/")) {
                return Err(format!(
                    "move operation: cannot move {from} into its own child {path}"
                ));
            }
            let v = remove(doc, from)?;
            add(doc, path, v)
        }
        "copy" => {
            let from = field(op, "from")?;
            let v = get(doc, from)?.clone();
            add(doc, path, v)
        }
        "test" => {
            let expected = value()?;
            match get(doc, path) {
                Ok(actual) if json_equal(actual, &expected) => Ok(()),
                // A missing location tests equal to `null`, as the Go implementation does.
                Err(_) if expected.is_null() => Ok(()),
                _ => Err(format!("testing value {path} failed: test failed")),
            }
        }
        other => Err(format!("Unexpected kind: {other}")),
    }
}

/// Splits a JSON pointer into unescaped tokens.
fn tokens(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn index(token: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    let bad = || format!("Unable to access invalid index: {token}");
    if token.len() > 1 && token.starts_with('0') {
        return Err(bad());
    }
    let i: usize = token.parse().map_err(|_| bad())?;
    if i < len || (allow_end && i == len) {
        Ok(i)
    } else {
        Err(format!("Unable to access invalid index: {i}"))
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

/// Equality as the Go decoder sees it: numbers compare by value (`30` equals `30.0`).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jp(doc: Value, patch: Value) -> Result<Value, Status> {
        let mut d = doc;
        json_patch(&mut d, &patch).map(|()| d)
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
            json!([{"op":"add","path":"/l/01","value":0}]),
            json!([{"op":"frobnicate","path":"/w"}]),
        ] {
            let err = jp(doc.clone(), patch.clone()).unwrap_err();
            assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{patch}");
            assert!(err.details.is_none());
        }
        assert!(jp(doc.clone(), json!([{"op":"test","path":"/w","value":30.0}])).is_ok());
        assert_eq!(jp(doc, json!({"op":"add"})).unwrap_err().code, 400);
    }
}
