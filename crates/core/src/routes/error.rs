//! What can go wrong reading a VirtualService or planning a change to it.
//!
//! Design rule: every error says what is wrong, and where when it can: the JSON pointer
//! of a malformed value, or the destinations and route names that are there when the
//! canary or the `--route` asked for is not.

/// Errors found while reading a VirtualService or planning a change to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A target with neither host nor subset would match every destination.
    #[error("a {0} target needs a host, a subset or both")]
    EmptyTarget(&'static str),

    /// The object has no `spec` object.
    #[error("the VirtualService has no spec")]
    NoSpec,

    /// No route of the VirtualService holds the canary destination.
    #[error("canary destination {canary} not found in any route; destinations present: {}", list_or_none(.present))]
    CanaryNotFound {
        /// The canary as configured.
        canary: String,
        /// Every destination the VirtualService routes to.
        present: Vec<String>,
    },

    /// `--route` names no http route of the VirtualService.
    #[error("no http route named {name:?}; http route names: {}", list_or_none(.present))]
    RouteNotFound {
        /// The requested route name.
        name: String,
        /// The names the http routes have.
        present: Vec<String>,
    },

    /// A value in the object does not have the shape the Istio API defines.
    #[error("malformed VirtualService at {path}: {problem}")]
    Malformed {
        /// JSON pointer of the offending value.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

pub(super) fn malformed(path: impl Into<String>, problem: impl Into<String>) -> RouteError {
    RouteError::Malformed {
        path: path.into(),
        problem: problem.into(),
    }
}
