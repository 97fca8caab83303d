//! SRv6 as a tunnel stage: [`Srv6Encap`] (the head-end), and the mapping of [`Srv6Error`] to the
//! dataplane's drop reasons (used by the encapsulation and by the uplink demultiplexer, which is
//! the End.DX2/End.DX4/End.DX6 side).

use vwire_dataplane::counters::DropReason;

use super::encap::{EncapFn, EncapFormat, TunnelEncap};
use super::Framing;
use crate::srv6::{EncapHeader, Srv6Error, ENCAP_LEN, ETH_HLEN};

impl Srv6Error {
    /// The dataplane drop reason this error is counted under:
    /// - `OutOfBounds`, `NoHeadroom` → `no_headroom` (a caller bug: pool frames keep 256 bytes
    ///   of headroom);
    /// - `TooLong` → `too_big`;
    /// - `PayloadNotIp` → `not_ip`;
    /// - every receive check, `WrongPayload` included (say IPv4 sent to an End.DX6 SID) →
    ///   `tunnel_malformed`.
    #[must_use]
    pub const fn drop_reason(self) -> DropReason {
        match self {
            Self::OutOfBounds | Self::NoHeadroom => DropReason::NoHeadroom,
            Self::TooLong => DropReason::TooBig,
            Self::PayloadNotIp => DropReason::NotIp,
            Self::Truncated
            | Self::NotIpv6
            | Self::BadIpVersion
            | Self::BadIpLength
            | Self::ExtHeader
            | Self::Fragment
            | Self::NotSrh
            | Self::BadSrh
            | Self::SegmentsLeft
            | Self::UnknownPayload
            | Self::WrongPayload
            | Self::InnerTooShort => DropReason::TunnelMalformed,
        }
    }
}

/// One SR policy's encapsulation (H.Encaps.L2 or H.Encaps), for
/// [`vwire_dataplane::table::ForwardingTable::add_tunnel`] (contract: [`TunnelEncap`]).
///
/// [`Framing::Ethernet`] is H.Encaps.L2 of the whole frame (the peer SID is an End.DX2).
/// [`Framing::EthernetIp`] and [`Framing::Ip`] are H.Encaps of the IP packet, after the
/// frame's Ethernet header for the former (the peer SID is an End.DX4 or End.DX6).
pub type Srv6Encap = TunnelEncap<EncapHeader>;

impl EncapFormat for EncapHeader {
    type Error = Srv6Error;
    const ENCAP_FRAME: EncapFn<Self> = Self::encap_l2;
    const ENCAP_IP: EncapFn<Self> = Self::encap_ip;
    const DROP_REASON: fn(Srv6Error) -> DropReason = Srv6Error::drop_reason;

    /// The outer headers; the Ethernet header of an `EthernetIp` frame is dropped: it becomes
    /// headroom.
    #[inline]
    fn added(&self, framing: Framing) -> usize {
        match framing {
            Framing::Ethernet | Framing::Ip => ENCAP_LEN,
            Framing::EthernetIp => ENCAP_LEN - ETH_HLEN,
        }
    }
}
