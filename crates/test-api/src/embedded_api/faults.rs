//! Faults injected into HTTP answers on demand: error statuses, latency, requests held
//! until a test lets them go, dropped connections, and a switch that makes the API
//! unreachable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::call::Verb;
use super::resource::Resource;

/// What a matching rule does to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer with this HTTP code and a real-looking `Status` body; with `retry_after`, also
    /// a `Retry-After` header and `details.retryAfterSeconds`.
    Status {
        /// HTTP status code (e.g. 500, 403, 429).
        code: u16,
        /// Seconds for `Retry-After`.
        retry_after: Option<u32>,
    },
    /// Wait this long, then handle the request normally (or apply the next matching rule).
    Delay(Duration),
    /// Read the request, hold it until the gate opens, then handle it normally, even if
    /// the client has stopped waiting: a write in flight for exactly as long as a test
    /// needs, with no delay to guess.
    Hold(Gate),
    /// Close the connection without answering.
    Drop,
}

/// Where [`FaultAction::Hold`] keeps requests. Clones share the gate.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<GateState>);

#[derive(Debug, Default)]
struct GateState {
    open: watch::Sender<bool>,
    arrived: watch::Sender<usize>,
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Lets the held requests, and every later one, through.
    pub fn open(&self) {
        self.0.open.send_replace(true);
    }

    /// How many requests have reached the gate so far (held or let through).
    pub fn arrivals(&self) -> usize {
        *self.0.arrived.borrow()
    }

    /// Waits until `n` requests have reached the gate (held or let through).
    pub async fn arrived(&self, n: usize) {
        let mut arrived = self.0.arrived.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = arrived.wait_for(|a| *a >= n).await;
    }

    /// Counts a (fully received) request in and waits until the gate is open.
    pub(crate) async fn pass(&self) {
        let mut open = self.0.open.subscribe();
        self.0.arrived.send_modify(|a| *a += 1);
        let _ = open.wait_for(|o| *o).await;
    }
}

/// Gates are equal when they are the same gate.
impl PartialEq for Gate {
    fn eq(&self, other: &Gate) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Gate {}

/// A fault rule: which requests it matches and what it does to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    verb: Option<Verb>,
    resource: Option<Resource>,
    name: Option<String>,
    user_agent: Option<String>,
    action: FaultAction,
    remaining: Option<u32>,
}

impl FaultRule {
    /// A rule doing `action` to every request, until removed.
    pub fn new(action: FaultAction) -> FaultRule {
        FaultRule {
            verb: None,
            resource: None,
            name: None,
            user_agent: None,
            action,
            remaining: None,
        }
    }

    /// Answers `code` with a `Status` body.
    pub fn status(code: u16) -> FaultRule {
        FaultRule::new(FaultAction::Status {
            code,
            retry_after: None,
        })
    }

    /// Only requests with this verb.
    pub fn verb(mut self, verb: Verb) -> FaultRule {
        self.verb = Some(verb);
        self
    }

    /// Only requests on this resource.
    pub fn resource(mut self, resource: Resource) -> FaultRule {
        self.resource = Some(resource);
        self
    }

    /// Only requests naming this object.
    pub fn name(mut self, name: &str) -> FaultRule {
        self.name = Some(name.to_owned());
        self
    }

    /// Only requests whose `User-Agent` is exactly this: one client among several.
    pub fn user_agent(mut self, agent: &str) -> FaultRule {
        self.user_agent = Some(agent.to_owned());
        self
    }

    /// Applies to the next `n` matching requests only.
    pub fn times(mut self, n: u32) -> FaultRule {
        self.remaining = Some(n);
        self
    }

    fn matches(&self, req: &Request<'_>) -> bool {
        self.verb.is_none_or(|v| v == req.verb)
            && self.resource.is_none_or(|r| r == req.resource)
            && self.name.as_deref().is_none_or(|n| Some(n) == req.name)
            && self
                .user_agent
                .as_deref()
                .is_none_or(|a| Some(a) == req.user_agent)
    }
}

/// What fault rules match a request on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub verb: Verb,
    pub resource: Resource,
    pub name: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// Identifies an installed rule, to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultId(u64);

/// What the server must do to one request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FaultVerdict {
    /// Total delay to add first.
    pub delay: Duration,
    /// Then this instead of the real answer, if any.
    pub action: Option<FaultAction>,
}

/// The installed fault rules and the refuse switch.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<(FaultId, FaultRule)>>,
    next_id: AtomicU64,
    /// A channel rather than a flag so that open watches can end the moment it turns on.
    refusing: watch::Sender<bool>,
}

impl Faults {
    /// Installs `rule` after the existing ones.
    pub fn add(&self, rule: FaultRule) -> FaultId {
        let id = FaultId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.rules.lock().push((id, rule));
        id
    }

    /// Removes one rule.
    pub fn remove(&self, id: FaultId) {
        self.rules.lock().retain(|(i, _)| *i != id);
    }

    /// Removes every rule (the refuse switch is left as it is).
    pub fn clear(&self) {
        self.rules.lock().clear();
    }

    /// While on, new connections are closed at once, requests on open ones are dropped and
    /// open watches are cut: the API looks gone.
    pub fn set_refusing(&self, refusing: bool) {
        self.refusing.send_replace(refusing);
    }

    /// Whether the refuse switch is on.
    pub fn is_refusing(&self) -> bool {
        *self.refusing.borrow()
    }

    /// Sees the refuse switch change.
    pub(crate) fn refusing_changes(&self) -> watch::Receiver<bool> {
        self.refusing.subscribe()
    }

    /// Consumes the rules matching a request: delays add up, the first hold, status or
    /// drop wins.
    pub(crate) fn take(&self, req: Request<'_>) -> FaultVerdict {
        let mut verdict = FaultVerdict::default();
        let mut rules = self.rules.lock();
        for (_, rule) in rules.iter_mut() {
            if !rule.matches(&req) || rule.remaining == Some(0) {
                continue;
            }
            if let Some(n) = rule.remaining.as_mut() {
                *n -= 1;
            }
            match &rule.action {
                FaultAction::Delay(d) => verdict.delay += *d,
                action => {
                    verdict.action = Some(action.clone());
                    break;
                }
            }
        }
        rules.retain(|(_, r)| r.remaining != Some(0));
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(verb: Verb, resource: Resource, name: Option<&str>) -> Request<'_> {
        Request {
            verb,
            resource,
            name,
            user_agent: None,
        }
    }

    #[test]
    fn rules_match_count_down_and_stack_delays() {
        let faults = Faults::default();
        faults.add(FaultRule::new(FaultAction::Delay(Duration::from_millis(5))).times(1));
        faults.add(
            FaultRule::status(500)
                .verb(Verb::Patch)
                .resource(Resource::VirtualServices)
                .times(2),
        );
        let other = faults.take(req(Verb::Get, Resource::VirtualServices, Some("reviews")));
        assert_eq!(
            other,
            FaultVerdict {
                delay: Duration::from_millis(5),
                action: None
            }
        );
        let hit = |name| {
            faults
                .take(req(Verb::Patch, Resource::VirtualServices, name))
                .action
        };
        let five_hundred = Some(FaultAction::Status {
            code: 500,
            retry_after: None,
        });
        assert_eq!(hit(Some("reviews")), five_hundred);
        assert_eq!(hit(None), five_hundred);
        assert_eq!(hit(Some("reviews")), None);
        let id = faults.add(FaultRule::new(FaultAction::Drop).name("x"));
        assert_eq!(
            faults
                .take(req(Verb::Get, Resource::Leases, Some("y")))
                .action,
            None
        );
        assert_eq!(
            faults
                .take(req(Verb::Get, Resource::Leases, Some("x")))
                .action,
            Some(FaultAction::Drop)
        );
        faults.remove(id);
        assert_eq!(
            faults
                .take(req(Verb::Get, Resource::Leases, Some("x")))
                .action,
            None
        );
    }

    #[tokio::test]
    async fn holds_only_the_named_client_until_the_gate_opens() {
        let faults = Faults::default();
        let gate = Gate::new();
        faults.add(FaultRule::new(FaultAction::Hold(gate.clone())).user_agent("a"));
        let from = |agent| {
            faults
                .take(Request {
                    user_agent: agent,
                    ..req(Verb::Patch, Resource::VirtualServices, Some("reviews"))
                })
                .action
        };
        assert_eq!(from(Some("b")), None);
        assert_eq!(from(None), None);
        let Some(FaultAction::Hold(held)) = from(Some("a")) else {
            panic!("client a is not held");
        };
        assert_eq!(held, gate);
        assert_ne!(held, Gate::new());

        let request = tokio::spawn(async move { held.pass().await });
        gate.arrived(1).await;
        tokio::task::yield_now().await;
        assert!(!request.is_finished(), "passed a closed gate");
        gate.open();
        request.await.unwrap();
        // An open gate lets later requests through at once.
        gate.pass().await;
        assert_eq!(gate.arrivals(), 2);
    }
}
