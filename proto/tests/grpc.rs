//! gRPC method paths (nsm-api.md §1, "gRPC method paths").
//!
//! Each generated client talks in memory to the matching generated server through a recorder that
//! notes the HTTP/2 path and the `GrpcMethod` of every request. Every server handler fails with a
//! status that names the path it was written for. So one call checks three things at once: the
//! client sends the spec's exact path, the server routes that path, and it routes it to the right
//! handler.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tonic::codegen::{http, BoxStream, GrpcMethod, Service};
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status};
use vwire_proto::connection::monitor_connection_client::MonitorConnectionClient;
use vwire_proto::connection::monitor_connection_server::{
    self, MonitorConnection, MonitorConnectionServer,
};
use vwire_proto::connection::{Connection, ConnectionEvent, MonitorScopeSelector};
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;
use vwire_proto::networkservice::network_service_server::{
    self, NetworkService, NetworkServiceServer,
};
use vwire_proto::networkservice::NetworkServiceRequest;
use vwire_proto::registry::network_service_endpoint_registry_client::NetworkServiceEndpointRegistryClient;
use vwire_proto::registry::network_service_endpoint_registry_server::{
    self, NetworkServiceEndpointRegistry, NetworkServiceEndpointRegistryServer,
};
use vwire_proto::registry::network_service_registry_client::NetworkServiceRegistryClient;
use vwire_proto::registry::network_service_registry_server::{
    self, NetworkServiceRegistry, NetworkServiceRegistryServer,
};
use vwire_proto::registry::{
    NetworkService as RegisteredService, NetworkServiceEndpoint, NetworkServiceEndpointQuery,
    NetworkServiceEndpointResponse, NetworkServiceQuery, NetworkServiceResponse,
};

/// The spec's table, minus `ipam.IPAM/ManagePrefixes` (IPAM is not compiled): path, service, rpc.
const SPEC_PATHS: [(&str, &str, &str); 9] = [
    (
        "/networkservice.NetworkService/Request",
        "networkservice.NetworkService",
        "Request",
    ),
    (
        "/networkservice.NetworkService/Close",
        "networkservice.NetworkService",
        "Close",
    ),
    (
        "/connection.MonitorConnection/MonitorConnections",
        "connection.MonitorConnection",
        "MonitorConnections",
    ),
    (
        "/registry.NetworkServiceEndpointRegistry/Register",
        "registry.NetworkServiceEndpointRegistry",
        "Register",
    ),
    (
        "/registry.NetworkServiceEndpointRegistry/Find",
        "registry.NetworkServiceEndpointRegistry",
        "Find",
    ),
    (
        "/registry.NetworkServiceEndpointRegistry/Unregister",
        "registry.NetworkServiceEndpointRegistry",
        "Unregister",
    ),
    (
        "/registry.NetworkServiceRegistry/Register",
        "registry.NetworkServiceRegistry",
        "Register",
    ),
    (
        "/registry.NetworkServiceRegistry/Find",
        "registry.NetworkServiceRegistry",
        "Find",
    ),
    (
        "/registry.NetworkServiceRegistry/Unregister",
        "registry.NetworkServiceRegistry",
        "Unregister",
    ),
];

/// One request as it left the client: HTTP/2 path, and the `GrpcMethod` extension's service and
/// method.
type Seen = (String, String, String);

/// A tower layer between client and server that records every request, then forwards it.
#[derive(Clone)]
struct Recorder<S> {
    inner: S,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl<S, B> Service<http::Request<B>> for Recorder<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (service, method) = req
            .extensions()
            .get::<GrpcMethod>()
            .map(|m| (m.service().to_owned(), m.method().to_owned()))
            .unwrap_or_default();
        self.seen.lock().expect("recorder lock").push((
            req.uri().path().to_owned(),
            service,
            method,
        ));
        self.inner.call(req)
    }
}

fn recorded<S>(inner: S, seen: &Arc<Mutex<Vec<Seen>>>) -> Recorder<S> {
    Recorder {
        inner,
        seen: Arc::clone(seen),
    }
}

/// The status every stub handler fails with: it names the path the handler serves.
fn reached(path: &str) -> Status {
    Status::already_exists(path)
}

struct NsStub;

#[tonic::async_trait]
impl NetworkService for NsStub {
    async fn request(
        &self,
        _: Request<NetworkServiceRequest>,
    ) -> Result<Response<Connection>, Status> {
        Err(reached("/networkservice.NetworkService/Request"))
    }

    async fn close(&self, _: Request<Connection>) -> Result<Response<()>, Status> {
        Err(reached("/networkservice.NetworkService/Close"))
    }
}

struct MonitorStub;

#[tonic::async_trait]
impl MonitorConnection for MonitorStub {
    type MonitorConnectionsStream = BoxStream<ConnectionEvent>;

    async fn monitor_connections(
        &self,
        _: Request<MonitorScopeSelector>,
    ) -> Result<Response<Self::MonitorConnectionsStream>, Status> {
        Err(reached("/connection.MonitorConnection/MonitorConnections"))
    }
}

struct NseRegistryStub;

#[tonic::async_trait]
impl NetworkServiceEndpointRegistry for NseRegistryStub {
    type FindStream = BoxStream<NetworkServiceEndpointResponse>;

    async fn register(
        &self,
        _: Request<NetworkServiceEndpoint>,
    ) -> Result<Response<NetworkServiceEndpoint>, Status> {
        Err(reached("/registry.NetworkServiceEndpointRegistry/Register"))
    }

    async fn find(
        &self,
        _: Request<NetworkServiceEndpointQuery>,
    ) -> Result<Response<Self::FindStream>, Status> {
        Err(reached("/registry.NetworkServiceEndpointRegistry/Find"))
    }

    async fn unregister(&self, _: Request<NetworkServiceEndpoint>) -> Result<Response<()>, Status> {
        Err(reached(
            "/registry.NetworkServiceEndpointRegistry/Unregister",
        ))
    }
}

struct NsRegistryStub;

#[tonic::async_trait]
impl NetworkServiceRegistry for NsRegistryStub {
    type FindStream = BoxStream<NetworkServiceResponse>;

    async fn register(
        &self,
        _: Request<RegisteredService>,
    ) -> Result<Response<RegisteredService>, Status> {
        Err(reached("/registry.NetworkServiceRegistry/Register"))
    }

    async fn find(
        &self,
        _: Request<NetworkServiceQuery>,
    ) -> Result<Response<Self::FindStream>, Status> {
        Err(reached("/registry.NetworkServiceRegistry/Find"))
    }

    async fn unregister(&self, _: Request<RegisteredService>) -> Result<Response<()>, Status> {
        Err(reached("/registry.NetworkServiceRegistry/Unregister"))
    }
}

/// Asserts that a call failed in the handler written for `path`.
fn assert_reached<T>(result: Result<T, Status>, path: &str) {
    let Err(status) = result else {
        panic!("{path}: the stub handler should have failed");
    };
    assert_eq!(
        (status.code(), status.message()),
        (Code::AlreadyExists, path),
        "{path}: {status:?}"
    );
}

#[tokio::test]
async fn client_paths_are_the_spec_paths_and_reach_the_matching_handlers() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut ns = NetworkServiceClient::new(recorded(NetworkServiceServer::new(NsStub), &seen));
    assert_reached(
        ns.request(NetworkServiceRequest::default()).await,
        SPEC_PATHS[0].0,
    );
    assert_reached(ns.close(Connection::default()).await, SPEC_PATHS[1].0);

    let mut mon =
        MonitorConnectionClient::new(recorded(MonitorConnectionServer::new(MonitorStub), &seen));
    assert_reached(
        mon.monitor_connections(MonitorScopeSelector::default())
            .await,
        SPEC_PATHS[2].0,
    );

    let mut nse = NetworkServiceEndpointRegistryClient::new(recorded(
        NetworkServiceEndpointRegistryServer::new(NseRegistryStub),
        &seen,
    ));
    assert_reached(
        nse.register(NetworkServiceEndpoint::default()).await,
        SPEC_PATHS[3].0,
    );
    assert_reached(
        nse.find(NetworkServiceEndpointQuery::default()).await,
        SPEC_PATHS[4].0,
    );
    assert_reached(
        nse.unregister(NetworkServiceEndpoint::default()).await,
        SPEC_PATHS[5].0,
    );

    let mut nsr = NetworkServiceRegistryClient::new(recorded(
        NetworkServiceRegistryServer::new(NsRegistryStub),
        &seen,
    ));
    assert_reached(
        nsr.register(RegisteredService::default()).await,
        SPEC_PATHS[6].0,
    );
    assert_reached(
        nsr.find(NetworkServiceQuery::default()).await,
        SPEC_PATHS[7].0,
    );
    assert_reached(
        nsr.unregister(RegisteredService::default()).await,
        SPEC_PATHS[8].0,
    );

    let seen = seen.lock().expect("recorder lock").clone();
    let expected: Vec<Seen> = SPEC_PATHS
        .iter()
        .map(|&(p, s, m)| (p.to_owned(), s.to_owned(), m.to_owned()))
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn server_names_are_the_spec_service_names() {
    // `NAME` is what tonic's router mounts the service under, and what health checks report.
    assert_eq!(
        <NetworkServiceServer<NsStub> as NamedService>::NAME,
        "networkservice.NetworkService"
    );
    assert_eq!(
        network_service_server::SERVICE_NAME,
        "networkservice.NetworkService"
    );
    assert_eq!(
        <MonitorConnectionServer<MonitorStub> as NamedService>::NAME,
        "connection.MonitorConnection"
    );
    assert_eq!(
        monitor_connection_server::SERVICE_NAME,
        "connection.MonitorConnection"
    );
    assert_eq!(
        <NetworkServiceEndpointRegistryServer<NseRegistryStub> as NamedService>::NAME,
        "registry.NetworkServiceEndpointRegistry"
    );
    assert_eq!(
        network_service_endpoint_registry_server::SERVICE_NAME,
        "registry.NetworkServiceEndpointRegistry"
    );
    assert_eq!(
        <NetworkServiceRegistryServer<NsRegistryStub> as NamedService>::NAME,
        "registry.NetworkServiceRegistry"
    );
    assert_eq!(
        network_service_registry_server::SERVICE_NAME,
        "registry.NetworkServiceRegistry"
    );
}

/// Sends a bare request for `path` to `server` and returns the gRPC status it answers with.
async fn status_for<S>(mut server: S, path: &str) -> Status
where
    S: Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
    >,
{
    let req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .body(tonic::body::Body::empty())
        .expect("valid request");
    let resp = match server.call(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    Status::from_header_map(resp.headers()).expect("a trailers-only gRPC status")
}

#[tokio::test]
async fn the_package_trap_paths_are_not_served() {
    // §1: the monitor service is `connection.MonitorConnection`, not `networkservice.…`, and the
    // NetworkService is not under `connection.`.
    let mon = MonitorConnectionServer::new(MonitorStub);
    let status = status_for(mon, "/networkservice.MonitorConnection/MonitorConnections").await;
    assert_eq!(status.code(), Code::Unimplemented);

    let ns = NetworkServiceServer::new(NsStub);
    let status = status_for(ns, "/connection.NetworkService/Request").await;
    assert_eq!(status.code(), Code::Unimplemented);
}
