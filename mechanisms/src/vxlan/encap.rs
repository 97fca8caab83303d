//! Encapsulation: a per-tunnel outer header, built once on the control thread and copied in
//! front of each packet on the worker (VPP's "rewrite").
//!
//! Per packet, [`TunnelHeader::encap`] copies the 50- or 70-byte template into the headroom and
//! patches only what depends on the packet:
//! - the IPv4 total length and header checksum: the checksum of the template with a zero length
//!   is precomputed, so one one's complement addition finishes it (RFC 1624) instead of a
//!   20-byte sum;
//! - or the IPv6 payload length and flow label (from the flow hash: Linux's `flowlabel auto`;
//!   Linux's default is 0);
//! - the UDP source port (49152 + 14 bits of the flow hash of the inner frame) and length;
//! - the UDP checksum over IPv6 (RFC 8200 §8.1 requires one, and Linux drops zero-checksum VXLAN
//!   over IPv6 unless `udp6zerocsumrx`): the pseudo-header, UDP and VXLAN parts are precomputed,
//!   the inner frame is summed per packet. Over IPv4 the checksum is 0 (RFC 7348 §5: "It SHOULD
//!   be transmitted as zero") unless [`TunnelParams::udp_checksum_v4`] asks for one, as Linux's
//!   `udpcsum` (its default) does.
//!
//! IPv4 packets leave with DF set and ID 0. vwire never fragments and clamps the inner MTU so the
//! outer packet fits the uplink; DF makes a smaller path MTU visible (ICMP) instead of producing
//! fragments that a receiving vwire, which does not reassemble, would drop; and RFC 6864 §4.1
//! lets an atomic datagram carry any ID, so no per-packet counter is needed. (Linux sends DF
//! clear with a counter ID unless `df set` is configured.)

use std::net::{Ipv4Addr, Ipv6Addr};

use super::csum::ones_sum;
use super::{
    flow, ne16, ones_add, Vni, VxlanError, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HLEN, OVERHEAD_V4,
    OVERHEAD_V6, PROTO_UDP, SRC_PORT_MIN, VXLAN_FLAG_I,
};

/// The underlay addresses of a tunnel; the family decides the outer IP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Underlay {
    /// IPv4 underlay.
    V4 {
        /// This node's tunnel IP (NSM `src_ip` on the client side, `dst_ip` on the server side).
        local: Ipv4Addr,
        /// The peer's tunnel IP.
        remote: Ipv4Addr,
    },
    /// IPv6 underlay.
    V6 {
        /// This node's tunnel IP.
        local: Ipv6Addr,
        /// The peer's tunnel IP.
        remote: Ipv6Addr,
    },
}

/// What a tunnel's outer header is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelParams {
    /// Outer source and destination addresses.
    pub underlay: Underlay,
    /// The uplink's MAC: outer Ethernet source.
    pub local_mac: [u8; 6],
    /// The underlay next hop's MAC (from the kernel's neighbour table): outer Ethernet
    /// destination.
    pub next_hop_mac: [u8; 6],
    /// UDP destination port: the peer's VXLAN port ([`super::VXLAN_PORT`] by default).
    pub dst_port: u16,
    /// The VNI.
    pub vni: Vni,
    /// IPv4 TTL or IPv6 hop limit of the outer header (Linux uses the route's, 64 by default).
    pub ttl: u8,
    /// Compute the UDP checksum over an IPv4 underlay too (IPv6 always has one).
    pub udp_checksum_v4: bool,
}

/// Offsets inside the IPv4 template.
mod v4 {
    pub(super) const IP: usize = 14;
    pub(super) const TOTAL_LEN: usize = IP + 2;
    pub(super) const FLAGS: usize = IP + 6;
    pub(super) const TTL: usize = IP + 8;
    pub(super) const PROTO: usize = IP + 9;
    pub(super) const CSUM: usize = IP + 10;
    pub(super) const SRC: usize = IP + 12;
    pub(super) const DST: usize = IP + 16;
    pub(super) const UDP: usize = IP + 20;
}

/// Offsets inside the IPv6 template.
mod v6 {
    pub(super) const IP: usize = 14;
    pub(super) const PAYLOAD_LEN: usize = IP + 4;
    pub(super) const NEXT: usize = IP + 6;
    pub(super) const HOP_LIMIT: usize = IP + 7;
    pub(super) const SRC: usize = IP + 8;
    pub(super) const DST: usize = IP + 24;
    pub(super) const UDP: usize = IP + 40;
}

/// Offsets inside UDP + VXLAN, from the UDP header.
mod udp {
    pub(super) const SRC_PORT: usize = 0;
    pub(super) const DST_PORT: usize = 2;
    pub(super) const LEN: usize = 4;
    pub(super) const CSUM: usize = 6;
    pub(super) const VXLAN: usize = 8;
    pub(super) const VNI: usize = VXLAN + 4;
    /// UDP + VXLAN headers.
    pub(super) const HLEN: usize = 16;
}

/// The precomputed outer header of one tunnel. Cheap to copy around (≤ 80 bytes) and immutable:
/// publish it to workers in the tunnel table and call [`TunnelHeader::encap`] per packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelHeader {
    t: Template,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Template {
    V4 {
        hdr: [u8; OVERHEAD_V4],
        /// One's complement sum (native order) of the IPv4 header with length and checksum 0.
        ip_sum: u16,
        /// Sum of the UDP pseudo-header, UDP and VXLAN header without the two lengths and the
        /// source port; `None`: send checksum 0.
        udp_sum: Option<u16>,
    },
    V6 {
        hdr: [u8; OVERHEAD_V6],
        /// As for IPv4; always used.
        udp_sum: u16,
    },
}

#[inline]
fn put16<const N: usize>(h: &mut [u8; N], at: usize, v: [u8; 2]) {
    // `at` is a constant below N - 1 at every call site: the check folds away.
    if let Some(d) = h.get_mut(at..at + 2) {
        d.copy_from_slice(&v);
    }
}

/// Writes the Ethernet header and the UDP + VXLAN part shared by both families.
fn common<const N: usize>(h: &mut [u8; N], p: &TunnelParams, ethertype: u16, udp_at: usize) {
    if let Some(eth) = h.get_mut(..ETH_HLEN) {
        eth[..6].copy_from_slice(&p.next_hop_mac);
        eth[6..12].copy_from_slice(&p.local_mac);
        eth[12..].copy_from_slice(&ethertype.to_be_bytes());
    }
    put16(h, udp_at + udp::DST_PORT, p.dst_port.to_be_bytes());
    if let Some(vx) = h.get_mut(udp_at + udp::VXLAN..) {
        vx[0] = VXLAN_FLAG_I;
        vx[4..7].copy_from_slice(&p.vni.to_wire());
    }
}

/// The checksum-independent part of the UDP checksum: addresses, protocol, destination port and
/// the VXLAN header. The lengths and the source port are added per packet.
fn udp_partial(src: &[u8], dst: &[u8], dst_port: u16, vxlan: &[u8]) -> u16 {
    let mut s = ones_add(ones_sum(src), ones_sum(dst));
    s = ones_add(s, ne16(u16::from(PROTO_UDP)));
    s = ones_add(s, ne16(dst_port));
    ones_add(s, ones_sum(vxlan))
}

/// Finishes a UDP checksum; the result is in memory order, ready to store.
#[inline]
fn udp_finish(partial: u16, src_port: u16, udp_len: u16, payload: &[u8]) -> [u8; 2] {
    let mut s = ones_add(partial, ne16(src_port));
    // The length appears twice: in the pseudo-header and in the UDP header.
    s = ones_add(s, ne16(udp_len));
    s = ones_add(s, ne16(udp_len));
    s = ones_add(s, ones_sum(payload));
    let c = !s;
    //= rfc768: "If the computed checksum is zero, it is transmitted as all ones"
    if c == 0 { 0xffff_u16 } else { c }.to_ne_bytes()
}

/// The UDP source port for a flow hash: 49152 + the hash's low 14 bits.
#[must_use]
#[inline]
pub fn src_port(hash: u32) -> u16 {
    #[allow(clippy::cast_possible_truncation)] // masked to 14 bits
    let low = (hash & 0x3fff) as u16;
    SRC_PORT_MIN | low
}

/// Checks `offset + len` against the buffer and splits off `N` bytes of headroom in front.
#[inline]
fn split<const N: usize>(
    frame: &mut [u8],
    offset: usize,
    len: usize,
) -> Result<(&mut [u8; N], &mut [u8]), VxlanError> {
    let end = offset.checked_add(len).ok_or(VxlanError::OutOfBounds)?;
    if end > frame.len() {
        return Err(VxlanError::OutOfBounds);
    }
    let start = offset.checked_sub(N).ok_or(VxlanError::NoHeadroom)?;
    let pkt = frame.get_mut(start..end).ok_or(VxlanError::OutOfBounds)?;
    pkt.split_first_chunk_mut::<N>()
        .ok_or(VxlanError::OutOfBounds)
}

/// The packet bytes `[offset, offset + len)`, if they lie inside the buffer.
#[inline]
fn packet(frame: &[u8], offset: usize, len: usize) -> Result<&[u8], VxlanError> {
    offset
        .checked_add(len)
        .and_then(|end| frame.get(offset..end))
        .ok_or(VxlanError::OutOfBounds)
}

impl TunnelHeader {
    /// Builds the template of one tunnel.
    #[must_use]
    pub fn new(p: &TunnelParams) -> Self {
        let t = match p.underlay {
            Underlay::V4 { local, remote } => {
                let mut h = [0u8; OVERHEAD_V4];
                common(&mut h, p, ETHERTYPE_IPV4, v4::UDP);
                h[v4::IP] = 0x45;
                put16(&mut h, v4::FLAGS, 0x4000u16.to_be_bytes()); // DF, offset 0
                h[v4::TTL] = p.ttl;
                h[v4::PROTO] = PROTO_UDP;
                h[v4::SRC..v4::SRC + 4].copy_from_slice(&local.octets());
                h[v4::DST..v4::DST + 4].copy_from_slice(&remote.octets());
                let ip_sum = ones_sum(&h[v4::IP..v4::UDP]);
                let udp_sum = p.udp_checksum_v4.then(|| {
                    udp_partial(
                        &local.octets(),
                        &remote.octets(),
                        p.dst_port,
                        &h[v4::UDP + udp::VXLAN..],
                    )
                });
                Template::V4 {
                    hdr: h,
                    ip_sum,
                    udp_sum,
                }
            }
            Underlay::V6 { local, remote } => {
                let mut h = [0u8; OVERHEAD_V6];
                common(&mut h, p, ETHERTYPE_IPV6, v6::UDP);
                h[v6::IP] = 0x60;
                h[v6::NEXT] = PROTO_UDP;
                h[v6::HOP_LIMIT] = p.ttl;
                h[v6::SRC..v6::SRC + 16].copy_from_slice(&local.octets());
                h[v6::DST..v6::DST + 16].copy_from_slice(&remote.octets());
                let udp_sum = udp_partial(
                    &local.octets(),
                    &remote.octets(),
                    p.dst_port,
                    &h[v6::UDP + udp::VXLAN..],
                );
                Template::V6 { hdr: h, udp_sum }
            }
        };
        Self { t }
    }

    /// Bytes [`TunnelHeader::encap`] prepends: [`OVERHEAD_V4`] or [`OVERHEAD_V6`].
    #[must_use]
    pub const fn overhead(&self) -> usize {
        match self.t {
            Template::V4 { .. } => OVERHEAD_V4,
            Template::V6 { .. } => OVERHEAD_V6,
        }
    }

    /// The VNI this tunnel sends.
    #[must_use]
    pub fn vni(&self) -> Vni {
        let (h, at): (&[u8], usize) = match &self.t {
            Template::V4 { hdr, .. } => (hdr, v4::UDP + udp::VNI),
            Template::V6 { hdr, .. } => (hdr, v6::UDP + udp::VNI),
        };
        match h.get(at..).and_then(<[u8]>::first_chunk::<3>) {
            Some(b) => Vni::from_wire(*b),
            None => Vni(0), // unreachable: the templates are longer
        }
    }

    /// Encapsulates the Ethernet frame at `frame[offset..offset + len]`: writes the outer headers
    /// into the `overhead()` bytes in front of it and returns the new `(offset, len)`.
    ///
    /// The UDP source port (and IPv6 flow label) come from [`flow::hash_ethernet`] of the frame.
    /// On error the buffer is left untouched.
    ///
    /// # Errors
    /// [`VxlanError::OutOfBounds`] if the packet does not lie inside `frame`,
    /// [`VxlanError::NoHeadroom`] if `offset < overhead()`, [`VxlanError::TooLong`] if the outer
    /// IP packet would exceed 65535 bytes.
    #[inline]
    pub fn encap(
        &self,
        frame: &mut [u8],
        offset: usize,
        len: usize,
    ) -> Result<(usize, usize), VxlanError> {
        let hash = flow::hash_ethernet(packet(frame, offset, len)?);
        self.encap_with_hash(frame, offset, len, hash)
    }

    /// [`TunnelHeader::encap`] with a flow hash the caller already has (e.g. from the NIC's RSS
    /// or a previous packet of the same flow).
    ///
    /// # Errors
    /// As [`TunnelHeader::encap`].
    #[inline]
    pub fn encap_with_hash(
        &self,
        frame: &mut [u8],
        offset: usize,
        len: usize,
        hash: u32,
    ) -> Result<(usize, usize), VxlanError> {
        let sport = src_port(hash);
        match &self.t {
            Template::V4 {
                hdr,
                ip_sum,
                udp_sum,
            } => {
                let (out, inner) = split::<OVERHEAD_V4>(frame, offset, len)?;
                // 20 + 8 + 8 + len; `len` fits the buffer, so the addition cannot overflow.
                let ip_total = u16::try_from(len.saturating_add(OVERHEAD_V4 - ETH_HLEN))
                    .map_err(|_| VxlanError::TooLong)?;
                let udp_len = ip_total.saturating_sub(20);
                *out = *hdr;
                put16(out, v4::TOTAL_LEN, ip_total.to_be_bytes());
                put16(
                    out,
                    v4::CSUM,
                    (!ones_add(*ip_sum, ne16(ip_total))).to_ne_bytes(),
                );
                put16(out, v4::UDP + udp::SRC_PORT, sport.to_be_bytes());
                put16(out, v4::UDP + udp::LEN, udp_len.to_be_bytes());
                if let Some(partial) = udp_sum {
                    let c = udp_finish(*partial, sport, udp_len, inner);
                    put16(out, v4::UDP + udp::CSUM, c);
                }
            }
            Template::V6 { hdr, udp_sum } => {
                let (out, inner) = split::<OVERHEAD_V6>(frame, offset, len)?;
                let udp_len = u16::try_from(len.saturating_add(udp::HLEN))
                    .map_err(|_| VxlanError::TooLong)?;
                *out = *hdr;
                // Version 6, traffic class 0, 20 bits of flow label.
                let vtf = (6u32 << 28) | (hash & 0x000f_ffff);
                if let Some(d) = out.get_mut(v6::IP..v6::IP + 4) {
                    d.copy_from_slice(&vtf.to_be_bytes());
                }
                put16(out, v6::PAYLOAD_LEN, udp_len.to_be_bytes());
                put16(out, v6::UDP + udp::SRC_PORT, sport.to_be_bytes());
                put16(out, v6::UDP + udp::LEN, udp_len.to_be_bytes());
                let c = udp_finish(*udp_sum, sport, udp_len, inner);
                put16(out, v6::UDP + udp::CSUM, c);
            }
        }
        let n = self.overhead();
        // split() proved offset ≥ n and offset + len ≤ frame.len().
        Ok((offset - n, len + n))
    }

    /// Encapsulates the IP packet at `frame[offset..offset + len]` for an `IP` payload
    /// connection: first an inner Ethernet header with the fixed MAC pair
    /// ([`super::IP_PAYLOAD_PEER_MAC`] ← [`super::IP_PAYLOAD_LOCAL_MAC`], EtherType from the IP
    /// version nibble), then the outer headers. Needs `overhead() + 14` bytes of headroom.
    /// The flow hash is [`flow::hash_ip`] of the packet.
    ///
    /// # Errors
    /// As [`TunnelHeader::encap`], and [`VxlanError::PayloadNotIp`] if the packet is empty or
    /// its version nibble is neither 4 nor 6.
    #[inline]
    pub fn encap_ip(
        &self,
        frame: &mut [u8],
        offset: usize,
        len: usize,
    ) -> Result<(usize, usize), VxlanError> {
        let pkt = packet(frame, offset, len)?;
        let ethertype = match pkt.first().map(|b| b >> 4) {
            Some(4) => ETHERTYPE_IPV4,
            Some(6) => ETHERTYPE_IPV6,
            _ => return Err(VxlanError::PayloadNotIp),
        };
        let hash = flow::hash_ip(pkt);
        let eth_at = offset
            .checked_sub(ETH_HLEN)
            .filter(|&o| o >= self.overhead())
            .ok_or(VxlanError::NoHeadroom)?;
        // Checks the bounds and the IP length before anything is written.
        let eth_len = len + ETH_HLEN; // cannot overflow: offset + len fits and offset ≥ 14
        if eth_len.saturating_add(self.overhead() - ETH_HLEN) > usize::from(u16::MAX) {
            return Err(VxlanError::TooLong);
        }
        if let Some(eth) = frame
            .get_mut(eth_at..offset)
            .and_then(<[u8]>::first_chunk_mut::<ETH_HLEN>)
        {
            eth[..6].copy_from_slice(&super::IP_PAYLOAD_PEER_MAC);
            eth[6..12].copy_from_slice(&super::IP_PAYLOAD_LOCAL_MAC);
            eth[12..].copy_from_slice(&ethertype.to_be_bytes());
        }
        self.encap_with_hash(frame, eth_at, eth_len, hash)
    }
}
