//! Faults injected into HTTP answers on demand: error statuses, latency, dropped connections,
//! and a switch that makes the API unreachable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

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
    /// Close the connection without answering.
    Drop,
}

/// A fault rule: which requests it matches and what it does to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    verb: Option<Verb>,
    resource: Option<Resource>,
    name: Option<String>,
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

    /// Applies to the next `n` matching requests only.
    pub fn times(mut self, n: u32) -> FaultRule {
        self.remaining = Some(n);
        self
    }

    fn matches(&self, verb: Verb, resource: Resource, name: Option<&str>) -> bool {
        self.verb.is_none_or(|v| v == verb)
            && self.resource.is_none_or(|r| r == resource)
            && self.name.as_deref().is_none_or(|n| Some(n) == name)
    }
}

/// Identifies an installed rule, to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultId(u64);

/// What the server must do to one request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
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
    refusing: AtomicBool,
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

    /// While on, new connections are closed at once and requests on open ones are dropped:
    /// the API looks gone.
    pub fn set_refusing(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Whether the refuse switch is on.
    pub fn is_refusing(&self) -> bool {
        self.refusing.load(Ordering::SeqCst)
    }

    /// Consumes the rules matching a request: delays add up, the first status or drop wins.
    pub(crate) fn take(&self, verb: Verb, resource: Resource, name: Option<&str>) -> Verdict {
        let mut verdict = Verdict::default();
        let mut rules = self.rules.lock();
        for (_, rule) in rules.iter_mut() {
            if !rule.matches(verb, resource, name) || rule.remaining == Some(0) {
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
        let other = faults.take(Verb::Get, Resource::VirtualServices, Some("reviews"));
        assert_eq!(
            other,
            Verdict {
                delay: Duration::from_millis(5),
                action: None
            }
        );
        let hit = |name| {
            faults
                .take(Verb::Patch, Resource::VirtualServices, name)
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
            faults.take(Verb::Get, Resource::Leases, Some("y")).action,
            None
        );
        assert_eq!(
            faults.take(Verb::Get, Resource::Leases, Some("x")).action,
            Some(FaultAction::Drop)
        );
        faults.remove(id);
        assert_eq!(
            faults.take(Verb::Get, Resource::Leases, Some("x")).action,
            None
        );
    }
}
