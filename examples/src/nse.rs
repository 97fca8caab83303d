//! The icmp-responder network service endpoint behind `vwire-nse`.
//!
//! A Request runs: validate → pick a mechanism → updatepath → IPAM → fill in the mechanism and the
//! IP context → restore the caller's path view. The kernel does the actual ICMP answering once the
//! forwarder has put the interface and addresses into this process's network namespace.
//!
//! Mechanisms are [`MechanismHandler`]s; KERNEL is the only one so far ([`Kernel`]). Adding MEMIF
//! means writing another handler and listing it in [`Nse::new`].

use std::sync::{Arc, Mutex};

use clap::Parser;
use tonic::{Request, Response, Status};
use vwire_proto::connection::{Connection, Mechanism, State};
use vwire_proto::connectioncontext::{ConnectionContext, IpContext, Route};
use vwire_proto::networkservice::network_service_server::{NetworkService, NetworkServiceServer};
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::ipam::{IpamError, P2pIpam};
use crate::path::{restore, update_path};
use crate::transport::{GrpcUrl, TransportError};

/// `vwire-nse` command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "vwire-nse",
    about = "NSM icmp-responder endpoint (KERNEL mechanism) for vwire tests"
)]
pub struct NseArgs {
    /// Where to serve the NSM API: unix:///path or tcp://host:port.
    #[arg(long)]
    pub listen: GrpcUrl,
    /// This endpoint's name (its path segment name and network_service_endpoint_name).
    #[arg(long, default_value = "nse-1")]
    pub name: String,
    /// IPv4 pool for point-to-point pairs: the NSE gets the first address of each pair, the NSC
    /// the second. A /31 (or /32) pool continues with the next pairs up to the end of its /24.
    #[arg(long, default_value = "172.16.1.100/31")]
    pub cidr: String,
    /// The network service this endpoint provides (requests for others are served with a warning).
    #[arg(long, default_value = "icmp-responder")]
    pub service: String,
}

/// The server side of one mechanism type.
pub trait MechanismHandler: Send + Sync {
    /// The mechanism `type` string, e.g. `KERNEL`.
    fn mechanism_type(&self) -> &'static str;
    /// Returns the mechanism this endpoint answers with for connection `conn` (whose `id` is this
    /// hop's own id), given what the client offered.
    fn accept(&self, conn: &Connection, offered: &Mechanism) -> Result<Mechanism, Status>;
}

/// KERNEL: the interface lives in this process's network namespace.
#[derive(Debug, Default)]
pub struct Kernel;

/// The KERNEL interface name for a connection: `nse-` and the first 8 alphanumeric characters of
/// its id (at most 12 characters, within Linux's 15).
pub fn kernel_iface_name(conn_id: &str) -> String {
    let tail: String = conn_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    if tail.is_empty() {
        "nse-conn".to_string()
    } else {
        format!("nse-{}", tail.to_ascii_lowercase())
    }
}

impl MechanismHandler for Kernel {
    fn mechanism_type(&self) -> &'static str {
        "KERNEL"
    }

    fn accept(&self, conn: &Connection, offered: &Mechanism) -> Result<Mechanism, Status> {
        let mut m = offered.clone();
        m.cls = "LOCAL".into();
        m.r#type = "KERNEL".into();
        m.parameters
            .insert("inodeURL".into(), crate::own_netns_url());
        m.parameters
            .insert("name".into(), kernel_iface_name(&conn.id));
        Ok(m)
    }
}

/// The endpoint.
pub struct Nse {
    name: String,
    service: String,
    ipam: Mutex<P2pIpam>,
    mechanisms: Vec<Box<dyn MechanismHandler>>,
}

impl Nse {
    /// An endpoint named `name` for `service` with a pool from `cidr`.
    pub fn new(name: &str, service: &str, cidr: &str) -> Result<Self, IpamError> {
        Ok(Self {
            name: name.to_string(),
            service: service.to_string(),
            ipam: Mutex::new(P2pIpam::new(cidr)?),
            mechanisms: vec![Box::new(Kernel)],
        })
    }

    fn supported(&self) -> String {
        self.mechanisms
            .iter()
            .map(|h| h.mechanism_type())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn handler(&self, ty: &str) -> Option<&dyn MechanismHandler> {
        self.mechanisms
            .iter()
            .find(|h| h.mechanism_type() == ty)
            .map(|h| h.as_ref())
    }

    /// The first preference of a supported type, else the connection's current mechanism.
    fn select<'m>(
        &self,
        prefs: &'m [Mechanism],
        current: Option<&'m Mechanism>,
    ) -> Result<(&dyn MechanismHandler, &'m Mechanism), Status> {
        prefs
            .iter()
            .chain(current)
            .find_map(|m| self.handler(&m.r#type).map(|h| (h, m)))
            .ok_or_else(|| {
                let offered: Vec<&str> = prefs
                    .iter()
                    .chain(current)
                    .map(|m| m.r#type.as_str())
                    .collect();
                Status::invalid_argument(format!(
                    "request.mechanism_preferences: no supported mechanism type among {offered:?} \
                     (request.connection.mechanism included); this endpoint supports {}",
                    self.supported()
                ))
            })
    }

    fn lock_ipam(&self) -> std::sync::MutexGuard<'_, P2pIpam> {
        self.ipam.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles a Request.
    pub fn handle_request(&self, req: NetworkServiceRequest) -> Result<Connection, Status> {
        let mut conn = req
            .connection
            .ok_or_else(|| Status::invalid_argument("request.connection is missing"))?;
        let (handler, offered) =
            self.select(&req.mechanism_preferences, conn.mechanism.as_ref())?;
        let offered = offered.clone();
        if !self.service.is_empty() && conn.network_service != self.service {
            tracing::warn!(
                "connection.network_service {:?} is not {:?}; serving it anyway",
                conn.network_service,
                self.service
            );
        }
        let caller = update_path(&mut conn, &self.name)?;
        let mechanism = handler.accept(&conn, &offered)?;

        let ctx = conn.context.get_or_insert_with(ConnectionContext::default);
        let ip = ctx.ip_context.get_or_insert_with(IpContext::default);
        let (pair, refresh) = {
            let mut ipam = self.lock_ipam();
            let refresh = ipam.get(&conn.id).is_some();
            let pair = ipam
                .allocate(&conn.id, &ip.excluded_prefixes)
                .map_err(|e| Status::resource_exhausted(e.to_string()))?;
            (pair, refresh)
        };
        let (nse, nsc) = (format!("{}/32", pair.nse), format!("{}/32", pair.nsc));
        ip.src_ip_addrs = vec![nsc.clone()];
        ip.dst_ip_addrs = vec![nse.clone()];
        ip.src_routes = vec![Route {
            prefix: nse.clone(),
            ..Default::default()
        }];
        ip.dst_routes = vec![Route {
            prefix: nsc.clone(),
            ..Default::default()
        }];
        conn.mechanism = Some(mechanism);
        conn.set_state(State::Up);
        conn.network_service_endpoint_name = self.name.clone();
        let iface = conn
            .mechanism
            .as_ref()
            .and_then(|m| m.parameters.get("name"))
            .map_or("", String::as_str);
        if refresh {
            tracing::debug!(id = %conn.id, iface, "refresh: nse {nse} nsc {nsc}");
        } else {
            tracing::info!(
                id = %conn.id,
                iface,
                "request: {} nse {nse} nsc {nsc}",
                handler.mechanism_type()
            );
        }
        restore(&mut conn, caller);
        Ok(conn)
    }

    /// Handles a Close: frees the connection's addresses. An unknown connection is not an error.
    pub fn handle_close(&self, mut conn: Connection) -> Result<(), Status> {
        update_path(&mut conn, &self.name)?;
        match self.lock_ipam().free(&conn.id) {
            Some(p) => tracing::info!(id = %conn.id, "close: freed {} and {}", p.nse, p.nsc),
            None => tracing::info!(id = %conn.id, "close: unknown connection"),
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl NetworkService for Nse {
    async fn request(
        &self,
        req: Request<NetworkServiceRequest>,
    ) -> Result<Response<Connection>, Status> {
        let r = self.handle_request(req.into_inner());
        if let Err(s) = &r {
            tracing::warn!("request refused: {}: {}", s.code(), s.message());
        }
        r.map(Response::new)
    }

    async fn close(&self, req: Request<Connection>) -> Result<Response<()>, Status> {
        self.handle_close(req.into_inner()).map(Response::new)
    }
}

/// Serves `nse` (and grpc.health.v1, SERVING) on `url` until `shutdown` resolves.
pub async fn run(
    nse: Nse,
    url: &GrpcUrl,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), TransportError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<NetworkServiceServer<Nse>>().await;
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(NetworkServiceServer::from_arc(Arc::new(nse)));
    crate::transport::serve(router, url, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iface_names_fit() {
        assert_eq!(
            kernel_iface_name("1B4e28ba-2fa1-11d2-883f-0016d3cca427"),
            "nse-1b4e28ba"
        );
        assert_eq!(kernel_iface_name("a/b c"), "nse-abc");
        assert_eq!(kernel_iface_name("--"), "nse-conn");
        assert!(kernel_iface_name(&"x".repeat(64)).len() <= 15);
    }

    #[test]
    fn missing_connection_and_mechanism_are_invalid() {
        let nse = Nse::new("nse-1", "icmp-responder", "172.16.1.100/31").unwrap();
        let e = nse
            .handle_request(NetworkServiceRequest::default())
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("request.connection"));
        let e = nse
            .handle_request(NetworkServiceRequest {
                connection: Some(Connection {
                    id: "x".into(),
                    ..Default::default()
                }),
                mechanism_preferences: vec![Mechanism {
                    r#type: "MEMIF".into(),
                    ..Default::default()
                }],
            })
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("mechanism_preferences"));
    }
}
