//! Kubernetes API failures as a person reads them: status code, reason, the server's
//! message and what to do, on one line, instead of the client's `Debug` dump of `Status`.
//!
//! Design rule: only the wording lives here; which failures are transient or conflicts is
//! decided by the callers, from the typed error.

use std::fmt;

/// Formats a [`kube::Error`] for logs, problems and the terminal.
pub struct Readable<'a>(pub &'a kube::Error);

impl fmt::Display for Readable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            kube::Error::Api(s) => {
                let reason = if s.reason.is_empty() {
                    "Failure"
                } else {
                    &s.reason
                };
                write!(f, "{} {reason}", s.code)?;
                if !s.message.is_empty() {
                    write!(f, ": {}", s.message)?;
                }
                match hint(s.code) {
                    Some(h) => write!(f, " ({h})"),
                    None => Ok(()),
                }
            }
            other => write!(f, "{other}"),
        }
    }
}

/// What to do about an answer with this status code.
fn hint(code: u16) -> Option<&'static str> {
    Some(match code {
        401 => "the credentials were refused: check the ServiceAccount token or the kubeconfig",
        403 => "grant the verb in the Role bound to the guard's ServiceAccount (deploy/base/rbac.yaml)",
        404 => "check the name and namespace, and that the CRD version is served (--virtual-service-version)",
        409 => "the object changed under us: read it again and retry",
        422 => "the API server rejected the request as invalid; after a JSON patch `test` this means the object changed under us",
        415 => "the API server does not accept this patch type for this resource",
        429 => "the API server is rate-limiting: retry later",
        500..=599 => "the API server is failing: retried with backoff",
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
