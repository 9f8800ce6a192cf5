//! Response bodies: upstream bodies streamed through untouched, watched for
//! gRPC trailers and for the end of the stream; and the guard's own short answers.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use super::classify;
use super::Recorder;
use crate::domain::window::Outcome;

/// A gRPC request whose outcome is known only from its trailers.
pub struct PendingRecord {
    recorder: Recorder,
    latency: Duration,
}

impl PendingRecord {
    /// A record of a request that took `latency` to its headers.
    pub fn new(recorder: Recorder, latency: Duration) -> Self {
        Self { recorder, latency }
    }

    fn finish(self, outcome: Outcome) {
        self.recorder.record(self.latency, outcome);
    }
}

/// The body of a response the proxy sends back.
pub enum ProxyBody {
    /// The upstream's body, streamed as it arrives.
    Upstream {
        /// The upstream body.
        inner: Incoming,
        /// Set while the outcome waits for trailers.
        pending: Option<PendingRecord>,
    },
    /// An answer the guard wrote itself (502, 504, ...).
    Local(Full<Bytes>),
}

impl ProxyBody {
    /// The upstream body, recording nothing at its end.
    pub fn upstream(inner: Incoming) -> Self {
        Self::Upstream {
            inner,
            pending: None,
        }
    }

    /// The upstream body of a gRPC response: the outcome is recorded from its trailers.
    pub fn grpc(inner: Incoming, pending: PendingRecord) -> Self {
        Self::Upstream {
            inner,
            pending: Some(pending),
        }
    }

    /// A short text answer from the guard.
    pub fn local(text: &'static str) -> Self {
        Self::Local(Full::new(Bytes::from_static(text.as_bytes())))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
            ProxyBody::Upstream { inner, pending } => {
                let polled = Pin::new(inner).poll_frame(cx);
                if pending.is_some() {
                    let outcome = match &polled {
                        Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(|t| {
                            classify::grpc_status(t).map_or(Outcome::Error, classify::grpc_code)
                        }),
                        // The upstream broke off mid-stream.
                        Poll::Ready(Some(Err(_))) => Some(Outcome::Error),
                        // Ended with no grpc-status at all: clients see an error.
                        Poll::Ready(None) => Some(Outcome::Error),
                        Poll::Pending => None,
                    };
                    if let Some(outcome) = outcome {
                        if let Some(p) = pending.take() {
                            p.finish(outcome);
                        }
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local(f) => f.is_end_stream(),
            ProxyBody::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local(f) => f.size_hint(),
            ProxyBody::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // The client went away before the trailers: the canary did not fail,
        // but the request still happened.
        if let ProxyBody::Upstream { pending, .. } = self {
            if let Some(p) = pending.take() {
                p.finish(Outcome::Success);
            }
        }
    }
}
