//! Switching protocols (101): the client's side of the connection, taken from
//! hyper by the accept loop, joined to the side the service got from the app.
//!
//! Design rule: the service only says where the other side comes from; the
//! connection's own task does the copying, holding its slot, so an upgraded
//! connection counts against `max_connections` like any other, until the
//! drain begins.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};

/// Found in the extensions of every HTTP/1 request with an `Upgrade` header: a
/// service answering 101 gives it the app's side with [`Takeover::join`].
#[derive(Clone, Default)]
pub struct Takeover(Arc<Mutex<Option<OnUpgrade>>>);

impl Takeover {
    /// Once the 101 is written, the client's connection is joined to
    /// `upstream`, byte for byte in both directions, until either side closes.
    pub fn join(&self, upstream: OnUpgrade) {
        *self.0.lock() = Some(upstream);
    }

    pub(super) fn take(&self) -> Option<OnUpgrade> {
        self.0.lock().take()
    }
}

/// Copies between `client` and `upstream` until either side closes or the
/// drain begins: an upgraded connection has no request in flight to finish,
/// and holding its slot would hold the drain to its timeout.
pub(super) async fn join(
    mut client: impl AsyncRead + AsyncWrite + Unpin,
    upstream: OnUpgrade,
    drain: Pin<&mut impl Future<Output = ()>>,
) {
    let copy = async {
        match upstream.await {
            Ok(upgraded) => {
                let _ =
                    tokio::io::copy_bidirectional(&mut client, &mut TokioIo::new(upgraded)).await;
            }
            Err(e) => tracing::debug!(error = %e, "the app's side of an upgrade failed"),
        }
    };
    tokio::select! {
        () = copy => {}
        () = drain => {}
    }
}
