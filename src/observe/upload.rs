//! The client's request body on its way to the app, watched for breaking off.
//!
//! Design rule: a client that leaves mid-upload makes the app's answer break off too; the
//! flag set here lets the response side tell that from the canary failing.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Whether the client's request body broke off.
#[derive(Clone, Debug, Default)]
pub struct BrokeOff(Arc<AtomicBool>);

impl BrokeOff {
    /// True once the request body failed (the client left or sent a malformed body).
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The inbound request body, passed through unchanged.
pub struct Upload {
    inner: Incoming,
    broke: BrokeOff,
}

impl Upload {
    /// Wraps `inner`; the flag tells whether it broke off.
    pub fn new(inner: Incoming) -> (Self, BrokeOff) {
        let broke = BrokeOff::default();
        (
            Self {
                inner,
                broke: broke.clone(),
            },
            broke,
        )
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            this.broke.0.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
