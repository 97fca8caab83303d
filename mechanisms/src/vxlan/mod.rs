//! VXLAN (RFC 7348): the packet-format core of the REMOTE `VXLAN` mechanism. No devices, no
//! sockets, no allocation, no logging: the functions here run once per packet on the worker.
//!
//! Layout:
//! - [`encap`]: [`TunnelHeader`], the precomputed outer header of one tunnel, copied into the
//!   buffer headroom by [`TunnelHeader::encap`] (Ethernet payload) and
//!   [`TunnelHeader::encap_ip`] (IP payload).
//! - [`decap`](mod@decap): [`decap()`], the receive-side parser, and [`strip_inner_ethernet`]
//!   for IP payloads.
//! - [`flow`]: the cheap flow hash that picks the UDP source port (shared with `srv6`, which
//!   puts it in the IPv6 flow label).
//! - The dataplane stage that uses this core lives with the other tunnel drivers:
//!   [`crate::tunnel::VxlanEncap`] (a tunnel's encapsulation, and the mapping of [`VxlanError`]
//!   to the dataplane's drop reasons) and the uplink demultiplexer in [`crate::tunnel`].
//!
//! # Wire layout
//!
//! What [`TunnelHeader::encap`] writes in front of the inner Ethernet frame (offsets from the
//! first byte of the outer frame; IPv6 underlay in brackets):
//!
//! ```text
//!  0  Ethernet  dst MAC (the underlay next hop), src MAC (the uplink), EtherType 0x0800 [0x86dd]
//! 14  IPv4      20 bytes, no options, DF set, ID 0, TTL from the template, protocol 17
//!    [IPv6      40 bytes, traffic class 0, flow label from the flow hash, hop limit from the
//!               template, next header 17]
//! 34 [54] UDP   src port 49152 + flow hash (14 bits), dst port (4789 by default), length,
//!               checksum (IPv6: always computed; IPv4: 0 unless the template asks for one)
//! 42 [62] VXLAN flags 0x08 (I), 3 reserved bytes, VNI (24 bits), 1 reserved byte
//! 50 [70] the inner Ethernet frame
//! ```
//!
//! The outer headers are [`OVERHEAD_V4`] (50) or [`OVERHEAD_V6`] (70) bytes; the buffer needs
//! that much headroom in front of the packet (vwire's [`HEADROOM`] is 256), plus 14 for an IP
//! payload.
//!
//! # IP payload: carried inside an Ethernet header
//!
//! A VXLAN tunnel carries Ethernet frames only, and the far end may be a Linux `vxlan` device,
//! which is an L2 device. For an `IP` payload connection [`TunnelHeader::encap_ip`] therefore puts
//! an inner Ethernet header in front of the IP packet, with fixed locally administered MACs
//! (the NSM `VXLAN` parameters carry no MACs, so nothing better is known):
//! dst [`IP_PAYLOAD_PEER_MAC`] `02:76:77:00:00:02`, src [`IP_PAYLOAD_LOCAL_MAC`]
//! `02:76:77:00:00:01`, EtherType 0x0800 or 0x86dd from the IP version. Every vwire uses the same
//! pair, so two vwire ends need nothing more: the receiving vwire calls
//! [`strip_inner_ethernet`], which checks only the EtherType (not the MACs) and hands on the IP
//! packet. With a kernel peer, the kernel's vxlan device must accept and address those frames:
//!
//! ```text
//! ip link set vx0 address 02:76:77:00:00:02        # frames from vwire are addressed to it
//! ip neigh add <IP behind vwire> lladdr 02:76:77:00:00:01 dev vx0 nud permanent
//! ```
//!
//! (without the static neighbour the kernel would send ARP or ND over the tunnel, which vwire
//! drops as [`VxlanError::InnerNotIp`]).
//!
//! # Receive checks
//!
//! [`decap()`] parses Ethernet (with up to two VLAN tags, the rule of [`vwire_dataplane::wire`]),
//! then IPv4 or IPv6, UDP and the
//! VXLAN header, and refuses what it cannot carry with a [`VxlanError`], each variant a drop
//! reason to count. What it checks, and why:
//! - IPv4: version, IHL ≥ 5, total length inside the buffer, not a fragment (vwire does not
//!   reassemble: the MTU clamp keeps tunnel packets whole), protocol 17, and the **header
//!   checksum**. Linux checks it in its IP layer; AF_XDP hands vwire the raw packet, checking 20
//!   bytes costs a few ns, and a corrupt header could otherwise misroute the inner frame.
//! - IPv6: version, payload length inside the buffer, next header 17 directly; a packet with
//!   extension headers is refused ([`VxlanError::Ipv6ExtHeader`]; no VXLAN sender adds any).
//! - UDP: the destination port, and a length that covers UDP + VXLAN + an inner Ethernet header
//!   and lies inside the IP packet (bytes after it are padding and are dropped, as Linux trims).
//!   The UDP **checksum is not verified**: a kernel sender behind a veth may leave it partial
//!   (`testbed.md`), and the inner frame's own checksums protect its payload end to end.
//! - VXLAN: the I flag must be set; the reserved bits are ignored (RFC 7348 §5: "Reserved
//!   fields ... MUST be ignored on receipt"). Linux drops frames with unknown flags; vwire is
//!   more lenient, as the RFC asks.
//! - The outer destination address is **not** checked: vwire's XDP program steers only packets
//!   to the tunnel IP on the VXLAN port. Demultiplex on ([`Decapped::remote`], [`Decapped::vni`]).
//!
//! # Cost
//!
//! Measured at burst 32 on the testbed VM (`perf/reports/tunnel.md`): encapsulation about
//! 20 ns/packet (IPv6, or IPv4 with a UDP checksum, add the payload sum: about 70 ns at 1500
//! bytes), decapsulation 8–12 ns/packet.
//!
//! # Panic freedom
//!
//! Every function here takes `(frame, offset, len)` from the caller and bytes from the network;
//! all of them return an error for any combination that does not fit (offset past the end, a
//! length overflowing the buffer, truncated headers) and never panic, index out of bounds or
//! overflow. Property tests (below) and the fuzz targets `vxlan_decap` check it.
//!
//! [`HEADROOM`]: vwire_dataplane::buffer::HEADROOM

pub mod decap;
pub mod encap;
pub mod flow;
#[cfg(test)]
mod tests;

pub use decap::{decap, strip_inner_ethernet, Decapped};
pub use encap::{TunnelHeader, TunnelParams, Underlay};

/// The IANA VXLAN port (RFC 7348 §5), NSM's default `dst_port`.
pub use vwire_dataplane::wire::vxlan::PORT as VXLAN_PORT;
/// Header lengths: Ethernet without a tag, IPv4 without options, IPv6 fixed header, UDP, VXLAN.
pub use vwire_dataplane::wire::{ETH_HLEN, IPV4_HLEN, IPV6_HLEN, UDP_HLEN, VXLAN_HLEN};

/// Bytes [`TunnelHeader::encap`] prepends over an IPv4 underlay: 14 + 20 + 8 + 8.
pub const OVERHEAD_V4: usize = ETH_HLEN + IPV4_HLEN + UDP_HLEN + VXLAN_HLEN;
/// Bytes [`TunnelHeader::encap`] prepends over an IPv6 underlay: 14 + 40 + 8 + 8.
pub const OVERHEAD_V6: usize = ETH_HLEN + IPV6_HLEN + UDP_HLEN + VXLAN_HLEN;

/// MTU clamp over an IPv4 underlay: the inner IP MTU is the uplink MTU minus this. It counts the
/// outer IPv4 + UDP + VXLAN headers (36) and the inner Ethernet header with room for one VLAN tag
/// (18), the value forwarder-vpp uses (`nsm-forwarder.md` §5: "54 (20 IP + 8 UDP + 8 VXLAN + 14
/// Eth + 4 VLAN)"). The outer Ethernet header is not part of the uplink MTU.
pub const MTU_OVERHEAD_V4: u32 = 54;
/// MTU clamp over an IPv6 underlay: 40 + 8 + 8 + 14 + 4, forwarder-vpp's 74.
pub const MTU_OVERHEAD_V6: u32 = 74;

/// Lowest UDP source port vwire uses. RFC 7348 §5: "the source port number [should be] within
/// the dynamic/private port range 49152-65535"; 14 bits of the flow hash pick one of the 16384.
/// (Linux picks from `ip_local_port_range`, 32768–60999 by default; any port is fine for a
/// receiver.)
pub const SRC_PORT_MIN: u16 = 49152;

/// Inner source MAC for IP payloads (see the module docs): locally administered, "vw" 00 00 01.
pub const IP_PAYLOAD_LOCAL_MAC: [u8; 6] = [0x02, 0x76, 0x77, 0x00, 0x00, 0x01];
/// Inner destination MAC for IP payloads: the MAC a kernel peer's vxlan device must carry.
pub const IP_PAYLOAD_PEER_MAC: [u8; 6] = [0x02, 0x76, 0x77, 0x00, 0x00, 0x02];

/// A 24-bit VXLAN network identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vni(u32);

impl Vni {
    /// Largest VNI: 2^24 − 1.
    pub const MAX: u32 = (1 << 24) - 1;

    /// A VNI, if `v` fits in 24 bits.
    #[must_use]
    pub const fn new(v: u32) -> Option<Self> {
        if v <= Self::MAX {
            Some(Self(v))
        } else {
            None
        }
    }

    /// The value.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The three bytes of the VXLAN header's VNI field, network order.
    const fn to_wire(self) -> [u8; 3] {
        let [_, a, b, c] = self.0.to_be_bytes();
        [a, b, c]
    }

    const fn from_wire(b: [u8; 3]) -> Self {
        Self(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }
}

impl std::fmt::Display for Vni {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a packet was not encapsulated or decapsulated. Each variant is a drop reason: count it
/// under [`VxlanError::reason`] (an index for a counter array is [`VxlanError::index`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u8)]
pub enum VxlanError {
    /// `offset + len` lies outside the buffer (a bug of the caller)
    #[error("packet bounds outside the buffer")]
    OutOfBounds,
    /// not enough headroom in front of the packet for the outer headers
    #[error("not enough headroom for the outer headers")]
    NoHeadroom,
    /// the encapsulated packet would exceed 65535 bytes of IP
    #[error("packet too long to encapsulate")]
    TooLong,
    /// an IP payload whose first nibble is neither 4 nor 6
    #[error("payload is not an IP packet")]
    PayloadNotIp,
    /// the packet ends inside a header
    #[error("truncated header")]
    Truncated,
    /// the outer EtherType is neither IPv4 nor IPv6
    #[error("outer frame is not IP")]
    NotIp,
    /// the IP version field disagrees with the EtherType
    #[error("bad IP version")]
    BadIpVersion,
    /// IPv4 header length below 20 bytes
    #[error("bad IPv4 header length")]
    BadIpHeaderLen,
    /// IP total or payload length below the header or beyond the buffer
    #[error("bad IP length")]
    BadIpLength,
    /// IPv4 header checksum wrong
    #[error("bad IPv4 header checksum")]
    BadIpChecksum,
    /// an IP fragment (vwire does not reassemble)
    #[error("IP fragment")]
    Fragment,
    /// IPv6 extension headers in front of UDP
    #[error("IPv6 extension header")]
    Ipv6ExtHeader,
    /// the IP protocol is not UDP
    #[error("not UDP")]
    NotUdp,
    /// the UDP destination port is not the VXLAN port
    #[error("not the VXLAN port")]
    NotVxlanPort,
    /// UDP length too short for VXLAN or beyond the IP packet
    #[error("bad UDP length")]
    BadUdpLength,
    /// VXLAN header without the I flag
    #[error("VXLAN I flag not set")]
    NoVniFlag,
    /// the inner frame is shorter than an Ethernet header
    #[error("inner frame shorter than an Ethernet header")]
    InnerTooShort,
    /// an IP-payload tunnel received an inner frame that is not IPv4 or IPv6 (ARP, ND over L2)
    #[error("inner frame is not IP")]
    InnerNotIp,
}

impl VxlanError {
    /// Every variant, in [`VxlanError::index`] order.
    pub const ALL: [Self; 18] = [
        Self::OutOfBounds,
        Self::NoHeadroom,
        Self::TooLong,
        Self::PayloadNotIp,
        Self::Truncated,
        Self::NotIp,
        Self::BadIpVersion,
        Self::BadIpHeaderLen,
        Self::BadIpLength,
        Self::BadIpChecksum,
        Self::Fragment,
        Self::Ipv6ExtHeader,
        Self::NotUdp,
        Self::NotVxlanPort,
        Self::BadUdpLength,
        Self::NoVniFlag,
        Self::InnerTooShort,
        Self::InnerNotIp,
    ];

    /// A short stable name, for the `reason` label of a drop counter.
    #[must_use]
    pub const fn reason(self) -> &'static str {
        match self {
            Self::OutOfBounds => "vxlan_out_of_bounds",
            Self::NoHeadroom => "vxlan_no_headroom",
            Self::TooLong => "vxlan_too_long",
            Self::PayloadNotIp => "vxlan_payload_not_ip",
            Self::Truncated => "vxlan_truncated",
            Self::NotIp => "vxlan_not_ip",
            Self::BadIpVersion => "vxlan_bad_ip_version",
            Self::BadIpHeaderLen => "vxlan_bad_ihl",
            Self::BadIpLength => "vxlan_bad_ip_len",
            Self::BadIpChecksum => "vxlan_bad_ip_csum",
            Self::Fragment => "vxlan_fragment",
            Self::Ipv6ExtHeader => "vxlan_ipv6_ext_hdr",
            Self::NotUdp => "vxlan_not_udp",
            Self::NotVxlanPort => "vxlan_not_vxlan_port",
            Self::BadUdpLength => "vxlan_bad_udp_len",
            Self::NoVniFlag => "vxlan_no_i_flag",
            Self::InnerTooShort => "vxlan_inner_short",
            Self::InnerNotIp => "vxlan_inner_not_ip",
        }
    }

    /// A dense index (`0..ALL.len()`) for a per-worker counter array.
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }
}
