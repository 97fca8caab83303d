//! xconnect: builds the dataplane of a connection once the endpoint has answered.
//!
//! Each side of the connection (the client's, from the upstream mechanism; the endpoint's, from
//! the mechanism the endpoint chose) becomes one dataplane port:
//! - KERNEL: a veth pair whose inner end moves into the namespace named by `inodeURL` and takes
//!   the name in `name`; the host end is an AF_XDP port. The connection context is applied inside
//!   (client: `src_ip_addrs`/`src_routes`; endpoint: `dst_ip_addrs`/`dst_routes`; MTU).
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

use std::net::IpAddr;
use std::sync::Arc;

use tonic::Status;
use vwire_dataplane::table::Rewrite;

use crate::dataplane::DataplaneError;
use vwire_mechanisms::kernel::{
    self, IpContextSpec, IpNet, Neighbor, NetlinkIn, Netns, RouteSpec, VethSpec,
};
use vwire_mechanisms::memif::driver::MemifConfig;
use vwire_mechanisms::memif::msg::Mode;
use vwire_mechanisms::memif::port::Role;
use vwire_proto::connection::{Connection, Mechanism};
use vwire_proto::mechanism::{keys, netns_path, MechanismType};
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::{connection_of, BoxFut, Element, Next};
use crate::dataplane::{PortSpec, SharedDataplane};
use crate::elements::connect::Downstream;
use crate::elements::mechanisms::{srv6, vxlan};
use crate::elements::metadata::Metadata;
use crate::remote::{Remote, TunnelPlan};
use vwire_mechanisms::kernel::neigh;
use vwire_mechanisms::srv6::{Behavior, EncapParams};
use vwire_mechanisms::tunnel::{EgressFraming, Framing};
use vwire_mechanisms::vxlan::{TunnelParams, Underlay, Vni};

/// How long the kernel may take to resolve a tunnel's next hop.
const NEIGHBOUR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// `VXLAN/vni=N` or `SRV6/<src sid>-<dst sid>`, for logs and metrics.
fn describe_tunnel(m: &Mechanism) -> String {
    match m.mechanism_type() {
        Ok(MechanismType::Vxlan) => vxlan::describe(m),
        _ => srv6::describe(m),
    }
}

/// The largest MTU of an NSM connection, and the default for one that sets none.
pub const MAX_MTU: u32 = 3498;

/// One side of a connection as built.
#[derive(Clone, Debug)]
enum Built {
    /// A veth pair: `host` is the AF_XDP end, `iface` the end inside the namespace.
    Kernel { host: String, iface: String },
    /// A memif interface on `socket`.
    Memif { socket: String },
    /// A tunnel through the uplink (`what`: its type and key, for logs and metrics).
    Tunnel { what: String },
}

impl Built {
    fn describe(&self) -> String {
        match self {
            Built::Kernel { iface, .. } => format!("{}/{iface}", MechanismType::Kernel),
            Built::Memif { socket } => format!("{}/{socket}", MechanismType::Memif),
            Built::Tunnel { what } => what.clone(),
        }
    }

    fn host_veth(&self) -> Option<&str> {
        match self {
            Built::Kernel { host, .. } => Some(host),
            Built::Memif { .. } | Built::Tunnel { .. } => None,
        }
    }
}

/// What xconnect built for one connection: the client's side, then the endpoint's.
#[derive(Clone, Debug)]
struct Wired {
    sides: [Built; 2],
}

/// The xconnect element.
pub struct Xconnect {
    metadata: Arc<Metadata>,
    dataplane: SharedDataplane,
    remote: Option<Arc<Remote>>,
}

impl Xconnect {
    /// An xconnect element programming `dataplane`.
    pub fn new(
        metadata: Arc<Metadata>,
        dataplane: SharedDataplane,
        remote: Option<Arc<Remote>>,
    ) -> Self {
        Self {
            metadata,
            dataplane,
            remote,
        }
    }
}

/// Eight hex digits derived from a connection id (FNV-1a), for interface names: deterministic,
/// always valid in a name, and distinct for distinct ids whatever characters the ids use.
fn short_tag(id: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// What a side will be, from its mechanism.
enum Plan {
    Kernel {
        url: String,
        name: String,
    },
    Memif {
        socket: String,
        role: Role,
        netns: Option<std::path::PathBuf>,
    },
    /// A REMOTE mechanism; `server`: this side accepted it (the client-facing side).
    Tunnel {
        mechanism: Mechanism,
        server: bool,
    },
}

fn plan(m: Option<&Mechanism>, side: Side, tag: &str) -> Result<Plan, Status> {
    let what = side.what();
    let m = m.ok_or_else(|| Status::internal(format!("{what}: no mechanism")))?;
    let unimplemented = || {
        Status::unimplemented(format!(
            "{what}: cross-connecting a {} mechanism is not implemented (KERNEL and MEMIF are)",
            m.r#type
        ))
    };
    match (m.mechanism_type().map_err(|_| unimplemented())?, side) {
        (MechanismType::Kernel, _) => {
            // The name as it comes: the client's was checked by mechanisms, and the kernel
            // refuses an invalid one from the endpoint (InvalidArgument, see `kerr`).
            let name = m.parameters.get(keys::NAME).map_or("", String::as_str);
            Ok(Plan::Kernel {
                url: m.kernel().inode_url().unwrap_or_default().to_string(),
                name: match (name, side) {
                    ("", Side::Client) => format!("nsm-{}", &tag[..4]),
                    (n, _) => n.to_string(),
                },
            })
        }
        (MechanismType::Memif, Side::Client) => {
            let Some(url) = m.memif().inode_url() else {
                return Err(Status::invalid_argument(
                    "connection.mechanism.parameters[inodeURL]: MEMIF needs the client's network namespace",
                ));
            };
            Ok(Plan::Memif {
                socket: format!("@/run/vwire/memif/{tag}/memif.socket"),
                role: Role::Server,
                netns: Some(netns_path(url).into()),
            })
        }
        (MechanismType::Memif, Side::Endpoint) => {
            let p = m.memif();
            let Some(socket) = p.socketfile() else {
                return Err(Status::failed_precondition(
                    "the endpoint's MEMIF mechanism has no parameters[socketfile]",
                ));
            };
            let url = p.inode_url();
            if let Some(url) = url.filter(|u| !std::path::Path::new(netns_path(u)).exists()) {
                return Err(Status::failed_precondition(format!(
                    "the endpoint's MEMIF parameters[inodeURL]: namespace {url:?} does not exist"
                )));
            }
            Ok(Plan::Memif {
                socket: socket.to_string(),
                role: Role::Client,
                netns: url.map(|u| netns_path(u).into()),
            })
        }
        (MechanismType::Vxlan | MechanismType::Srv6, side) => Ok(Plan::Tunnel {
            mechanism: m.clone(),
            server: side == Side::Client,
        }),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Endpoint,
}

impl Side {
    fn what(self) -> &'static str {
        match self {
            Side::Client => "client side",
            Side::Endpoint => "endpoint side",
        }
    }

    /// Prefix of this side's host-side names.
    fn prefix(self) -> &'static str {
        match self {
            Side::Client => "vwc",
            Side::Endpoint => "vwe",
        }
    }
}

/// A locally administered MAC that stands for a memif peer of an IP vWire, per connection.
fn virtual_mac(tag: &str) -> [u8; 6] {
    let v = u32::from_str_radix(tag, 16).unwrap_or(0).to_be_bytes();
    [0x02, 0x76, v[0], v[1], v[2], v[3]]
}

fn nets(field: &str, v: &[String]) -> Result<Vec<IpNet>, Status> {
    v.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    Status::invalid_argument(format!(
                        "{field}[{i}]: {s:?} is not an IP address or CIDR"
                    ))
                })
        })
        .collect()
}

fn routes(
    field: &str,
    v: &[vwire_proto::connectioncontext::Route],
) -> Result<Vec<RouteSpec>, Status> {
    v.iter()
        .enumerate()
        .map(|(i, r)| {
            let dst = nets(
                &format!("{field}[{i}].prefix"),
                std::slice::from_ref(&r.prefix),
            )?
            .remove(0);
            let gateway = match r.next_hop.as_str() {
                "" => None,
                g => Some(g.parse().map_err(|_| {
                    Status::invalid_argument(format!(
                        "{field}[{i}].nextHop: {g:?} is not an IP address"
                    ))
                })?),
            };
            Ok(RouteSpec { dst, gateway })
        })
        .collect()
}

fn kerr(what: &str) -> impl Fn(kernel::KernelError) -> Status + '_ {
    move |e| match e {
        kernel::KernelError::OpenNetns { .. } | kernel::KernelError::NotNetns { .. } => {
            Status::not_found(format!("{what}: {e}"))
        }
        kernel::KernelError::InvalidName { .. } | kernel::KernelError::InvalidNetnsUrl { .. } => {
            Status::invalid_argument(format!("{what}: {e}"))
        }
        _ => Status::failed_precondition(format!("{what}: {e}")),
    }
}

/// A side being built: its plan, its context, and what exists so far.
struct Building {
    side: Side,
    plan: Plan,
    ctx: IpContextSpec,
    /// For a kernel side: its namespace's netlink handle and, once created, the MAC of the
    /// interface inside the namespace.
    nl: Option<NetlinkIn>,
    inner_mac: Option<[u8; 6]>,
}

impl Xconnect {
    async fn wire(&self, id: &str, up: &Connection) -> Result<Wired, Status> {
        let down = self
            .metadata
            .get::<Downstream>(id)
            .ok_or_else(|| Status::internal("no endpoint connection recorded"))?
            .0;
        let tag = short_tag(id);
        let ip_payload = up.is_ip_payload();
        let ip = up
            .context
            .as_ref()
            .and_then(|c| c.ip_context.clone())
            .unwrap_or_default();
        let mtu = up.context.as_ref().map(|c| c.mtu).filter(|&m| m > 0);
        let src_addrs = nets(
            "connection.context.ip_context.src_ip_addrs",
            &ip.src_ip_addrs,
        )?;
        let dst_addrs = nets(
            "connection.context.ip_context.dst_ip_addrs",
            &ip.dst_ip_addrs,
        )?;
        let mut sides = Vec::with_capacity(2);
        for (side, m, addrs, routes_of) in [
            (
                Side::Client,
                up.mechanism.as_ref(),
                &src_addrs,
                ("connection.context.ip_context.src_routes", &ip.src_routes),
            ),
            (
                Side::Endpoint,
                down.mechanism.as_ref(),
                &dst_addrs,
                ("connection.context.ip_context.dst_routes", &ip.dst_routes),
            ),
        ] {
            sides.push(Building {
                side,
                plan: plan(m, side, &tag)?,
                ctx: IpContextSpec {
                    addrs: addrs.clone(),
                    routes: routes(routes_of.0, routes_of.1)?,
                    neighbors: Vec::new(),
                    mtu,
                },
                nl: None,
                inner_mac: None,
            });
        }
        let host = NetlinkIn::new(&Netns::current().map_err(kerr("this namespace"))?)
            .await
            .map_err(kerr("netlink"))?;
        for b in &mut sides {
            if let Plan::Kernel { url, .. } = &b.plan {
                let (field, label) = match b.side {
                    Side::Client => (
                        "connection.mechanism.parameters[inodeURL]",
                        "netlink in the client's namespace",
                    ),
                    Side::Endpoint => (
                        "the endpoint's inodeURL",
                        "netlink in the endpoint's namespace",
                    ),
                };
                let ns = Netns::open(url).map_err(kerr(field))?;
                b.nl = Some(NetlinkIn::new(&ns).await.map_err(kerr(label))?);
            }
        }
        let built: Vec<Built> = sides
            .iter()
            .map(|b| match &b.plan {
                Plan::Kernel { name, .. } => Built::Kernel {
                    host: format!("{}{tag}", b.side.prefix()),
                    iface: name.clone(),
                },
                Plan::Memif { socket, .. } => Built::Memif {
                    socket: socket.clone(),
                },
                Plan::Tunnel { mechanism, .. } => Built::Tunnel {
                    what: describe_tunnel(mechanism),
                },
            })
            .collect();
        let result = self
            .build(id, &tag, ip_payload, &host, &mut sides, &built)
            .await;
        if let Err(e) = result {
            for h in built.iter().filter_map(Built::host_veth) {
                let _ = kernel::delete_veth(&host, h).await;
            }
            return Err(e);
        }
        let [client, endpoint]: [Built; 2] = built
            .try_into()
            .map_err(|_| Status::internal("two sides expected"))?;
        Ok(Wired {
            sides: [client, endpoint],
        })
    }

    /// Creates the veths, applies the contexts, and cross-connects; the caller cleans up the
    /// veths on failure.
    async fn build(
        &self,
        id: &str,
        tag: &str,
        ip_payload: bool,
        host: &NetlinkIn,
        sides: &mut [Building],
        built: &[Built],
    ) -> Result<(), Status> {
        let t0 = std::time::Instant::now();
        let mtu = sides.first().and_then(|b| b.ctx.mtu);
        for (b, out) in sides.iter_mut().zip(built) {
            let (Some(nl), Plan::Kernel { name, .. }, Some(host_name)) =
                (&b.nl, &b.plan, out.host_veth())
            else {
                continue;
            };
            let spec = VethSpec {
                host_name: host_name.to_string(),
                peer_name: name.clone(),
                mtu,
                peer_mac: None,
            };
            let pair = kernel::create_veth_into(host, nl, &spec)
                .await
                .map_err(kerr("creating a veth"))?;
            b.inner_mac = Some(pair.peer_mac);
            // No IPv6 chatter on the host end: it belongs to the dataplane.
            let _ = std::fs::write(
                format!("/proc/sys/net/ipv6/conf/{host_name}/disable_ipv6"),
                "1",
            );
        }
        // IP payload: static neighbours for the other side's addresses, and the framing change
        // between an Ethernet side and an IP-only side.
        let mut rewrites = [Rewrite::None; 2];
        if ip_payload {
            let vmac = virtual_mac(tag);
            let macs: Vec<Option<[u8; 6]>> = sides.iter().map(|b| b.inner_mac).collect();
            let addrs: Vec<Vec<IpNet>> = sides.iter().map(|b| b.ctx.addrs.clone()).collect();
            for (i, b) in sides.iter_mut().enumerate() {
                let Some(own_mac) = b.inner_mac else { continue };
                let other = 1 - i;
                let peer_mac = macs.get(other).copied().flatten().unwrap_or(vmac);
                if macs.get(other).copied().flatten().is_none() {
                    rewrites[i] = Rewrite::StripEth;
                    rewrites[other] = Rewrite::AddEth {
                        dst: own_mac,
                        src: vmac,
                    };
                }
                b.ctx.neighbors = addrs
                    .get(other)
                    .into_iter()
                    .flatten()
                    .map(|n| Neighbor {
                        ip: n.addr(),
                        mac: peer_mac,
                    })
                    .collect();
            }
        }
        for (b, out) in sides.iter().zip(built) {
            if let (Some(nl), Built::Kernel { iface, .. }) = (&b.nl, out) {
                kernel::apply_context(nl, iface, &b.ctx)
                    .await
                    .map_err(kerr("applying the connection context"))?;
            }
        }
        tracing::debug!(%id, ms = t0.elapsed().as_millis(), "interfaces and contexts ready");
        let mode = if ip_payload { Mode::Ip } else { Mode::Ethernet };
        let specs: Vec<Option<PortSpec>> = sides
            .iter()
            .zip(built)
            .map(|(b, out)| match (&b.plan, out) {
                (
                    Plan::Memif {
                        socket,
                        role,
                        netns,
                    },
                    _,
                ) => Some(PortSpec::Memif(MemifConfig {
                    name: format!("{}{tag}", b.side.prefix()),
                    socket: socket.clone(),
                    role: *role,
                    id: 0,
                    mode,
                    queues: 1,
                    log2_ring_size: 10,
                    buffer_size: 2048,
                    secret: String::new(),
                    netns: netns.clone(),
                })),
                (Plan::Kernel { .. }, out) => Some(PortSpec::Afxdp {
                    ifname: out.host_veth().unwrap_or_default().to_string(),
                }),
                (Plan::Tunnel { .. }, _) => None,
            })
            .collect();
        let wiring = match sides
            .iter()
            .position(|b| matches!(b.plan, Plan::Tunnel { .. }))
        {
            None => crate::dataplane::Wiring::Xconnect(rewrites),
            Some(t) => {
                let spec = self
                    .tunnel_spec(id, tag, ip_payload, host, sides, t)
                    .await?;
                crate::dataplane::Wiring::Tunnel(Box::new(spec))
            }
        };
        let specs: Vec<PortSpec> = specs.into_iter().flatten().collect();
        // Opening AF_XDP sockets and memif sockets blocks (registration, binding, netns
        // switches): off the runtime thread, but inside its context (memif tasks).
        let (dp, key) = (self.dataplane.clone(), id.to_string());
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&PortSpec> = specs.iter().collect();
            crate::dataplane::wire(&dp, &key, &refs, wiring).map_err(|e| match e {
                DataplaneError::Stopped => Status::unavailable("the dataplane is stopping"),
                DataplaneError::NoUplink => Status::failed_precondition(e.to_string()),
                e => Status::failed_precondition(format!("wiring the connection: {e}")),
            })
        })
        .await
        .map_err(|e| Status::internal(format!("wiring task: {e}")))?
    }

    /// The tunnel of side `t` (the other side is the local port): its parameters, the next
    /// hop's MAC from the kernel, and the framing on each way.
    async fn tunnel_spec(
        &self,
        id: &str,
        tag: &str,
        ip_payload: bool,
        host: &NetlinkIn,
        sides: &[Building],
        t: usize,
    ) -> Result<crate::dataplane::TunnelSpec, Status> {
        let remote = self.remote.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "remote mechanisms need an uplink (NSM_TUNNEL_IP or a default route)",
            )
        })?;
        let (
            Some(Building {
                plan: Plan::Tunnel { mechanism, server },
                ..
            }),
            Some(local),
        ) = (sides.get(t), sides.get(1 - t))
        else {
            return Err(Status::internal("a tunnel side expected"));
        };
        if matches!(local.plan, Plan::Tunnel { .. }) {
            return Err(Status::unimplemented(
                "joining two remote mechanisms (a tunnel to a tunnel) is not implemented",
            ));
        }
        let plan = remote.tunnel_of(mechanism, *server)?;
        if !*server {
            remote.record_vni(id, &plan);
        }
        let uplink = remote.uplink();
        let peer = plan.remote_underlay();
        let hop = neigh::route_to(host, peer).await.map_err(|e| {
            Status::failed_precondition(format!("the route to the peer forwarder {peer}: {e}"))
        })?;
        if hop.ifindex != uplink.ifindex {
            return Err(Status::failed_precondition(format!(
                "the peer forwarder {peer} is routed through {}, not through the uplink {}",
                hop.ifname, uplink.ifname
            )));
        }
        remote.follow(hop.ifindex, hop.neighbour());
        let mac = neigh::resolve(host, &hop, NEIGHBOUR_TIMEOUT)
            .await
            .map_err(|e| Status::unavailable(format!("the next hop toward {peer}: {e}")))?;
        let all_v6 = sides
            .iter()
            .flat_map(|b| &b.ctx.addrs)
            .all(|a| matches!(a, IpNet::V6(_)));
        let (encap, decap) = match plan {
            TunnelPlan::Vxlan {
                local,
                remote: peer_ip,
                port,
                vni,
            } => {
                let underlay = match (local, peer_ip) {
                    (IpAddr::V4(local), IpAddr::V4(remote)) => Underlay::V4 { local, remote },
                    (IpAddr::V6(local), IpAddr::V6(remote)) => Underlay::V6 { local, remote },
                    _ => return Err(Status::failed_precondition("VXLAN: mixed address families")),
                };
                let vni = Vni::new(vni).ok_or_else(|| {
                    Status::invalid_argument(format!("VXLAN: {vni} is not a VNI"))
                })?;
                (
                    crate::dataplane::EncapSpec::Vxlan(TunnelParams {
                        underlay,
                        local_mac: uplink.mac,
                        next_hop_mac: mac,
                        dst_port: port,
                        vni,
                        ttl: 64,
                        udp_checksum_v4: false,
                    }),
                    crate::dataplane::DecapKey::Vxlan {
                        remote: peer_ip,
                        vni,
                    },
                )
            }
            TunnelPlan::Srv6 {
                local_host,
                local_sid,
                remote_sid,
                ..
            } => (
                crate::dataplane::EncapSpec::Srv6(EncapParams {
                    src: local_host,
                    sid: remote_sid,
                    local_mac: uplink.mac,
                    next_hop_mac: mac,
                    hop_limit: 64,
                }),
                crate::dataplane::DecapKey::Sid {
                    sid: local_sid,
                    behavior: match (ip_payload, all_v6) {
                        (false, _) => Behavior::EndDx2,
                        (true, false) => Behavior::EndDx4,
                        (true, true) => Behavior::EndDx6,
                    },
                },
            ),
        };
        let (framing, egress) = match (&local.plan, local.inner_mac, ip_payload) {
            (_, _, false) => (Framing::Ethernet, EgressFraming::Ethernet),
            (Plan::Kernel { .. }, Some(dst), true) => (
                Framing::EthernetIp,
                EgressFraming::EthernetIp {
                    dst,
                    src: virtual_mac(tag),
                },
            ),
            _ => (Framing::Ip, EgressFraming::Ip),
        };
        Ok(crate::dataplane::TunnelSpec {
            encap,
            framing,
            egress,
            decap,
            neighbour: hop.neighbour(),
            side: t,
        })
    }

    async fn unwire(&self, id: &str, w: &Wired) {
        let t0 = std::time::Instant::now();
        // The ports leave the table and their worker first. Their sockets are closed only after
        // the veths are gone: deleting a device unbinds its AF_XDP sockets and detaches its XDP
        // program inside the kernel's own teardown (whose grace periods are expedited), while
        // closing them first costs a normal RCU grace period each.
        let (dp, key) = (self.dataplane.clone(), id.to_string());
        let retiring = tokio::task::spawn_blocking(move || crate::dataplane::unwire(&dp, &key))
            .await
            .map_err(|e| tracing::warn!("cross-connect removal task: {e}"))
            .ok();
        tracing::debug!(%id, ms = t0.elapsed().as_millis(), "cross-connect removed");
        self.delete_veths(w).await;
        if let Some(r) = retiring {
            if let Err(e) = tokio::task::spawn_blocking(move || r.finish()).await {
                tracing::warn!("closing the ports: {e}");
            }
        }
        tracing::debug!(%id, ms = t0.elapsed().as_millis(), "ports closed");
    }

    async fn delete_veths(&self, w: &Wired) {
        let veths: Vec<&str> = w.sides.iter().filter_map(Built::host_veth).collect();
        if veths.is_empty() {
            return;
        }
        match Netns::current().map(|ns| async move { NetlinkIn::new(&ns).await }) {
            Ok(f) => match f.await {
                Ok(host) => {
                    // Each deletion waits on the kernel (device unregistration): both at once.
                    let host = &host;
                    async fn delete(host: &NetlinkIn, h: &str) {
                        if let Err(e) = kernel::delete_veth(host, h).await {
                            tracing::warn!("deleting {h}: {e}");
                        }
                    }
                    match veths.as_slice() {
                        [a, b] => {
                            tokio::join!(delete(host, a), delete(host, b));
                        }
                        [a] => delete(host, a).await,
                        _ => {}
                    }
                }
                Err(e) => tracing::warn!("netlink: {e}"),
            },
            Err(e) => tracing::warn!("netns: {e}"),
        }
    }
}

impl Xconnect {
    /// Writes this hop's PathSegment.metrics the way forwarder-vpp does: `server_*` for the
    /// client-facing (server-side) interface, `client_*` for the endpoint-facing one.
    fn annotate(&self, id: &str, w: &Wired, c: &mut Connection) {
        if let (Built::Memif { socket }, Some(m)) = (&w.sides[0], c.mechanism.as_mut()) {
            m.memif_mut().set_socketfile(socket);
        }
        let totals = self
            .dataplane
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|core| core.totals(id));
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
                return Ok(c);
            }
            match self.wire(&id, &c).await {
                Ok(w) => {
                    tracing::info!(%id, client = %w.sides[0].describe(), endpoint = %w.sides[1].describe(), "connection wired");
                    self.annotate(&id, &w, &mut c);
                    self.metadata.set(&id, w);
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
            if let Some(w) = self.metadata.take::<Wired>(&conn.id) {
                self.unwire(&conn.id, &w).await;
            }
            next.close(conn).await
        })
    }
}
