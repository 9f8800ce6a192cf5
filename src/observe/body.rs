//! Response bodies: upstream bodies streamed through untouched, watched for
//! gRPC trailers and for the end of the stream; and the guard's own short answers.
//!
//! Design rule: a response is not a success until the client has all of it. A
//! body dropped before its end (or a gRPC body before its trailers) leaves its
//! [`Pending`] unrecorded, which then records the request as abandoned.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use super::classify;
use super::pending::Pending;
use super::upload::BrokeOff;
use super::upstream::Lease;
use crate::domain::window::Outcome;
use crate::BoxError;

/// What the end of an upstream body decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtEnd {
    /// The outcome read from the headers, recorded once the body is whole.
    Outcome(Outcome),
    /// A gRPC response: the outcome is in the trailers.
    Trailers,
}

/// Where an upstream body comes from.
pub enum Source {
    /// A connection of hyper-util's pools (upgrades, HTTP/2, requests with a body).
    Hyper(Incoming),
    /// One of the proxy's own upstream links, which this body drives.
    Link(Lease),
}

impl Source {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self {
            Source::Hyper(inner) => Pin::new(inner).poll_frame(cx).map_err(BoxError::from),
            Source::Link(lease) => lease.poll_frame(cx).map_err(BoxError::from),
        }
    }

    /// Whether the body has ended.
    pub fn is_end_stream(&self) -> bool {
        match self {
            Source::Hyper(inner) => inner.is_end_stream(),
            Source::Link(lease) => lease.ended(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Source::Hyper(inner) => inner.size_hint(),
            Source::Link(lease) => lease.size_hint(),
        }
    }

    /// Whether it failed and hyper has not been told yet.
    fn failed(&self) -> bool {
        matches!(self, Source::Link(lease) if lease.failed())
    }
}

/// The body of a response the proxy sends back.
pub enum ProxyBody {
    /// The upstream's body, streamed as it arrives.
    Upstream {
        /// The upstream body.
        inner: Source,
        /// The request, until its body ends.
        pending: Option<(Pending, AtEnd)>,
        /// Whether the client's own upload broke off.
        broke: BrokeOff,
    },
    /// An answer the guard wrote itself (502, 504, ...).
    Local(Full<Bytes>),
}

impl ProxyBody {
    /// The upstream body, recording nothing at its end.
    pub fn upstream(inner: Source) -> Self {
        Self::Upstream {
            inner,
            pending: None,
            broke: BrokeOff::default(),
        }
    }

    /// The upstream body of a request recorded when the body ends, as `at_end` says;
    /// `broke` tells whether the client's own upload broke off.
    pub fn watched(inner: Source, pending: Pending, at_end: AtEnd, broke: BrokeOff) -> Self {
        Self::Upstream {
            inner,
            pending: Some((pending, at_end)),
            broke,
        }
    }

    /// A short text answer from the guard.
    pub fn local(text: &'static str) -> Self {
        Self::Local(Full::new(Bytes::from_static(text.as_bytes())))
    }
}

/// Records `pending` from the trailers of a gRPC response.
fn from_trailers(pending: Pending, trailers: &http::HeaderMap) {
    match classify::grpc_status(trailers) {
        // The client's own deadline ran out: the same as its RST_STREAM, which
        // races with this answer.
        Some(classify::DEADLINE_EXCEEDED) if pending.past_clients_deadline() => pending.abandon(),
        Some(code) => pending.finish(classify::grpc_code(code)),
        // No grpc-status at all: clients see an error.
        None => pending.finish(Outcome::Error),
    }
}

/// Records `pending` whose body ended without trailers.
fn at_end(pending: Pending, at_end: AtEnd) {
    match at_end {
        AtEnd::Outcome(outcome) => pending.finish(outcome),
        // Ended with no grpc-status at all: clients see an error.
        AtEnd::Trailers => pending.finish(Outcome::Error),
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
            ProxyBody::Upstream {
                inner,
                pending,
                broke,
            } => {
                let polled = inner.poll_frame(cx);
                match &polled {
                    Poll::Pending => {}
                    Poll::Ready(Some(Ok(frame))) => match frame.trailers_ref() {
                        Some(trailers) if matches!(pending, Some((_, AtEnd::Trailers))) => {
                            if let Some((p, _)) = pending.take() {
                                from_trailers(p, trailers);
                            }
                        }
                        _ => {
                            if let Some((p, _)) = pending.as_mut() {
                                p.progress();
                            }
                            // hyper may drop a body that says it has ended
                            // without polling it again.
                            if inner.is_end_stream() {
                                if let Some((p, end)) = pending.take() {
                                    at_end(p, end);
                                }
                            }
                        }
                    },
                    Poll::Ready(Some(Err(_))) => broken(pending, broke),
                    Poll::Ready(None) => {
                        if let Some((p, end)) = pending.take() {
                            at_end(p, end);
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

/// The upstream broke off mid-stream: the canary's fault, unless it broke off
/// because the client's own upload did.
fn broken(pending: &mut Option<(Pending, AtEnd)>, broke: &BrokeOff) {
    if let Some((p, _)) = pending.take() {
        if broke.get() {
            p.client_fault();
        } else {
            p.finish(Outcome::Error);
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let ProxyBody::Upstream {
            inner,
            pending,
            broke,
        } = self
        {
            if inner.failed() {
                broken(pending, broke);
            }
            // A link whose body had not ended closes as its lease drops.
            if let Some((p, end)) = pending.take() {
                if inner.is_end_stream() {
                    // Whole, though never polled to its end.
                    at_end(p, end);
                }
                // Otherwise `p` drops unrecorded: the client went away first.
            }
        }
    }
}
