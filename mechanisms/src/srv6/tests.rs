//! SRv6 tests: kernel fixtures, round trips, every drop reason, and property tests.
//!
//! # Fixtures: packets sent by Linux 6.18's `seg6` encapsulation
//!
//! Captured on this project's testbed (iproute2 6.1, kernel 6.18.44, `seg6_flowlabel` 0) with
//! three namespaces: a host H sends UDP through the head-end A, whose seg6 routes encapsulate
//! toward B, where tcpdump records. The encapsulation runs on A's input path, so A's forwarding
//! then decrements the outer hop limit once: 64 → 63.
//!
//! ```text
//! ip link add hA netns tbsH address 02:00:00:00:01:01 type veth peer name aH netns tbsA address 02:00:00:00:01:02
//! ip link add ua netns tbsA address 02:00:00:00:0a:01 type veth peer name ub netns tbsB address 02:00:00:00:0b:01
//! ip netns exec tbsA sysctl -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
//! ip -n tbsH addr add 10.201.1.1/24 dev hA;     ip -n tbsH addr add fd01:1::1/64 dev hA nodad
//! ip -n tbsA addr add 10.201.1.254/24 dev aH;   ip -n tbsA addr add fd01:1::fe/64 dev aH nodad
//! ip -n tbsH route add default via 10.201.1.254; ip -n tbsH -6 route add default via fd01:1::fe
//! (static neighbours for both gateways, 02:00:00:00:01:02; TX offload off on hA and ua)
//! ip -n tbsA addr add fc00:a::1/64 dev ua nodad; ip -n tbsB addr add fc00:a::2/64 dev ub nodad
//! ip -n tbsA neigh add fc00:a::2 lladdr 02:00:00:00:0b:01 dev ua nud permanent
//! ip -n tbsA -6 route add fc00:b::/64 via fc00:a::2 dev ua
//! ip -n tbsA sr tunsrc set fc00:a::1
//! ip -n tbsA route add 10.201.2.0/24 encap seg6 mode encap segs fc00:b::d4 dev ua
//! ip -n tbsA -6 route add fd01:2::/64 encap seg6 mode encap segs fc00:b::d6 dev ua
//! ip -n tbsA route add 10.201.3.0/24 encap seg6 mode l2encap segs fc00:b::d2 dev ua
//! ip -n tbsA -6 route add fd01:3::/64 encap seg6 mode l2encap segs fc00:b::d2 dev ua
//! ip netns exec tbsB tcpdump -i ub -w srv6.pcap -U ip6 and not icmp6 &
//! ip netns exec tbsH bash -c 'echo -n "vwire srv6 encap4" > /dev/udp/10.201.2.1/7777'
//! ip netns exec tbsH bash -c 'echo -n "vwire srv6 encap6" > /dev/udp/fd01:2::1/7777'
//! ip netns exec tbsH bash -c 'echo -n "vwire srv6 l2 v4" > /dev/udp/10.201.3.1/7777'
//! ip netns exec tbsH bash -c 'echo -n "vwire srv6 l2 v6" > /dev/udp/fd01:3::1/7777'
//! ```
//!
//! What the kernel chose: flow label 0 for an IPv4 payload, the inner label copied for an IPv6
//! one (`seg6_flowlabel` 0), even in l2encap mode when the frame carries IPv6; traffic class
//! likewise. The bytes below are tcpdump's (`tcpdump -r srv6.pcap -xx`), whole frames.

use std::net::Ipv6Addr;

use proptest::prelude::*;

use super::*;
use crate::vxlan::flow;

/// H.Encaps of IPv4/UDP 10.201.1.1:44219 → 10.201.2.1:7777 (SID fc00:b::d4).
const SR_ENCAP4: [u8; 123] = [
    0x02, 0x00, 0x00, 0x00, 0x0b, 0x01, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x45, 0x2b, 0x3f, 0xfc, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfc, 0x00, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0xd4, 0x04, 0x02, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0xfc, 0x00,
    0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xd4, 0x45, 0x00,
    0x00, 0x2d, 0x9d, 0xbf, 0x40, 0x00, 0x40, 0x11, 0x84, 0x6d, 0x0a, 0xc9, 0x01, 0x01, 0x0a, 0xc9,
    0x02, 0x01, 0xac, 0xbb, 0x1e, 0x61, 0x00, 0x19, 0xc9, 0x1f, 0x76, 0x77, 0x69, 0x72, 0x65, 0x20,
    0x73, 0x72, 0x76, 0x36, 0x20, 0x65, 0x6e, 0x63, 0x61, 0x70, 0x34,
];

/// H.Encaps of IPv6/UDP fd01:1::1:37468 → fd01:2::1:7777 (SID fc00:b::d6; inner flow label 0x35eae).
const SR_ENCAP6: [u8; 143] = [
    0x02, 0x00, 0x00, 0x00, 0x0b, 0x01, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x86, 0xdd, 0x60, 0x03,
    0x5e, 0xae, 0x00, 0x59, 0x2b, 0x3f, 0xfc, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfc, 0x00, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0xd6, 0x29, 0x02, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0xfc, 0x00,
    0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xd6, 0x60, 0x03,
    0x5e, 0xae, 0x00, 0x19, 0x11, 0x40, 0xfd, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfd, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x92, 0x5c, 0x1e, 0x61, 0x00, 0x19, 0x00, 0x0a, 0x76, 0x77,
    0x69, 0x72, 0x65, 0x20, 0x73, 0x72, 0x76, 0x36, 0x20, 0x65, 0x6e, 0x63, 0x61, 0x70, 0x36,
];

/// H.Encaps.L2 of an Ethernet frame with IPv4/UDP 10.201.1.1 → 10.201.3.1 (SID fc00:b::d2).
const SR_L2_V4: [u8; 136] = [
    0x02, 0x00, 0x00, 0x00, 0x0b, 0x01, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x52, 0x2b, 0x3f, 0xfc, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfc, 0x00, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0xd2, 0x8f, 0x02, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0xfc, 0x00,
    0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xd2, 0x02, 0x00,
    0x00, 0x00, 0x01, 0x02, 0x02, 0x00, 0x00, 0x00, 0x01, 0x01, 0x08, 0x00, 0x45, 0x00, 0x00, 0x2c,
    0x0e, 0x63, 0x40, 0x00, 0x40, 0x11, 0x12, 0xcb, 0x0a, 0xc9, 0x01, 0x01, 0x0a, 0xc9, 0x03, 0x01,
    0xac, 0xd2, 0x1e, 0x61, 0x00, 0x18, 0x23, 0x83, 0x76, 0x77, 0x69, 0x72, 0x65, 0x20, 0x73, 0x72,
    0x76, 0x36, 0x20, 0x6c, 0x32, 0x20, 0x76, 0x34,
];

/// H.Encaps.L2 of an Ethernet frame with IPv6/UDP fd01:1::1 → fd01:3::1 (SID fc00:b::d2).
const SR_L2_V6: [u8; 156] = [
    0x02, 0x00, 0x00, 0x00, 0x0b, 0x01, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x86, 0xdd, 0x60, 0x08,
    0x12, 0x3c, 0x00, 0x66, 0x2b, 0x3f, 0xfc, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfc, 0x00, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0xd2, 0x8f, 0x02, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0xfc, 0x00,
    0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xd2, 0x02, 0x00,
    0x00, 0x00, 0x01, 0x02, 0x02, 0x00, 0x00, 0x00, 0x01, 0x01, 0x86, 0xdd, 0x60, 0x08, 0x12, 0x3c,
    0x00, 0x18, 0x11, 0x40, 0xfd, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0xfd, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0xc1, 0x23, 0x1e, 0x61, 0x00, 0x18, 0x2e, 0xba, 0x76, 0x77, 0x69, 0x72,
    0x65, 0x20, 0x73, 0x72, 0x76, 0x36, 0x20, 0x6c, 0x32, 0x20, 0x76, 0x36,
];

/// The buffer headroom of vwire's pool (`HEADROOM`): packets start here.
const HR: usize = 256;

fn buf_with(inner: &[u8]) -> Vec<u8> {
    let mut b = vec![0xa5; HR + inner.len() + 64];
    b[HR..HR + inner.len()].copy_from_slice(inner);
    b
}

fn sid(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// The kernel's head-end: tunsrc fc00:a::1, next hop 02:..:0b:01, hop limit 63 as seen on the
/// wire after its own forwarding (see the module docs).
fn params(to: &str) -> EncapParams {
    EncapParams {
        src: sid("fc00:a::1"),
        sid: sid(to),
        local_mac: [2, 0, 0, 0, 0x0a, 1],
        next_hop_mac: [2, 0, 0, 0, 0x0b, 1],
        hop_limit: 63,
    }
}

/// The outer flow label of a frame.
fn label(p: &[u8]) -> u32 {
    u32::from_be_bytes([0, p[15] & 0x0f, p[16], p[17]])
}

/// The frame with its outer flow label zeroed.
fn without_label(p: &[u8]) -> Vec<u8> {
    let mut v = p.to_vec();
    v[15] &= 0xf0;
    v[16] = 0;
    v[17] = 0;
    v
}

#[test]
fn kernel_packets_decap() {
    let cases: [(&[u8], &str, Payload, Behavior); 4] = [
        (&SR_ENCAP4, "fc00:b::d4", Payload::Ipv4, Behavior::EndDx4),
        (&SR_ENCAP6, "fc00:b::d6", Payload::Ipv6, Behavior::EndDx6),
        (&SR_L2_V4, "fc00:b::d2", Payload::Ethernet, Behavior::EndDx2),
        (&SR_L2_V6, "fc00:b::d2", Payload::Ethernet, Behavior::EndDx2),
    ];
    for (pkt, to, payload, behavior) in cases {
        let buf = buf_with(pkt);
        let d = decap(&buf, HR, pkt.len()).unwrap();
        assert_eq!(d.sid, sid(to));
        assert_eq!(d.payload, payload);
        assert!(d.srh);
        assert_eq!((d.offset, d.len), (HR + ENCAP_LEN, pkt.len() - ENCAP_LEN));
        assert_eq!(&buf[d.offset..d.offset + d.len], &pkt[ENCAP_LEN..]);
        for b in [Behavior::EndDx2, Behavior::EndDx4, Behavior::EndDx6] {
            let want = if b == behavior {
                Ok(())
            } else {
                Err(Srv6Error::WrongPayload)
            };
            assert_eq!(b.check(&d), want);
        }
    }
}

/// Our encapsulation of the kernel's payload, against the kernel's packet: identical except
/// the outer flow label (the kernel: 0 or the inner IPv6 label; vwire: the flow hash).
#[test]
fn encap_reproduces_the_kernel_headers() {
    let cases: [(&[u8], &str, bool); 4] = [
        (&SR_ENCAP4, "fc00:b::d4", false),
        (&SR_ENCAP6, "fc00:b::d6", false),
        (&SR_L2_V4, "fc00:b::d2", true),
        (&SR_L2_V6, "fc00:b::d2", true),
    ];
    for (pkt, to, l2) in cases {
        let inner = &pkt[ENCAP_LEN..];
        let mut buf = buf_with(inner);
        let h = EncapHeader::new(&params(to));
        let (o, l) = if l2 {
            h.encap_l2(&mut buf, HR, inner.len())
        } else {
            h.encap_ip(&mut buf, HR, inner.len())
        }
        .unwrap();
        assert_eq!((o, l), (HR - ENCAP_LEN, pkt.len()));
        let ours = &buf[o..o + l];
        assert_eq!(without_label(ours), without_label(pkt), "{to}");
        let hash = if l2 {
            flow::hash_ethernet(inner)
        } else {
            flow::hash_ip(inner)
        };
        assert_eq!(label(ours), hash & 0xf_ffff);
        assert!(
            buf[..o].iter().all(|&b| b == 0xa5),
            "headroom in front untouched"
        );
    }
}

#[test]
fn ipv6_traffic_class_is_copied() {
    let mut inner = SR_ENCAP6[ENCAP_LEN..].to_vec();
    inner[0] = 0x6b; // traffic class 0xb8 (EF)
    inner[1] = 0x83;
    let mut buf = buf_with(&inner);
    let (o, _) = EncapHeader::new(&params("fc00:b::d6"))
        .encap_ip(&mut buf, HR, inner.len())
        .unwrap();
    assert_eq!(buf[o + 14], 0x6b);
    assert_eq!(buf[o + 15] & 0xf0, 0x80);
    // IPv4 (and L2) payloads get traffic class 0, as from Linux.
    let inner = &SR_ENCAP4[ENCAP_LEN..];
    let mut buf = buf_with(inner);
    let (o, _) = EncapHeader::new(&params("fc00:b::d4"))
        .encap_ip(&mut buf, HR, inner.len())
        .unwrap();
    assert_eq!((buf[o + 14], buf[o + 15] & 0xf0), (0x60, 0));
}

fn frame(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| seed.wrapping_add(u8::try_from(i % 251).unwrap()))
        .collect()
}

fn ip_packet(v6: bool, n: usize) -> Vec<u8> {
    let mut p = frame(n, 5);
    p[0] = if v6 { 0x60 } else { 0x45 };
    p
}

#[test]
fn round_trips() {
    let h = EncapHeader::new(&params("fc00:1::42"));
    for n in [14, 15, 60, 64, 1500, 3000] {
        let inner = frame(n, 3);
        let mut buf = buf_with(&inner);
        let (o, l) = h.encap_l2(&mut buf, HR, n).unwrap();
        assert_eq!(
            u16::from_be_bytes([buf[o + 18], buf[o + 19]]),
            u16::try_from(n + 24).unwrap()
        );
        let d = decap(&buf, o, l).unwrap();
        assert_eq!(
            (d.sid, d.payload, d.offset, d.len),
            (sid("fc00:1::42"), Payload::Ethernet, HR, n)
        );
        assert_eq!(&buf[HR..HR + n], &inner[..]);
    }
    for (v6, n) in [
        (false, 20),
        (false, 64),
        (false, 1500),
        (true, 40),
        (true, 64),
        (true, 1500),
    ] {
        let inner = ip_packet(v6, n);
        let mut buf = buf_with(&inner);
        let (o, l) = h.encap_ip(&mut buf, HR, n).unwrap();
        let d = decap(&buf, o, l).unwrap();
        let want = if v6 { Payload::Ipv6 } else { Payload::Ipv4 };
        assert_eq!((d.payload, d.offset, d.len), (want, HR, n));
        assert_eq!(&buf[HR..HR + n], &inner[..]);
    }
}

/// A valid L2 sample: (buffer, offset, len) of a 64-byte frame encapsulated.
fn sample() -> (Vec<u8>, usize, usize) {
    let inner = frame(64, 1);
    let mut buf = buf_with(&inner);
    let (o, l) = EncapHeader::new(&params("fc00:b::d2"))
        .encap_l2(&mut buf, HR, 64)
        .unwrap();
    (buf, o, l)
}

fn decap_edited(edit: impl Fn(&mut Vec<u8>)) -> Result<Decapped, Srv6Error> {
    let (buf, o, l) = sample();
    let mut p = buf[o..o + l].to_vec();
    edit(&mut p);
    decap(&p, 0, p.len())
}

/// Sets the IPv6 payload length to what follows the IPv6 header.
fn fix_len(p: &mut [u8]) {
    let n = u16::try_from(p.len() - 54).unwrap();
    p[18..20].copy_from_slice(&n.to_be_bytes());
}

#[test]
fn without_an_srh_and_with_a_longer_one() {
    // No SRH: the IPv6 header's next header is the payload's.
    let d = decap_edited(|p| {
        p.drain(54..78);
        p[20] = 143;
        fix_len(p);
    })
    .unwrap();
    assert!(!d.srh);
    assert_eq!((d.payload, d.offset, d.len), (Payload::Ethernet, 54, 64));

    // Two segments (the legacy NSM design's [host SID, connection SID]) with segments left 0,
    // and an 8-byte PadN TLV after them.
    let d = decap_edited(|p| {
        let extra: Vec<u8> = [[0xfc; 16].as_slice(), &[4, 6, 0, 0, 0, 0, 0, 0]].concat();
        p.splice(78..78, extra);
        p[55] = 5; // (8 + 32 + 8) / 8 − 1
        p[58] = 1; // last entry
        fix_len(p);
    })
    .unwrap();
    assert_eq!((d.offset, d.len), (78 + 24, 64));

    // One 802.1Q tag on the outer frame; trailing padding after the IPv6 packet.
    let d = decap_edited(|p| {
        p.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        p.extend_from_slice(&[0; 6]);
    })
    .unwrap();
    assert_eq!((d.offset, d.len), (82, 64));
}

#[test]
fn outer_vlan_tags_follow_the_wire_rule() {
    // Up to two tags, 802.1Q or 802.1ad, as `vwire_dataplane::wire::ethernet::walk`.
    for (tags, at) in [(1, 82), (2, 86)] {
        let d = decap_edited(|p| {
            for i in 0..tags {
                let tpid: [u8; 2] = if i == 0 { [0x88, 0xa8] } else { [0x81, 0x00] };
                p.splice(12..12, [tpid[0], tpid[1], 0, 0x64]);
            }
        })
        .unwrap();
        assert_eq!((d.payload, d.offset, d.len), (Payload::Ethernet, at, 64));
    }
    assert_eq!(
        decap_edited(|p| {
            for _ in 0..3 {
                p.splice(12..12, [0x81, 0x00, 0, 0x64]);
            }
        }),
        Err(Srv6Error::NotIpv6)
    );
}

#[test]
fn every_decap_drop_reason() {
    use Srv6Error as E;
    let (buf, o, l) = sample();
    assert!(decap(&buf, o, l).is_ok());
    assert_eq!(decap(&buf, o, buf.len()), Err(E::OutOfBounds));
    assert_eq!(decap(&buf, usize::MAX, 1), Err(E::OutOfBounds));
    assert_eq!(decap(&buf, o, 13), Err(E::Truncated));
    assert_eq!(decap(&buf, o, 53), Err(E::Truncated));
    assert_eq!(decap(&buf, o, 77), Err(E::BadIpLength));
    assert_eq!(
        decap_edited(|p| p[12..14].copy_from_slice(&[8, 0])),
        Err(E::NotIpv6)
    );
    assert_eq!(decap_edited(|p| p[14] = 0x40), Err(E::BadIpVersion));
    assert_eq!(
        decap_edited(|p| {
            p.truncate(60);
            fix_len(p);
        }),
        Err(E::Truncated),
        "SRH cut short"
    );
    assert_eq!(
        decap_edited(|p| p[56] = 2),
        Err(E::NotSrh),
        "type 2 routing header"
    );
    assert_eq!(
        decap_edited(|p| p[55] = 0),
        Err(E::BadSrh),
        "no room for a segment"
    );
    assert_eq!(
        decap_edited(|p| p[58] = 1),
        Err(E::BadSrh),
        "last entry beyond the list"
    );
    assert_eq!(
        decap_edited(|p| p[55] = 20),
        Err(E::BadSrh),
        "SRH beyond the packet"
    );
    assert_eq!(decap_edited(|p| p[57] = 1), Err(E::SegmentsLeft));
    assert_eq!(
        decap_edited(|p| p[54] = 6),
        Err(E::UnknownPayload),
        "TCP to a SID"
    );
    assert_eq!(
        decap_edited(|p| p[54] = 59),
        Err(E::UnknownPayload),
        "no next header"
    );
    assert_eq!(
        decap_edited(|p| p[54] = 60),
        Err(E::ExtHeader),
        "dest opts after the SRH"
    );
    assert_eq!(
        decap_edited(|p| p[54] = 43),
        Err(E::ExtHeader),
        "a second routing header"
    );
    assert_eq!(decap_edited(|p| p[20] = 0), Err(E::ExtHeader), "hop-by-hop");
    assert_eq!(decap_edited(|p| p[20] = 44), Err(E::Fragment));
    assert_eq!(decap_edited(|p| p[54] = 44), Err(E::Fragment));
    assert_eq!(
        decap_edited(|p| {
            p.truncate(78 + 13);
            fix_len(p);
        }),
        Err(E::InnerTooShort),
        "13-byte Ethernet frame"
    );
    assert_eq!(
        decap_edited(|p| {
            p[54] = 41;
            p.truncate(78 + 39);
            fix_len(p);
        }),
        Err(E::InnerTooShort),
        "39-byte IPv6 packet"
    );
    assert_eq!(
        decap_edited(|p| {
            p[54] = 4;
            p.truncate(78 + 19);
            fix_len(p);
        }),
        Err(E::InnerTooShort),
        "19-byte IPv4 packet"
    );
}

#[test]
fn every_encap_error_leaves_the_buffer_untouched() {
    use Srv6Error as E;
    let h = EncapHeader::new(&params("fc00:b::d2"));
    let mut buf = vec![0x45u8; HR + 128];
    buf[HR + 1] = 0x00;
    let copy = buf.clone();
    assert_eq!(h.encap_l2(&mut buf, 77, 64), Err(E::NoHeadroom));
    assert_eq!(h.encap_ip(&mut buf, 77, 64), Err(E::NoHeadroom));
    assert_eq!(h.encap_l2(&mut buf, HR, 129), Err(E::OutOfBounds));
    assert_eq!(h.encap_l2(&mut buf, usize::MAX, 2), Err(E::OutOfBounds));
    assert_eq!(h.encap_ip(&mut buf, HR, usize::MAX), Err(E::OutOfBounds));
    assert_eq!(h.encap_ip(&mut buf, HR + 1, 10), Err(E::PayloadNotIp));
    assert_eq!(h.encap_ip(&mut buf, HR, 0), Err(E::PayloadNotIp));
    assert_eq!(buf, copy);
    let mut big = vec![0x60u8; HR + 65_600];
    let copy = big.clone();
    assert_eq!(h.encap_ip(&mut big, HR, 65_535 - 23), Err(E::TooLong));
    assert_eq!(h.encap_l2(&mut big, HR, 65_535 - 23), Err(E::TooLong));
    assert_eq!(big, copy);
    assert!(h.encap_l2(&mut big, HR, 65_535 - 24).is_ok());
}

#[test]
fn constants_and_reasons() {
    assert_eq!(ENCAP_LEN, 78);
    assert_eq!(u32::try_from(IPV6_SRH_LEN).unwrap(), MTU_OVERHEAD_IP);
    assert_eq!(MTU_OVERHEAD_IP + 14 + 4, MTU_OVERHEAD_ETHERNET);
    for p in [Payload::Ethernet, Payload::Ipv4, Payload::Ipv6] {
        assert_eq!(Payload::from_next_header(p.next_header()), Some(p));
    }
    assert_eq!(Payload::from_next_header(17), None);
    for (i, e) in Srv6Error::ALL.iter().enumerate() {
        assert_eq!(e.index(), i);
        assert!(e.reason().starts_with("srv6_"));
        assert!(!e.to_string().is_empty());
    }
    let mut names: Vec<_> = Srv6Error::ALL.iter().map(|e| e.reason()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Srv6Error::ALL.len());
}

proptest! {
    #[test]
    fn decap_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        offset in 0usize..220,
        len in 0usize..240,
    ) {
        if let Ok(d) = decap(&bytes, offset, len) {
            prop_assert!(d.offset >= offset && d.offset + d.len <= offset + len);
        }
    }

    /// Random edits of a valid packet reach the SRH checks that random bytes rarely do.
    #[test]
    fn decap_never_panics_on_mutated_packets(
        edits in proptest::collection::vec((0usize..150, any::<u8>()), 0..8),
        cut in 0usize..150,
    ) {
        let (mut buf, o, l) = sample();
        for (at, v) in edits {
            if at < l {
                buf[o + at] = v;
            }
        }
        let l = l.saturating_sub(cut % 4 * cut);
        if let Ok(d) = decap(&buf, o, l) {
            prop_assert!(d.offset >= o && d.offset + d.len <= o + l);
            prop_assert!(d.len >= 14);
        }
    }

    #[test]
    fn encap_never_panics_and_stays_in_the_buffer(
        size in 0usize..400,
        offset in 0usize..450,
        len in prop_oneof![0usize..400, Just(usize::MAX)],
        first in any::<u8>(),
    ) {
        let mut buf = vec![first; size];
        let h = EncapHeader::new(&params("fc00::1"));
        let results = [h.encap_l2(&mut buf, offset, len), h.encap_ip(&mut buf, offset, len)];
        for (o, l) in results.into_iter().flatten() {
            prop_assert!(o + l <= size);
        }
    }

    #[test]
    fn any_payload_round_trips(
        inner in proptest::collection::vec(any::<u8>(), 40..1600),
        kind in 0u8..3,
    ) {
        let mut inner = inner;
        let h = EncapHeader::new(&params("fc00:1::7"));
        let mut buf;
        let r = match kind {
            0 => { buf = buf_with(&inner); h.encap_l2(&mut buf, HR, inner.len()) }
            k => {
                inner[0] = if k == 1 { 0x45 } else { 0x60 };
                buf = buf_with(&inner);
                h.encap_ip(&mut buf, HR, inner.len())
            }
        };
        let (o, l) = r.unwrap();
        let d = decap(&buf, o, l).unwrap();
        prop_assert_eq!(d.payload.next_header(), [143, 4, 41][usize::from(kind)]);
        prop_assert_eq!(&buf[d.offset..d.offset + d.len], &inner[..]);
    }
}
