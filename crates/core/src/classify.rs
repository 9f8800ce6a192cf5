//! Which answers count against the canary: the rule shared by proxy mode (statuses and
//! trailers as they pass through) and envoy mode (the labels of scraped series).
//!
//! Design rule: one place says "5xx and these gRPC codes are the server failing"; the
//! transports only read the codes and ask here.

use crate::window::Outcome;

/// gRPC DEADLINE_EXCEEDED: a server failure, unless it is the client's own deadline
/// running out (which the proxy tells apart from its `grpc-timeout`).
pub const DEADLINE_EXCEEDED: u32 = 4;

/// gRPC status codes that mean the server failed, not the caller:
/// UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
/// Codes such as NOT_FOUND or INVALID_ARGUMENT are answers, not failures.
pub const GRPC_SERVER_ERRORS: [u32; 6] = [2, DEADLINE_EXCEEDED, 12, 13, 14, 15];

/// An HTTP status code: 5xx is an error, everything else an answer.
pub fn http_status(code: u16) -> Outcome {
    if (500..600).contains(&code) {
        Outcome::Error
    } else {
        Outcome::Success
    }
}

/// A gRPC status code: one of [`GRPC_SERVER_ERRORS`] is an error, anything else an answer.
pub fn grpc_code(code: u32) -> Outcome {
    if GRPC_SERVER_ERRORS.contains(&code) {
        Outcome::Error
    } else {
        Outcome::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_failures_are_errors_and_answers_are_not() {
        for code in [500, 502, 503, 504, 599] {
            assert_eq!(http_status(code), Outcome::Error, "{code}");
        }
        for code in [200, 204, 301, 404, 429, 499, 600] {
            assert_eq!(http_status(code), Outcome::Success, "{code}");
        }
        for code in [2, 4, 12, 13, 14, 15] {
            assert_eq!(grpc_code(code), Outcome::Error, "{code}");
        }
        // OK, CANCELLED, INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, RESOURCE_EXHAUSTED.
        for code in [0, 1, 3, 5, 7, 8] {
            assert_eq!(grpc_code(code), Outcome::Success, "{code}");
        }
    }
}
