//! Kubernetes adapters: client, leases, leader election, VirtualService, Events.

pub mod client;
pub mod events;
pub mod virtual_service;
