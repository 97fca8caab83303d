//! Decapsulation: from a received outer frame to the inner Ethernet frame, its VNI and the peer
//! that sent it. Read-only: the inner frame stays where it is, so the caller only moves its
//! `(offset, len)`. What is checked is listed in the module docs of [`super`].

use std::net::IpAddr;

use vwire_dataplane::wire::{
    self, ethernet, EtherType, IpProtocol, Ipv4Packet, Ipv6Packet, UdpPacket, VxlanHeader,
};

use super::{Vni, VxlanError, ETH_HLEN, UDP_HLEN, VXLAN_HLEN};

/// What [`decap`] learned from one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decapped {
    /// The outer source address: the peer's tunnel IP.
    pub remote: IpAddr,
    /// The VNI. With [`Decapped::remote`], the key that selects the connection.
    pub vni: Vni,
    /// Where the inner Ethernet frame starts in the buffer.
    pub offset: usize,
    /// The inner frame's length: the UDP length minus UDP and VXLAN headers (at least 14).
    pub len: usize,
}

/// Parses the VXLAN packet at `frame[offset..offset + len]` whose outer frame starts with an
/// Ethernet header, and returns where its inner Ethernet frame is. `vxlan_port` is the UDP
/// destination port this node listens on ([`super::VXLAN_PORT`] by default).
///
/// # Errors
/// A [`VxlanError`] naming the first check that failed; [`VxlanError::OutOfBounds`] if the
/// packet does not lie inside `frame`.
#[inline]
pub fn decap(
    frame: &[u8],
    offset: usize,
    len: usize,
    vxlan_port: u16,
) -> Result<Decapped, VxlanError> {
    let pkt = offset
        .checked_add(len)
        .and_then(|end| frame.get(offset..end))
        .ok_or(VxlanError::OutOfBounds)?;

    let l3 = ethernet::walk(pkt).map_err(|_| VxlanError::Truncated)?;
    let ip_pkt = pkt.get(l3.offset..).ok_or(VxlanError::Truncated)?;

    // `l4` and `l4_end` are offsets into `ip_pkt`.
    let (remote, l4, l4_end) = match l3.ethertype {
        EtherType::Ipv4 => {
            let ip = Ipv4Packet::new_checked(ip_pkt).map_err(ip_error)?;
            // A valid header sums to 0xffff (negative zero) in either byte order.
            if !ip.verify_checksum() {
                return Err(VxlanError::BadIpChecksum);
            }
            if ip.is_fragment() {
                return Err(VxlanError::Fragment); // MF or a fragment offset
            }
            if ip.protocol() != IpProtocol::Udp {
                return Err(VxlanError::NotUdp);
            }
            (IpAddr::V4(ip.src_addr()), ip.header_len(), ip.total_len())
        }
        EtherType::Ipv6 => {
            let ip = Ipv6Packet::new_checked(ip_pkt).map_err(ip_error)?;
            match ip.next_header() {
                IpProtocol::Udp => {}
                IpProtocol::Ipv6Frag => return Err(VxlanError::Fragment),
                nh if nh.is_ipv6_extension() => return Err(VxlanError::Ipv6ExtHeader),
                _ => return Err(VxlanError::NotUdp),
            }
            (IpAddr::V6(ip.src_addr()), wire::IPV6_HLEN, ip.total_len())
        }
        _ => return Err(VxlanError::NotIp),
    };

    // UDP + VXLAN, inside the IP packet. The port is checked before the length, so traffic to
    // another port counts as such whatever its length.
    let l4_pkt = ip_pkt.get(l4..l4_end).ok_or(VxlanError::Truncated)?;
    let hdrs = l4_pkt
        .first_chunk::<{ UDP_HLEN + VXLAN_HLEN }>()
        .ok_or(VxlanError::Truncated)?;
    let (udp_hdr, vxlan_hdr) = hdrs.split_at(UDP_HLEN);
    // Both views are over slices of their exact header length, from a 16-byte array.
    let udp = UdpPacket::new_unchecked(udp_hdr);
    if udp.dst_port() != vxlan_port {
        return Err(VxlanError::NotVxlanPort);
    }
    let udp_len = udp.len();
    if udp_len < UDP_HLEN + VXLAN_HLEN || udp_len > l4_pkt.len() {
        return Err(VxlanError::BadUdpLength);
    }
    //= rfc7348#section-5: "Flags (8 bits): where the I flag MUST be set to 1 for a valid VXLAN
    //= Network ID (VNI). The other 7 bits (designated "R") are reserved fields and MUST be set
    //= to zero on transmission and ignored on receipt."
    let vx = VxlanHeader::new_unchecked(vxlan_hdr);
    if !vx.has_vni() {
        return Err(VxlanError::NoVniFlag);
    }
    let vni = Vni::from_wire(vx.vni_bytes());
    let inner_len = udp_len - (UDP_HLEN + VXLAN_HLEN);
    if inner_len < ETH_HLEN {
        return Err(VxlanError::InnerTooShort);
    }
    // Every term is bounded by `len`, and offset + len did not overflow.
    let inner_offset = offset + l3.offset + l4 + UDP_HLEN + VXLAN_HLEN;
    Ok(Decapped {
        remote,
        vni,
        offset: inner_offset,
        len: inner_len,
    })
}

/// For an `IP` payload connection: removes the inner Ethernet header from the frame
/// `frame[offset..offset + len]` that [`decap`] returned and gives the IP packet's
/// `(offset, len)`. Only the EtherType is checked (IPv4 or IPv6, untagged); the MACs are those of
/// the convention in the module docs and are not checked. Trailing bytes (Ethernet padding) are
/// kept: the receiving IP layer trims to the IP length.
///
/// # Errors
/// [`VxlanError::OutOfBounds`], [`VxlanError::InnerTooShort`] for a frame shorter than 15 bytes,
/// [`VxlanError::InnerNotIp`] for any other EtherType (ARP, a VLAN tag).
#[inline]
pub fn strip_inner_ethernet(
    frame: &[u8],
    offset: usize,
    len: usize,
) -> Result<(usize, usize), VxlanError> {
    let pkt = offset
        .checked_add(len)
        .and_then(|end| frame.get(offset..end))
        .ok_or(VxlanError::OutOfBounds)?;
    let eth = ethernet::EthernetFrame::new_checked(pkt).map_err(|_| VxlanError::InnerTooShort)?;
    match eth.ethertype() {
        EtherType::Ipv4 | EtherType::Ipv6 if len > ETH_HLEN => {
            Ok((offset + ETH_HLEN, len - ETH_HLEN))
        }
        EtherType::Ipv4 | EtherType::Ipv6 => Err(VxlanError::InnerTooShort),
        _ => Err(VxlanError::InnerNotIp),
    }
}

/// The outer IP header's [`wire::Error`] as a drop reason.
#[inline]
const fn ip_error(e: wire::Error) -> VxlanError {
    match e {
        wire::Error::Truncated => VxlanError::Truncated,
        wire::Error::BadVersion => VxlanError::BadIpVersion,
        wire::Error::BadHeaderLen => VxlanError::BadIpHeaderLen,
        wire::Error::BadLength => VxlanError::BadIpLength,
    }
}
