//! Storage: objects enter and leave the store's map only here, and each time the write is
//! logged as a [`Change`] for watches to read.
//!
//! Design rule: every stored write bumps the global resourceVersion by one and logs one
//! [`Change`] at that version. The log keeps the last [`CHANGE_LIMIT`] and remembers the
//! newest version it dropped, so a watch from before it is told `410 Expired` instead of
//! missing changes.

use std::sync::Arc;

use serde_json::Value;

use super::{Key, State, CHANGE_LIMIT};
use crate::embedded_api::resource::Resource;

/// One stored write, as watches see it.
#[derive(Debug)]
pub struct Change {
    /// The resourceVersion the write produced.
    pub resource_version: u64,
    /// The resource written.
    pub resource: Resource,
    /// The namespace written in.
    pub namespace: String,
    /// The stored object after the write; `None` for a delete.
    pub object: Option<Value>,
    /// The stored object before the write; `None` for a create.
    pub previous: Option<Value>,
}

pub(super) fn next_version(state: &mut State) -> String {
    state.resource_version += 1;
    state.resource_version.to_string()
}

/// Stores `object` (already at the new resourceVersion) and logs the change.
pub(super) fn put(state: &mut State, key: Key, object: Value) {
    let previous = state.objects.insert(key.clone(), object.clone());
    log_change(state, key, Some(object), previous);
}

/// Removes the object at `key`, moves the resourceVersion on and logs the change.
pub(super) fn remove(state: &mut State, key: Key) {
    let previous = state.objects.remove(&key);
    next_version(state);
    log_change(state, key, None, previous);
}

fn log_change(state: &mut State, key: Key, object: Option<Value>, previous: Option<Value>) {
    if state.change_log.len() == CHANGE_LIMIT {
        if let Some(oldest) = state.change_log.pop_front() {
            state.forgotten = oldest.resource_version;
        }
    }
    let (resource, namespace, _) = key;
    state.change_log.push_back(Arc::new(Change {
        resource_version: state.resource_version,
        resource,
        namespace,
        object,
        previous,
    }));
}
