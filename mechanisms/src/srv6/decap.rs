//! The receive side of End.DX2, End.DX4 and End.DX6: from an outer frame to the payload behind
//! its IPv6 header and SRH. Read-only: the payload stays where it is, the caller moves its
//! `(offset, len)`. The contract is in the module docs of [`super`].

use std::net::Ipv6Addr;

use super::{
    Payload, Srv6Error, ETHERTYPE_IPV6, ETHERTYPE_VLAN, ETH_HLEN, IPV6_HLEN, NH_ROUTING,
    ROUTING_TYPE_SRH, SID_LEN, SRH_FIXED_LEN,
};

/// What [`decap`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decapped {
    /// The outer IPv6 destination: the local SID to look up.
    pub sid: Ipv6Addr,
    /// What the payload is (the next header behind the SRH, or behind the IPv6 header).
    pub payload: Payload,
    /// Whether the packet had an SRH (Linux accepts End.DX* packets without one, RFC 8986 §4.4
    /// too: "... with no SRH").
    pub srh: bool,
    /// Where the payload starts in the buffer.
    pub offset: usize,
    /// The payload length, up to the end of the IPv6 packet (trailing Ethernet padding dropped).
    pub len: usize,
}

/// Parses the SRv6 packet at `frame[offset..offset + len]`, which starts with an Ethernet header,
/// and returns its destination SID and where its payload is.
///
/// # Errors
/// A [`Srv6Error`] naming the first check that failed; [`Srv6Error::OutOfBounds`] if the packet
/// does not lie inside `frame`.
#[inline]
pub fn decap(frame: &[u8], offset: usize, len: usize) -> Result<Decapped, Srv6Error> {
    let pkt = offset
        .checked_add(len)
        .and_then(|end| frame.get(offset..end))
        .ok_or(Srv6Error::OutOfBounds)?;

    let eth = pkt.first_chunk::<ETH_HLEN>().ok_or(Srv6Error::Truncated)?;
    let mut ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let mut l3 = ETH_HLEN;
    if ethertype == ETHERTYPE_VLAN {
        let tag = pkt
            .get(ETH_HLEN..)
            .and_then(<[u8]>::first_chunk::<4>)
            .ok_or(Srv6Error::Truncated)?;
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        l3 += 4;
    }
    if ethertype != ETHERTYPE_IPV6 {
        return Err(Srv6Error::NotIpv6);
    }
    let ip_pkt = pkt.get(l3..).ok_or(Srv6Error::Truncated)?;
    let ip = ip_pkt
        .first_chunk::<IPV6_HLEN>()
        .ok_or(Srv6Error::Truncated)?;
    if ip[0] >> 4 != 6 {
        return Err(Srv6Error::BadIpVersion);
    }
    let end = IPV6_HLEN + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    // The IPv6 packet, without trailing padding; offsets below are into it.
    let ip_pkt = ip_pkt.get(..end).ok_or(Srv6Error::BadIpLength)?;
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&ip[24..40]);

    let mut nh = ip[6];
    let mut at = IPV6_HLEN;
    let mut srh = false;
    if nh == NH_ROUTING {
        let rh = ip_pkt
            .get(at..)
            .and_then(<[u8]>::first_chunk::<SRH_FIXED_LEN>)
            .ok_or(Srv6Error::Truncated)?;
        if rh[2] != ROUTING_TYPE_SRH {
            return Err(Srv6Error::NotSrh);
        }
        let hlen = (usize::from(rh[1]) + 1) * 8;
        //= rfc8754#section-2: "Last Entry: contains the index (zero based), in the Segment List,
        //= of the last element of the Segment List."
        // The segment list must fit the header (Linux: first_segment ≤ hdrlen / 2 − 1); the rest
        // are TLVs, skipped.
        let last = usize::from(rh[4]);
        if SRH_FIXED_LEN + (last + 1) * SID_LEN > hlen || at + hlen > ip_pkt.len() {
            return Err(Srv6Error::BadSrh);
        }
        //= rfc8986#section-4.4: "S01. When an SRH is processed { S02. If (Segments Left != 0) {
        //= S03. Send an ICMP Parameter Problem ... Discard the packet"
        if rh[3] != 0 {
            return Err(Srv6Error::SegmentsLeft);
        }
        nh = rh[0];
        at += hlen;
        srh = true;
    }
    let payload = match Payload::from_next_header(nh) {
        Some(p) => p,
        None if nh == 44 => return Err(Srv6Error::Fragment),
        None if is_ipv6_ext(nh) => return Err(Srv6Error::ExtHeader),
        None => return Err(Srv6Error::UnknownPayload),
    };
    // at ≤ ip_pkt.len() = end: checked above when an SRH was skipped, 40 ≤ end otherwise.
    let plen = end - at;
    if plen < payload.min_len() {
        return Err(Srv6Error::InnerTooShort);
    }
    Ok(Decapped {
        sid: Ipv6Addr::from(dst),
        payload,
        srh,
        offset: offset + l3 + at,
        len: plen,
    })
}

/// IPv6 next-header values that are extension headers (RFC 8200 §4, IANA registry), other than
/// the fragment header.
const fn is_ipv6_ext(nh: u8) -> bool {
    matches!(nh, 0 | 43 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
}
