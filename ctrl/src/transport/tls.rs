//! TLS under gRPC, over either socket kind: what a [`super::Listener`] accepts and what a
//! [`super::Transport`] dials, with or without TLS, as one stream type each side.
//!
//! - On a unix socket TLS runs over an [`FdStream`]: file descriptors ride underneath TLS on
//!   the raw socket bytes (grpcfd, `nsm-api.md` §7), so the same [`FdConn`] API works with and
//!   without TLS.
//! - A server learns its peer's certificate from the handshake ([`Peer`], the connection
//!   info tonic puts in every request's extensions); a client keeps its server's certificate
//!   of the latest handshake in a [`ServerCert`] (for the audience and the expiry of the
//!   tokens it signs).
//! - This module builds no TLS configuration: it takes rustls's as given ([`TlsConfig`]).
//!   Which certificates, which peers are trusted and which ALPN protocols are spoken (`h2`)
//!   is the caller's business ([`crate::security`]).
//! - A handshake is bounded by [`HANDSHAKE_TIMEOUT`]; a slow or failing one never holds up
//!   the accept loop (each runs on a task of its own) and is dropped with a log line.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::grpcfd::{FdConn, FdStream};

/// How long a TLS handshake may take, either side. Five seconds: a handshake on a node or
/// within a cluster takes milliseconds; a peer that stalls longer is broken or hostile.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The rustls configurations of one side of vwire: for the connections it accepts and for the
/// ones it opens.
#[derive(Clone)]
pub struct TlsConfig {
    /// For accepted connections.
    pub server: Arc<rustls::ServerConfig>,
    /// For dialled connections.
    pub client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig")
    }
}

/// What a server knows of the peer of a connection: its fds (unix sockets) and its TLS
/// certificate (mTLS). Found in each request's extensions (`req.extensions().get::<Peer>()`).
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// The connection's fd state (a unix socket only).
    pub fds: Option<FdConn>,
    /// The peer's leaf certificate, DER (a TLS connection only).
    pub certificate: Option<CertificateDer<'static>>,
}

/// The server certificate of a dialled channel's latest TLS handshake; empty before the first
/// one, and without TLS. Shared by the channel's reconnections, each of which counts as a new
/// [`ServerCert::handshakes`].
#[derive(Clone, Debug, Default)]
pub struct ServerCert(Arc<Mutex<(Option<CertificateDer<'static>>, u64)>>);

impl ServerCert {
    /// The certificate, if a handshake happened.
    pub fn get(&self) -> Option<CertificateDer<'static>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }

    /// How many handshakes the channel made (a new one means a new connection, which may
    /// have presented a newer certificate of our own).
    pub fn handshakes(&self) -> u64 {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).1
    }

    fn set(&self, cert: Option<CertificateDer<'static>>) {
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        g.0 = cert;
        g.1 += 1;
    }
}

/// An accepted or dialled connection, plain or TLS, over a unix or a TCP socket.
#[derive(Debug)]
pub enum Stream {
    /// A plain unix socket (with fds).
    Unix(FdStream),
    /// A plain TCP socket.
    Tcp(TcpStream),
    /// TLS over a unix socket (with fds underneath), accepted.
    ServerUnix(Box<tokio_rustls::server::TlsStream<FdStream>>),
    /// TLS over TCP, accepted.
    ServerTcp(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS over a unix socket (with fds underneath), dialled.
    ClientUnix(Box<tokio_rustls::client::TlsStream<FdStream>>),
    /// TLS over TCP, dialled.
    ClientTcp(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// The socket under a connection, before TLS.
pub(super) enum Raw {
    Unix(FdStream),
    Tcp(TcpStream),
}

/// Completes the server side of an accepted socket: the TLS handshake when `tls` is given.
pub(super) async fn accept(raw: Raw, tls: Option<&TlsConfig>) -> io::Result<Stream> {
    let Some(tls) = tls else {
        return Ok(match raw {
            Raw::Unix(s) => Stream::Unix(s),
            Raw::Tcp(s) => Stream::Tcp(s),
        });
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
    bounded(async {
        Ok(match raw {
            Raw::Unix(s) => Stream::ServerUnix(Box::new(acceptor.accept(s).await?)),
            Raw::Tcp(s) => Stream::ServerTcp(Box::new(acceptor.accept(s).await?)),
        })
    })
    .await
}

/// Completes the client side of a dialled socket: the TLS handshake when `tls` is given,
/// keeping the server's certificate in `server`. `host` is the name the URL gave (a unix
/// socket has none): SPIFFE peers are verified by the ID in their certificate, not by name,
/// but TLS wants one to send.
pub(super) async fn connect(
    raw: Raw,
    tls: Option<&TlsConfig>,
    host: &str,
    server: &ServerCert,
) -> io::Result<Stream> {
    let Some(tls) = tls else {
        return Ok(match raw {
            Raw::Unix(s) => Stream::Unix(s),
            Raw::Tcp(s) => Stream::Tcp(s),
        });
    };
    let name = ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::try_from("localhost").expect("a valid DNS name"));
    let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
    let stream = bounded(async {
        Ok(match raw {
            Raw::Unix(s) => Stream::ClientUnix(Box::new(connector.connect(name, s).await?)),
            Raw::Tcp(s) => Stream::ClientTcp(Box::new(connector.connect(name, s).await?)),
        })
    })
    .await?;
    server.set(stream.peer_certificate());
    Ok(stream)
}

/// `handshake` bounded by [`HANDSHAKE_TIMEOUT`].
async fn bounded(
    handshake: impl std::future::Future<Output = io::Result<Stream>>,
) -> io::Result<Stream> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

impl Stream {
    /// The peer's leaf certificate (TLS only).
    pub fn peer_certificate(&self) -> Option<CertificateDer<'static>> {
        let certs = match self {
            Stream::Unix(_) | Stream::Tcp(_) => None,
            Stream::ServerUnix(s) => s.get_ref().1.peer_certificates(),
            Stream::ServerTcp(s) => s.get_ref().1.peer_certificates(),
            Stream::ClientUnix(s) => s.get_ref().1.peer_certificates(),
            Stream::ClientTcp(s) => s.get_ref().1.peer_certificates(),
        };
        certs
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned())
    }

    /// The fd state of a unix socket.
    pub fn fds(&self) -> Option<&FdConn> {
        match self {
            Stream::Unix(s) => Some(s.conn()),
            Stream::ServerUnix(s) => Some(s.get_ref().0.conn()),
            Stream::ClientUnix(s) => Some(s.get_ref().0.conn()),
            Stream::Tcp(_) | Stream::ServerTcp(_) | Stream::ClientTcp(_) => None,
        }
    }
}

/// Forwards a call to whichever stream `self` holds.
macro_rules! each {
    ($self:expr, $s:ident => $call:expr) => {
        match $self.get_mut() {
            Stream::Unix($s) => $call,
            Stream::Tcp($s) => $call,
            Stream::ServerUnix($s) => $call,
            Stream::ServerTcp($s) => $call,
            Stream::ClientUnix($s) => $call,
            Stream::ClientTcp($s) => $call,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::ServerUnix(s) => s.is_write_vectored(),
            Stream::ServerTcp(s) => s.is_write_vectored(),
            Stream::ClientUnix(s) => s.is_write_vectored(),
            Stream::ClientTcp(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

impl tonic::transport::server::Connected for Stream {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        Peer {
            fds: self.fds().cloned(),
            certificate: self.peer_certificate(),
        }
    }
}
