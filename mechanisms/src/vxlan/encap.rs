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

use vwire_dataplane::wire::checksum::{self as csum, add, ne16};
use vwire_dataplane::wire::{
    ipv4, EtherType, EthernetFrame, IpProtocol, Ipv4Packet, Ipv6Packet, UdpPacket, VxlanHeader,
};

use super::{
    flow, Vni, VxlanError, ETH_HLEN, IPV4_HLEN, IPV6_HLEN, OVERHEAD_V4, OVERHEAD_V6, SRC_PORT_MIN,
    UDP_HLEN, VXLAN_HLEN,
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

/// Where the outer headers sit in a template: Ethernet, IP, then UDP + VXLAN ([`UDP_VXLAN`]
/// bytes). The fields inside each header are [`vwire_dataplane::wire`]'s.
const IP: usize = ETH_HLEN;
/// UDP in the IPv4 template.
const UDP_V4: usize = IP + IPV4_HLEN;
/// UDP in the IPv6 template.
const UDP_V6: usize = IP + IPV6_HLEN;
/// UDP + VXLAN headers.
const UDP_VXLAN: usize = UDP_HLEN + VXLAN_HLEN;

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

/// Writes the Ethernet header and the UDP + VXLAN part shared by both families. `udp_at` is
/// [`UDP_V4`] or [`UDP_V6`], both at least 16 bytes before the end of `h`.
fn common<const N: usize>(h: &mut [u8; N], p: &TunnelParams, ethertype: EtherType, udp_at: usize) {
    EthernetFrame::new_unchecked(&mut h[..ETH_HLEN]).write_header(
        p.next_hop_mac,
        p.local_mac,
        ethertype,
    );
    let (udp, vxlan) = h[udp_at..udp_at + UDP_VXLAN].split_at_mut(UDP_HLEN);
    UdpPacket::new_unchecked(udp).set_dst_port(p.dst_port);
    VxlanHeader::new_unchecked(vxlan).write(p.vni.to_wire());
}

/// The checksum-independent part of the UDP checksum: addresses, protocol, destination port and
/// the VXLAN header. The lengths and the source port are added per packet.
fn udp_partial(src: &[u8], dst: &[u8], dst_port: u16, vxlan: &[u8]) -> u16 {
    let mut s = add(csum::sum(src), csum::sum(dst));
    s = add(s, ne16(u16::from(IpProtocol::Udp.raw())));
    s = add(s, ne16(dst_port));
    add(s, csum::sum(vxlan))
}

/// Finishes a UDP checksum; the result is in memory order, ready to store.
#[inline]
fn udp_finish(partial: u16, src_port: u16, udp_len: u16, payload: &[u8]) -> [u8; 2] {
    let mut s = add(partial, ne16(src_port));
    // The length appears twice: in the pseudo-header and in the UDP header.
    s = add(s, ne16(udp_len));
    s = add(s, ne16(udp_len));
    s = add(s, csum::sum(payload));
    csum::finish(s, true)
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
                common(&mut h, p, EtherType::Ipv4, UDP_V4);
                let mut ip = Ipv4Packet::new_unchecked(&mut h[IP..UDP_V4]);
                ip.set_version_and_header_len(IPV4_HLEN);
                ip.set_flags_and_offset(ipv4::FLAG_DF); // offset 0
                ip.set_ttl(p.ttl);
                ip.set_protocol(IpProtocol::Udp);
                ip.set_src_addr(local.octets());
                ip.set_dst_addr(remote.octets());
                let ip_sum = csum::sum(&h[IP..UDP_V4]);
                let udp_sum = p.udp_checksum_v4.then(|| {
                    udp_partial(
                        &local.octets(),
                        &remote.octets(),
                        p.dst_port,
                        &h[UDP_V4 + UDP_HLEN..],
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
                common(&mut h, p, EtherType::Ipv6, UDP_V6);
                let mut ip = Ipv6Packet::new_unchecked(&mut h[IP..UDP_V6]);
                ip.set_ver_tc_flow(0, 0);
                ip.set_next_header(IpProtocol::Udp);
                ip.set_hop_limit(p.ttl);
                ip.set_src_addr(local.octets());
                ip.set_dst_addr(remote.octets());
                let udp_sum = udp_partial(
                    &local.octets(),
                    &remote.octets(),
                    p.dst_port,
                    &h[UDP_V6 + UDP_HLEN..],
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
        let vxlan: &[u8] = match &self.t {
            Template::V4 { hdr, .. } => &hdr[UDP_V4 + UDP_HLEN..],
            Template::V6 { hdr, .. } => &hdr[UDP_V6 + UDP_HLEN..],
        };
        match VxlanHeader::new_checked(vxlan) {
            Ok(v) => Vni::from_wire(v.vni_bytes()),
            Err(_) => Vni(0), // unreachable: the templates end with the 8-byte VXLAN header
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
                // Constant ranges of a fixed-size array: the views' bounds checks fold away.
                let (ip_hdr, udp_hdr) = out[IP..UDP_V4 + UDP_HLEN].split_at_mut(IPV4_HLEN);
                let mut ip = Ipv4Packet::new_unchecked(ip_hdr);
                ip.set_total_len(ip_total);
                ip.set_checksum_bytes((!add(*ip_sum, ne16(ip_total))).to_ne_bytes());
                let mut udp = UdpPacket::new_unchecked(udp_hdr);
                udp.set_src_port(sport);
                udp.set_len(udp_len);
                if let Some(partial) = udp_sum {
                    udp.set_checksum_bytes(udp_finish(*partial, sport, udp_len, inner));
                }
            }
            Template::V6 { hdr, udp_sum } => {
                let (out, inner) = split::<OVERHEAD_V6>(frame, offset, len)?;
                let udp_len = u16::try_from(len.saturating_add(UDP_VXLAN))
                    .map_err(|_| VxlanError::TooLong)?;
                *out = *hdr;
                let (ip_hdr, udp_hdr) = out[IP..UDP_V6 + UDP_HLEN].split_at_mut(IPV6_HLEN);
                let mut ip = Ipv6Packet::new_unchecked(ip_hdr);
                // Traffic class 0, 20 bits of flow label.
                ip.set_ver_tc_flow(0, hash);
                ip.set_payload_len(udp_len);
                let mut udp = UdpPacket::new_unchecked(udp_hdr);
                udp.set_src_port(sport);
                udp.set_len(udp_len);
                udp.set_checksum_bytes(udp_finish(*udp_sum, sport, udp_len, inner));
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
        let ethertype = pkt
            .first()
            .and_then(|b| EtherType::of_ip_version(b >> 4))
            .ok_or(VxlanError::PayloadNotIp)?;
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
            EthernetFrame::new_unchecked(&mut eth[..]).write_header(
                super::IP_PAYLOAD_PEER_MAC,
                super::IP_PAYLOAD_LOCAL_MAC,
                ethertype,
            );
        }
        self.encap_with_hash(frame, eth_at, eth_len, hash)
    }
}
