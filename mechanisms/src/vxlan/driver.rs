//! The VXLAN encapsulation as a dataplane stage: a [`TunnelHeader`] plus the framing of the
//! tunnel's local port, implementing [`vwire_dataplane::tunnel::Encap`]. The receive side is the
//! uplink demultiplexer, [`crate::tunnel::UplinkDecap`].
//!
//! Contract: built on the control thread, immutable afterwards, shared with the workers through
//! the forwarding table. Per packet it works in place in the packet's frame with the core's
//! functions, allocates nothing and never panics; it refuses a packet with a [`DropReason`]:
//! - `too_big`: the outer frame would exceed the uplink MTU + 14 (checked before any write);
//! - `not_ip`: an IP-payload tunnel got something that is not IPv4 or IPv6 (ARP from a veth,
//!   a VLAN-tagged frame, a bare packet whose version nibble is neither 4 nor 6);
//! - otherwise what [`VxlanError::drop_reason`] maps the core's error to.

use vwire_dataplane::counters::DropReason;
use vwire_dataplane::tunnel::Encap;
use vwire_dataplane::{BufIdx, BufferPool};

use super::{TunnelHeader, VxlanError, ETH_HLEN};
use crate::tunnel::{encap_framed, Framing};

impl VxlanError {
    /// The dataplane drop reason this error is counted under:
    /// - `OutOfBounds`, `NoHeadroom` → `no_headroom` (a caller bug: pool frames keep 256 bytes
    ///   of headroom);
    /// - `TooLong` → `too_big`;
    /// - `PayloadNotIp`, `InnerNotIp` → `not_ip` (an IP-payload tunnel carried something else);
    /// - `NotVxlanPort` → `tunnel_unknown` (UDP, but not to the port this node listens on);
    /// - every other receive check → `tunnel_malformed`.
    #[must_use]
    pub const fn drop_reason(self) -> DropReason {
        match self {
            Self::OutOfBounds | Self::NoHeadroom => DropReason::NoHeadroom,
            Self::TooLong => DropReason::TooBig,
            Self::PayloadNotIp | Self::InnerNotIp => DropReason::NotIp,
            Self::NotVxlanPort => DropReason::TunnelUnknown,
            Self::Truncated
            | Self::NotIp
            | Self::BadIpVersion
            | Self::BadIpHeaderLen
            | Self::BadIpLength
            | Self::BadIpChecksum
            | Self::Fragment
            | Self::Ipv6ExtHeader
            | Self::NotUdp
            | Self::BadUdpLength
            | Self::NoVniFlag
            | Self::InnerTooShort => DropReason::TunnelMalformed,
        }
    }
}

/// One VXLAN tunnel's encapsulation, for [`vwire_dataplane::table::ForwardingTable::add_tunnel`].
#[derive(Clone, Debug)]
pub struct VxlanEncap {
    header: TunnelHeader,
    framing: Framing,
    /// Longest packet, as received on the local port, whose outer frame still fits.
    max_len: usize,
}

impl VxlanEncap {
    /// The encapsulation of the tunnel `header` for a local port with `framing`, over an uplink
    /// of MTU `uplink_mtu` (the outer frame may be `uplink_mtu + 14` bytes long).
    ///
    /// With [`Framing::Ethernet`] the frame is carried as it is; with [`Framing::EthernetIp`] its
    /// Ethernet header is replaced by the IP-payload MAC pair ([`super::IP_PAYLOAD_PEER_MAC`] ←
    /// [`super::IP_PAYLOAD_LOCAL_MAC`]) and with [`Framing::Ip`] that header is added in front of
    /// the bare packet ([`TunnelHeader::encap_ip`]).
    #[must_use]
    pub fn new(header: TunnelHeader, framing: Framing, uplink_mtu: u32) -> Self {
        let max_frame = (uplink_mtu as usize).saturating_add(ETH_HLEN);
        // What the packet gains: the outer headers, plus an inner Ethernet header for bare IP.
        let added = match framing {
            Framing::Ethernet | Framing::EthernetIp => header.overhead(),
            Framing::Ip => header.overhead() + ETH_HLEN,
        };
        Self {
            header,
            framing,
            max_len: max_frame.saturating_sub(added),
        }
    }

    /// The tunnel's outer header.
    #[must_use]
    pub fn header(&self) -> &TunnelHeader {
        &self.header
    }

    /// The local port's framing.
    #[must_use]
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The longest packet (as the local port delivers it) that is encapsulated; longer ones are
    /// dropped as `too_big`.
    #[must_use]
    pub fn max_len(&self) -> usize {
        self.max_len
    }
}

impl Encap for VxlanEncap {
    #[inline]
    fn encap(&self, pool: &mut BufferPool, b: BufIdx) -> Result<(), DropReason> {
        encap_framed(
            pool,
            b,
            self.framing,
            self.max_len,
            |f, o, l| self.header.encap(f, o, l),
            |f, o, l| self.header.encap_ip(f, o, l),
            VxlanError::drop_reason,
        )
    }
}
