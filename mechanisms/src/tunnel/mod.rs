//! Tunnels as dataplane stages: the drivers that turn the pure VXLAN and SRv6 cores into the
//! dataplane's [`vwire_dataplane::tunnel::Encap`] and [`vwire_dataplane::tunnel::Decap`].
//!
//! - [`VxlanEncap`] (in [`vxlan`]) and [`Srv6Encap`] (in [`srv6`]): one per tunnel, on the
//!   tunnel's local port. Both are the one generic stage [`TunnelEncap`] (in [`encap`]) over the
//!   format's header template ([`EncapFormat`]); the format modules also map the cores' errors
//!   to drop reasons.
//! - [`UplinkDecap`] (in [`uplink`]): one per uplink port, shared by every tunnel over it. It
//!   classifies each packet (VXLAN over IPv4 or IPv6, or SRv6 to a local SID), finds the tunnel
//!   in lookup maps built by the control thread, strips the outer headers and gives the packet
//!   the framing its local port expects.
//!
//! # Framing: what the local port carries
//!
//! The same three kinds of local port exist on both sides, named [`Framing`] for what the
//! encapsulation receives and [`EgressFraming`] for what the decapsulation must produce:
//!
//! | local port                                 | payload  | [`Framing`]  | [`EgressFraming`]           |
//! |--------------------------------------------|----------|--------------|-----------------------------|
//! | AF_XDP port or memif in ethernet mode      | ETHERNET | `Ethernet`   | `Ethernet`                  |
//! | kernel veth (AF_XDP) of an IP connection   | IP       | `EthernetIp` | `EthernetIp { dst, src }`   |
//! | memif in ip mode                           | IP       | `Ip`         | `Ip`                        |
//!
//! An IP-payload tunnel carries the IP packet only: VXLAN puts it behind the fixed
//! [`crate::vxlan::IP_PAYLOAD_PEER_MAC`] / [`crate::vxlan::IP_PAYLOAD_LOCAL_MAC`] pair (see the
//! [`crate::vxlan`] docs), SRv6 uses H.Encaps and End.DX4/End.DX6. On the way out to a veth the
//! decapsulation writes the veth's real MACs (`EthernetIp { dst, src }`: dst is the peer
//! interface in the client's namespace, src the vwire side), replacing VXLAN's placeholder pair
//! or, behind SRv6, in front of the bare packet.
//!
//! # Drop reasons
//!
//! Errors of the cores are counted under the dataplane's
//! [`DropReason`](vwire_dataplane::counters::DropReason)s through
//! [`crate::vxlan::VxlanError::drop_reason`] and [`crate::srv6::Srv6Error::drop_reason`]:
//! failed receive checks are `tunnel_malformed`; a packet for no known tunnel (remote and VNI,
//! SID, or a UDP port other than the uplink's VXLAN port) is `tunnel_unknown`; something other
//! than IP on an IP-payload tunnel is `not_ip`; an outer frame beyond the uplink MTU is
//! `too_big`; a packet without room for the outer headers (a bug) is `no_headroom`. The
//! finer-grained core error is not kept on the packet path.
//!
//! # Use
//!
//! The control thread builds the objects, puts them in a new forwarding table and publishes it;
//! they are immutable from then on (a change is a new object in a new table):
//!
//! ```
//! use std::net::Ipv4Addr;
//! use std::sync::Arc;
//! use vwire_dataplane::table::ForwardingTable;
//! use vwire_mechanisms::tunnel::{EgressFraming, Framing, UplinkDecap, VxlanEncap};
//! use vwire_mechanisms::vxlan::{TunnelHeader, TunnelParams, Underlay, Vni, VXLAN_PORT};
//!
//! let (uplink, local) = (0, 1);
//! let (me, peer) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
//! let vni = Vni::new(42).unwrap();
//! let header = TunnelHeader::new(&TunnelParams {
//!     underlay: Underlay::V4 { local: me, remote: peer },
//!     local_mac: [2, 0, 0, 0, 0, 1],
//!     next_hop_mac: [2, 0, 0, 0, 0, 2],
//!     dst_port: VXLAN_PORT,
//!     vni,
//!     ttl: 64,
//!     udp_checksum_v4: false,
//! });
//! let mut table = ForwardingTable::new(8);
//! let encap = VxlanEncap::new(header, Framing::Ethernet, 1500);
//! table.add_tunnel(local, uplink, Arc::new(encap))?;
//! let mut decap = UplinkDecap::new(VXLAN_PORT);
//! decap.add_vxlan(peer.into(), vni, local, EgressFraming::Ethernet)?;
//! table.set_decap(uplink, Arc::new(decap))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::{IpAddr, Ipv6Addr};

use crate::vxlan::Vni;

pub mod encap;
pub mod srv6;
#[cfg(test)]
mod tests;
pub mod uplink;
pub mod vxlan;

pub use encap::{EncapFn, EncapFormat, TunnelEncap};
pub use srv6::Srv6Encap;
pub use uplink::UplinkDecap;
pub use vxlan::VxlanEncap;

/// What a tunnel's local port delivers to the encapsulation. See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Framing {
    /// Ethernet frames, carried whole (ETHERNET payload).
    Ethernet,
    /// Ethernet frames carrying IPv4 or IPv6 (an IP connection on a kernel veth): only the IP
    /// packet is carried; other frames (ARP, VLAN-tagged) are dropped as `not_ip`.
    EthernetIp,
    /// Bare IP packets (an IP connection on a memif in ip mode).
    Ip,
}

/// What a tunnel's local port expects from the decapsulation. See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EgressFraming {
    /// The inner Ethernet frame as it is (ETHERNET payload; End.DX2).
    Ethernet,
    /// An Ethernet frame with these MACs in front of the IP packet (an IP connection on a kernel
    /// veth). Inner frames that do not carry IP are dropped as `not_ip`.
    EthernetIp {
        /// Destination MAC: the interface in the client's namespace.
        dst: [u8; 6],
        /// Source MAC: the vwire side of the veth.
        src: [u8; 6],
    },
    /// The bare IP packet (an IP connection on a memif in ip mode).
    Ip,
}

/// Errors building an [`UplinkDecap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    /// a (remote, VNI) pair mapped twice
    #[error("the VXLAN tunnel from {remote} with VNI {vni} is already mapped")]
    DuplicateVxlan {
        /// The peer's tunnel address.
        remote: IpAddr,
        /// The VNI.
        vni: Vni,
    },
    /// a local SID mapped twice
    #[error("the local SID {0} is already mapped")]
    DuplicateSid(Ipv6Addr),
    /// an End.DX4/End.DX6 SID, which delivers bare IP, toward a port that wants Ethernet frames
    /// (no MACs to put in front)
    #[error("the End.DX4/End.DX6 SID {0} needs the EthernetIp or Ip egress framing, not Ethernet")]
    IpSidToEthernet(Ipv6Addr),
}
