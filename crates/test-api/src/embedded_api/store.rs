//! The object store and the verbs, with the real server's semantics. The HTTP layer is a
//! thin wrapper over [`Store::call`]; watches read the log of stored changes it keeps.
//! This file holds the state and runs each call; the verbs are in `read`, `create`,
//! `update` and `delete`, the write history in `history`, storage and the change log in
//! `changes`, and what the verbs share about bodies and metadata in `object`.
//!
//! Design rule: every stored write bumps the global resourceVersion by one and logs one
//! [`Change`]; both logs (writes for tests, changes for watches) are bounded.

mod changes;
mod create;
mod delete;
mod history;
mod object;
mod read;
mod update;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::watch;

use super::call::{Call, Verb};
use super::resource::Resource;
use super::status::Status;

pub use changes::Change;
pub use history::WriteRecord;
pub use object::present;

use create::{create, seed};
use delete::delete;
use history::record;
use read::{get, list};
use update::{patch_object, update};

/// How many stored changes are kept for watches, all resources together (the real server
/// keeps a window per resource, 100 events and up). A watch from an older resourceVersion
/// is told `410 Expired` and must list again.
pub const CHANGE_LIMIT: usize = 1_000;

type Key = (Resource, String, String);

struct State {
    objects: BTreeMap<Key, Value>,
    resource_version: u64,
    history: VecDeque<WriteRecord>,
    next_seq: u64,
    /// The last [`CHANGE_LIMIT`] changes, oldest first; shared with watches reading them.
    change_log: VecDeque<Arc<Change>>,
    /// The resourceVersion of the newest change dropped from `change_log` (0: none yet).
    forgotten: u64,
}

/// All objects of all served resources, one global resourceVersion counter, and the
/// write history.
pub struct Store {
    state: Mutex<State>,
    changes: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                resource_version: 0,
                history: VecDeque::new(),
                next_seq: 1,
                change_log: VecDeque::new(),
                forgotten: 0,
            }),
            changes: watch::channel(0).0,
        }
    }
}

/// The answer of a call: the object or list, or the failure `Status`, plus the success code.
pub struct Answer {
    /// 200, or 201 for a create.
    pub code: u16,
    /// The body or the failure.
    pub result: Result<Value, Status>,
}

impl Store {
    /// Receives the latest resourceVersion after every stored write.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A copy of the write history, oldest first.
    pub fn history(&self) -> Vec<WriteRecord> {
        self.state.lock().history.iter().cloned().collect()
    }

    /// Runs one call and records it in the history if it is a write.
    pub fn call(&self, call: Call) -> Answer {
        let mut state = self.state.lock();
        let outcome = match call.verb {
            Verb::Get => get(&state, &call),
            Verb::List => list(&state, &call),
            // A watch is a stream: only the HTTP layer serves it, from `changes_since`.
            Verb::Watch => Err(Status::method_not_allowed()),
            Verb::Create => create(&mut state, &call),
            Verb::Update => update(&mut state, &call),
            Verb::Patch => patch_object(&mut state, &call),
            Verb::Delete => delete(&mut state, &call),
        };
        let code = match (&outcome, call.verb) {
            (Ok(_), Verb::Create) | (Ok(Written { created: true, .. }), _) => 201,
            (Ok(_), _) => 200,
            (Err(s), _) => s.code,
        };
        if call.verb.is_write() {
            record(&mut state, &call, &outcome, code);
            if outcome.is_ok() && !call.dry_run {
                self.changes.send_replace(state.resource_version);
            }
        }
        Answer {
            code,
            result: outcome.map(|w| w.body),
        }
    }

    /// The objects of `resource` in `namespace` (every namespace for `None`), by namespace
    /// and name, and the resourceVersion they are current at.
    pub fn snapshot(&self, resource: Resource, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let state = self.state.lock();
        let objects = state
            .objects
            .iter()
            .filter(|((r, ns, _), _)| *r == resource && namespace.is_none_or(|want| want == ns))
            .map(|(_, o)| o.clone())
            .collect();
        (objects, state.resource_version)
    }

    /// Every change after `resource_version`, oldest first; `Err` with the newest forgotten
    /// version if some of them are no longer kept.
    pub fn changes_since(&self, resource_version: u64) -> Result<Vec<Arc<Change>>, u64> {
        let state = self.state.lock();
        if resource_version < state.forgotten {
            return Err(state.forgotten);
        }
        let first = state
            .change_log
            .partition_point(|c| c.resource_version <= resource_version);
        Ok(state.change_log.range(first..).cloned().collect())
    }

    /// Records a write that an injected fault answered (`code` 0: the connection was dropped).
    pub(crate) fn record_injected(&self, call: &Call, code: u16) {
        let mut state = self.state.lock();
        let failure = Err(Status::internal("injected fault"));
        record(&mut state, call, &failure, code);
    }

    /// Stores `object` as given (status included, no strategy applied), creating or
    /// overwriting it; server fields (uid, creationTimestamp, resourceVersion) are set.
    /// For test and demo set-up; recorded in the history as a `create` without user agent.
    pub fn seed(&self, resource: Resource, object: Value) -> Result<Value, Status> {
        let mut state = self.state.lock();
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let call = Call::new(Verb::Create, resource, Some(&namespace)).body(object.clone());
        let outcome = seed(&mut state, resource, &namespace, object);
        let code = outcome.as_ref().map_or_else(|s| s.code, |_| 201);
        record(&mut state, &call, &outcome, code);
        if outcome.is_ok() {
            self.changes.send_replace(state.resource_version);
        }
        outcome.map(|w| w.body)
    }
}

/// A successful call: what to answer, and what to record.
struct Written {
    body: Value,
    /// For writes: the stored object (before it, for a delete).
    object: Option<Value>,
    created: bool,
}

impl Written {
    fn read(body: Value) -> Written {
        Written {
            body,
            object: None,
            created: false,
        }
    }
}

#[cfg(test)]
mod tests;
