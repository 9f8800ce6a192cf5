//! Where a request goes: its path matched to discovery or to one served resource's
//! objects, and its query string decoded.
//!
//! Design rule: only the paths of the served resources, at their served versions, route to
//! objects; anything else, subresources included, is `Unknown` and answered like a path the
//! server does not know.

use crate::embedded_api::resource::Resource;

/// Where a path points.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    Version,
    CoreVersions,
    Groups,
    ResourceList { group: String, version: String },
    Object(Target),
    Unknown,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) resource: Resource,
    pub(super) version: String,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
}

pub(super) fn route(path: &str) -> Route {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Route::Version,
        ["api"] => return Route::CoreVersions,
        ["apis"] => return Route::Groups,
        ["api", "v1"] => {
            return Route::ResourceList {
                group: String::new(),
                version: "v1".into(),
            }
        }
        ["apis", g, v] => {
            return Route::ResourceList {
                group: (*g).into(),
                version: (*v).into(),
            }
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::Unknown,
    };
    let (namespace, plural, name) = match rest {
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        [plural] => (None, *plural, None),
        _ => return Route::Unknown,
    };
    match Resource::lookup(group, version, plural) {
        Some(resource) if namespace.is_none_or(|n| !n.is_empty()) => Route::Object(Target {
            resource,
            version: version.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.filter(|n| !n.is_empty()).map(str::to_owned),
        }),
        _ => Route::Unknown,
    }
}

/// Decodes an `application/x-www-form-urlencoded` query string.
pub(super) fn query_pairs(query: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = s
                        .get(i + 1..i + 3)
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    if let Some(b) = hex {
                        out.push(b);
                        i += 2;
                    } else {
                        out.push(b'%');
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}
