use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Wake;

use super::*;

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn pending_until_the_drain_begins_then_the_first_waker_is_woken_and_it_resolves() {
    let draining = watch::Sender::new(());
    let mut drain = Box::pin(Drain::new(&draining));
    let count = Arc::new(Count::default());
    let waker = count.clone().into();
    let mut cx = Context::from_waker(&waker);
    for _ in 0..3 {
        assert!(drain.as_mut().poll(&mut cx).is_pending());
    }
    draining.send_replace(());
    assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken once");
    assert!(drain.as_mut().poll(&mut cx).is_ready());
}

#[test]
fn a_drain_that_began_before_the_first_poll_is_ready_at_once() {
    let draining = watch::Sender::new(());
    let mut drain = Box::pin(Drain::new(&draining));
    draining.send_replace(());
    let waker = Arc::new(Count::default()).into();
    assert!(drain
        .as_mut()
        .poll(&mut Context::from_waker(&waker))
        .is_ready());
}

#[tokio::test]
async fn it_resolves_when_the_sender_is_gone() {
    let draining = watch::Sender::new(());
    let mut drain = Box::pin(Drain::new(&draining));
    assert!(poll_fn(|cx| Poll::Ready(drain.as_mut().poll(cx).is_pending())).await);
    drop(draining);
    drain.await;
}
