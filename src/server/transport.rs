//! How an accepted TCP connection becomes the stream HTTP is spoken over: as it
//! is ([`Plain`], the proxy and the admin server) or after a TLS handshake
//! ([`Tls`], the admission webhook).
//!
//! Design rule: a transport only turns a socket into a stream. The accept loop
//! runs the handshake in the connection's own task, under its deadline and
//! holding one of the capped slots, so a transport keeps no timers or limits of
//! its own; and it is a type parameter, so [`Plain`] costs nothing.

use std::future::{ready, Future, Ready};
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// What the accept loop serves HTTP over.
pub trait Transport: Send + Sync + 'static {
    /// The stream hyper reads requests from.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The handshake that makes one.
    type Handshake: Future<Output = io::Result<Self::Io>> + Send;

    /// Whether an idle HTTP/1 connection can wait for its next request
    /// without reading (see [`Transport::poll_read_ready`]), so that it holds
    /// no buffers meanwhile.
    const PARKS: bool;

    /// Starts the handshake on a freshly accepted connection.
    fn handshake(&self, tcp: TcpStream) -> Self::Handshake;

    /// Ready once `io` has bytes to read or was closed; reads nothing. Only
    /// asked when [`Transport::PARKS`]. (`&mut`: the connection's task owns
    /// the stream, which need not be `Sync`.)
    fn poll_read_ready(io: &mut Self::Io, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// HTTP straight over TCP: no handshake.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

impl Transport for Plain {
    type Io = TcpStream;
    type Handshake = Ready<io::Result<TcpStream>>;
    const PARKS: bool = true;

    fn handshake(&self, tcp: TcpStream) -> Self::Handshake {
        ready(Ok(tcp))
    }

    fn poll_read_ready(io: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        io.poll_read_ready(cx)
    }
}

/// HTTPS: a rustls handshake, then HTTP/1.1 or HTTP/2 as ALPN settled.
#[derive(Clone)]
pub struct Tls(TlsAcceptor);

impl Tls {
    /// Serves with `config` (certificates, protocol versions, ALPN).
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        Self(TlsAcceptor::from(config))
    }
}

impl Transport for Tls {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Handshake = tokio_rustls::Accept<TcpStream>;
    // rustls keeps decrypted bytes of its own, which no readiness of the
    // socket shows.
    const PARKS: bool = false;

    fn handshake(&self, tcp: TcpStream) -> Self::Handshake {
        self.0.accept(tcp)
    }

    fn poll_read_ready(_: &mut Self::Io, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
