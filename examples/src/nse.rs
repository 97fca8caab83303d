//! The icmp-responder network service endpoint behind `vwire-nse`.
//!
//! A Request runs: validate → pick a mechanism → updatepath → IPAM → fill in the IP context →
//! the mechanism handler answers (it sees the addresses) → restore the caller's path view. If
//! the handler fails, a pair allocated by this Request is freed again.
//!
//! Mechanisms are [`MechanismHandler`]s, offered in the order of `--mechanism`; the first of the
//! client's preferences that one of them handles is used.
//! - [`Kernel`]: the kernel does the ICMP answering once the forwarder has put the interface and
//!   addresses into this process's network namespace.
//! - [`Memif`]: one memif server per connection on an abstract socket in this namespace, with
//!   the host of [`crate::memif_app`] behind it answering ARP and ICMP echo (and pinging the
//!   client with `--ping-count`). The host keeps to the MTU the Request's connection context
//!   carries when it reaches this endpoint (`context.MTU`, set by the forwarder; 0: no limit),
//!   fragmenting and reassembling IPv4 like a kernel. A refresh keeps the running server and
//!   its link, and takes a changed MTU in place. Close, and the endpoint's shutdown, stop it.
//!
//! It also serves `connection.MonitorConnections` (as every sdk endpoint does), from vwire's own
//! monitor element: an UPDATE per successful Request and a DELETE per Close, each connection in
//! the endpoint's view (its id, its path index), so a forwarder can follow it.
//!
//! With `--spiffe` ([`Nse::secured`]) it is an endpoint of a zero-trust mesh, as NSM's are: mTLS
//! with an SVID from the Workload API, and every Request and Close goes first through vwire's
//! updatepath → updatetoken → authorize elements (the caller's token into its segment, this
//! endpoint's token signed, NSM's default policies), MonitorConnections through its monitor
//! policies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clap::Parser;
use tonic::{Request, Response, Status};
use vwire_mechanisms::memif::port::Role;
use vwire_proto::connection::{Connection, Mechanism, State};
use vwire_proto::connectioncontext::{ConnectionContext, IpContext, Route};
use vwire_proto::mechanism::{keys, MechanismType};
use vwire_proto::networkservice::network_service_server::{NetworkService, NetworkServiceServer};
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::ipam::{IpamError, P2pIpam};
use crate::memif_app::{
    first_ip, fnv1a, mac_from_seed, mode_from_payload, AppConfig, MemifApp, PingArgs,
};
use crate::path::{restore, update_path};
use crate::pinger::{PingReport, PingSpec};
use crate::MechanismKind;
use vwire::chain::{with_caller, Chain};
use vwire::elements::authorize::Authorize;
use vwire::elements::monitor::Monitor;
use vwire::elements::updatepath::UpdatePath;
use vwire::elements::updatetoken::UpdateToken;
use vwire::grpc::{caller_of, NsmService};
use vwire::security::policy::Policies;
use vwire::security::Identity;
use vwire::transport::{Transport, TransportError, Url};
use vwire_proto::connection::monitor_connection_server::MonitorConnectionServer;

/// `vwire-nse` command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "vwire-nse",
    about = "NSM icmp-responder endpoint (KERNEL and MEMIF mechanisms) for vwire tests",
    long_about = "NSM icmp-responder endpoint (KERNEL and MEMIF mechanisms) for vwire tests.\n\n\
                  KERNEL: answers with {inodeURL: file:///proc/<pid>/ns/net, name: nse-<id>}; the \
                  kernel answers pings once the forwarder configured the interface.\n\
                  MEMIF (with --mechanism memif or kernel,memif): for each connection, a memif \
                  server (id 0, ethernet or IP mode from the connection's payload) on the abstract \
                  socket @vwire-nse/<8 hex of a hash of the connection id>/memif.socket in this \
                  network namespace, answered with {socketfile, inodeURL}. Behind it this process \
                  answers ARP and ICMP echo for the endpoint address (dst_ip_addrs[0]) and, with \
                  --ping-count, pings the client address (src_ip_addrs[0]) once the memif is \
                  connected and prints `ping <peer ip> <received>/<sent>`. It keeps to the \
                  connection's MTU (context.MTU of the Request) like a kernel: larger IPv4 \
                  datagrams leave as fragments, and fragments are reassembled. Close stops that \
                  server."
)]
pub struct NseArgs {
    /// Where to serve the NSM API: unix:///path or tcp://host:port.
    #[arg(long)]
    pub listen: Url,
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
    /// The mechanisms offered, comma-separated (kernel, memif; e.g. `kernel,memif`). The
    /// client's first preference of one of these types is used.
    #[arg(
        long = "mechanism",
        visible_alias = "mechanisms",
        value_enum,
        value_delimiter = ',',
        ignore_case = true,
        default_value = "kernel"
    )]
    pub mechanisms: Vec<MechanismKind>,
    /// Pinging over MEMIF.
    #[command(flatten)]
    pub ping: PingArgs,
    /// mTLS, path tokens and NSM's default policies, with an SVID of the SPIFFE Workload API at
    /// SPIFFE_ENDPOINT_SOCKET.
    #[arg(long)]
    pub spiffe: bool,
}

/// The server side of one mechanism type.
pub trait MechanismHandler: Send + Sync {
    /// The mechanism `type` string, e.g. `KERNEL`.
    fn mechanism_type(&self) -> &'static str;
    /// Returns the mechanism this endpoint answers with for connection `conn` (whose `id` is this
    /// hop's own id and whose `context.ip_context` already holds the addresses), given what the
    /// client offered. Called again for every refresh.
    fn accept(&self, conn: &Connection, offered: &Mechanism) -> Result<Mechanism, Status>;
    /// Releases what [`MechanismHandler::accept`] set up for connection `conn_id` (this hop's
    /// id), if anything. Called on Close, and when a refresh selected another mechanism type.
    fn close(&self, _conn_id: &str) {}
    /// Releases everything (the endpoint is stopping).
    fn close_all(&self) {}
}

impl<T: MechanismHandler + ?Sized> MechanismHandler for Arc<T> {
    fn mechanism_type(&self) -> &'static str {
        (**self).mechanism_type()
    }
    fn accept(&self, conn: &Connection, offered: &Mechanism) -> Result<Mechanism, Status> {
        (**self).accept(conn, offered)
    }
    fn close(&self, conn_id: &str) {
        (**self).close(conn_id);
    }
    fn close_all(&self) {
        (**self).close_all();
    }
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
        MechanismType::Kernel.as_str()
    }

    fn accept(&self, conn: &Connection, offered: &Mechanism) -> Result<Mechanism, Status> {
        let mut m = answer(offered, MechanismType::Kernel);
        m.kernel_mut()
            .set_inode_url(&crate::own_netns_url())
            .set_name(&kernel_iface_name(&conn.id));
        Ok(m)
    }
}

/// MEMIF: a memif server per connection, answered by this process. See the module docs.
pub struct Memif {
    ping: Option<PingSpec>,
    on_report: Arc<dyn Fn(PingReport) + Send + Sync>,
    apps: Mutex<HashMap<String, MemifApp>>,
}

/// The abstract memif socket of a connection: `@vwire-nse/<8 hex of FNV-1a(conn id)>/memif.socket`,
/// or with `-<attempt>` after the hash when an earlier name was taken.
pub fn memif_socket_name(conn_id: &str, attempt: u32) -> String {
    let h = fnv1a(conn_id.as_bytes());
    if attempt == 0 {
        format!("@vwire-nse/{h:08x}/memif.socket")
    } else {
        format!("@vwire-nse/{h:08x}-{attempt}/memif.socket")
    }
}

/// Names tried for one connection's socket before giving up.
const SOCKET_ATTEMPTS: u32 = 4;

impl Memif {
    /// A handler whose servers ping the client with `ping` (if set) and hand the result to
    /// `on_report`.
    pub fn new(ping: Option<PingSpec>, on_report: Arc<dyn Fn(PingReport) + Send + Sync>) -> Self {
        Self {
            ping,
            on_report,
            apps: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, MemifApp>> {
        self.apps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many memif servers run.
    pub fn servers(&self) -> usize {
        self.lock().len()
    }

    /// The running server of connection `conn_id` (this hop's id): whether a client is
    /// connected, and its socket.
    pub fn server(&self, conn_id: &str) -> Option<(bool, String)> {
        self.lock()
            .get(conn_id)
            .map(|a| (a.is_connected(), a.config().socket.clone()))
    }

    /// The MTU the server of connection `conn_id` keeps to (0: none).
    pub fn server_mtu(&self, conn_id: &str) -> Option<u32> {
        self.lock().get(conn_id).map(MemifApp::mtu)
    }
}

/// The mechanism answered for `offered`: its parameters, with the class and type of `t`.
fn answer(offered: &Mechanism, t: MechanismType) -> Mechanism {
    Mechanism {
        parameters: offered.parameters.clone(),
        ..t.mechanism()
    }
}

fn memif_mechanism(offered: &Mechanism, socket: &str) -> Mechanism {
    let mut m = answer(offered, MechanismType::Memif);
    m.memif_mut()
        .set_socketfile(socket)
        .set_inode_url(&crate::own_netns_url());
    m
}

impl MechanismHandler for Memif {
    fn mechanism_type(&self) -> &'static str {
        MechanismType::Memif.as_str()
    }

    fn accept(&self, conn: &Connection, offered: &Mechanism) -> Result<Mechanism, Status> {
        let bad = |e: crate::memif_app::MemifAppError| Status::invalid_argument(e.to_string());
        let mode = mode_from_payload(&conn.payload).map_err(bad)?;
        let ip = conn
            .context
            .as_ref()
            .and_then(|c| c.ip_context.clone())
            .unwrap_or_default();
        let own = first_ip(
            &ip.dst_ip_addrs,
            "connection.context.ip_context.dst_ip_addrs",
        )
        .map_err(bad)?;
        let peer = first_ip(
            &ip.src_ip_addrs,
            "connection.context.ip_context.src_ip_addrs",
        )
        .map_err(bad)?;
        let mtu = conn.context.as_ref().map_or(0, |c| c.mtu);
        let mut apps = self.lock();
        if let Some(app) = apps.get_mut(&conn.id) {
            let c = app.config();
            if (c.mode, c.own, c.peer) == (mode, own, peer) {
                // A refresh: the server keeps running, and its link stays up.
                if c.mtu != mtu {
                    tracing::info!(id = %conn.id, "memif: the connection's MTU is now {mtu}");
                    app.set_mtu(mtu);
                }
                return Ok(memif_mechanism(offered, &app.config().socket));
            }
        }
        if let Some(old) = apps.remove(&conn.id) {
            tracing::info!(id = %conn.id, "memif: the connection changed; restarting its server");
            old.stop(); // frees its socket name first
        }
        let mut last = None;
        for attempt in 0..SOCKET_ATTEMPTS {
            let cfg = AppConfig {
                name: kernel_iface_name(&conn.id),
                socket: memif_socket_name(&conn.id, attempt),
                role: Role::Server,
                mode,
                own,
                peer,
                mac: mac_from_seed(&format!("nse/{}/{own}", conn.id)),
                ping: self.ping,
                mtu,
            };
            let on_report = self.on_report.clone();
            match MemifApp::start(cfg, Some(Box::new(move |r| on_report(r)))) {
                Ok(app) => {
                    let c = app.config();
                    tracing::info!(
                        id = %conn.id,
                        socket = %c.socket,
                        mode = ?c.mode,
                        mtu = c.mtu,
                        mac = %crate::memif_app::format_mac(&c.mac),
                        "memif server {own} <- {peer}"
                    );
                    let m = memif_mechanism(offered, &c.socket);
                    apps.insert(conn.id.clone(), app);
                    return Ok(m);
                }
                Err(e) if e.is_addr_in_use() => last = Some(e),
                Err(e) => {
                    return Err(Status::internal(format!(
                        "starting the memif server for connection {}: {e}",
                        conn.id
                    )))
                }
            }
        }
        Err(Status::unavailable(format!(
            "no free memif socket name for connection {}: {}",
            conn.id,
            last.map_or_else(String::new, |e| e.to_string())
        )))
    }

    fn close(&self, conn_id: &str) {
        let app = self.lock().remove(conn_id);
        if let Some(app) = app {
            let socket = app.config().socket.clone();
            app.stop();
            tracing::info!(id = %conn_id, %socket, "memif server stopped");
        }
    }

    fn close_all(&self) {
        let apps: Vec<(String, MemifApp)> = self.lock().drain().collect();
        for (id, app) in apps {
            app.stop();
            tracing::info!(id = %id, "memif server stopped");
        }
    }
}

/// The endpoint.
pub struct Nse {
    name: String,
    service: String,
    ipam: Mutex<P2pIpam>,
    mechanisms: Vec<Box<dyn MechanismHandler>>,
    /// vwire's monitor element alone in a chain: the source of this endpoint's
    /// MonitorConnections (an UPDATE per request, a DELETE per close, in the endpoint's view).
    monitor: Arc<Monitor>,
    monitor_chain: Chain,
    /// With SPIFFE: what checks and signs every call.
    gate: Option<Gate>,
}

/// What a `--spiffe` endpoint runs before its own work: vwire's updatepath → updatetoken →
/// authorize, and that authorize for MonitorConnections.
struct Gate {
    chain: Chain,
    authorize: Arc<Authorize>,
}

impl Nse {
    /// An endpoint named `name` for `service` with a pool from `cidr`.
    pub fn new(name: &str, service: &str, cidr: &str) -> Result<Self, IpamError> {
        let monitor = Monitor::new();
        Ok(Self {
            name: name.to_string(),
            service: service.to_string(),
            ipam: Mutex::new(P2pIpam::new(cidr)?),
            mechanisms: vec![Box::new(Kernel)],
            monitor_chain: Chain::new(vec![Arc::new(monitor.clone())]),
            monitor,
            gate: None,
        })
    }

    /// This endpoint in a zero-trust mesh as `identity` (see the module doc).
    pub fn secured(self, identity: Arc<Identity>) -> Self {
        let authorize = Arc::new(Authorize::new(
            Policies::server_defaults(),
            Policies::monitor_defaults(),
        ));
        let chain = Chain::new(vec![
            Arc::new(UpdatePath::new(&self.name)),
            Arc::new(UpdateToken::new(identity)),
            authorize.clone(),
        ]);
        Self {
            gate: Some(Gate { chain, authorize }),
            ..self
        }
    }

    /// An endpoint with the given mechanism handlers, in order of preference.
    pub fn with_mechanisms(
        name: &str,
        service: &str,
        cidr: &str,
        mechanisms: Vec<Box<dyn MechanismHandler>>,
    ) -> Result<Self, IpamError> {
        Ok(Self {
            mechanisms,
            ..Self::new(name, service, cidr)?
        })
    }

    /// The endpoint `vwire-nse` runs for `args`: the `--mechanism` list (duplicates ignored), its
    /// memif servers printing their ping line on stdout.
    pub fn from_args(args: &NseArgs) -> Result<Self, IpamError> {
        let mut kinds: Vec<MechanismKind> = Vec::new();
        for k in &args.mechanisms {
            if !kinds.contains(k) {
                kinds.push(*k);
            }
        }
        let handlers = kinds
            .into_iter()
            .map(|k| -> Box<dyn MechanismHandler> {
                match k {
                    MechanismKind::Kernel => Box::new(Kernel),
                    MechanismKind::Memif => Box::new(Memif::new(
                        args.ping.spec(),
                        Arc::new(|r: PingReport| crate::print_line(&r.to_string())),
                    )),
                }
            })
            .collect();
        Self::with_mechanisms(&args.name, &args.service, &args.cidr, handlers)
    }

    /// Stops everything the mechanisms hold (memif servers).
    pub fn shutdown(&self) {
        for h in &self.mechanisms {
            h.close_all();
        }
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
        let mechanism = match handler.accept(&conn, &offered) {
            Ok(m) => m,
            Err(s) => {
                if !refresh {
                    self.lock_ipam().free(&conn.id);
                }
                return Err(s);
            }
        };
        // A refresh that switched mechanism type: the others release what they held.
        for h in &self.mechanisms {
            if h.mechanism_type() != handler.mechanism_type() {
                h.close(&conn.id);
            }
        }
        conn.mechanism = Some(mechanism);
        conn.set_state(State::Up);
        conn.network_service_endpoint_name = self.name.clone();
        let iface = conn
            .mechanism
            .as_ref()
            .and_then(|m| {
                m.parameters
                    .get(keys::NAME)
                    .or(m.parameters.get(keys::SOCKETFILE))
            })
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

    /// Handles a Close: stops what the mechanisms hold for the connection and frees its
    /// addresses. An unknown connection is not an error.
    pub fn handle_close(&self, mut conn: Connection) -> Result<(), Status> {
        update_path(&mut conn, &self.name)?;
        for h in &self.mechanisms {
            h.close(&conn.id);
        }
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
        let msg = match &self.gate {
            Some(gate) => {
                let caller = caller_of(&req);
                let mut msg = req.into_inner();
                let checked = with_caller(caller, gate.chain.request(msg.clone())).await;
                match checked {
                    Ok(conn) => msg.connection = Some(conn),
                    Err(s) => {
                        tracing::warn!("request refused: {}: {}", s.code(), s.message());
                        return Err(s);
                    }
                }
                msg
            }
            None => req.into_inner(),
        };
        let r = self.handle_request(msg);
        match &r {
            Err(s) => tracing::warn!("request refused: {}: {}", s.code(), s.message()),
            Ok(c) => {
                let mut mine = c.clone();
                if update_path(&mut mine, &self.name).is_ok() {
                    let _ = self
                        .monitor_chain
                        .request(NetworkServiceRequest {
                            connection: Some(mine),
                            ..Default::default()
                        })
                        .await;
                }
            }
        }
        r.map(Response::new)
    }

    async fn close(&self, req: Request<Connection>) -> Result<Response<()>, Status> {
        if let Some(gate) = &self.gate {
            let caller = caller_of(&req);
            if let Err(s) = with_caller(caller, gate.chain.close(req.get_ref().clone())).await {
                tracing::warn!("close refused: {}: {}", s.code(), s.message());
                return Err(s);
            }
        }
        let conn = req.into_inner();
        let mut mine = conn.clone();
        if update_path(&mut mine, &self.name).is_ok() {
            let _ = self.monitor_chain.close(mine).await;
        }
        self.handle_close(conn).map(Response::new)
    }
}

/// Serves `nse` (and grpc.health.v1, SERVING) on `url` through `transport` (mTLS for a
/// [`Nse::secured`] endpoint) until `shutdown` resolves, then stops what its mechanisms hold
/// ([`Nse::shutdown`]).
pub async fn run(
    nse: Nse,
    url: &Url,
    transport: &Transport,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), TransportError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<NetworkServiceServer<Nse>>().await;
    health
        .set_serving::<MonitorConnectionServer<NsmService>>()
        .await;
    let nse = Arc::new(nse);
    // MonitorConnections from vwire's own service over the monitor alone (its chain is only
    // the monitor, so its Request/Close are not served here).
    let monitor = NsmService::new(
        Arc::new(nse.monitor_chain.clone()),
        nse.monitor.clone(),
        nse.gate.as_ref().map(|g| g.authorize.clone()),
        transport.clone(),
    );
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(NetworkServiceServer::from_arc(nse.clone()))
        .add_service(MonitorConnectionServer::from_arc(monitor));
    let r = crate::transport::serve(router, url, transport, shutdown).await;
    nse.shutdown();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};
    use vwire_mechanisms::memif::msg::Mode;
    use vwire_proto::connection::{Path, PathSegment};

    fn nsc_conn(id: &str, payload: &str) -> Connection {
        Connection {
            id: id.into(),
            network_service: "icmp-responder".into(),
            payload: payload.into(),
            path: Some(Path {
                index: 0,
                path_segments: vec![PathSegment {
                    name: "nsc-1".into(),
                    id: id.into(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }
    }

    fn memif_pref() -> Mechanism {
        Mechanism {
            cls: "LOCAL".into(),
            r#type: "MEMIF".into(),
            ..Default::default()
        }
    }

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let t0 = Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(5), "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn args_choose_mechanisms_and_ping() {
        let a = NseArgs::try_parse_from(["vwire-nse", "--listen", "unix:///x"]).unwrap();
        assert_eq!(a.mechanisms, [MechanismKind::Kernel]);
        assert_eq!(a.ping.spec(), None);
        let a = NseArgs::try_parse_from([
            "vwire-nse",
            "--listen",
            "unix:///x",
            "--mechanisms",
            "memif,KERNEL",
            "--ping-count",
            "4",
            "--ping-size",
            "3000",
        ])
        .unwrap();
        assert_eq!(a.mechanisms, [MechanismKind::Memif, MechanismKind::Kernel]);
        assert_eq!(
            a.ping.spec(),
            Some(PingSpec {
                count: 4,
                size: 3000
            })
        );
        let nse = Nse::from_args(&a).unwrap();
        assert_eq!(nse.supported(), "MEMIF, KERNEL");
        let a =
            NseArgs::try_parse_from(["vwire-nse", "--listen", "unix:///x", "--mechanism", "memif"])
                .unwrap();
        assert_eq!(a.mechanisms, [MechanismKind::Memif]);
        for bad in [
            &["vwire-nse", "--listen", "unix:///x", "--mechanism", "vxlan"][..],
            &[
                "vwire-nse",
                "--listen",
                "unix:///x",
                "--ping-size",
                "100000",
            ],
        ] {
            assert!(NseArgs::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    /// MEMIF through the endpoint's Request/Close, with a memif client app as the forwarder's
    /// stand-in: the reply names the server's socket, both sides ping each other with 3000 bytes
    /// over an MTU of 1446 (as fragments), a refresh keeps the server and its link and takes a
    /// new MTU, a bad payload takes no addresses, and Close stops the server and frees its
    /// socket name.
    #[test]
    fn memif_request_ping_refresh_and_close() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let memif = Arc::new(Memif::new(
            Some(PingSpec {
                count: 2,
                size: 3000,
            }),
            Arc::new(move |r| {
                let _ = tx.lock().unwrap().send(("nse", r));
            }),
        ));
        let nse = Nse::with_mechanisms(
            "nse-1",
            "icmp-responder",
            "172.16.9.100/31",
            vec![Box::new(Kernel), Box::new(memif.clone())],
        )
        .unwrap();
        let req = |conn: Connection| NetworkServiceRequest {
            connection: Some(conn),
            mechanism_preferences: vec![memif_pref()],
        };
        let mut c1 = nsc_conn("c1", "ETHERNET");
        c1.context = Some(ConnectionContext {
            mtu: 1446,
            ..Default::default()
        });
        let reply = nse.handle_request(req(c1)).unwrap();
        let m = reply.mechanism.clone().unwrap();
        assert_eq!((m.cls.as_str(), m.r#type.as_str()), ("LOCAL", "MEMIF"));
        let nse_id = reply.path.as_ref().unwrap().path_segments[1].id.clone();
        let socket = m.parameters["socketfile"].clone();
        assert_eq!(socket, memif_socket_name(&nse_id, 0));
        assert!(socket.starts_with("@vwire-nse/") && socket.ends_with("/memif.socket"));
        assert_eq!(m.parameters["inodeURL"], crate::own_netns_url());
        assert_eq!(memif.servers(), 1);
        assert_eq!(memif.server_mtu(&nse_id), Some(1446), "the Request's MTU");

        let (client_tx, client_rx) = mpsc::channel();
        let client = MemifApp::start(
            AppConfig {
                name: "fwd".into(),
                socket: socket.clone(),
                role: Role::Client,
                mode: Mode::Ethernet,
                own: "172.16.9.101".parse().unwrap(),
                peer: "172.16.9.100".parse().unwrap(),
                mac: mac_from_seed("fwd"),
                ping: Some(PingSpec {
                    count: 2,
                    size: 3000,
                }),
                mtu: 1446,
            },
            Some(Box::new({
                move |r| {
                    let _ = client_tx.send(("nsc", r));
                }
            })),
        )
        .unwrap();
        let (who, r) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the NSE's ping");
        assert_eq!(
            (who, r.to_string()),
            ("nse", "ping 172.16.9.101 2/2".to_string())
        );
        let (who, r) = client_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the client's ping");
        assert_eq!(
            (who, r.to_string()),
            ("nsc", "ping 172.16.9.100 2/2".to_string())
        );

        // A refresh: the same server, still connected; the link did not flap.
        let rx_before = client.totals().rx_packets;
        let again = nse.handle_request(req(reply.clone())).unwrap();
        assert_eq!(again.mechanism.unwrap().parameters["socketfile"], socket);
        assert_eq!(memif.server(&nse_id), Some((true, socket.clone())));
        assert!(client.is_connected());
        assert!(client.totals().rx_packets >= rx_before);
        // The NSE's 2 requests and its 2 replies came as 3 fragments each.
        assert!(rx_before >= 12, "{:?}", client.totals());
        // A refresh with a lower MTU: taken in place, the link stays.
        let mut lower = reply.clone();
        lower.context.as_mut().unwrap().mtu = 1400;
        nse.handle_request(req(lower)).unwrap();
        assert_eq!(memif.server_mtu(&nse_id), Some(1400));
        assert_eq!(memif.server(&nse_id), Some((true, socket.clone())));

        // A bad payload: InvalidArgument naming the field, and no addresses taken.
        let e = nse.handle_request(req(nsc_conn("c2", "MPLS"))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("connection.payload"), "{e:?}");
        let c3 = nse.handle_request(req(nsc_conn("c3", "IP"))).unwrap();
        let ip = c3.context.unwrap().ip_context.unwrap();
        assert_eq!(ip.src_ip_addrs, ["172.16.9.103/32"]);
        assert_eq!(memif.servers(), 2);

        // Close: the server stops, the client sees its link go, the name is free.
        nse.handle_close(reply).unwrap();
        assert_eq!(memif.servers(), 1);
        assert_eq!(memif.server(&nse_id), None);
        wait_for("the client noticed the close", || !client.is_connected());
        let rebind = MemifApp::start(
            AppConfig {
                name: "again".into(),
                socket: socket.clone(),
                role: Role::Server,
                mode: Mode::Ethernet,
                own: "10.0.0.1".parse().unwrap(),
                peer: "10.0.0.2".parse().unwrap(),
                mac: mac_from_seed("again"),
                ping: None,
                mtu: 0,
            },
            None,
        );
        assert!(rebind.is_ok(), "{:?}", rebind.err());
        client.stop();
        nse.shutdown();
        assert_eq!(memif.servers(), 0);
        assert!(rx.try_recv().is_err(), "one ping line per connection");
    }

    #[test]
    fn socket_names_are_stable_and_distinct() {
        let a = memif_socket_name("1b4e28ba-2fa1-11d2-883f-0016d3cca427", 0);
        assert_eq!(
            a,
            memif_socket_name("1b4e28ba-2fa1-11d2-883f-0016d3cca427", 0)
        );
        assert_eq!(a.len(), "@vwire-nse/12345678/memif.socket".len());
        assert_ne!(
            a,
            memif_socket_name("1b4e28ba-2fa1-11d2-883f-0016d3cca428", 0)
        );
        assert!(memif_socket_name("x", 2).contains("-2/"));
    }

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
