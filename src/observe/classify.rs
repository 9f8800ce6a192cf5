//! Which responses count against the canary, read from what passes through the proxy
//! (status, content type, `grpc-status` in headers or trailers); the rule itself is the
//! core's (`domain::classify`), shared with envoy mode.

use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderMap, StatusCode};

use crate::domain::window::Outcome;

pub use crate::domain::classify::{grpc_code, DEADLINE_EXCEEDED, GRPC_SERVER_ERRORS};

/// An HTTP status: 5xx is an error, everything else a success.
pub fn http_status(status: StatusCode) -> Outcome {
    crate::domain::classify::http_status(status.as_u16())
}

/// Whether a message is gRPC (by its content type).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Looked up by name: a string would be parsed into one on every look-up.
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The `grpc-status` in a header or trailer map, if present and numeric.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get(&GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok())
}

/// The deadline a gRPC client sent in `grpc-timeout` (1 to 8 digits and a
/// unit: H, M, S, m, u, n), if any and well formed.
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(&GRPC_TIMEOUT)?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What can be decided when response headers arrive.
#[derive(Debug, PartialEq, Eq)]
pub enum AtHeaders {
    /// The outcome is known now.
    Done(Outcome),
    /// A gRPC response whose status comes in the trailers.
    AwaitTrailers,
}

/// Classifies a response from its status and headers.
pub fn response(status: StatusCode, headers: &HeaderMap) -> AtHeaders {
    if status.is_server_error() || !is_grpc(headers) {
        return AtHeaders::Done(http_status(status));
    }
    match grpc_status(headers) {
        // Trailers-only response: the status is in the headers.
        Some(code) => AtHeaders::Done(grpc_code(code)),
        None => AtHeaders::AwaitTrailers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn http_statuses() {
        let h = HeaderMap::new();
        assert_eq!(
            response(StatusCode::OK, &h),
            AtHeaders::Done(Outcome::Success)
        );
        assert_eq!(
            response(StatusCode::NOT_FOUND, &h),
            AtHeaders::Done(Outcome::Success)
        );
        assert_eq!(
            response(StatusCode::BAD_GATEWAY, &h),
            AtHeaders::Done(Outcome::Error)
        );
        assert_eq!(
            response(StatusCode::from_u16(599).unwrap(), &h),
            AtHeaders::Done(Outcome::Error)
        );
    }

    #[test]
    fn grpc_statuses() {
        let grpc = headers(&[("content-type", "application/grpc+proto")]);
        assert_eq!(response(StatusCode::OK, &grpc), AtHeaders::AwaitTrailers);
        let only = headers(&[("content-type", "application/grpc"), ("grpc-status", "14")]);
        assert_eq!(
            response(StatusCode::OK, &only),
            AtHeaders::Done(Outcome::Error)
        );
        let nf = headers(&[("content-type", "application/grpc"), ("grpc-status", "5")]);
        assert_eq!(
            response(StatusCode::OK, &nf),
            AtHeaders::Done(Outcome::Success)
        );
        assert_eq!(grpc_code(0), Outcome::Success);
        assert_eq!(grpc_code(13), Outcome::Error);
        assert_eq!(grpc_status(&headers(&[("grpc-status", "x")])), None);
    }

    #[test]
    fn grpc_timeouts() {
        let t = |v: &'static str| grpc_timeout(&headers(&[("grpc-timeout", v)]));
        assert_eq!(t("299983u"), Some(Duration::from_micros(299_983)));
        assert_eq!(t("300m"), Some(Duration::from_millis(300)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1M"), Some(Duration::from_secs(60)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "10x", "-1m", "1.5S", "10 m"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }
}
