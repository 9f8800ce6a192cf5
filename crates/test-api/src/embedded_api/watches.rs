//! Watches: a list request with `watch=true` answered, as kube-apiserver answers it, with a
//! stream of `ADDED`, `MODIFIED` and `DELETED` events (one JSON document a line) for the
//! objects of one resource in one namespace (or all) that match a label selector, from a
//! resourceVersion on.
//!
//! Design rule: a watch keeps no copy of the store and no queue beyond one batch. Whenever
//! the store says something changed, it reads the store's bounded change log after the last
//! resourceVersion it sent, so an idle or slow client costs a cursor, not memory; one that
//! falls behind what the log keeps is told `410 Expired` and must list again.

use std::collections::VecDeque;
use std::num::IntErrorKind;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::call::Call;
use super::resource::Resource;
use super::selector::Selector;
use super::status::Status;
use super::store::{present, Change};
use super::Dropped;
use super::EmbeddedApi;

/// How long a watch stays open when the client sets no `timeoutSeconds`: the real server's
/// `--min-request-timeout` default (it picks at random between one and two times that).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// One watch request: what it follows, from where, for how long.
#[derive(Debug)]
pub struct Watch {
    resource: Resource,
    version: String,
    namespace: Option<String>,
    selector: Selector,
    start: Start,
    timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// resourceVersion `""` or `"0"`: the current objects as `ADDED`, then their changes.
    Now,
    /// Every change after this resourceVersion.
    After(u64),
}

impl Watch {
    /// Reads a watch request: the target and label selector of `call`, and the
    /// `resourceVersion` and `timeoutSeconds` query parameters. Fails as the real server
    /// does, in its order: parameters (400), then the version (500, no reason).
    pub fn new(
        call: &Call,
        resource_version: Option<&str>,
        timeout_seconds: Option<&str>,
    ) -> Result<Watch, Status> {
        let timeout = parse_timeout(timeout_seconds.filter(|t| !t.is_empty()))?;
        let selector = match call.label_selector.as_deref() {
            Some(s) => Selector::parse(s).map_err(Status::bad_request)?,
            None => Selector::default(),
        };
        Ok(Watch {
            resource: call.resource,
            version: call.version.clone(),
            namespace: call.namespace.clone(),
            selector,
            start: parse_start(resource_version.unwrap_or_default())?,
            timeout,
        })
    }

    /// The watch's events as they happen, each a line of JSON, until its timeout, until
    /// `closing` turns true (the server stops), or until the refuse switch cuts it (an
    /// error: the connection is dropped).
    pub fn events(
        self,
        api: EmbeddedApi,
        closing: watch::Receiver<bool>,
    ) -> impl Stream<Item = Result<Bytes, Dropped>> + Send + 'static {
        // Subscribed before reading, so that no write between the two goes unnoticed.
        let changes = api.subscribe();
        let mut ready = VecDeque::new();
        let cursor = match self.start {
            Start::Now => {
                let (objects, version) = api
                    .store()
                    .snapshot(self.resource, self.namespace.as_deref());
                ready.extend(
                    objects
                        .into_iter()
                        .filter(|o| self.matches(o))
                        .map(|o| line("ADDED", present(self.resource, &self.version, o))),
                );
                version
            }
            Start::After(version) => version,
        };
        let follower = Follower {
            deadline: Instant::now() + self.timeout,
            refusing: api.faults().refusing_changes(),
            api,
            watch: self,
            cursor,
            ready,
            expired: false,
            changes,
            closing,
        };
        futures_util::stream::unfold(follower, |mut f| async move {
            let item = f.next().await?;
            Some((item, f))
        })
    }

    fn matches(&self, object: &Value) -> bool {
        self.selector
            .matches(object["metadata"]["labels"].as_object())
    }

    /// What this watch sees of `change`, as kube-apiserver's watch cache decides it: an
    /// object that starts matching is `ADDED`, one that stops (deleted, or its labels
    /// changed) is `DELETED` with its last matching state at the version of the write.
    fn event(&self, change: &Change) -> Option<Bytes> {
        let ours = change.resource == self.resource
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == change.namespace);
        if !ours {
            return None;
        }
        let passes = |o: &Option<Value>| o.as_ref().is_some_and(|o| self.matches(o));
        let (kind, object) = match (passes(&change.object), passes(&change.previous)) {
            (true, false) => ("ADDED", change.object.clone()?),
            (true, true) => ("MODIFIED", change.object.clone()?),
            (false, true) => {
                let mut last = change.previous.clone()?;
                last["metadata"]["resourceVersion"] = change.resource_version.to_string().into();
                ("DELETED", last)
            }
            (false, false) => return None,
        };
        Some(line(kind, present(self.resource, &self.version, object)))
    }
}

/// `timeoutSeconds`, read as Go's `strconv.ParseInt` reads it: 0 or none is the default, a
/// negative one has passed already.
fn parse_timeout(given: Option<&str>) -> Result<Duration, Status> {
    let Some(text) = given else {
        return Ok(DEFAULT_TIMEOUT);
    };
    let seconds: i64 = text.parse().map_err(|e: std::num::ParseIntError| {
        let why = match e.kind() {
            IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => "value out of range",
            _ => "invalid syntax",
        };
        Status::bad_request(format!("strconv.ParseInt: parsing {text:?}: {why}"))
    })?;
    Ok(match seconds {
        0 => DEFAULT_TIMEOUT,
        // Capped (at 136 years) so that the deadline cannot overflow.
        s => Duration::from_secs(s.clamp(0, i64::from(u32::MAX)).unsigned_abs()),
    })
}

/// `resourceVersion`, read as Go's `strconv.ParseUint` reads it (digits only).
fn parse_start(given: &str) -> Result<Start, Status> {
    if given.is_empty() {
        return Ok(Start::Now);
    }
    let version = given
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| given.parse::<u64>().ok())
        .flatten()
        .ok_or_else(|| Status::unparsable_resource_version(given))?;
    Ok(match version {
        0 => Start::Now,
        v => Start::After(v),
    })
}

/// One watch event and its newline.
fn line(kind: &str, object: Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// An open watch: where it is in the change log and what it waits on.
struct Follower {
    api: EmbeddedApi,
    watch: Watch,
    /// The resourceVersion of the last change read.
    cursor: u64,
    /// Lines read and not yet sent.
    ready: VecDeque<Bytes>,
    /// A `410 Expired` is queued: end after it.
    expired: bool,
    changes: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    refusing: watch::Receiver<bool>,
    deadline: Instant,
}

impl Follower {
    /// The next line, `None` at the end, an error when the connection must be cut.
    async fn next(&mut self) -> Option<Result<Bytes, Dropped>> {
        loop {
            if *self.refusing.borrow() {
                return Some(Err(Dropped));
            }
            if *self.closing.borrow() || Instant::now() >= self.deadline {
                return None;
            }
            if let Some(line) = self.ready.pop_front() {
                return Some(Ok(line));
            }
            if self.expired {
                return None;
            }
            self.read();
            if !self.ready.is_empty() || self.expired {
                continue;
            }
            // Every sender lives as long as the server: a closed channel means it is gone.
            tokio::select! {
                changed = self.changes.changed() => if changed.is_err() { return None },
                _ = self.closing.wait_for(|c| *c) => return None,
                refusing = self.refusing.wait_for(|r| *r) => if refusing.is_err() { return None },
                () = tokio::time::sleep_until(self.deadline) => return None,
            }
        }
    }

    /// Queues what this watch sees of the changes after the cursor.
    fn read(&mut self) {
        match self.api.store().changes_since(self.cursor) {
            Ok(changes) => {
                self.ready
                    .extend(changes.iter().filter_map(|c| self.watch.event(c)));
                if let Some(last) = changes.last() {
                    self.cursor = last.resource_version;
                }
            }
            Err(forgotten) => {
                let status = Status::expired(self.cursor, forgotten);
                self.ready.push_back(line("ERROR", status.to_json()));
                self.expired = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded_api::call::Verb;

    fn watch(selector: Option<&str>, start: Start) -> Watch {
        let mut call = Call::new(Verb::Watch, Resource::Leases, Some("shop"));
        call.label_selector = selector.map(str::to_owned);
        let mut w = Watch::new(&call, None, None).unwrap();
        w.start = start;
        w
    }

    fn lease(name: &str, group: &str, version: u64) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": version.to_string(),
                "labels": {"group": group}}})
    }

    fn change(version: u64, object: Option<Value>, previous: Option<Value>) -> Change {
        Change {
            resource_version: version,
            resource: Resource::Leases,
            namespace: "shop".into(),
            object,
            previous,
        }
    }

    fn seen(w: &Watch, c: &Change) -> Option<(String, String, String)> {
        let event: Value = serde_json::from_slice(&w.event(c)?).unwrap();
        let object = &event["object"];
        Some((
            event["type"].as_str().unwrap().to_owned(),
            object["metadata"]["labels"]["group"]
                .as_str()
                .unwrap()
                .to_owned(),
            object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_owned(),
        ))
    }

    #[test]
    fn label_changes_add_and_delete_as_the_watch_cache_does() {
        let w = watch(Some("group=reviews"), Start::Now);
        let t = |kind: &str, group: &str, version: &str| {
            Some((kind.to_owned(), group.to_owned(), version.to_owned()))
        };
        let (a, b) = (lease("a", "reviews", 1), lease("a", "reviews", 2));
        let away = lease("a", "ratings", 3);
        assert_eq!(
            seen(&w, &change(1, Some(a.clone()), None)),
            t("ADDED", "reviews", "1")
        );
        assert_eq!(
            seen(&w, &change(2, Some(b.clone()), Some(a))),
            t("MODIFIED", "reviews", "2")
        );
        // Out of the selector: the last matching state, at the version of the write.
        assert_eq!(
            seen(&w, &change(3, Some(away.clone()), Some(b.clone()))),
            t("DELETED", "reviews", "3")
        );
        assert_eq!(seen(&w, &change(4, Some(away.clone()), Some(away))), None);
        assert_eq!(
            seen(&w, &change(5, None, Some(b))),
            t("DELETED", "reviews", "5")
        );
        let mut elsewhere = change(6, Some(lease("b", "reviews", 6)), None);
        elsewhere.namespace = "other".into();
        assert_eq!(seen(&w, &elsewhere), None);
        elsewhere.resource = Resource::Pods;
        elsewhere.namespace = "shop".into();
        assert_eq!(seen(&w, &elsewhere), None);
    }

    #[test]
    fn parameters_fail_as_the_real_server_does() {
        assert_eq!(parse_start(""), Ok(Start::Now));
        assert_eq!(parse_start("0"), Ok(Start::Now));
        assert_eq!(parse_start("42"), Ok(Start::After(42)));
        let bad = parse_start("abc").unwrap_err();
        assert_eq!((bad.code, bad.reason.as_str()), (500, ""));
        assert_eq!(
            bad.message,
            "resourceVersion: Invalid value: \"abc\": strconv.ParseUint: parsing \"abc\": invalid syntax"
        );
        assert!(parse_start("+1").is_err());
        assert!(parse_start("99999999999999999999")
            .unwrap_err()
            .message
            .ends_with("value out of range"));

        assert_eq!(parse_timeout(None), Ok(DEFAULT_TIMEOUT));
        assert_eq!(parse_timeout(Some("0")), Ok(DEFAULT_TIMEOUT));
        assert_eq!(parse_timeout(Some("5")), Ok(Duration::from_secs(5)));
        assert_eq!(parse_timeout(Some("-1")), Ok(Duration::ZERO));
        let bad = parse_timeout(Some("x")).unwrap_err();
        assert_eq!((bad.code, bad.reason.as_str()), (400, "BadRequest"));
        assert_eq!(
            bad.message,
            "strconv.ParseInt: parsing \"x\": invalid syntax"
        );
    }
}
