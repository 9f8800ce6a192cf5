//! Kubernetes adapters: client, leases, leader election, VirtualService, Events.

pub mod client;
