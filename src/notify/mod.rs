//! Notifications from the leader: each rollback, re-assert and restore is
//! POSTed to `--notify-url` by a task of its own.
//!
//! Design rule: the VirtualService write never waits on a notification.
//! [`Notifier::notify`] only queues (bounded; a full queue drops and counts),
//! and the sender bounds every attempt, retries a few times with backoff, then
//! counts the failure and moves on. The URL is never logged.

pub mod message;
pub mod url;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::admin::metrics::{notification_results, Metrics};
use message::{Notification, NotifyFormat};
use url::NotifyUrl;

/// Attempts per notification, the first included.
pub const ATTEMPTS: u32 = 3;
/// Longest wait for the receiver's response headers, per attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait before the second attempt; doubled before each later one.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Notifications waiting to be sent at most; more are dropped and counted.
pub const QUEUE: usize = 32;

/// Where and how to send, and how hard to try.
#[derive(Clone, Debug, PartialEq)]
pub struct NotifyConfig {
    /// The receiver.
    pub url: NotifyUrl,
    /// The body format.
    pub format: NotifyFormat,
    /// Attempts per notification (at least 1).
    pub attempts: u32,
    /// Bound on each attempt.
    pub attempt_timeout: Duration,
    /// Wait before the second attempt, doubled each time.
    pub first_backoff: Duration,
    /// Queue capacity (at least 1).
    pub queue: usize,
}

impl NotifyConfig {
    /// The defaults above for `url` and `format`.
    pub fn new(url: NotifyUrl, format: NotifyFormat) -> Self {
        Self {
            url,
            format,
            attempts: ATTEMPTS,
            attempt_timeout: ATTEMPT_TIMEOUT,
            first_backoff: FIRST_BACKOFF,
            queue: QUEUE,
        }
    }
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The receiver answered, but not 2xx.
    #[error("the receiver answered {0}")]
    Status(StatusCode),
    /// No response headers within the attempt timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting or sending failed.
    #[error("request failed: {0}")]
    Request(String),
}

impl SendError {
    /// A stable label for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            SendError::Status(_) => "status",
            SendError::Timeout(_) => "timeout",
            SendError::Request(_) => "request",
        }
    }
}

/// The leader's handle on the sender task.
pub struct Notifier {
    tx: mpsc::Sender<Notification>,
    metrics: Arc<Metrics>,
    task: JoinHandle<()>,
}

impl Notifier {
    /// Starts the sender task, POSTing with hyper's client (plain http).
    pub fn spawn(config: NotifyConfig, metrics: Arc<Metrics>) -> Self {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let uri = config.url.uri().clone();
        let agent = crate::cluster::client::user_agent();
        let send = move |body: Bytes| {
            let request = Request::post(uri.clone())
                .header(CONTENT_TYPE, "application/json")
                .header(USER_AGENT, agent.as_str())
                .body(Full::new(body))
                .expect("a parsed URI makes a valid request");
            let response = client.request(request);
            async move {
                // hyper's error names no URL; its source chain is not shown.
                let response = response
                    .await
                    .map_err(|e| SendError::Request(e.to_string()))?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(SendError::Status(response.status()))
                }
            }
        };
        Self::spawn_with(config, metrics, send)
    }

    /// Starts the sender task with `send` as the transport.
    fn spawn_with<F, Fut>(config: NotifyConfig, metrics: Arc<Metrics>, send: F) -> Self
    where
        F: Fn(Bytes) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), SendError>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let task = tokio::spawn(deliver(rx, config, metrics.clone(), send));
        Self { tx, metrics, task }
    }

    /// Queues `n` and returns at once; a full queue drops it (counted, logged).
    pub fn notify(&self, n: Notification) {
        if let Err(e) = self.tx.try_send(n) {
            self.metrics.notification(notification_results::DROPPED);
            let (n, why) = match e {
                mpsc::error::TrySendError::Full(n) => (n, "the queue is full"),
                mpsc::error::TrySendError::Closed(n) => (n, "the sender stopped"),
            };
            tracing::warn!(event = ?n.event, group = %n.group, "notification dropped: {why}");
        }
    }

    /// Stops taking notifications and waits until the queued ones are sent or given up.
    pub async fn close(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// Sends queued notifications one at a time until the queue closes.
async fn deliver<F, Fut>(
    mut rx: mpsc::Receiver<Notification>,
    config: NotifyConfig,
    metrics: Arc<Metrics>,
    send: F,
) where
    F: Fn(Bytes) -> Fut,
    Fut: Future<Output = Result<(), SendError>>,
{
    while let Some(n) = rx.recv().await {
        let body = Bytes::from(n.body(config.format));
        let mut backoff = config.first_backoff;
        let mut attempt = 1;
        loop {
            let result =
                match tokio::time::timeout(config.attempt_timeout, send(body.clone())).await {
                    Ok(r) => r,
                    Err(_) => Err(SendError::Timeout(config.attempt_timeout)),
                };
            match result {
                Ok(()) => {
                    metrics.notification(notification_results::SENT);
                    tracing::info!(event = ?n.event, group = %n.group, attempt, url = %config.url, "notification sent");
                    break;
                }
                Err(e) if attempt >= config.attempts => {
                    metrics.notification(notification_results::FAILED);
                    tracing::warn!(event = ?n.event, group = %n.group, attempts = attempt, url = %config.url, reason = e.reason(), error = %e, "notification not delivered: giving up");
                    break;
                }
                Err(e) => {
                    tracing::debug!(event = ?n.event, attempt, reason = e.reason(), error = %e, "notification attempt failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
            }
        }
    }
}
