//! Runs one request sequence against the embedded API and a real kube-apiserver and
//! compares what they answer, step by step.
//!
//! Design rule: both sides go through the same kube client with the exact same bytes, and
//! only what a server assigns on its own (uids, times, managedFields, resourceVersion
//! values) is normalized away; whether a resourceVersion changed is kept, by naming each
//! distinct value in the order it first appears (`rv1`, `rv2`, …).
#![allow(dead_code)]

use std::collections::HashMap;

use canary_guard_test_api::embedded_api::{EmbeddedApi, RunningApi};
use http::Method;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::realk8s::RealApi;

/// One HTTP request; `{ns}` and `{rv:NAME}` in its path and body are filled in per side.
#[derive(Clone)]
pub struct Request {
    method: Method,
    path: String,
    content_type: &'static str,
    body: Option<String>,
}

/// One step of a sequence.
pub enum Step {
    /// A request; with `save_rv`, the resourceVersion it answers is kept under that name;
    /// with `same_message` false, a failure's message is not compared; with
    /// `generate_name`, the random suffix of names generated from it is not compared.
    Send {
        name: &'static str,
        request: Request,
        save_rv: Option<&'static str>,
        same_message: bool,
        generate_name: Option<&'static str>,
    },
    /// Two requests sent at once (two writers racing); compared as a sorted pair.
    Race {
        name: &'static str,
        requests: [Request; 2],
    },
    /// A watch, read to its end (give it a short `timeoutSeconds`); its events are compared
    /// in order, each object normalized as a single answer is.
    Watch {
        name: &'static str,
        request: Request,
    },
}

fn request(
    method: Method,
    path: &str,
    content_type: &'static str,
    body: Option<String>,
) -> Request {
    Request {
        method,
        path: path.to_owned(),
        content_type,
        body,
    }
}

fn send(name: &'static str, request: Request) -> Step {
    Step::Send {
        name,
        request,
        save_rv: None,
        same_message: true,
        generate_name: None,
    }
}

/// GET `path`.
pub fn get(name: &'static str, path: &str) -> Step {
    send(name, request(Method::GET, path, "", None))
}

/// POST `body` (JSON text, sent as is).
pub fn post(name: &'static str, path: &str, body: &str) -> Step {
    send(name, post_request(path, body))
}

/// The request of [`post`].
pub fn post_request(path: &str, body: &str) -> Request {
    request(
        Method::POST,
        path,
        "application/json",
        Some(body.to_owned()),
    )
}

/// PUT `body`.
pub fn put(name: &'static str, path: &str, body: &str) -> Step {
    send(name, put_request(path, body))
}

/// The request of [`put`].
pub fn put_request(path: &str, body: &str) -> Request {
    request(Method::PUT, path, "application/json", Some(body.to_owned()))
}

/// PATCH with `content_type` (the patch type) and `body`.
pub fn patch(name: &'static str, path: &str, content_type: &'static str, body: &str) -> Step {
    send(
        name,
        request(Method::PATCH, path, content_type, Some(body.to_owned())),
    )
}

/// A JSON patch (RFC 6902), sent byte for byte as written.
pub fn json_patch(name: &'static str, path: &str, body: &str) -> Step {
    patch(name, path, "application/json-patch+json", body)
}

/// A JSON merge patch.
pub fn merge_patch(name: &'static str, path: &str, body: &str) -> Step {
    patch(name, path, "application/merge-patch+json", body)
}

/// DELETE `path`.
pub fn delete(name: &'static str, path: &str) -> Step {
    send(name, request(Method::DELETE, path, "", None))
}

/// GET `path`, a watch that ends by itself (`timeoutSeconds`), and compare its events.
pub fn watch(name: &'static str, path: &str) -> Step {
    Step::Watch {
        name,
        request: request(Method::GET, path, "", None),
    }
}

impl Step {
    /// Keeps the resourceVersion this step answers as `{rv:NAME}` for later steps.
    pub fn save_rv(mut self, as_name: &'static str) -> Step {
        if let Step::Send { save_rv, .. } = &mut self {
            *save_rv = Some(as_name);
        }
        self
    }

    /// Names generated from `prefix` compare equal whatever their random suffix.
    pub fn generating(mut self, prefix: &'static str) -> Step {
        if let Step::Send { generate_name, .. } = &mut self {
            *generate_name = Some(prefix);
        }
        self
    }

    /// Compares a failure's code, reason and details but not its message: for differences
    /// in wording this test keeps (each one says why where it is used).
    pub fn ignoring_message(mut self) -> Step {
        if let Step::Send { same_message, .. } = &mut self {
            *same_message = false;
        }
        self
    }

    fn name(&self) -> &'static str {
        match self {
            Step::Send { name, .. } | Step::Race { name, .. } | Step::Watch { name, .. } => name,
        }
    }
}

/// One server under test, with what the sequence has seen of it so far.
struct Side {
    label: &'static str,
    client: kube::Client,
    namespace: String,
    saved: HashMap<&'static str, String>,
    /// Distinct object resourceVersions, in the order they first appeared.
    seen: Vec<String>,
}

impl Side {
    fn fill(&self, text: &str) -> String {
        let mut out = text.replace("{ns}", &self.namespace);
        for (name, rv) in &self.saved {
            out = out.replace(&format!("{{rv:{name}}}"), rv);
        }
        out
    }

    async fn send(&self, r: &Request) -> (u16, Value) {
        let (code, bytes) = self.send_raw(r).await;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (code, body)
    }

    /// The status code and the whole body, read to its end.
    async fn send_raw(&self, r: &Request) -> (u16, bytes::Bytes) {
        let mut builder = http::Request::builder()
            .method(r.method.clone())
            .uri(self.fill(&r.path));
        if !r.content_type.is_empty() {
            builder = builder.header(http::header::CONTENT_TYPE, r.content_type);
        }
        let body = r.body.as_deref().map(|b| self.fill(b)).unwrap_or_default();
        let req = builder
            .body(kube::client::Body::from(body.into_bytes()))
            .unwrap();
        let resp = self
            .client
            .send(req)
            .await
            .unwrap_or_else(|e| panic!("{}: {} {}: {e}", self.label, r.method, r.path));
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (code, bytes)
    }

    /// Runs `steps` in order; one normalized answer per step.
    async fn run(&mut self, steps: &[Step]) -> Vec<Value> {
        let mut answers = Vec::new();
        for step in steps {
            let answer = match step {
                Step::Send {
                    request,
                    save_rv,
                    same_message,
                    generate_name,
                    ..
                } => {
                    let (code, mut body) = self.send(request).await;
                    if let Some(prefix) = generate_name {
                        body = mask_suffixes(&body, prefix);
                    }
                    if let (Some(name), Some(rv)) =
                        (save_rv, body["metadata"]["resourceVersion"].as_str())
                    {
                        self.saved.insert(name, rv.to_owned());
                    }
                    if !same_message && body["kind"] == "Status" {
                        body["message"] = "(not compared)".into();
                    }
                    json!({"code": code, "body": self.normalize(body)})
                }
                Step::Race { requests, .. } => {
                    let (a, b) = tokio::join!(self.send(&requests[0]), self.send(&requests[1]));
                    let mut pair = [a, b].map(
                        |(code, body)| json!({"code": code, "reason": body["reason"].clone()}),
                    );
                    pair.sort_by_key(|a| a.to_string());
                    json!(pair)
                }
                Step::Watch { request, .. } => {
                    let (code, bytes) = self.send_raw(request).await;
                    let events: Vec<Value> = serde_json::Deserializer::from_slice(&bytes)
                        .into_iter::<Value>()
                        .map(|event| {
                            let mut event = event.unwrap_or_else(|e| {
                                panic!("{}: a watch event is not JSON: {e}", self.label)
                            });
                            let object = event["object"].take();
                            event["object"] = self.normalize(object);
                            event
                        })
                        .collect();
                    json!({"code": code, "events": events})
                }
            };
            answers.push(answer);
        }
        answers
    }

    fn rv_symbol(&mut self, rv: &str) -> String {
        let index = match self.seen.iter().position(|s| s == rv) {
            Some(i) => i,
            None => {
                self.seen.push(rv.to_owned());
                self.seen.len() - 1
            }
        };
        format!("rv{}", index + 1)
    }

    fn normalize(&mut self, mut body: Value) -> Value {
        if body["kind"] == "Status" {
            if let Some(d) = body.get_mut("details").and_then(Value::as_object_mut) {
                d.remove("uid");
            }
            return body;
        }
        if let Some(items) = body.get_mut("items").and_then(Value::as_array_mut) {
            let items: Vec<Value> = items.drain(..).map(|i| self.normalize(i)).collect();
            // A list's resourceVersion is the whole server's: other writers move it.
            return json!({"kind": body["kind"], "apiVersion": body["apiVersion"], "items": items});
        }
        if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in ["uid", "creationTimestamp", "managedFields", "selfLink"] {
                meta.remove(field);
            }
            let rv = meta
                .remove("resourceVersion")
                .and_then(|v| v.as_str().map(str::to_owned));
            if let Some(rv) = rv {
                let symbol = self.rv_symbol(&rv);
                body["metadata"]["resourceVersion"] = symbol.into();
            }
        }
        body
    }
}

/// `body` with the five characters after each `prefix` replaced by `*****`.
fn mask_suffixes(body: &Value, prefix: &str) -> Value {
    let text = body.to_string();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find(prefix) {
        let end = at + prefix.len();
        out.push_str(&rest[..end]);
        rest = &rest[end..];
        if rest.len() >= 5 && rest.is_char_boundary(5) {
            out.push_str("*****");
            rest = &rest[5..];
        }
    }
    out.push_str(rest);
    serde_json::from_str(&out).unwrap()
}

/// Runs `steps` on a fresh embedded API and in a new namespace of `real`, and fails with
/// every step whose answers differ, named, with both answers.
pub async fn assert_same_answers(real: &RealApi, prefix: &str, steps: &[Step]) {
    let namespace = real.namespace(prefix).await;
    let running: RunningApi = EmbeddedApi::new()
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut embedded = Side {
        label: "embedded",
        client: running.client(&namespace, "differential-test").unwrap(),
        namespace: namespace.clone(),
        saved: HashMap::new(),
        seen: Vec::new(),
    };
    let mut real_side = Side {
        label: "real",
        client: real.client(&namespace).await,
        namespace,
        saved: HashMap::new(),
        seen: Vec::new(),
    };
    let ours = embedded.run(steps).await;
    let theirs = real_side.run(steps).await;
    let mut report = String::new();
    for ((step, e), r) in steps.iter().zip(&ours).zip(&theirs) {
        if e != r {
            report.push_str(&format!(
                "\n--- step {:?}\n  embedded: {e}\n  real:     {r}\n",
                step.name()
            ));
        }
    }
    assert!(
        report.is_empty(),
        "the embedded API answered differently from the real one:{report}"
    );
}
