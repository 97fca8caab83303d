//! The running dataplane as the control thread sees it: the engine, the workers' UMEMs, and the
//! cross-connects, static (from the config) and dynamic (one per NSM connection).
//!
//! [`DataplaneCore`] is the one owner of port ids, of the ports' metrics entries and of the memif
//! driver, for every port: the static ones of the configuration and the uplink, added once at
//! startup ([`DataplaneCore::open_afxdp`], [`DataplaneCore::add_static_port`],
//! [`DataplaneCore::add_static_memif`]), and those of NSM connections, which come and go.
//!
//! Dynamic cross-connects join two ports, each an AF_XDP socket on a host interface or a memif
//! interface (either role) whose control channel the core's memif [`Driver`] runs. Both ports go
//! to one worker, the forwarding table is republished with the new pair (with an L3 [`Rewrite`]
//! per direction when one side carries Ethernet and the other bare IP), and removal goes the
//! other way: the table first (workers stop forwarding to the ports), then the ports (each
//! returns its buffers to the pool and closes its sockets, see `Port::release`), then their memif
//! control channels. Calls block briefly (socket setup, a quiescence wait); they run on a thread
//! of the control runtime (memif needs its context), never on a worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::net::{IpAddr, Ipv6Addr};
use vwire_dataplane::counters::PortTotals;
use vwire_dataplane::engine::{Engine, EngineError, Retirer};
use vwire_dataplane::port::Port;
use vwire_dataplane::port::PortId;
use vwire_dataplane::table::{ForwardingTable, Rewrite};
use vwire_dataplane::tunnel::Encap;
use vwire_mechanisms::afxdp::{socket, AfXdpPort, PortOptions, Umem};
use vwire_mechanisms::memif::driver::{Driver, MemifConfig, MemifHandle};
use vwire_mechanisms::memif::port::{Link, MemifPort};
use vwire_mechanisms::srv6::{Behavior, EncapHeader, EncapParams};
use vwire_mechanisms::tunnel::{EgressFraming, Framing, Srv6Encap, UplinkDecap, VxlanEncap};
use vwire_mechanisms::vxlan::{TunnelHeader, TunnelParams, Vni};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// the dataplane has stopped
    #[error("the dataplane is stopped")]
    Stopped,
    /// no port ids left
    #[error("no free port ids left ({0} in use)")]
    NoPortIds(usize),
    /// a port could not be opened
    #[error("opening an AF_XDP port on {ifname}: {source}")]
    Port {
        /// the interface
        ifname: String,
        /// why
        source: vwire_mechanisms::afxdp::AfXdpError,
    },
    /// the engine refused
    #[error(transparent)]
    Engine(#[from] vwire_dataplane::engine::EngineError),
    /// the table refused
    #[error(transparent)]
    Table(#[from] vwire_dataplane::table::TableError),
    /// another connection's tunnel has the same VNI or SID
    #[error("another connection already uses {0:?}")]
    DecapInUse(DecapKey),
    /// a tunnel without an uplink
    #[error("no uplink: remote mechanisms need NSM_TUNNEL_IP or a default route")]
    NoUplink,
    /// the uplink's demultiplexer refused a tunnel
    #[error(transparent)]
    Tunnel(#[from] vwire_mechanisms::tunnel::TunnelError),
    /// an AF_XDP side reached the last step without its port
    #[error("an AF_XDP side of the cross-connect was not opened")]
    NotOpened,
    /// a memif interface could not be served
    #[error("serving memif {socket}: {source}")]
    Memif {
        /// its socket
        socket: String,
        /// why
        source: vwire_mechanisms::memif::MemifError,
    },
}

/// One end of a dynamic cross-connect.
#[derive(Clone, Debug)]
pub enum PortSpec {
    /// An AF_XDP port on this host interface.
    Afxdp {
        /// The interface.
        ifname: String,
    },
    /// A memif interface.
    Memif(MemifConfig),
}

impl PortSpec {
    fn name(&self) -> &str {
        match self {
            PortSpec::Afxdp { ifname } => ifname,
            PortSpec::Memif(m) => &m.name,
        }
    }
}

/// What joins a dynamic connection's ports.
pub enum Wiring {
    /// Two local ports, cross-connected, with the framing change of each direction (applied to
    /// what the first, then the second port receives).
    Xconnect([Rewrite; 2]),
    /// One local port and a tunnel through the uplink.
    Tunnel(Box<TunnelSpec>),
}

/// A tunnel of one connection: how its packets are encapsulated toward the peer and recognised
/// on their way back. Kept so that the encapsulation can be rebuilt when the next hop's MAC
/// changes.
#[derive(Clone, Debug)]
pub struct TunnelSpec {
    /// The outer header.
    pub encap: EncapSpec,
    /// What the local port delivers.
    pub framing: Framing,
    /// What the local port expects back.
    pub egress: EgressFraming,
    /// How packets of this tunnel are recognised on the uplink.
    pub decap: DecapKey,
    /// The underlay neighbour whose MAC is the outer destination (the watcher follows it).
    pub neighbour: IpAddr,
    /// Which side of the connection the tunnel is (0: the client's, 1: the endpoint's), for the
    /// order of [`DataplaneCore::totals`].
    pub side: usize,
}

/// The outer header of a tunnel.
#[derive(Clone, Copy, Debug)]
pub enum EncapSpec {
    /// VXLAN.
    Vxlan(TunnelParams),
    /// SRv6 (H.Encaps.L2 or H.Encaps, by the framing).
    Srv6(EncapParams),
}

/// How the uplink recognises a tunnel's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapKey {
    /// VXLAN from this remote tunnel IP with this VNI.
    Vxlan {
        /// The peer's tunnel IP.
        remote: IpAddr,
        /// The VNI.
        vni: Vni,
    },
    /// SRv6 to this local SID.
    Sid {
        /// The SID.
        sid: Ipv6Addr,
        /// Its behaviour.
        behavior: Behavior,
    },
}

impl TunnelSpec {
    fn build_encap(&self, uplink_mtu: u32) -> Arc<dyn Encap> {
        match &self.encap {
            EncapSpec::Vxlan(p) => Arc::new(VxlanEncap::new(
                TunnelHeader::new(p),
                self.framing,
                uplink_mtu,
            )),
            EncapSpec::Srv6(p) => Arc::new(Srv6Encap::new(
                EncapHeader::new(p),
                self.framing,
                uplink_mtu,
            )),
        }
    }

    fn next_hop_mac(&self) -> [u8; 6] {
        match &self.encap {
            EncapSpec::Vxlan(p) => p.next_hop_mac,
            EncapSpec::Srv6(p) => p.next_hop_mac,
        }
    }

    fn set_next_hop_mac(&mut self, mac: [u8; 6]) {
        match &mut self.encap {
            EncapSpec::Vxlan(p) => p.next_hop_mac = mac,
            EncapSpec::Srv6(p) => p.next_hop_mac = mac,
        }
    }
}

/// The uplink port, shared by every tunnel.
#[derive(Clone, Copy, Debug)]
pub struct UplinkPort {
    /// Its port id.
    pub id: PortId,
    /// Its worker: every tunnel connection's local port goes there too.
    pub worker: usize,
    /// Its MTU.
    pub mtu: u32,
    /// The VXLAN UDP port.
    pub vxlan_port: u16,
}

struct Dynamic {
    worker: usize,
    ports: Vec<PortId>,
    /// The ids' counts when the ports took them (ids are reused).
    baselines: Vec<PortTotals>,
    wiring: Wiring,
    memifs: Vec<MemifHandle>,
}

/// The engine and its cross-connects.
pub struct DataplaneCore {
    engine: Engine,
    registry: Arc<crate::metrics::Registry>,
    umems: Vec<Arc<Umem>>,
    max_ports: usize,
    static_pairs: Vec<(PortId, PortId)>,
    dynamic: HashMap<String, Dynamic>,
    free_ids: Vec<PortId>,
    next_worker: usize,
    memif: Driver,
    uplink: Option<UplinkPort>,
}

/// Shared handle: `None` once stopped.
pub type SharedDataplane = Arc<Mutex<Option<DataplaneCore>>>;

impl DataplaneCore {
    /// Wraps a started engine that has no ports yet: add the static ones next, then their
    /// cross-connects ([`DataplaneCore::set_static_xconnects`]). Ids are handed out from 0 up.
    pub fn new(
        engine: Engine,
        umems: Vec<Umem>,
        max_ports: usize,
        registry: Arc<crate::metrics::Registry>,
    ) -> Self {
        let free_ids = (0..max_ports)
            .rev()
            .filter_map(|i| PortId::try_from(i).ok())
            .collect();
        Self {
            engine,
            registry,
            umems: umems.into_iter().map(Arc::new).collect(),
            max_ports,
            static_pairs: Vec::new(),
            dynamic: HashMap::new(),
            free_ids,
            next_worker: 0,
            memif: Driver::new(),
            uplink: None,
        }
    }

    /// Opens an AF_XDP port named `name` on `ifname` with `opts`, in worker `worker`'s UMEM
    /// (without changing the core: add it with [`DataplaneCore::add_static_port`]).
    pub fn open_afxdp(
        &self,
        worker: usize,
        name: &str,
        ifname: &str,
        opts: PortOptions,
    ) -> Result<AfXdpPort, DataplaneError> {
        let umem = self.umems.get(worker).ok_or(DataplaneError::Stopped)?;
        open_afxdp(umem, name, ifname, opts)
    }

    /// Adds a port for the life of the process (a configured port, or the uplink) to worker
    /// `worker`: the next free id, a metrics entry named `name`. Returns its id.
    pub fn add_static_port(
        &mut self,
        worker: usize,
        name: &str,
        port: Box<dyn Port>,
    ) -> Result<PortId, DataplaneError> {
        let (ids, _, added) = self.attach(worker, vec![(name, port)])?;
        if let Err(e) = added {
            self.detach_ids(&ids);
            return Err(e.into());
        }
        ids.first().copied().ok_or(DataplaneError::NotOpened)
    }

    /// Adds a configured memif port named `name` to worker `worker`, served by the core's memif
    /// driver for the life of the process. Returns its id. Must run inside the control runtime's
    /// context.
    pub fn add_static_memif(
        &mut self,
        worker: usize,
        name: &str,
        cfg: &MemifConfig,
    ) -> Result<PortId, DataplaneError> {
        let (port, handle) = self.start_memif(name, cfg)?;
        self.add_static_port(worker, name, port)
            .inspect_err(|_| self.memif.remove(&handle))
    }

    /// Sets the configured cross-connects between static ports and publishes the table.
    pub fn set_static_xconnects(
        &mut self,
        pairs: Vec<(PortId, PortId)>,
    ) -> Result<(), DataplaneError> {
        self.static_pairs = pairs;
        self.publish()
    }

    /// Starts serving memif `cfg` on the core's driver: its port (named `name`) and its driver
    /// handle.
    fn start_memif(
        &mut self,
        name: &str,
        cfg: &MemifConfig,
    ) -> Result<(Box<dyn Port>, MemifHandle), DataplaneError> {
        let link = Link::new(self.engine.qsbr());
        let handle = self
            .memif
            .add(cfg.clone(), link.clone())
            .map_err(|source| DataplaneError::Memif {
                socket: cfg.socket.clone(),
                source,
            })?;
        Ok((Box::new(MemifPort::new(name, link)), handle))
    }

    /// Gives each of `ports` a free id and a metrics entry under its name, and hands them to
    /// worker `worker`. Fails before any change if there are not enough ids. Returns the ids,
    /// the ids' counts when the ports took them (ids are reused), and whether the engine took
    /// every port (after a refusal the remaining ports are dropped; the ids stay taken).
    #[allow(clippy::type_complexity)] // three results of one step, named in the doc
    fn attach(
        &mut self,
        worker: usize,
        ports: Vec<(&str, Box<dyn Port>)>,
    ) -> Result<(Vec<PortId>, Vec<PortTotals>, Result<(), EngineError>), DataplaneError> {
        if self.free_ids.len() < ports.len() {
            return Err(DataplaneError::NoPortIds(self.max_ports));
        }
        let ids: Vec<PortId> = ports.iter().filter_map(|_| self.free_ids.pop()).collect();
        let baselines: Vec<PortTotals> =
            ids.iter().map(|&id| self.engine.port_totals(id)).collect();
        {
            let mut entries = self
                .registry
                .ports
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for ((&id, (name, port)), base) in ids.iter().zip(&ports).zip(&baselines) {
                entries.push(crate::metrics::PortEntry {
                    id,
                    name: name.to_string(),
                    stats: port.stats(),
                    baseline: *base,
                });
            }
        }
        let mut added = Ok(());
        for (&id, (_, port)) in ids.iter().zip(ports) {
            if added.is_ok() {
                added = self.engine.add_port(worker, id, port);
            }
        }
        Ok((ids, baselines, added))
    }

    /// Gives `ids` back: their metrics entries go, the ids become free.
    fn detach_ids(&mut self, ids: &[PortId]) {
        self.registry
            .ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| !ids.contains(&p.id));
        self.free_ids.extend(ids.iter().rev());
    }

    /// Declares the uplink (a static port) that tunnels use.
    pub fn set_uplink(&mut self, uplink: UplinkPort) {
        self.uplink = Some(uplink);
    }

    /// The engine (health, counters).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn publish(&self) -> Result<(), DataplaneError> {
        let mut t = ForwardingTable::new(self.max_ports);
        for &(a, b) in &self.static_pairs {
            t.add_xconnect(a, b)?;
        }
        let mut decap = self.uplink.map(|u| UplinkDecap::new(u.vxlan_port));
        for d in self.dynamic.values() {
            match (&d.wiring, d.ports.as_slice()) {
                (Wiring::Xconnect([ab, ba]), &[a, b]) => t.add_xconnect_with(a, b, *ab, *ba)?,
                (Wiring::Tunnel(spec), &[local]) => {
                    let (Some(uplink), Some(decap)) = (self.uplink, decap.as_mut()) else {
                        return Err(DataplaneError::NoUplink);
                    };
                    t.add_tunnel(local, uplink.id, spec.build_encap(uplink.mtu))?;
                    match spec.decap {
                        DecapKey::Vxlan { remote, vni } => {
                            decap.add_vxlan(remote, vni, local, spec.egress)?;
                        }
                        DecapKey::Sid { sid, behavior } => {
                            decap.add_sid(sid, behavior, local, spec.egress)?;
                        }
                    }
                }
                _ => return Err(DataplaneError::NotOpened),
            }
        }
        if let (Some(u), Some(decap)) = (self.uplink, decap) {
            t.set_decap(u.id, Arc::new(decap))?;
        }
        self.engine.table().publish(t);
        Ok(())
    }

    /// Whether a tunnel of a connection other than `key` already uses `decap` (a VNI or SID
    /// clash that would make the uplink's demultiplexing ambiguous).
    pub fn decap_in_use(&self, key: &str, decap: &DecapKey) -> bool {
        self.dynamic
            .iter()
            .any(|(k, d)| k != key && matches!(&d.wiring, Wiring::Tunnel(t) if t.decap == *decap))
    }

    /// The neighbour at `ip` changed its MAC: rebuilds the tunnels whose next hop it is.
    pub fn next_hop_moved(&mut self, ip: IpAddr, mac: [u8; 6]) -> Result<usize, DataplaneError> {
        let mut changed = 0;
        for d in self.dynamic.values_mut() {
            if let Wiring::Tunnel(t) = &mut d.wiring {
                if t.neighbour == ip && t.next_hop_mac() != mac {
                    t.set_next_hop_mac(mac);
                    changed += 1;
                }
            }
        }
        if changed > 0 {
            self.publish()?;
        }
        Ok(changed)
    }

    /// Step 1 of [`wire`], under the lock: `None` if `key` is already wired (a refresh), else
    /// the worker its ports go to and that worker's UMEM.
    pub fn placement(
        &mut self,
        key: &str,
        tunnel: bool,
    ) -> Result<Option<Placement>, DataplaneError> {
        if self.dynamic.contains_key(key) {
            return Ok(None);
        }
        if self.free_ids.len() < 2 {
            return Err(DataplaneError::NoPortIds(
                self.max_ports - self.free_ids.len(),
            ));
        }
        let worker = if tunnel {
            // A tunnel's local port shares the uplink's worker (and UMEM): the worker moves
            // frames between them by descriptor.
            self.uplink.ok_or(DataplaneError::NoUplink)?.worker
        } else {
            self.next_worker += 1;
            (self.next_worker - 1) % self.umems.len().max(1)
        };
        let umem = self.umems.get(worker).ok_or(DataplaneError::Stopped)?;
        Ok(Some(Placement {
            worker,
            umem: umem.clone(),
        }))
    }

    /// Step 3 of [`wire`], under the lock: joins `specs` (two ports for a cross-connect, one
    /// for a tunnel) by `wiring` for connection `key`, with the AF_XDP ports `opened` in step 2.
    /// Idempotent: an existing key is left as it is (and `opened` closed). On failure nothing
    /// is left behind. Must run inside the control runtime's context (memif control channels
    /// are tasks on it).
    pub fn add_wiring(
        &mut self,
        key: &str,
        specs: &[&PortSpec],
        wiring: Wiring,
        opened: Opened,
    ) -> Result<(), DataplaneError> {
        if self.dynamic.contains_key(key) {
            return Ok(());
        }
        let w = opened.worker;
        let mut memifs = Vec::new();
        let mut ports: Vec<(&str, Box<dyn Port>)> = Vec::new();
        let unwind = |core: &mut Self, memifs: &[MemifHandle]| {
            for h in memifs {
                core.memif.remove(h);
            }
        };
        for (spec, afxdp) in specs.iter().zip(opened.afxdp) {
            let port: Box<dyn Port> = match (spec, afxdp) {
                (PortSpec::Afxdp { .. }, Some(port)) => Box::new(port),
                (PortSpec::Memif(cfg), _) => match self.start_memif(&cfg.name, cfg) {
                    Ok((port, handle)) => {
                        memifs.push(handle);
                        port
                    }
                    Err(e) => {
                        unwind(self, &memifs);
                        return Err(e);
                    }
                },
                (PortSpec::Afxdp { .. }, None) => {
                    unwind(self, &memifs);
                    return Err(DataplaneError::NotOpened);
                }
            };
            ports.push((spec.name(), port));
        }
        let (ids, baselines, added) = match self.attach(w, ports) {
            Ok(r) => r,
            Err(e) => {
                unwind(self, &memifs);
                return Err(e);
            }
        };
        self.dynamic.insert(
            key.to_string(),
            Dynamic {
                worker: w,
                ports: ids,
                baselines,
                wiring,
                memifs,
            },
        );
        if let Err(e) = added
            .map_err(DataplaneError::from)
            .and_then(|()| self.publish())
        {
            self.remove_xconnect(key).finish();
            return Err(e);
        }
        Ok(())
    }

    /// Removes the cross-connect of `key` from the table and takes its ports back from their
    /// worker (unknown keys are fine). The ports still hold their sockets: call
    /// [`Retiring::finish`] on the result, preferably after releasing the lock, since closing
    /// AF_XDP sockets waits for RCU grace periods.
    pub fn remove_xconnect(&mut self, key: &str) -> Retiring {
        let Some(d) = self.dynamic.remove(key) else {
            return Retiring::default();
        };
        if let Err(e) = self.publish() {
            tracing::warn!("republishing the table: {e}");
        }
        let mut retiring = Retiring {
            retirer: self.engine.retirer(d.worker).ok(),
            ports: Vec::new(),
        };
        for &id in &d.ports {
            match self.engine.take_port(d.worker, id) {
                Ok(port) => retiring.ports.extend(port),
                Err(e) => tracing::warn!("removing port {id}: {e}"),
            }
        }
        self.detach_ids(&d.ports);
        for h in &d.memifs {
            self.memif.remove(h);
        }
        retiring
    }

    /// The metrics registry this core keeps its ports' entries in.
    pub fn registry(&self) -> &Arc<crate::metrics::Registry> {
        &self.registry
    }

    /// The counters of the two sides of `key` (the client's, then the endpoint's), counted
    /// since the connection was wired. A tunnel side shows its local port's counters mirrored
    /// (what the local port received went into the tunnel).
    pub fn totals(&self, key: &str) -> Option<[PortTotals; 2]> {
        let d = self.dynamic.get(key)?;
        let t = |i: usize| -> Option<PortTotals> {
            let (id, base) = (d.ports.get(i)?, d.baselines.get(i)?);
            Some(self.engine.port_totals(*id).since(base))
        };
        match &d.wiring {
            Wiring::Xconnect(_) => Some([t(0)?, t(1)?]),
            Wiring::Tunnel(spec) => {
                let local = t(0)?;
                let tunnel = PortTotals {
                    rx_packets: local.tx_packets,
                    rx_bytes: local.tx_bytes,
                    tx_packets: local.rx_packets,
                    tx_bytes: local.rx_bytes,
                    ..PortTotals::default()
                };
                Some(if spec.side == 0 {
                    [tunnel, local]
                } else {
                    [local, tunnel]
                })
            }
        }
    }

    /// Number of dynamic cross-connects.
    pub fn dynamic_len(&self) -> usize {
        self.dynamic.len()
    }

    /// Stops the workers and closes every port, then the UMEMs.
    pub fn stop(mut self) -> Vec<vwire_dataplane::worker::WorkerError> {
        self.memif.shutdown();
        let errors = self.engine.stop();
        drop(self.umems);
        errors
    }
}

/// Opens an AF_XDP port named `name` on `ifname` in `umem`: the one place the core opens AF_XDP
/// sockets, for static and NSM ports alike.
fn open_afxdp(
    umem: &Umem,
    name: &str,
    ifname: &str,
    opts: PortOptions,
) -> Result<AfXdpPort, DataplaneError> {
    socket::open(name, ifname, umem, opts).map_err(|source| DataplaneError::Port {
        ifname: ifname.to_string(),
        source,
    })
}

/// Where a new cross-connect's ports go: step 1 of [`wire`].
pub struct Placement {
    worker: usize,
    umem: Arc<Umem>,
}

/// Frames each queue of a connection's AF_XDP port keeps posted for receiving: at most
/// [`CONNECTION_FILL_MAX`] while traffic flows, [`CONNECTION_FILL_IDLE`] when idle (the port's
/// fill target adapts, see `afxdp::PortOptions`). The default (4096, fixed) suits a port that
/// must absorb line-rate bursts alone; with it a worker's pool (36,864 frames with NSM) ran dry
/// at the ninth connection port, leaving later connections with nothing to receive into.
pub const CONNECTION_FILL_MAX: u32 = 1024;
/// See [`CONNECTION_FILL_MAX`].
pub const CONNECTION_FILL_IDLE: u32 = 32;

impl Placement {
    /// Step 2 of [`wire`], without the lock: opens the AF_XDP sides, both at once (each waits
    /// mostly on the kernel: binding the socket, attaching the XDP program). Every port of the
    /// process's namespace attaches the one shared XDP program (`afxdp::shared`): with it
    /// already in the kernel's dispatcher, an attach takes tens of microseconds instead of an
    /// RCU grace period. Each queue keeps 32 to 1024 frames posted
    /// ([`CONNECTION_FILL_MAX`]), so that one worker's pool feeds many connections.
    pub fn open(self, specs: &[&PortSpec]) -> Result<Opened, DataplaneError> {
        let umem = &*self.umem;
        let open = |spec: &PortSpec| match spec {
            PortSpec::Afxdp { ifname } => {
                let opts = PortOptions {
                    fill_target: CONNECTION_FILL_MAX,
                    fill_idle: CONNECTION_FILL_IDLE,
                    rings: vwire_mechanisms::afxdp::RingSizes::SMALL,
                    ..PortOptions::default()
                };
                open_afxdp(umem, ifname, ifname, opts).map(Some)
            }
            PortSpec::Memif(_) => Ok(None),
        };
        let afxdp = match specs {
            [a] => vec![open(a)?],
            [a, b] => {
                let (ra, rb) = std::thread::scope(|s| {
                    let second = s.spawn(|| open(b));
                    let first = open(a);
                    (first, second.join())
                });
                let rb = rb.unwrap_or(Err(DataplaneError::NotOpened));
                vec![ra?, rb?]
            }
            _ => return Err(DataplaneError::NotOpened),
        };
        Ok(Opened {
            worker: self.worker,
            afxdp,
        })
    }
}

/// The AF_XDP ports of a new cross-connect, opened without the lock: step 2 of [`wire`].
pub struct Opened {
    worker: usize,
    afxdp: Vec<Option<AfXdpPort>>,
}

/// Ports taken out of the dataplane that still have to be shut down; see
/// [`DataplaneCore::remove_xconnect`]. Dropping it unfinished finishes it.
#[derive(Default)]
pub struct Retiring {
    retirer: Option<Retirer>,
    ports: Vec<Box<dyn Port>>,
}

impl Retiring {
    /// Shuts the ports down (closing their sockets, detaching their XDP programs), gives their
    /// buffers back to the worker's pool, and drops them.
    pub fn finish(mut self) {
        self.retire();
    }

    fn retire(&mut self) {
        for mut port in self.ports.drain(..) {
            if let Some(r) = &self.retirer {
                if let Err(e) = r.retire(port.as_mut()) {
                    tracing::warn!("retiring a port: {e}");
                }
            }
        }
    }
}

impl Drop for Retiring {
    fn drop(&mut self) {
        self.retire();
    }
}

/// Wires connection `key`: its ports `specs` joined by `wiring` (see
/// [`DataplaneCore::add_wiring`]), holding the lock only for the bookkeeping: the AF_XDP ports
/// are opened between the two short critical sections, so concurrent Requests overlap their
/// kernel waits. Blocks; call it off the async runtime's threads but inside its context.
pub fn wire(
    dp: &SharedDataplane,
    key: &str,
    specs: &[&PortSpec],
    wiring: Wiring,
) -> Result<(), DataplaneError> {
    let lock = || dp.lock().unwrap_or_else(|e| e.into_inner());
    let tunnel = matches!(wiring, Wiring::Tunnel(_));
    let placement = match lock().as_mut() {
        Some(core) => {
            if let Wiring::Tunnel(t) = &wiring {
                if core.decap_in_use(key, &t.decap) {
                    return Err(DataplaneError::DecapInUse(t.decap));
                }
            }
            core.placement(key, tunnel)?
        }
        None => return Err(DataplaneError::Stopped),
    };
    let Some(placement) = placement else {
        return Ok(()); // already wired: a refresh
    };
    let opened = placement.open(specs)?;
    match lock().as_mut() {
        Some(core) => core.add_wiring(key, specs, wiring, opened),
        None => Err(DataplaneError::Stopped),
    }
}

/// Removes the cross-connect of `key`, holding the lock only to take its ports out, and
/// returns them still open (see [`Retiring`]). Blocks briefly, like [`wire`].
pub fn unwire(dp: &SharedDataplane, key: &str) -> Retiring {
    dp.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .map(|core| core.remove_xconnect(key))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vwire_dataplane::buffer::FRAME_SIZE;
    use vwire_dataplane::engine::{EngineBuilder, EngineConfig};
    use vwire_dataplane::mem_port::mem_loop;
    use vwire_dataplane::worker::PollMode;

    /// A core over one unpinned worker with room for `max_ports` ports.
    fn core(max_ports: usize) -> (DataplaneCore, Arc<crate::metrics::Registry>) {
        let builder = EngineBuilder::new(&EngineConfig {
            cpus: vec![None],
            poll_mode: PollMode::Adaptive,
            pool_frames: vec![256],
            frame_sizes: vec![FRAME_SIZE],
            max_ports,
        })
        .unwrap();
        let umem = Umem::new(builder.pool_region(0).unwrap());
        let engine = builder.start().unwrap();
        let registry = Arc::new(crate::metrics::Registry {
            kernel_ports: Default::default(),
            ports: Mutex::new(Vec::new()),
            workers: Vec::new(),
            gc_removed_veths: Default::default(),
        });
        let core = DataplaneCore::new(engine, vec![umem], max_ports, registry.clone());
        (core, registry)
    }

    fn entries(registry: &crate::metrics::Registry) -> Vec<(PortId, String)> {
        let ports = registry.ports.lock().unwrap();
        ports.iter().map(|p| (p.id, p.name.clone())).collect()
    }

    #[test]
    fn static_ports_take_ids_from_zero_in_order_with_their_metrics_entries() {
        let (mut core, registry) = core(3);
        for (name, want) in [("left", 0), ("right", 1), ("uplink", 2)] {
            let id = core
                .add_static_port(0, name, Box::new(mem_loop(name, 8)))
                .unwrap();
            assert_eq!(id, want, "{name}");
        }
        assert_eq!(
            entries(&registry),
            [
                (0, "left".into()),
                (1, "right".into()),
                (2, "uplink".into())
            ]
        );
        core.set_static_xconnects(vec![(0, 1)]).unwrap();
        // No ids left: refused before anything changes.
        assert!(matches!(
            core.add_static_port(0, "extra", Box::new(mem_loop("extra", 8))),
            Err(DataplaneError::NoPortIds(3))
        ));
        assert_eq!(entries(&registry).len(), 3);
        assert!(core.stop().is_empty());
    }

    #[test]
    fn a_refused_static_port_gives_its_id_back() {
        let (mut core, registry) = core(2);
        // Worker 1 does not exist: the engine refuses, the id and the entry go back.
        assert!(matches!(
            core.add_static_port(1, "nowhere", Box::new(mem_loop("nowhere", 8))),
            Err(DataplaneError::Engine(_))
        ));
        assert!(entries(&registry).is_empty());
        let id = core
            .add_static_port(0, "left", Box::new(mem_loop("left", 8)))
            .unwrap();
        assert_eq!(id, 0);
        assert!(core.stop().is_empty());
    }
}
