//! Where gRPC travels: `unix:///path` and `tcp://host:port` URLs, listening on one and dialling
//! one. This is the one place in vwire where gRPC sockets are bound and connected, so that the
//! layers still to come (file descriptors over unix sockets, mTLS) wrap a single listen path
//! and a single dial path.
//!
//! A leaf module: it uses no other module of this crate. Usage order: parse a [`Url`] (or take
//! one from the configuration), then [`serve`] a tonic router on it, or [`bind`] first when the
//! bound address matters (a `tcp://…:0` URL), or [`dial`] / [`dial_lazy`] it for a channel.
//!
//! File descriptors travel over unix sockets only ([`grpcfd`], NSM's way of passing a netns or a
//! memif socket along with a Request): every connection a unix [`Listener`] accepts carries
//! them, and its handlers find the connection's [`FdConn`] in the request extensions
//! (`request.extensions().get::<FdConn>()`; none over tcp). A client that passes fds dials with
//! [`dial_with_fds`] / [`dial_lazy_with_fds`], which return the channel's [`FdConn`] with it.
//! A path like `unix:///proc/self/fd/<n>` (an `O_PATH` fd of a socket file, as a received
//! listen socket is) dials like any other path.

pub mod grpcfd;
pub mod tls;

use std::path::PathBuf;
use std::time::Duration;

pub use grpcfd::{proc_fd_url, FdConn, FdStream, GrpcfdError, InodeUrl};
pub use tls::{Peer, ServerCert, Stream, TlsConfig};
use tonic::transport::server::Router;
use tonic::transport::{Channel, Endpoint};

/// How long a dial waits for the connection, unless the caller says otherwise. Two seconds: a
/// local unix socket or a node of the same cluster answers in milliseconds, and a Request that
/// waits longer for a dead next hop holds up its client for nothing.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// the URL is not `unix:///path` or `tcp://host:port`
    #[error("listen URL {0:?}: expected unix:///path or tcp://host:port")]
    BadUrl(String),
    /// binding the socket failed
    #[error("listening on {url}: {source}")]
    Listen {
        /// the URL
        url: Url,
        /// the system error
        source: std::io::Error,
    },
    /// the server failed
    #[error("gRPC server: {0}")]
    Serve(#[source] tonic::transport::Error),
    /// connecting failed, or the URL is no valid gRPC endpoint
    #[error("connecting to {url}: {source}")]
    Dial {
        /// the URL
        url: Url,
        /// the transport error
        source: tonic::transport::Error,
    },
    /// file descriptors travel over unix sockets only
    #[error("{0}: file descriptors can only be passed over unix:// sockets")]
    NoFds(Url),
}

/// A gRPC address: where to listen, or what to dial.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Url {
    /// A unix socket path (`unix:///path`).
    Unix(PathBuf),
    /// A TCP `host:port` (`tcp://host:port`); the host may be a name.
    Tcp(String),
}

impl Url {
    /// Parses `unix:///path` or `tcp://host:port` (neither part may be empty).
    pub fn parse(url: &str) -> Result<Self, TransportError> {
        let bad = || TransportError::BadUrl(url.into());
        if let Some(p) = url.strip_prefix("unix://") {
            return match p {
                "" => Err(bad()),
                p => Ok(Self::Unix(PathBuf::from(p))),
            };
        }
        match url.strip_prefix("tcp://") {
            Some("") | None => Err(bad()),
            Some(a) => Ok(Self::Tcp(a.to_string())),
        }
    }

    /// A tonic endpoint for this URL. A unix URL gets a placeholder authority: its connector
    /// ignores the URI.
    fn endpoint(&self, timeout: Duration) -> Result<Endpoint, TransportError> {
        let e = match self {
            Url::Tcp(addr) => {
                Endpoint::from_shared(format!("http://{addr}")).map_err(|source| {
                    TransportError::Dial {
                        url: self.clone(),
                        source,
                    }
                })?
            }
            Url::Unix(_) => Endpoint::from_static("http://[::]:0"),
        };
        Ok(e.connect_timeout(timeout))
    }
}

impl std::str::FromStr for Url {
    type Err = TransportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
            Self::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// `e` and its causes, `a: b: c`, leaving out a cause whose words are already there (tonic's
/// dial error says only "transport error"; what failed is in its sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let words = c.to_string();
        if !text.contains(&words) {
            text = format!("{text}: {words}");
        }
        cause = c.source();
    }
    text
}

/// Removes a unix socket file when dropped.
#[derive(Debug)]
struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// How vwire's gRPC connections are made: plain or TLS ([`TlsConfig`]), and how long a dial
/// may take. Cheap to clone; one per process, handed to everything that listens or dials.
#[derive(Clone, Debug)]
pub struct Transport {
    tls: Option<TlsConfig>,
    dial_timeout: Duration,
}

/// A channel [`Transport::dial`] made, with what it knows of its connection.
#[derive(Clone, Debug)]
pub struct Dialled {
    /// The channel.
    pub channel: Channel,
    /// Its fds (a `unix://` URL only): fds queued here go out with the channel's next write
    /// (queue them before the call whose message names them); fds the server sends back are
    /// received here. Serves the channel's reconnections too.
    pub fds: Option<FdConn>,
    /// The server's certificate of the latest TLS handshake.
    pub server: ServerCert,
}

impl Transport {
    /// Plain gRPC (no TLS), each dial bounded by `dial_timeout`.
    pub fn plain(dial_timeout: Duration) -> Self {
        Self {
            tls: None,
            dial_timeout,
        }
    }

    /// gRPC over TLS with `tls`, on every socket, each dial bounded by `dial_timeout`.
    pub fn tls(tls: TlsConfig, dial_timeout: Duration) -> Self {
        Self {
            tls: Some(tls),
            dial_timeout,
        }
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The bound of each dial.
    pub fn dial_timeout(&self) -> Duration {
        self.dial_timeout
    }

    /// Binds `url` (see [`bind`]); the listener's connections use this transport's TLS.
    pub async fn bind(&self, url: &Url) -> Result<Listener, TransportError> {
        let listen_err = |source| TransportError::Listen {
            url: url.clone(),
            source,
        };
        let (bound, unlink) = match url {
            Url::Unix(path) => {
                let _ = std::fs::remove_file(path);
                let l = tokio::net::UnixListener::bind(path).map_err(listen_err)?;
                (Bound::Unix(l, path.clone()), Some(Unlink(path.clone())))
            }
            Url::Tcp(addr) => (
                Bound::Tcp(
                    tokio::net::TcpListener::bind(addr.as_str())
                        .await
                        .map_err(listen_err)?,
                ),
                None,
            ),
        };
        Ok(Listener {
            bound,
            _unlink: unlink,
            tls: self.tls.clone(),
        })
    }

    /// A channel to `url`, connected now (TLS handshake included): fails if that does not
    /// succeed within the dial timeout. Over a `unix://` URL the channel passes fds.
    pub async fn dial(&self, url: &Url) -> Result<Dialled, TransportError> {
        let (endpoint, connector) = self.prepare(url)?;
        let (fds, server) = (connector.fds.clone(), connector.server.clone());
        let channel = endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|source| TransportError::Dial {
                url: url.clone(),
                source,
            })?;
        Ok(Dialled {
            channel,
            fds,
            server,
        })
    }

    /// Like [`Transport::dial`], but the channel connects on first use, and again after a
    /// failure. Fails only for a URL that is no valid endpoint.
    pub fn dial_lazy(&self, url: &Url) -> Result<Dialled, TransportError> {
        let (endpoint, connector) = self.prepare(url)?;
        let (fds, server) = (connector.fds.clone(), connector.server.clone());
        let channel = endpoint.connect_with_connector_lazy(connector);
        Ok(Dialled {
            channel,
            fds,
            server,
        })
    }

    /// The endpoint for `url` and the connector of a new channel to it.
    fn prepare(&self, url: &Url) -> Result<(Endpoint, Connector), TransportError> {
        let endpoint = url.endpoint(self.dial_timeout)?;
        let connector = Connector {
            url: url.clone(),
            tls: self.tls.clone(),
            fds: matches!(url, Url::Unix(_)).then(FdConn::new),
            server: ServerCert::default(),
        };
        Ok((endpoint, connector))
    }
}

/// Opens the socket a [`Dialled`] channel runs on, whatever URI tonic asks for: a unix socket
/// as an [`FdStream`] of the channel's [`FdConn`], or a TCP socket; then TLS when configured.
///
/// Unix sockets are [`FdStream`]s even where no fd is passed, for how they read: a grpcfd peer
/// (any NSM component) may attach fds to what it writes, one per byte, and the kernel ends
/// every read of a unix stream after such a byte, with the rest still queued. tokio's
/// `UnixStream::poll_read` takes that short read for a drained socket and waits for the next
/// readiness event (tokio-rs/tokio#5866), which may never come: the peer has written its whole
/// answer and waits for us. [`FdStream`] reads until `EAGAIN`. The fds that come are held with
/// the connection (at most [`grpcfd::MAX_HELD`]) and closed with it.
#[derive(Clone)]
struct Connector {
    url: Url,
    tls: Option<TlsConfig>,
    fds: Option<FdConn>,
    server: ServerCert,
}

impl tower::Service<tonic::codegen::http::Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<Stream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (raw, host) = match &this.url {
                Url::Unix(path) => {
                    let s = tokio::net::UnixStream::connect(path).await?;
                    let conn = this.fds.clone().unwrap_or_default();
                    (tls::Raw::Unix(FdStream::join(s, &conn)), "localhost")
                }
                Url::Tcp(addr) => {
                    let s = tokio::net::TcpStream::connect(addr.as_str()).await?;
                    s.set_nodelay(true)?;
                    (tls::Raw::Tcp(s), host_of(addr))
                }
            };
            let stream = tls::connect(raw, this.tls.as_ref(), host, &this.server).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A bound socket, not yet serving. A unix socket's file is removed when the listener (or the
/// server it became) is dropped, however the server ends.
#[derive(Debug)]
pub struct Listener {
    bound: Bound,
    /// Removes a unix socket's file.
    _unlink: Option<Unlink>,
    tls: Option<TlsConfig>,
}

#[derive(Debug)]
enum Bound {
    /// A unix socket and its path.
    Unix(tokio::net::UnixListener, PathBuf),
    /// A TCP socket.
    Tcp(tokio::net::TcpListener),
}

/// Binds `url` for plain gRPC. A stale unix socket file is replaced. Must run inside a tokio
/// runtime.
pub async fn bind(url: &Url) -> Result<Listener, TransportError> {
    Transport::plain(DIAL_TIMEOUT).bind(url).await
}

/// How many accepted connections may wait, handshaken, for the server to take them.
const ACCEPT_BACKLOG: usize = 64;

impl Listener {
    /// The URL this listener answers on (a `tcp://…:0` URL with its port filled in).
    pub fn url(&self) -> Result<Url, std::io::Error> {
        match &self.bound {
            Bound::Unix(_, path) => Ok(Url::Unix(path.clone())),
            Bound::Tcp(l) => Ok(Url::Tcp(l.local_addr()?.to_string())),
        }
    }

    /// Serves `router` on this socket until `shutdown` resolves. On a unix socket, every
    /// accepted connection passes fds ([`FdStream::accept`]); with TLS, each connection's
    /// handshake runs on its own task. Handlers find the connection's [`Peer`] (its fds, its
    /// certificate) in the request extensions.
    pub async fn serve(
        self,
        router: Router,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), TransportError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Stream>>(ACCEPT_BACKLOG);
        let _unlink = self._unlink;
        let acceptor = tokio::spawn(accept_loop(self.bound, self.tls, tx));
        let r = router
            .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(rx), shutdown)
            .await
            .map_err(TransportError::Serve);
        acceptor.abort();
        r
    }
}

/// Accepts connections on `bound` and hands them, handshaken, to `tx` until its receiver is
/// gone. A failed handshake is logged and dropped; a failed accept (the fd limit, say) is
/// logged and retried after a pause.
async fn accept_loop(
    bound: Bound,
    tls: Option<TlsConfig>,
    tx: tokio::sync::mpsc::Sender<std::io::Result<Stream>>,
) {
    loop {
        let raw = tokio::select! {
            _ = tx.closed() => return,
            r = accept_raw(&bound) => r,
        };
        let (raw, from) = match raw {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("accepting a gRPC connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let tls = tls.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            match tls::accept(raw, tls.as_ref()).await {
                Ok(s) => {
                    let _ = tx.send(Ok(s)).await;
                }
                Err(e) => tracing::warn!("gRPC connection from {from}: TLS handshake: {e}"),
            }
        });
    }
}

/// One accepted socket, and who it is from (for logs).
async fn accept_raw(bound: &Bound) -> std::io::Result<(tls::Raw, String)> {
    match bound {
        Bound::Unix(l, _) => {
            let (s, _) = l.accept().await?;
            let from = match s.peer_cred() {
                Ok(c) => format!("pid {}", c.pid().unwrap_or(0)),
                Err(_) => "a unix socket".into(),
            };
            Ok((tls::Raw::Unix(FdStream::accept(s)), from))
        }
        Bound::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            s.set_nodelay(true)?;
            Ok((tls::Raw::Tcp(s), addr.to_string()))
        }
    }
}

/// Serves `router` on `url` with plain gRPC until `shutdown` resolves: [`bind`], then
/// [`Listener::serve`].
pub async fn serve(
    router: Router,
    url: &Url,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), TransportError> {
    bind(url).await?.serve(router, shutdown).await
}

/// Like [`dial`], for a `unix://` URL only, and with the channel's [`FdConn`] (see
/// [`Dialled::fds`]). Plain gRPC.
pub async fn dial_with_fds(
    url: &Url,
    timeout: Duration,
) -> Result<(Channel, FdConn), TransportError> {
    if !matches!(url, Url::Unix(_)) {
        return Err(TransportError::NoFds(url.clone()));
    }
    let d = Transport::plain(timeout).dial(url).await?;
    Ok((d.channel, d.fds.unwrap_or_default()))
}

/// Like [`dial_lazy`], with the channel's [`FdConn`] as [`dial_with_fds`] gives it.
pub fn dial_lazy_with_fds(
    url: &Url,
    timeout: Duration,
) -> Result<(Channel, FdConn), TransportError> {
    if !matches!(url, Url::Unix(_)) {
        return Err(TransportError::NoFds(url.clone()));
    }
    let d = Transport::plain(timeout).dial_lazy(url)?;
    Ok((d.channel, d.fds.unwrap_or_default()))
}

/// A plain gRPC channel to `url`, connected now: fails if nothing answers within `timeout`.
pub async fn dial(url: &Url, timeout: Duration) -> Result<Channel, TransportError> {
    Ok(Transport::plain(timeout).dial(url).await?.channel)
}

/// A plain gRPC channel to `url` that connects on first use, and again after a failure, each
/// attempt bounded by `timeout`. Fails only for a URL that is no valid endpoint.
pub fn dial_lazy(url: &Url, timeout: Duration) -> Result<Channel, TransportError> {
    Ok(Transport::plain(timeout).dial_lazy(url)?.channel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    #[test]
    fn urls_parse() {
        assert_eq!(
            Url::parse("unix:///run/x.sock").unwrap(),
            Url::Unix("/run/x.sock".into())
        );
        assert_eq!(
            "tcp://127.0.0.1:5000".parse::<Url>().unwrap(),
            Url::Tcp("127.0.0.1:5000".into())
        );
        assert_eq!(
            "tcp://nse.example:5001".parse::<Url>().unwrap(),
            Url::Tcp("nse.example:5001".into())
        );
    }

    #[test]
    fn bad_urls_are_errors_naming_the_url() {
        for bad in [
            "http://x",
            "unix://",
            "tcp://",
            "/tmp/x.sock",
            "",
            "UNIX:///x",
        ] {
            match Url::parse(bad) {
                Err(TransportError::BadUrl(u)) => assert_eq!(u, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn urls_round_trip_through_display() {
        for s in [
            "unix:///a/b",
            "unix://rel/x.sock",
            "tcp://[::1]:5000",
            "tcp://h:1",
        ] {
            let u: Url = s.parse().unwrap();
            assert_eq!(u.to_string(), s);
            assert_eq!(u.to_string().parse::<Url>().unwrap(), u);
        }
    }

    /// Serves grpc.health.v1 on `url`, dials it both ways, checks it, and stops the server.
    async fn serve_and_dial(url: Url) -> Url {
        let listener = bind(&url).await.unwrap();
        let bound = listener.url().unwrap();
        let (health, service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let router = tonic::transport::Server::builder().add_service(service);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(listener.serve(router, async {
            let _ = stopped.await;
        }));
        for channel in [
            dial(&bound, DIAL_TIMEOUT).await.unwrap(),
            dial_lazy(&bound, DIAL_TIMEOUT).unwrap(),
        ] {
            let r = HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .unwrap();
            assert_eq!(r.into_inner().status(), ServingStatus::Serving);
        }
        let _ = stop.send(());
        server.await.unwrap().unwrap();
        bound
    }

    #[tokio::test(flavor = "current_thread")]
    async fn serve_and_dial_over_unix() {
        let dir = std::env::temp_dir().join(format!("vwire-transport-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.sock");
        std::fs::write(&path, b"stale").unwrap(); // a stale file is replaced
        let url = Url::Unix(path.clone());
        assert_eq!(serve_and_dial(url.clone()).await, url);
        assert!(!path.exists(), "the socket file outlived the server");
        let _ = std::fs::remove_dir(&dir);
    }

    /// A plain unix channel's stream reads past a byte that carries an fd, though nothing takes
    /// the fd: a grpcfd peer's answer, its fd's byte and the rest both queued before we read
    /// (see [`Connector`]). With tokio's `UnixStream` the read stops after that one byte
    /// and waits for an event that does not come.
    #[tokio::test(flavor = "current_thread")]
    async fn a_plain_unix_stream_reads_past_a_byte_that_carries_an_fd() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tower::Service;
        let dir = std::env::temp_dir().join(format!("vwire-transport-fd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (_, mut connector) = Transport::plain(DIAL_TIMEOUT)
            .prepare(&Url::Unix(path.clone()))
            .unwrap();
        let (ours, theirs) = tokio::join!(
            connector.call(tonic::codegen::http::Uri::from_static("http://x")),
            listener.accept()
        );
        let mut ours = ours.unwrap().into_inner();
        let peer_fds = FdConn::new();
        let mut peer = FdStream::join(theirs.unwrap().0, &peer_fds);
        let answer: Vec<u8> = (0..=255).collect();
        for round in 1..=3 {
            peer_fds.send_path(&path).unwrap();
            peer.write_all(&answer).await.unwrap();
            assert_eq!(
                peer_fds.queued(),
                0,
                "round {round}: the fd was not written"
            );
            let mut got = vec![0; answer.len()];
            tokio::time::timeout(Duration::from_secs(5), ours.read_exact(&mut got))
                .await
                .unwrap_or_else(|_| panic!("round {round}: the read stopped after the fd's byte"))
                .unwrap();
            assert_eq!(got, answer, "round {round}");
        }
        assert_eq!(ours.fds().unwrap().stats().received, 3);
        drop(listener);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn serve_and_dial_over_tcp() {
        let bound = serve_and_dial("tcp://127.0.0.1:0".parse().unwrap()).await;
        let Url::Tcp(addr) = &bound else {
            panic!("{bound}")
        };
        assert!(!addr.ends_with(":0"), "{bound}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dialling_nothing_fails_with_the_url() {
        let url = Url::Unix("/nonexistent/vwire-transport.sock".into());
        match dial(&url, DIAL_TIMEOUT).await {
            Err(e @ TransportError::Dial { .. }) => {
                assert!(e.to_string().contains("unix:///nonexistent"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        // A lazy channel is made without connecting.
        assert!(dial_lazy(&url, DIAL_TIMEOUT).is_ok());
    }
}
