//! Completing partial TCP/UDP checksums.
//!
//! Linux hands a packet to a virtual device (veth, tap) with `CHECKSUM_PARTIAL`: the L4 checksum
//! field holds only the folded pseudo-header sum, and the device is trusted to finish it. When
//! vwire takes such a frame off a veth with XDP and sends it out of another device, nobody
//! finishes it and the receiver drops it. [`complete_partial`] finds exactly those packets (the
//! checksum is wrong *and* equals the pseudo-header sum) and completes them the way checksum
//! offload hardware would: the one's complement of the sum of the L4 bytes, which already include
//! the pseudo-header sum in the checksum field. Packets with a correct checksum, or with a wrong
//! one that is not a partial sum, are left untouched: vwire does not hide corruption.
//!
//! Handles Ethernet with up to two VLAN tags, IPv4 (not fragments) and IPv6 without extension
//! headers, carrying TCP or UDP. Anything else, including truncated or malformed packets, is left
//! untouched. Never panics, whatever the input.
//!
//! The walk (Ethernet, VLAN tags, IP) and the sums are [`crate::wire`]'s; sums are native-order
//! one's complement values, so no byte swapping is needed until a value is compared or stored,
//! and both sides of a comparison are native too.

use crate::wire::checksum::{self as csum, fold};
use crate::wire::{ethernet, EtherType, IpProtocol, Ipv4Packet, Ipv6Packet, IPV6_HLEN};

/// What [`complete_partial`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not IPv4/IPv6 TCP/UDP, a fragment, or malformed: untouched.
    NotApplicable,
    /// The checksum was already correct (or absent, UDP over IPv4).
    Valid,
    /// The checksum was partial and is now complete.
    Completed,
    /// The checksum is wrong but not a partial sum: untouched.
    Invalid,
}

/// Where the L4 header is and what covers it.
struct L4 {
    start: usize,
    len: usize,
    /// The IP protocol, raw (the enum only names values: a round trip through it costs on this
    /// path).
    proto: u8,
    /// Pseudo-header sum, native order, folded.
    pseudo: u16,
    ipv4: bool,
}

impl L4 {
    /// Where the checksum field is, if this is TCP or UDP with a whole header.
    #[inline]
    fn checksum_at(&self) -> Option<usize> {
        const TCP: u8 = IpProtocol::Tcp.raw();
        const UDP: u8 = IpProtocol::Udp.raw();
        match self.proto {
            TCP if self.len >= 20 => Some(self.start + 16),
            UDP if self.len >= 8 => Some(self.start + 6),
            _ => None,
        }
    }
}

fn locate_l4(pkt: &[u8]) -> Option<L4> {
    let l3 = ethernet::walk(pkt).ok()?;
    let ip_pkt = pkt.get(l3.offset..)?;
    match l3.ethertype {
        EtherType::Ipv4 => {
            let ip = Ipv4Packet::new_checked(ip_pkt).ok()?;
            if ip.is_fragment() {
                return None;
            }
            let proto = ip.protocol_raw();
            let hlen = ip.header_len();
            let len = ip.total_len() - hlen; // new_checked: total ≥ header length
            let len16 = u16::try_from(len).ok()?;
            let pseudo = csum::pseudo_v4(&ip.src_bytes(), &ip.dst_bytes(), proto, len16);
            Some(L4 {
                start: l3.offset + hlen,
                len,
                proto,
                pseudo,
                ipv4: true,
            })
        }
        EtherType::Ipv6 => {
            let ip = Ipv6Packet::new_checked(ip_pkt).ok()?;
            let len = ip.payload_len();
            let proto = ip.next_header_raw();
            let len32 = u32::try_from(len).ok()?;
            let pseudo = csum::pseudo_v6(&ip.src_bytes(), &ip.dst_bytes(), proto, len32);
            Some(L4 {
                start: l3.offset + IPV6_HLEN,
                len,
                proto,
                pseudo,
                ipv4: false,
            })
        }
        _ => None,
    }
}

/// Completes the L4 checksum of `pkt` (an Ethernet frame) if, and only if, it is partial. See the
/// module docs.
pub fn complete_partial(pkt: &mut [u8]) -> Outcome {
    let Some(l4) = locate_l4(pkt) else {
        return Outcome::NotApplicable;
    };
    let Some(check_at) = l4.checksum_at() else {
        return Outcome::NotApplicable;
    };
    let check = u16::from_ne_bytes([pkt[check_at], pkt[check_at + 1]]);
    let udp = l4.proto == IpProtocol::Udp.raw();
    if udp && l4.ipv4 && check == 0 {
        return Outcome::Valid; // RFC 768: no checksum
    }
    let segment_sum = csum::sum(&pkt[l4.start..l4.start + l4.len]);
    if fold(u64::from(segment_sum) + u64::from(l4.pseudo)) == 0xffff {
        return Outcome::Valid;
    }
    if check != l4.pseudo {
        return Outcome::Invalid;
    }
    // The checksum field holds the pseudo-header sum, so the segment sum is already the full sum.
    // RFC 768: for UDP a computed zero is sent as all ones.
    pkt[check_at..check_at + 2].copy_from_slice(&csum::finish(segment_sum, udp));
    Outcome::Completed
}

/// The reverse of [`complete_partial`], for tests and benches: replaces the L4 checksum of a
/// TCP/UDP frame with the pseudo-header sum only, as the kernel hands it to a veth. Returns false
/// (and changes nothing) for frames [`complete_partial`] does not handle.
pub fn make_partial(pkt: &mut [u8]) -> bool {
    let Some(l4) = locate_l4(pkt) else {
        return false;
    };
    let Some(at) = l4.checksum_at() else {
        return false;
    };
    pkt[at..at + 2].copy_from_slice(&l4.pseudo.to_ne_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::sum as ones_sum;
    use crate::wire::ETH_HLEN;
    use etherparse::PacketBuilder;

    fn udp4(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1234, 5678);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    fn tcp6(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(80, 8080, 12345, 4096);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    fn tcp4_vlan(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .single_vlan(etherparse::VlanId::try_new(7).unwrap())
            .ipv4([192, 168, 1, 1], [192, 168, 1, 2], 64)
            .tcp(80, 8080, 1, 4096);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    #[test]
    fn partial_checksums_are_completed_to_the_true_value() {
        for (mut pkt, off) in [
            (udp4(b"hello partial world"), 6),
            (udp4(&[0xab; 1001]), 6),
            (tcp6(&[7; 1400]), 16),
            (tcp4_vlan(b"x"), 16),
        ] {
            let good = pkt.clone();
            assert!(make_partial(&mut pkt));
            let at = locate_l4(&pkt).unwrap().start + off;
            assert_ne!(pkt[at..at + 2], good[at..at + 2], "fixture must differ");
            assert_eq!(complete_partial(&mut pkt), Outcome::Completed);
            assert_eq!(pkt, good);
            // Parsed again by an independent implementation: the checksum verifies.
            assert_eq!(complete_partial(&mut pkt), Outcome::Valid);
        }
    }

    #[test]
    fn correct_and_corrupt_packets_are_left_alone() {
        let mut pkt = tcp6(b"abc");
        let good = pkt.clone();
        assert_eq!(complete_partial(&mut pkt), Outcome::Valid);
        assert_eq!(pkt, good);
        let at = locate_l4(&pkt).unwrap().start + 16;
        pkt[at] ^= 0x55;
        let corrupt = pkt.clone();
        assert_eq!(complete_partial(&mut pkt), Outcome::Invalid);
        assert_eq!(pkt, corrupt);
    }

    #[test]
    fn udp4_without_checksum_is_valid() {
        let mut pkt = udp4(b"abc");
        let at = locate_l4(&pkt).unwrap().start + 6;
        pkt[at..at + 2].copy_from_slice(&[0, 0]);
        assert_eq!(complete_partial(&mut pkt), Outcome::Valid);
    }

    #[test]
    fn fragments_truncations_and_non_ip_are_not_applicable() {
        let mut frag = udp4(b"abcdefgh");
        frag[ETH_HLEN + 6] = 0x20; // MF
        assert_eq!(complete_partial(&mut frag), Outcome::NotApplicable);
        let full = tcp6(&[1; 100]);
        for cut in 0..full.len() - 1 {
            let mut t = full[..cut].to_vec();
            assert_eq!(
                complete_partial(&mut t),
                Outcome::NotApplicable,
                "cut at {cut}"
            );
        }
        let mut arp = vec![0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(complete_partial(&mut arp), Outcome::NotApplicable);
    }

    #[test]
    fn ones_sum_matches_rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (before complement).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(u16::from_be(ones_sum(&data)), 0xddf2);
        let odd = [0x00, 0x01, 0xf2];
        assert_eq!(u16::from_be(ones_sum(&odd)), 0xf201);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(mut data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = complete_partial(&mut data);
        }
    }
}
