//! A cheap flow hash for tunnel entropy: the VXLAN UDP source port (RFC 7348 §5) and the SRv6
//! outer flow label (RFC 6437), so underlay ECMP and receive-side scaling spread flows while
//! the packets of one flow stay in order.
//!
//! The key is what Linux's flow dissector would use for the same purpose: the IP addresses, the
//! protocol, and the TCP/UDP/SCTP ports when the L4 header follows the IP header directly and the
//! packet is not a fragment (fragments of one datagram carry ports in the first piece only, so no
//! fragment hashes its ports: all pieces of a datagram take the same path). For an Ethernet frame
//! the MACs and the EtherType are hashed too, so non-IP traffic (ARP) spreads by station.
//!
//! The hash is a multiply-xorshift over native-order 64-bit words, six of them at most for
//! IPv6: a few ns. It is not keyed and not stable across byte orders; it only needs to be the
//! same for every packet of a flow on one machine. Any input, however short or malformed, hashes
//! (to whatever is readable) without panicking.

use vwire_dataplane::wire::{
    ethernet, EtherType, EthernetFrame, IpProtocol, Ipv4Packet, Ipv6Packet,
};

const K: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline]
fn mix(h: u64, w: u64) -> u64 {
    let h = (h ^ w).wrapping_mul(K);
    h ^ (h >> 29)
}

#[inline]
fn word(p: &[u8], at: usize) -> u64 {
    match p.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        Some(w) => u64::from_ne_bytes(*w),
        None => 0,
    }
}

#[inline]
fn word4(p: &[u8], at: usize) -> u64 {
    match p.get(at..).and_then(<[u8]>::first_chunk::<4>) {
        Some(w) => u64::from(u32::from_ne_bytes(*w)),
        None => 0,
    }
}

#[inline]
fn finish(h: u64) -> u32 {
    let h = h.wrapping_mul(K);
    // The high half of the product is the well-mixed one.
    #[allow(clippy::cast_possible_truncation)] // the high 32 bits, by construction
    {
        (h >> 32) as u32
    }
}

fn ip_key(h: u64, pkt: &[u8]) -> u64 {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => {
            let Some(ip) = pkt.first_chunk::<20>() else {
                return h;
            };
            // 20 bytes present, so the fixed-field getters are safe; nothing else is checked:
            // the hash takes what is readable.
            let ip = Ipv4Packet::new_unchecked(&ip[..]);
            // The raw protocol number is the key; the enum only answers `has_ports`.
            let proto = ip.protocol_raw();
            let mut h = mix(h, word(pkt, 12)); // src + dst
            let ports = if !ip.is_fragment() && IpProtocol::from_raw(proto).has_ports() {
                word4(pkt, ip.header_len())
            } else {
                0
            };
            h = mix(h, (u64::from(proto) << 32) | ports);
            h
        }
        Some(6) => {
            let Some(ip) = pkt.first_chunk::<40>() else {
                return h;
            };
            let nh = Ipv6Packet::new_unchecked(&ip[..]).next_header_raw();
            let mut h = h;
            for at in [8, 16, 24, 32] {
                h = mix(h, word(pkt, at)); // src + dst
            }
            let ports = if IpProtocol::from_raw(nh).has_ports() {
                word4(pkt, 40)
            } else {
                0
            };
            mix(h, (u64::from(nh) << 32) | ports)
        }
        _ => h,
    }
}

/// The flow hash of an IP packet (first byte = the IP version nibble). Anything else hashes to
/// a constant.
#[must_use]
#[inline]
pub fn hash_ip(pkt: &[u8]) -> u32 {
    finish(ip_key(0, pkt))
}

/// The flow hash of an Ethernet frame: MACs, EtherType and VLAN tags (as many as
/// [`ethernet::walk`] skips), then the IP key when the frame carries IPv4 or IPv6.
#[must_use]
#[inline]
pub fn hash_ethernet(frame: &[u8]) -> u32 {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return finish(word(frame, 0));
    };
    let mut h = mix(0, word(frame, 0)); // dst MAC + 2 bytes of src
    h = mix(h, word(frame, 6)); // src MAC + EtherType
    let Ok(l3) = ethernet::walk_from(frame, eth.ethertype()) else {
        return finish(h);
    };
    for tag in (ethernet::HEADER_LEN..l3.offset).step_by(ethernet::VLAN_TAG_LEN) {
        h = mix(h, word4(frame, tag));
    }
    if matches!(l3.ethertype, EtherType::Ipv4 | EtherType::Ipv6) {
        if let Some(ip) = frame.get(l3.offset..) {
            h = ip_key(h, ip);
        }
    }
    finish(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4(src_port: u16) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20..22].copy_from_slice(&src_port.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p
    }

    #[test]
    fn ports_change_the_hash_but_payload_does_not() {
        let a = udp4(1000);
        let b = udp4(1001);
        assert_ne!(hash_ip(&a), hash_ip(&b));
        let mut a2 = a.clone();
        a2.extend_from_slice(b"payload");
        assert_eq!(hash_ip(&a), hash_ip(&a2));
    }

    #[test]
    fn fragments_ignore_ports() {
        let mut a = udp4(1000);
        let mut b = udp4(2000);
        for p in [&mut a, &mut b] {
            p[6] = 0x20; // MF: first fragment
        }
        assert_eq!(hash_ip(&a), hash_ip(&b));
    }

    #[test]
    fn ethernet_includes_the_ip_key() {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let mut g = f.clone();
        f.extend_from_slice(&udp4(1000));
        g.extend_from_slice(&udp4(1001));
        assert_ne!(hash_ethernet(&f), hash_ethernet(&g));
    }

    #[test]
    fn tagged_frames_include_the_ip_key() {
        // One 802.1Q tag as before, and now 802.1ad and QinQ too (the wire module's rule).
        for tags in [
            &[0x81u8, 0x00][..],
            &[0x88, 0xa8],
            &[0x88, 0xa8, 0, 7, 0x81, 0x00],
        ] {
            let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
            f.extend_from_slice(tags);
            f.extend_from_slice(&[0, 7, 0x08, 0x00]);
            let mut g = f.clone();
            f.extend_from_slice(&udp4(1000));
            g.extend_from_slice(&udp4(1001));
            assert_ne!(hash_ethernet(&f), hash_ethernet(&g), "{tags:x?}");
        }
    }

    #[test]
    fn spreads_over_source_ports() {
        // 4096 flows differing only in the source port land in 64 buckets, none empty and none
        // over three times its share.
        let mut buckets = [0u32; 64];
        for port in 0..4096u16 {
            buckets[(hash_ip(&udp4(port)) >> 26) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| n > 0 && n < 192), "{buckets:?}");
    }

    #[test]
    fn short_inputs_do_not_panic() {
        for n in 0..60 {
            let v = vec![0x45u8; n];
            let _ = hash_ip(&v);
            let _ = hash_ethernet(&v);
            let v = vec![0x60u8; n];
            let _ = hash_ip(&v);
        }
    }
}
