//! `canary-guard inject` through the binary: files and stdin, a second pass, errors.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use canary_guard::inject::Node;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/reviews-plain.yaml"
);

fn inject(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_canary-guard"))
        .arg("inject")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn documents(yaml: &str) -> Vec<Node> {
    yaml.split("\n---\n")
        .map(|d| serde_saphyr::from_str::<Node>(d).unwrap())
        .collect()
}

fn named<'a>(docs: &'a [Node], kind: &str, name: &str) -> &'a Node {
    docs.iter()
        .find(|d| {
            d.get("kind").and_then(Node::as_str) == Some(kind)
                && d.at(&["metadata", "name"]).and_then(Node::as_str) == Some(name)
        })
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

fn init_container_names(workload: &Node) -> Vec<String> {
    workload
        .at(&["spec", "template", "spec", "initContainers"])
        .and_then(Node::as_seq)
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.get("name").and_then(Node::as_str).map(str::to_string))
        .collect()
}

#[test]
fn injects_the_canary_rewires_the_service_and_a_second_pass_is_a_no_op() {
    let args = ["--virtual-service", "reviews", "--rewire-service"];
    let first = inject(&[&["-f", FIXTURE][..], &args].concat(), None);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let out = String::from_utf8(first.stdout).unwrap();
    let docs = documents(&out);
    assert_eq!(docs.len(), 5);
    assert_eq!(
        init_container_names(named(&docs, "Deployment", "reviews-v2")),
        ["canary-guard"]
    );
    assert_eq!(
        init_container_names(named(&docs, "StatefulSet", "ratings")),
        ["canary-guard"]
    );
    // Opted out with canary-guard.io/inject: "false".
    assert!(init_container_names(named(&docs, "Deployment", "reviews-v1")).is_empty());
    let svc = named(&docs, "Service", "reviews");
    assert_eq!(
        svc.at(&["spec", "ports"]).and_then(Node::as_seq).unwrap()[0]
            .get("targetPort")
            .and_then(Node::as_str),
        Some("http")
    );
    // The VirtualService is copied as written.
    assert!(out.contains("        - destination: {host: reviews, subset: v2}\n"));

    let second = inject(&[&["-f", "-"][..], &args].concat(), Some(&out));
    assert!(second.status.success());
    assert_eq!(String::from_utf8(second.stdout).unwrap(), out);
}

#[test]
fn errors_name_the_document_and_exit_non_zero() {
    let input = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate}\n";
    let out = inject(&["--virtual-service", "reviews"], Some(input));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("document 2 (line 4, Job/migrate)"), "{err}");

    let out = inject(&["-f", "/nonexistent/manifests.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/manifests.yaml"));
}
