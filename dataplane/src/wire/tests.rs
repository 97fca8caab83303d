//! Tests of the views: fixtures built by `etherparse`, truncations, VLAN cases, and arbitrary
//! bytes (no getter of a checked view panics).

use super::*;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn udp4(payload: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(1234, 4789);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn udp6(payload: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv6([0xfd; 16], [0xfe; 16], 7)
        .udp(1, 2);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// `frame` with VLAN tags (TPIDs) inserted after the MACs.
fn tagged(frame: &[u8], tpids: &[u16]) -> Vec<u8> {
    let mut v = frame[..12].to_vec();
    for (i, t) in tpids.iter().enumerate() {
        v.extend_from_slice(&t.to_be_bytes());
        v.extend_from_slice(&(100 + u16::try_from(i).unwrap()).to_be_bytes());
    }
    v.extend_from_slice(&frame[12..]);
    v
}

#[test]
fn ethernet_ipv4_udp_fields() {
    let f = udp4(b"hello");
    let l3 = ethernet::walk(&f).unwrap();
    assert_eq!(
        l3,
        L3 {
            offset: 14,
            ethertype: EtherType::Ipv4
        }
    );
    let eth = EthernetFrame::new_checked(&f[..]).unwrap();
    // etherparse takes the source first.
    assert_eq!(eth.src_addr(), [2, 0, 0, 0, 0, 1]);
    assert_eq!(eth.dst_addr(), [2, 0, 0, 0, 0, 2]);
    let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
    assert_eq!((ip.header_len(), ip.total_len(), ip.ttl()), (20, 33, 64));
    assert_eq!(ip.protocol(), IpProtocol::Udp);
    assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
    assert!(ip.verify_checksum());
    assert!(!ip.is_fragment());
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(
        (udp.src_port(), udp.dst_port(), udp.len()),
        (1234, 4789, 13)
    );
    assert_eq!(udp.payload(), b"hello");
}

#[test]
fn ipv6_fields() {
    let f = udp6(b"abc");
    let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
    assert_eq!((ip.payload_len(), ip.hop_limit()), (11, 7));
    assert_eq!(ip.next_header(), IpProtocol::Udp);
    assert_eq!(ip.src_addr(), Ipv6Addr::from([0xfd; 16]));
    assert_eq!(ip.dst_addr(), Ipv6Addr::from([0xfe; 16]));
    assert_eq!(ip.payload().len(), 11);
    let mut b = f[14..].to_vec();
    let mut w = Ipv6Packet::new_unchecked(&mut b[..]);
    w.set_ver_tc_flow(0xab, 0x12345);
    assert_eq!(
        (w.version(), w.traffic_class(), w.flow_label()),
        (6, 0xab, 0x12345)
    );
}

#[test]
fn every_truncation_is_an_error() {
    let f = udp4(b"0123456789");
    for cut in 0..f.len() {
        let t = &f[..cut];
        if cut < 14 {
            assert_eq!(ethernet::walk(t), Err(Error::Truncated));
            assert_eq!(EthernetFrame::new_checked(t).err(), Some(Error::Truncated));
            continue;
        }
        let ip = &t[14..];
        let want = if ip.len() < 20 {
            Error::Truncated
        } else {
            Error::BadLength // the total length reaches beyond the cut
        };
        assert_eq!(Ipv4Packet::new_checked(ip).err(), Some(want), "cut {cut}");
    }
    let f = udp6(b"0123456789");
    for cut in 14..f.len() {
        let ip = &f[14..cut];
        let want = if ip.len() < 40 {
            Error::Truncated
        } else {
            Error::BadLength
        };
        assert_eq!(Ipv6Packet::new_checked(ip).err(), Some(want), "cut {cut}");
    }
    let udp = &f[54..];
    for cut in 0..udp.len() {
        let want = if cut < 8 {
            Error::Truncated
        } else {
            Error::BadLength
        };
        assert_eq!(UdpPacket::new_checked(&udp[..cut]).err(), Some(want));
    }
    assert_eq!(
        VxlanHeader::new_checked(&[0u8; 7][..]).err(),
        Some(Error::Truncated)
    );
    assert_eq!(
        SrhPacket::new_checked(&[0u8; 7][..]).err(),
        Some(Error::Truncated)
    );
}

#[test]
fn ipv4_checks_in_order() {
    let f = udp4(b"x");
    let mut ip = f[14..].to_vec();
    ip[0] = 0x65;
    assert_eq!(
        Ipv4Packet::new_checked(&ip[..]).err(),
        Some(Error::BadVersion)
    );
    ip[0] = 0x44;
    assert_eq!(
        Ipv4Packet::new_checked(&ip[..]).err(),
        Some(Error::BadHeaderLen)
    );
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&19u16.to_be_bytes());
    assert_eq!(
        Ipv4Packet::new_checked(&ip[..]).err(),
        Some(Error::BadLength)
    );
    let mut ip = f[14..].to_vec();
    ip[8] ^= 1;
    assert!(!Ipv4Packet::new_checked(&ip[..]).unwrap().verify_checksum());
    Ipv4Packet::new_unchecked(&mut ip[..]).fill_checksum();
    assert!(Ipv4Packet::new_checked(&ip[..]).unwrap().verify_checksum());
    ip[6] = 0x20;
    assert!(Ipv4Packet::new_checked(&ip[..]).unwrap().is_fragment());
}

#[test]
fn vlan_tags() {
    let f = udp4(b"x");
    for (tpids, offset, ethertype) in [
        (&[][..], 14, EtherType::Ipv4),
        (&[0x8100][..], 18, EtherType::Ipv4),
        (&[0x88a8][..], 18, EtherType::Ipv4),
        (&[0x88a8, 0x8100][..], 22, EtherType::Ipv4),
        (&[0x8100, 0x8100][..], 22, EtherType::Ipv4),
        // A third tag is not skipped: not IP to any caller.
        (&[0x88a8, 0x8100, 0x8100][..], 22, EtherType::Vlan),
    ] {
        let t = tagged(&f, tpids);
        assert_eq!(
            ethernet::walk(&t),
            Ok(L3 { offset, ethertype }),
            "{tpids:x?}"
        );
        if offset == 22 || !tpids.is_empty() {
            // A tag cut anywhere is truncated.
            for cut in 14..offset {
                assert_eq!(
                    ethernet::walk(&t[..cut]),
                    Err(Error::Truncated),
                    "{tpids:x?} {cut}"
                );
            }
        }
    }
}

#[test]
fn srh_fields_and_lengths() {
    let sid = Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0xd2);
    let mut b = [0u8; 24];
    let mut s = SrhPacket::new_checked(&mut b[..]).unwrap();
    s.write_fixed(IpProtocol::Ethernet, 1, 0);
    s.set_segment(0, sid);
    s.set_segment(1, sid); // outside: ignored
    let s = SrhPacket::new_checked(&b[..]).unwrap();
    assert_eq!(s.next_header(), IpProtocol::Ethernet);
    assert_eq!(
        (
            s.header_len(),
            s.routing_type(),
            s.segments_left(),
            s.last_entry()
        ),
        (24, 4, 0, 0)
    );
    assert_eq!(s.segment(0), Some(sid));
    assert_eq!(s.segment(1), None);
    assert_eq!(s.check_segments(), Ok(()));
    assert_eq!(
        SrhPacket::new_checked(&b[..23]).unwrap().check_segments(),
        Err(Error::BadLength)
    );
    b[4] = 1; // two segments do not fit 24 bytes
    assert_eq!(
        SrhPacket::new_checked(&b[..]).unwrap().check_segments(),
        Err(Error::BadLength)
    );
}

#[test]
fn vxlan_header() {
    let mut b = [0xffu8; 8];
    VxlanHeader::new_unchecked(&mut b[..]).write([0x12, 0x34, 0x56]);
    assert_eq!(b, [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
    let v = VxlanHeader::new_checked(&b[..]).unwrap();
    assert!(v.has_vni());
    assert_eq!(v.vni(), 0x12_3456);
}

#[test]
fn enums_round_trip() {
    for v in 0..=u16::MAX {
        assert_eq!(u16::from(EtherType::from(v)), v);
    }
    for v in 0..=u8::MAX {
        assert_eq!(u8::from(IpProtocol::from(v)), v);
        let ext = matches!(v, 0 | 43 | 51 | 60 | 135 | 139 | 140 | 253 | 254);
        assert_eq!(IpProtocol::from(v).is_ipv6_extension(), ext, "{v}");
    }
    assert_eq!(EtherType::from(0x86dd), EtherType::Ipv6);
    assert_eq!(IpProtocol::from(58), IpProtocol::Icmpv6);
}

proptest! {
    #[test]
    fn views_never_panic_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..128)) {
        let d = &data[..];
        if let Ok(l3) = ethernet::walk(d) {
            prop_assert!(l3.offset <= d.len());
        }
        if let Ok(e) = EthernetFrame::new_checked(d) {
            let _ = (e.dst_addr(), e.src_addr(), e.ethertype(), e.payload());
        }
        if let Ok(p) = Ipv4Packet::new_checked(d) {
            let _ = (p.version(), p.ident(), p.more_frags(), p.frag_offset(), p.is_fragment());
            let _ = (p.ttl(), p.protocol(), p.checksum(), p.src_addr(), p.dst_addr());
            let _ = (p.header(), p.verify_checksum());
            prop_assert!(p.header().len() + p.payload().len() == p.total_len());
        }
        if let Ok(p) = Ipv6Packet::new_checked(d) {
            let _ = (p.traffic_class(), p.flow_label(), p.next_header(), p.hop_limit());
            let _ = (p.src_addr(), p.dst_addr());
            prop_assert_eq!(p.payload().len(), p.payload_len());
        }
        if let Ok(p) = UdpPacket::new_checked(d) {
            let _ = (p.src_port(), p.dst_port(), p.checksum_bytes());
            prop_assert_eq!(p.payload().len() + 8, p.len());
        }
        if let Ok(p) = VxlanHeader::new_checked(d) {
            let _ = (p.flags(), p.has_vni(), p.vni());
        }
        if let Ok(p) = SrhPacket::new_checked(d) {
            let _ = (p.next_header(), p.header_len(), p.routing_type(), p.segments_left());
            let ok = p.check_segments().is_ok();
            for i in 0..=usize::from(p.last_entry()) {
                prop_assert!(p.segment(i).is_some() || !ok);
            }
        }
    }

    #[test]
    fn setters_never_panic_on_checked_views(mut data in proptest::collection::vec(any::<u8>(), 0..128), v in any::<u16>()) {
        if let Ok(mut p) = Ipv4Packet::new_checked(&mut data[..]) {
            p.set_total_len(v);
            p.set_version_and_header_len(usize::from(v));
            p.fill_checksum();
            let _ = (p.header().len(), p.payload().len(), p.payload_mut().len());
        }
        if let Ok(mut p) = Ipv6Packet::new_checked(&mut data[..]) {
            p.set_payload_len(v);
            let _ = (p.payload().len(), p.payload_mut().len());
        }
        if let Ok(mut p) = UdpPacket::new_checked(&mut data[..]) {
            p.set_len(v);
            let _ = p.payload();
        }
        if let Ok(mut p) = SrhPacket::new_checked(&mut data[..]) {
            p.set_segment(usize::from(v), Ipv6Addr::LOCALHOST);
        }
    }
}
