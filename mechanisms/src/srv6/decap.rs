//! The receive side of End.DX2, End.DX4 and End.DX6: from an outer frame to the payload behind
//! its IPv6 header and SRH. Read-only: the payload stays where it is, the caller moves its
//! `(offset, len)`. The contract is in the module docs of [`super`].

use std::net::Ipv6Addr;

use vwire_dataplane::wire::{self, ethernet, srh, EtherType, IpProtocol, Ipv6Packet, SrhPacket};

use super::{Payload, Srv6Error, IPV6_HLEN};

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

    let l3 = ethernet::walk(pkt).map_err(|_| Srv6Error::Truncated)?;
    if l3.ethertype != EtherType::Ipv6 {
        return Err(Srv6Error::NotIpv6);
    }
    let ip_pkt = pkt.get(l3.offset..).ok_or(Srv6Error::Truncated)?;
    let ip = Ipv6Packet::new_checked(ip_pkt).map_err(|e| match e {
        wire::Error::Truncated => Srv6Error::Truncated,
        wire::Error::BadVersion => Srv6Error::BadIpVersion,
        wire::Error::BadHeaderLen | wire::Error::BadLength => Srv6Error::BadIpLength,
    })?;
    let end = ip.total_len();
    // The IPv6 packet, without trailing padding; offsets below are into it.
    let ip_pkt = ip_pkt.get(..end).ok_or(Srv6Error::BadIpLength)?;

    // Raw values on the hot path; the enum only names them.
    let mut nh = ip.next_header_raw();
    let mut at = IPV6_HLEN;
    let mut has_srh = false;
    if nh == IpProtocol::Ipv6Route.raw() {
        let rh = ip_pkt
            .get(at..)
            .ok_or(Srv6Error::Truncated)
            .and_then(|b| SrhPacket::new_checked(b).map_err(|_| Srv6Error::Truncated))?;
        if rh.routing_type() != srh::ROUTING_TYPE {
            return Err(Srv6Error::NotSrh);
        }
        // The segment list fits the header and the header the packet; the rest are TLVs,
        // skipped.
        rh.check_segments().map_err(|_| Srv6Error::BadSrh)?;
        //= rfc8986#section-4.4: "S01. When an SRH is processed { S02. If (Segments Left != 0) {
        //= S03. Send an ICMP Parameter Problem ... Discard the packet"
        if rh.segments_left() != 0 {
            return Err(Srv6Error::SegmentsLeft);
        }
        nh = rh.next_header_raw();
        at += rh.header_len();
        has_srh = true;
    }
    let payload = match Payload::from_next_header(nh) {
        Some(p) => p,
        None => match IpProtocol::from_raw(nh) {
            IpProtocol::Ipv6Frag => return Err(Srv6Error::Fragment),
            p if p.is_ipv6_extension() => return Err(Srv6Error::ExtHeader),
            _ => return Err(Srv6Error::UnknownPayload),
        },
    };
    // at ≤ ip_pkt.len() = end: checked above when an SRH was skipped, 40 ≤ end otherwise.
    let plen = end - at;
    if plen < payload.min_len() {
        return Err(Srv6Error::InnerTooShort);
    }
    Ok(Decapped {
        sid: ip.dst_addr(),
        payload,
        srh: has_srh,
        offset: offset + l3.offset + at,
        len: plen,
    })
}
