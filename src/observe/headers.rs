//! Hop-by-hop header stripping (RFC 9110 §7.6.1).

use http::header::{self, HeaderMap, HeaderName};

use crate::server::connection_lists;

const HOPS: usize = 7;

/// Headers that describe one connection, never forwarded, in the order they
/// are removed. Names, not strings: removing by a string parses it first.
static HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Where a name is in [`HOP_BY_HOP`]: a `match` on the string, which
/// compiles to a switch on its length (faster than comparing names).
fn hop_by_hop(name: &str) -> Option<usize> {
    Some(match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "trailer" => 5,
        "transfer-encoding" => 6,
        _ => return None,
    })
}

/// Whether the message asks to switch protocols (`Connection: upgrade` + `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_lists(headers, "upgrade")
}

/// Removes hop-by-hop headers and the ones `Connection` names. With
/// `keep_upgrade`, `Connection: upgrade` and `Upgrade` stay, so the switch
/// reaches the other side. `TE: trailers` stays: gRPC needs it end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // This runs twice per request, so names are found by comparing the few
    // the message has (names are lowercase) rather than by hashed look-ups,
    // and only names present are removed: the same removals, in the same
    // order, as removing every candidate.
    let mut hop = [false; HOPS];
    let (mut has_upgrade, mut has_te) = (false, false);
    for name in headers.keys() {
        let name = name.as_str();
        if let Some(i) = hop_by_hop(name) {
            hop[i] = true;
        }
        has_upgrade |= name == "upgrade";
        has_te |= name == "te";
    }
    if !keep_upgrade && !has_upgrade && !has_te && !hop.contains(&true) {
        return;
    }
    let mut doomed: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            // Removed below if present, as every hop-by-hop header is.
            if token.eq_ignore_ascii_case("keep-alive")
                || keep_upgrade && token.eq_ignore_ascii_case("upgrade")
            {
                continue;
            }
            if let Some(name) = headers
                .keys()
                .find(|n| n.as_str().eq_ignore_ascii_case(token))
            {
                doomed.push(name.clone());
            }
        }
    }
    for name in &doomed {
        headers.remove(name);
    }
    for (name, _) in HOP_BY_HOP.iter().zip(hop).filter(|(_, present)| *present) {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("upgrade"),
        );
    } else if has_upgrade {
        headers.remove(header::UPGRADE);
    }
    if !has_te {
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
    fn the_match_finds_every_hop_by_hop_name_at_its_place() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop(name.as_str()), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop("te"), None);
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
