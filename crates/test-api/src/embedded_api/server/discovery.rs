//! Discovery: the version, API groups and resource lists a kube client may ask for before
//! it calls.
//!
//! Design rule: the group and resource lists are built from [`Resource::ALL`], so discovery
//! lists exactly what is served: each group once, with the versions its resources are
//! served at.

use serde_json::{json, Value};

use crate::embedded_api::resource::Resource;

pub(super) fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-embedded",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "",
        "platform": "linux/amd64",
    })
}

pub(super) fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

pub(super) fn group_list() -> Value {
    let mut groups: Vec<Value> = Vec::new();
    for r in Resource::ALL.into_iter().filter(|r| !r.group().is_empty()) {
        if groups.iter().any(|g| g["name"] == r.group()) {
            continue;
        }
        let versions: Vec<Value> = r
            .versions()
            .iter()
            .map(|v| json!({"groupVersion": r.api_version(v), "version": v}))
            .collect();
        groups.push(json!({
            "name": r.group(),
            "versions": versions,
            "preferredVersion": versions[0].clone(),
        }));
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub(super) fn resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = Resource::ALL
        .into_iter()
        .filter(|r| r.group() == group && r.versions().contains(&version))
        .map(|r| {
            json!({
                "name": r.plural(),
                "singularName": r.kind().to_lowercase(),
                "namespaced": true,
                "kind": r.kind(),
                "verbs": ["create", "delete", "get", "list", "patch", "update"],
            })
        })
        .collect();
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}
