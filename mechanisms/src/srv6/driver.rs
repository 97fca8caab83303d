//! The SRv6 head-end as a dataplane stage: an [`EncapHeader`] plus the framing of the policy's
//! local port, implementing [`vwire_dataplane::tunnel::Encap`]. The receive side (End.DX2,
//! End.DX4, End.DX6) is the uplink demultiplexer, [`crate::tunnel::UplinkDecap`].
//!
//! Contract: built on the control thread, immutable afterwards, shared with the workers through
//! the forwarding table. Per packet it works in place in the packet's frame with the core's
//! functions, allocates nothing and never panics; it refuses a packet with a [`DropReason`]:
//! - `too_big`: the outer frame would exceed the uplink MTU + 14 (checked before any write);
//! - `not_ip`: an IP-payload policy got something that is not IPv4 or IPv6;
//! - otherwise what [`Srv6Error::drop_reason`] maps the core's error to.

use vwire_dataplane::counters::DropReason;
use vwire_dataplane::tunnel::Encap;
use vwire_dataplane::{BufIdx, BufferPool};

use super::{EncapHeader, Srv6Error, ENCAP_LEN, ETH_HLEN};
use crate::tunnel::{encap_framed, Framing};

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
/// [`vwire_dataplane::table::ForwardingTable::add_tunnel`].
#[derive(Clone, Debug)]
pub struct Srv6Encap {
    header: EncapHeader,
    framing: Framing,
    /// Longest packet, as received on the local port, whose outer frame still fits.
    max_len: usize,
}

impl Srv6Encap {
    /// The encapsulation of the policy `header` for a local port with `framing`, over an uplink
    /// of MTU `uplink_mtu` (the outer frame may be `uplink_mtu + 14` bytes long).
    ///
    /// [`Framing::Ethernet`] is H.Encaps.L2 of the whole frame (the peer SID is an End.DX2).
    /// [`Framing::EthernetIp`] and [`Framing::Ip`] are H.Encaps of the IP packet, after the
    /// frame's Ethernet header for the former (the peer SID is an End.DX4 or End.DX6).
    #[must_use]
    pub fn new(header: EncapHeader, framing: Framing, uplink_mtu: u32) -> Self {
        let max_frame = (uplink_mtu as usize).saturating_add(ETH_HLEN);
        // The Ethernet header of an EthernetIp frame is dropped: it becomes headroom.
        let added = match framing {
            Framing::Ethernet | Framing::Ip => ENCAP_LEN,
            Framing::EthernetIp => ENCAP_LEN - ETH_HLEN,
        };
        Self {
            header,
            framing,
            max_len: max_frame.saturating_sub(added),
        }
    }

    /// The policy's outer header.
    #[must_use]
    pub fn header(&self) -> &EncapHeader {
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

impl Encap for Srv6Encap {
    #[inline]
    fn encap(&self, pool: &mut BufferPool, b: BufIdx) -> Result<(), DropReason> {
        encap_framed(
            pool,
            b,
            self.framing,
            self.max_len,
            |f, o, l| self.header.encap_l2(f, o, l),
            |f, o, l| self.header.encap_ip(f, o, l),
            Srv6Error::drop_reason,
        )
    }
}
