//! The stream builder: the frames a transmit port sends, built once before the run (cold), and
//! the per-packet stamp (hot).
//!
//! A stream is UDP over IPv4 or IPv6 with fixed MACs and base addresses and ports, optionally
//! encapsulated in VXLAN (outer Ethernet/IPv4-or-IPv6/UDP 4789/VXLAN around the whole inner
//! frame) or SRv6 (outer Ethernet/IPv6/SRH around the inner Ethernet frame: H.Encaps.L2, next
//! header 143). `flows` varies the fields named in `vary` by the flow number (0..flows), so
//! a port sends `flows` distinct 5-tuples in turn.
//!
//! Sizes are **Ethernet frame sizes including the 4-byte FCS**, as RFC 2544 counts them: a
//! "64-byte" frame is 60 bytes in a buffer. The smallest frame is the headers plus the
//! [`SIG_LEN`]-byte signature plus the FCS: 64 for UDP/IPv4, 84 for UDP/IPv6; encapsulation adds
//! its outer headers. Sizes below that are refused with [`StreamError::TooSmall`].
//!
//! The signature sits right after the innermost UDP header: a magic byte, a tag byte (the
//! trial's number in the high nibble, the sending stream in the low one), the sequence number
//! and the transmit time in nanoseconds (both big-endian u64). Every template holds it zeroed
//! with its UDP checksums computed over the zeroed signature; [`Template::stamp`] writes the
//! sequence number and time and patches the checksums incrementally (RFC 1624), so a stamped
//! frame is a valid packet (IPv6 requires the UDP checksum) at the cost of a few additions.
//!
//! Building is bounded: [`MAX_TEMPLATE_BYTES`] caps `flows × sizes` (all templates are copied
//! out of memory built here, never allocated on the packet path).

use std::net::IpAddr;

/// Length of the signature after the innermost UDP header.
pub const SIG_LEN: usize = 18;
/// The signature's first byte ("§"): tells pktgen's frames from anything else on the port.
pub const MAGIC: u8 = 0xa7;
/// Bytes of FCS counted in a frame size but not present in a buffer.
pub const FCS: usize = 4;
/// The UDP port of VXLAN (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;
/// All the templates of a port together may take this much memory (64 MiB: 1024 flows of
/// 9000-byte frames with room to spare, and far beyond any run's cache footprint that still
/// measures what it means to).
pub const MAX_TEMPLATE_BYTES: usize = 64 << 20;
/// The simple IMIX (7:4:1 of 64, 594 and 1518-byte frames), as a repeating pattern.
pub const IMIX: [usize; 12] = [64, 594, 64, 1518, 64, 594, 64, 64, 594, 64, 594, 64];

/// Errors of this module.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    /// the frame cannot hold the headers and the signature
    #[error("a {size}-byte frame cannot hold this stream: it needs at least {min} bytes (headers, {SIG_LEN}-byte signature, FCS)")]
    TooSmall {
        /// the size asked for
        size: usize,
        /// the smallest that works
        min: usize,
    },
    /// the frame does not fit a buffer of the port
    #[error("a {size}-byte frame is larger than the {max} bytes this port can send")]
    TooLarge {
        /// the size asked for
        size: usize,
        /// the largest that works (FCS included)
        max: usize,
    },
    /// source and destination addresses of different families
    #[error("{what}: source {src} and destination {dst} must both be IPv4 or both IPv6")]
    MixedFamilies {
        /// which pair
        what: &'static str,
        /// the source
        src: IpAddr,
        /// the destination
        dst: IpAddr,
    },
    /// SRv6 needs IPv6 outer addresses
    #[error("SRv6 needs an IPv6 outer source and segments")]
    Srv6NeedsIpv6,
    /// an SRv6 stream needs at least one segment
    #[error("SRv6 needs at least one segment, and at most 16")]
    Srv6Segments,
    /// too many flows × sizes
    #[error("{flows} flows × {sizes} sizes need {bytes} bytes of templates, more than {MAX_TEMPLATE_BYTES}; use fewer flows")]
    TooManyTemplates {
        /// flows
        flows: usize,
        /// distinct sizes
        sizes: usize,
        /// bytes needed
        bytes: usize,
    },
    /// no flows
    #[error("--flows must be at least 1 (and at most 65536)")]
    Flows,
}

/// Which header fields vary with the flow number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Vary {
    /// UDP source port: base + flow.
    pub src_port: bool,
    /// UDP destination port: base + flow.
    pub dst_port: bool,
    /// Source address: base + flow (added to the last 32 bits).
    pub src_ip: bool,
    /// Destination address: base + flow.
    pub dst_ip: bool,
}

/// An encapsulation around the UDP stream.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Encap {
    /// Plain UDP.
    None,
    /// VXLAN with this VNI; the outer addresses are [`Outer`]'s.
    Vxlan {
        /// the VNI (24 bits)
        vni: u32,
    },
    /// SRv6 H.Encaps.L2 to these segments (the first is the first one visited).
    Srv6 {
        /// the segment list, in visiting order
        segments: Vec<std::net::Ipv6Addr>,
    },
}

/// The outer headers of an encapsulated stream.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Outer {
    /// outer source MAC
    pub src_mac: [u8; 6],
    /// outer destination MAC
    pub dst_mac: [u8; 6],
    /// outer source address (the tunnel source)
    pub src_ip: IpAddr,
    /// outer destination address (the VTEP; unused for SRv6, whose first segment is it)
    pub dst_ip: IpAddr,
}

/// Everything that defines a stream except the frame sizes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StreamSpec {
    /// source MAC (of the inner frame when encapsulated)
    pub src_mac: [u8; 6],
    /// destination MAC
    pub dst_mac: [u8; 6],
    /// source address
    pub src_ip: IpAddr,
    /// destination address
    pub dst_ip: IpAddr,
    /// UDP source port
    pub src_port: u16,
    /// UDP destination port
    pub dst_port: u16,
    /// number of flows (1..=65536)
    pub flows: usize,
    /// what varies per flow
    pub vary: Vary,
    /// the encapsulation
    pub encap: Encap,
    /// outer headers (used when `encap` is not None)
    pub outer: Outer,
}

impl StreamSpec {
    /// Header bytes in front of the signature.
    pub fn header_len(&self) -> usize {
        let inner = 14 + ip_len(&self.src_ip) + 8;
        inner
            + match &self.encap {
                Encap::None => 0,
                Encap::Vxlan { .. } => 14 + ip_len(&self.outer.src_ip) + 8 + 8,
                Encap::Srv6 { segments } => 14 + 40 + 8 + 16 * segments.len(),
            }
    }

    /// The smallest frame size (FCS included) this stream can use.
    pub fn min_size(&self) -> usize {
        self.header_len() + SIG_LEN + FCS
    }

    /// Checks the spec on its own (not the sizes).
    pub fn validate(&self) -> Result<(), StreamError> {
        if self.flows == 0 || self.flows > 65536 {
            return Err(StreamError::Flows);
        }
        if self.src_ip.is_ipv4() != self.dst_ip.is_ipv4() {
            return Err(StreamError::MixedFamilies {
                what: "inner addresses",
                src: self.src_ip,
                dst: self.dst_ip,
            });
        }
        match &self.encap {
            Encap::None => {}
            Encap::Vxlan { .. } => {
                if self.outer.src_ip.is_ipv4() != self.outer.dst_ip.is_ipv4() {
                    return Err(StreamError::MixedFamilies {
                        what: "outer addresses",
                        src: self.outer.src_ip,
                        dst: self.outer.dst_ip,
                    });
                }
            }
            Encap::Srv6 { segments } => {
                if segments.is_empty() || segments.len() > 16 {
                    return Err(StreamError::Srv6Segments);
                }
                if !self.outer.src_ip.is_ipv6() {
                    return Err(StreamError::Srv6NeedsIpv6);
                }
            }
        }
        Ok(())
    }

    /// Checks one frame size against the stream and a port's largest packet (`max_packet`
    /// buffer bytes).
    pub fn check_size(&self, size: usize, max_packet: usize) -> Result<(), StreamError> {
        if size < self.min_size() {
            return Err(StreamError::TooSmall {
                size,
                min: self.min_size(),
            });
        }
        if size - FCS > max_packet {
            return Err(StreamError::TooLarge {
                size,
                max: max_packet + FCS,
            });
        }
        Ok(())
    }
}

fn ip_len(a: &IpAddr) -> usize {
    if a.is_ipv4() {
        20
    } else {
        40
    }
}

/// Adds `n` to the last 32 bits of an address.
fn add_to_ip(a: IpAddr, n: u32) -> IpAddr {
    match a {
        IpAddr::V4(v) => IpAddr::V4(u32::from(v).wrapping_add(n).into()),
        IpAddr::V6(v) => {
            let x = u128::from(v);
            #[allow(clippy::cast_possible_truncation)] // the low 32 bits, on purpose
            let low = (x as u32).wrapping_add(n);
            IpAddr::V6(((x & !0xffff_ffffu128) | u128::from(low)).into())
        }
    }
}

/// An incremental checksum fix: the UDP checksum at `field` covers the signature; `partial` is
/// the one's-complement sum of everything it covers with the sequence number and time zeroed.
#[derive(Clone, Copy, Debug, Default)]
struct CsumFix {
    field: u16,
    partial: u16,
    /// The signature's sequence number starts at an odd offset from the covered data's start,
    /// so its words are byte-swapped relative to the checksum's words.
    odd: bool,
    /// For an outer checksum: the previous fix's field is covered too (summed as zero in
    /// `partial`), at an odd offset if true.
    covers_prev_odd: bool,
}

/// One prebuilt frame.
#[derive(Clone, Debug)]
pub struct Template {
    /// The frame (without FCS), signature zeroed.
    pub bytes: Box<[u8]>,
    /// Offset of the signature.
    pub sig: u16,
    fixes: [CsumFix; 2],
    nfixes: u8,
}

impl Template {
    /// Writes the tag, sequence number and time into `frame` (a copy of `self.bytes`) and
    /// patches its UDP checksums. Hot: no allocation, a few additions per checksum.
    #[inline(always)]
    pub fn stamp(&self, frame: &mut [u8], tag: u8, seq: u64, ns: u64) {
        let s = usize::from(self.sig);
        let Some(sig) = frame.get_mut(s..s + SIG_LEN) else {
            return;
        };
        let sig: &mut [u8; SIG_LEN] = match sig.try_into() {
            Ok(a) => a,
            Err(_) => return, // cannot happen: the range is SIG_LEN long
        };
        sig[1] = tag;
        sig[2..10].copy_from_slice(&seq.to_be_bytes());
        sig[10..18].copy_from_slice(&ns.to_be_bytes());
        // The stamped words: the tag is the low byte of the word that starts at the signature
        // (the template summed it as zero), then the sequence number and the time.
        let words = u64::from(sum_u64(seq)) + u64::from(sum_u64(ns)) + u64::from(tag);
        let mut prev: u16 = 0;
        for f in &self.fixes[..usize::from(self.nfixes)] {
            let mut add = fold(words);
            if f.odd {
                add = add.swap_bytes();
            }
            // An outer checksum also covers the inner checksum just written.
            let inner = if f.covers_prev_odd {
                prev.swap_bytes()
            } else {
                prev
            };
            let total = csum_add(csum_add(f.partial, add), inner);
            let c = !total;
            let c = if c == 0 { 0xffff } else { c };
            let at = usize::from(f.field);
            if let Some(field) = frame.get_mut(at..at + 2) {
                field.copy_from_slice(&c.to_be_bytes());
            }
            prev = c;
        }
    }
}

/// The one's-complement sum of the four big-endian 16-bit words of `v`, unfolded.
#[inline]
fn sum_u64(v: u64) -> u32 {
    let w = |shift: u32| u32::from(u16::try_from((v >> shift) & 0xffff).unwrap_or(0));
    w(48) + w(32) + w(16) + w(0)
}

/// Builds frames. Cold.
struct Writer {
    b: Vec<u8>,
}

impl Writer {
    fn put(&mut self, bytes: &[u8]) {
        self.b.extend_from_slice(bytes);
    }
    fn u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }
    fn eth(&mut self, dst: [u8; 6], src: [u8; 6], ethertype: u16) {
        self.put(&dst);
        self.put(&src);
        self.u16(ethertype);
    }
    /// An IP header for `payload` bytes of protocol `proto`; returns its offset.
    fn ip(&mut self, src: IpAddr, dst: IpAddr, proto: u8, payload: usize) -> usize {
        let at = self.b.len();
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = u16::try_from(20 + payload).unwrap_or(u16::MAX);
                let mut h = [0u8; 20];
                h[0] = 0x45;
                h[2..4].copy_from_slice(&total.to_be_bytes());
                h[6] = 0x40; // DF
                h[8] = 64;
                h[9] = proto;
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                let c = !fold(sum_be(&h));
                h[10..12].copy_from_slice(&c.to_be_bytes());
                self.put(&h);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let plen = u16::try_from(payload).unwrap_or(u16::MAX);
                self.put(&[0x60, 0, 0, 0]);
                self.u16(plen);
                self.put(&[proto, 64]);
                self.put(&s.octets());
                self.put(&d.octets());
            }
            _ => unreachable!("families checked by StreamSpec::validate"),
        }
        at
    }
}

/// The one's-complement sum (folded, not inverted) of the pseudo-header of a UDP datagram
/// (RFC 768; RFC 8200 §8.1), in big-endian words.
fn pseudo(src: IpAddr, dst: IpAddr, len: usize) -> u16 {
    let addrs = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum_be(&s.octets()) + sum_be(&d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => sum_be(&s.octets()) + sum_be(&d.octets()),
        _ => 0,
    };
    let len = len as u64; // below 2^16 for any frame
    fold(addrs + 17 + (len >> 16) + (len & 0xffff))
}

/// The one's-complement sum of `data` as big-endian 16-bit words (an odd last byte is padded
/// with zero), unfolded.
pub fn sum_be(data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    let mut s: u64 = chunks
        .by_ref()
        .map(|c| u64::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    if let [last] = chunks.remainder() {
        s += u64::from(*last) << 8;
    }
    s
}

/// Folds a one's-complement sum to 16 bits.
#[inline]
pub fn fold(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    u16::try_from(s).unwrap_or(0xffff) // folded: below 2^16, so never the fallback
}

#[inline]
fn csum_add(a: u16, b: u16) -> u16 {
    fold(u64::from(a) + u64::from(b))
}

/// Builds the frame of flow `flow` at `size` bytes (FCS included). The size must have passed
/// [`StreamSpec::check_size`].
pub fn build(spec: &StreamSpec, flow: u32, size: usize) -> Template {
    let len = size - FCS;
    let flow16 = u16::try_from(flow % 65536).unwrap_or(0);
    let src_ip = if spec.vary.src_ip {
        add_to_ip(spec.src_ip, flow)
    } else {
        spec.src_ip
    };
    let dst_ip = if spec.vary.dst_ip {
        add_to_ip(spec.dst_ip, flow)
    } else {
        spec.dst_ip
    };
    let sport = if spec.vary.src_port {
        spec.src_port.wrapping_add(flow16)
    } else {
        spec.src_port
    };
    let dport = if spec.vary.dst_port {
        spec.dst_port.wrapping_add(flow16)
    } else {
        spec.dst_port
    };
    let mut w = Writer {
        b: Vec::with_capacity(len),
    };
    let ethertype = |ip: &IpAddr| if ip.is_ipv4() { 0x0800 } else { 0x86dd };
    // Outer headers first; remember where the outer UDP (VXLAN) starts for its checksum.
    let mut outer_udp: Option<usize> = None;
    let inner_len = len - (spec.header_len() - (14 + ip_len(&spec.src_ip) + 8));
    match &spec.encap {
        Encap::None => {}
        Encap::Vxlan { vni } => {
            let o = &spec.outer;
            w.eth(o.dst_mac, o.src_mac, ethertype(&o.src_ip));
            // The outer UDP source port varies with the flow, as VTEPs do for ECMP (RFC 7348 §5).
            w.ip(o.src_ip, o.dst_ip, 17, 16 + inner_len);
            outer_udp = Some(w.b.len());
            w.u16(49152 | (flow16 & 0x3fff));
            w.u16(VXLAN_PORT);
            w.u16(u16::try_from(16 + inner_len).unwrap_or(u16::MAX));
            w.u16(0);
            w.put(&[0x08, 0, 0, 0]);
            w.put(&(vni << 8).to_be_bytes());
        }
        Encap::Srv6 { segments } => {
            let o = &spec.outer;
            let n = segments.len();
            w.eth(o.dst_mac, o.src_mac, 0x86dd);
            let first = segments
                .first()
                .copied()
                .unwrap_or(std::net::Ipv6Addr::UNSPECIFIED);
            w.ip(o.src_ip, IpAddr::V6(first), 43, 8 + 16 * n + inner_len);
            // SRH: next header 143 (Ethernet), hdr ext len 2n, type 4, segments left n-1,
            // last entry n-1, flags 0, tag 0; the list in reverse order (RFC 8754 §2).
            let last = u8::try_from(n - 1).unwrap_or(0);
            w.put(&[
                143,
                u8::try_from(2 * n).unwrap_or(0),
                4,
                last,
                last,
                0,
                0,
                0,
            ]);
            for s in segments.iter().rev() {
                w.put(&s.octets());
            }
        }
    }
    // Inner frame.
    w.eth(spec.dst_mac, spec.src_mac, ethertype(&src_ip));
    let ip_payload = inner_len - 14 - ip_len(&src_ip);
    w.ip(src_ip, dst_ip, 17, ip_payload);
    let udp = w.b.len();
    w.u16(sport);
    w.u16(dport);
    w.u16(u16::try_from(ip_payload).unwrap_or(u16::MAX));
    w.u16(0);
    let sig = w.b.len();
    w.put(&[MAGIC, 0]);
    w.b.resize(len, 0); // sequence number, time, padding: zero
    let bytes = w.b;
    let mut fixes = [CsumFix::default(); 2];
    let mut nfixes;
    // Inner UDP checksum. Partial sums are taken with the signature's stamped fields zero,
    // and with the checksum field itself zero.
    {
        let covered = &bytes[udp..];
        let sum = fold(u64::from(pseudo(src_ip, dst_ip, covered.len())) + sum_be(covered));
        fixes[0] = CsumFix {
            field: u16::try_from(udp + 6).unwrap_or(0),
            partial: sum,
            odd: (sig - udp) % 2 == 1,
            covers_prev_odd: false,
        };
        nfixes = 1;
    }
    // Outer UDP checksum: required over IPv6 (RFC 8200 §8.1); zero (none) over IPv4, as VTEPs
    // send. It covers the inner checksum field, still zero here, which `stamp` adds back.
    if let (Some(ou), true) = (outer_udp, spec.outer.src_ip.is_ipv6()) {
        let covered = &bytes[ou..];
        let sum = fold(
            u64::from(pseudo(spec.outer.src_ip, spec.outer.dst_ip, covered.len()))
                + sum_be(covered),
        );
        fixes[1] = CsumFix {
            field: u16::try_from(ou + 6).unwrap_or(0),
            partial: sum,
            odd: (sig - ou) % 2 == 1,
            covers_prev_odd: (udp + 6 - ou) % 2 == 1,
        };
        nfixes = 2;
    }
    let mut t = Template {
        bytes: bytes.into_boxed_slice(),
        sig: u16::try_from(sig).unwrap_or(0),
        fixes,
        nfixes,
    };
    // The template itself carries valid checksums (tag, sequence number and time zero).
    let mut copy = t.bytes.clone();
    t.stamp(&mut copy, 0, 0, 0);
    t.bytes = copy;
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rx;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn spec(v6: bool) -> StreamSpec {
        let (s, d): (IpAddr, IpAddr) = if v6 {
            ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap())
        } else {
            (
                Ipv4Addr::new(10, 0, 0, 1).into(),
                Ipv4Addr::new(10, 0, 0, 2).into(),
            )
        };
        StreamSpec {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: s,
            dst_ip: d,
            src_port: 1000,
            dst_port: 2000,
            flows: 1,
            vary: Vary::default(),
            encap: Encap::None,
            outer: Outer {
                src_mac: [2, 0, 0, 0, 1, 1],
                dst_mac: [2, 0, 0, 0, 1, 2],
                src_ip: "fd97::1".parse().unwrap(),
                dst_ip: "fd97::2".parse().unwrap(),
            },
        }
    }

    /// Checks the UDP checksum of the datagram at `udp` against the IP header at `ip`
    /// (a full recomputation: the sum over pseudo-header and datagram, checksum included, is
    /// all ones).
    fn udp_ok(f: &[u8], ip: usize, udp: usize) -> bool {
        let v6 = f[ip] >> 4 == 6;
        let (src, dst): (IpAddr, IpAddr) = if v6 {
            let s: [u8; 16] = f[ip + 8..ip + 24].try_into().unwrap();
            let d: [u8; 16] = f[ip + 24..ip + 40].try_into().unwrap();
            (Ipv6Addr::from(s).into(), Ipv6Addr::from(d).into())
        } else {
            let s: [u8; 4] = f[ip + 12..ip + 16].try_into().unwrap();
            let d: [u8; 4] = f[ip + 16..ip + 20].try_into().unwrap();
            (Ipv4Addr::from(s).into(), Ipv4Addr::from(d).into())
        };
        let len = usize::from(u16::from_be_bytes([f[udp + 4], f[udp + 5]]));
        assert_eq!(
            udp + len,
            f.len(),
            "UDP length covers the rest of the frame"
        );
        fold(u64::from(pseudo(src, dst, len)) + sum_be(&f[udp..])) == 0xffff
    }

    fn stamped(t: &Template, tag: u8, seq: u64, ns: u64) -> Vec<u8> {
        let mut f = t.bytes.to_vec();
        t.stamp(&mut f, tag, seq, ns);
        f
    }

    #[test]
    fn udp_ipv4_64_bytes_is_a_valid_frame_with_the_signature() {
        let s = spec(false);
        assert_eq!(s.min_size(), 64);
        let t = build(&s, 0, 64);
        assert_eq!(t.bytes.len(), 60);
        for (seq, ns) in [
            (0, 0),
            (1, 2),
            (u64::MAX, 0x0123_4567_89ab_cdef),
            (0xffff, 0xffff_0000),
        ] {
            let f = stamped(&t, 0x35, seq, ns);
            assert_eq!(&f[12..14], &[0x08, 0x00]);
            assert_eq!(fold(sum_be(&f[14..34])), 0xffff, "IPv4 header checksum");
            assert_eq!(u16::from_be_bytes([f[16], f[17]]), 46, "total length");
            assert!(
                udp_ok(&f, 14, 34),
                "UDP checksum for seq {seq:#x} ns {ns:#x}"
            );
            let etherparsed = etherparse::SlicedPacket::from_ethernet(&f).expect("etherparse");
            assert!(etherparsed.transport.is_some());
            assert_eq!(rx::parse(&f), Some(rx::Signature { tag: 0x35, seq, ns }));
        }
    }

    #[test]
    fn udp_ipv6_needs_84_bytes_and_carries_a_checksum() {
        let s = spec(true);
        assert_eq!(s.min_size(), 84);
        assert_eq!(
            s.check_size(64, 3840),
            Err(StreamError::TooSmall { size: 64, min: 84 })
        );
        assert_eq!(
            s.check_size(9000, 3840),
            Err(StreamError::TooLarge {
                size: 9000,
                max: 3844
            })
        );
        let t = build(&s, 0, 1518);
        assert_eq!(t.bytes.len(), 1514);
        let f = stamped(&t, 1, 77, 123_456_789);
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 1460, "payload length");
        assert!(udp_ok(&f, 14, 54));
        assert_eq!(rx::parse(&f).map(|s| s.seq), Some(77));
    }

    #[test]
    fn flows_vary_the_chosen_fields() {
        let mut s = spec(false);
        s.flows = 4;
        s.vary = Vary {
            src_port: true,
            dst_ip: true,
            ..Vary::default()
        };
        let f = build(&s, 3, 64).bytes;
        assert_eq!(u16::from_be_bytes([f[34], f[35]]), 1003);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 2000);
        assert_eq!(&f[26..30], &[10, 0, 0, 1]);
        assert_eq!(&f[30..34], &[10, 0, 0, 5]);
        assert!(udp_ok(&f, 14, 34));
    }

    #[test]
    fn vxlan_over_ipv6_patches_both_checksums() {
        let mut s = spec(false);
        s.encap = Encap::Vxlan { vni: 0x123456 };
        assert_eq!(s.min_size(), 64 + 14 + 40 + 16);
        let t = build(&s, 2, 200);
        for seq in [5u64, 0xfffe_fffd_0001_0002] {
            let f = stamped(&t, 7, seq, seq.rotate_left(7));
            assert_eq!(f.len(), 196);
            assert_eq!(&f[12..14], &[0x86, 0xdd]);
            let ou = 14 + 40;
            assert_eq!(u16::from_be_bytes([f[ou + 2], f[ou + 3]]), VXLAN_PORT);
            assert_eq!(&f[ou + 8..ou + 16], &[0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
            assert!(udp_ok(&f, 14, ou), "outer UDP checksum");
            let inner = ou + 16;
            assert!(udp_ok(&f, inner + 14, inner + 34), "inner UDP checksum");
            assert_eq!(rx::parse(&f).map(|s| (s.tag, s.seq)), Some((7, seq)));
        }
        // Over IPv4 the outer checksum is zero (none).
        s.outer.src_ip = Ipv4Addr::new(10, 97, 0, 1).into();
        s.outer.dst_ip = Ipv4Addr::new(10, 97, 0, 2).into();
        let f = stamped(&build(&s, 0, 128), 0, 9, 9);
        assert_eq!(&f[14 + 20 + 6..14 + 20 + 8], &[0, 0]);
        assert_eq!(rx::parse(&f).map(|s| s.seq), Some(9));
    }

    #[test]
    fn srv6_l2_encap_has_the_segment_list_reversed() {
        let mut s = spec(false);
        let a: Ipv6Addr = "fc00:b::d2".parse().unwrap();
        let b: Ipv6Addr = "fc00:c::d2".parse().unwrap();
        s.encap = Encap::Srv6 {
            segments: vec![a, b],
        };
        assert_eq!(s.min_size(), 64 + 14 + 40 + 8 + 32);
        let f = stamped(&build(&s, 0, 160), 2, 42, 1);
        assert_eq!(f[14 + 6], 43, "next header: routing");
        assert_eq!(
            &f[14 + 24..14 + 40],
            &a.octets(),
            "destination: the first segment"
        );
        let srh = 54;
        assert_eq!(&f[srh..srh + 5], &[143, 4, 4, 1, 1]);
        assert_eq!(
            &f[srh + 8..srh + 24],
            &b.octets(),
            "Segment List[0] is the last"
        );
        assert_eq!(&f[srh + 24..srh + 40], &a.octets());
        assert_eq!(rx::parse(&f).map(|s| s.seq), Some(42));
        s.encap = Encap::Srv6 { segments: vec![] };
        assert_eq!(s.validate(), Err(StreamError::Srv6Segments));
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = spec(false);
        s.dst_ip = "fd00::2".parse().unwrap();
        assert!(matches!(
            s.validate(),
            Err(StreamError::MixedFamilies { .. })
        ));
        let mut s = spec(false);
        s.flows = 0;
        assert_eq!(s.validate(), Err(StreamError::Flows));
    }

    #[test]
    fn foreign_frames_have_no_signature() {
        let mut f = build(&spec(false), 0, 64).bytes.to_vec();
        f[42] = 0; // the magic
        assert_eq!(rx::parse(&f), None);
        assert_eq!(rx::parse(&f[..40]), None);
        assert_eq!(rx::parse(&[]), None);
        let arp = [0xffu8; 42];
        assert_eq!(rx::parse(&arp), None);
    }
}
