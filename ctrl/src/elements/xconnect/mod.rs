//! xconnect: builds the dataplane of a connection once the endpoint has answered.
//!
//! Each side of the connection (the client's, from the upstream mechanism; the endpoint's, from
//! the mechanism the endpoint chose) becomes one dataplane port:
//! - KERNEL: a veth pair whose inner end moves into the namespace named by `inodeURL` and takes
//!   the name in `name`; the host end is an AF_XDP port. The connection context is applied inside
//!   (client: `src_ip_addrs`/`src_routes`; endpoint: `dst_ip_addrs`/`dst_routes`; MTU). When
//!   both sides are KERNEL, the two host ends are then moved to a cross-connect inside the kernel
//!   by a TCX program, right after the Request (`inkernel`; `nsm.kernel_xconnect`; they stay
//!   with AF_XDP where the kernel cannot): kernel speed, super-packets kept, and traffic that
//!   does not stop while vwire restarts.
//! - MEMIF toward the client: vwire is the memif server on the abstract socket
//!   `@/run/vwire/memif/<tag>/memif.socket` inside the client's namespace (`inodeURL`), and
//!   returns that name as the mechanism's `socketfile`.
//! - MEMIF toward the endpoint: vwire is the memif client of the endpoint's `socketfile`, inside
//!   the namespace of the endpoint's `inodeURL`.
//!
//! The memif mode follows `Connection.payload` (IP: ip mode, else ethernet). An ETHERNET payload
//! gets an L2 cross-connect. An IP payload gets an L3 one: between a kernel interface and an
//! ip-mode memif the Ethernet header is stripped on the way in and added on the way out, and every
//! kernel interface of an IP vWire gets permanent neighbour entries for the other side's
//! addresses (the other veth's MAC, or a per-connection MAC that stands for a memif peer), so no
//! ARP or ND ever crosses an IP vWire.
//!
//! MTU: on the way down, a `Connection.context.MTU` of 0 becomes [`MAX_MTU`], and a larger one
//! is lowered to it (forwarder-vpp's `mtu` element sets 9000, and caps AF_XDP at 3498: a frame
//! must fit one page for native XDP on a veth, and one 4 KiB buffer of vwire's NSM workers).
//! The endpoint and both kernel interfaces see the result.
//!
//! - VXLAN or SRV6 (a forwarder on another node, on either side): a tunnel through the uplink
//!   ([`crate::remote`]). The other side's port is joined to it by the uplink's encapsulation
//!   and demultiplexing instead of a cross-connect. The outer destination MAC is the kernel's
//!   neighbour entry for the next hop toward the peer (resolved here, then followed). An IP
//!   payload toward a kernel interface gets a per-connection MAC standing for the tunnel, as
//!   for a memif peer.
//!
//! A refresh finds the connection already wired and changes nothing (no link flap). A failure
//! undoes what this element built and closes the endpoint side. Close removes the cross-connect
//! (ports and memif sockets), then the veth pairs. Place it just before connect.
//!
//! Files: `plan` reads each side's mechanism and the connection context into what is to be
//! built; `wire` builds it (veths, contexts, ports, the cross-connect) and `tunnel` the
//! tunnel of a REMOTE side; `teardown` undoes it, with `reaper` deleting the veths of
//! concurrent Closes in one batch, and `gc` removing veths that belong to no connection;
//! `state` records each KERNEL↔KERNEL connection in a file and `restore` takes those back after
//! a restart (their datapath resumes before any refresh; the first refresh that matches adopts
//! them). This module holds the element: the MTU rule, refreshes, the failure path and the
//! PathSegment metrics.

mod gc;
mod inkernel;
mod plan;
mod reaper;
mod restore;
mod state;
mod teardown;
mod tunnel;
mod wire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tonic::Status;
use vwire_proto::connection::Connection;
use vwire_proto::mechanism::MechanismType;
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::{connection_of, BoxFut, Element, Next};
use crate::config::KernelXconnect;
use crate::dataplane::SharedDataplane;
use crate::elements::metadata::Metadata;
use crate::remote::Remote;

/// The largest MTU of an NSM connection, and the default for one that sets none.
pub const MAX_MTU: u32 = 3498;

/// One side of a connection as built.
#[derive(Clone, Debug)]
pub(super) enum Built {
    /// A veth pair: `host` is the AF_XDP end, `iface` the end inside the namespace.
    Kernel { host: String, iface: String },
    /// A memif interface on `socket`.
    Memif { socket: String },
    /// A tunnel through the uplink (`what`: its type and key, for logs and metrics).
    Tunnel { what: String },
}

impl Built {
    pub(super) fn describe(&self) -> String {
        match self {
            Built::Kernel { iface, .. } => format!("{}/{iface}", MechanismType::Kernel),
            Built::Memif { socket } => format!("{}/{socket}", MechanismType::Memif),
            Built::Tunnel { what } => what.clone(),
        }
    }

    pub(super) fn host_veth(&self) -> Option<&str> {
        match self {
            Built::Kernel { host, .. } => Some(host),
            Built::Memif { .. } | Built::Tunnel { .. } => None,
        }
    }
}

/// What xconnect built for one connection: the client's side, then the endpoint's.
#[derive(Clone, Debug)]
pub(super) struct Wired {
    pub(super) sides: [Built; 2],
    /// For a KERNEL↔KERNEL connection cross-connected in the kernel (`inkernel`): the indexes
    /// of the two host veths and the workers' counts before the move. `None`: the workers
    /// carry it.
    pub(super) inkernel: Option<inkernel::InKernelEnds>,
}

/// The xconnect element.
pub struct Xconnect {
    metadata: Arc<Metadata>,
    dataplane: SharedDataplane,
    remote: Option<Arc<Remote>>,
    reaper: Arc<reaper::Reaper>,
    /// The host veth names of live connections (see `gc`).
    owned: gc::Owned,
    /// This instance's link group (`kernel::owned_group`).
    group: u32,
    /// The connections' records, for a restart.
    store: state::Store,
    /// Connections taken back from their records at start and not yet refreshed or closed.
    recovered: Mutex<HashMap<String, Wired>>,
    /// The in-kernel cross-connect of KERNEL↔KERNEL connections.
    inkernel: Arc<inkernel::InKernel>,
    /// Moves KERNEL↔KERNEL connections into the kernel after their Request.
    mover: inkernel::Mover,
    /// Held while a connection's record changes (the mover's switch, Close's take).
    switching: Arc<tokio::sync::Mutex<()>>,
}

impl Xconnect {
    /// An xconnect element programming `dataplane`, marking the veths it makes with link group
    /// `group` (`kernel::owned_group` of a name unique to this instance on the node), and
    /// recording its connections in `state_dir` (none: a restart drops them), cross-connecting
    /// KERNEL↔KERNEL connections as `kernel_xconnect` says. Must run inside a tokio runtime: it
    /// starts the task that tears closed connections down in batches. Call
    /// [`Xconnect::start`] once before serving.
    pub fn new(
        metadata: Arc<Metadata>,
        dataplane: SharedDataplane,
        remote: Option<Arc<Remote>>,
        group: u32,
        state_dir: Option<PathBuf>,
        kernel_xconnect: KernelXconnect,
    ) -> Self {
        let inkernel = Arc::new(inkernel::InKernel::new(kernel_xconnect));
        let switching = Arc::new(tokio::sync::Mutex::new(()));
        let mover = inkernel::Mover::start(
            metadata.clone(),
            dataplane.clone(),
            inkernel.clone(),
            switching.clone(),
        );
        Self {
            metadata,
            dataplane,
            remote,
            reaper: reaper::Reaper::start(),
            owned: gc::Owned::default(),
            group,
            store: state::Store::open(state_dir),
            recovered: Mutex::new(HashMap::new()),
            inkernel,
            mover,
            switching,
        }
    }

    /// Takes back the connections recorded by a previous run whose veths are still there (their
    /// traffic flows again when this returns), then starts the garbage collection of veths that
    /// belong to no connection (at once, then every `GC_PERIOD`). Returns the connections taken
    /// back, as they were last returned, for the other elements to know them.
    pub async fn start(&self) -> Vec<Connection> {
        let back = self.restore().await;
        tokio::spawn(gc::run(
            self.owned.clone(),
            self.group,
            self.dataplane.clone(),
        ));
        back
    }

    /// Removes the state directory if no connection is recorded in it (after a clean shutdown
    /// closed them all).
    pub fn forget_state(&self) {
        self.store.remove_if_empty();
    }

    /// Records connection `id` as wired by `w`, and queues it for the move into the kernel if
    /// it is to go there.
    fn settle(&self, id: &str, w: Wired) {
        let moves = self.mover.wants(&w, &self.inkernel);
        self.metadata.set(id, w);
        if moves {
            self.mover.queue(id);
        }
    }

    fn take_recovered(&self, id: &str) -> Option<Wired> {
        self.recovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }
}

/// Eight hex digits derived from a connection id (FNV-1a), for interface names: deterministic,
/// always valid in a name, and distinct for distinct ids whatever characters the ids use.
pub(super) fn short_tag(id: &str) -> String {
    format!("{:08x}", vwire_mechanisms::kernel::fnv1a(id))
}

impl Xconnect {
    /// Writes this hop's PathSegment.metrics the way forwarder-vpp does: `server_*` for the
    /// client-facing (server-side) interface, `client_*` for the endpoint-facing one.
    fn annotate(&self, id: &str, w: &Wired, c: &mut Connection) {
        if let (Built::Memif { socket }, Some(m)) = (&w.sides[0], c.mechanism.as_mut()) {
            m.memif_mut().set_socketfile(socket);
        }
        let totals = match w.inkernel {
            Some(e) => self.inkernel.totals(&e),
            None => self
                .dataplane
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(|core| core.totals(id)),
        };
        let Some(path) = c.path.as_mut() else { return };
        let Some(seg) = usize::try_from(path.index)
            .ok()
            .and_then(|i| path.path_segments.get_mut(i))
        else {
            return;
        };
        seg.metrics
            .insert("server_interface".into(), w.sides[0].describe());
        seg.metrics
            .insert("client_interface".into(), w.sides[1].describe());
        if let Some([server, client]) = totals {
            for (side, t) in [("server", server), ("client", client)] {
                seg.metrics
                    .insert(format!("{side}_rx_bytes"), t.rx_bytes.to_string());
                seg.metrics
                    .insert(format!("{side}_tx_bytes"), t.tx_bytes.to_string());
                seg.metrics
                    .insert(format!("{side}_rx_packets"), t.rx_packets.to_string());
                seg.metrics
                    .insert(format!("{side}_tx_packets"), t.tx_packets.to_string());
                seg.metrics.insert(
                    format!("{side}_drops"),
                    t.drops.iter().sum::<u64>().to_string(),
                );
            }
        }
    }
}

impl Element for Xconnect {
    fn name(&self) -> &'static str {
        "xconnect"
    }

    fn request<'a>(
        &'a self,
        req: NetworkServiceRequest,
        next: Next<'a>,
    ) -> BoxFut<'a, Result<Connection, Status>> {
        Box::pin(async move {
            let mut req = req;
            let id = connection_of(&req)?.id.clone();
            let mut mtu = MAX_MTU;
            if let Some(conn) = req.connection.as_mut() {
                let ctx = conn.context.get_or_insert_with(Default::default);
                if ctx.mtu == 0 || ctx.mtu > MAX_MTU {
                    ctx.mtu = MAX_MTU;
                }
                mtu = ctx.mtu;
            }
            let mut c = next.request(req).await?;
            // An endpoint that answers without an MTU (or a larger one) gets ours.
            let ctx = c.context.get_or_insert_with(Default::default);
            if ctx.mtu == 0 || ctx.mtu > mtu {
                ctx.mtu = mtu;
            }
            if let Some(w) = self.metadata.get::<Wired>(&id) {
                // A refresh: already wired, nothing to redo; report the counters.
                self.annotate(&id, &w, &mut c);
                self.record(&id, &c, &w);
                return Ok(c);
            }
            if let Some(w) = self.take_recovered(&id) {
                // The first refresh after a restart: the connection taken back is kept if the
                // refresh asks for what it is, and rebuilt otherwise.
                if self.same_sides(&id, &c, &w) {
                    tracing::info!(%id, "refresh of a connection taken back after a restart: adopted");
                    self.annotate(&id, &w, &mut c);
                    self.record(&id, &c, &w);
                    self.settle(&id, w);
                    return Ok(c);
                }
                tracing::info!(%id, "the refresh of a connection taken back after a restart asks for other interfaces: rebuilding it");
                self.forget(&id);
                self.unwire(&id, &w).await;
            }
            let wiring = self.mover.wiring();
            let wired = self.wire(&id, &c).await;
            drop(wiring);
            match wired {
                Ok(w) => {
                    tracing::info!(%id, client = %w.sides[0].describe(), endpoint = %w.sides[1].describe(), "connection wired");
                    self.annotate(&id, &w, &mut c);
                    self.record(&id, &c, &w);
                    self.settle(&id, w);
                    Ok(c)
                }
                Err(e) => {
                    if let Err(ce) = next.close(c).await {
                        tracing::warn!("closing the endpoint side after a failure: {ce}");
                    }
                    Err(e)
                }
            }
        })
    }

    fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
        Box::pin(async move {
            let wired = {
                let _switch = self.switching.lock().await;
                self.metadata
                    .take::<Wired>(&conn.id)
                    .or_else(|| self.take_recovered(&conn.id))
            };
            if let Some(w) = wired {
                self.forget(&conn.id);
                self.unwire(&conn.id, &w).await;
            }
            next.close(conn).await
        })
    }
}
