//! What every plan is made of: RFC 6902 patch operations, the routes it leaves alone
//! and its one-line summary.
//!
//! Design rule: a plan only says what changes; its operations never `test` a value.
//! Pinning the patch to the object it was planned from (a `test` of its
//! resourceVersion) is the caller's job, see `cluster::virtual_service`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::route::RouteRef;

/// One RFC 6902 JSON patch operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum PatchOp {
    /// Fail the whole patch unless the value at `path` equals `value`.
    Test {
        /// JSON pointer.
        path: String,
        /// Expected value.
        value: Value,
    },
    /// Set an object member or insert an array element.
    Add {
        /// JSON pointer.
        path: String,
        /// New value.
        value: Value,
    },
    /// Replace an existing value.
    Replace {
        /// JSON pointer.
        path: String,
        /// New value.
        value: Value,
    },
    /// Remove a value.
    Remove {
        /// JSON pointer.
        path: String,
    },
}

/// Escapes one JSON pointer reference token (RFC 6901): `~` → `~0`, `/` → `~1`.
pub fn escape_pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A route the plan leaves alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRoute {
    /// The route.
    pub route: RouteRef,
    /// Why it is not touched.
    pub reason: String,
}

impl fmt::Display for SkippedRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.route, self.reason)
    }
}

pub(super) fn summarize(changes: &[String], skipped: &[SkippedRoute]) -> String {
    let mut parts: Vec<String> = changes.to_vec();
    parts.extend(skipped.iter().map(|s| format!("skipped {s}")));
    if parts.is_empty() {
        "no change".to_owned()
    } else {
        parts.join("; ")
    }
}
