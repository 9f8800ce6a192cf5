//! Kubernetes adapters: client, leases, leader election, VirtualService, Events, the
//! canary Deployment's rollout.

pub mod api_error;
pub mod client;
pub mod deployment;
pub mod election;
pub mod events;
pub mod lease_store;
pub mod member_watch;
pub mod members;
pub mod virtual_service;
