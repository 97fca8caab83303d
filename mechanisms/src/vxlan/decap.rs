//! Decapsulation: from a received outer frame to the inner Ethernet frame, its VNI and the peer
//! that sent it. Read-only: the inner frame stays where it is, so the caller only moves its
//! `(offset, len)`. What is checked is listed in the module docs of [`super`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::csum::{ipv4_header_ok, ones_sum};
use super::{
    Vni, VxlanError, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, ETH_HLEN, IPV4_HLEN,
    IPV6_HLEN, PROTO_UDP, UDP_HLEN, VXLAN_FLAG_I, VXLAN_HLEN,
};

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

/// IPv6 next-header values that are extension headers (RFC 8200 §4, IANA registry), except the
/// fragment header (44), which [`decap`] reports as [`VxlanError::Fragment`].
const fn is_ipv6_ext(nh: u8) -> bool {
    matches!(nh, 0 | 43 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
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

    // Ethernet, at most one 802.1Q tag.
    let eth = pkt.first_chunk::<ETH_HLEN>().ok_or(VxlanError::Truncated)?;
    let mut ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let mut l3 = ETH_HLEN;
    if ethertype == ETHERTYPE_VLAN {
        let tag = pkt
            .get(ETH_HLEN..)
            .and_then(<[u8]>::first_chunk::<4>)
            .ok_or(VxlanError::Truncated)?;
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        l3 += 4;
    }
    let ip_pkt = pkt.get(l3..).ok_or(VxlanError::Truncated)?;

    // `l4` and `l4_end` are offsets into `ip_pkt`.
    let (remote, l4, l4_end) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ip = ip_pkt
                .first_chunk::<IPV4_HLEN>()
                .ok_or(VxlanError::Truncated)?;
            if ip[0] >> 4 != 4 {
                return Err(VxlanError::BadIpVersion);
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ihl < IPV4_HLEN {
                return Err(VxlanError::BadIpHeaderLen);
            }
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if total < ihl || total > ip_pkt.len() {
                return Err(VxlanError::BadIpLength);
            }
            //= rfc791: "The checksum field is the 16 bit one's complement of the one's
            //= complement sum of all 16 bit words in the header."
            // A valid header sums to 0xffff (negative zero) in either byte order.
            let ok = if ihl == IPV4_HLEN {
                ipv4_header_ok(ip)
            } else {
                ip_pkt.get(..ihl).is_some_and(|h| ones_sum(h) == 0xffff)
            };
            if !ok {
                return Err(VxlanError::BadIpChecksum);
            }
            if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                return Err(VxlanError::Fragment); // MF or a fragment offset
            }
            if ip[9] != PROTO_UDP {
                return Err(VxlanError::NotUdp);
            }
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            (IpAddr::V4(src), ihl, total)
        }
        ETHERTYPE_IPV6 => {
            let ip = ip_pkt
                .first_chunk::<IPV6_HLEN>()
                .ok_or(VxlanError::Truncated)?;
            if ip[0] >> 4 != 6 {
                return Err(VxlanError::BadIpVersion);
            }
            let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let end = IPV6_HLEN + payload;
            if end > ip_pkt.len() {
                return Err(VxlanError::BadIpLength);
            }
            match ip[6] {
                PROTO_UDP => {}
                44 => return Err(VxlanError::Fragment),
                nh if is_ipv6_ext(nh) => return Err(VxlanError::Ipv6ExtHeader),
                _ => return Err(VxlanError::NotUdp),
            }
            let mut src = [0u8; 16];
            src.copy_from_slice(&ip[8..24]);
            (IpAddr::V6(Ipv6Addr::from(src)), IPV6_HLEN, end)
        }
        _ => return Err(VxlanError::NotIp),
    };

    // UDP + VXLAN, inside the IP packet.
    let l4_pkt = ip_pkt.get(l4..l4_end).ok_or(VxlanError::Truncated)?;
    let hdrs = l4_pkt
        .first_chunk::<{ UDP_HLEN + VXLAN_HLEN }>()
        .ok_or(VxlanError::Truncated)?;
    if u16::from_be_bytes([hdrs[2], hdrs[3]]) != vxlan_port {
        return Err(VxlanError::NotVxlanPort);
    }
    let udp_len = usize::from(u16::from_be_bytes([hdrs[4], hdrs[5]]));
    if udp_len < UDP_HLEN + VXLAN_HLEN || udp_len > l4_pkt.len() {
        return Err(VxlanError::BadUdpLength);
    }
    //= rfc7348#section-5: "Flags (8 bits): where the I flag MUST be set to 1 for a valid VXLAN
    //= Network ID (VNI). The other 7 bits (designated "R") are reserved fields and MUST be set
    //= to zero on transmission and ignored on receipt."
    if hdrs[8] & VXLAN_FLAG_I == 0 {
        return Err(VxlanError::NoVniFlag);
    }
    let vni = Vni::from_wire([hdrs[12], hdrs[13], hdrs[14]]);
    let inner_len = udp_len - (UDP_HLEN + VXLAN_HLEN);
    if inner_len < ETH_HLEN {
        return Err(VxlanError::InnerTooShort);
    }
    // Every term is bounded by `len`, and offset + len did not overflow.
    let inner_offset = offset + l3 + l4 + UDP_HLEN + VXLAN_HLEN;
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
    let eth = pkt
        .first_chunk::<ETH_HLEN>()
        .ok_or(VxlanError::InnerTooShort)?;
    match u16::from_be_bytes([eth[12], eth[13]]) {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 if len > ETH_HLEN => {
            Ok((offset + ETH_HLEN, len - ETH_HLEN))
        }
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Err(VxlanError::InnerTooShort),
        _ => Err(VxlanError::InnerNotIp),
    }
}
