"""Validates Kubernetes manifests offline; run by scripts/validate-manifests.

Built-in kinds are checked against the Kubernetes OpenAPI schemas shipped by
kubernetes-validate (strict: unknown fields are errors), for each version given.
VirtualServices are checked against the openAPIV3Schema of the Istio CRD in
tests/fixtures. On top, what the guard's manifests promise: Role rules never pair
resourceNames with verbs RBAC cannot restrict by name, and every canary-guard container
is a hardened native sidecar.

Usage: validate_manifests.py --k8s 1.29.0 --k8s 1.37.0 FILE...
Prints one line per object and closes with "N passed, N failed".
"""

import argparse
import copy
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CRD = ROOT / "tests" / "fixtures" / "istio-virtualservice-crd.yaml"
# CRDs whose schemas this repository does not carry: accepted with a note.
NO_SCHEMA = {
    ("networking.istio.io", "DestinationRule"),
    ("monitoring.coreos.com", "PodMonitor"),
    ("cert-manager.io", "Certificate"),
    ("cert-manager.io", "Issuer"),
}
# The part of prometheus-operator's PrometheusRule schema these manifests use, closed so a
# misspelt field fails (the operator's CRD is not vendored here).
PROMETHEUS_RULE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string"},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["expr"],
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                                        "record": {"type": "string"},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$"},
                                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
# RBAC verbs whose requests carry no object name, so resourceNames cannot restrict them.
UNNAMED_VERBS = {"create", "list", "watch", "deletecollection"}


def to_json_schema(node):
    """openAPIV3Schema -> JSON Schema: int-or-string, nullable, closed objects."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    out.pop("nullable", None)
    # Structural schemas drop unknown fields on the server; here they are mistakes.
    if "properties" in out and "additionalProperties" not in out and not node.get(
        "x-kubernetes-preserve-unknown-fields"
    ):
        out["additionalProperties"] = False
    return out


def crd_validators():
    crd = yaml.safe_load(CRD.read_text())
    group = crd["spec"]["group"]
    validators = {}
    for version in crd["spec"]["versions"]:
        schema = to_json_schema(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
        # The API server handles these; the CRD schema leaves them open.
        schema.setdefault("properties", {}).update(
            {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
        )
        validators[f"{group}/{version['name']}"] = jsonschema.Draft7Validator(schema)
    return crd["spec"]["names"]["kind"], validators


def check_role(obj):
    problems = []
    for i, rule in enumerate(obj.get("rules", [])):
        if rule.get("resourceNames"):
            bad = UNNAMED_VERBS.intersection(rule.get("verbs", []))
            if bad:
                problems.append(f"rule {i}: resourceNames cannot restrict {sorted(bad)}")
        if "*" in rule.get("verbs", []) or "*" in rule.get("resources", []):
            problems.append(f"rule {i}: wildcard")
    return problems


def pod_spec(obj):
    kind = obj.get("kind")
    if kind == "Pod":
        return obj.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "DaemonSet"):
        return obj.get("spec", {}).get("template", {}).get("spec", {})
    return None


def check_guard(obj):
    spec = pod_spec(obj)
    if spec is None:
        return []
    problems = []
    for c in spec.get("containers", []):
        if c.get("name") == "canary-guard":
            problems.append("canary-guard runs as an app container, not a native sidecar")
    for c in spec.get("initContainers", []):
        if c.get("name") != "canary-guard":
            continue
        sc = c.get("securityContext", {})
        want = {
            "restartPolicy": c.get("restartPolicy") == "Always",
            "runAsNonRoot": sc.get("runAsNonRoot") is True,
            "readOnlyRootFilesystem": sc.get("readOnlyRootFilesystem") is True,
            "allowPrivilegeEscalation": sc.get("allowPrivilegeEscalation") is False,
            "capabilities.drop ALL": "ALL" in sc.get("capabilities", {}).get("drop", []),
            "seccompProfile RuntimeDefault": sc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
            "resources.requests": bool(c.get("resources", {}).get("requests")),
            "resources.limits": bool(c.get("resources", {}).get("limits")),
            "readinessProbe": "readinessProbe" in c,
            "livenessProbe": "livenessProbe" in c,
        }
        env = {e["name"] for e in c.get("env", [])}
        for name in ("POD_NAME", "POD_NAMESPACE", "POD_UID"):
            want[f"env {name}"] = name in env
        problems += [f"canary-guard container: {k} missing or wrong" for k, ok in want.items() if not ok]
    return problems


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--k8s", action="append", required=True, help="Kubernetes version, e.g. 1.29.0")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    vs_kind, vs_validators = crd_validators()
    passed = failed = 0
    for path in args.files:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if doc is None:
                continue
            api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
            name = f"{Path(path).name}: {kind}/{doc.get('metadata', {}).get('name', '?')}"
            group = api.rsplit("/", 1)[0] if "/" in api else ""
            problems = []
            if kind == vs_kind and api in vs_validators:
                problems += [
                    f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                    for e in vs_validators[api].iter_errors(doc)
                ]
                where = "Istio CRD schema"
            elif (group, kind) == ("monitoring.coreos.com", "PrometheusRule"):
                problems += [
                    f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                    for e in jsonschema.Draft202012Validator(PROMETHEUS_RULE).iter_errors(doc)
                ]
                where = "PrometheusRule shape"
            elif (group, kind) in NO_SCHEMA:
                where = "no schema in this repository: structure not checked"
            else:
                for version in args.k8s:
                    try:
                        kubernetes_validate.validate(doc, version, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        problems.append(f"Kubernetes {version}: {e.message} at {'/'.join(map(str, e.path))}")
                    except kubernetes_validate.SchemaNotFoundError:
                        problems.append(f"Kubernetes {version}: no schema for {api} {kind}")
                where = "Kubernetes " + ", ".join(args.k8s)
            if kind == "Role":
                problems += check_role(doc)
            problems += check_guard(doc)
            if problems:
                failed += 1
                print(f"FAIL {name}")
                for p in problems:
                    print(f"     {p}")
            else:
                passed += 1
                print(f"ok   {name} ({where})")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
