//! The leader's copy of its group's member Leases, kept current by a watch instead of a
//! list every round: list once, then watch from that list's resourceVersion; watch again
//! from the last version seen when the server ends a watch; list again after `410 Gone` or
//! any failure, with capped backoff. In steady state a group costs the API server one open
//! watch, no list.
//!
//! Design rule: this keeps Lease objects only. Whether a member is live and what its
//! summary says is [`super::members::MemberReader`]'s job, on the same objects a list gives.
//! A server that cannot watch (405, as the embedded API answers) is reported as such, and
//! the leader lists every round instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::api_error::Readable;

/// Longest a single watch stays open before it is renewed (the API server's own limit is
/// larger; a shorter one keeps dead connections from lingering).
const WATCH_TIMEOUT_SECS: u32 = 290;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the watch has to offer right now.
#[derive(Debug, Clone, PartialEq)]
pub enum View {
    /// The member Leases as of the last event.
    Synced(Vec<Lease>),
    /// The first list has not answered yet.
    Pending,
    /// Not synced yet, or lost: the last failure, readable.
    Failing(String),
    /// The server does not serve watches: list instead.
    Unsupported,
}

#[derive(Default)]
struct Shared {
    leases: BTreeMap<String, Lease>,
    state: Option<Result<(), String>>,
    unsupported: bool,
}

/// A running watch of the Leases matching one label selector; stopped when dropped.
pub struct MemberWatch {
    shared: Arc<Mutex<Shared>>,
    changed: Arc<Notify>,
    task: JoinHandle<()>,
}

impl MemberWatch {
    /// Starts watching the Leases of `api` that match `selector`.
    pub fn start(api: Api<Lease>, selector: String) -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let changed = Arc::new(Notify::new());
        let task = tokio::spawn(run(api, selector, shared.clone(), changed.clone()));
        Self {
            shared,
            changed,
            task,
        }
    }

    /// Resolves once a Lease changed since the last call returned (or since the start):
    /// a member's news, for the leader to judge at once instead of at its next round.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The current view.
    pub fn view(&self) -> View {
        let s = self.shared.lock();
        if s.unsupported {
            return View::Unsupported;
        }
        match &s.state {
            Some(Ok(())) => View::Synced(s.leases.values().cloned().collect()),
            Some(Err(e)) => View::Failing(e.clone()),
            None => View::Pending,
        }
    }
}

impl Drop for MemberWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How one list-then-watch cycle ended.
enum Ended {
    /// Watch again from this version.
    Rewatch(String),
    /// List again (410 Gone, or a failure worth reporting).
    Relist(Option<String>),
    /// The server answered 405 to the watch.
    Unsupported,
}

async fn run(api: Api<Lease>, selector: String, shared: Arc<Mutex<Shared>>, changed: Arc<Notify>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let version = match api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => {
                let mut s = shared.lock();
                s.leases = list
                    .items
                    .into_iter()
                    .filter_map(|l| Some((l.metadata.name.clone()?, l)))
                    .collect();
                s.state = Some(Ok(()));
                changed.notify_one();
                list.metadata.resource_version.unwrap_or_default()
            }
            Err(e) => {
                shared.lock().state = Some(Err(format!("list: {}", Readable(&e))));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let mut version = version;
        loop {
            match watch_once(&api, &selector, &version, &shared, &changed).await {
                Ended::Rewatch(v) => {
                    backoff = FIRST_BACKOFF;
                    version = v;
                }
                Ended::Unsupported => {
                    shared.lock().unsupported = true;
                    return;
                }
                Ended::Relist(failure) => {
                    if let Some(why) = failure {
                        shared.lock().state = Some(Err(why));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    break;
                }
            }
        }
    }
}

/// One watch from `version`, applying its events to `shared` until it ends.
async fn watch_once(
    api: &Api<Lease>,
    selector: &str,
    version: &str,
    shared: &Mutex<Shared>,
    changed: &Notify,
) -> Ended {
    let params = WatchParams::default()
        .labels(selector)
        .timeout(WATCH_TIMEOUT_SECS);
    let stream = match api.watch(&params, version).await {
        Ok(s) => s,
        Err(kube::Error::Api(s)) if s.code == 405 => return Ended::Unsupported,
        Err(e) => return Ended::Relist(Some(format!("watch: {}", Readable(&e)))),
    };
    let mut stream = stream.boxed();
    let mut last = version.to_owned();
    loop {
        match stream.try_next().await {
            Ok(Some(event)) => match event {
                WatchEvent::Added(l) | WatchEvent::Modified(l) => {
                    if let Some(v) = &l.metadata.resource_version {
                        last.clone_from(v);
                    }
                    if let Some(name) = l.metadata.name.clone() {
                        shared.lock().leases.insert(name, l);
                        changed.notify_one();
                    }
                }
                WatchEvent::Deleted(l) => {
                    if let Some(v) = &l.metadata.resource_version {
                        last.clone_from(v);
                    }
                    if let Some(name) = &l.metadata.name {
                        shared.lock().leases.remove(name);
                        changed.notify_one();
                    }
                }
                WatchEvent::Bookmark(b) => last = b.metadata.resource_version,
                // 410 Gone: our version is too old; a list starts afresh (no failure).
                WatchEvent::Error(s) if s.code == 410 => return Ended::Relist(None),
                WatchEvent::Error(s) => {
                    return Ended::Relist(Some(format!(
                        "watch: {}",
                        Readable(&kube::Error::Api(s))
                    )))
                }
            },
            // The server ended the watch (its timeout): go on from where we are.
            Ok(None) => return Ended::Rewatch(last),
            Err(e) => return Ended::Relist(Some(format!("watch: {}", Readable(&e)))),
        }
    }
}

#[cfg(test)]
mod tests;
