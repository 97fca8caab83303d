//! H.Encaps and H.Encaps.L2 with a one-segment SRH: a per-policy template, built once on the
//! control thread and copied in front of each packet on the worker.
//!
//! Per packet only the first word of the IPv6 header (traffic class, flow label), its payload
//! length and the SRH's next header change; IPv6 has no header checksum, so that is all.

use std::net::Ipv6Addr;

use vwire_dataplane::wire::{EtherType, EthernetFrame, IpProtocol, Ipv6Packet, SrhPacket};

use super::{Payload, Srv6Error, ENCAP_LEN, ETH_HLEN, IPV6_HLEN, IPV6_SRH_LEN};
use crate::vxlan::flow;

/// Where the headers sit in the template: Ethernet, IPv6, then the SRH with one segment. The
/// fields inside each header are [`vwire_dataplane::wire`]'s.
const IP: usize = ETH_HLEN;
/// The SRH in the template.
const SRH: usize = IP + IPV6_HLEN;

/// What an SR policy's outer header is built from (NSM `SRV6` parameters: `src_host_ip`,
/// the peer's `dst_localsid`, `dst_hw_addr` or the next hop's MAC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncapParams {
    /// Outer source: this node's tunnel address (Linux's `ip sr tunsrc`).
    pub src: Ipv6Addr,
    /// The remote SID: outer destination and the only segment.
    pub sid: Ipv6Addr,
    /// The uplink's MAC: outer Ethernet source.
    pub local_mac: [u8; 6],
    /// The underlay next hop's MAC: outer Ethernet destination.
    pub next_hop_mac: [u8; 6],
    /// Outer hop limit (Linux uses the route's, 64 by default).
    pub hop_limit: u8,
}

/// The precomputed outer header of one SR policy (78 bytes). Immutable: publish it to workers
/// in the tunnel table and call [`EncapHeader::encap_l2`] or [`EncapHeader::encap_ip`] per
/// packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncapHeader {
    hdr: [u8; ENCAP_LEN],
}

impl EncapHeader {
    /// Builds the template of one policy.
    #[must_use]
    pub fn new(p: &EncapParams) -> Self {
        let mut h = [0u8; ENCAP_LEN];
        EthernetFrame::new_unchecked(&mut h[..IP]).write_header(
            p.next_hop_mac,
            p.local_mac,
            EtherType::Ipv6,
        );
        let mut ip = Ipv6Packet::new_unchecked(&mut h[IP..SRH]);
        ip.set_ver_tc_flow(0, 0);
        ip.set_next_header(IpProtocol::Ipv6Route);
        ip.set_hop_limit(p.hop_limit);
        ip.set_src_addr(p.src.octets());
        ip.set_dst_addr(p.sid.octets());
        // Hdr Ext Len (8 + 16) / 8 − 1 = 2. Segments left, last entry, flags and tag 0; the next
        // header is set per packet.
        let mut srh = SrhPacket::new_unchecked(&mut h[SRH..]);
        srh.write_fixed(IpProtocol::HopByHop, 1, 0);
        srh.set_segment(0, p.sid);
        Self { hdr: h }
    }

    /// H.Encaps.L2: encapsulates the Ethernet frame at `frame[offset..offset + len]` (next
    /// header 143), writing [`ENCAP_LEN`] bytes in front of it; returns the new `(offset, len)`.
    /// Traffic class 0, flow label from [`flow::hash_ethernet`]. On error the buffer is left
    /// untouched.
    ///
    /// # Errors
    /// [`Srv6Error::OutOfBounds`] if the packet does not lie inside `frame`,
    /// [`Srv6Error::NoHeadroom`] if `offset < 78`, [`Srv6Error::TooLong`] if the outer payload
    /// would exceed 65535 bytes.
    #[inline]
    pub fn encap_l2(
        &self,
        frame: &mut [u8],
        offset: usize,
        len: usize,
    ) -> Result<(usize, usize), Srv6Error> {
        let hash = flow::hash_ethernet(packet(frame, offset, len)?);
        self.write(frame, offset, len, Payload::Ethernet, 0, hash)
    }

    /// H.Encaps: encapsulates the IP packet at `frame[offset..offset + len]` (next header 4 or
    /// 41, from its version nibble). For a packet received inside an Ethernet frame, pass the
    /// offset after the Ethernet header: the old header becomes headroom. An IPv6 packet's traffic
    /// class is copied to the outer header (Linux does the same); the flow label comes from
    /// [`flow::hash_ip`]. On error the buffer is left untouched.
    ///
    /// # Errors
    /// As [`EncapHeader::encap_l2`], and [`Srv6Error::PayloadNotIp`] for an empty packet or a
    /// version other than 4 or 6.
    #[inline]
    pub fn encap_ip(
        &self,
        frame: &mut [u8],
        offset: usize,
        len: usize,
    ) -> Result<(usize, usize), Srv6Error> {
        let pkt = packet(frame, offset, len)?;
        let (payload, tc) = match pkt.first_chunk::<2>() {
            Some([b0, _]) if b0 >> 4 == 4 => (Payload::Ipv4, 0),
            Some([b0, b1]) if b0 >> 4 == 6 => (Payload::Ipv6, (b0 << 4) | (b1 >> 4)),
            _ => return Err(Srv6Error::PayloadNotIp),
        };
        let hash = flow::hash_ip(pkt);
        self.write(frame, offset, len, payload, tc, hash)
    }

    #[inline]
    fn write(
        &self,
        frame: &mut [u8],
        offset: usize,
        len: usize,
        payload: Payload,
        tc: u8,
        hash: u32,
    ) -> Result<(usize, usize), Srv6Error> {
        let end = offset.checked_add(len).ok_or(Srv6Error::OutOfBounds)?;
        if end > frame.len() {
            return Err(Srv6Error::OutOfBounds);
        }
        let start = offset.checked_sub(ENCAP_LEN).ok_or(Srv6Error::NoHeadroom)?;
        let payload_len = u16::try_from(len.saturating_add(IPV6_SRH_LEN - IPV6_HLEN))
            .map_err(|_| Srv6Error::TooLong)?;
        let out = frame
            .get_mut(start..offset)
            .and_then(<[u8]>::first_chunk_mut::<ENCAP_LEN>)
            .ok_or(Srv6Error::OutOfBounds)?;
        *out = self.hdr;
        // Constant ranges of a fixed-size array: the views' bounds checks fold away.
        let (ip_hdr, srh) = out[IP..].split_at_mut(IPV6_HLEN);
        let mut ip = Ipv6Packet::new_unchecked(ip_hdr);
        ip.set_ver_tc_flow(tc, hash);
        ip.set_payload_len(payload_len);
        SrhPacket::new_unchecked(srh).set_next_header(IpProtocol::from_raw(payload.next_header()));
        // write() checked start = offset − 78 and end = offset + len ≤ frame.len().
        Ok((start, len + ENCAP_LEN))
    }
}

/// The packet bytes `[offset, offset + len)`, if they lie inside the buffer.
#[inline]
fn packet(frame: &[u8], offset: usize, len: usize) -> Result<&[u8], Srv6Error> {
    offset
        .checked_add(len)
        .and_then(|end| frame.get(offset..end))
        .ok_or(Srv6Error::OutOfBounds)
}
