//! Notifications against a real local receiver: sent once per rollback, re-assert and
//! restore, after the VirtualService write; a receiver that fails, hangs or is slow
//! costs bounded retries and never delays a write; `demo --notify-url` delivers one.

mod support;

/// `--notify-url URL` with its defaults.
fn notify_to(url: &str) -> canary_guard::notify::NotifyConfig {
    canary_guard::notify::NotifyConfig::new(
        canary_guard::notify::url::NotifyUrl::parse(url).unwrap(),
        canary_guard::notify::message::NotifyFormat::Json,
    )
}

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use canary_guard::admin::metrics::Metrics;
use canary_guard::notify::message::{Kind, Notification, NotifyFormat};
use canary_guard::notify::url::NotifyUrl;
use canary_guard::notify::{Notifier, NotifyConfig};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use support::cluster::*;
use support::*;

/// How the receiver answers.
#[derive(Clone, Copy)]
enum Answer {
    Ok,
    Fail,
    Hang,
    After(Duration),
}

/// One request the receiver got: when it arrived and its JSON body.
struct Hit {
    at: Instant,
    body: serde_json::Value,
}

/// A webhook receiver on the loopback; `hits` changes on every request.
struct Receiver {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Hit>>>,
    hits: watch::Receiver<usize>,
}

impl Receiver {
    async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, hits) = watch::channel(0);
        let tx = Arc::new(tx);
        let l = log.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (l, tx) = (l.clone(), tx.clone());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (l, tx) = (l.clone(), tx.clone());
                    async move {
                        let at = Instant::now();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        l.lock().push(Hit {
                            at,
                            body: serde_json::from_slice(&body).unwrap(),
                        });
                        tx.send_modify(|n| *n += 1);
                        let status = match answer {
                            Answer::Ok => StatusCode::NO_CONTENT,
                            Answer::Fail => StatusCode::INTERNAL_SERVER_ERROR,
                            Answer::Hang => std::future::pending().await,
                            Answer::After(d) => {
                                tokio::time::sleep(d).await;
                                StatusCode::OK
                            }
                        };
                        let mut r = Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = status;
                        Ok::<_, Infallible>(r)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Receiver { addr, log, hits }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/T000/SECRET", self.addr)
    }

    async fn wait_hits(&self, n: usize, secs: u64) {
        let mut hits = self.hits.clone();
        tokio::time::timeout(Duration::from_secs(secs), hits.wait_for(|h| *h >= n))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {n} notifications"))
            .unwrap();
    }

    fn events(&self) -> Vec<String> {
        self.log
            .lock()
            .iter()
            .map(|h| h.body["event"].as_str().unwrap_or("?").to_string())
            .collect()
    }
}

fn config(r: &Receiver, attempts: u32, attempt_timeout: Duration) -> NotifyConfig {
    NotifyConfig {
        attempts,
        attempt_timeout,
        first_backoff: Duration::from_millis(50),
        ..NotifyConfig::new(NotifyUrl::parse(&r.url()).unwrap(), NotifyFormat::Json)
    }
}

fn rollback() -> Notification {
    Notification {
        event: Kind::Rollback,
        group: "reviews".into(),
        namespace: NS.into(),
        virtual_service: VS.into(),
        revision: "r1".into(),
        summary: "v2 10 -> 0".into(),
        reason: "error ratio".into(),
        leader: "reviews-v2-aaa".into(),
        time: "2025-03-01T10:00:00Z".into(),
    }
}

fn count(page: &str, result: &str) -> Option<f64> {
    series(
        page,
        &format!("canary_guard_notifications_total{{result=\"{result}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_exactly_the_bounded_attempts() {
    let r = Receiver::start(Answer::Fail).await;
    let metrics = Arc::new(Metrics::new());
    let n = Notifier::spawn(config(&r, 3, Duration::from_secs(2)), metrics.clone());
    n.notify(rollback());
    n.close().await;
    assert_eq!(r.log.lock().len(), 3);
    let page = metrics.render();
    assert_eq!(count(&page, "failed"), Some(1.0));
    assert_eq!(count(&page, "sent"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_is_given_up_on_after_each_attempt_timeout() {
    let r = Receiver::start(Answer::Hang).await;
    let metrics = Arc::new(Metrics::new());
    let n = Notifier::spawn(config(&r, 2, Duration::from_millis(300)), metrics.clone());
    let start = Instant::now();
    n.notify(rollback());
    n.close().await;
    let took = start.elapsed();
    assert_eq!(r.log.lock().len(), 2);
    // Two timeouts and one backoff, and not much more.
    assert!(
        took >= Duration::from_millis(650) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(count(&metrics.render(), "failed"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_within_the_timeout_is_sent_once_in_slack_format() {
    let r = Receiver::start(Answer::After(Duration::from_millis(200))).await;
    let metrics = Arc::new(Metrics::new());
    let mut c = config(&r, 3, Duration::from_secs(2));
    c.format = NotifyFormat::Slack;
    let n = Notifier::spawn(c, metrics.clone());
    n.notify(rollback());
    n.close().await;
    let log = r.log.lock();
    assert_eq!(log.len(), 1);
    let text = log[0].body["text"].as_str().unwrap();
    assert!(
        text.contains("group *reviews* in namespace *default*"),
        "{text}"
    );
    let page = metrics.render();
    assert_eq!(count(&page, "sent"), Some(1.0));
    assert_eq!(count(&page, "failed"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_reassert_and_restore_are_each_notified_after_their_write() {
    let r = Receiver::start(Answer::Ok).await;
    let app = start_app().await;
    let (api, running) = start_api().await;
    let url = r.url();
    let bad = start_member(&running, app, "reviews-v2-bad", "r1", |c| {
        c.notify = Some(notify_to(&url))
    })
    .await;
    send(&bad, "/status/500", 30).await;
    r.wait_hits(1, 15).await;
    // GitOps puts the split back: re-asserted.
    api.patch(
        canary_guard_test_api::embedded_api::Resource::VirtualServices,
        NS,
        VS,
        canary_guard_test_api::embedded_api::PatchType::Merge,
        serde_json::json!({"spec": virtual_service()["spec"].clone()}),
    )
    .unwrap();
    r.wait_hits(2, 15).await;
    // A new revision: restored by whichever guard leads then.
    let good = start_member(&running, app, "reviews-v2-good", "r2", |c| {
        c.notify = Some(notify_to(&url))
    })
    .await;
    bad.shutdown();
    bad.wait().await;
    r.wait_hits(3, 20).await;
    assert_eq!(r.events(), ["rollback", "reassert", "restore"]);
    let writes = vs_writes(&api);
    assert_eq!(writes.len(), 3);
    {
        let log = r.log.lock();
        for (hit, write) in log.iter().zip(&writes) {
            assert!(
                hit.at >= write.at,
                "a notification arrived before its write"
            );
            assert_eq!(hit.body["group"], "reviews");
            assert_eq!(hit.body["namespace"], NS);
            assert_eq!(hit.body["virtual_service"], VS);
        }
        assert_eq!(log[0].body["revision"], "r1");
        assert_eq!(log[1].body["revision"], "r1");
        assert_eq!(log[2].body["revision"], "r2");
        assert_eq!(log[2].body["leader"], "reviews-v2-good");
    }
    // Counted once the receiver's answer is in, a moment after it saw the request.
    let page = wait_metrics(&good, |p| count(p, "sent") == Some(1.0)).await;
    assert_eq!(count(&page, "failed"), Some(0.0), "{page}");
    assert!(!page.contains("SECRET"));
    assert!(!state(&good).await.to_string().contains("SECRET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_delays_no_virtualservice_write() {
    let r = Receiver::start(Answer::Hang).await;
    let app = start_app().await;
    let (api, running) = start_api().await;
    let url = r.url();
    let bad = start_member(&running, app, "reviews-v2-bad", "r1", |c| {
        c.notify = Some(notify_to(&url))
    })
    .await;
    send(&bad, "/status/500", 30).await;
    wait_api(&api, 15, "a rollback", |api| weights(api) == (100, 0)).await;
    r.wait_hits(1, 5).await;
    // The receiver holds the first notification (for the 5 s attempt timeout) while GitOps
    // puts the split back: the leader re-asserts on its usual schedule all the same.
    let reverted = Instant::now();
    api.patch(
        canary_guard_test_api::embedded_api::Resource::VirtualServices,
        NS,
        VS,
        canary_guard_test_api::embedded_api::PatchType::Merge,
        serde_json::json!({"spec": virtual_service()["spec"].clone()}),
    )
    .unwrap();
    wait_api(&api, 15, "the rollback re-asserted", |api| {
        weights(api) == (100, 0)
    })
    .await;
    let took = reverted.elapsed();
    assert!(
        took < canary_guard::notify::ATTEMPT_TIMEOUT,
        "re-asserted after {took:?}"
    );
    assert_eq!(
        r.log.lock().len(),
        1,
        "the first attempt is still hanging: the write did not wait for it"
    );
    assert_eq!(vs_writes(&api).len(), 2);
    // Counted once the patch's answer is in, a moment after the write itself.
    wait_metrics(&bad, |page| {
        series(page, "canary_guard_rollbacks_total") == Some(2.0)
    })
    .await;
}

#[cfg(feature = "demo")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_delivers_a_rollback_notification() {
    let r = Receiver::start(Answer::Ok).await;
    let url = r.url();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_canary-guard"))
            .args(["demo", "--json", "--fault-after", "2s", "--linger", "1s"])
            .args(["--notify-url", &url, "--notify-format", "json"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(r.events(), ["rollback"]);
    let log = r.log.lock();
    assert_eq!(log[0].body["group"], "reviews");
    assert_eq!(log[0].body["revision"], "7c9d5b6f4");
    assert!(!stdout.contains("SECRET") && !String::from_utf8_lossy(&out.stderr).contains("SECRET"));
}
