//! The NSM gRPC server: `networkservice.NetworkService` (Request, Close),
//! `connection.MonitorConnection` (MonitorConnections) and `grpc.health.v1.Health`, on the
//! NSM_LISTEN_ON address (`unix:///path` or `tcp://host:port`).
//!
//! The server chain, in order: updatepath → begin → metadata → timeout → monitor → mechanisms →
//! xconnect → connect. KERNEL is cross-connected on both sides; MEMIF is selected but its
//! cross-connect is not written yet (Unimplemented, leaving nothing behind).

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use vwire_proto::connection::monitor_connection_server::{
    MonitorConnection, MonitorConnectionServer,
};
use vwire_proto::connection::{Connection, ConnectionEvent, MonitorScopeSelector};
use vwire_proto::networkservice::network_service_server::{NetworkService, NetworkServiceServer};
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::Chain;
use crate::config::EndpointConfig;
use crate::dataplane::SharedDataplane;
use crate::elements::begin::Begin;
use crate::elements::connect::Connect;
use crate::elements::mechanisms::Mechanisms;
use crate::elements::metadata::{Metadata, MetadataElement};
use crate::elements::monitor::{matches, Monitor};
use crate::elements::timeout::Timeout;
use crate::elements::updatepath::UpdatePath;
use crate::elements::xconnect::Xconnect;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// the listen URL is not unix:// or tcp://
    #[error("listen URL {0:?}: expected unix:///path or tcp://host:port")]
    BadUrl(String),
    /// binding failed
    #[error("listening on {url}: {source}")]
    Listen {
        /// the URL
        url: String,
        /// the system error
        source: std::io::Error,
    },
    /// the server failed
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Where to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenOn {
    /// A unix socket path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(String),
}

impl ListenOn {
    /// Parses `unix:///path` or `tcp://host:port`.
    pub fn parse(url: &str) -> Result<Self, GrpcError> {
        if let Some(p) = url.strip_prefix("unix://") {
            if p.is_empty() {
                return Err(GrpcError::BadUrl(url.into()));
            }
            return Ok(Self::Unix(PathBuf::from(p)));
        }
        if let Some(a) = url.strip_prefix("tcp://") {
            if a.is_empty() {
                return Err(GrpcError::BadUrl(url.into()));
            }
            return Ok(Self::Tcp(a.to_string()));
        }
        Err(GrpcError::BadUrl(url.into()))
    }
}

/// The server's state.
pub struct NsmServer {
    chain: Arc<Chain>,
    monitor: Arc<Monitor>,
    /// Per-connection metadata (exposed for tests and metrics).
    pub metadata: Arc<Metadata>,
}

impl NsmServer {
    /// Builds the chain for a hop named `name` that forwards to `endpoints` and programs
    /// `dataplane`, with the REMOTE mechanisms of `remote` when there is an uplink.
    pub fn new(
        name: &str,
        endpoints: Vec<EndpointConfig>,
        dataplane: SharedDataplane,
        remote: Option<Arc<crate::remote::Remote>>,
    ) -> Arc<Self> {
        let monitor = Monitor::new();
        let metadata = Metadata::new();
        let timeout = Timeout::new();
        let chain = Arc::new(Chain::new(vec![
            Arc::new(UpdatePath::new(name)),
            Arc::new(Begin::new()),
            Arc::new(MetadataElement::new(metadata.clone())),
            Arc::new(timeout.clone()),
            Arc::new(monitor.clone()),
            Arc::new(Mechanisms::with_remote(remote.clone())),
            Arc::new(Xconnect::new(metadata.clone(), dataplane, remote.clone())),
            Arc::new(Connect::new(endpoints, metadata.clone(), remote)),
        ]));
        timeout.attach(&chain);
        Arc::new(Self {
            chain,
            monitor,
            metadata,
        })
    }
}

impl NsmServer {
    /// Closes every established connection through the chain (at shutdown: nothing is left
    /// behind in any namespace).
    pub async fn close_all(&self) {
        for c in self.monitor.connections() {
            if let Err(e) = self.chain.close(c).await {
                tracing::warn!("closing a connection at shutdown: {e}");
            }
        }
    }
}

#[tonic::async_trait]
impl NetworkService for NsmServer {
    async fn request(
        &self,
        req: Request<NetworkServiceRequest>,
    ) -> Result<Response<Connection>, Status> {
        self.chain
            .request(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn close(&self, req: Request<Connection>) -> Result<Response<()>, Status> {
        self.chain.close(req.into_inner()).await.map(Response::new)
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ConnectionEvent, Status>> + Send>>;

#[tonic::async_trait]
impl MonitorConnection for NsmServer {
    type MonitorConnectionsStream = EventStream;

    async fn monitor_connections(
        &self,
        req: Request<MonitorScopeSelector>,
    ) -> Result<Response<Self::MonitorConnectionsStream>, Status> {
        let sel = req.into_inner();
        let (initial, mut rx) = self.monitor.subscribe(&sel);
        let (tx, out) = tokio::sync::mpsc::channel(64);
        let _ = tx.send(Ok(initial)).await;
        tokio::spawn(async move {
            loop {
                let mut ev = match rx.recv().await {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::resource_exhausted(format!(
                                "monitor stream lagged by {n} events; resubscribe"
                            ))))
                            .await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                ev.connections.retain(|_, c| matches(&sel, c));
                if ev.connections.is_empty() {
                    continue;
                }
                if tx.send(Ok(ev)).await.is_err() {
                    return; // the subscriber went away
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }
}

/// Serves the NSM API on `listen` until `shutdown` resolves. A unix socket file is removed when
/// the server stops.
pub async fn serve(
    server: Arc<NsmServer>,
    listen: &ListenOn,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), GrpcError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<NetworkServiceServer<NsmServer>>()
        .await;
    health
        .set_serving::<MonitorConnectionServer<NsmServer>>()
        .await;
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(NetworkServiceServer::from_arc(server.clone()))
        .add_service(MonitorConnectionServer::from_arc(server));
    serve_router(router, listen, shutdown).await
}

/// Serves `router` on `listen` until `shutdown` resolves. A stale unix socket file is replaced,
/// and the socket file is removed however the server ends, even if this future is dropped.
pub async fn serve_router(
    router: tonic::transport::server::Router,
    listen: &ListenOn,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), GrpcError> {
    match listen {
        ListenOn::Unix(path) => {
            let _ = std::fs::remove_file(path);
            let l = tokio::net::UnixListener::bind(path).map_err(|source| GrpcError::Listen {
                url: format!("unix://{}", path.display()),
                source,
            })?;
            struct Unlink<'p>(&'p PathBuf);
            impl Drop for Unlink<'_> {
                fn drop(&mut self) {
                    let _ = std::fs::remove_file(self.0);
                }
            }
            let _unlink = Unlink(path);
            router
                .serve_with_incoming_shutdown(UnixListenerStream::new(l), shutdown)
                .await?;
        }
        ListenOn::Tcp(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| GrpcError::Listen {
                    url: format!("tcp://{addr}"),
                    source,
                })?;
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(l), shutdown)
                .await?;
        }
    }
    Ok(())
}

/// A gRPC channel endpoint for `url` (`unix://` through a UnixStream connector).
fn endpoint(url: &ListenOn) -> Result<tonic::transport::Endpoint, GrpcError> {
    let e = match url {
        ListenOn::Tcp(addr) => tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?,
        ListenOn::Unix(_) => tonic::transport::Endpoint::from_static("http://[::]:0"),
    };
    Ok(e.connect_timeout(std::time::Duration::from_secs(2)))
}

/// A channel to `url` that connects on first use (and reconnects after failures).
pub fn lazy_channel(url: &ListenOn) -> Result<tonic::transport::Channel, GrpcError> {
    let e = endpoint(url)?;
    Ok(match url {
        ListenOn::Tcp(_) => e.connect_lazy(),
        ListenOn::Unix(path) => {
            let path = path.clone();
            e.connect_with_connector_lazy(tower::service_fn(move |_: tonic::codegen::http::Uri| {
                let path = path.clone();
                async move {
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map(hyper_util::rt::TokioIo::new)
                }
            }))
        }
    })
}

/// A channel to `url`, connected now (fails if nothing listens there).
pub async fn channel(url: &ListenOn) -> Result<tonic::transport::Channel, GrpcError> {
    let e = endpoint(url)?;
    Ok(match url {
        ListenOn::Tcp(_) => e.connect().await?,
        ListenOn::Unix(path) => {
            let path = path.clone();
            e.connect_with_connector(tower::service_fn(move |_: tonic::codegen::http::Uri| {
                let path = path.clone();
                async move {
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map(hyper_util::rt::TokioIo::new)
                }
            }))
            .await?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_urls_parse() {
        assert_eq!(
            ListenOn::parse("unix:///run/x.sock").unwrap(),
            ListenOn::Unix("/run/x.sock".into())
        );
        assert_eq!(
            ListenOn::parse("tcp://127.0.0.1:5000").unwrap(),
            ListenOn::Tcp("127.0.0.1:5000".into())
        );
        assert!(ListenOn::parse("http://x").is_err());
        assert!(ListenOn::parse("unix://").is_err());
    }
}
