//! Pure domain logic: no I/O, no Kubernetes types.

pub mod routes;
