//! Startup and the control loop of a vwire node: builds the dataplane from the configuration
//! (the engine, the static ports, the uplink), serves metrics and the NSM API, registers with
//! the registry through nsmgr (when NSM_CONNECT_TO is set and the API is served), follows tunnel
//! next hops, and stops cleanly on SIGTERM or SIGINT: it unregisters first, while the API still
//! listens, then stops the API server.
//!
//! Threads: the calling thread becomes the control thread. It runs a single-threaded tokio
//! runtime and is pinned to the CPUs the workers do not use, before any other thread starts (so
//! every helper thread inherits that mask). Each worker pins itself to its own CPU.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use vwire_dataplane::buffer::{FRAME_SIZE, JUMBO_FRAME_SIZE};
use vwire_dataplane::engine::{EngineBuilder, EngineConfig};
use vwire_mechanisms::afxdp::{self, PortOptions, Umem, FRAMES_PER_QUEUE};
use vwire_mechanisms::kernel::neigh::{NeighEvent, NeighWatcher};

use crate::config::{self, Config, PortKind, SecurityConfig};
use crate::dataplane::{DataplaneCore, DataplaneError, SharedDataplane, UplinkPort};
use crate::metrics;
use crate::remote::{Remote, Uplink};
use crate::security::policy::Policies;
use crate::security::{Identity, Trust};
use crate::transport::Transport;

/// Largest number of ports (the size of the forwarding table and of each worker's counters,
/// about 200 bytes a port each): 2000 NSM connections of two AF_XDP ports, with room.
const MAX_PORTS: usize = 4096;
/// Pool size of a worker without AF_XDP ports.
const MIN_POOL_FRAMES: u32 = 4096;
/// Frames a memif port adds to its worker's pool: memif copies into pool frames that are in
/// flight for one burst only, unless the egress is AF_XDP (whose queues add their own).
const MEMIF_POOL_FRAMES: u32 = 2048;

/// Errors of the control thread.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// engine setup failed
    #[error("dataplane: {0}")]
    Engine(#[from] vwire_dataplane::engine::EngineError),
    /// a port failed to open
    #[error("port {name:?}: {source}")]
    Port {
        /// the port
        name: String,
        /// why
        source: afxdp::AfXdpError,
    },
    /// the NSM API server failed
    #[error("NSM API: {0}")]
    Nsm(crate::transport::TransportError),
    /// the SPIFFE identity or the policies could not be set up
    #[error("security: {0}")]
    Security(String),
    /// a memif port failed to start
    #[error("port {name:?}: {source}")]
    Memif {
        /// the port
        name: String,
        /// why
        source: vwire_mechanisms::memif::MemifError,
    },
    /// the forwarding table rejected an entry
    #[error("forwarding table: {0}")]
    Table(#[from] vwire_dataplane::table::TableError),
    /// the uplink of the remote mechanisms could not be found
    #[error("uplink: {0}")]
    Uplink(#[from] crate::remote::RemoteError),
    /// the dataplane refused a port or a cross-connect
    #[error(transparent)]
    Dataplane(DataplaneError),
    /// a system call failed
    #[error("{what}: {source}")]
    Io {
        /// what was being done
        what: String,
        /// the system error
        source: std::io::Error,
    },
}

impl NodeError {
    /// The error of port `name` failing in the dataplane: an AF_XDP or memif failure names the
    /// port, as the configuration does.
    fn port(name: &str, e: DataplaneError) -> Self {
        match e {
            DataplaneError::Port { source, .. } => NodeError::Port {
                name: name.into(),
                source,
            },
            DataplaneError::Memif { source, .. } => NodeError::Memif {
                name: name.into(),
                source,
            },
            e => e.into(),
        }
    }
}

impl From<DataplaneError> for NodeError {
    fn from(e: DataplaneError) -> Self {
        match e {
            DataplaneError::Engine(e) => NodeError::Engine(e),
            DataplaneError::Table(e) => NodeError::Table(e),
            e => NodeError::Dataplane(e),
        }
    }
}

/// Pins the calling thread (and so every thread it spawns later) to `cpus`.
pub fn pin_control_thread(cpus: &[usize]) -> Result<(), NodeError> {
    vwire_dataplane::cpu::pin_current_thread(cpus).map_err(|source| NodeError::Io {
        what: format!("pinning the control thread to CPUs {cpus:?}"),
        source,
    })
}

/// The running dataplane and what must outlive it.
struct Dataplane {
    /// The engine, UMEMs and cross-connects, shared with the NSM server.
    core: SharedDataplane,
    registry: Arc<metrics::Registry>,
    /// The REMOTE mechanisms, when NSM is served and an uplink was found.
    remote: Option<Arc<Remote>>,
}

impl Dataplane {
    fn stop(self) {
        let core = self.core.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(core) = core {
            for e in core.stop() {
                warn!("worker stopped with an error: {e}");
            }
        }
    }

    fn is_healthy(&self) -> bool {
        let core = self.core.lock().unwrap_or_else(|e| e.into_inner());
        core.as_ref().is_some_and(|c| c.engine().is_healthy())
    }
}

fn build(cfg: &Config) -> Result<Dataplane, NodeError> {
    let assignment = config::assign_workers(cfg);
    // The uplink of the remote mechanisms: only with NSM, on the first worker.
    let uplink = match cfg.nsm_listen_on {
        Some(_) => Uplink::discover(&cfg.remote)?,
        None => None,
    };
    if cfg.nsm_listen_on.is_some() && uplink.is_none() {
        info!("no NSM_TUNNEL_IP and no default route: remote mechanisms (VXLAN, SRV6) are off");
    }
    let mut pool_frames = vec![0u32; cfg.workers.len()];
    for (p, &w) in cfg.ports.iter().zip(&assignment) {
        pool_frames[w] += match &p.kind {
            PortKind::AfXdp { interface } => FRAMES_PER_QUEUE * afxdp::rx_queue_count(interface),
            PortKind::Memif(_) => MEMIF_POOL_FRAMES,
        };
    }
    if let (Some(u), Some(f)) = (&uplink, pool_frames.first_mut()) {
        *f += FRAMES_PER_QUEUE * afxdp::rx_queue_count(&u.ifname);
    }
    // With NSM, the connections' frames (at least 1024) stand in for the minimum.
    for f in &mut pool_frames {
        *f = match cfg.nsm_listen_on {
            Some(_) => *f + cfg.connection_frames,
            None => (*f).max(MIN_POOL_FRAMES),
        };
    }
    // A worker without AF_XDP ports gets frames large enough for 9000-byte memif frames; AF_XDP
    // needs 4 KiB chunks (and its MTU is bounded by them anyway).
    // NSM connections add AF_XDP ports at run time, so then every worker needs 4 KiB frames.
    let mut frame_sizes = vec![JUMBO_FRAME_SIZE; cfg.workers.len()];
    for (p, &w) in cfg.ports.iter().zip(&assignment) {
        if let PortKind::AfXdp { .. } = p.kind {
            frame_sizes[w] = FRAME_SIZE;
        }
    }
    if cfg.nsm_listen_on.is_some() {
        frame_sizes.fill(FRAME_SIZE);
    }
    let builder = EngineBuilder::new(&EngineConfig {
        cpus: cfg.workers.iter().map(|&c| Some(c)).collect(),
        poll_mode: cfg.poll,
        pool_frames,
        frame_sizes,
        max_ports: MAX_PORTS,
    })?;
    // With NSM, AF_XDP ports come and go with connections: register each worker's pool once and
    // share it, instead of pinning the whole pool again for every socket.
    let umem_for: fn(vwire_dataplane::buffer::PoolRegion) -> Umem = if cfg.nsm_listen_on.is_some() {
        Umem::shared
    } else {
        Umem::new
    };
    // Likewise, keep the XDP program every port shares attached for the life of the process, so
    // that neither the first connection's port nor the last one's close makes the kernel wait
    // for an RCU grace period (see `afxdp::shared`). Ports work without it, only slower.
    if cfg.nsm_listen_on.is_some() {
        if let Err(e) = afxdp::SharedProgram::keep_attached() {
            warn!("the shared XDP program is not kept attached: {e}");
        }
    }
    let umems: Vec<Umem> = (0..cfg.workers.len())
        .map(|w| builder.pool_region(w).map(umem_for))
        .collect::<Result<_, _>>()?;
    let engine = builder.start()?;
    let registry = Arc::new(metrics::Registry {
        kernel_ports: Default::default(),
        ports: std::sync::Mutex::new(Vec::new()),
        workers: engine
            .worker_cpus()
            .iter()
            .copied()
            .zip(engine.worker_counters().iter().cloned())
            .collect(),
        gc_removed_veths: Default::default(),
    });
    // Every port goes through the core, which gives out the ids (from 0, in the order of the
    // configuration, the uplink last), keeps the metrics entries and runs the memif driver.
    let mut core = DataplaneCore::new(engine, umems, MAX_PORTS, registry.clone());
    let mut ids = Vec::with_capacity(cfg.ports.len());
    for (p, &w) in cfg.ports.iter().zip(&assignment) {
        let id = match &p.kind {
            PortKind::AfXdp { interface } => {
                let port = core
                    .open_afxdp(w, &p.name, interface, PortOptions::default())
                    .map_err(|e| NodeError::port(&p.name, e))?;
                info!(
                    port = %p.name, interface = %interface, worker = w, cpu = cfg.workers[w],
                    xdp = ?port.xdp_mode(), zero_copy = port.zero_copy(), queues = ?port.queue_ids(),
                    "AF_XDP port open"
                );
                core.add_static_port(w, &p.name, Box::new(port))
            }
            PortKind::Memif(m) => {
                info!(port = %p.name, socket = %m.socket, role = ?m.role, id = m.id, worker = w, "memif port");
                core.add_static_memif(w, &p.name, m)
            }
        };
        ids.push(id.map_err(|e| NodeError::port(&p.name, e))?);
    }
    let mut pairs = Vec::new();
    for &(a, b) in &cfg.xconnects {
        pairs.push((ids[a], ids[b]));
        info!(a = %cfg.ports[a].name, b = %cfg.ports[b].name, "cross-connect");
    }
    core.set_static_xconnects(pairs)?;
    let uplink = match uplink {
        Some(u) => open_uplink(cfg, &u, &mut core)?.map(|port| (u, port)),
        None => None,
    };
    let remote = uplink.map(|(u, port)| {
        core.set_uplink(port);
        Arc::new(Remote::new(u, &cfg.remote))
    });
    Ok(Dataplane {
        core: Arc::new(std::sync::Mutex::new(Some(core))),
        registry,
        remote,
    })
}

/// Opens the uplink's AF_XDP port with the steering program. An uplink found from the default
/// route is only a guess: if it cannot take vwire's XDP program (no XDP support, or a program of
/// somebody else's), vwire runs without remote mechanisms (`Ok(None)`, with a warning). A
/// configured NSM_TUNNEL_IP is an order: then that is an error. The port goes to the first
/// worker, where every tunnel's local port goes too.
fn open_uplink(
    cfg: &Config,
    u: &Uplink,
    core: &mut DataplaneCore,
) -> Result<Option<UplinkPort>, NodeError> {
    const WORKER: usize = 0;
    let (ipv4, ipv6) = match u.tunnel_ip {
        std::net::IpAddr::V4(v) => (Some(v), None),
        std::net::IpAddr::V6(v) => (None, Some(v)),
    };
    let opts = PortOptions {
        program: afxdp::XdpProgram::Steer(afxdp::Steering {
            vxlan_port: cfg.remote.vxlan_port,
            ipv4,
            ipv6,
            srv6_locator: cfg.remote.srv6_locator,
        }),
        ..PortOptions::default()
    };
    match core.open_afxdp(WORKER, "uplink", &u.ifname, opts) {
        Ok(port) => {
            info!(
                interface = %u.ifname, tunnel_ip = %u.tunnel_ip, srv6_host_ip = ?u.srv6_host_ip,
                mtu = u.mtu, xdp = ?port.xdp_mode(), queues = ?port.queue_ids(), "uplink open"
            );
            let id = core
                .add_static_port(WORKER, "uplink", Box::new(port))
                .map_err(|e| NodeError::port("uplink", e))?;
            Ok(Some(UplinkPort {
                id,
                worker: WORKER,
                mtu: u.mtu,
                vxlan_port: cfg.remote.vxlan_port,
            }))
        }
        Err(DataplaneError::Port { source: e, .. }) if cfg.remote.tunnel_ip.is_none() => {
            warn!(
                interface = %u.ifname,
                "remote mechanisms (VXLAN, SRV6) are off: the default route's interface cannot be the uplink ({e}); set NSM_TUNNEL_IP, or tunnel_ip = \"none\" to silence this"
            );
            Ok(None)
        }
        Err(e) => Err(NodeError::port("uplink", e)),
    }
}

/// Runs the node of `cfg` on this thread until SIGTERM or SIGINT (`Ok`), or until it fails.
pub fn run(cfg: &Config) -> Result<(), NodeError> {
    pin_control_thread(&cfg.control_cpus)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| NodeError::Io {
            what: "starting the control runtime".into(),
            source,
        })?;
    // Build the dataplane inside the runtime's context (the memif driver spawns its tasks on it)
    // but not inside a task: nothing async yet.
    let dp = {
        let _context = rt.enter();
        build(cfg)?
    };
    let result = rt.block_on(control_loop(cfg, &dp));
    info!("stopping workers");
    dp.stop();
    info!("stopped");
    result
}

async fn control_loop(cfg: &Config, dp: &Dataplane) -> Result<(), NodeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let io = |what: &str| {
        let what = what.to_string();
        move |source| NodeError::Io { what, source }
    };
    let mut term = signal(SignalKind::terminate()).map_err(io("installing the SIGTERM handler"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io("installing the SIGINT handler"))?;
    // forwarder-vpp's run-time log level: SIGUSR1 logs everything, SIGUSR2 restores.
    let mut usr1 =
        signal(SignalKind::user_defined1()).map_err(io("installing the SIGUSR1 handler"))?;
    let mut usr2 =
        signal(SignalKind::user_defined2()).map_err(io("installing the SIGUSR2 handler"))?;
    let listener = tokio::net::TcpListener::bind(cfg.metrics_listen)
        .await
        .map_err(io(&format!(
            "listening for metrics on {}",
            cfg.metrics_listen
        )))?;
    let server = tokio::spawn(metrics::serve(listener, dp.registry.clone()));
    let (nsm_stop, nsm_stopped) = tokio::sync::oneshot::channel::<()>();
    if cfg.registration.connect_to.is_some() && !cfg.endpoints.is_empty() {
        warn!(
            endpoints = cfg.endpoints.len(),
            "[[endpoint]] is ignored: with NSM_CONNECT_TO the next hops come from the registry"
        );
    }
    let uses_nsm = cfg.nsm_listen_on.is_some() || cfg.registration.connect_to.is_some();
    let trust = match &cfg.security {
        SecurityConfig::Spiffe { .. } if uses_nsm => {
            let start = trust(cfg);
            tokio::select! {
                t = start => Some(t?),
                _ = term.recv() => { info!("SIGTERM while waiting for an SVID"); return Ok(()); }
                _ = int.recv() => { info!("SIGINT while waiting for an SVID"); return Ok(()); }
            }
        }
        _ => {
            if uses_nsm {
                warn!("NSM_INSECURE: the NSM API and vwire's NSM clients run WITHOUT mTLS, path tokens or authorisation; anyone who reaches the socket can connect and close workloads. For labs only.");
            }
            None
        }
    };
    let identity = trust.as_ref().map(|t| t.identity.clone());
    let transport = match &identity {
        Some(id) => Transport::tls(id.tls(), cfg.registration.dial_timeout),
        None => Transport::plain(cfg.registration.dial_timeout),
    };
    let nsm_server = match &cfg.nsm_listen_on {
        Some(listen) => Some(
            crate::server::NsmServer::new(
                &cfg.nsm_name,
                cfg.endpoints.clone(),
                cfg.registration.connect_to.as_ref(),
                transport.clone(),
                trust,
                crate::server::Forwarding {
                    dataplane: dp.core.clone(),
                    remote: dp.remote.clone(),
                    // The listen URL: the same across restarts, different for each instance.
                    veth_group: vwire_mechanisms::kernel::owned_group(&listen.to_string()),
                    // One directory per instance, named like its veths' group.
                    state_dir: cfg.state_dir.as_ref().map(|d| {
                        d.join(format!(
                            "{:08x}",
                            vwire_mechanisms::kernel::owned_group(&listen.to_string())
                        ))
                    }),
                    kernel_xconnect: cfg.kernel_xconnect,
                },
            )
            .map_err(NodeError::Nsm)?,
        ),
        None => None,
    };
    if let Some(s) = &nsm_server {
        s.start().await;
    }
    let next_hops = match &dp.remote {
        Some(r) => Some(follow_next_hops(r, dp.core.clone()).await?),
        None => None,
    };
    let nsm = cfg
        .nsm_listen_on
        .clone()
        .zip(nsm_server.clone())
        .map(|(listen, server)| {
            info!(name = %cfg.nsm_name, listen = ?listen, "serving the NSM API");
            tokio::spawn(async move {
                let shutdown = async {
                    let _ = nsm_stopped.await;
                };
                crate::grpc::serve(server.service(), &listen, shutdown).await
            })
        });
    let registration = match (&cfg.nsm_listen_on, &cfg.registration.connect_to) {
        (Some(listen), Some(_)) => {
            crate::registration::Registration::new(&cfg.registration, &cfg.nsm_name, listen)
                .map(|r| r.secured(transport.clone(), identity.clone()).spawn())
        }
        (None, Some(nsmgr)) => {
            warn!(%nsmgr, "NSM_CONNECT_TO is set but the NSM API is not served (no NSM_LISTEN_ON): not registering");
            None
        }
        _ => None,
    };
    info!(metrics = %cfg.metrics_listen, workers = ?cfg.workers, "vwire running");
    let mut health = tokio::time::interval(Duration::from_millis(500));
    let mut nsm = nsm;
    let result = loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM"); break Ok(()); }
            _ = int.recv() => { info!("SIGINT"); break Ok(()); }
            _ = usr1.recv() => crate::observability::raise_to_trace(),
            _ = usr2.recv() => crate::observability::restore_level(),
            // The `if` guard makes select! poll this branch only while `nsm` is Some.
            r = async { nsm.as_mut().expect("guarded by the select! precondition").await }, if nsm.is_some() => {
                nsm = None;
                match r {
                    Ok(Err(e)) => break Err(NodeError::Nsm(e)),
                    _ => break Err(NodeError::Io {
                        what: "the NSM API server stopped".into(),
                        source: std::io::Error::other("task ended"),
                    }),
                }
            }
            _ = health.tick() => {
                if !dp.is_healthy() {
                    break Err(NodeError::Io {
                        what: "a worker thread exited unexpectedly".into(),
                        source: std::io::Error::other("worker died"),
                    });
                }
            }
        }
    };
    server.abort();
    // Unregister before the listen socket goes away (bounded by NSM_DIAL_TIMEOUT).
    if let Some(r) = registration {
        r.unregister().await;
    }
    let _ = nsm_stop.send(());
    if let Some(t) = nsm {
        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
    }
    if let Some(s) = nsm_server {
        s.close_all().await;
    }
    if let Some(t) = next_hops {
        t.abort();
    }
    if let Some(id) = identity {
        id.shutdown().await;
    }
    result
}

/// This hop's SPIFFE identity and policies, per `cfg` (which must be [`SecurityConfig::Spiffe`]).
async fn trust(cfg: &Config) -> Result<Trust, NodeError> {
    let SecurityConfig::Spiffe {
        endpoint,
        authorize_policies,
        monitor_policies,
    } = &cfg.security
    else {
        unreachable!("trust() is called for SPIFFE configurations only")
    };
    let load = |paths: &[std::path::PathBuf], defaults: fn() -> Policies| {
        if paths.is_empty() {
            Ok(defaults())
        } else {
            Policies::load(paths)
        }
    };
    let requests = load(authorize_policies, Policies::server_defaults)
        .map_err(|e| NodeError::Security(e.to_string()))?;
    let monitors = load(monitor_policies, Policies::monitor_defaults)
        .map_err(|e| NodeError::Security(e.to_string()))?;
    let identity = Identity::start(endpoint, cfg.registration.max_token_lifetime)
        .await
        .map_err(|e| NodeError::Security(e.to_string()))?;
    Ok(Trust {
        identity,
        requests,
        monitors,
    })
}

/// Follows the kernel's neighbour table for tunnel next hops: when one changes its MAC, the
/// tunnels through it are rebuilt and republished.
async fn follow_next_hops(
    remote: &Arc<Remote>,
    core: SharedDataplane,
) -> Result<tokio::task::JoinHandle<()>, NodeError> {
    let ns = vwire_mechanisms::kernel::Netns::current().map_err(|e| NodeError::Io {
        what: "this network namespace".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let (watcher, mut events) = NeighWatcher::new(&ns).await.map_err(|e| NodeError::Io {
        what: "watching the neighbour table".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    remote.set_watcher(watcher);
    Ok(tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                NeighEvent::Changed {
                    ip, mac: Some(mac), ..
                } => {
                    let mut guard = core.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(c) = guard.as_mut() {
                        match c.next_hop_moved(ip, mac) {
                            Ok(0) => {}
                            Ok(n) => {
                                info!(%ip, mac = %vwire_mechanisms::kernel::format_mac(&mac), tunnels = n, "tunnel next hop moved")
                            }
                            Err(e) => warn!("republishing tunnels after {ip} moved: {e}"),
                        }
                    }
                }
                NeighEvent::Changed { ip, mac: None, .. } => {
                    warn!(%ip, "a tunnel next hop is unreachable; its tunnels keep the last MAC");
                }
                NeighEvent::Lost => warn!("neighbour events were lost; tunnels keep their MACs"),
            }
        }
    }))
}
