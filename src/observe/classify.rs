//! Which responses count against the canary.

use http::{HeaderMap, StatusCode};

use crate::domain::window::Outcome;

/// gRPC status codes that mean the server failed, not the caller:
/// UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
/// Codes such as NOT_FOUND or INVALID_ARGUMENT are answers, not failures.
pub const GRPC_SERVER_ERRORS: [u32; 6] = [2, 4, 12, 13, 14, 15];

/// An HTTP status: 5xx is an error, everything else a success.
pub fn http_status(status: StatusCode) -> Outcome {
    if status.is_server_error() {
        Outcome::Error
    } else {
        Outcome::Success
    }
}

/// Whether a message is gRPC (by its content type).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// The `grpc-status` in a header or trailer map, if present and numeric.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok())
}

/// Outcome of a gRPC status code.
pub fn grpc_code(code: u32) -> Outcome {
    if GRPC_SERVER_ERRORS.contains(&code) {
        Outcome::Error
    } else {
        Outcome::Success
    }
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
}
