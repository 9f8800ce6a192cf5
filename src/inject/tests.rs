use super::documents::split;
use super::*;

fn settings() -> Settings {
    Settings {
        image: "guard:test".into(),
        virtual_service: Some("reviews".into()),
        canary_subset: Some("v2".into()),
        ..Settings::default()
    }
}

const CANARY: &str = "\
# the canary
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v2
spec:
  selector:
    matchLabels: {app: reviews, version: v2}
  template:
    metadata:
      labels: {app: reviews, version: v2}
    spec:
      containers:
        - name: reviews
          image: reviews:2
          ports:
            - name: http
              containerPort: 9080
          readinessProbe:
            httpGet: {path: /health, port: http}
";

const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: reviews   # keep me
spec:
  selector: {app: reviews}
  ports:
    - name: http
      port: 9080
      targetPort: 9080
";

fn parse(text: &str) -> Vec<Node> {
    split(text)
        .iter()
        .filter_map(|d| serde_saphyr::from_str::<Node>(&d.body).ok())
        .filter(|n| !matches!(n, Node::Null))
        .collect()
}

fn guard(pod_spec: &Node) -> &Node {
    pod_spec
        .get("initContainers")
        .and_then(Node::as_seq)
        .and_then(|c| {
            c.iter()
                .find(|c| c.get("name").and_then(Node::as_str) == Some(CONTAINER_NAME))
        })
        .expect("guard container")
}

fn env<'a>(container: &'a Node, name: &str) -> Option<&'a Node> {
    container
        .get("env")?
        .as_seq()?
        .iter()
        .find(|e| e.get("name").and_then(Node::as_str) == Some(name))
}

fn env_value<'a>(container: &'a Node, name: &str) -> Option<&'a str> {
    env(container, name)?.get("value")?.as_str()
}

#[test]
fn split_keeps_markers_comments_and_line_numbers() {
    let docs = split("# head\na: 1\n--- \nb: 2\n...\nc: 3\n---\n");
    assert_eq!(docs.len(), 4);
    assert_eq!(docs[0].body, "# head\na: 1\n");
    assert_eq!(docs[1].marker.as_deref(), Some("--- \n"));
    assert_eq!(docs[1].line, 3);
    assert_eq!(docs[1].body, "b: 2\n...\n");
    assert_eq!(docs[2].body, "c: 3\n");
    assert_eq!(docs[2].line, 6);
    assert_eq!(docs[3].body, "");
    // Not markers: longer runs of dashes, indented dashes.
    assert_eq!(split("a: |\n  ---\n----\n").len(), 1);
}

#[test]
fn proxy_mode_puts_the_guard_in_front_of_the_named_app_port() {
    let out = inject(CANARY, &settings()).unwrap();
    assert!(
        out.starts_with("# the canary\napiVersion: apps/v1\n"),
        "{out}"
    );
    let docs = parse(&out);
    let template = docs[0].at(&["spec", "template"]).unwrap();
    let spec = template.get("spec").unwrap();
    let g = guard(spec);
    assert_eq!(
        g.get("restartPolicy").and_then(Node::as_str),
        Some("Always")
    );
    assert_eq!(g.get("image").and_then(Node::as_str), Some("guard:test"));
    assert_eq!(env_value(g, "CANARY_GUARD_MODE"), Some("proxy"));
    assert_eq!(
        env_value(g, "CANARY_GUARD_UPSTREAM"),
        Some("http://127.0.0.1:9080")
    );
    assert_eq!(env_value(g, "CANARY_GUARD_GROUP"), Some("reviews-v2"));
    assert_eq!(
        env_value(g, "CANARY_GUARD_VIRTUAL_SERVICE"),
        Some("reviews")
    );
    assert_eq!(env_value(g, "CANARY_GUARD_CANARY_SUBSET"), Some("v2"));
    assert_eq!(env_value(g, "CANARY_GUARD_CANARY_HOST"), None);
    assert_eq!(
        env(g, "POD_TEMPLATE_HASH")
            .and_then(|e| e.at(&["valueFrom", "fieldRef", "fieldPath"]))
            .and_then(Node::as_str),
        Some("metadata.labels['pod-template-hash']")
    );
    // The guard takes over the name `http`; the app's port and its probe follow.
    let guard_ports = g.get("ports").and_then(Node::as_seq).unwrap();
    assert_eq!(
        guard_ports[0].get("name").and_then(Node::as_str),
        Some("http")
    );
    assert_eq!(
        guard_ports[0].get("containerPort").and_then(Node::as_u64),
        Some(4680)
    );
    let app = &spec.get("containers").and_then(Node::as_seq).unwrap()[0];
    assert_eq!(
        app.at(&["ports"]).and_then(Node::as_seq).unwrap()[0]
            .get("name")
            .and_then(Node::as_str),
        Some("app-http")
    );
    assert_eq!(
        app.at(&["readinessProbe", "httpGet", "port"])
            .and_then(Node::as_str),
        Some("app-http")
    );
    assert_eq!(
        template
            .at(&["metadata", "labels", "canary-guard.io/group"])
            .and_then(Node::as_str),
        Some("reviews-v2")
    );
    assert_eq!(
        template
            .at(&["metadata", "annotations", "prometheus.io/port"])
            .and_then(Node::as_str),
        Some("4681")
    );
    // Keys keep their written order.
    let keys: Vec<_> = docs[0]
        .as_map()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(keys, ["apiVersion", "kind", "metadata", "spec"]);
}

#[test]
fn a_second_run_changes_nothing() {
    let input = format!("{SERVICE}---\n{CANARY}");
    let s = Settings {
        rewire_service: true,
        ..settings()
    };
    let once = inject(&input, &s).unwrap();
    assert_ne!(once, input);
    assert_eq!(inject(&once, &s).unwrap(), once);
}

#[test]
fn other_documents_are_copied_byte_for_byte() {
    let cm = "apiVersion: v1\nkind: ConfigMap   # odd spacing kept\nmetadata: {name: x}\ndata:\n  k: 'v'\n";
    let input = format!("{cm}---\n{SERVICE}");
    assert_eq!(inject(&input, &settings()).unwrap(), input);
}

#[test]
fn rewiring_points_a_numeric_target_port_at_the_port_name() {
    let s = Settings {
        rewire_service: true,
        ..settings()
    };
    let out = inject(&format!("{SERVICE}---\n{CANARY}"), &s).unwrap();
    let docs = parse(&out);
    let port = &docs[0]
        .at(&["spec", "ports"])
        .and_then(Node::as_seq)
        .unwrap()[0];
    assert_eq!(port.get("targetPort").and_then(Node::as_str), Some("http"));
    // Without the flag the Service is left alone.
    let out = inject(&format!("{SERVICE}---\n{CANARY}"), &settings()).unwrap();
    assert!(out.starts_with(SERVICE));
}

#[test]
fn rewiring_an_unnamed_app_port_is_refused_with_the_fix() {
    let unnamed = CANARY
        .replace(
            "            - name: http\n              containerPort",
            "            - containerPort",
        )
        .replace("port: http}", "port: 9080}");
    let s = Settings {
        rewire_service: true,
        ..settings()
    };
    let err = inject(&format!("{SERVICE}---\n{unnamed}"), &s).unwrap_err();
    assert_eq!(err.index, 1);
    let msg = err.to_string();
    assert!(msg.contains("Service/reviews"), "{msg}");
    assert!(msg.contains("has no name"), "{msg}");
    // Without rewiring, the guard gets its own port name.
    let out = inject(&unnamed, &settings()).unwrap();
    let g = guard(parse(&out)[0].at(&["spec", "template", "spec"]).unwrap()).clone();
    let ports = g.get("ports").and_then(Node::as_seq).unwrap();
    assert_eq!(
        ports[0].get("name").and_then(Node::as_str),
        Some("cg-proxy")
    );
}

#[test]
fn annotations_override_flags() {
    let annotated = CANARY.replace(
        "metadata:\n  name: reviews-v2\n",
        "metadata:\n  name: reviews-v2\n  annotations:\n    canary-guard.io/mode: envoy\n    canary-guard.io/group: reviews\n",
    );
    let out = inject(&annotated, &settings()).unwrap();
    let doc = &parse(&out)[0];
    let spec = doc.at(&["spec", "template", "spec"]).unwrap();
    let g = guard(spec);
    assert_eq!(env_value(g, "CANARY_GUARD_MODE"), Some("envoy"));
    assert_eq!(env_value(g, "CANARY_GUARD_GROUP"), Some("reviews"));
    assert_eq!(env_value(g, "CANARY_GUARD_UPSTREAM"), None);
    // Envoy mode leaves the app's ports alone; the guard has only its admin port.
    let ports = g.get("ports").and_then(Node::as_seq).unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(
        ports[0].get("name").and_then(Node::as_str),
        Some("cg-admin")
    );
    assert!(out.contains("name: http\n"), "{out}");
}

#[test]
fn opting_out_and_lists() {
    let opted = CANARY.replace(
        "metadata:\n  name: reviews-v2\n",
        "metadata:\n  name: reviews-v2\n  annotations: {canary-guard.io/inject: \"false\"}\n",
    );
    assert_eq!(inject(&opted, &settings()).unwrap(), opted);

    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p}\n  spec:\n    containers:\n    - {name: app, image: a, ports: [{containerPort: 8080}]}\n";
    let out = inject(list, &settings()).unwrap();
    let doc = &parse(&out)[0];
    let pod = &doc.get("items").and_then(Node::as_seq).unwrap()[0];
    let g = guard(pod.get("spec").unwrap());
    assert_eq!(
        env_value(g, "CANARY_GUARD_UPSTREAM"),
        Some("http://127.0.0.1:8080")
    );
    // A bare pod has no revision label.
    assert!(env(g, "POD_TEMPLATE_HASH").is_none());
}

#[test]
fn errors_name_the_document() {
    let cron = "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly}\nspec: {}\n";
    let err = inject(&format!("{SERVICE}---\n{cron}"), &settings()).unwrap_err();
    assert_eq!((err.index, err.line), (2, 11));
    let msg = err.to_string();
    assert!(
        msg.starts_with("document 2 (line 11, CronJob/nightly)"),
        "{msg}"
    );
    assert!(msg.contains("not supported"), "{msg}");

    let err = inject(&format!("{SERVICE}---\nkind: [unclosed\n"), &settings()).unwrap_err();
    assert_eq!(err.index, 2);
    assert!(err.to_string().contains("invalid YAML"), "{err}");

    let err = inject("just a string\n", &settings()).unwrap_err();
    assert!(err.to_string().contains("not a mapping"), "{err}");

    let no_vs = Settings {
        virtual_service: None,
        ..settings()
    };
    let err = inject(CANARY, &no_vs).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("Deployment/reviews-v2"), "{msg}");
    assert!(msg.contains("--virtual-service"), "{msg}");
}

#[test]
fn port_clash_and_pause_on_non_deployment_are_refused() {
    let clash = CANARY.replace("9080", "4681");
    let err = inject(&clash, &settings()).unwrap_err();
    assert!(err.to_string().contains("4681"), "{err}");

    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: app, image: a, ports: [{containerPort: 8080}]}\n";
    let pause = Settings {
        on_rollback: Some("pause".into()),
        ..settings()
    };
    let err = inject(pod, &pause).unwrap_err();
    assert!(err.to_string().contains("Deployment"), "{err}");
    let out = inject(CANARY, &pause).unwrap();
    let g = guard(parse(&out)[0].at(&["spec", "template", "spec"]).unwrap()).clone();
    assert_eq!(env_value(&g, "CANARY_GUARD_DEPLOYMENT"), Some("reviews-v2"));
    assert_eq!(env_value(&g, "CANARY_GUARD_ON_ROLLBACK"), Some("pause"));
}

#[test]
fn strings_that_look_like_other_types_stay_strings() {
    let out = inject(CANARY, &settings()).unwrap();
    // Re-reading what was written gives the same strings back.
    let doc = &parse(&out)[0];
    let ann = doc
        .at(&["spec", "template", "metadata", "annotations"])
        .unwrap();
    assert_eq!(ann.get("prometheus.io/scrape"), Some(&Node::from("true")));
    assert_eq!(ann.get("prometheus.io/port"), Some(&Node::from("4681")));
}

#[test]
fn a_stable_workload_gets_a_baseline_guard_in_the_canarys_group() {
    let stable = CANARY
        .replace("reviews-v2", "reviews-v1")
        .replace("version: v2", "version: v1")
        .replace("reviews:2", "reviews:1");
    let annotated = stable.replace(
        "  template:\n    metadata:\n",
        "  template:\n    metadata:\n      annotations: {canary-guard.io/role: baseline, canary-guard.io/group: reviews-v2}\n",
    );
    let out = inject(&annotated, &settings()).unwrap();
    let g = guard(parse(&out)[0].at(&["spec", "template", "spec"]).unwrap()).clone();
    assert_eq!(env_value(&g, "CANARY_GUARD_ROLE"), Some("baseline"));
    assert_eq!(env_value(&g, "CANARY_GUARD_GROUP"), Some("reviews-v2"));
    // A canary carries no role: its guard's default.
    let out = inject(CANARY, &settings()).unwrap();
    let g = guard(parse(&out)[0].at(&["spec", "template", "spec"]).unwrap()).clone();
    assert_eq!(env_value(&g, "CANARY_GUARD_ROLE"), None);

    // Its own name would put it in a group of its own, judged by nobody.
    let alone = stable.replace(
        "  template:\n    metadata:\n",
        "  template:\n    metadata:\n      annotations: {canary-guard.io/role: baseline}\n",
    );
    let err = inject(&alone, &settings()).unwrap_err().to_string();
    assert!(err.contains("canary-guard.io/group"), "{err}");
    let odd = stable.replace(
        "  template:\n    metadata:\n",
        "  template:\n    metadata:\n      annotations: {canary-guard.io/role: judge}\n",
    );
    let err = inject(&odd, &settings()).unwrap_err().to_string();
    assert!(err.contains("`judge`") && err.contains("baseline"), "{err}");
}
