//! A tiny sans-IO host stack for the memif example workloads: it answers ARP and ICMP echo for
//! one address, learns its one peer's MAC address, and writes the packets a pinger sends.
//!
//! Everything here is a pure function of bytes and state: no sockets, no clock, no allocation.
//! [`Responder::handle`] looks at one received packet and, when it deserves an answer, rewrites
//! it **in place** into that answer (so a 9000-byte echo is never copied). The `memif_app`
//! module drives it from a memif port; the tests drive it with `etherparse`-built packets.
//!
//! What it answers (everything else is dropped with a [`Discard`] reason):
//! - [`Framing::Ethernet`]: frames to its own MAC, or to a broadcast/multicast address. ARP
//!   requests for its IPv4 address get an ARP reply with its MAC; IPv6 neighbour solicitations
//!   for its IPv6 address get a solicited neighbour advertisement. The peer's MAC is learned
//!   from its ARP requests and replies, its neighbour solicitations and advertisements, and from
//!   any valid IP packet whose source is the peer's address.
//! - [`Framing::Ip`]: bare IPv4/IPv6 packets, no Ethernet header and no neighbour discovery.
//! - ICMPv4 echo requests (options are kept) and ICMPv6 echo requests (no extension headers) to
//!   its address, of any size that fits the buffer, become echo replies. Echo replies from the
//!   peer carrying this responder's identifier are reported as [`Verdict::PingReply`] for the
//!   pinger.
//! - An IPv4 fragment of an ICMP datagram to its address is not answered. It is returned as
//!   [`Verdict::Fragment`] for the caller to reassemble ([`crate::ipv4frag::Reassembler`]) and
//!   hand back whole. Answers and pings leave as whole datagrams; splitting one that exceeds the
//!   link MTU is the caller's job too ([`crate::ipv4frag::Fragments`]). So that this is always
//!   allowed, IPv4 answers are sent without DF, as Linux sends its ICMP replies. Every IPv4
//!   datagram it originates (answer or ping) takes the next value of one identification counter,
//!   so no two datagrams in flight to the peer share a reassembly key (RFC 6864 §4.3).
//! - Checksums are verified (IPv4 header, ICMPv4, ICMPv6 with its pseudo-header); a packet with
//!   a wrong one is dropped, as a kernel would.
//!
//! Not handled: VLAN tags, IPv6 fragments and other extension headers, duplicate address
//! detection.
//!
//! Panic freedom: every read and write is bounds-checked against the packet's length or the
//! buffer's length; malformed input of any length yields [`Verdict::Drop`], never a panic (a
//! property test checks this).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vwire_dataplane::wire::checksum::{self as csum, checksum};
use vwire_dataplane::wire::ethernet::{is_multicast, BROADCAST};
use vwire_dataplane::wire::ipv4::{
    FLAG_DF as IPV4_DF, FLAG_MF as IPV4_MF, OFFSET_MASK as IPV4_OFFSET,
};
use vwire_dataplane::wire::{
    EtherType, EthernetFrame, IpProtocol, Ipv4Packet, Ipv6Packet, IPV4_HLEN, IPV6_HLEN,
};

/// Errors of this module.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResponderError {
    /// The responder's own address and its peer's are of different IP families.
    #[error("own address {own} and peer address {peer} are not of the same IP family")]
    MixedFamilies {
        /// Own address.
        own: IpAddr,
        /// Peer address.
        peer: IpAddr,
    },
}

/// Ethernet header length.
pub use vwire_dataplane::wire::ETH_HLEN;

const ARP_LEN: usize = 28;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
/// Ethernet's minimum frame length without the FCS: short frames we emit are padded to it.
const MIN_FRAME: usize = 60;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
/// TTL / hop limit of the packets we originate or answer (Linux's default).
const TTL: u8 = 64;

const ICMP6_ECHO_REQUEST: u8 = 128;
const ICMP6_ECHO_REPLY: u8 = 129;
const ND_NS: u8 = 135;
const ND_NA: u8 = 136;
/// RFC 4861 §7.1: neighbour discovery messages carry hop limit 255, proving they were not routed.
const ND_HOP_LIMIT: u8 = 255;
const ND_OPT_SOURCE_LLADDR: u8 = 1;
const ND_OPT_TARGET_LLADDR: u8 = 2;
/// NS/NA body: type, code, checksum, 4 bytes reserved/flags, 16-byte target.
const ND_BODY: usize = 24;
/// One link-layer address option for Ethernet: type, length (in 8-byte units), MAC.
const ND_LLADDR_OPT: usize = 8;
/// NA flags: Solicited and Override (RFC 4861 §4.4).
const NA_SOLICITED_OVERRIDE: u8 = 0x60;

/// ICMP echo header: type, code, checksum, identifier, sequence number.
pub const ICMP_ECHO_HLEN: usize = 8;

/// Whether packets carry an Ethernet header (memif ethernet mode) or are bare IP (IP mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Ethernet frames, with ARP / neighbour discovery.
    Ethernet,
    /// Bare IPv4/IPv6 packets.
    Ip,
}

/// Why a packet got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discard {
    /// Too short, inconsistent lengths, or not the protocol version its header says.
    Malformed,
    /// An IPv4 header or ICMP checksum is wrong.
    BadChecksum,
    /// Addressed to another MAC or IP address.
    NotForUs,
    /// A protocol or message type this responder does not answer.
    Unsupported,
    /// An IPv4 fragment that reassembly did not keep (`memif_app` maps every
    /// [`crate::ipv4frag::FragDrop`] to this).
    Fragment,
    /// The answer does not fit the buffer.
    NoRoom,
}

/// What to do with a packet given to [`Responder::handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The buffer now holds the answer, this many bytes long: send it.
    Reply(usize),
    /// An echo reply to this responder's ping: its sequence number and how many payload bytes it
    /// carried (already checked against [`ping_pattern`]).
    PingReply {
        /// ICMP sequence number.
        seq: u16,
        /// Echo payload length.
        len: usize,
    },
    /// Useful but needs no answer (e.g. an ARP reply that taught us the peer's MAC, or a
    /// fragment kept for reassembly).
    Absorbed,
    /// `buf[start..end]` is an IPv4 fragment of an ICMP datagram to this responder, with a valid
    /// header checksum: reassemble it, then hand the whole datagram to [`Responder::handle`]
    /// (after the same Ethernet header, in ethernet framing).
    Fragment {
        /// Where its IPv4 header starts.
        start: usize,
        /// Where it ends (its total length after `start`; Ethernet padding excluded).
        end: usize,
    },
    /// Nothing to send.
    Drop(Discard),
}

/// The byte at position `i` of an echo payload this pinger sends (and checks on the way back).
#[inline]
pub fn ping_pattern(i: usize) -> u8 {
    // 251 is prime, so the pattern does not line up with power-of-two buffer sizes and a chain
    // segment put at the wrong offset shows.
    u8::try_from(i % 251).unwrap_or(0)
}

/// The ICMPv6 checksum of `msg` (whose checksum field may hold anything: it is summed as zero)
/// between `src` and `dst` (RFC 8200 §8.1 pseudo-header), as a number.
fn icmp6_checksum(src: &[u8; 16], dst: &[u8; 16], msg: &[u8]) -> u16 {
    let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
    let mut s = csum::pseudo_v6(src, dst, IpProtocol::Icmpv6.raw(), len);
    s = match (msg.get(..2), msg.get(4..)) {
        (Some(head), Some(tail)) => csum::add(csum::add(s, csum::sum(head)), csum::sum(tail)),
        _ => csum::add(s, csum::sum(msg)),
    };
    !u16::from_be_bytes(s.to_ne_bytes())
}

fn be16(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

fn put16(p: &mut [u8], at: usize, v: u16) {
    if let Some(d) = p.get_mut(at..at + 2) {
        d.copy_from_slice(&v.to_be_bytes());
    }
}

fn mac_at(p: &[u8], at: usize) -> Option<[u8; 6]> {
    p.get(at..at + 6)?.try_into().ok()
}

/// The solicited-node multicast address of `ip` (RFC 4291 §2.7.1) and its Ethernet address.
fn solicited_node(ip: &Ipv6Addr) -> ([u8; 16], [u8; 6]) {
    let o = ip.octets();
    let mut a = [0u8; 16];
    a[..2].copy_from_slice(&[0xff, 0x02]);
    a[11..13].copy_from_slice(&[0x01, 0xff]);
    a[13..].copy_from_slice(&o[13..]);
    (a, [0x33, 0x33, a[12], a[13], a[14], a[15]])
}

/// Writes an Ethernet header at the start of `buf` (which must hold at least [`ETH_HLEN`]).
fn write_eth(buf: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: EtherType) {
    EthernetFrame::new_unchecked(buf).write_header(dst, src, ethertype);
}

/// One end of a point-to-point link: its own address and MAC, and its peer. See the module docs.
#[derive(Clone, Debug)]
pub struct Responder {
    framing: Framing,
    mac: [u8; 6],
    own: IpAddr,
    peer: IpAddr,
    peer_mac: Option<[u8; 6]>,
    ident: u16,
    /// The identification of the next IPv4 datagram it sends.
    ip_id: u16,
}

impl Responder {
    /// A responder for `own` talking to `peer` (same IP family), with MAC `mac` (unused in
    /// [`Framing::Ip`]) and the ICMP identifier `ident` for its own pings.
    pub fn new(
        framing: Framing,
        mac: [u8; 6],
        own: IpAddr,
        peer: IpAddr,
        ident: u16,
    ) -> Result<Self, ResponderError> {
        if own.is_ipv4() != peer.is_ipv4() {
            return Err(ResponderError::MixedFamilies { own, peer });
        }
        Ok(Self {
            framing,
            mac,
            own,
            peer,
            peer_mac: None,
            ident,
            // Any start will do: identifications only need to differ between the datagrams
            // in flight, and two hosts pinging each other start apart.
            ip_id: ident,
        })
    }

    /// Where the IP header starts in the packets of this framing: after the Ethernet header,
    /// or at 0.
    pub fn l3_offset(&self) -> usize {
        match self.framing {
            Framing::Ethernet => ETH_HLEN,
            Framing::Ip => 0,
        }
    }

    /// The identification of the next IPv4 datagram this host originates.
    fn next_ip_id(&mut self) -> u16 {
        let id = self.ip_id;
        self.ip_id = id.wrapping_add(1);
        id
    }

    /// The peer's MAC address, once learned.
    pub fn peer_mac(&self) -> Option<[u8; 6]> {
        self.peer_mac
    }

    /// True when echo requests can be sent: always in IP mode, once the peer's MAC is known in
    /// ethernet mode.
    pub fn peer_resolved(&self) -> bool {
        self.framing == Framing::Ip || self.peer_mac.is_some()
    }

    /// The ICMP identifier of this responder's pings.
    pub fn ident(&self) -> u16 {
        self.ident
    }

    /// Handles one received packet: `buf[..len]` is the packet and `buf[len..]` spare room that
    /// an answer may grow into (an NA is longer than a short NS). When the verdict is
    /// [`Verdict::Reply`], `buf` starts with the answer.
    pub fn handle(&mut self, buf: &mut [u8], len: usize) -> Verdict {
        let len = len.min(buf.len());
        match self.framing {
            Framing::Ip => match buf.first().map(|b| b >> 4) {
                Some(4) => self.handle_ipv4(buf, 0, len),
                Some(6) => self.handle_ipv6(buf, 0, len),
                _ => Verdict::Drop(Discard::Malformed),
            },
            Framing::Ethernet => {
                let Ok(eth) = EthernetFrame::new_checked(buf.get(..len).unwrap_or_default()) else {
                    return Verdict::Drop(Discard::Malformed);
                };
                let (dst, ethertype) = (eth.dst_addr(), eth.ethertype());
                if dst != self.mac && !is_multicast(&dst) {
                    return Verdict::Drop(Discard::NotForUs);
                }
                match ethertype {
                    EtherType::Arp => self.handle_arp(buf, len),
                    EtherType::Ipv4 => self.handle_ipv4(buf, ETH_HLEN, len),
                    EtherType::Ipv6 => self.handle_ipv6(buf, ETH_HLEN, len),
                    _ => Verdict::Drop(Discard::Unsupported),
                }
            }
        }
    }

    /// Learns the peer's MAC from the Ethernet source of a frame that came from the peer's IP.
    fn learn_from_frame(&mut self, buf: &[u8], src_ip: IpAddr) {
        if self.framing == Framing::Ethernet && src_ip == self.peer {
            if let Some(src) = mac_at(buf, 6).filter(|m| !is_multicast(m)) {
                self.peer_mac = Some(src);
            }
        }
    }

    /// Ethernet ARP for IPv4 (RFC 826): answer requests for our address, learn the peer.
    fn handle_arp(&mut self, buf: &mut [u8], len: usize) -> Verdict {
        let Some(arp) = buf.get(ETH_HLEN..len).filter(|a| a.len() >= ARP_LEN) else {
            return Verdict::Drop(Discard::Malformed);
        };
        // htype Ethernet, ptype IPv4, hlen 6, plen 4.
        if arp[..6] != [0, 1, 8, 0, 6, 4] {
            return Verdict::Drop(Discard::Unsupported);
        }
        let op = u16::from_be_bytes([arp[6], arp[7]]);
        let (Some(sha), Some(spa), Some(tpa)) = (
            mac_at(arp, 8),
            <[u8; 4]>::try_from(&arp[14..18]).ok(),
            <[u8; 4]>::try_from(&arp[24..28]).ok(),
        ) else {
            return Verdict::Drop(Discard::Malformed);
        };
        let (IpAddr::V4(own), IpAddr::V4(peer)) = (self.own, self.peer) else {
            return Verdict::Drop(Discard::Unsupported);
        };
        if Ipv4Addr::from(spa) == peer && !is_multicast(&sha) {
            self.peer_mac = Some(sha);
        }
        match op {
            ARP_REQUEST if Ipv4Addr::from(tpa) == own => {
                write_eth(buf, sha, self.mac, EtherType::Arp);
                let a = &mut buf[ETH_HLEN..ETH_HLEN + ARP_LEN];
                put16(a, 6, ARP_REPLY);
                a[8..14].copy_from_slice(&self.mac);
                a[14..18].copy_from_slice(&tpa);
                a[18..24].copy_from_slice(&sha);
                a[24..28].copy_from_slice(&spa);
                // Keep the request's padding (if any): the answer is as long as the question.
                Verdict::Reply(len.max(ETH_HLEN + ARP_LEN))
            }
            ARP_REQUEST => Verdict::Drop(Discard::NotForUs),
            ARP_REPLY => Verdict::Absorbed,
            _ => Verdict::Drop(Discard::Unsupported),
        }
    }

    fn handle_ipv4(&mut self, buf: &mut [u8], l3: usize, len: usize) -> Verdict {
        let IpAddr::V4(own) = self.own else {
            return Verdict::Drop(Discard::Unsupported);
        };
        let Some(Ok(ip)) = buf.get(l3..len).map(Ipv4Packet::new_checked) else {
            return Verdict::Drop(Discard::Malformed);
        };
        if !ip.verify_checksum() {
            return Verdict::Drop(Discard::BadChecksum);
        }
        let (ihl, total) = (ip.header_len(), ip.total_len());
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let (frag, proto) = (ip.flags_and_offset(), ip.protocol());
        self.learn_from_frame(buf, IpAddr::V4(src));
        if dst != own {
            return Verdict::Drop(Discard::NotForUs);
        }
        if proto != IpProtocol::Icmp {
            return Verdict::Drop(Discard::Unsupported);
        }
        let (icmp_at, end) = (l3 + ihl, l3 + total);
        if frag & (IPV4_MF | IPV4_OFFSET) != 0 {
            return Verdict::Fragment { start: l3, end };
        }
        let icmp = &buf[icmp_at..end];
        if icmp.len() < ICMP_ECHO_HLEN {
            return Verdict::Drop(Discard::Malformed);
        }
        if checksum(icmp) != 0 {
            return Verdict::Drop(Discard::BadChecksum);
        }
        match (icmp[0], icmp[1]) {
            (ICMP_ECHO_REQUEST, 0) => {
                if l3 == ETH_HLEN {
                    self.swap_eth(buf);
                }
                let id = self.next_ip_id();
                let mut ip = Ipv4Packet::new_unchecked(&mut buf[l3..l3 + ihl]);
                ip.set_src_addr(dst.octets());
                ip.set_dst_addr(src.octets());
                ip.set_ttl(TTL);
                ip.set_ident(id);
                // No DF (module docs): the answer may need fragmenting on its way back.
                ip.set_flags_and_offset(0);
                ip.fill_checksum();
                let icmp = &mut buf[icmp_at..end];
                icmp[0] = ICMP_ECHO_REPLY;
                put16(icmp, 2, 0);
                let c = checksum(icmp);
                put16(icmp, 2, c);
                Verdict::Reply(end)
            }
            (ICMP_ECHO_REPLY, 0) => self.ping_reply(IpAddr::V4(src), icmp),
            _ => Verdict::Drop(Discard::Unsupported),
        }
    }

    fn handle_ipv6(&mut self, buf: &mut [u8], l3: usize, len: usize) -> Verdict {
        let IpAddr::V6(own) = self.own else {
            return Verdict::Drop(Discard::Unsupported);
        };
        let Some(Ok(ip)) = buf.get(l3..len).map(Ipv6Packet::new_checked) else {
            return Verdict::Drop(Discard::Malformed);
        };
        let (plen, next, hop) = (ip.payload_len(), ip.next_header(), ip.hop_limit());
        let (s, d) = (ip.src_bytes(), ip.dst_bytes());
        let (src, dst) = (Ipv6Addr::from(s), Ipv6Addr::from(d));
        if next != IpProtocol::Icmpv6 {
            self.learn_from_frame(buf, IpAddr::V6(src));
            return Verdict::Drop(if dst == own {
                Discard::Unsupported
            } else {
                Discard::NotForUs
            });
        }
        let (icmp_at, end) = (l3 + IPV6_HLEN, l3 + IPV6_HLEN + plen);
        let icmp = &buf[icmp_at..end];
        if icmp.len() < 4 {
            return Verdict::Drop(Discard::Malformed);
        }
        if icmp6_checksum(&s, &d, icmp) != u16::from_be_bytes([icmp[2], icmp[3]]) {
            return Verdict::Drop(Discard::BadChecksum);
        }
        self.learn_from_frame(buf, IpAddr::V6(src));
        match (icmp[0], icmp[1]) {
            (ICMP6_ECHO_REQUEST, 0) if dst == own => {
                if icmp.len() < ICMP_ECHO_HLEN {
                    return Verdict::Drop(Discard::Malformed);
                }
                if l3 == ETH_HLEN {
                    self.swap_eth(buf);
                }
                let mut ip = Ipv6Packet::new_unchecked(&mut buf[l3..l3 + IPV6_HLEN]);
                ip.set_src_addr(d);
                ip.set_dst_addr(s);
                ip.set_hop_limit(TTL);
                let icmp = &mut buf[icmp_at..end];
                icmp[0] = ICMP6_ECHO_REPLY;
                let c = icmp6_checksum(&d, &s, icmp);
                put16(icmp, 2, c);
                Verdict::Reply(end)
            }
            (ICMP6_ECHO_REPLY, 0) if dst == own => {
                if icmp.len() < ICMP_ECHO_HLEN {
                    return Verdict::Drop(Discard::Malformed);
                }
                self.ping_reply(IpAddr::V6(src), icmp)
            }
            (ICMP6_ECHO_REQUEST | ICMP6_ECHO_REPLY, 0) => Verdict::Drop(Discard::NotForUs),
            (ND_NS | ND_NA, 0) if l3 == ETH_HLEN => {
                if hop != ND_HOP_LIMIT || icmp.len() < ND_BODY {
                    return Verdict::Drop(Discard::Malformed);
                }
                let mut t = [0u8; 16];
                t.copy_from_slice(&icmp[8..24]);
                let target = Ipv6Addr::from(t);
                let lladdr = ll_option(
                    &icmp[ND_BODY..],
                    if icmp[0] == ND_NS {
                        ND_OPT_SOURCE_LLADDR
                    } else {
                        ND_OPT_TARGET_LLADDR
                    },
                );
                if icmp[0] == ND_NA {
                    if IpAddr::V6(target) == self.peer {
                        if let Some(m) = lladdr.filter(|m| !is_multicast(m)) {
                            self.peer_mac = Some(m);
                        }
                    }
                    return Verdict::Absorbed;
                }
                if IpAddr::V6(src) == self.peer {
                    if let Some(m) = lladdr.filter(|m| !is_multicast(m)) {
                        self.peer_mac = Some(m);
                    }
                }
                if target != own {
                    return Verdict::Drop(Discard::NotForUs);
                }
                if src.is_unspecified() {
                    // Duplicate address detection by someone else: not answered (module docs).
                    return Verdict::Drop(Discard::Unsupported);
                }
                let Some(req_mac) = mac_at(buf, 6) else {
                    return Verdict::Drop(Discard::Malformed);
                };
                self.write_na(buf, req_mac, &s)
            }
            _ => Verdict::Drop(Discard::Unsupported),
        }
    }

    /// An echo reply from `src`: ours if it comes from the peer with our identifier and the
    /// payload pattern we sent.
    fn ping_reply(&self, src: IpAddr, icmp: &[u8]) -> Verdict {
        let (Some(ident), Some(seq)) = (be16(icmp, 4), be16(icmp, 6)) else {
            return Verdict::Drop(Discard::Malformed);
        };
        if src != self.peer || ident != self.ident {
            return Verdict::Drop(Discard::NotForUs);
        }
        let payload = icmp.get(ICMP_ECHO_HLEN..).unwrap_or_default();
        if payload
            .iter()
            .enumerate()
            .any(|(i, &b)| b != ping_pattern(i))
        {
            return Verdict::Drop(Discard::Malformed);
        }
        Verdict::PingReply {
            seq,
            len: payload.len(),
        }
    }

    /// Answers a frame in place: its source becomes the destination, our MAC the source.
    fn swap_eth(&self, buf: &mut [u8]) {
        if let Some(src) = mac_at(buf, 6) {
            buf[..6].copy_from_slice(&src);
            buf[6..12].copy_from_slice(&self.mac);
        }
    }

    /// Writes a solicited neighbour advertisement for our address to `to`/`to_mac`.
    fn write_na(&self, buf: &mut [u8], to_mac: [u8; 6], to: &[u8; 16]) -> Verdict {
        let IpAddr::V6(own) = self.own else {
            return Verdict::Drop(Discard::Unsupported);
        };
        let icmp_len = ND_BODY + ND_LLADDR_OPT;
        let total = ETH_HLEN + IPV6_HLEN + icmp_len;
        if buf.len() < total {
            return Verdict::Drop(Discard::NoRoom);
        }
        write_eth(buf, to_mac, self.mac, EtherType::Ipv6);
        let o = own.octets();
        write_ipv6_header(
            &mut buf[ETH_HLEN..ETH_HLEN + IPV6_HLEN],
            icmp_len,
            ND_HOP_LIMIT,
            &o,
            to,
        );
        let icmp = &mut buf[ETH_HLEN + IPV6_HLEN..total];
        icmp.fill(0);
        icmp[0] = ND_NA;
        icmp[4] = NA_SOLICITED_OVERRIDE;
        icmp[8..24].copy_from_slice(&o);
        icmp[24] = ND_OPT_TARGET_LLADDR;
        icmp[25] = 1;
        icmp[26..32].copy_from_slice(&self.mac);
        let c = icmp6_checksum(&o, to, icmp);
        put16(icmp, 2, c);
        Verdict::Reply(total)
    }

    /// Writes a request for the peer's MAC (an ARP request, or a neighbour solicitation for
    /// IPv6) into `buf` and returns its length. `None` in IP mode or if `buf` is too small.
    pub fn write_resolve(&self, buf: &mut [u8]) -> Option<usize> {
        if self.framing != Framing::Ethernet {
            return None;
        }
        match (self.own, self.peer) {
            (IpAddr::V4(own), IpAddr::V4(peer)) => {
                let frame = buf.get_mut(..MIN_FRAME)?;
                frame.fill(0);
                write_eth(frame, BROADCAST, self.mac, EtherType::Arp);
                let a = &mut frame[ETH_HLEN..ETH_HLEN + ARP_LEN];
                a[..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
                put16(a, 6, ARP_REQUEST);
                a[8..14].copy_from_slice(&self.mac);
                a[14..18].copy_from_slice(&own.octets());
                // Target hardware address stays zero: it is what we ask for.
                a[24..28].copy_from_slice(&peer.octets());
                Some(MIN_FRAME)
            }
            (IpAddr::V6(own), IpAddr::V6(peer)) => {
                let icmp_len = ND_BODY + ND_LLADDR_OPT;
                let total = ETH_HLEN + IPV6_HLEN + icmp_len;
                let frame = buf.get_mut(..total)?;
                let (group, group_mac) = solicited_node(&peer);
                let o = own.octets();
                write_eth(frame, group_mac, self.mac, EtherType::Ipv6);
                write_ipv6_header(
                    &mut frame[ETH_HLEN..ETH_HLEN + IPV6_HLEN],
                    icmp_len,
                    ND_HOP_LIMIT,
                    &o,
                    &group,
                );
                let icmp = &mut frame[ETH_HLEN + IPV6_HLEN..];
                icmp.fill(0);
                icmp[0] = ND_NS;
                icmp[8..24].copy_from_slice(&peer.octets());
                icmp[24] = ND_OPT_SOURCE_LLADDR;
                icmp[25] = 1;
                icmp[26..32].copy_from_slice(&self.mac);
                let c = icmp6_checksum(&o, &group, icmp);
                put16(icmp, 2, c);
                Some(total)
            }
            _ => None,
        }
    }

    /// Writes echo request `seq` with `size` payload bytes ([`ping_pattern`]) to the peer into
    /// `buf` and returns its length. `None` if the peer's MAC is not known yet (ethernet mode),
    /// or the packet does not fit `buf` or an IP length field. An IPv4 request carries DF, like
    /// Linux's `ping`. When it exceeds the link MTU, the caller sends it as fragments, which
    /// clear DF.
    pub fn write_echo_request(&mut self, buf: &mut [u8], seq: u16, size: usize) -> Option<usize> {
        let l3 = match self.framing {
            Framing::Ethernet => ETH_HLEN,
            Framing::Ip => 0,
        };
        let icmp_len = ICMP_ECHO_HLEN + size;
        let (ip_hlen, ethertype) = match self.own {
            IpAddr::V4(_) => (IPV4_HLEN, EtherType::Ipv4),
            IpAddr::V6(_) => (IPV6_HLEN, EtherType::Ipv6),
        };
        let total = l3 + ip_hlen + icmp_len;
        let pkt = buf.get_mut(..total)?;
        if let Framing::Ethernet = self.framing {
            write_eth(pkt, self.peer_mac?, self.mac, ethertype);
        }
        let icmp_at = l3 + ip_hlen;
        {
            let icmp = &mut pkt[icmp_at..];
            icmp[..4].fill(0);
            put16(icmp, 4, self.ident);
            put16(icmp, 6, seq);
            for (i, b) in icmp[ICMP_ECHO_HLEN..].iter_mut().enumerate() {
                *b = ping_pattern(i);
            }
        }
        match (self.own, self.peer) {
            (IpAddr::V4(own), IpAddr::V4(peer)) => {
                let tot = u16::try_from(ip_hlen + icmp_len).ok()?;
                let id = self.next_ip_id();
                let ip = &mut pkt[l3..icmp_at];
                ip.fill(0);
                let mut ip = Ipv4Packet::new_unchecked(ip);
                ip.set_version_and_header_len(IPV4_HLEN);
                ip.set_total_len(tot);
                ip.set_ident(id);
                ip.set_flags_and_offset(IPV4_DF);
                ip.set_ttl(TTL);
                ip.set_protocol(IpProtocol::Icmp);
                ip.set_src_addr(own.octets());
                ip.set_dst_addr(peer.octets());
                ip.fill_checksum();
                let icmp = &mut pkt[icmp_at..];
                icmp[0] = ICMP_ECHO_REQUEST;
                let c = checksum(icmp);
                put16(icmp, 2, c);
            }
            (IpAddr::V6(own), IpAddr::V6(peer)) => {
                if u16::try_from(icmp_len).is_err() {
                    return None;
                }
                let (o, p) = (own.octets(), peer.octets());
                write_ipv6_header(&mut pkt[l3..icmp_at], icmp_len, TTL, &o, &p);
                let icmp = &mut pkt[icmp_at..];
                icmp[0] = ICMP6_ECHO_REQUEST;
                let c = icmp6_checksum(&o, &p, icmp);
                put16(icmp, 2, c);
            }
            _ => return None,
        }
        Some(total)
    }
}

/// Writes a 40-byte IPv6 header carrying ICMPv6 into `ip`.
fn write_ipv6_header(ip: &mut [u8], plen: usize, hop: u8, src: &[u8; 16], dst: &[u8; 16]) {
    let mut ip = Ipv6Packet::new_unchecked(ip);
    ip.set_ver_tc_flow(0, 0);
    ip.set_payload_len(u16::try_from(plen).unwrap_or(u16::MAX));
    ip.set_next_header(IpProtocol::Icmpv6);
    ip.set_hop_limit(hop);
    ip.set_src_addr(*src);
    ip.set_dst_addr(*dst);
}

/// The Ethernet address in the first neighbour-discovery option of type `kind`, if any.
fn ll_option(mut opts: &[u8], kind: u8) -> Option<[u8; 6]> {
    // RFC 4861 §4.6: type, length in units of 8 bytes (0 is invalid), value.
    while opts.len() >= 2 {
        let n = usize::from(opts[1]) * 8;
        if n == 0 || n > opts.len() {
            return None;
        }
        if opts[0] == kind && n >= ND_LLADDR_OPT {
            return mac_at(opts, 2);
        }
        opts = &opts[n..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header, Icmpv4Type, Icmpv6Type,
        NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
    };

    const OWN_MAC: [u8; 6] = [0x02, 0xfe, 1, 2, 3, 4];
    const PEER_MAC: [u8; 6] = [0x02, 0xaa, 9, 8, 7, 6];
    const OWN4: Ipv4Addr = Ipv4Addr::new(172, 16, 1, 100);
    const PEER4: Ipv4Addr = Ipv4Addr::new(172, 16, 1, 101);

    fn own6() -> Ipv6Addr {
        "fd00::100".parse().unwrap()
    }
    fn peer6() -> Ipv6Addr {
        "fd00::101".parse().unwrap()
    }

    fn responder(framing: Framing) -> Responder {
        Responder::new(framing, OWN_MAC, OWN4.into(), PEER4.into(), 0x4242).unwrap()
    }

    fn responder6(framing: Framing) -> Responder {
        Responder::new(framing, OWN_MAC, own6().into(), peer6().into(), 0x4242).unwrap()
    }

    /// `pkt` in a buffer with room to grow, filled with 0xa5 beyond the packet.
    fn in_buf(pkt: &[u8]) -> Vec<u8> {
        let mut b = vec![0xa5; pkt.len() + 256];
        b[..pkt.len()].copy_from_slice(pkt);
        b
    }

    fn arp_frame(
        op: ArpOperation,
        sha: [u8; 6],
        spa: Ipv4Addr,
        tpa: Ipv4Addr,
        to: [u8; 6],
    ) -> Vec<u8> {
        let arp = ArpEthIpv4Packet {
            operation: op,
            sender_mac: sha,
            sender_ipv4: spa.octets(),
            target_mac: [0; 6],
            target_ipv4: tpa.octets(),
        };
        let mut f = Ethernet2Header {
            source: sha,
            destination: to,
            ether_type: EtherType::ARP,
        }
        .to_bytes()
        .to_vec();
        f.extend_from_slice(&arp.to_bytes());
        f
    }

    fn echo4(
        eth: bool,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        request: bool,
        seq: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        if eth {
            let b =
                PacketBuilder::ethernet2(PEER_MAC, OWN_MAC).ipv4(src.octets(), dst.octets(), 61);
            let b = if request {
                b.icmpv4_echo_request(0x77, seq)
            } else {
                b.icmpv4_echo_reply(0x4242, seq)
            };
            b.write(&mut out, payload).unwrap();
        } else {
            let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 61);
            let b = if request {
                b.icmpv4_echo_request(0x77, seq)
            } else {
                b.icmpv4_echo_reply(0x4242, seq)
            };
            b.write(&mut out, payload).unwrap();
        }
        out
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(ping_pattern).collect()
    }

    #[test]
    fn arp_request_for_us_gets_a_reply_and_teaches_the_peer_mac() {
        let mut r = responder(Framing::Ethernet);
        assert!(!r.peer_resolved());
        let req = arp_frame(ArpOperation::REQUEST, PEER_MAC, PEER4, OWN4, BROADCAST);
        let mut buf = in_buf(&req);
        let Verdict::Reply(n) = r.handle(&mut buf, req.len()) else {
            panic!("no reply")
        };
        assert_eq!(n, 42);
        let eth = Ethernet2Header::from_slice(&buf[..n]).unwrap().0;
        assert_eq!((eth.source, eth.destination), (OWN_MAC, PEER_MAC));
        assert_eq!(eth.ether_type, EtherType::ARP);
        let arp = etherparse::ArpPacket::from_slice(&buf[14..n])
            .unwrap()
            .try_eth_ipv4()
            .unwrap();
        assert_eq!(arp.operation, ArpOperation::REPLY);
        assert_eq!(arp.sender_mac, OWN_MAC);
        assert_eq!(arp.sender_ipv4_addr(), OWN4);
        assert_eq!(arp.target_mac, PEER_MAC);
        assert_eq!(arp.target_ipv4_addr(), PEER4);
        assert_eq!(r.peer_mac(), Some(PEER_MAC));
        assert!(r.peer_resolved());

        // A padded 60-byte request gets a 60-byte reply.
        let mut padded = req.clone();
        padded.resize(60, 0);
        let mut buf = in_buf(&padded);
        assert_eq!(r.handle(&mut buf, 60), Verdict::Reply(60));
    }

    #[test]
    fn arp_for_others_is_dropped_and_replies_are_learned() {
        let mut r = responder(Framing::Ethernet);
        let other = Ipv4Addr::new(172, 16, 1, 7);
        let req = arp_frame(
            ArpOperation::REQUEST,
            [2, 0, 0, 0, 0, 9],
            other,
            other,
            BROADCAST,
        );
        assert_eq!(
            r.handle(&mut in_buf(&req), req.len()),
            Verdict::Drop(Discard::NotForUs)
        );
        assert_eq!(r.peer_mac(), None, "only the peer's address is learned");
        let rep = arp_frame(ArpOperation::REPLY, PEER_MAC, PEER4, OWN4, OWN_MAC);
        assert_eq!(r.handle(&mut in_buf(&rep), rep.len()), Verdict::Absorbed);
        assert_eq!(r.peer_mac(), Some(PEER_MAC));
        // Unicast to another MAC: not for us.
        let rep = arp_frame(
            ArpOperation::REQUEST,
            PEER_MAC,
            PEER4,
            OWN4,
            [2, 1, 1, 1, 1, 1],
        );
        assert_eq!(
            r.handle(&mut in_buf(&rep), rep.len()),
            Verdict::Drop(Discard::NotForUs)
        );
    }

    /// Parses an echo reply with etherparse: (src, dst, id, seq, payload), checksums verified.
    fn parse_reply4(p: &[u8], eth: bool) -> (Ipv4Addr, Ipv4Addr, u16, u16, Vec<u8>, u8) {
        let s = if eth {
            SlicedPacket::from_ethernet(p).unwrap()
        } else {
            SlicedPacket::from_ip(p).unwrap()
        };
        let Some(NetSlice::Ipv4(ip)) = s.net else {
            panic!("not IPv4")
        };
        let h = ip.header().to_header();
        assert_eq!(
            h.header_checksum,
            h.calc_header_checksum(),
            "IPv4 header checksum"
        );
        let Some(TransportSlice::Icmpv4(icmp)) = s.transport else {
            panic!("not ICMP")
        };
        let Icmpv4Type::EchoReply(e) = icmp.icmp_type() else {
            panic!("not an echo reply: {:?}", icmp.icmp_type())
        };
        assert_eq!(
            icmp.checksum(),
            icmp.icmp_type().calc_checksum(icmp.payload()),
            "ICMP checksum"
        );
        (
            h.source.into(),
            h.destination.into(),
            e.id,
            e.seq,
            icmp.payload().to_vec(),
            h.time_to_live,
        )
    }

    #[test]
    fn icmp_echo_requests_are_answered_in_both_framings_any_size() {
        for eth in [true, false] {
            for size in [0usize, 56, 1472, 3000, 9000] {
                let mut r = responder(if eth { Framing::Ethernet } else { Framing::Ip });
                let payload: Vec<u8> = (0..size)
                    .map(|i| u8::try_from(i * 7 % 256).unwrap())
                    .collect();
                let req = echo4(eth, PEER4, OWN4, true, 9, &payload);
                let mut buf = in_buf(&req);
                let v = r.handle(&mut buf, req.len());
                assert_eq!(v, Verdict::Reply(req.len()), "eth {eth} size {size}");
                let (src, dst, id, seq, data, ttl) = parse_reply4(&buf[..req.len()], eth);
                assert_eq!((src, dst, id, seq, ttl), (OWN4, PEER4, 0x77, 9, TTL));
                assert_eq!(data, payload);
                if eth {
                    assert_eq!(&buf[..6], &PEER_MAC, "back to the sender");
                    assert_eq!(&buf[6..12], &OWN_MAC);
                    assert_eq!(r.peer_mac(), Some(PEER_MAC), "learned from IP");
                } else {
                    assert_eq!(buf[0] >> 4, 4, "no Ethernet header in IP mode");
                }
            }
        }
    }

    #[test]
    fn ethernet_padding_after_the_ip_packet_is_not_echoed() {
        let mut r = responder(Framing::Ethernet);
        let mut req = echo4(true, PEER4, OWN4, true, 1, &[1, 2]);
        let n = req.len();
        req.resize(60, 0);
        assert_eq!(r.handle(&mut in_buf(&req), 60), Verdict::Reply(n));
    }

    #[test]
    fn wrong_checksums_fragments_and_strangers_are_dropped() {
        let mut r = responder(Framing::Ip);
        let good = echo4(false, PEER4, OWN4, true, 1, &[0; 32]);
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(
            r.handle(&mut in_buf(&bad), bad.len()),
            Verdict::Drop(Discard::BadChecksum)
        );
        let mut bad = good.clone();
        bad[8] ^= 1; // TTL, covered by the header checksum
        assert_eq!(
            r.handle(&mut in_buf(&bad), bad.len()),
            Verdict::Drop(Discard::BadChecksum)
        );
        let other = echo4(false, PEER4, Ipv4Addr::new(10, 0, 0, 1), true, 1, &[]);
        assert_eq!(
            r.handle(&mut in_buf(&other), other.len()),
            Verdict::Drop(Discard::NotForUs)
        );
        // A fragment: set MF and fix the header checksum. It is for reassembly, not answered;
        // its bad ICMP checksum is not looked at yet.
        let mut frag = good.clone();
        *frag.last_mut().unwrap() ^= 1;
        frag[6] |= 0x20;
        frag[10..12].fill(0);
        let c = checksum(&frag[..20]);
        frag[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            r.handle(&mut in_buf(&frag), frag.len()),
            Verdict::Fragment {
                start: 0,
                end: frag.len()
            }
        );
        // A fragment of something else than ICMP is not worth reassembling.
        frag[9] = 17;
        frag[10..12].fill(0);
        let c = checksum(&frag[..20]);
        frag[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            r.handle(&mut in_buf(&frag), frag.len()),
            Verdict::Drop(Discard::Unsupported)
        );
        // In ethernet framing, with padding: the range is the IP packet.
        let mut e = responder(Framing::Ethernet);
        let mut f = echo4(true, PEER4, OWN4, true, 1, &[0; 8]);
        f[ETH_HLEN + 6] = 0x20; // MF, offset 0
        f[ETH_HLEN + 10..ETH_HLEN + 12].fill(0);
        let c = checksum(&f[ETH_HLEN..ETH_HLEN + 20]);
        f[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&c.to_be_bytes());
        let n = f.len();
        f.resize(60, 0);
        assert_eq!(
            e.handle(&mut in_buf(&f), 60),
            Verdict::Fragment {
                start: ETH_HLEN,
                end: n
            }
        );
        // Truncated: the IP total length is more than was received.
        assert_eq!(
            r.handle(&mut in_buf(&good), good.len() - 1),
            Verdict::Drop(Discard::Malformed)
        );
        // UDP: not answered.
        let mut udp = Vec::new();
        PacketBuilder::ipv4(PEER4.octets(), OWN4.octets(), 64)
            .udp(1, 2)
            .write(&mut udp, &[0; 8])
            .unwrap();
        assert_eq!(
            r.handle(&mut in_buf(&udp), udp.len()),
            Verdict::Drop(Discard::Unsupported)
        );
        // In ethernet mode: an unknown ethertype, a runt, a frame to another MAC.
        let mut e = responder(Framing::Ethernet);
        let mut f = echo4(true, PEER4, OWN4, true, 1, &[]);
        f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        assert_eq!(
            e.handle(&mut in_buf(&f), f.len()),
            Verdict::Drop(Discard::Unsupported)
        );
        assert_eq!(
            e.handle(&mut [0u8; 10], 10),
            Verdict::Drop(Discard::Malformed)
        );
        let mut f = echo4(true, PEER4, OWN4, true, 1, &[]);
        f[0] = 0x04;
        assert_eq!(
            e.handle(&mut in_buf(&f), f.len()),
            Verdict::Drop(Discard::NotForUs)
        );
        // An IPv6 packet to an IPv4 responder.
        let mut v6 = Vec::new();
        PacketBuilder::ipv6(peer6().octets(), own6().octets(), 64)
            .icmpv6_echo_request(1, 1)
            .write(&mut v6, &[])
            .unwrap();
        assert_eq!(
            r.handle(&mut in_buf(&v6), v6.len()),
            Verdict::Drop(Discard::Unsupported)
        );
    }

    #[test]
    fn our_pings_round_trip_through_a_peer_responder() {
        for framing in [Framing::Ethernet, Framing::Ip] {
            for (own, peer) in [
                (IpAddr::from(OWN4), IpAddr::from(PEER4)),
                (own6().into(), peer6().into()),
            ] {
                let mut a = Responder::new(framing, OWN_MAC, own, peer, 0x1111).unwrap();
                let mut b = Responder::new(framing, PEER_MAC, peer, own, 0x2222).unwrap();
                let mut buf = vec![0u8; 4096];
                if framing == Framing::Ethernet {
                    assert_eq!(a.write_echo_request(&mut buf, 1, 56), None, "unresolved");
                    // Resolve: a asks, b answers (and learns a), a learns b.
                    let n = a.write_resolve(&mut buf).unwrap();
                    let Verdict::Reply(n) = b.handle(&mut buf, n) else {
                        panic!("{own}: no answer to the resolution")
                    };
                    assert_eq!(b.peer_mac(), Some(OWN_MAC));
                    assert_eq!(a.handle(&mut buf, n), Verdict::Absorbed);
                    assert_eq!(a.peer_mac(), Some(PEER_MAC));
                } else {
                    assert_eq!(a.write_resolve(&mut buf), None);
                }
                for size in [0, 56, 3000] {
                    let n = a.write_echo_request(&mut buf, 7, size).unwrap();
                    let Verdict::Reply(m) = b.handle(&mut buf, n) else {
                        panic!("{own} {framing:?}: no echo reply")
                    };
                    assert_eq!(m, n);
                    assert_eq!(
                        a.handle(&mut buf, m),
                        Verdict::PingReply { seq: 7, len: size }
                    );
                    // Someone else's identifier is not ours.
                    let n = b.write_echo_request(&mut buf, 7, size).unwrap();
                    let Verdict::Reply(m) = a.handle(&mut buf, n) else {
                        panic!("no reply from a")
                    };
                    assert_eq!(
                        b.handle(&mut buf, m),
                        Verdict::PingReply { seq: 7, len: size }
                    );
                    let n = b.write_echo_request(&mut buf, 7, size).unwrap();
                    let Verdict::Reply(m) = a.handle(&mut buf, n) else {
                        panic!("no reply from a")
                    };
                    assert_eq!(a.handle(&mut buf, m), Verdict::Drop(Discard::NotForUs));
                }
                assert_eq!(a.write_echo_request(&mut buf, 1, 5000), None, "too big");
            }
        }
    }

    #[test]
    fn our_echo_requests_parse_as_such() {
        let mut r = responder(Framing::Ethernet);
        let rep = arp_frame(ArpOperation::REPLY, PEER_MAC, PEER4, OWN4, OWN_MAC);
        r.handle(&mut in_buf(&rep), rep.len());
        let mut buf = vec![0u8; 2048];
        let n = r.write_echo_request(&mut buf, 3, 100).unwrap();
        let frame = buf[..n].to_vec();
        let s = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(TransportSlice::Icmpv4(icmp)) = s.transport else {
            panic!()
        };
        let Icmpv4Type::EchoRequest(e) = icmp.icmp_type() else {
            panic!()
        };
        assert_eq!((e.id, e.seq), (0x4242, 3));
        assert_eq!(icmp.payload(), &pattern(100)[..]);
        assert_eq!(
            icmp.checksum(),
            icmp.icmp_type().calc_checksum(icmp.payload())
        );
        let n = r.write_resolve(&mut buf).unwrap();
        let arp = etherparse::ArpPacket::from_slice(&buf[14..n])
            .unwrap()
            .try_eth_ipv4()
            .unwrap();
        assert_eq!(arp.operation, ArpOperation::REQUEST);
        assert_eq!(arp.target_ipv4_addr(), PEER4);
        assert_eq!(&buf[..6], &BROADCAST);
    }

    /// Answers have no DF (they may need fragmenting) and, like our requests, take the next
    /// identification of one counter; requests keep DF.
    #[test]
    fn answers_have_no_df_and_every_datagram_a_new_identification() {
        let mut r = responder(Framing::Ip);
        let mut ids = Vec::new();
        for seq in 0..3 {
            let mut req = echo4(false, PEER4, OWN4, true, seq, &[1; 16]);
            req[6] = 0x40; // DF
            req[10..12].fill(0);
            let c = checksum(&req[..20]);
            req[10..12].copy_from_slice(&c.to_be_bytes());
            let mut buf = in_buf(&req);
            let Verdict::Reply(n) = r.handle(&mut buf, req.len()) else {
                panic!("no reply")
            };
            let h = etherparse::Ipv4Header::from_slice(&buf[..n]).unwrap().0;
            assert!(!h.dont_fragment && !h.more_fragments);
            assert_eq!(h.header_checksum, h.calc_header_checksum());
            ids.push(h.identification);
            let n = r.write_echo_request(&mut buf, seq, 8).unwrap();
            let h = etherparse::Ipv4Header::from_slice(&buf[..n]).unwrap().0;
            assert!(h.dont_fragment);
            assert_eq!(h.header_checksum, h.calc_header_checksum());
            ids.push(h.identification);
        }
        assert_eq!(ids, (0x4242..0x4248).collect::<Vec<u16>>());
    }

    #[test]
    fn ipv6_echo_and_neighbour_solicitation() {
        let mut r = responder6(Framing::Ethernet);
        let mut req = Vec::new();
        PacketBuilder::ethernet2(PEER_MAC, OWN_MAC)
            .ipv6(peer6().octets(), own6().octets(), 64)
            .icmpv6_echo_request(5, 6)
            .write(&mut req, &[9; 3000])
            .unwrap();
        let mut buf = in_buf(&req);
        assert_eq!(r.handle(&mut buf, req.len()), Verdict::Reply(req.len()));
        let s = SlicedPacket::from_ethernet(&buf[..req.len()]).unwrap();
        let Some(NetSlice::Ipv6(ip)) = &s.net else {
            panic!()
        };
        let h = ip.header().to_header();
        assert_eq!(
            (h.source, h.destination),
            (own6().octets(), peer6().octets())
        );
        let Some(TransportSlice::Icmpv6(icmp)) = s.transport else {
            panic!()
        };
        let Icmpv6Type::EchoReply(e) = icmp.icmp_type() else {
            panic!()
        };
        assert_eq!((e.id, e.seq), (5, 6));
        assert_eq!(
            icmp.checksum(),
            icmp.icmp_type()
                .calc_checksum(h.source, h.destination, icmp.payload())
                .unwrap()
        );
        assert_eq!(r.peer_mac(), Some(PEER_MAC));

        // The peer's NS for us (as its write_resolve builds it) gets an NA etherparse accepts.
        let peer = Responder::new(
            Framing::Ethernet,
            PEER_MAC,
            peer6().into(),
            own6().into(),
            1,
        )
        .unwrap();
        let mut buf = vec![0u8; 512];
        let n = peer.write_resolve(&mut buf).unwrap();
        let mut fresh = responder6(Framing::Ethernet);
        let Verdict::Reply(m) = fresh.handle(&mut buf, n) else {
            panic!("no NA")
        };
        assert_eq!(
            fresh.peer_mac(),
            Some(PEER_MAC),
            "learned from the NS option"
        );
        let frame = buf[..m].to_vec();
        let s = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(TransportSlice::Icmpv6(icmp)) = s.transport else {
            panic!()
        };
        let Some(NetSlice::Ipv6(ip)) = &s.net else {
            panic!()
        };
        let h = ip.header().to_header();
        assert_eq!(h.hop_limit, 255);
        assert_eq!(h.destination, peer6().octets());
        assert_eq!(
            icmp.checksum(),
            icmp.icmp_type()
                .calc_checksum(h.source, h.destination, icmp.payload())
                .unwrap()
        );
        assert_eq!(icmp.slice()[0], ND_NA);
        assert_eq!(&icmp.slice()[8..24], &own6().octets());
        assert_eq!(&icmp.slice()[26..32], &OWN_MAC);
        // A routed NS (hop limit not 255) is refused.
        let n = peer.write_resolve(&mut buf).unwrap();
        buf[14 + 7] = 64;
        assert_eq!(
            responder6(Framing::Ethernet).handle(&mut buf, n),
            Verdict::Drop(Discard::Malformed)
        );
    }

    #[test]
    fn mixed_families_are_refused() {
        assert!(matches!(
            Responder::new(Framing::Ip, OWN_MAC, OWN4.into(), peer6().into(), 1),
            Err(ResponderError::MixedFamilies { .. })
        ));
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (complemented: 220d).
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any bytes, any claimed length, any framing, either family: no panic, and a reply
        /// never claims more than the buffer holds.
        #[test]
        fn garbage_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            extra in 0usize..64,
            claimed in 0usize..300,
            eth in proptest::prelude::any::<bool>(),
            v6 in proptest::prelude::any::<bool>(),
        ) {
            let framing = if eth { Framing::Ethernet } else { Framing::Ip };
            let mut r = if v6 { responder6(framing) } else { responder(framing) };
            let mut buf = bytes.clone();
            buf.resize(bytes.len() + extra, 0);
            if let Verdict::Reply(n) = r.handle(&mut buf, claimed) {
                proptest::prop_assert!(n <= buf.len());
            }
        }

        /// Valid echo requests with a mutated byte: no panic, and if still answered, the answer
        /// has valid checksums.
        #[test]
        fn mutated_echo_requests(at in 0usize..120, flip in 1u8..=255, eth in proptest::prelude::any::<bool>()) {
            let mut r = responder(if eth { Framing::Ethernet } else { Framing::Ip });
            let mut req = echo4(eth, PEER4, OWN4, true, 1, &[0x5a; 64]);
            let i = at % req.len();
            req[i] ^= flip;
            let mut buf = in_buf(&req);
            if let Verdict::Reply(n) = r.handle(&mut buf, req.len()) {
                let l3 = if eth { ETH_HLEN } else { 0 };
                let ihl = usize::from(buf[l3] & 0xf) * 4;
                proptest::prop_assert_eq!(checksum(&buf[l3..l3 + ihl]), 0);
                proptest::prop_assert_eq!(checksum(&buf[l3 + ihl..n]), 0);
            }
        }
    }
}
