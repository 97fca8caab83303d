//! The next hop toward a tunnel's remote endpoint, its MAC address, and following it.
//!
//! vwire sends VXLAN and SRv6 packets itself, through AF_XDP on the uplink, so it writes the outer
//! Ethernet header: source MAC the uplink's, destination MAC the next hop's, as the kernel knows
//! them. This module asks the kernel, on the control thread (tokio, async), in the namespace of a
//! [`NetlinkIn`] handle:
//!
//! 1. [`route_to`]: the kernel's own route lookup for a destination (`RTM_GETROUTE` with the
//!    address, what `ip route get` does): output interface, gateway, preferred source, and the
//!    interface's MAC and MTU, as a [`NextHop`];
//! 2. [`resolve`]: the MAC of [`NextHop::neighbour`] (the gateway, or the destination itself when
//!    it is on-link) from the kernel's neighbour table, after making the kernel resolve it (ARP or
//!    neighbour discovery) if the entry is missing or unusable, within a caller's timeout;
//! 3. [`NeighWatcher`]: neighbour table changes for a set of watched `(ifindex, ip)` keys, as
//!    [`NeighEvent`]s on a tokio channel.
//!
//! Usage order, so that no change is missed: `route_to`, then [`NeighWatcher::watch`] the
//! neighbour, *then* `resolve` it; later events override the resolved MAC. On
//! [`NeighEvent::Lost`], resolve every watched neighbour again.
//!
//! Contract:
//! - vwire never writes the neighbour table. Resolution is the kernel's: vwire only asks for it the
//!   way a packet would (`NTF_USE`, see [`resolve`]), and never creates static or permanent
//!   entries, nor changes existing ones.
//! - A neighbour is usable, and its MAC returned or reported, in the states the kernel itself
//!   sends packets in: `REACHABLE`, `STALE`, `DELAY`, `PROBE`, `PERMANENT`, `NOARP` (the kernel's
//!   `NUD_VALID`). `INCOMPLETE` means resolution is under way, `FAILED` that it failed, `NONE`
//!   that it has not started.
//! - Errors name the address, the interface and the namespace; nothing here panics on what the
//!   kernel or the caller hands it.
//! - Not followed here: route changes (a new gateway or output interface for the destination)
//!   and changes of the uplink's own MAC or MTU; call [`route_to`] again for those.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rtnetlink::packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NLM_F_CREATE, NLM_F_REPLACE,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteType, RouteVia,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::Socket;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{format_mac, KernelError, NetlinkIn, Netns};

/// Errors of route lookup, neighbour resolution and the neighbour watcher.
#[derive(Debug, thiserror::Error)]
pub enum NeighError {
    /// an address that cannot have a unicast next hop
    #[error("no next hop for {ip}: {reason}")]
    InvalidAddress {
        /// the address
        ip: IpAddr,
        /// what is wrong with it
        reason: &'static str,
    },
    /// the kernel's route lookup failed (`ENETUNREACH`: no route at all)
    #[error("route lookup for {dst} in network namespace {netns}: {source}")]
    RouteLookup {
        /// the destination
        dst: IpAddr,
        /// the namespace
        netns: String,
        /// the kernel's error
        source: io::Error,
    },
    /// the kernel's route is not a unicast route (a local address, a blackhole…)
    #[error(
        "no unicast route to {dst} in network namespace {netns}: the kernel's route is {kind}"
    )]
    NotUnicast {
        /// the destination
        dst: IpAddr,
        /// the namespace
        netns: String,
        /// the route type (`local`, `blackhole`, `unreachable`…)
        kind: String,
    },
    /// the kernel's answer lacks what vwire needs
    #[error("route to {dst} in network namespace {netns}: {reason}")]
    BadRoute {
        /// the destination
        dst: IpAddr,
        /// the namespace
        netns: String,
        /// what is missing
        reason: &'static str,
    },
    /// the output interface cannot carry vwire's Ethernet frames
    #[error("interface {ifname:?} (index {ifindex}) in network namespace {netns}, the way to {dst}: {reason}")]
    BadInterface {
        /// the destination whose route uses the interface
        dst: IpAddr,
        /// the interface index
        ifindex: u32,
        /// the interface name, empty if unknown
        ifname: String,
        /// the namespace
        netns: String,
        /// what is wrong with it
        reason: &'static str,
    },
    /// a neighbour table request failed
    #[error("{what} {ip} on {ifname:?} (index {ifindex}) in network namespace {netns}: {source}")]
    Neighbour {
        /// the step
        what: &'static str,
        /// the neighbour's address
        ip: IpAddr,
        /// the interface index
        ifindex: u32,
        /// the interface name
        ifname: String,
        /// the namespace
        netns: String,
        /// the kernel's error
        source: io::Error,
    },
    /// the kernel tried to resolve the neighbour and gave up (`FAILED`): nobody answered
    #[error("neighbour {ip} on {ifname:?} (index {ifindex}) in network namespace {netns} is unreachable: {protocol} got no answer")]
    Unreachable {
        /// the neighbour's address
        ip: IpAddr,
        /// the interface index
        ifindex: u32,
        /// the interface name
        ifname: String,
        /// the namespace
        netns: String,
        /// `ARP` or `neighbour discovery`
        protocol: &'static str,
    },
    /// the neighbour was not resolved within the caller's timeout
    #[error("neighbour {ip} on {ifname:?} (index {ifindex}) in network namespace {netns} not resolved within {timeout:?} (last state: {state})")]
    Timeout {
        /// the neighbour's address
        ip: IpAddr,
        /// the interface index
        ifindex: u32,
        /// the interface name
        ifname: String,
        /// the namespace
        netns: String,
        /// the caller's timeout
        timeout: Duration,
        /// the entry's state when last read (`incomplete`, `absent`…)
        state: String,
    },
    /// the entry is usable but has no Ethernet (6-byte) address
    #[error("neighbour {ip} on {ifname:?} (index {ifindex}) in network namespace {netns} is {state} but has no Ethernet address")]
    NoLinkLayerAddress {
        /// the neighbour's address
        ip: IpAddr,
        /// the interface index
        ifindex: u32,
        /// the interface name
        ifname: String,
        /// the namespace
        netns: String,
        /// the entry's state
        state: String,
    },
    /// the neighbour watcher could not start
    #[error("neighbour watcher in network namespace {netns}: {source}")]
    Watcher {
        /// the namespace
        netns: String,
        /// the system error
        source: io::Error,
    },
    /// a step of the kernel mechanism failed (opening a namespace, looking up a link…)
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// Where packets to a destination go, as the kernel routes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// the destination asked about
    pub dst: IpAddr,
    /// the gateway, `None` when `dst` is on-link. Its family may differ from `dst`'s (an IPv4
    /// route via an IPv6 gateway, RFC 5549 / `RTA_VIA`).
    pub gateway: Option<IpAddr>,
    /// the output interface's index
    pub ifindex: u32,
    /// the output interface's name
    pub ifname: String,
    /// the preferred source address (`RTA_PREFSRC`), `None` if the kernel named none (no
    /// usable address of `dst`'s family)
    pub src: Option<IpAddr>,
    /// the output interface's MAC: the outer Ethernet source
    pub if_mac: [u8; 6],
    /// the output interface's MTU
    pub mtu: u32,
    /// an MTU on the route itself (`ip route ... mtu`, or a learned path MTU), if any
    pub route_mtu: Option<u32>,
}

impl NextHop {
    /// The neighbour whose MAC is the outer Ethernet destination: the gateway, or `dst` itself.
    pub fn neighbour(&self) -> IpAddr {
        self.gateway.unwrap_or(self.dst)
    }
}

impl std::fmt::Display for NextHop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.gateway {
            Some(gw) => write!(f, "{} via {gw}", self.dst)?,
            None => write!(f, "{} on-link", self.dst)?,
        }
        write!(
            f,
            " dev {} (index {}, {}, mtu {})",
            self.ifname,
            self.ifindex,
            format_mac(&self.if_mac),
            self.mtu
        )?;
        if let Some(src) = self.src {
            write!(f, " src {src}")?;
        }
        Ok(())
    }
}

/// Looks up the kernel's route to `dst` in `nl`'s namespace, as `ip route get <dst>` does.
///
/// The lookup is the kernel's full output lookup (policy rules, tables, the best of ECMP paths for
/// a flow with only this destination), so its answer is what the kernel itself would use. Fails
/// with [`NeighError::RouteLookup`] when there is no route (`ENETUNREACH`), with
/// [`NeighError::NotUnicast`] when `dst` is local, broadcast or hits a blackhole, unreachable or
/// prohibit route, and with [`NeighError::BadInterface`] when the output interface has no
/// Ethernet address. An IPv6 link-local `dst` needs an interface to be meaningful, which this
/// lookup does not take: the kernel then picks one.
pub async fn route_to(nl: &NetlinkIn, dst: IpAddr) -> Result<NextHop, NeighError> {
    check_destination(dst)?;
    let netns = || nl.netns().label().to_string();
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(dst);
    msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    let replies = nl
        .request(RouteNetlinkMessage::GetRoute(msg), 0)
        .await
        .map_err(|source| NeighError::RouteLookup {
            dst,
            netns: netns(),
            source,
        })?;
    let route = replies
        .iter()
        .find_map(|reply| match reply {
            RouteNetlinkMessage::NewRoute(route) => Some(route),
            _ => None,
        })
        .ok_or_else(|| NeighError::BadRoute {
            dst,
            netns: netns(),
            reason: "the kernel answered with no route",
        })?;
    let parsed = parse_route(route).map_err(|problem| match problem {
        RouteProblem::NotUnicast(kind) => NeighError::NotUnicast {
            dst,
            netns: netns(),
            kind,
        },
        RouteProblem::Missing(reason) => NeighError::BadRoute {
            dst,
            netns: netns(),
            reason,
        },
    })?;

    let bad_interface = |ifname: String, reason| NeighError::BadInterface {
        dst,
        ifindex: parsed.oif,
        ifname,
        netns: netns(),
        reason,
    };
    let link = nl
        .link_by_index(parsed.oif)
        .await?
        .ok_or_else(|| bad_interface(String::new(), "the interface is gone"))?;
    let if_mac = link
        .mac
        .ok_or_else(|| bad_interface(link.name.clone(), "no Ethernet (6-byte) address"))?;
    let mtu = link
        .mtu
        .ok_or_else(|| bad_interface(link.name.clone(), "the kernel reports no MTU"))?;
    Ok(NextHop {
        dst,
        gateway: parsed.gateway,
        ifindex: parsed.oif,
        ifname: link.name,
        src: parsed.src,
        if_mac,
        mtu,
        route_mtu: parsed.mtu,
    })
}

/// Refuses destinations that have no unicast next hop, before asking the kernel.
fn check_destination(dst: IpAddr) -> Result<(), NeighError> {
    let reason = if dst.is_unspecified() {
        "the unspecified address"
    } else if dst.is_multicast() {
        "a multicast address"
    } else if dst == IpAddr::V4(Ipv4Addr::BROADCAST) {
        "the broadcast address"
    } else {
        return Ok(());
    };
    Err(NeighError::InvalidAddress { ip: dst, reason })
}

/// What vwire takes from the kernel's route.
#[derive(Debug, PartialEq, Eq)]
struct RouteFields {
    oif: u32,
    gateway: Option<IpAddr>,
    src: Option<IpAddr>,
    mtu: Option<u32>,
}

/// Why a route answer is not usable.
#[derive(Debug, PartialEq, Eq)]
enum RouteProblem {
    NotUnicast(String),
    Missing(&'static str),
}

/// Reads an `RTM_NEWROUTE` answer to a route lookup.
fn parse_route(route: &RouteMessage) -> Result<RouteFields, RouteProblem> {
    if route.header.kind != RouteType::Unicast {
        return Err(RouteProblem::NotUnicast(route_type_name(route.header.kind)));
    }
    let mut fields = RouteFields {
        oif: 0,
        gateway: None,
        src: None,
        mtu: None,
    };
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Oif(oif) => fields.oif = *oif,
            RouteAttribute::Gateway(gw) => fields.gateway = route_ip(gw),
            RouteAttribute::Via(RouteVia::Inet(gw)) => fields.gateway = Some(IpAddr::V4(*gw)),
            RouteAttribute::Via(RouteVia::Inet6(gw)) => fields.gateway = Some(IpAddr::V6(*gw)),
            RouteAttribute::PrefSource(src) => fields.src = route_ip(src),
            RouteAttribute::Metrics(metrics) => {
                for metric in metrics {
                    if let RouteMetric::Mtu(mtu) = metric {
                        fields.mtu = Some(*mtu).filter(|&m| m > 0);
                    }
                }
            }
            RouteAttribute::MultiPath(_) => {
                return Err(RouteProblem::Missing(
                    "the kernel answered with several paths instead of the one it uses",
                ))
            }
            _ => {}
        }
    }
    if fields.oif == 0 {
        return Err(RouteProblem::Missing(
            "the kernel's route has no output interface",
        ));
    }
    Ok(fields)
}

fn route_ip(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// The name `ip route` prints for a route type.
fn route_type_name(kind: RouteType) -> String {
    match kind {
        RouteType::BlackHole => "blackhole".to_string(),
        RouteType::ExternalResolve => "xresolve".to_string(),
        RouteType::Other(n) => format!("of type {n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// How usable a neighbour entry is, from its `NUD_*` state bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Usability {
    /// `NUD_VALID`: the kernel sends packets to its MAC
    Usable,
    /// `INCOMPLETE`: resolution under way
    Pending,
    /// `FAILED`: resolution gave up
    Failed,
    /// `NONE` (or an entry that does not exist): resolution not started
    Idle,
}

impl Usability {
    fn of(state: u16) -> Usability {
        const VALID: u16 = libc::NUD_REACHABLE
            | libc::NUD_STALE
            | libc::NUD_DELAY
            | libc::NUD_PROBE
            | libc::NUD_PERMANENT
            | libc::NUD_NOARP;
        if state & VALID != 0 {
            Usability::Usable
        } else if state & libc::NUD_INCOMPLETE != 0 {
            Usability::Pending
        } else if state & libc::NUD_FAILED != 0 {
            Usability::Failed
        } else {
            Usability::Idle
        }
    }
}

/// One neighbour entry as read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    state: u16,
    mac: Option<[u8; 6]>,
}

/// How the first polls of [`resolve`] are spaced: the first after 1 ms (an answer on a LAN or a
/// veth takes from tens of microseconds to a few ms), then doubling.
const POLL_FIRST: Duration = Duration::from_millis(1);
/// The longest gap between polls: the kernel itself retransmits a solicitation only every
/// `retrans_time` (1 s by default), so 50 ms adds little delay and costs at most 20 netlink
/// round trips a second on the control thread.
const POLL_MAX: Duration = Duration::from_millis(50);

/// The MAC of `hop`'s neighbour ([`NextHop::neighbour`] on [`NextHop::ifindex`]), resolving it
/// first if needed, within `timeout`.
///
/// Reads the entry (`RTM_GETNEIGH` for the interface and address). If it is usable (see the
/// module doc), returns its MAC at once. If it is missing, `NONE` or `FAILED`, asks the kernel to
/// resolve it: an `RTM_NEWNEIGH` with the `NTF_USE` flag (what `ip neigh replace <ip> dev <if>
/// use nud none` sends), which the kernel handles as if a packet were waiting for this neighbour
/// (`neigh_event_send`): it creates the entry if needed, moves it to `INCOMPLETE` and sends an ARP
/// request or a neighbour solicitation at once, and its own timers retransmit. The request carries
/// no link-layer address and state `NONE`, so the kernel writes nothing of its own into the
/// entry (and the entry stays subject to garbage collection, unlike a `PERMANENT` one). Then polls
/// the entry until it becomes usable.
///
/// Errors: [`NeighError::Unreachable`] as soon as the kernel gives up after this call asked it to
/// resolve (`FAILED`: by default 3 probes a second apart), [`NeighError::Timeout`] when `timeout`
/// runs out first (with a zero timeout, the entry is read and resolution started once);
/// both name the address and the interface. Give a timeout above the interface's
/// `retrans_time` (1 s by default), so that one lost request or answer is retried by the kernel
/// within it.
pub async fn resolve(
    nl: &NetlinkIn,
    hop: &NextHop,
    timeout: Duration,
) -> Result<[u8; 6], NeighError> {
    let ip = hop.neighbour();
    let ifindex = hop.ifindex;
    let netns = || nl.netns().label().to_string();
    let ifname = || hop.ifname.clone();
    let neighbour_error = |what, source| NeighError::Neighbour {
        what,
        ip,
        ifindex,
        ifname: ifname(),
        netns: netns(),
        source,
    };
    let deadline = Instant::now() + timeout;
    let mut interval = POLL_FIRST;
    let mut triggered = false;
    loop {
        let entry = get_neighbour(nl, ifindex, ip)
            .await
            .map_err(|e| neighbour_error("look up neighbour", e))?;
        let state = entry.map_or(libc::NUD_NONE, |e| e.state);
        match Usability::of(state) {
            Usability::Usable => {
                return entry
                    .and_then(|e| e.mac)
                    .ok_or_else(|| NeighError::NoLinkLayerAddress {
                        ip,
                        ifindex,
                        ifname: ifname(),
                        netns: netns(),
                        state: state_name(entry),
                    });
            }
            Usability::Failed if triggered => {
                return Err(NeighError::Unreachable {
                    ip,
                    ifindex,
                    ifname: ifname(),
                    netns: netns(),
                    protocol: if ip.is_ipv4() {
                        "ARP"
                    } else {
                        "neighbour discovery"
                    },
                });
            }
            Usability::Pending => {}
            Usability::Failed | Usability::Idle => {
                trigger_resolution(nl, ifindex, ip)
                    .await
                    .map_err(|e| neighbour_error("start resolving neighbour", e))?;
                triggered = true;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(NeighError::Timeout {
                ip,
                ifindex,
                ifname: ifname(),
                netns: netns(),
                timeout,
                state: state_name(entry),
            });
        }
        tokio::time::sleep_until((now + interval).min(deadline)).await;
        interval = (interval * 2).min(POLL_MAX);
    }
}

/// `ip neigh` 's name for an entry's state; `absent` when there is no entry.
fn state_name(entry: Option<Entry>) -> String {
    match entry {
        None => "absent".to_string(),
        Some(e) => match NeighbourState::from(e.state) {
            NeighbourState::Other(bits) => format!("state {bits:#x}"),
            known => known.to_string(),
        },
    }
}

fn neighbour_request(ifindex: u32, ip: IpAddr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = family(ip);
    msg.header.ifindex = ifindex;
    msg.attributes
        .push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
    msg
}

/// Reads one neighbour entry (`RTM_GETNEIGH` for one address, Linux ≥ 4.20); `None` if absent.
async fn get_neighbour(nl: &NetlinkIn, ifindex: u32, ip: IpAddr) -> io::Result<Option<Entry>> {
    let msg = neighbour_request(ifindex, ip);
    match nl.request(RouteNetlinkMessage::GetNeighbour(msg), 0).await {
        Ok(replies) => Ok(replies.iter().find_map(|reply| match reply {
            RouteNetlinkMessage::NewNeighbour(n) => Some(Entry {
                state: n.header.state.into(),
                mac: lladdr(n),
            }),
            _ => None,
        })),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Asks the kernel to resolve a neighbour, as a packet waiting for it would (`NTF_USE`).
///
/// State `NONE` and no `NDA_LLADDR`: with `NTF_USE` the kernel applies neither (it only starts
/// resolution), and a new entry is created as an ordinary, garbage-collected one (only a
/// `PERMANENT` state in the request would exempt it). `NLM_F_CREATE | NLM_F_REPLACE` as
/// `ip neigh replace`: create the entry if missing, accept it if present.
async fn trigger_resolution(nl: &NetlinkIn, ifindex: u32, ip: IpAddr) -> io::Result<()> {
    let mut msg = neighbour_request(ifindex, ip);
    msg.header.state = NeighbourState::None;
    msg.header.flags = NeighbourFlags::Use;
    nl.change(
        RouteNetlinkMessage::NewNeighbour(msg),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
    .await
}

/// The entry's link-layer address, if it is an Ethernet (6-byte) one.
fn lladdr(msg: &NeighbourMessage) -> Option<[u8; 6]> {
    msg.attributes.iter().find_map(|attr| match attr {
        NeighbourAttribute::LinkLayerAddress(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
        _ => None,
    })
}

/// The entry's IP address, for IPv4 and IPv6 entries.
fn destination(msg: &NeighbourMessage) -> Option<IpAddr> {
    msg.attributes.iter().find_map(|attr| match attr {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip))
            if msg.header.family == AddressFamily::Inet =>
        {
            Some(IpAddr::V4(*ip))
        }
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip))
            if msg.header.family == AddressFamily::Inet6 =>
        {
            Some(IpAddr::V6(*ip))
        }
        _ => None,
    })
}

/// A change of a watched neighbour, from a [`NeighWatcher`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighEvent {
    /// A watched neighbour entry changed.
    Changed {
        /// the interface index
        ifindex: u32,
        /// the neighbour's address
        ip: IpAddr,
        /// its MAC now that the entry is usable, or `None`: deleted, or resolution `FAILED`
        mac: Option<[u8; 6]>,
    },
    /// The kernel dropped notifications (the socket's receive buffer overflowed): any watched
    /// entry may have changed unseen. Resolve them all again ([`resolve`]).
    Lost,
}

/// A neighbour entry's identity: interface index and address.
type Key = (u32, IpAddr);

/// What a notification says about an entry: its MAC, or `None` (deleted or failed).
type Change = (Key, Option<[u8; 6]>);

/// Watched keys, with what was last delivered for each.
type Watched = HashMap<Key, Delivered>;

/// What the watcher last delivered for a key, so that only changes are delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivered {
    /// nothing since the key was watched, or since notifications were lost
    Nothing,
    /// this MAC (or its absence)
    Mac(Option<[u8; 6]>),
}

/// How many events wait in the channel before the watcher stops reading its socket. Room for a
/// burst over a few dozen tunnel next hops; past it the kernel socket buffer (`rmem_default`,
/// about 200 KiB: over a thousand notifications) queues the rest, and its overflow reaches the
/// caller as [`NeighEvent::Lost`].
const EVENT_QUEUE: usize = 64;

/// The receive buffer for one notification datagram. The kernel builds neighbour notifications
/// in buffers of at most a page (`NLMSG_GOODSIZE`) and one entry takes ~100 bytes; 16 KiB leaves
/// room for larger pages. A longer datagram is detected (`MSG_TRUNC`) and reported as
/// [`NeighEvent::Lost`].
const RECV_BUF: usize = 16 * 1024;

/// Follows the kernel's neighbour table in one namespace, for a set of watched keys.
///
/// A netlink socket in the namespace joins the neighbour notification group (`RTNLGRP_NEIGH`,
/// which carries both IPv4 and IPv6 entries), and a task on the caller's tokio runtime reads it,
/// keeps the changes of watched `(ifindex, ip)` keys and sends them as [`NeighEvent`]s on the
/// channel returned by [`NeighWatcher::new`]. For each key, only a change of what was last
/// delivered is sent: the kernel's state changes that keep the MAC (`REACHABLE` to `STALE` and
/// back) are not. `INCOMPLETE` and `NONE` are not sent either (no news: resolution under way or
/// not started). Proxy entries and other families (bridge FDB) are ignored.
///
/// Design: filtering happens in the task, so the channel carries only what the caller asked
/// for; the channel is bounded and the task waits when it is full, so a slow caller leaves the
/// backlog in the kernel's socket buffer, whose overflow becomes one [`NeighEvent::Lost`] rather
/// than unbounded memory.
///
/// Dropping the handle stops the task and closes its socket; the channel then ends (`recv`
/// yields `None`). The channel also ends if the socket fails (logged), and the task ends if the
/// receiver is dropped.
#[derive(Debug)]
pub struct NeighWatcher {
    watched: Arc<Mutex<Watched>>,
    task: tokio::task::JoinHandle<()>,
}

impl NeighWatcher {
    /// Starts a watcher in `ns`, with no key watched yet.
    ///
    /// The socket is created on a short-lived thread that entered `ns` (see [`super::netns`]);
    /// the task runs on the caller's tokio runtime, which needs IO enabled (else
    /// [`KernelError::NoRuntime`]).
    pub async fn new(ns: &Netns) -> Result<(NeighWatcher, mpsc::Receiver<NeighEvent>), NeighError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(KernelError::NoRuntime.into());
        }
        let socket = ns
            .run("open a neighbour notification socket", || {
                let mut socket = Socket::new(NETLINK_ROUTE)?;
                socket.bind_auto()?;
                socket.add_membership(libc::RTNLGRP_NEIGH)?;
                socket.set_non_blocking(true)?;
                Ok(socket)
            })
            .await?;
        // SAFETY: `Socket` owns its descriptor (it closes it on drop, and nothing else does),
        // `as_raw_fd` always returns that same open descriptor, and the AsyncFd takes the Socket
        // by value, so the descriptor stays open and unchanged as long as it is registered.
        // Registration needs the current runtime's reactor: checked above (a runtime built
        // without IO would panic here, the same contract as `NetlinkIn::new`).
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(|e| NeighError::Watcher {
                netns: ns.label().to_string(),
                source: io::Error::from(e),
            })?;
        let watched = Arc::new(Mutex::new(Watched::new()));
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let task = tokio::spawn(watch_loop(
            socket,
            Arc::clone(&watched),
            tx,
            ns.label().to_string(),
        ));
        Ok((NeighWatcher { watched, task }, rx))
    }

    /// Starts delivering changes of the entry for `ip` on interface `ifindex`; `false` if it was
    /// already watched. The next change of the entry is delivered even if it repeats what
    /// [`resolve`] returned.
    pub fn watch(&self, ifindex: u32, ip: IpAddr) -> bool {
        self.lock()
            .insert((ifindex, ip), Delivered::Nothing)
            .is_none()
    }

    /// Stops delivering changes of that entry; `false` if it was not watched. Events already in
    /// the channel stay there.
    pub fn unwatch(&self, ifindex: u32, ip: IpAddr) -> bool {
        self.lock().remove(&(ifindex, ip)).is_some()
    }

    /// The watched keys, `(ifindex, ip)`.
    pub fn watched(&self) -> Vec<(u32, IpAddr)> {
        self.lock().keys().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watched> {
        lock(&self.watched)
    }
}

impl Drop for NeighWatcher {
    fn drop(&mut self) {
        // The task owns the socket and the sender: aborting it closes both (at once if the task is
        // idle, else as soon as its current poll returns).
        self.task.abort();
    }
}

/// The lock is held only for map lookups that cannot panic; a poisoned lock (a panic elsewhere
/// while holding it) still holds a consistent map.
fn lock(watched: &Mutex<Watched>) -> std::sync::MutexGuard<'_, Watched> {
    watched.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The watcher task: reads notifications until the socket fails or nobody listens.
async fn watch_loop(
    socket: AsyncFd<Socket>,
    watched: Arc<Mutex<Watched>>,
    tx: mpsc::Sender<NeighEvent>,
    netns: String,
) {
    let mut buf = Vec::with_capacity(RECV_BUF);
    let mut changes = Vec::new();
    loop {
        let received = tokio::select! {
            () = tx.closed() => return,
            received = recv(&socket, &mut buf) => received,
        };
        let lost = match received {
            Ok(len) if len > buf.len() => {
                tracing::warn!(%netns, len, "neighbour notification larger than the buffer");
                true
            }
            Ok(_) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                tracing::warn!(%netns, "neighbour notifications lost (socket buffer overflow)");
                true
            }
            Err(e) => {
                tracing::error!(%netns, "neighbour watcher stops: {e}");
                return;
            }
        };
        if lost {
            for delivered in lock(&watched).values_mut() {
                *delivered = Delivered::Nothing;
            }
            if tx.send(NeighEvent::Lost).await.is_err() {
                return;
            }
            continue;
        }
        changes.clear();
        parse_datagram(&buf, &mut changes);
        for &((ifindex, ip), mac) in &changes {
            if record(&mut lock(&watched), (ifindex, ip), mac)
                && tx
                    .send(NeighEvent::Changed { ifindex, ip, mac })
                    .await
                    .is_err()
            {
                return;
            }
        }
    }
}

/// Reads one datagram into `buf` (cleared first); returns its full length, which exceeds
/// `buf.len()` if it was truncated.
async fn recv(socket: &AsyncFd<Socket>, buf: &mut Vec<u8>) -> io::Result<usize> {
    socket
        .async_io(Interest::READABLE, |socket| {
            buf.clear();
            socket.recv(buf, libc::MSG_TRUNC)
        })
        .await
}

/// Whether a change of `key` to `mac` is news for the caller; records it as delivered if so.
fn record(watched: &mut Watched, key: Key, mac: Option<[u8; 6]>) -> bool {
    match watched.get_mut(&key) {
        Some(delivered) if *delivered != Delivered::Mac(mac) => {
            *delivered = Delivered::Mac(mac);
            true
        }
        _ => false,
    }
}

/// The neighbour changes in one notification datagram (one or more netlink messages), appended
/// to `out`. Malformed messages end the parse of the datagram; nothing panics.
fn parse_datagram(mut data: &[u8], out: &mut Vec<Change>) {
    while !data.is_empty() {
        // new_checked guarantees a header and a length field within the data
        let Ok(buffer) = NetlinkBuffer::new_checked(data) else {
            tracing::debug!(len = data.len(), "malformed neighbour notification");
            return;
        };
        let Ok(len) = usize::try_from(buffer.length()) else {
            return;
        };
        let message = data
            .get(..len)
            .and_then(|m| NetlinkMessage::<RouteNetlinkMessage>::deserialize(m).ok());
        if let Some(change) = message.as_ref().and_then(neighbour_change) {
            out.push(change);
        }
        // messages are 4-byte aligned (NLMSG_ALIGN)
        data = data.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
}

/// What one netlink message says about a neighbour: its key and its MAC (`None`: deleted or
/// failed), or `None` if it says nothing vwire follows.
fn neighbour_change(msg: &NetlinkMessage<RouteNetlinkMessage>) -> Option<Change> {
    let (neigh, deleted) = match &msg.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => (n, false),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(n)) => (n, true),
        _ => return None,
    };
    if neigh.header.flags.contains(NeighbourFlags::Proxy) {
        return None;
    }
    let key = (neigh.header.ifindex, destination(neigh)?);
    if deleted {
        return Some((key, None));
    }
    match Usability::of(neigh.header.state.into()) {
        // a usable entry without an Ethernet address tells nothing vwire can use
        Usability::Usable => Some((key, Some(lladdr(neigh)?))),
        Usability::Failed => Some((key, None)),
        Usability::Pending | Usability::Idle => None,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use rtnetlink::packet_core::NetlinkHeader;
    use rtnetlink::packet_route::route::RouteHeader;

    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn route(kind: RouteType, attrs: Vec<RouteAttribute>) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.kind = kind;
        msg.attributes = attrs;
        msg
    }

    #[test]
    fn routes() {
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let src = Ipv4Addr::new(10, 0, 0, 2);
        let via_gw = route(
            RouteType::Unicast,
            vec![
                RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(10, 9, 0, 1))),
                RouteAttribute::Oif(7),
                RouteAttribute::Gateway(RouteAddress::Inet(gw)),
                RouteAttribute::PrefSource(RouteAddress::Inet(src)),
                RouteAttribute::Metrics(vec![RouteMetric::Mtu(1400)]),
            ],
        );
        assert_eq!(
            parse_route(&via_gw),
            Ok(RouteFields {
                oif: 7,
                gateway: Some(IpAddr::V4(gw)),
                src: Some(IpAddr::V4(src)),
                mtu: Some(1400),
            })
        );

        let on_link = route(RouteType::Unicast, vec![RouteAttribute::Oif(3)]);
        assert_eq!(
            parse_route(&on_link),
            Ok(RouteFields {
                oif: 3,
                gateway: None,
                src: None,
                mtu: None,
            })
        );

        // RFC 5549: an IPv4 route through an IPv6 gateway
        let gw6 = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
        let via6 = route(
            RouteType::Unicast,
            vec![
                RouteAttribute::Oif(3),
                RouteAttribute::Via(RouteVia::Inet6(gw6)),
            ],
        );
        assert_eq!(
            parse_route(&via6).map(|r| r.gateway),
            Ok(Some(IpAddr::V6(gw6)))
        );

        let local = route(RouteType::Local, vec![RouteAttribute::Oif(1)]);
        assert_eq!(
            parse_route(&local),
            Err(RouteProblem::NotUnicast("local".to_string()))
        );
        assert_eq!(
            parse_route(&route(RouteType::BlackHole, vec![])),
            Err(RouteProblem::NotUnicast("blackhole".to_string()))
        );
        assert!(matches!(
            parse_route(&route(RouteType::Unicast, vec![])),
            Err(RouteProblem::Missing(_))
        ));
    }

    #[test]
    fn destinations() {
        for bad in ["0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255"] {
            assert!(
                matches!(
                    check_destination(v4(bad)),
                    Err(NeighError::InvalidAddress { .. })
                ),
                "{bad}"
            );
        }
        for good in ["10.0.0.1", "fd00::1", "192.0.2.255"] {
            assert!(check_destination(v4(good)).is_ok(), "{good}");
        }
    }

    #[test]
    fn usability() {
        use Usability::*;
        for (state, want) in [
            (libc::NUD_REACHABLE, Usable),
            (libc::NUD_STALE, Usable),
            (libc::NUD_DELAY, Usable),
            (libc::NUD_PROBE, Usable),
            (libc::NUD_PERMANENT, Usable),
            (libc::NUD_NOARP, Usable),
            (libc::NUD_INCOMPLETE, Pending),
            (libc::NUD_FAILED, Failed),
            (libc::NUD_NONE, Idle),
            (0x100, Idle),
        ] {
            assert_eq!(Usability::of(state), want, "state {state:#x}");
        }
        assert_eq!(state_name(None), "absent");
        let entry = |state| Some(Entry { state, mac: None });
        assert_eq!(state_name(entry(libc::NUD_INCOMPLETE)), "incomplete");
        assert_eq!(state_name(entry(0x300)), "state 0x300");
    }

    fn neigh_msg(
        family: AddressFamily,
        state: u16,
        dst: Option<NeighbourAddress>,
        mac: Option<Vec<u8>>,
        delete: bool,
    ) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut n = NeighbourMessage::default();
        n.header.family = family;
        n.header.ifindex = 4;
        n.header.state = NeighbourState::from(state);
        if let Some(dst) = dst {
            n.attributes.push(NeighbourAttribute::Destination(dst));
        }
        if let Some(mac) = mac {
            n.attributes.push(NeighbourAttribute::LinkLayerAddress(mac));
        }
        let inner = if delete {
            RouteNetlinkMessage::DelNeighbour(n)
        } else {
            RouteNetlinkMessage::NewNeighbour(n)
        };
        let mut msg = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(inner),
        );
        msg.finalize();
        msg
    }

    const MAC: [u8; 6] = [2, 0, 0, 0, 0xbe, 0xef];

    #[test]
    fn changes() {
        let ip4 = Ipv4Addr::new(10, 98, 0, 2);
        let ip6: Ipv6Addr = "fd98::2".parse().expect("ip");
        let inet = || Some(NeighbourAddress::Inet(ip4));
        let key4 = (4, IpAddr::V4(ip4));
        let new = |state, mac: Option<&[u8]>| {
            neighbour_change(&neigh_msg(
                AddressFamily::Inet,
                state,
                inet(),
                mac.map(<[u8]>::to_vec),
                false,
            ))
        };
        assert_eq!(
            new(libc::NUD_REACHABLE, Some(&MAC)),
            Some((key4, Some(MAC)))
        );
        assert_eq!(new(libc::NUD_STALE, Some(&MAC)), Some((key4, Some(MAC))));
        assert_eq!(new(libc::NUD_FAILED, None), Some((key4, None)));
        assert_eq!(new(libc::NUD_INCOMPLETE, None), None);
        assert_eq!(new(libc::NUD_NONE, None), None);
        // usable but not an Ethernet address
        assert_eq!(new(libc::NUD_NOARP, Some(&[1, 2, 3, 4])), None);
        assert_eq!(new(libc::NUD_NOARP, None), None);
        let deleted = neigh_msg(AddressFamily::Inet, libc::NUD_FAILED, inet(), None, true);
        assert_eq!(neighbour_change(&deleted), Some((key4, None)));

        let v6 = neigh_msg(
            AddressFamily::Inet6,
            libc::NUD_REACHABLE,
            Some(NeighbourAddress::Inet6(ip6)),
            Some(MAC.to_vec()),
            false,
        );
        assert_eq!(
            neighbour_change(&v6),
            Some(((4, IpAddr::V6(ip6)), Some(MAC)))
        );

        // bridge FDB entries share the group: ignored
        let fdb = neigh_msg(
            AddressFamily::Bridge,
            libc::NUD_REACHABLE,
            None,
            Some(MAC.to_vec()),
            false,
        );
        assert_eq!(neighbour_change(&fdb), None);
        let mut proxy = neigh_msg(AddressFamily::Inet, libc::NUD_NONE, inet(), None, false);
        if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) =
            &mut proxy.payload
        {
            n.header.flags = NeighbourFlags::Proxy;
            n.header.state = NeighbourState::Reachable;
        }
        assert_eq!(neighbour_change(&proxy), None);
    }

    /// An `RTM_NEWNEIGH` as the kernel multicasts it: 10.98.0.2 on ifindex 4, REACHABLE,
    /// lladdr 02:00:00:00:be:ef (written by hand from `struct nlmsghdr`, `struct ndmsg` and the
    /// `NDA_*` attributes).
    const NEWNEIGH: [u8; 48] = [
        48, 0, 0, 0, // nlmsg_len
        28, 0, // nlmsg_type: RTM_NEWNEIGH
        0, 0, // nlmsg_flags
        0, 0, 0, 0, // nlmsg_seq
        0, 0, 0, 0, // nlmsg_pid
        2, 0, 0, 0, // ndm_family AF_INET, padding
        4, 0, 0, 0, // ndm_ifindex
        2, 0, // ndm_state: NUD_REACHABLE
        0, // ndm_flags
        1, // ndm_type: RTN_UNICAST
        8, 0, 1, 0, // NDA_DST, 4 bytes
        10, 98, 0, 2, //
        10, 0, 2, 0, // NDA_LLADDR, 6 bytes + 2 padding
        2, 0, 0, 0, 0xbe, 0xef, 0, 0,
    ];

    #[test]
    fn datagrams() {
        let key = (4, v4("10.98.0.2"));
        let mut out = Vec::new();
        parse_datagram(&NEWNEIGH, &mut out);
        assert_eq!(out, vec![(key, Some(MAC))]);

        // two messages in one datagram, the second a deletion, then a truncated header
        let deleted = neigh_msg(
            AddressFamily::Inet,
            libc::NUD_FAILED,
            Some(NeighbourAddress::Inet(Ipv4Addr::new(10, 98, 0, 2))),
            None,
            true,
        );
        let mut data = NEWNEIGH.to_vec();
        let start = data.len();
        data.resize(start + deleted.buffer_len(), 0);
        deleted.serialize(&mut data[start..]);
        data.extend_from_slice(&[0xa5; 7]);
        out.clear();
        parse_datagram(&data, &mut out);
        assert_eq!(out, vec![(key, Some(MAC)), (key, None)]);

        // hostile lengths: larger than the data, shorter than a header, zero
        for len in [200u8, 8, 0] {
            let mut bad = NEWNEIGH;
            bad[0] = len;
            out.clear();
            parse_datagram(&bad, &mut out);
            assert!(out.is_empty(), "length {len}");
        }
        // any prefix of a valid message parses to nothing, without panicking
        for cut in 0..NEWNEIGH.len() {
            out.clear();
            parse_datagram(&NEWNEIGH[..cut], &mut out);
            assert!(out.is_empty(), "cut at {cut}");
        }
    }

    #[test]
    fn only_news_is_delivered() {
        let key = (4, v4("10.98.0.2"));
        let other = (5, v4("10.98.0.2"));
        let mut watched = Watched::new();
        watched.insert(key, Delivered::Nothing);
        assert!(!record(&mut watched, other, Some(MAC)), "not watched");
        assert!(record(&mut watched, key, Some(MAC)), "first news");
        assert!(!record(&mut watched, key, Some(MAC)), "same MAC again");
        assert!(
            record(&mut watched, key, Some([2, 0, 0, 0, 0, 1])),
            "new MAC"
        );
        assert!(record(&mut watched, key, None), "gone");
        assert!(!record(&mut watched, key, None), "still gone");
        assert!(record(&mut watched, key, Some(MAC)), "back");
    }
}
