//! The NSM gRPC services: `networkservice.NetworkService` (Request, Close),
//! `connection.MonitorConnection` (MonitorConnections) and `grpc.health.v1.Health`, answered by
//! a [`Chain`] and a source of [`ConnectionEvents`].
//!
//! Which elements the chain holds, in which order, is [`crate::server`]'s business; where the
//! services listen is [`crate::transport`]'s. This module knows neither.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use vwire_proto::connection::monitor_connection_server::{
    MonitorConnection, MonitorConnectionServer,
};
use vwire_proto::connection::{Connection, ConnectionEvent, MonitorScopeSelector};
use vwire_proto::networkservice::network_service_server::{NetworkService, NetworkServiceServer};
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::{with_caller, Caller, Chain};
use crate::elements::authorize::Authorize;
use crate::security::{parse_rfc3339, TOKEN_EXPIRES_HEADER, TOKEN_HEADER};
use crate::transport::{Peer, Transport, TransportError, Url};

/// Where MonitorConnections gets its events (the monitor element, see [`crate::server`]).
pub trait ConnectionEvents: Send + Sync {
    /// The initial state (the connections matching `sel`) and the stream of later events,
    /// unfiltered. No event may fall between the two.
    fn subscribe(
        &self,
        sel: &MonitorScopeSelector,
    ) -> (ConnectionEvent, broadcast::Receiver<ConnectionEvent>);

    /// Whether `conn` matches `sel` (the selector rules of nsm-api.md).
    fn matches(&self, sel: &MonitorScopeSelector, conn: &Connection) -> bool;
}

/// The services, over one chain.
pub struct NsmService {
    chain: Arc<Chain>,
    events: Arc<dyn ConnectionEvents>,
    /// Checks MonitorConnections subscriptions (with SPIFFE).
    authorize: Option<Arc<Authorize>>,
    /// Where and how the services are served.
    transport: Transport,
}

impl NsmService {
    /// Services that run requests and closes through `chain` and stream `events` to the
    /// subscribers `authorize` allows (all without it), served through `transport`.
    pub fn new(
        chain: Arc<Chain>,
        events: Arc<dyn ConnectionEvents>,
        authorize: Option<Arc<Authorize>>,
        transport: Transport,
    ) -> Arc<Self> {
        Arc::new(Self {
            chain,
            events,
            authorize,
            transport,
        })
    }
}

#[tonic::async_trait]
impl NetworkService for NsmService {
    async fn request(
        &self,
        req: Request<NetworkServiceRequest>,
    ) -> Result<Response<Connection>, Status> {
        let caller = caller_of(&req);
        with_caller(caller, self.chain.request(req.into_inner()))
            .await
            .map(Response::new)
    }

    async fn close(&self, req: Request<Connection>) -> Result<Response<()>, Status> {
        let caller = caller_of(&req);
        with_caller(caller, self.chain.close(req.into_inner()))
            .await
            .map(Response::new)
    }
}

/// The chain's view of the caller of `req`: its connection's fds and certificate, and the
/// path token of its metadata.
pub fn caller_of<T>(req: &Request<T>) -> Caller {
    let peer = req.extensions().get::<Peer>().cloned().unwrap_or_default();
    let md = req.metadata();
    let text = |key| md.get(key).and_then(|v| v.to_str().ok());
    let token = text(TOKEN_HEADER).map(|t| {
        let expires = text(TOKEN_EXPIRES_HEADER).and_then(parse_rfc3339);
        (t.to_string(), expires)
    });
    Caller {
        fds: peer.fds,
        certificate: peer.certificate,
        token,
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ConnectionEvent, Status>> + Send>>;

#[tonic::async_trait]
impl MonitorConnection for NsmService {
    type MonitorConnectionsStream = EventStream;

    async fn monitor_connections(
        &self,
        req: Request<MonitorScopeSelector>,
    ) -> Result<Response<Self::MonitorConnectionsStream>, Status> {
        if let Some(authorize) = &self.authorize {
            let peer = req.extensions().get::<Peer>();
            authorize.check_monitor(peer.and_then(|p| p.certificate.as_ref()), req.get_ref())?;
        }
        let sel = req.into_inner();
        let (initial, mut rx) = self.events.subscribe(&sel);
        let events = self.events.clone();
        let (tx, out) = tokio::sync::mpsc::channel(64);
        let _ = tx.send(Ok(initial)).await;
        tokio::spawn(async move {
            loop {
                // A subscriber that went away ends the task at once, not at the next matching
                // event (with a narrow selector, that may never come).
                let next = tokio::select! {
                    r = rx.recv() => r,
                    () = tx.closed() => return,
                };
                let mut ev = match next {
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
                ev.connections.retain(|_, c| events.matches(&sel, c));
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

/// Serves the services (and grpc.health.v1, SERVING) on `listen`, through the service's
/// transport (mTLS with SPIFFE), until `shutdown` resolves. Health is not authorised beyond
/// the TLS handshake: probes (`grpc-health-probe -spiffe`) carry no token. A unix socket file
/// is removed when the server stops.
pub async fn serve(
    service: Arc<NsmService>,
    listen: &Url,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), TransportError> {
    let transport = service.transport.clone();
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<NetworkServiceServer<NsmService>>()
        .await;
    health
        .set_serving::<MonitorConnectionServer<NsmService>>()
        .await;
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(NetworkServiceServer::from_arc(service.clone()))
        .add_service(MonitorConnectionServer::from_arc(service));
    transport.bind(listen).await?.serve(router, shutdown).await
}
