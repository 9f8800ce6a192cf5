use std::sync::Arc;

use super::*;
use crate::admin::metrics::Metrics;
use crate::domain::window::{Summary, Window};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn setup() -> (Arc<Window>, Recorder) {
    let window = Arc::new(
        Window::new(Duration::from_secs(30), Instant::now().into_std()).with_latency_limit(ms(500)),
    );
    let recorder = Recorder::new(window.clone(), Arc::new(Metrics::new()));
    (window, recorder)
}

fn now(w: &Window) -> Summary {
    w.summary(Instant::now().into_std())
}

#[tokio::test(start_paused = true)]
async fn a_client_gone_after_the_limit_leaves_a_slow_request() {
    let (w, r) = setup();
    let p = Pending::new(r, Instant::now(), None);
    tokio::time::advance(ms(600)).await;
    drop(p);
    let s = now(&w);
    assert_eq!((s.requests, s.errors, s.abandoned, s.overdue), (1, 0, 1, 0));
    assert_eq!(s.latency.count_from(ms(600)), 1);
    assert_eq!(w.totals().abandoned, 1);
}

#[tokio::test(start_paused = true)]
async fn a_client_gone_before_the_limit_is_abandoned_and_not_judged() {
    let (w, r) = setup();
    let p = Pending::new(r, Instant::now(), None);
    tokio::time::advance(ms(300)).await;
    drop(p);
    let s = now(&w);
    assert_eq!((s.requests, s.abandoned, s.latency.total()), (0, 1, 0));
    assert_eq!(w.totals().abandoned_early, 1);
}

#[tokio::test(start_paused = true)]
async fn waiting_past_the_limit_is_slow_at_once_and_recorded_once() {
    let (w, r) = setup();
    let p = Pending::new(r, Instant::now(), None);
    tokio::time::advance(ms(400)).await;
    assert_eq!(now(&w).requests, 0);
    tokio::time::advance(ms(200)).await;
    let s = now(&w);
    assert_eq!(
        (s.requests, s.overdue, s.latency.count_from(ms(500))),
        (1, 1, 1)
    );
    tokio::time::advance(ms(200)).await;
    p.finish(Outcome::Success);
    let s = now(&w);
    assert_eq!((s.requests, s.overdue, s.latency.total()), (1, 0, 1));
    assert_eq!(s.latency.count_from(ms(800)), 1);
    assert_eq!(w.totals().requests, 1);
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_stalls_is_judged_on_the_wait_since_the_app_last_sent() {
    let (w, r) = setup();
    // Headers at 10 ms, data until 200 ms, then nothing until the client leaves at 800 ms.
    let mut p = Pending::new(r.clone(), Instant::now(), None);
    tokio::time::advance(ms(10)).await;
    assert_eq!(p.headers(), ms(10));
    tokio::time::advance(ms(190)).await;
    p.progress();
    tokio::time::advance(ms(600)).await;
    drop(p);
    // A long stream that the client cancels while data flows: not slow.
    let mut q = Pending::new(r, Instant::now(), None);
    tokio::time::advance(ms(10)).await;
    q.headers();
    for _ in 0..20 {
        tokio::time::advance(ms(100)).await;
        q.progress();
    }
    tokio::time::advance(ms(50)).await;
    drop(q);
    let s = now(&w);
    assert_eq!((s.requests, s.errors, s.abandoned), (2, 0, 2));
    assert_eq!(s.latency.count_from(ms(500)), 1);
    assert_eq!(
        s.latency.counts()[crate::domain::histogram::bucket_index(ms(600))],
        1
    );
    assert_eq!(
        s.latency.counts()[crate::domain::histogram::bucket_index(ms(10))],
        1
    );
    assert_eq!(w.totals().abandoned, 2);
}

#[tokio::test(start_paused = true)]
async fn an_upload_the_client_broke_off_is_never_judged() {
    let (w, r) = setup();
    let p = Pending::new(r, Instant::now(), None);
    tokio::time::advance(ms(900)).await;
    p.client_fault();
    let s = now(&w);
    assert_eq!((s.requests, s.abandoned, s.overdue), (0, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn the_clients_deadline() {
    let (_w, r) = setup();
    let p = Pending::new(r.clone(), Instant::now(), Some(ms(300)));
    tokio::time::advance(ms(299)).await;
    assert!(!p.past_clients_deadline());
    tokio::time::advance(ms(1)).await;
    assert!(p.past_clients_deadline());
    assert!(!Pending::new(r, Instant::now(), None).past_clients_deadline());
}
