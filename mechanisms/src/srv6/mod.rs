//! SRv6 (RFC 8754, RFC 8986): the packet-format core of the REMOTE `SRV6` mechanism. No devices,
//! no sockets, no allocation, no logging: the functions here run once per packet on the worker.
//!
//! vwire is an SRv6 head-end and endpoint the way Linux's `seg6` and `seg6local` are, so a kernel
//! can be the peer:
//! - [`EncapHeader::encap_l2`] is **H.Encaps.L2** (`ip route ... encap seg6 mode l2encap segs
//!   <sid>`): the whole Ethernet frame follows the SRH, next header 143.
//! - [`EncapHeader::encap_ip`] is **H.Encaps** (`mode encap`): an IPv4 (next header 4) or IPv6
//!   (41) packet follows the SRH.
//! - [`decap()`] is the common part of **End.DX2**, **End.DX4** and **End.DX6**
//!   (`seg6local action End.DX2|End.DX4|End.DX6`): it finds the payload behind the outer IPv6
//!   header and its SRH; [`Behavior::check`] then enforces that the payload matches the SID's
//!   behaviour.
//!
//! Layout: [`encap`] ([`EncapHeader`], the per-policy template) and [`decap`](mod@decap). The
//! dataplane stage that uses this core lives with the other tunnel drivers:
//! [`crate::tunnel::Srv6Encap`] (a policy's encapsulation, and the mapping of [`Srv6Error`] to
//! the dataplane's drop reasons) and the uplink demultiplexer in [`crate::tunnel`].
//!
//! # Wire layout
//!
//! What the encapsulation writes in front of the payload (offsets from the first byte of the
//! outer frame), byte for byte what Linux 6.18 sends for a one-segment list except the fields
//! marked *vwire*:
//!
//! ```text
//!  0  Ethernet   dst MAC (the underlay next hop), src MAC (the uplink), EtherType 0x86dd
//! 14  IPv6       version 6
//!                traffic class: copied from an inner IPv6 packet (as Linux), else 0
//!                flow label: the flow hash of the payload (*vwire*: Linux's `seg6_flowlabel=1`;
//!                  Linux's default 0 copies an inner IPv6 label and sends 0 for IPv4)
//!                payload length: 24 + payload, next header 43 (routing)
//!                hop limit: the template's (*vwire*: Linux copies an inner IPv6 packet's)
//!                src = this node's tunnel address (Linux: `ip sr tunsrc`), dst = the SID
//! 54  SRH        next header 4 | 41 | 143, hdr ext len 2, routing type 4, segments left 0,
//!                last entry 0, flags 0, tag 0
//! 62  Segment List[0] = the SID (16 bytes)
//! 78  the payload: an IP packet, or an Ethernet frame for L2
//! ```
//!
//! The outer headers take [`ENCAP_LEN`] (78) bytes of headroom. MTU: the uplink MTU counts from
//! the outer IPv6 header, so an IP payload loses [`MTU_OVERHEAD_IP`] (40 + 24 = 64) bytes and an
//! Ethernet payload [`MTU_OVERHEAD_ETHERNET`] (64 + 14 + 4 for one VLAN tag, the same allowance
//! forwarder-vpp makes for VXLAN in `nsm-forwarder.md` §5).
//!
//! # Decapsulation contract
//!
//! The caller (the worker) gives [`decap()`] a frame whose outer IPv6 destination it steered here
//! because it lies in vwire's locator. [`decap()`] checks, in order: Ethernet (up to two
//! VLAN tags, the rule of [`vwire_dataplane::wire`]) with EtherType IPv6, IPv6 version and payload length inside the buffer; an
//! optional SRH (routing type 4, length consistent with its last entry, **segments left 0**: an
//! End.DX* SID must be the last, RFC 8986 §4.4); then the payload's next header, which must be 4,
//! 41 or 143. Other extension headers, before or after the SRH, are refused
//! ([`Srv6Error::ExtHeader`]), as are fragments; SRH TLVs (HMAC) are skipped, not verified,
//! like Linux without `seg6_require_hmac`. It returns the outer destination ([`Decapped::sid`]),
//! the payload type and where the payload is. The caller then:
//! 1. looks [`Decapped::sid`] up in its local SID table (a miss is its own drop reason);
//! 2. calls [`Behavior::check`] with the SID's behaviour (`End.DX2` takes only Ethernet,
//!    `End.DX4` only IPv4, `End.DX6` only IPv6, as Linux's `seg6local` does);
//! 3. sends the payload on: an End.DX2 payload is an Ethernet frame; an End.DX4/DX6 payload is a
//!    bare IP packet, which needs an Ethernet header in front for an Ethernet port (there are
//!    always at least 54 bytes of old outer header in front of it to write one into).
//!
//! # Cost
//!
//! Measured at burst 32 on the testbed VM (`perf/reports/tunnel.md`): H.Encaps.L2 about 18–20
//! ns/packet, H.Encaps 12–13, decapsulation 10–11, whatever the payload size (nothing here reads
//! the payload beyond the flow-hash key).
//!
//! # Panic freedom
//!
//! Every function takes `(frame, offset, len)` from the caller and bytes from the network and
//! returns an error for anything that does not fit; none panics, indexes out of bounds or
//! overflows. Property tests (below) and the fuzz target `srv6_decap` check it.

pub mod decap;
pub mod encap;
#[cfg(test)]
mod tests;

pub use decap::{decap, Decapped};
pub use encap::{EncapHeader, EncapParams};

use vwire_dataplane::wire::{IpProtocol, IPV4_HLEN};

/// Fixed part of the SRH (RFC 8754 §2), before the segment list.
pub use vwire_dataplane::wire::srh::FIXED_LEN as SRH_FIXED_LEN;
/// One segment (an IPv6 address).
pub use vwire_dataplane::wire::srh::SID_LEN;
/// Header lengths: Ethernet without a tag, the IPv6 fixed header.
pub use vwire_dataplane::wire::{ETH_HLEN, IPV6_HLEN};
/// Outer IPv6 header + SRH with one segment: what the payload gains on the wire.
pub const IPV6_SRH_LEN: usize = IPV6_HLEN + SRH_FIXED_LEN + SID_LEN;
/// Bytes the encapsulation prepends, outer Ethernet included: 14 + 40 + 8 + 16 = 78.
pub const ENCAP_LEN: usize = ETH_HLEN + IPV6_SRH_LEN;

/// MTU clamp for an IP payload: the inner IP MTU is the uplink MTU minus 64 (IPv6 + SRH).
pub const MTU_OVERHEAD_IP: u32 = 64;
/// MTU clamp for an Ethernet payload: 64 + the inner Ethernet header (14) + one VLAN tag (4).
pub const MTU_OVERHEAD_ETHERNET: u32 = 82;

/// What follows the SRH, by its next-header value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Payload {
    /// 143: an Ethernet frame (H.Encaps.L2, End.DX2; RFC 8986 §10.1).
    Ethernet = IpProtocol::Ethernet.raw(),
    /// 4: an IPv4 packet (H.Encaps, End.DX4).
    Ipv4 = IpProtocol::Ipv4.raw(),
    /// 41: an IPv6 packet (H.Encaps, End.DX6).
    Ipv6 = IpProtocol::Ipv6.raw(),
}

impl Payload {
    /// The IPv6 next-header value.
    #[must_use]
    pub const fn next_header(self) -> u8 {
        self as u8
    }

    /// The payload type of a next-header value, if it is one of the three.
    #[must_use]
    pub const fn from_next_header(nh: u8) -> Option<Self> {
        match IpProtocol::from_raw(nh) {
            IpProtocol::Ethernet => Some(Self::Ethernet),
            IpProtocol::Ipv4 => Some(Self::Ipv4),
            IpProtocol::Ipv6 => Some(Self::Ipv6),
            _ => None,
        }
    }

    /// The shortest payload that can be delivered: an Ethernet or IP header.
    const fn min_len(self) -> usize {
        match self {
            Self::Ethernet => ETH_HLEN,
            Self::Ipv4 => IPV4_HLEN,
            Self::Ipv6 => IPV6_HLEN,
        }
    }
}

/// The endpoint behaviours vwire's local SIDs have (RFC 8986 §4.4–4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Behavior {
    /// Decapsulate and cross-connect the Ethernet frame (ETHERNET payload connections).
    EndDx2,
    /// Decapsulate and cross-connect the IPv4 packet (IP payload connections).
    EndDx4,
    /// Decapsulate and cross-connect the IPv6 packet (IP payload connections).
    EndDx6,
}

impl Behavior {
    /// The only payload this behaviour accepts.
    #[must_use]
    pub const fn payload(self) -> Payload {
        match self {
            Self::EndDx2 => Payload::Ethernet,
            Self::EndDx4 => Payload::Ipv4,
            Self::EndDx6 => Payload::Ipv6,
        }
    }

    /// Checks a decapsulated packet against the behaviour of the SID it was sent to.
    ///
    /// # Errors
    /// [`Srv6Error::WrongPayload`] if, say, an IPv4 packet arrives at an End.DX2 SID.
    #[inline]
    pub fn check(self, d: &Decapped) -> Result<(), Srv6Error> {
        if d.payload == self.payload() {
            Ok(())
        } else {
            Err(Srv6Error::WrongPayload)
        }
    }
}

/// Why a packet was not encapsulated or decapsulated. Each variant is a drop reason: count it
/// under [`Srv6Error::reason`] (an index for a counter array is [`Srv6Error::index`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u8)]
pub enum Srv6Error {
    /// `offset + len` lies outside the buffer (a bug of the caller)
    #[error("packet bounds outside the buffer")]
    OutOfBounds,
    /// not enough headroom in front of the packet for the outer headers
    #[error("not enough headroom for the outer headers")]
    NoHeadroom,
    /// the outer IPv6 payload would exceed 65535 bytes
    #[error("packet too long to encapsulate")]
    TooLong,
    /// H.Encaps of a packet whose first nibble is neither 4 nor 6
    #[error("payload is not an IP packet")]
    PayloadNotIp,
    /// the packet ends inside a header
    #[error("truncated header")]
    Truncated,
    /// the outer EtherType is not IPv6
    #[error("outer frame is not IPv6")]
    NotIpv6,
    /// the IP version field is not 6
    #[error("bad IP version")]
    BadIpVersion,
    /// IPv6 payload length beyond the buffer
    #[error("bad IPv6 payload length")]
    BadIpLength,
    /// an IPv6 extension header other than one SRH
    #[error("unsupported IPv6 extension header")]
    ExtHeader,
    /// an IPv6 fragment (vwire does not reassemble)
    #[error("IPv6 fragment")]
    Fragment,
    /// a routing header that is not an SRH (routing type ≠ 4)
    #[error("routing header is not an SRH")]
    NotSrh,
    /// SRH length or last entry inconsistent, or the SRH overruns the packet
    #[error("malformed SRH")]
    BadSrh,
    /// segments left ≠ 0: the SID is not the last segment
    #[error("segments left is not 0")]
    SegmentsLeft,
    /// the payload's next header is not 4, 41 or 143
    #[error("payload is not Ethernet, IPv4 or IPv6")]
    UnknownPayload,
    /// the payload does not match the SID's behaviour
    #[error("payload does not match the SID's behaviour")]
    WrongPayload,
    /// the payload is shorter than its own header
    #[error("payload shorter than its header")]
    InnerTooShort,
}

impl Srv6Error {
    /// Every variant, in [`Srv6Error::index`] order.
    pub const ALL: [Self; 16] = [
        Self::OutOfBounds,
        Self::NoHeadroom,
        Self::TooLong,
        Self::PayloadNotIp,
        Self::Truncated,
        Self::NotIpv6,
        Self::BadIpVersion,
        Self::BadIpLength,
        Self::ExtHeader,
        Self::Fragment,
        Self::NotSrh,
        Self::BadSrh,
        Self::SegmentsLeft,
        Self::UnknownPayload,
        Self::WrongPayload,
        Self::InnerTooShort,
    ];

    /// A short stable name, for the `reason` label of a drop counter.
    #[must_use]
    pub const fn reason(self) -> &'static str {
        match self {
            Self::OutOfBounds => "srv6_out_of_bounds",
            Self::NoHeadroom => "srv6_no_headroom",
            Self::TooLong => "srv6_too_long",
            Self::PayloadNotIp => "srv6_payload_not_ip",
            Self::Truncated => "srv6_truncated",
            Self::NotIpv6 => "srv6_not_ipv6",
            Self::BadIpVersion => "srv6_bad_ip_version",
            Self::BadIpLength => "srv6_bad_ip_len",
            Self::ExtHeader => "srv6_ext_hdr",
            Self::Fragment => "srv6_fragment",
            Self::NotSrh => "srv6_not_srh",
            Self::BadSrh => "srv6_bad_srh",
            Self::SegmentsLeft => "srv6_segments_left",
            Self::UnknownPayload => "srv6_unknown_payload",
            Self::WrongPayload => "srv6_wrong_payload",
            Self::InnerTooShort => "srv6_inner_short",
        }
    }

    /// A dense index (`0..ALL.len()`) for a per-worker counter array.
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }
}
