use super::*;
use crate::embedded_api::resource::Resource;

#[test]
fn routes() {
    let object = |path: &str| match route(path) {
        Route::Object(t) => Some((t.resource, t.version, t.namespace, t.name)),
        _ => None,
    };
    assert_eq!(
        object("/apis/coordination.k8s.io/v1/namespaces/shop/leases/l"),
        Some((
            Resource::Leases,
            "v1".into(),
            Some("shop".into()),
            Some("l".into())
        ))
    );
    assert_eq!(
        object("/api/v1/namespaces/shop/pods"),
        Some((Resource::Pods, "v1".into(), Some("shop".into()), None))
    );
    assert_eq!(
        object("/apis/networking.istio.io/v1alpha3/virtualservices"),
        Some((Resource::VirtualServices, "v1alpha3".into(), None, None))
    );
    assert_eq!(
        object("/apis/apps/v1beta1/namespaces/shop/deployments"),
        None
    );
    assert_eq!(
        object("/apis/coordination.k8s.io/v1/namespaces/shop/leases/l/status"),
        None
    );
    assert_eq!(route("/version"), Route::Version);
    assert_eq!(
        route("/apis/apps/v1"),
        Route::ResourceList {
            group: "apps".into(),
            version: "v1".into()
        }
    );
}

#[test]
fn query_decoding() {
    let pairs = query_pairs("labelSelector=a+in+%28x%2Cy%29%2C%21b&dryRun=All&watch");
    assert_eq!(
        pairs,
        [
            ("labelSelector".to_owned(), "a in (x,y),!b".to_owned()),
            ("dryRun".to_owned(), "All".to_owned()),
            ("watch".to_owned(), String::new()),
        ]
    );
    assert_eq!(query_pairs("a=%zz%")[0].1, "%zz%");
}

#[test]
fn discovery_lists_every_group_once() {
    let groups = group_list();
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "coordination.k8s.io",
            "networking.istio.io",
            "events.k8s.io",
            "apps"
        ]
    );
    let vs = resource_list("networking.istio.io", "v1beta1").unwrap();
    assert_eq!(vs["resources"][0]["kind"], "VirtualService");
    assert!(resource_list("apps", "v2").is_none());
}
