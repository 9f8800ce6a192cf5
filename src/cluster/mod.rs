//! Kubernetes adapters.

pub mod events;
pub mod virtual_service;
