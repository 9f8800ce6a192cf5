//! Hop-by-hop header stripping (RFC 9110 §7.6.1).

use http::header::{self, HeaderMap, HeaderName};

/// Headers that describe one connection, never forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Whether `strip_hop_by_hop` may remove or rewrite a header of this name.
fn touched_by_strip(name: &HeaderName) -> bool {
    name == header::TE || name == header::UPGRADE || HOP_BY_HOP.contains(name)
}

/// Whether the message asks to switch protocols (`Connection: upgrade` + `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers and the ones `Connection` names. With
/// `keep_upgrade`, `Connection: upgrade` and `Upgrade` stay, so the switch
/// reaches the other side. `TE: trailers` stays: gRPC needs it end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most requests carry none of these: one pass over the names and done.
    if !keep_upgrade && !headers.keys().any(touched_by_strip) {
        return;
    }
    // Same removals, in the same order, as removing every candidate name; but
    // only names present are removed, each found by comparing the few names
    // the message has rather than by hashing every candidate.
    let has = |n: &HeaderName| headers.keys().any(|k| k == n);
    let mut doomed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !(keep_upgrade && t.eq_ignore_ascii_case(header::UPGRADE.as_str())))
        .filter_map(|t| headers.keys().find(|k| k.as_str().eq_ignore_ascii_case(t)))
        .cloned()
        .collect();
    doomed.extend(HOP_BY_HOP.into_iter().filter(has));
    for n in &doomed {
        headers.remove(n);
    }
    if keep_upgrade {
        headers.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("upgrade"),
        );
    } else if headers.keys().any(|k| k == header::UPGRADE) {
        headers.remove(header::UPGRADE);
    }
    if !headers.keys().any(|k| k == header::TE) {
        return;
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, header::HeaderValue::from_static("trailers"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_standard_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip, trailers"),
            ("upgrade", "websocket"),
            ("x-end", "2"),
            ("host", "example"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-end", "host", "te"]);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn strips_a_lone_hop_by_hop_header() {
        for (name, value) in [
            ("te", "gzip"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic eA=="),
        ] {
            let mut h = map(&[("x-end", "1"), (name, value), ("accept", "*/*")]);
            strip_hop_by_hop(&mut h, false);
            let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
            assert_eq!(names, ["x-end", "accept"], "{name}");
        }
    }

    #[test]
    fn connection_tokens_match_names_in_any_case() {
        let mut h = map(&[
            ("x-hop", "1"),
            ("connection", "X-Hop , Close"),
            ("x-end", "2"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-end"]);
    }

    #[test]
    fn keeps_upgrade_when_switching() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
    }
}
