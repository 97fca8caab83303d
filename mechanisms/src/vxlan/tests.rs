//! VXLAN tests: kernel fixtures, round trips, every drop reason, and property tests.
//!
//! # Fixtures: packets sent by Linux 6.18's own vxlan driver
//!
//! Captured on this project's testbed (iproute2 6.1, kernel 6.18.44) with two namespaces on a
//! veth pair; TX checksum offload off on the sender so the UDP checksum on the wire is final:
//!
//! ```text
//! ip netns add tbxA; ip netns add tbxB
//! ip link add ua netns tbxA address 02:00:00:00:0a:01 type veth peer name ub netns tbxB address 02:00:00:00:0b:01
//! ip netns exec tbxA ethtool -K ua tx off
//! ip -n tbxA addr add 10.97.0.1/24 dev ua;  ip -n tbxB addr add 10.97.0.2/24 dev ub
//! ip -n tbxA addr add fd97::1/64 dev ua nodad;  ip -n tbxB addr add fd97::2/64 dev ub nodad
//! ip -n tbxA neigh add 10.97.0.2 lladdr 02:00:00:00:0b:01 dev ua nud permanent
//! ip -n tbxA neigh add fd97::2 lladdr 02:00:00:00:0b:01 dev ua nud permanent
//! ip -n tbxA link add vx4 address 02:00:00:00:0a:10 type vxlan id 1193046 local 10.97.0.1 \
//!     remote 10.97.0.2 dstport 4789 dev ua nolearning
//! ip -n tbxA addr add 10.200.0.1/24 dev vx4; ip -n tbxA link set vx4 up
//! ip -n tbxA neigh add 10.200.0.2 lladdr 02:00:00:00:0b:10 dev vx4 nud permanent
//! ip -n tbxA link add vx6 address 02:00:00:00:0a:20 type vxlan id 11259375 local fd97::1 \
//!     remote fd97::2 dstport 4789 dev ua nolearning
//! ip -n tbxA addr add fd00:200::1/64 dev vx6 nodad; ip -n tbxA link set vx6 up
//! ip -n tbxA neigh add fd00:200::2 lladdr 02:00:00:00:0b:20 dev vx6 nud permanent
//! ip netns exec tbxB tcpdump -i ub -w vxlan.pcap -U udp port 4789 &
//! ip netns exec tbxA bash -c 'echo -n "vwire vxlan v4" > /dev/udp/10.200.0.2/7777'
//! ip netns exec tbxA bash -c 'echo -n "vwire vxlan v6" > /dev/udp/fd00:200::2/7777'
//! ```
//!
//! `ip -d link` shows the defaults in force: `udpcsum noudp6zerocsumtx noudp6zerocsumrx ttl
//! auto`, `df` unset, no flow label. So the kernel sends: IPv4 DF clear with a counter ID and a
//! UDP checksum; IPv6 flow label 0; source ports from `ip_local_port_range` (35015 and 44993
//! here). The bytes below are tcpdump's (`tcpdump -r vxlan.pcap -xx`), whole frames.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::encap::src_port;
use super::*;

/// IPv4 underlay, VNI 0x123456, inner IPv4/UDP 10.200.0.1:51854 → 10.200.0.2:7777.
const VX4: [u8; 106] = [
    0x02, 0x00, 0x00, 0x00, 0x0b, 0x01, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x5c, 0x80, 0x9d, 0x00, 0x00, 0x40, 0x11, 0xe5, 0x2f, 0x0a, 0x61, 0x00, 0x01, 0x0a, 0x61,
    0x00, 0x02, 0x88, 0xc7, 0x12, 0xb5, 0x00, 0x48, 0xd3, 0x82, 0x08, 0x00, 0x00, 0x00, 0x12, 0x34,
    0x56, 0x00, 0x02, 0x00, 0x00, 0x00, 0x0b, 0x10, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x10, 0x08, 0x00,
    0x45, 0x00, 0x00, 0x2a, 0xc2, 0x91, 0x40, 0x00, 0x40, 0x11, 0x62, 0x9f, 0x0a, 0xc8, 0x00, 0x01,
    0x0a, 0xc8, 0x00, 0x02, 0xca, 0x8e, 0x1e, 0x61, 0x00, 0x16, 0xf5, 0x06, 0x76, 0x77, 0x69, 0x72,
    0x65, 0x20, 0x76, 0x78, 0x6c, 0x61, 0x6e, 0x20, 0x76, 0x34,
];

/// IPv6 underlay, VNI 0xabcdef, inner IPv6/UDP fd00:200::1:39647 → fd00:200::2:7777.
const VX6: [u8; 146] = [
    0x02, 0x00, 0x00, 0x00, 0x0b, 0x01, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x5c, 0x11, 0x40, 0xfd, 0x97, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfd, 0x97, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xaf, 0xc1, 0x12, 0xb5, 0x00, 0x5c, 0x4b, 0x43, 0x08, 0x00,
    0x00, 0x00, 0xab, 0xcd, 0xef, 0x00, 0x02, 0x00, 0x00, 0x00, 0x0b, 0x20, 0x02, 0x00, 0x00, 0x00,
    0x0a, 0x20, 0x86, 0xdd, 0x60, 0x0e, 0x42, 0x20, 0x00, 0x16, 0x11, 0x40, 0xfd, 0x00, 0x02, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfd, 0x00, 0x02, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x9a, 0xdf, 0x1e, 0x61,
    0x00, 0x16, 0x3c, 0x42, 0x76, 0x77, 0x69, 0x72, 0x65, 0x20, 0x76, 0x78, 0x6c, 0x61, 0x6e, 0x20,
    0x76, 0x36,
];

/// The buffer headroom of vwire's pool (`HEADROOM`): packets start here.
const HR: usize = 256;

fn buf_with(inner: &[u8]) -> Vec<u8> {
    let mut b = vec![0xa5; HR + inner.len() + 64];
    b[HR..HR + inner.len()].copy_from_slice(inner);
    b
}

fn be16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

/// RFC 1071 the slow, obvious way: big-endian 16-bit words, an odd last byte padded with zero.
fn ref_sum(bytes: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in bytes.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    u16::try_from(s).unwrap()
}

/// The IPv4 header checksum of `hdr` (its checksum field ignored).
fn ref_ip4_csum(hdr: &[u8]) -> u16 {
    let mut h = hdr.to_vec();
    h[10..12].fill(0);
    !ref_sum(&h)
}

/// The UDP checksum of `udp` (header + payload, its checksum field ignored) between `src` and
/// `dst` (4 or 16 bytes), with the pseudo-header of RFC 768 or RFC 8200 §8.1.
fn ref_udp_csum(src: &[u8], dst: &[u8], udp: &[u8]) -> u16 {
    let mut seg = udp.to_vec();
    seg[6..8].fill(0);
    let len = u32::try_from(udp.len()).unwrap();
    let pseudo = if src.len() == 4 {
        [
            src,
            dst,
            &[0, 17],
            &u16::try_from(len).unwrap().to_be_bytes()[..],
        ]
        .concat()
    } else {
        [src, dst, &len.to_be_bytes()[..], &[0, 0, 0, 17]].concat()
    };
    let c = !ref_sum(&[pseudo, seg].concat());
    if c == 0 {
        0xffff
    } else {
        c
    }
}

/// RFC 1624 eqn. 3: checksum `hc` after a 16-bit field changes from `old` to `new`.
fn ref_adjust(hc: u16, old: u16, new: u16) -> u16 {
    let mut s = u32::from(!hc) + u32::from(!old) + u32::from(new);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !u16::try_from(s).unwrap()
}

fn masked(p: &[u8], ranges: &[std::ops::Range<usize>]) -> Vec<u8> {
    let mut v = p.to_vec();
    for r in ranges {
        v[r.clone()].fill(0);
    }
    v
}

fn params4(udp_checksum_v4: bool) -> TunnelParams {
    TunnelParams {
        underlay: Underlay::V4 {
            local: Ipv4Addr::new(10, 97, 0, 1),
            remote: Ipv4Addr::new(10, 97, 0, 2),
        },
        local_mac: [2, 0, 0, 0, 0x0a, 1],
        next_hop_mac: [2, 0, 0, 0, 0x0b, 1],
        dst_port: VXLAN_PORT,
        vni: Vni::new(0x12_3456).unwrap(),
        ttl: 64,
        udp_checksum_v4,
    }
}

fn params6() -> TunnelParams {
    TunnelParams {
        underlay: Underlay::V6 {
            local: "fd97::1".parse().unwrap(),
            remote: "fd97::2".parse().unwrap(),
        },
        vni: Vni::new(0xab_cdef).unwrap(),
        ..params4(false)
    }
}

#[test]
fn kernel_ipv4_packet_decaps() {
    let buf = buf_with(&VX4);
    let d = decap(&buf, HR, VX4.len(), VXLAN_PORT).unwrap();
    assert_eq!(d.remote, IpAddr::V4(Ipv4Addr::new(10, 97, 0, 1)));
    assert_eq!(d.vni.get(), 1_193_046);
    assert_eq!((d.offset, d.len), (HR + 50, VX4.len() - 50));
    assert_eq!(&buf[d.offset..d.offset + d.len], &VX4[50..]);
    // The inner frame is the kernel vxlan device's: 02:..:0a:10 → its static neighbour.
    assert_eq!(
        &buf[d.offset..d.offset + 14],
        &[2, 0, 0, 0, 0xb, 0x10, 2, 0, 0, 0, 0xa, 0x10, 8, 0]
    );
}

#[test]
fn kernel_ipv6_packet_decaps() {
    let buf = buf_with(&VX6);
    let d = decap(&buf, HR, VX6.len(), VXLAN_PORT).unwrap();
    assert_eq!(d.remote, IpAddr::V6("fd97::1".parse::<Ipv6Addr>().unwrap()));
    assert_eq!(d.vni.get(), 11_259_375);
    assert_eq!((d.offset, d.len), (HR + 70, VX6.len() - 70));
    assert_eq!(&buf[d.offset..d.offset + d.len], &VX6[70..]);
    // A wrong port is refused.
    assert_eq!(
        decap(&buf, HR, VX6.len(), 8472),
        Err(VxlanError::NotVxlanPort)
    );
}

/// Our encapsulation of the kernel's inner frame, against the kernel's own packet. Masked, as
/// they legitimately differ: the IPv4 ID and flags (the kernel: DF clear and a counter; vwire: DF
/// and ID 0), the UDP source port (each side's flow hash), and the checksums that cover them.
/// Then the checksums themselves are checked: against a reference implementation, and against
/// the kernel's value after the RFC 1624 adjustment for the different source port.
#[test]
fn encap_reproduces_the_kernel_ipv4_header() {
    let inner = &VX4[50..];
    for csum in [true, false] {
        let mut buf = buf_with(inner);
        let th = TunnelHeader::new(&params4(csum));
        assert_eq!(th.overhead(), OVERHEAD_V4);
        assert_eq!(th.vni().get(), 0x12_3456);
        let (o, l) = th.encap(&mut buf, HR, inner.len()).unwrap();
        assert_eq!((o, l), (HR - 50, VX4.len()));
        let ours = &buf[o..o + l];
        let mask = [18..22, 24..26, 34..36, 40..42];
        assert_eq!(masked(ours, &mask), masked(&VX4, &mask));
        // Our own choices for the masked fields.
        assert_eq!(&ours[18..22], &[0, 0, 0x40, 0], "ID 0, DF");
        let sport = be16(ours, 34);
        assert_eq!(sport, src_port(flow::hash_ethernet(inner)));
        assert!(sport >= SRC_PORT_MIN);
        // The incrementally finished header checksum is the full one.
        assert_eq!(be16(ours, 24), ref_ip4_csum(&ours[14..34]));
        if csum {
            assert_eq!(
                be16(ours, 40),
                ref_udp_csum(&ours[26..30], &ours[30..34], &ours[34..])
            );
            let adjusted = ref_adjust(be16(ours, 40), sport, be16(&VX4, 34));
            assert_eq!(
                adjusted,
                be16(&VX4, 40),
                "the kernel's checksum, for its port"
            );
        } else {
            assert_eq!(be16(ours, 40), 0);
        }
        // And the reference agrees with the kernel on the kernel's own packet.
        assert_eq!(ref_ip4_csum(&VX4[14..34]), be16(&VX4, 24));
        assert_eq!(
            ref_udp_csum(&VX4[26..30], &VX4[30..34], &VX4[34..]),
            be16(&VX4, 40)
        );
        // Headroom in front of the outer frame is untouched.
        assert!(buf[..o].iter().all(|&b| b == 0xa5));
    }
}

/// As above over IPv6: masked are the flow label (kernel: 0, `flowlabel` unset; vwire: the flow
/// hash), the UDP source port, and the UDP checksum (which covers the port, not the label).
#[test]
fn encap_reproduces_the_kernel_ipv6_header() {
    let inner = &VX6[70..];
    let mut buf = buf_with(inner);
    let th = TunnelHeader::new(&params6());
    assert_eq!(th.overhead(), OVERHEAD_V6);
    let (o, l) = th.encap(&mut buf, HR, inner.len()).unwrap();
    assert_eq!((o, l), (HR - 70, VX6.len()));
    let ours = &buf[o..o + l];
    let mask = [15..18, 54..56, 60..62];
    assert_eq!(masked(ours, &mask), masked(&VX6, &mask));
    let hash = flow::hash_ethernet(inner);
    assert_eq!(ours[15] & 0xf0, 0, "traffic class 0");
    let label = u32::from_be_bytes([0, ours[15] & 0x0f, ours[16], ours[17]]);
    assert_eq!(label, hash & 0xf_ffff);
    let sport = be16(ours, 54);
    assert_eq!(sport, src_port(hash));
    assert_eq!(
        be16(ours, 60),
        ref_udp_csum(&ours[22..38], &ours[38..54], &ours[54..])
    );
    assert_eq!(
        ref_adjust(be16(ours, 60), sport, be16(&VX6, 54)),
        be16(&VX6, 60)
    );
    assert_eq!(
        ref_udp_csum(&VX6[22..38], &VX6[38..54], &VX6[54..]),
        be16(&VX6, 60)
    );
}

/// A frame of `n` bytes that looks like IPv4/UDP when long enough.
fn frame(n: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..n)
        .map(|i| seed.wrapping_add(u8::try_from(i % 251).unwrap()))
        .collect();
    if n >= 34 {
        f[12..14].copy_from_slice(&[8, 0]);
        f[14] = 0x45;
        f[23] = 17;
    }
    f
}

fn check_outer_checksums(pkt: &[u8], v6: bool, udp_csum: bool) {
    if v6 {
        assert_eq!(
            be16(pkt, 60),
            ref_udp_csum(&pkt[22..38], &pkt[38..54], &pkt[54..])
        );
    } else {
        assert_eq!(be16(pkt, 24), ref_ip4_csum(&pkt[14..34]));
        let want = if udp_csum {
            ref_udp_csum(&pkt[26..30], &pkt[30..34], &pkt[34..])
        } else {
            0
        };
        assert_eq!(be16(pkt, 40), want);
    }
}

#[test]
fn round_trip_both_underlays() {
    for (p, v6) in [
        (params4(false), false),
        (params4(true), false),
        (params6(), true),
    ] {
        let th = TunnelHeader::new(&p);
        for n in [14, 15, 60, 64, 65, 1500, 3000] {
            let inner = frame(n, 7);
            let mut buf = buf_with(&inner);
            let (o, l) = th.encap(&mut buf, HR, n).unwrap();
            check_outer_checksums(&buf[o..o + l], v6, p.udp_checksum_v4);
            let d = decap(&buf, o, l, VXLAN_PORT).unwrap();
            assert_eq!(d.vni, p.vni);
            let local = match p.underlay {
                Underlay::V4 { local, .. } => IpAddr::V4(local),
                Underlay::V6 { local, .. } => IpAddr::V6(local),
            };
            assert_eq!(
                d.remote, local,
                "the receiver sees our local address as remote"
            );
            assert_eq!((d.offset, d.len), (HR, n));
            assert_eq!(&buf[d.offset..d.offset + d.len], &inner[..]);
        }
    }
}

#[test]
fn ip_payload_round_trip() {
    let v4 = VX4[64..].to_vec(); // the kernel's inner IPv4 packet
    let v6 = VX6[84..].to_vec(); // the kernel's inner IPv6 packet
    for p in [params4(false), params6()] {
        let th = TunnelHeader::new(&p);
        for (pkt, ethertype) in [(&v4, [8, 0]), (&v6, [0x86, 0xdd])] {
            let mut buf = buf_with(pkt);
            let (o, l) = th.encap_ip(&mut buf, HR, pkt.len()).unwrap();
            assert_eq!(
                (o, l),
                (HR - 14 - th.overhead(), pkt.len() + 14 + th.overhead())
            );
            let d = decap(&buf, o, l, VXLAN_PORT).unwrap();
            assert_eq!((d.offset, d.len), (HR - 14, pkt.len() + 14));
            let eth = &buf[d.offset..d.offset + 14];
            assert_eq!(&eth[..6], &IP_PAYLOAD_PEER_MAC);
            assert_eq!(&eth[6..12], &IP_PAYLOAD_LOCAL_MAC);
            assert_eq!(&eth[12..], &ethertype);
            let (io, il) = strip_inner_ethernet(&buf, d.offset, d.len).unwrap();
            assert_eq!(&buf[io..io + il], &pkt[..]);
            // The source port hashes the IP packet alone.
            let sport_at = if th.overhead() == OVERHEAD_V4 { 34 } else { 54 };
            assert_eq!(be16(&buf, o + sport_at), src_port(flow::hash_ip(pkt)));
        }
    }
}

/// A valid IPv4-underlay packet of a 64-byte inner frame: (buffer, offset, len).
fn sample4() -> (Vec<u8>, usize, usize) {
    let inner = frame(64, 3);
    let mut buf = buf_with(&inner);
    let (o, l) = TunnelHeader::new(&params4(false))
        .encap(&mut buf, HR, 64)
        .unwrap();
    (buf, o, l)
}

fn sample6() -> (Vec<u8>, usize, usize) {
    let inner = frame(64, 3);
    let mut buf = buf_with(&inner);
    let (o, l) = TunnelHeader::new(&params6())
        .encap(&mut buf, HR, 64)
        .unwrap();
    (buf, o, l)
}

fn fix_ip4_csum(buf: &mut [u8], o: usize) {
    let c = ref_ip4_csum(&buf[o + 14..o + 34]);
    buf[o + 24..o + 26].copy_from_slice(&c.to_be_bytes());
}

/// Applies `edit` to a fresh IPv4 sample (fixing the header checksum if `fix`) and decaps it.
fn decap4(fix: bool, edit: impl Fn(&mut [u8])) -> Result<Decapped, VxlanError> {
    let (mut buf, o, l) = sample4();
    edit(&mut buf[o..o + l]);
    if fix {
        fix_ip4_csum(&mut buf, o);
    }
    decap(&buf, o, l, VXLAN_PORT)
}

fn decap6(edit: impl Fn(&mut [u8])) -> Result<Decapped, VxlanError> {
    let (mut buf, o, l) = sample6();
    edit(&mut buf[o..o + l]);
    decap(&buf, o, l, VXLAN_PORT)
}

#[test]
fn every_decap_drop_reason() {
    use VxlanError as E;
    let (buf, o, l) = sample4();
    assert!(decap(&buf, o, l, VXLAN_PORT).is_ok());
    assert_eq!(decap(&buf, o, buf.len(), VXLAN_PORT), Err(E::OutOfBounds));
    assert_eq!(decap(&buf, usize::MAX, 2, VXLAN_PORT), Err(E::OutOfBounds));
    assert_eq!(decap(&buf, o, 13, VXLAN_PORT), Err(E::Truncated));
    assert_eq!(decap(&buf, o, 33, VXLAN_PORT), Err(E::Truncated));
    assert_eq!(
        decap(&buf, o, 49, VXLAN_PORT),
        Err(E::BadIpLength),
        "IP total beyond the buffer"
    );
    assert_eq!(decap(&buf, o, l, 4790), Err(E::NotVxlanPort));

    assert_eq!(
        decap4(false, |p| p[12..14].copy_from_slice(&[8, 6])),
        Err(E::NotIp)
    );
    assert_eq!(decap4(false, |p| p[14] = 0x65), Err(E::BadIpVersion));
    assert_eq!(decap4(false, |p| p[14] = 0x44), Err(E::BadIpHeaderLen));
    assert_eq!(
        decap4(true, |p| p[16..18].copy_from_slice(&19u16.to_be_bytes())),
        Err(E::BadIpLength)
    );
    assert_eq!(decap4(false, |p| p[22] = 63), Err(E::BadIpChecksum));
    assert_eq!(decap4(true, |p| p[20] = 0x20), Err(E::Fragment), "MF");
    assert_eq!(decap4(true, |p| p[21] = 0x01), Err(E::Fragment), "offset");
    assert_eq!(decap4(true, |p| p[23] = 6), Err(E::NotUdp));
    assert_eq!(
        decap4(false, |p| p[38..40].copy_from_slice(&15u16.to_be_bytes())),
        Err(E::BadUdpLength)
    );
    assert_eq!(
        decap4(false, |p| p[38..40]
            .copy_from_slice(&(8u16 + 8 + 65).to_be_bytes())),
        Err(E::BadUdpLength)
    );
    assert_eq!(
        decap4(false, |p| p[38..40]
            .copy_from_slice(&(8u16 + 8 + 13).to_be_bytes())),
        Err(E::InnerTooShort)
    );
    assert_eq!(decap4(false, |p| p[42] = 0), Err(E::NoVniFlag));

    assert!(decap6(|_| ()).is_ok());
    assert_eq!(decap6(|p| p[14] = 0x40), Err(E::BadIpVersion));
    assert_eq!(
        decap6(|p| p[18..20].copy_from_slice(&0xffffu16.to_be_bytes())),
        Err(E::BadIpLength)
    );
    assert_eq!(decap6(|p| p[20] = 0), Err(E::Ipv6ExtHeader), "hop-by-hop");
    assert_eq!(decap6(|p| p[20] = 43), Err(E::Ipv6ExtHeader), "routing");
    assert_eq!(decap6(|p| p[20] = 44), Err(E::Fragment));
    assert_eq!(decap6(|p| p[20] = 6), Err(E::NotUdp));
    assert_eq!(
        decap6(|p| p[18..20].copy_from_slice(&7u16.to_be_bytes())),
        Err(E::Truncated)
    );
}

#[test]
fn lenient_where_the_rfc_says_so() {
    // Reserved flag bits and the reserved bytes around the VNI are ignored; IPv4 padding
    // after the UDP datagram is dropped; IPv4 options are skipped.
    let d = decap4(false, |p| {
        p[42] = 0xff;
        p[43..46].fill(0xee);
        p[49] = 0x77;
    })
    .unwrap();
    assert_eq!(d.vni.get(), 0x12_3456);
    assert_eq!(d.len, 64);

    let (buf, o, l) = sample4();
    // Ethernet padding: the buffer has bytes after the IP packet.
    assert_eq!(decap(&buf, o, l + 20, VXLAN_PORT).unwrap().len, 64);

    // One 802.1Q tag.
    let mut tagged = buf[o..o + 12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
    tagged.extend_from_slice(&buf[o + 12..o + l]);
    let d = decap(&tagged, 0, tagged.len(), VXLAN_PORT).unwrap();
    assert_eq!((d.offset, d.len), (54, 64));
    assert_eq!(&tagged[54..], &buf[HR..HR + 64]);

    // IPv4 with 4 bytes of options (IHL 6).
    let mut opt = buf[o..o + 34].to_vec();
    opt.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
    opt.extend_from_slice(&buf[o + 34..o + l]);
    opt[14] = 0x46;
    let total = be16(&opt, 16) + 4;
    opt[16..18].copy_from_slice(&total.to_be_bytes());
    let c = ref_ip4_csum(&opt[14..38]);
    opt[24..26].copy_from_slice(&c.to_be_bytes());
    let d = decap(&opt, 0, opt.len(), VXLAN_PORT).unwrap();
    assert_eq!((d.offset, d.len), (54, 64));
}

/// The outer frame with VLAN tags (TPIDs) after the MACs.
fn with_tags(pkt: &[u8], tpids: &[u16]) -> Vec<u8> {
    let mut v = pkt[..12].to_vec();
    for t in tpids {
        v.extend_from_slice(&t.to_be_bytes());
        v.extend_from_slice(&[0x00, 0x64]);
    }
    v.extend_from_slice(&pkt[12..]);
    v
}

#[test]
fn outer_vlan_tags_follow_the_wire_rule() {
    // Up to two tags, 802.1Q or 802.1ad, as `vwire_dataplane::wire::ethernet::walk`.
    let (buf, o, l) = sample4();
    for (tpids, at) in [
        (&[0x88a8][..], 54),
        (&[0x88a8, 0x8100][..], 58),
        (&[0x8100, 0x8100][..], 58),
    ] {
        let t = with_tags(&buf[o..o + l], tpids);
        let d = decap(&t, 0, t.len(), VXLAN_PORT).unwrap();
        assert_eq!((d.offset, d.len), (at, 64), "{tpids:x?}");
        assert_eq!(&t[at..], &buf[HR..HR + 64]);
        // Cut inside the last tag (the L3 header starts 36 bytes before the inner frame).
        assert_eq!(
            decap(&t, 0, at - 38, VXLAN_PORT),
            Err(VxlanError::Truncated)
        );
    }
    let t = with_tags(&buf[o..o + l], &[0x8100, 0x8100, 0x8100]);
    assert_eq!(decap(&t, 0, t.len(), VXLAN_PORT), Err(VxlanError::NotIp));
}

#[test]
fn strip_inner_ethernet_checks_the_ethertype() {
    let mut f = frame(60, 1);
    assert_eq!(strip_inner_ethernet(&f, 0, 60), Ok((14, 46)));
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert_eq!(strip_inner_ethernet(&f, 0, 60), Ok((14, 46)));
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(strip_inner_ethernet(&f, 0, 60), Err(VxlanError::InnerNotIp));
    f[12..14].copy_from_slice(&[0x81, 0x00]);
    assert_eq!(strip_inner_ethernet(&f, 0, 60), Err(VxlanError::InnerNotIp));
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(
        strip_inner_ethernet(&f, 0, 14),
        Err(VxlanError::InnerTooShort)
    );
    assert_eq!(
        strip_inner_ethernet(&f, 0, 13),
        Err(VxlanError::InnerTooShort)
    );
    assert_eq!(
        strip_inner_ethernet(&f, 50, 11),
        Err(VxlanError::OutOfBounds)
    );
}

#[test]
fn every_encap_error_leaves_the_buffer_untouched() {
    use VxlanError as E;
    let th4 = TunnelHeader::new(&params4(true));
    let th6 = TunnelHeader::new(&params6());
    // IPv4-looking bytes everywhere, except one packet that starts with version 0.
    let mut buf = vec![0x45u8; HR + 128];
    buf[HR + 1] = 0;
    let cases: [(&TunnelHeader, bool, usize, usize, E); 9] = [
        (&th4, false, 49, 64, E::NoHeadroom),
        (&th6, false, 69, 64, E::NoHeadroom),
        (&th4, true, 63, 64, E::NoHeadroom),
        (&th6, true, 83, 64, E::NoHeadroom),
        (&th4, false, HR, buf.len() - HR + 1, E::OutOfBounds),
        (&th4, false, usize::MAX, 2, E::OutOfBounds),
        (&th6, true, HR, usize::MAX, E::OutOfBounds),
        (&th4, true, HR + 1, 64, E::PayloadNotIp),
        (&th4, true, HR, 0, E::PayloadNotIp),
    ];
    for (th, ip, off, len, want) in cases {
        let mut b = buf.clone();
        let got = if ip {
            th.encap_ip(&mut b, off, len)
        } else {
            th.encap(&mut b, off, len)
        };
        assert_eq!(got, Err(want), "{off} {len}");
        assert_eq!(b, buf);
    }
    // An outer IP packet longer than 65535 bytes.
    let mut big = vec![0x45u8; HR + 65_600];
    let copy = big.clone();
    assert_eq!(th4.encap(&mut big, HR, 65_535 - 35), Err(E::TooLong));
    assert_eq!(th6.encap(&mut big, HR, 65_535 - 15), Err(E::TooLong));
    assert_eq!(th4.encap_ip(&mut big, HR, 65_535 - 49), Err(E::TooLong));
    assert_eq!(big, copy);
    assert!(th4.encap(&mut big, HR, 65_535 - 36).is_ok());
    assert!(th6.encap(&mut big.clone(), HR, 65_535 - 16).is_ok());
}

#[test]
fn vni_and_reasons() {
    assert_eq!(Vni::new(Vni::MAX).map(Vni::get), Some(0xff_ffff));
    assert_eq!(Vni::new(1 << 24), None);
    for (i, e) in VxlanError::ALL.iter().enumerate() {
        assert_eq!(e.index(), i);
        assert!(e.reason().starts_with("vxlan_"));
        assert!(!e.to_string().is_empty());
    }
    let mut names: Vec<_> = VxlanError::ALL.iter().map(|e| e.reason()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), VxlanError::ALL.len());
    assert_eq!((OVERHEAD_V4, OVERHEAD_V6), (50, 70));
}

#[test]
fn source_ports_stay_in_the_dynamic_range() {
    for h in [0, 1, 0x3fff, 0x4000, 0xdead_beef, u32::MAX] {
        assert!(src_port(h) >= 49152);
    }
    assert_eq!(src_port(0), 49152);
    assert_eq!(src_port(u32::MAX), 65535);
}

proptest! {
    #[test]
    fn decap_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        offset in 0usize..220,
        len in 0usize..240,
        port in prop_oneof![Just(VXLAN_PORT), any::<u16>()],
    ) {
        if let Ok(d) = decap(&bytes, offset, len, port) {
            prop_assert!(d.offset >= offset && d.offset + d.len <= offset + len);
        }
        let _ = strip_inner_ethernet(&bytes, offset, len);
    }

    /// Random edits of a valid packet reach the deep checks that random bytes rarely do.
    #[test]
    fn decap_never_panics_on_mutated_packets(
        v6 in any::<bool>(),
        edits in proptest::collection::vec((0usize..150, any::<u8>()), 0..8),
        cut in 0usize..150,
    ) {
        let (mut buf, o, l) = if v6 { sample6() } else { sample4() };
        for (at, v) in edits {
            if at < l {
                buf[o + at] = v;
            }
        }
        let l = l.saturating_sub(cut % 4 * cut);
        if let Ok(d) = decap(&buf, o, l, VXLAN_PORT) {
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
        which in 0u8..3,
    ) {
        let mut buf = vec![first; size];
        let th = TunnelHeader::new(&if which == 0 { params6() } else { params4(which == 2) });
        let results = [th.encap(&mut buf, offset, len), th.encap_ip(&mut buf, offset, len)];
        for (o, l) in results.into_iter().flatten() {
            prop_assert!(o + l <= size);
        }
    }

    #[test]
    fn any_frame_round_trips(
        inner in proptest::collection::vec(any::<u8>(), 14..1600),
        v6 in any::<bool>(),
        vni in 0u32..=Vni::MAX,
    ) {
        let p = TunnelParams { vni: Vni::new(vni).unwrap(), ..if v6 { params6() } else { params4(true) } };
        let mut buf = buf_with(&inner);
        let (o, l) = TunnelHeader::new(&p).encap(&mut buf, HR, inner.len()).unwrap();
        check_outer_checksums(&buf[o..o + l], v6, true);
        let d = decap(&buf, o, l, VXLAN_PORT).unwrap();
        prop_assert_eq!(d.vni.get(), vni);
        prop_assert_eq!(&buf[d.offset..d.offset + d.len], &inner[..]);
    }
}
