//! The guard container and the changes it needs in a pod template.

use std::collections::BTreeMap;

use serde_json::json;

use super::node::Node;
use super::ANNOTATION_PREFIX;
use crate::config::Mode;

/// Name of the injected container; its presence marks a pod as injected.
pub const CONTAINER_NAME: &str = "canary-guard";
/// The guard's proxy port (see `run --listen`).
const PROXY_PORT: u16 = 4680;
/// The guard's admin port (see `run --admin-listen`).
const ADMIN_PORT: u16 = 4681;
const ADMIN_PORT_NAME: &str = "cg-admin";
/// Name of the guard's proxy port when the app's port has no name to take over.
const PROXY_PORT_NAME: &str = "cg-proxy";

/// Sidecar settings: the command line's, then a workload's annotations on top.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Guard image.
    pub image: String,
    /// How the guard observes traffic.
    pub mode: Mode,
    /// Guard group (default: the workload's name).
    pub group: Option<String>,
    /// The VirtualService that splits traffic.
    pub virtual_service: Option<String>,
    /// The canary destination's host.
    pub canary_host: Option<String>,
    /// The canary destination's subset.
    pub canary_subset: Option<String>,
    /// The app's port, by number or name (default: the first declared port).
    pub app_port: Option<String>,
    /// `none` or `pause`: what to do to the canary Deployment after a rollback.
    pub on_rollback: Option<String>,
    /// `canary` or `baseline`.
    pub role: Option<String>,
    /// Point Services that reach the app at the guard (proxy mode).
    pub rewire_service: bool,
}

/// An app port the guard stands in front of.
#[derive(Clone, Debug, PartialEq)]
pub struct AppPort {
    /// The app's port number.
    pub number: u16,
    /// The name the guard's proxy port took over from the app, if the app's had one.
    pub name: Option<String>,
}

/// What the Service rewiring needs to know about an injected workload.
#[derive(Clone, Debug)]
pub struct Injected {
    /// `Kind/name`, for messages.
    pub workload: String,
    /// The pod template's labels.
    pub pod_labels: BTreeMap<String, String>,
    /// In proxy mode, the app's port.
    pub app_port: Option<AppPort>,
}

/// The value of `canary-guard.io/<key>` on the object or on its pod template (which wins).
pub fn annotation(obj: &Node, key: &str) -> Option<String> {
    let full = format!("{ANNOTATION_PREFIX}{key}");
    let read = |path: &[&str]| {
        obj.at(path)
            .and_then(|a| a.get(&full))
            .and_then(Node::as_str)
            .map(str::to_string)
    };
    read(&["spec", "template", "metadata", "annotations"])
        .or_else(|| read(&["metadata", "annotations"]))
}

fn is_dns_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl Settings {
    /// These settings with the workload's `canary-guard.io/*` annotations applied,
    /// checked; the error says which setting is missing or wrong.
    pub fn for_workload(&self, obj: &Node) -> Result<Settings, String> {
        let mut s = self.clone();
        let over = |slot: &mut Option<String>, key: &str| {
            if let Some(v) = annotation(obj, key) {
                *slot = Some(v);
            }
        };
        over(&mut s.virtual_service, "virtual-service");
        over(&mut s.canary_host, "canary-host");
        over(&mut s.canary_subset, "canary-subset");
        over(&mut s.app_port, "app-port");
        over(&mut s.on_rollback, "on-rollback");
        let explicit_group = s.group.is_some() || annotation(obj, "group").is_some();
        over(&mut s.group, "group");
        over(&mut s.role, "role");
        if let Some(image) = annotation(obj, "image") {
            s.image = image;
        }
        if let Some(mode) = annotation(obj, "mode") {
            s.mode = match mode.as_str() {
                "proxy" => Mode::Proxy,
                "envoy" => Mode::Envoy,
                other => {
                    return Err(format!(
                        "{ANNOTATION_PREFIX}mode is `{other}`: use `proxy` or `envoy`"
                    ))
                }
            };
        }
        if s.group.is_none() {
            s.group = obj
                .at(&["metadata", "name"])
                .and_then(Node::as_str)
                .map(str::to_string);
        }
        match &s.group {
            Some(g) if is_dns_label(g, 40) => {}
            Some(g) => {
                return Err(format!(
                    "group `{g}` must be 1-40 lowercase letters, digits or '-' (it becomes part of Lease names): \
                     set --group or {ANNOTATION_PREFIX}group"
                ))
            }
            None => {
                return Err(format!(
                    "no guard group: set --group or {ANNOTATION_PREFIX}group"
                ))
            }
        }
        if s.virtual_service.is_none() {
            return Err(format!(
                "no VirtualService: set --virtual-service or {ANNOTATION_PREFIX}virtual-service"
            ));
        }
        if s.canary_host.is_none() && s.canary_subset.is_none() {
            return Err(format!(
                "no canary destination: set --canary-host and/or --canary-subset \
                 (or {ANNOTATION_PREFIX}canary-host / {ANNOTATION_PREFIX}canary-subset)"
            ));
        }
        match s.role.as_deref() {
            None | Some("canary") => {}
            // The workload's name is the stable Deployment's, not the canary's group.
            Some("baseline") if !explicit_group => {
                return Err(format!(
                    "a baseline guard joins the canary's group: set --group or {ANNOTATION_PREFIX}group \
                     to the canary's"
                ))
            }
            Some("baseline") => {}
            Some(other) => {
                return Err(format!(
                    "{ANNOTATION_PREFIX}role is `{other}`: use `canary` or `baseline`"
                ))
            }
        }
        match s.on_rollback.as_deref() {
            None | Some("none") | Some("pause") => {}
            Some(other) => {
                return Err(format!(
                    "{ANNOTATION_PREFIX}on-rollback is `{other}`: use `none` or `pause`"
                ))
            }
        }
        Ok(s)
    }
}

/// The revision label of the workload's pods, passed to the guard as `POD_TEMPLATE_HASH`.
fn revision_label(kind: &str, pod: &Node) -> Option<&'static str> {
    match kind {
        "Deployment" => Some("pod-template-hash"),
        "StatefulSet" | "DaemonSet" => Some("controller-revision-hash"),
        // A bare Pod, or one its controller is creating (webhook): the label it carries.
        _ => ["pod-template-hash", "controller-revision-hash"]
            .into_iter()
            .find(|l| pod.at(&["metadata", "labels", l]).is_some()),
    }
}

/// Port names are IANA service names: at most 15 characters.
fn app_port_name(taken: &str) -> String {
    let mut name = format!("app-{taken}");
    name.truncate(15);
    name.trim_end_matches('-').to_string()
}

/// Finds the app's port and, when it has a name, hands that name to the guard: the
/// app's port and the probes that use it are renamed, so a Service that targets the
/// name reaches the guard on this pod (and the app on stable pods).
fn take_app_port(spec: &mut Node, wanted: Option<&str>) -> Result<AppPort, String> {
    let containers = spec
        .get_mut("containers")
        .and_then(Node::as_seq_mut)
        .ok_or("the pod has no containers")?;
    let matches = |port: &Node| match wanted {
        None => true,
        Some(w) => match w.parse::<u64>() {
            Ok(n) => port.get("containerPort").and_then(Node::as_u64) == Some(n),
            Err(_) => port.get("name").and_then(Node::as_str) == Some(w),
        },
    };
    let found = containers.iter().enumerate().find_map(|(ci, c)| {
        c.get("ports")
            .and_then(Node::as_seq)
            .and_then(|ports| ports.iter().position(matches))
            .map(|pi| (ci, pi))
    });
    let Some((ci, pi)) = found else {
        return match wanted.map(str::parse::<u16>) {
            Some(Ok(number)) => Ok(AppPort { number, name: None }),
            Some(Err(_)) => Err(format!(
                "no container port named `{}`",
                wanted.unwrap_or_default()
            )),
            None => Err(format!(
                "proxy mode needs the app's port: declare it in the container's `ports`, \
                 or set --app-port or {ANNOTATION_PREFIX}app-port"
            )),
        };
    };
    let container = &mut containers[ci];
    let port = &mut container
        .get_mut("ports")
        .and_then(Node::as_seq_mut)
        .expect("found above")[pi];
    let number = port
        .get("containerPort")
        .and_then(Node::as_u64)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or("the app's port has no valid containerPort")?;
    let Some(name) = port.get("name").and_then(Node::as_str).map(str::to_string) else {
        return Ok(AppPort { number, name: None });
    };
    let renamed = app_port_name(&name);
    port.set("name", Node::Str(renamed.clone()));
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        for handler in ["httpGet", "tcpSocket"] {
            if let Some(p) = container.at_mut(&[probe, handler, "port"]) {
                if p.as_str() == Some(name.as_str()) {
                    *p = Node::Str(renamed.clone());
                }
            }
        }
    }
    Ok(AppPort {
        number,
        name: Some(name),
    })
}

fn env(name: &str, value: &str) -> Node {
    Node::from(json!({ "name": name, "value": value }))
}

fn env_field(name: &str, field: &str) -> Node {
    Node::from(json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": field } } }))
}

fn probe(path: &str, period: u32, failures: u32) -> Node {
    Node::from(json!({
        "httpGet": { "path": path, "port": ADMIN_PORT_NAME },
        "periodSeconds": period,
        "failureThreshold": failures,
    }))
}

fn container(s: &Settings, name: &str, revision: Option<&str>, app: Option<&AppPort>) -> Node {
    let mut envs = vec![env("CANARY_GUARD_MODE", s.mode.as_str())];
    let mut ports = Vec::new();
    if let Some(app) = app {
        envs.push(env(
            "CANARY_GUARD_UPSTREAM",
            &format!("http://127.0.0.1:{}", app.number),
        ));
        let proxy_name = app.name.as_deref().unwrap_or(PROXY_PORT_NAME);
        ports.push(Node::from(
            json!({ "name": proxy_name, "containerPort": PROXY_PORT }),
        ));
    }
    ports.push(Node::from(
        json!({ "name": ADMIN_PORT_NAME, "containerPort": ADMIN_PORT }),
    ));
    let optional = [
        ("CANARY_GUARD_GROUP", s.group.as_deref()),
        ("CANARY_GUARD_VIRTUAL_SERVICE", s.virtual_service.as_deref()),
        ("CANARY_GUARD_CANARY_HOST", s.canary_host.as_deref()),
        ("CANARY_GUARD_CANARY_SUBSET", s.canary_subset.as_deref()),
        (
            "CANARY_GUARD_ROLE",
            s.role.as_deref().filter(|r| *r != "canary"),
        ),
    ];
    envs.extend(optional.iter().filter_map(|(k, v)| v.map(|v| env(k, v))));
    if s.on_rollback.as_deref() == Some("pause") {
        envs.push(env("CANARY_GUARD_DEPLOYMENT", name));
        envs.push(env("CANARY_GUARD_ON_ROLLBACK", "pause"));
    }
    envs.push(env_field("POD_NAME", "metadata.name"));
    envs.push(env_field("POD_NAMESPACE", "metadata.namespace"));
    envs.push(env_field("POD_UID", "metadata.uid"));
    if let Some(label) = revision {
        envs.push(env_field(
            "POD_TEMPLATE_HASH",
            &format!("metadata.labels['{label}']"),
        ));
    }
    Node::Map(vec![
        ("name".into(), CONTAINER_NAME.into()),
        ("image".into(), s.image.as_str().into()),
        // A native sidecar: starts before the app containers, stops after them.
        ("restartPolicy".into(), "Always".into()),
        ("args".into(), Node::Seq(vec!["run".into()])),
        ("env".into(), Node::Seq(envs)),
        ("ports".into(), Node::Seq(ports)),
        // The app starts only once the guard listens.
        ("startupProbe".into(), probe("/readyz", 1, 30)),
        ("readinessProbe".into(), probe("/readyz", 5, 3)),
        ("livenessProbe".into(), probe("/healthz", 10, 3)),
        (
            "resources".into(),
            Node::from(json!({
                "requests": { "cpu": "50m", "memory": "32Mi" },
                "limits": { "cpu": "500m", "memory": "128Mi" },
            })),
        ),
        (
            "securityContext".into(),
            Node::from(json!({
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false,
                "capabilities": { "drop": ["ALL"] },
                "seccompProfile": { "type": "RuntimeDefault" },
            })),
        ),
    ])
}

fn has_guard(spec: &Node) -> bool {
    ["initContainers", "containers"].iter().any(|list| {
        spec.get(list)
            .and_then(Node::as_seq)
            .unwrap_or_default()
            .iter()
            .any(|c| c.get("name").and_then(Node::as_str) == Some(CONTAINER_NAME))
    })
}

fn ports_in_use(spec: &Node) -> Vec<u64> {
    spec.get("containers")
        .and_then(Node::as_seq)
        .unwrap_or_default()
        .iter()
        .flat_map(|c| c.get("ports").and_then(Node::as_seq).unwrap_or_default())
        .filter_map(|p| p.get("containerPort").and_then(Node::as_u64))
        .collect()
}

/// Adds the guard to a pod (or pod template: `metadata` + `spec`) of a `kind/name`
/// workload. `None` when it already has one.
pub fn inject_pod(
    pod: &mut Node,
    s: &Settings,
    kind: &str,
    name: &str,
) -> Result<Option<Injected>, String> {
    let revision = revision_label(kind, pod);
    let spec = pod
        .get_mut("spec")
        .filter(|spec| matches!(spec, Node::Map(_)))
        .ok_or("the pod has no `spec`")?;
    if has_guard(spec) {
        return Ok(None);
    }
    if s.on_rollback.as_deref() == Some("pause") && kind != "Deployment" {
        return Err(format!(
            "on-rollback `pause` acts on a Deployment; this is a {kind}"
        ));
    }
    if let Some(port) = ports_in_use(spec)
        .into_iter()
        .find(|p| *p == u64::from(PROXY_PORT) || *p == u64::from(ADMIN_PORT))
    {
        return Err(format!(
            "the app already uses port {port}, which the guard needs ({PROXY_PORT} proxy, {ADMIN_PORT} admin)"
        ));
    }
    let app = match s.mode {
        Mode::Proxy => Some(take_app_port(spec, s.app_port.as_deref())?),
        Mode::Envoy => None,
    };
    let guard = container(s, name, revision, app.as_ref());
    spec.entry("initContainers", Node::Seq(Vec::new()))
        .and_then(Node::as_seq_mut)
        .ok_or("`initContainers` is not a list")?
        .push(guard);

    let group = s.group.clone().unwrap_or_default();
    let metadata = pod
        .entry("metadata", Node::Map(Vec::new()))
        .filter(|m| matches!(m, Node::Map(_)))
        .ok_or("the pod's `metadata` is not a mapping")?;
    let labels = metadata
        .entry("labels", Node::Map(Vec::new()))
        .ok_or("`metadata` is not a mapping")?;
    labels
        .entry(&format!("{ANNOTATION_PREFIX}group"), Node::Str(group))
        .ok_or("`metadata.labels` is not a mapping")?;
    let pod_labels = labels
        .as_map()
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    let annotations = metadata
        .entry("annotations", Node::Map(Vec::new()))
        .ok_or("`metadata` is not a mapping")?;
    // The app may be scraped already; its own annotations win.
    if annotations.get("prometheus.io/scrape").is_none() {
        annotations.set("prometheus.io/scrape", "true".into());
        annotations.set("prometheus.io/port", ADMIN_PORT.to_string().as_str().into());
        annotations.set("prometheus.io/path", "/metrics".into());
    }
    Ok(Some(Injected {
        workload: format!("{kind}/{name}"),
        pod_labels,
        app_port: app,
    }))
}
