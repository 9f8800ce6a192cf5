//! What a notification says, and its two encodings: a generic JSON object and
//! a Slack-compatible `{"text": ...}` message. Pure: no I/O.

use clap::ValueEnum;
use serde::Serialize;
use serde_json::json;

/// The body format of `--notify-url` requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NotifyFormat {
    /// One JSON object with every field (see [`Notification`]).
    Json,
    /// `{"text": ...}`, what Slack, Mattermost and Rocket.Chat incoming webhooks read.
    Slack,
}

/// What the leader did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The canary's traffic went back to stable.
    Rollback,
    /// Someone put traffic back on the failed revision; the guard reverted it again.
    Reassert,
    /// A new revision runs: the recorded weights were put back.
    Restore,
}

/// One notification: everything a person needs to know what happened where.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notification {
    /// What the leader did.
    pub event: Kind,
    /// Guard group.
    pub group: String,
    /// Namespace of the group and the VirtualService.
    pub namespace: String,
    /// The VirtualService written.
    pub virtual_service: String,
    /// The canary revision concerned (the failed one for rollbacks).
    pub revision: String,
    /// The weights written, in words.
    pub summary: String,
    /// Why (the breach for rollbacks).
    pub reason: String,
    /// The leader that wrote it.
    pub leader: String,
    /// When, RFC 3339.
    pub time: String,
}

impl Notification {
    /// The request body in `format`.
    pub fn body(&self, format: NotifyFormat) -> Vec<u8> {
        let value = match format {
            NotifyFormat::Json => serde_json::to_value(self).expect("serializes"),
            NotifyFormat::Slack => json!({ "text": self.text() }),
        };
        serde_json::to_vec(&value).expect("serializes")
    }

    /// One paragraph for chat.
    pub fn text(&self) -> String {
        let what = match self.event {
            Kind::Rollback => ":rotating_light: canary-guard rolled back",
            Kind::Reassert => ":warning: canary-guard re-asserted the rollback of",
            Kind::Restore => ":white_check_mark: canary-guard restored",
        };
        format!(
            "{what} group *{}* in namespace *{}* (VirtualService {}, revision {}): {}. {} (leader {}, {})",
            self.group,
            self.namespace,
            self.virtual_service,
            if self.revision.is_empty() { "-" } else { &self.revision },
            self.summary,
            self.reason,
            self.leader,
            self.time
        )
    }
}
