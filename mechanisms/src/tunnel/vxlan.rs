//! VXLAN as a tunnel stage: [`VxlanEncap`], and the mapping of [`VxlanError`] to the dataplane's
//! drop reasons (used by the encapsulation and by the uplink demultiplexer).

use vwire_dataplane::counters::DropReason;

use super::encap::{EncapFn, EncapFormat, TunnelEncap};
use super::Framing;
use crate::vxlan::{TunnelHeader, VxlanError, ETH_HLEN};

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

/// One VXLAN tunnel's encapsulation, for [`vwire_dataplane::table::ForwardingTable::add_tunnel`]
/// (contract: [`TunnelEncap`]).
///
/// With [`Framing::Ethernet`] the frame is carried as it is; with [`Framing::EthernetIp`] its
/// Ethernet header is replaced by the IP-payload MAC pair ([`crate::vxlan::IP_PAYLOAD_PEER_MAC`]
/// ← [`crate::vxlan::IP_PAYLOAD_LOCAL_MAC`]) and with [`Framing::Ip`] that header is added in
/// front of the bare packet ([`TunnelHeader::encap_ip`]).
pub type VxlanEncap = TunnelEncap<TunnelHeader>;

impl EncapFormat for TunnelHeader {
    type Error = VxlanError;
    const ENCAP_FRAME: EncapFn<Self> = Self::encap;
    const ENCAP_IP: EncapFn<Self> = Self::encap_ip;
    const DROP_REASON: fn(VxlanError) -> DropReason = VxlanError::drop_reason;

    /// The outer headers, plus an inner Ethernet header for bare IP.
    #[inline]
    fn added(&self, framing: Framing) -> usize {
        match framing {
            Framing::Ethernet | Framing::EthernetIp => self.overhead(),
            Framing::Ip => self.overhead() + ETH_HLEN,
        }
    }
}
