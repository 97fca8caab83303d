//! `unix:///path` and `tcp://host:port` URLs: serving on them and connecting to them.

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::server::Router;
use tonic::transport::Channel;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The URL is not `unix:///path` or `tcp://host:port`.
    #[error("URL {0:?}: expected unix:///path or tcp://host:port")]
    BadUrl(String),
    /// Connecting failed.
    #[error("connecting to {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The transport error.
        source: vwire::grpc::GrpcError,
    },
    /// Listening or serving failed.
    #[error("{0}")]
    Serve(#[from] vwire::grpc::GrpcError),
}

/// `e` and its chain of sources, joined by `: ` (tonic's transport errors say little on their own).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// A parsed `unix://` or `tcp://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrpcUrl {
    /// A unix socket path.
    Unix(PathBuf),
    /// A TCP `host:port`.
    Tcp(String),
}

impl GrpcUrl {
    /// The same address as vwire's listen/dial type.
    pub fn listen_on(&self) -> vwire::grpc::ListenOn {
        match self {
            GrpcUrl::Unix(p) => vwire::grpc::ListenOn::Unix(p.clone()),
            GrpcUrl::Tcp(a) => vwire::grpc::ListenOn::Tcp(a.clone()),
        }
    }

    /// Parses `unix:///path` or `tcp://host:port`.
    pub fn parse(url: &str) -> Result<Self, TransportError> {
        if let Some(p) = url.strip_prefix("unix://") {
            if p.is_empty() {
                return Err(TransportError::BadUrl(url.into()));
            }
            return Ok(Self::Unix(PathBuf::from(p)));
        }
        if let Some(a) = url.strip_prefix("tcp://") {
            if a.is_empty() || a.contains('/') {
                return Err(TransportError::BadUrl(url.into()));
            }
            return Ok(Self::Tcp(a.to_string()));
        }
        Err(TransportError::BadUrl(url.into()))
    }
}

impl std::str::FromStr for GrpcUrl {
    type Err = TransportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl std::fmt::Display for GrpcUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
            Self::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// How long open client connections may delay the exit after the shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Serves `router` on `url` until `shutdown` resolves, then lets open connections finish for at
/// most [`SHUTDOWN_GRACE`]. A unix socket file (a stale one is replaced) is removed when the
/// server stops, however it stops.
pub async fn serve(
    router: Router,
    url: &GrpcUrl,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), TransportError> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = serve_inner(router, url, async {
        let _ = rx.await;
    });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r,
        () = shutdown => {}
    }
    let _ = tx.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                "clients still connected {SHUTDOWN_GRACE:?} after the shutdown signal; stopping anyway"
            );
            Ok(())
        }
    }
}

async fn serve_inner(
    router: Router,
    url: &GrpcUrl,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), TransportError> {
    Ok(vwire::grpc::serve_router(router, &url.listen_on(), shutdown).await?)
}

/// Connects a gRPC channel to `url` (eagerly: fails if nothing listens there).
pub async fn connect(url: &GrpcUrl) -> Result<Channel, TransportError> {
    vwire::grpc::channel(&url.listen_on())
        .await
        .map_err(|source| TransportError::Connect {
            url: url.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        assert_eq!(
            GrpcUrl::parse("unix:///run/x.sock").unwrap(),
            GrpcUrl::Unix("/run/x.sock".into())
        );
        assert_eq!(
            GrpcUrl::parse("tcp://127.0.0.1:5000").unwrap(),
            GrpcUrl::Tcp("127.0.0.1:5000".into())
        );
        assert_eq!(
            GrpcUrl::parse("unix:///a/b").unwrap().to_string(),
            "unix:///a/b"
        );
        for bad in ["http://x", "unix://", "tcp://", "/tmp/x.sock"] {
            assert!(GrpcUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
