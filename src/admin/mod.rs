//! The admin port: metrics, health, readiness and state.

pub mod metrics;
pub mod server;
pub mod state;
