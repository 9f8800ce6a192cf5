use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::message::{Kind, Notification, NotifyFormat};
use super::url::NotifyUrl;
use super::*;

fn notification(event: Kind) -> Notification {
    Notification {
        event,
        group: "reviews".into(),
        namespace: "bookinfo".into(),
        virtual_service: "reviews".into(),
        revision: "7c9d5b6f4".into(),
        summary: "reviews/v2 10 -> 0, reviews/v1 90 -> 100".into(),
        reason: "error ratio 0.5 > 0.05".into(),
        leader: "reviews-v2-aaa".into(),
        time: "2025-03-01T10:00:00Z".into(),
    }
}

fn config(attempts: u32, queue: usize) -> NotifyConfig {
    NotifyConfig {
        attempts,
        queue,
        ..NotifyConfig::new(
            NotifyUrl::parse("http://127.0.0.1:9/hook/SECRET").unwrap(),
            NotifyFormat::Json,
        )
    }
}

fn count(m: &Metrics, result: &str) -> u64 {
    let line = format!("canary_guard_notifications_total{{result=\"{result}\"}} ");
    m.render()
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |v| v.parse().unwrap())
}

/// One attempt of the fake transport.
type Attempt = std::pin::Pin<Box<dyn Future<Output = Result<(), SendError>> + Send>>;

/// A transport that records when each attempt started and answers from `answers`
/// (then keeps answering the last one).
fn recording(
    answers: Vec<Option<StatusCode>>,
) -> (Arc<Mutex<Vec<Instant>>>, impl Fn(Bytes) -> Attempt) {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let seen = starts.clone();
    let send = move |_body: Bytes| {
        let n = {
            let mut s = seen.lock();
            s.push(Instant::now());
            s.len() - 1
        };
        let answer = answers[n.min(answers.len() - 1)];
        Box::pin(async move {
            match answer {
                // None: hang until the attempt timeout cuts us off.
                None => std::future::pending().await,
                Some(s) if s.is_success() => Ok(()),
                Some(s) => Err(SendError::Status(s)),
            }
        }) as Attempt
    };
    (starts, send)
}

fn offsets(starts: &[Instant]) -> Vec<Duration> {
    starts.iter().map(|s| *s - starts[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn failing_receiver_is_tried_a_bounded_number_of_times_with_backoff() {
    let metrics = Arc::new(Metrics::new());
    let (starts, send) = recording(vec![Some(StatusCode::INTERNAL_SERVER_ERROR)]);
    let n = Notifier::spawn_with(config(3, 4), metrics.clone(), send);
    n.notify(notification(Kind::Rollback));
    n.close().await;
    assert_eq!(
        offsets(&starts.lock()),
        [
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(3)
        ]
    );
    assert_eq!(count(&metrics, "failed"), 1);
    assert_eq!(count(&metrics, "sent"), 0);
}

#[tokio::test(start_paused = true)]
async fn hanging_receiver_is_cut_off_by_the_attempt_timeout() {
    let metrics = Arc::new(Metrics::new());
    let (starts, send) = recording(vec![None]);
    let n = Notifier::spawn_with(config(2, 4), metrics.clone(), send);
    n.notify(notification(Kind::Restore));
    n.close().await;
    // 5 s timeout, 1 s backoff, 5 s timeout.
    assert_eq!(
        offsets(&starts.lock()),
        [Duration::ZERO, ATTEMPT_TIMEOUT + FIRST_BACKOFF]
    );
    assert_eq!(count(&metrics, "failed"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_succeeds_counts_once_as_sent() {
    let metrics = Arc::new(Metrics::new());
    let (starts, send) = recording(vec![Some(StatusCode::BAD_GATEWAY), Some(StatusCode::OK)]);
    let n = Notifier::spawn_with(config(3, 4), metrics.clone(), send);
    n.notify(notification(Kind::Rollback));
    n.notify(notification(Kind::Reassert));
    n.close().await;
    assert_eq!(
        starts.lock().len(),
        3,
        "one retry, then one attempt for the second"
    );
    assert_eq!((count(&metrics, "sent"), count(&metrics, "failed")), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_drops_and_counts_without_waiting() {
    let metrics = Arc::new(Metrics::new());
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let g = gate.clone();
    let send = move |_body: Bytes| {
        let g = g.clone();
        let _ = started_tx.send(());
        async move {
            let _permit = g.acquire().await.expect("open");
            Ok(())
        }
    };
    let n = Notifier::spawn_with(config(1, 1), metrics.clone(), send);
    n.notify(notification(Kind::Rollback));
    // The sender holds the first; the queue has room for one more.
    started.recv().await.unwrap();
    let before = Instant::now();
    for _ in 0..3 {
        n.notify(notification(Kind::Reassert));
    }
    assert_eq!(Instant::now(), before, "notify never waits");
    assert_eq!(count(&metrics, "dropped"), 2);
    gate.add_permits(2);
    n.close().await;
    assert_eq!(count(&metrics, "sent"), 2);
    assert_eq!(count(&metrics, "dropped"), 2);
}

#[test]
fn bodies_name_the_group_and_namespace() {
    let n = notification(Kind::Rollback);
    let json: serde_json::Value = serde_json::from_slice(&n.body(NotifyFormat::Json)).unwrap();
    assert_eq!(json["event"], "rollback");
    assert_eq!(json["group"], "reviews");
    assert_eq!(json["namespace"], "bookinfo");
    assert_eq!(json["revision"], "7c9d5b6f4");
    let slack: serde_json::Value = serde_json::from_slice(&n.body(NotifyFormat::Slack)).unwrap();
    let text = slack["text"].as_str().unwrap();
    assert_eq!(slack.as_object().unwrap().len(), 1, "{slack}");
    assert!(
        text.contains("rolled back group *reviews* in namespace *bookinfo*")
            && text.contains("error ratio 0.5 > 0.05"),
        "{text}"
    );
    let restore = notification(Kind::Restore).text();
    assert!(restore.contains("restored group *reviews*"), "{restore}");
}

#[test]
fn the_url_is_never_shown() {
    let url = NotifyUrl::parse("http://hooks.example:8080/services/T000/B000/SECRET").unwrap();
    assert_eq!(url.to_string(), "http://hooks.example:8080/<redacted>");
    assert!(!format!("{url:?}").contains("SECRET"));
    assert!(!format!("{:?}", config(1, 1)).contains("SECRET"));
    let e = NotifyUrl::parse("https://hooks.slack.com/services/SECRET").unwrap_err();
    assert!(
        e.contains("https is not supported") && e.contains("relay"),
        "{e}"
    );
    assert!(!e.contains("SECRET"));
    assert!(NotifyUrl::parse("http://user:SECRET@host/x")
        .unwrap_err()
        .contains("credentials"));
    assert!(NotifyUrl::parse("ftp://host/x").is_err());
}
