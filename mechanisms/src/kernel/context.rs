//! The IP context NSM puts on a kernel interface: MTU, addresses, routes, static neighbours.
//!
//! This is what forwarder-vpp's `connectioncontextkernel` does in the client's namespace (with
//! `src_ip_addrs`, `src_routes`) and in the endpoint's (with `dst_ip_addrs`, `dst_routes`); the
//! caller picks the side and builds an [`IpContextSpec`]. Policy routes, `routeLocalNet`, NAT
//! templates and DNS are not handled here.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{format_mac, validate_ifname, KernelError, NetlinkIn};

/// A route through the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    /// the destination prefix; host bits are ignored (`10.1.2.3/16` means `10.1.0.0/16`)
    pub dst: IpNet,
    /// the next hop, of the same family as `dst`; `None` for a directly connected route.
    /// The route is installed `onlink`: the gateway need not be inside one of the interface's
    /// prefixes (NSM often hands out /32 addresses with the peer's address as gateway).
    pub gateway: Option<IpAddr>,
}

/// A static (permanent) neighbour entry: NSM's `IpNeighbor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Neighbor {
    /// the neighbour's IP address
    pub ip: IpAddr,
    /// its MAC address
    pub mac: [u8; 6],
}

/// What to configure on one interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpContextSpec {
    /// addresses with their prefix length, IPv4 and IPv6 (`172.16.1.100/31`, `fd00::1/127`)
    pub addrs: Vec<IpNet>,
    /// routes through the interface
    pub routes: Vec<RouteSpec>,
    /// static neighbour entries
    pub neighbors: Vec<Neighbor>,
    /// the interface MTU (NSM's `Connection.context.MTU`); `None` leaves it alone
    pub mtu: Option<u32>,
}

impl IpContextSpec {
    /// Checks the spec without touching the kernel, so that a bad spec changes nothing.
    pub fn validate(&self) -> Result<(), KernelError> {
        for addr in &self.addrs {
            check_unicast("address", addr.addr(), || addr.to_string())?;
        }
        for route in &self.routes {
            if let Some(gw) = route.gateway {
                let what = || format!("{} via {gw}", route.dst);
                if gw.is_ipv4() != route.dst.addr().is_ipv4() {
                    return Err(KernelError::InvalidSpec {
                        what: format!("route {}", what()),
                        reason: "the gateway's family differs from the destination's",
                    });
                }
                check_unicast("route gateway", gw, what)?;
            }
        }
        for n in &self.neighbors {
            check_unicast("neighbour", n.ip, || n.ip.to_string())?;
        }
        if self.mtu == Some(0) {
            return Err(KernelError::InvalidSpec {
                what: "MTU 0".to_string(),
                reason: "an MTU must be positive",
            });
        }
        Ok(())
    }

    fn has_ipv6(&self) -> bool {
        self.addrs.iter().any(|a| a.addr().is_ipv6())
            || self.routes.iter().any(|r| r.dst.addr().is_ipv6())
            || self.neighbors.iter().any(|n| n.ip.is_ipv6())
    }
}

fn check_unicast(kind: &str, ip: IpAddr, what: impl FnOnce() -> String) -> Result<(), KernelError> {
    let reason = if ip.is_unspecified() {
        "the unspecified address"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if ip == IpAddr::from([255, 255, 255, 255]) {
        "the broadcast address"
    } else {
        return Ok(());
    };
    Err(KernelError::InvalidSpec {
        what: format!("{kind} {}", what()),
        reason,
    })
}

/// Configures `ifname` in `nl`'s namespace: MTU, then IPv6 enabled (if the spec has any IPv6),
/// addresses, neighbours, routes.
///
/// Idempotent: applying the same spec again changes nothing and fails on nothing. Addresses
/// that exist are kept (`EEXIST` is success); neighbours and routes are *replaced*, so a route
/// or neighbour for the same destination with another next hop or MAC is corrected rather than
/// left in place. The link's up/down state is not changed, and the kernel refuses routes through
/// a link that is down (`ENETDOWN`): bring it up first ([`super::create_veth_into`] does).
/// IPv6 addresses get `nodad` (a point-to-point veth has no one to clash with, and DAD would
/// hold the address tentative for a second or more).
pub async fn apply_context(
    nl: &NetlinkIn,
    ifname: &str,
    spec: &IpContextSpec,
) -> Result<(), KernelError> {
    spec.validate()?;
    let link = nl
        .link(ifname)
        .await?
        .ok_or_else(|| KernelError::NoSuchInterface {
            name: ifname.to_string(),
            netns: nl.netns().label().to_string(),
        })?;
    let index = link.index;

    if let Some(mtu) = spec.mtu.filter(|&m| link.mtu != Some(m)) {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes
            .push(rtnetlink::packet_route::link::LinkAttribute::Mtu(mtu));
        nl.change(RouteNetlinkMessage::SetLink(msg), 0)
            .await
            .map_err(|e| nl.error(format!("set MTU {mtu} on {ifname:?}"), e))?;
    }

    if spec.has_ipv6() {
        enable_ipv6(nl, ifname).await?;
    }

    for addr in &spec.addrs {
        let msg = address_message(index, addr);
        match nl
            .change(
                RouteNetlinkMessage::NewAddress(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .await
        {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                return Err(nl.error(format!("add address {addr} to {ifname:?}"), e));
            }
            _ => {}
        }
    }

    for n in &spec.neighbors {
        let msg = neighbour_message(index, n, true);
        nl.change(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map_err(|e| {
            nl.error(
                format!(
                    "add neighbour {} lladdr {} on {ifname:?}",
                    n.ip,
                    format_mac(&n.mac)
                ),
                e,
            )
        })?;
    }

    for route in &spec.routes {
        let msg = route_message(index, route);
        nl.change(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map_err(|e| {
            nl.error(
                format!("add route {} on {ifname:?}", describe_route(route)),
                e,
            )
        })?;
    }
    Ok(())
}

/// Removes what [`apply_context`] added with this spec: routes, neighbours, addresses.
///
/// Idempotent: anything already gone (the interface included) is success. The MTU and the
/// IPv6 switch are left as they are: there is no previous value to restore, and the interface
/// usually goes away next anyway.
pub async fn remove_context(
    nl: &NetlinkIn,
    ifname: &str,
    spec: &IpContextSpec,
) -> Result<(), KernelError> {
    spec.validate()?;
    let Some(link) = nl.link(ifname).await? else {
        return Ok(());
    };
    let index = link.index;
    // the errors that mean "not there", per object kind
    let gone = |e: &io::Error, missing: i32| matches!(e.raw_os_error(), Some(c) if c == missing || c == libc::ENODEV);

    for route in &spec.routes {
        let msg = route_message(index, route);
        match nl.change(RouteNetlinkMessage::DelRoute(msg), 0).await {
            Err(e) if !gone(&e, libc::ESRCH) => {
                return Err(nl.error(
                    format!("delete route {} on {ifname:?}", describe_route(route)),
                    e,
                ));
            }
            _ => {}
        }
    }
    for n in &spec.neighbors {
        let msg = neighbour_message(index, n, false);
        match nl.change(RouteNetlinkMessage::DelNeighbour(msg), 0).await {
            Err(e) if !gone(&e, libc::ENOENT) => {
                return Err(nl.error(format!("delete neighbour {} on {ifname:?}", n.ip), e));
            }
            _ => {}
        }
    }
    for addr in &spec.addrs {
        let msg = address_message(index, addr);
        match nl.change(RouteNetlinkMessage::DelAddress(msg), 0).await {
            Err(e) if !gone(&e, libc::EADDRNOTAVAIL) => {
                return Err(nl.error(format!("delete address {addr} from {ifname:?}"), e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Clears `net.ipv6.conf.<ifname>.disable_ipv6` in the interface's namespace, if set.
///
/// This switch has no netlink attribute, only a sysctl, and `/proc/sys/net` shows the namespace
/// of the *thread* that opens it: hence a namespace thread. NSM's `connectioncontextkernel`
/// does the same ("enables IPv6 on the link").
async fn enable_ipv6(nl: &NetlinkIn, ifname: &str) -> Result<(), KernelError> {
    validate_ifname(ifname)?; // no '/' or "..": the name is safe in a path
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    let netns = nl.netns().label().to_string();
    nl.netns()
        .run("enable IPv6", {
            let path = path.clone();
            move || {
                if std::fs::read_to_string(&path)?.trim() != "0" {
                    std::fs::write(&path, "0")?;
                }
                Ok(())
            }
        })
        .await
        .map_err(|e| match e {
            KernelError::InNetns { source, .. } => KernelError::Sysctl {
                path,
                netns,
                source,
            },
            other => other,
        })
}

fn family(ip: &IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn address_message(index: u32, addr: &IpNet) -> AddressMessage {
    let ip = addr.addr();
    let mut msg = AddressMessage::default();
    msg.header.family = family(&ip);
    msg.header.prefix_len = addr.prefix_len();
    msg.header.index = index;
    msg.header.scope = AddressScope::Universe;
    msg.attributes.push(AddressAttribute::Local(ip));
    msg.attributes.push(AddressAttribute::Address(ip));
    match addr {
        IpNet::V4(v4) => {
            // What `ip addr add ... brd +` would set. /31 (RFC 3021) and /32 have no broadcast.
            if v4.prefix_len() < 31 {
                msg.attributes
                    .push(AddressAttribute::Broadcast(v4.broadcast()));
            }
        }
        IpNet::V6(_) => {
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
    }
    msg
}

fn neighbour_message(index: u32, n: &Neighbor, with_lladdr: bool) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = family(&n.ip);
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.attributes
        .push(NeighbourAttribute::Destination(match n.ip {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
    if with_lladdr {
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(n.mac.to_vec()));
    }
    msg
}

fn route_message(index: u32, route: &RouteSpec) -> RouteMessage {
    let dst = route.dst.trunc();
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(&dst.addr());
    msg.header.destination_prefix_length = dst.prefix_len();
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Static;
    msg.header.kind = RouteType::Unicast;
    msg.header.scope = if route.gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    if dst.prefix_len() > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst.addr())));
    }
    if let Some(gw) = route.gateway {
        msg.header.flags = RouteFlags::Onlink;
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    msg.attributes.push(RouteAttribute::Oif(index));
    msg
}

fn describe_route(route: &RouteSpec) -> String {
    match route.gateway {
        Some(gw) => format!("{} via {gw}", route.dst.trunc()),
        None => route.dst.trunc().to_string(),
    }
}
