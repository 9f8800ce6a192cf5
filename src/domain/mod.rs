//! Pure domain logic: no I/O, no Kubernetes types.

pub mod binomial;
pub mod counters;
pub mod histogram;
pub mod in_flight;
pub mod judge;
pub mod policy;
pub mod routes;
pub mod sequential;
pub mod window;
