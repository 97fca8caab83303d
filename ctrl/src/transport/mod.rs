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

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use grpcfd::{proc_fd_url, FdConn, FdStream, GrpcfdError, InodeUrl};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_stream::StreamExt;
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

/// Removes a unix socket file when dropped.
#[derive(Debug)]
struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A bound socket, not yet serving. A unix socket's file is removed when the listener (or the
/// server it became) is dropped, however the server ends.
#[derive(Debug)]
pub struct Listener(Bound);

#[derive(Debug)]
enum Bound {
    /// A unix socket and the guard that removes its file.
    Unix(tokio::net::UnixListener, Unlink),
    /// A TCP socket.
    Tcp(tokio::net::TcpListener),
}

/// Binds `url`. A stale unix socket file is replaced. Must run inside a tokio runtime.
pub async fn bind(url: &Url) -> Result<Listener, TransportError> {
    let listen_err = |source| TransportError::Listen {
        url: url.clone(),
        source,
    };
    match url {
        Url::Unix(path) => {
            let _ = std::fs::remove_file(path);
            let l = tokio::net::UnixListener::bind(path).map_err(listen_err)?;
            Ok(Listener(Bound::Unix(l, Unlink(path.clone()))))
        }
        Url::Tcp(addr) => Ok(Listener(Bound::Tcp(
            tokio::net::TcpListener::bind(addr.as_str())
                .await
                .map_err(listen_err)?,
        ))),
    }
}

impl Listener {
    /// The URL this listener answers on (a `tcp://…:0` URL with its port filled in).
    pub fn url(&self) -> Result<Url, std::io::Error> {
        match &self.0 {
            Bound::Unix(_, Unlink(path)) => Ok(Url::Unix(path.clone())),
            Bound::Tcp(l) => Ok(Url::Tcp(l.local_addr()?.to_string())),
        }
    }

    /// Serves `router` on this socket until `shutdown` resolves. On a unix socket, every
    /// accepted connection passes fds ([`FdStream::accept`]): its handlers get its [`FdConn`]
    /// from the request extensions.
    pub async fn serve(
        self,
        router: Router,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), TransportError> {
        match self.0 {
            Bound::Unix(l, _unlink) => router
                .serve_with_incoming_shutdown(
                    UnixListenerStream::new(l).map(|s| s.map(FdStream::accept)),
                    shutdown,
                )
                .await
                .map_err(TransportError::Serve),
            Bound::Tcp(l) => router
                .serve_with_incoming_shutdown(TcpListenerStream::new(l), shutdown)
                .await
                .map_err(TransportError::Serve),
        }
    }
}

/// Serves `router` on `url` until `shutdown` resolves: [`bind`], then [`Listener::serve`].
pub async fn serve(
    router: Router,
    url: &Url,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), TransportError> {
    bind(url).await?.serve(router, shutdown).await
}

/// A connector that opens a unix stream to `path`, whatever URI tonic asks for.
///
/// The stream is an [`FdStream`] of its own [`FdConn`], which nothing sends on or takes from:
/// not for the fds, but for how it reads. A grpcfd peer (any NSM component) may attach fds to
/// what it writes, one per byte, and the kernel ends every read of a unix stream after such a
/// byte, with the rest still queued. tokio's `UnixStream::poll_read` takes that short read for
/// a drained socket and waits for the next readiness event (tokio-rs/tokio#5866), which may
/// never come: the peer has written its whole answer and waits for us. [`FdStream`] reads until
/// `EAGAIN`. The fds that come are held with the connection (at most [`grpcfd::MAX_HELD`]) and
/// closed with it.
fn unix_connector(
    path: &Path,
) -> impl tower::Service<
    tonic::codegen::http::Uri,
    Response = hyper_util::rt::TokioIo<FdStream>,
    Error = std::io::Error,
    Future = impl std::future::Future<Output = std::io::Result<hyper_util::rt::TokioIo<FdStream>>>
                 + Send,
> + Clone
       + Send {
    let path = path.to_path_buf();
    tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let path = path.clone();
        async move {
            let s = tokio::net::UnixStream::connect(path).await?;
            Ok(hyper_util::rt::TokioIo::new(FdStream::join(
                s,
                &FdConn::new(),
            )))
        }
    })
}

/// A connector like [`unix_connector`] whose streams carry the fds of `conn`.
fn fd_connector(
    path: &Path,
    conn: &FdConn,
) -> impl tower::Service<
    tonic::codegen::http::Uri,
    Response = hyper_util::rt::TokioIo<FdStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
       + Send {
    let path = path.to_path_buf();
    let conn = conn.clone();
    tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let path = path.clone();
        let conn = conn.clone();
        async move {
            let s = tokio::net::UnixStream::connect(path).await?;
            Ok(hyper_util::rt::TokioIo::new(FdStream::join(s, &conn)))
        }
    })
}

/// Like [`dial`], for a `unix://` URL only, and with the channel's [`FdConn`]: fds queued on it
/// go out with the channel's next write (queue them before the call whose message names them),
/// and fds the server sends back can be received from it. The handle serves the channel's
/// reconnections too; what it holds is closed when the handle and the channel are dropped.
pub async fn dial_with_fds(
    url: &Url,
    timeout: Duration,
) -> Result<(Channel, FdConn), TransportError> {
    let Url::Unix(path) = url else {
        return Err(TransportError::NoFds(url.clone()));
    };
    let conn = FdConn::new();
    let channel = url
        .endpoint(timeout)?
        .connect_with_connector(fd_connector(path, &conn))
        .await
        .map_err(|source| TransportError::Dial {
            url: url.clone(),
            source,
        })?;
    Ok((channel, conn))
}

/// Like [`dial_lazy`], with the channel's [`FdConn`] as [`dial_with_fds`] gives it.
pub fn dial_lazy_with_fds(
    url: &Url,
    timeout: Duration,
) -> Result<(Channel, FdConn), TransportError> {
    let Url::Unix(path) = url else {
        return Err(TransportError::NoFds(url.clone()));
    };
    let conn = FdConn::new();
    let channel = url
        .endpoint(timeout)?
        .connect_with_connector_lazy(fd_connector(path, &conn));
    Ok((channel, conn))
}

/// A channel to `url`, connected now: fails if nothing answers within `timeout`.
pub async fn dial(url: &Url, timeout: Duration) -> Result<Channel, TransportError> {
    let e = url.endpoint(timeout)?;
    let connected = match url {
        Url::Tcp(_) => e.connect().await,
        Url::Unix(path) => e.connect_with_connector(unix_connector(path)).await,
    };
    connected.map_err(|source| TransportError::Dial {
        url: url.clone(),
        source,
    })
}

/// A channel to `url` that connects on first use, and again after a failure, each attempt
/// bounded by `timeout`. Fails only for a URL that is no valid endpoint.
pub fn dial_lazy(url: &Url, timeout: Duration) -> Result<Channel, TransportError> {
    let e = url.endpoint(timeout)?;
    Ok(match url {
        Url::Tcp(_) => e.connect_lazy(),
        Url::Unix(path) => e.connect_with_connector_lazy(unix_connector(path)),
    })
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
    /// (see [`unix_connector`]). With tokio's `UnixStream` the read stops after that one byte
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
        let mut connector = unix_connector(&path);
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
        assert_eq!(ours.conn().stats().received, 3);
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
