//! The write history tests read: one [`WriteRecord`] per write the store answers.
//!
//! Design rule: every write is recorded, whether it was stored or not (failures, dry runs
//! and writes an injected fault answered too), numbered without gaps; only the last
//! [`HISTORY_LIMIT`] are kept, so memory stays bounded.

use std::time::SystemTime;

use serde_json::Value;
use tokio::time::Instant;

use super::{State, Written};
use crate::embedded_api::call::{Call, Verb};
use crate::embedded_api::resource::Resource;
use crate::embedded_api::status::Status;

/// How many write records are kept; older ones are dropped so memory stays bounded.
pub(super) const HISTORY_LIMIT: usize = 10_000;

/// One write (create, update, patch, delete), successful or not.
#[derive(Debug, Clone)]
pub struct WriteRecord {
    /// Position among all writes, from 1, without gaps.
    pub seq: u64,
    /// When it was answered (tokio time, so it follows a paused clock).
    pub at: Instant,
    /// Wall-clock time of the answer.
    pub wall: SystemTime,
    /// The verb.
    pub verb: Verb,
    /// The resource.
    pub resource: Resource,
    /// The namespace.
    pub namespace: String,
    /// The object name (the generated one, for a successful `generateName` create).
    pub name: String,
    /// `User-Agent` of the caller, if any.
    pub user_agent: Option<String>,
    /// `fieldManager` query parameter, if any.
    pub field_manager: Option<String>,
    /// resourceVersion after the write (for a failure, the stored one, if any).
    pub resource_version: Option<String>,
    /// The object after the write (before it, for a delete); `None` if there is none.
    pub object: Option<Value>,
    /// HTTP status code of the answer.
    pub code: u16,
    /// `dryRun=All`: nothing was stored.
    pub dry_run: bool,
}

impl WriteRecord {
    /// True if the write was answered with a 2xx.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

pub(super) fn record(state: &mut State, call: &Call, outcome: &Result<Written, Status>, code: u16) {
    let key_name = call.name.clone().unwrap_or_default();
    let (object, name) = match outcome {
        Ok(w) => {
            let name = w
                .object
                .as_ref()
                .and_then(|o| o["metadata"]["name"].as_str())
                .map_or(key_name, str::to_owned);
            (w.object.clone(), name)
        }
        Err(_) => (None, key_name),
    };
    let namespace = call.namespace.clone().unwrap_or_default();
    let resource_version = match &object {
        Some(o) => o["metadata"]["resourceVersion"].as_str().map(str::to_owned),
        None => state
            .objects
            .get(&(call.resource, namespace.clone(), name.clone()))
            .and_then(|o| o["metadata"]["resourceVersion"].as_str())
            .map(str::to_owned),
    };
    let seq = state.next_seq;
    state.next_seq += 1;
    if state.history.len() == HISTORY_LIMIT {
        state.history.pop_front();
    }
    state.history.push_back(WriteRecord {
        seq,
        at: Instant::now(),
        wall: SystemTime::now(),
        verb: call.verb,
        resource: call.resource,
        namespace,
        name,
        user_agent: call.user_agent.clone(),
        field_manager: call.field_manager.clone(),
        resource_version,
        object,
        code,
        dry_run: call.dry_run,
    });
}
