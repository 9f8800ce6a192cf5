//! Splitting a YAML stream into documents, and routing each to what changes it.

use std::collections::BTreeMap;

use super::node::Node;
use super::sidecar::{self, Injected, Settings};
use super::InjectError;

/// One document of the input stream, with its original text.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The `---` line that opened it, if any (kept as written).
    pub marker: Option<String>,
    /// The document's text after the marker.
    pub body: String,
    /// 1-based line of its first line.
    pub line: usize,
}

impl Document {
    /// The comment and blank lines before the document's content.
    fn leading_comments(&self) -> String {
        self.body
            .split_inclusive('\n')
            .take_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
            .collect()
    }

    /// True when the body holds nothing but blank lines and comments.
    fn is_empty(&self) -> bool {
        self.body
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    }
}

/// Splits a stream on document markers. A `---` or `...` at the start of a line
/// always ends a document in YAML, even inside a block scalar, so lines are enough.
pub fn split(input: &str) -> Vec<Document> {
    let mut docs = vec![Document {
        marker: None,
        body: String::new(),
        line: 1,
    }];
    for (i, line) in input.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_marker = |m: &str| {
            bare.strip_prefix(m)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
        };
        if is_marker("---") {
            docs.push(Document {
                marker: Some(line.to_string()),
                body: String::new(),
                line: i + 1,
            });
        } else if is_marker("...") {
            // The end marker belongs to its document; the next one starts after it.
            docs.last_mut().expect("never empty").body.push_str(line);
            docs.push(Document {
                marker: None,
                body: String::new(),
                line: i + 2,
            });
        } else {
            docs.last_mut().expect("never empty").body.push_str(line);
        }
    }
    docs
}

/// `Kind/name` of an object, for messages.
fn describe(obj: &Node) -> String {
    let kind = obj.get("kind").and_then(Node::as_str).unwrap_or("?");
    let name = obj
        .at(&["metadata", "name"])
        .and_then(Node::as_str)
        .unwrap_or("<no name>");
    format!("{kind}/{name}")
}

/// Where the pod template of a supported workload kind lives.
fn pod_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment" | "StatefulSet" | "DaemonSet" => Some(&["spec", "template"]),
        _ => None,
    }
}

/// Workload kinds that run pods but that the guard does not support.
fn unsupported_workload(kind: &str) -> bool {
    matches!(
        kind,
        "Job" | "CronJob" | "ReplicaSet" | "ReplicationController"
    )
}

enum Rewrite {
    Unchanged,
    Changed,
}

struct Context<'a> {
    settings: &'a Settings,
    /// Pod labels and proxy port of every workload injected in this run.
    injected: Vec<Injected>,
}

fn process_object(obj: &mut Node, cx: &mut Context) -> Result<Rewrite, String> {
    let Some(kind) = obj.get("kind").and_then(Node::as_str).map(str::to_string) else {
        return Err("not a Kubernetes object: no `kind`".into());
    };
    if obj.get("apiVersion").and_then(Node::as_str).is_none() {
        return Err("not a Kubernetes object: no `apiVersion`".into());
    }
    if kind.ends_with("List") {
        if let Some(items) = obj.get_mut("items").and_then(Node::as_seq_mut) {
            let mut changed = false;
            for (i, item) in items.iter_mut().enumerate() {
                let what = describe(item);
                match process_object(item, cx) {
                    Ok(Rewrite::Changed) => changed = true,
                    Ok(Rewrite::Unchanged) => {}
                    Err(e) => return Err(format!("item {} ({what}): {e}", i + 1)),
                }
            }
            return Ok(if changed {
                Rewrite::Changed
            } else {
                Rewrite::Unchanged
            });
        }
    }
    let opted_out = sidecar::annotation(obj, "inject").is_some_and(|v| v == "false");
    if opted_out {
        return Ok(Rewrite::Unchanged);
    }
    if unsupported_workload(&kind) {
        return Err(format!(
            "{kind} is not supported (Deployment, StatefulSet, DaemonSet, Pod and Lists of them are); \
             leave it out of the input or annotate it `canary-guard.io/inject: \"false\"`"
        ));
    }
    let Some(path) = pod_path(&kind) else {
        return Ok(Rewrite::Unchanged);
    };
    let settings = cx.settings.for_workload(obj)?;
    let name = obj
        .at(&["metadata", "name"])
        .and_then(Node::as_str)
        .unwrap_or_default()
        .to_string();
    let pod = obj
        .at_mut(path)
        .filter(|p| matches!(p, Node::Map(_)))
        .ok_or_else(|| format!("no pod template at `{}`", path.join(".")))?;
    match sidecar::inject_pod(pod, &settings, &kind, &name)? {
        Some(injected) => {
            cx.injected.push(injected);
            Ok(Rewrite::Changed)
        }
        None => Ok(Rewrite::Unchanged),
    }
}

/// Points a Service's ports that reach an injected app at the guard's port name.
fn rewire_service(svc: &mut Node, injected: &[Injected]) -> Result<Rewrite, String> {
    let selector: BTreeMap<&str, &str> = svc
        .at(&["spec", "selector"])
        .and_then(Node::as_map)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    if selector.is_empty() {
        return Ok(Rewrite::Unchanged);
    }
    let Some(target) = injected.iter().find(|w| {
        selector
            .iter()
            .all(|(k, v)| w.pod_labels.get(*k).map(String::as_str) == Some(*v))
    }) else {
        return Ok(Rewrite::Unchanged);
    };
    let Some(app) = &target.app_port else {
        return Ok(Rewrite::Unchanged);
    };
    let mut outcome = Rewrite::Unchanged;
    let ports = svc
        .at_mut(&["spec", "ports"])
        .and_then(Node::as_seq_mut)
        .map(|p| p.as_mut_slice())
        .unwrap_or_default();
    for port in ports {
        let reaches_app = match port.get("targetPort").or_else(|| port.get("port")) {
            Some(Node::Num(n)) => n.as_u64() == Some(u64::from(app.number)),
            _ => false,
        };
        if !reaches_app {
            continue;
        }
        let Some(name) = &app.name else {
            return Err(format!(
                "a port targets {} of {}, which has no name. Name that container port \
                 (e.g. `name: http`) in both the stable and the canary workloads, then \
                 run again: the Service then targets the name, which reaches the app on \
                 stable pods and the guard on canary pods",
                app.number, target.workload
            ));
        };
        port.set("targetPort", Node::Str(name.clone()));
        outcome = Rewrite::Changed;
    }
    Ok(outcome)
}

/// Injects the guard into every supported workload of a YAML stream; returns the new
/// stream. Unchanged documents are copied byte for byte.
pub fn inject(input: &str, settings: &Settings) -> Result<String, InjectError> {
    let docs = split(input);
    let mut parsed: Vec<Option<Node>> = Vec::with_capacity(docs.len());
    let mut changed = vec![false; docs.len()];
    let mut cx = Context {
        settings,
        injected: Vec::new(),
    };
    for (i, doc) in docs.iter().enumerate() {
        let fail = |what: String, message: String| InjectError {
            index: i + 1,
            line: doc.line,
            what,
            message,
        };
        if doc.is_empty() {
            parsed.push(None);
            continue;
        }
        let mut obj: Node = serde_saphyr::from_str(&doc.body)
            .map_err(|e| fail(String::new(), format!("invalid YAML: {e}")))?;
        if matches!(obj, Node::Null) {
            parsed.push(None);
            continue;
        }
        let what = format!(", {}", describe(&obj));
        if !matches!(obj, Node::Map(_)) {
            return Err(fail(
                String::new(),
                "not a Kubernetes object: not a mapping".into(),
            ));
        }
        changed[i] = matches!(
            process_object(&mut obj, &mut cx).map_err(|m| fail(what, m))?,
            Rewrite::Changed
        );
        parsed.push(Some(obj));
    }
    if settings.rewire_service {
        for (i, obj) in parsed.iter_mut().enumerate() {
            let Some(obj) = obj else { continue };
            if obj.get("kind").and_then(Node::as_str) != Some("Service") {
                continue;
            }
            let outcome = rewire_service(obj, &cx.injected).map_err(|message| InjectError {
                index: i + 1,
                line: docs[i].line,
                what: format!(", {}", describe(obj)),
                message,
            })?;
            changed[i] |= matches!(outcome, Rewrite::Changed);
        }
    }
    let mut out = String::with_capacity(input.len() + 2048);
    for (i, ((doc, obj), changed)) in docs.iter().zip(&parsed).zip(changed).enumerate() {
        if let Some(marker) = &doc.marker {
            out.push_str(marker);
        }
        match obj {
            Some(obj) if changed => {
                let text = serde_saphyr::to_string(obj).map_err(|e| InjectError {
                    index: i + 1,
                    line: doc.line,
                    what: format!(", {}", describe(obj)),
                    message: format!("cannot write YAML: {e}"),
                })?;
                // Comments above the object survive; those inside it do not.
                out.push_str(&doc.leading_comments());
                out.push_str(&text);
                if !text.ends_with('\n') {
                    out.push('\n');
                }
            }
            _ => out.push_str(&doc.body),
        }
    }
    Ok(out)
}
