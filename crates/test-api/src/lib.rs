//! canary-guard's stand-ins, for its tests and for `canary-guard demo`: an in-memory
//! Kubernetes API ([`embedded_api`]), and the demo's stable and canary apps ([`apps`]) and
//! load generator ([`load`]).
//!
//! Design rule: this crate depends on nothing of the product (`canary-guard`,
//! `canary-guard-core`); the product depends on it, for its tests and, behind its `demo`
//! feature, for `demo`, so a build without that feature leaves all of it out. Where the
//! product depends on the Kubernetes API, the embedded one behaves like a real
//! kube-apiserver; a differential test holds it to one, and the differences kept are listed
//! in `docs/embedded-api.md`.
#![forbid(unsafe_code)]

pub mod apps;
pub mod embedded_api;
pub mod load;
