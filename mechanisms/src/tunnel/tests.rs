//! Tunnel driver tests: round trips through the real cores (encapsulate with a driver,
//! decapsulate with an uplink, compare with the original), every drop reason, the MTU limit,
//! and the whole path through a worker.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use vwire_dataplane::buffer::HEADROOM;
use vwire_dataplane::counters::{DropReason, DropTally, PortCounters};
use vwire_dataplane::mem_port::{mem_pair, MemPort};
use vwire_dataplane::port::MAX_BURST;
use vwire_dataplane::table::ForwardingTable;
use vwire_dataplane::test_utils::Rig;
use vwire_dataplane::tunnel::{Decap, Encap};
use vwire_dataplane::{BufIdx, BufferPool, Burst, Port, PortId};

use super::*;
use crate::srv6::{Behavior, EncapHeader, EncapParams, Srv6Error};
use crate::vxlan::{
    TunnelHeader, TunnelParams, Underlay, Vni, VxlanError, IP_PAYLOAD_LOCAL_MAC,
    IP_PAYLOAD_PEER_MAC, OVERHEAD_V4, OVERHEAD_V6, VXLAN_PORT,
};

/// This node (A) and its peer (B), both families; the uplink decaps what A sends, so the
/// demultiplexer is keyed on A's address (the outer source).
const A4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// MACs of a veth pair (the client's interface, the vwire side) and of the inner frames.
const VETH_PEER: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
const VETH_LOCAL: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 2];
const INNER_DST: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 1];
const INNER_SRC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 2];
const MTU: u32 = 1500;

fn sid(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfc00, 0xb, 0, 0, 0, 0, 0, n)
}

fn vni(n: u32) -> Vni {
    Vni::new(n).unwrap()
}

fn vxlan_header(v6: bool, vni: Vni) -> TunnelHeader {
    TunnelHeader::new(&TunnelParams {
        underlay: if v6 {
            Underlay::V6 {
                local: A6,
                remote: B6,
            }
        } else {
            Underlay::V4 {
                local: A4,
                remote: B4,
            }
        },
        local_mac: [0x02, 0, 0, 0, 0x0a, 1],
        next_hop_mac: [0x02, 0, 0, 0, 0x0b, 1],
        dst_port: VXLAN_PORT,
        vni,
        ttl: 64,
        udp_checksum_v4: true,
    })
}

fn vxlan(v6: bool, vni: Vni, framing: Framing) -> VxlanEncap {
    VxlanEncap::new(vxlan_header(v6, vni), framing, MTU)
}

fn srv6(sid: Ipv6Addr, framing: Framing) -> Srv6Encap {
    let h = EncapHeader::new(&EncapParams {
        src: A6,
        sid,
        local_mac: [0x02, 0, 0, 0, 0x0a, 1],
        next_hop_mac: [0x02, 0, 0, 0, 0x0b, 1],
        hop_limit: 64,
    });
    Srv6Encap::new(h, framing, MTU)
}

fn a(v6: bool) -> IpAddr {
    if v6 {
        A6.into()
    } else {
        A4.into()
    }
}

/// IPv4/UDP with `payload` (the inner headers are carried, not checked).
fn ip4(payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(28 + payload.len()).unwrap();
    let mut p = vec![
        0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x1f, 0x90, 0x1f, 0x91]);
    p.extend_from_slice(&(total - 20).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// IPv6/UDP with `payload`.
fn ip6(payload: &[u8]) -> Vec<u8> {
    let plen = u16::try_from(8 + payload.len()).unwrap();
    let mut p = vec![0x60, 0x01, 0x23, 0x45];
    p.extend_from_slice(&plen.to_be_bytes());
    p.extend_from_slice(&[17, 64]);
    p.extend_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).octets());
    p.extend_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).octets());
    p.extend_from_slice(&[0x1f, 0x90, 0x1f, 0x91]);
    p.extend_from_slice(&plen.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    [&dst[..], &src, &ethertype.to_be_bytes(), payload].concat()
}

fn eth_ip(dst: [u8; 6], src: [u8; 6], ip: &[u8]) -> Vec<u8> {
    let ethertype = if ip[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
    eth(dst, src, ethertype, ip)
}

fn arp() -> Vec<u8> {
    eth([0xff; 6], INNER_SRC, 0x0806, &[0, 1, 8, 0, 6, 4, 0, 1])
}

fn load(pool: &mut BufferPool, bytes: &[u8]) -> BufIdx {
    let b = pool.alloc().unwrap();
    pool.set_meta(b, HEADROOM, bytes.len());
    pool.packet_mut(b).copy_from_slice(bytes);
    b
}

/// Encapsulates `input` with `encap`; the outer frame.
fn encapped(encap: &dyn Encap, input: &[u8]) -> Result<Vec<u8>, DropReason> {
    let mut pool = BufferPool::new(2).unwrap();
    let b = load(&mut pool, input);
    encap.encap(&mut pool, b)?;
    Ok(pool.packet(b).to_vec())
}

/// Decapsulates `outer` with `decap`: the egress port and what it gets.
fn decapped(decap: &dyn Decap, outer: &[u8]) -> Result<(PortId, Vec<u8>), DropReason> {
    let mut pool = BufferPool::new(2).unwrap();
    let b = load(&mut pool, outer);
    let port = decap.decap(&mut pool, b)?;
    Ok((port, pool.packet(b).to_vec()))
}

fn round_trip(
    encap: &dyn Encap,
    decap: &dyn Decap,
    input: &[u8],
) -> Result<(PortId, Vec<u8>), DropReason> {
    decapped(decap, &encapped(encap, input)?)
}

#[test]
fn vxlan_round_trips_every_framing_over_both_underlays() {
    let frame4 = eth_ip(INNER_DST, INNER_SRC, &ip4(b"vwire v4"));
    let frame6 = eth_ip(INNER_DST, INNER_SRC, &ip6(b"vwire v6"));
    let (p4, p6) = (ip4(b"bare v4"), ip6(b"bare v6"));
    let veth = EgressFraming::EthernetIp {
        dst: VETH_PEER,
        src: VETH_LOCAL,
    };
    for v6 in [false, true] {
        let overhead = if v6 { OVERHEAD_V6 } else { OVERHEAD_V4 };
        // One tunnel per (framing in, framing out), told apart by the VNI.
        let cases: [(Framing, EgressFraming, &[u8], Vec<u8>); 9] = [
            (
                Framing::Ethernet,
                EgressFraming::Ethernet,
                &frame4,
                frame4.clone(),
            ),
            (Framing::Ethernet, EgressFraming::Ethernet, &arp(), arp()),
            (
                Framing::EthernetIp,
                veth,
                &frame4,
                eth_ip(VETH_PEER, VETH_LOCAL, &ip4(b"vwire v4")),
            ),
            (
                Framing::EthernetIp,
                veth,
                &frame6,
                eth_ip(VETH_PEER, VETH_LOCAL, &ip6(b"vwire v6")),
            ),
            (
                Framing::EthernetIp,
                EgressFraming::Ip,
                &frame6,
                ip6(b"vwire v6"),
            ),
            (Framing::Ip, EgressFraming::Ip, &p4, p4.clone()),
            (Framing::Ip, EgressFraming::Ip, &p6, p6.clone()),
            (Framing::Ip, veth, &p4, eth_ip(VETH_PEER, VETH_LOCAL, &p4)),
            (Framing::Ip, veth, &p6, eth_ip(VETH_PEER, VETH_LOCAL, &p6)),
        ];
        let mut up = UplinkDecap::new(VXLAN_PORT);
        for (i, (_, egress, _, _)) in cases.iter().enumerate() {
            let n = u32::try_from(i).unwrap();
            up.add_vxlan(
                a(v6),
                vni(100 + n),
                PortId::try_from(i + 1).unwrap(),
                *egress,
            )
            .unwrap();
        }
        for (i, (framing, _, input, want)) in cases.iter().enumerate() {
            let n = u32::try_from(i).unwrap();
            let enc = vxlan(v6, vni(100 + n), *framing);
            let outer = encapped(&enc, input).unwrap();
            let inner = &outer[overhead..];
            if *framing == Framing::Ethernet {
                assert_eq!(inner, *input, "case {i}: the frame is carried whole");
            } else {
                // IP payloads travel behind the fixed MAC pair.
                assert_eq!(&inner[..6], &IP_PAYLOAD_PEER_MAC, "case {i}");
                assert_eq!(&inner[6..12], &IP_PAYLOAD_LOCAL_MAC, "case {i}");
            }
            let got = decapped(&up, &outer).unwrap();
            assert_eq!(
                got,
                (PortId::try_from(i + 1).unwrap(), want.clone()),
                "case {i} v6={v6}"
            );
        }
    }
}

/// Encap framing, SID behaviour, egress framing, input, expected output.
type SrCase<'a> = (Framing, Behavior, EgressFraming, &'a [u8], Vec<u8>);

#[test]
fn srv6_round_trips_l2_and_ip_payloads() {
    let frame4 = eth_ip(INNER_DST, INNER_SRC, &ip4(b"vwire v4"));
    let frame6 = eth_ip(INNER_DST, INNER_SRC, &ip6(b"vwire v6"));
    let (p4, p6) = (ip4(b"bare v4"), ip6(b"bare v6"));
    let veth = EgressFraming::EthernetIp {
        dst: VETH_PEER,
        src: VETH_LOCAL,
    };
    let cases: [SrCase; 9] = [
        // H.Encaps.L2 → End.DX2
        (
            Framing::Ethernet,
            Behavior::EndDx2,
            EgressFraming::Ethernet,
            &frame4,
            frame4.clone(),
        ),
        (
            Framing::Ethernet,
            Behavior::EndDx2,
            EgressFraming::Ethernet,
            &arp(),
            arp(),
        ),
        (
            Framing::Ethernet,
            Behavior::EndDx2,
            EgressFraming::Ip,
            &frame6,
            ip6(b"vwire v6"),
        ),
        // H.Encaps → End.DX4
        (
            Framing::Ip,
            Behavior::EndDx4,
            EgressFraming::Ip,
            &p4,
            p4.clone(),
        ),
        (
            Framing::Ip,
            Behavior::EndDx4,
            veth,
            &p4,
            eth_ip(VETH_PEER, VETH_LOCAL, &p4),
        ),
        (
            Framing::EthernetIp,
            Behavior::EndDx4,
            veth,
            &frame4,
            eth_ip(VETH_PEER, VETH_LOCAL, &ip4(b"vwire v4")),
        ),
        // H.Encaps → End.DX6
        (
            Framing::Ip,
            Behavior::EndDx6,
            EgressFraming::Ip,
            &p6,
            p6.clone(),
        ),
        (
            Framing::EthernetIp,
            Behavior::EndDx6,
            EgressFraming::Ip,
            &frame6,
            ip6(b"vwire v6"),
        ),
        (
            Framing::EthernetIp,
            Behavior::EndDx6,
            veth,
            &frame6,
            eth_ip(VETH_PEER, VETH_LOCAL, &ip6(b"vwire v6")),
        ),
    ];
    let mut up = UplinkDecap::new(VXLAN_PORT);
    for (i, (_, behavior, egress, _, _)) in cases.iter().enumerate() {
        let n = u16::try_from(i).unwrap();
        up.add_sid(sid(n), *behavior, n + 1, *egress).unwrap();
    }
    for (i, (framing, _, _, input, want)) in cases.iter().enumerate() {
        let n = u16::try_from(i).unwrap();
        let got = round_trip(&srv6(sid(n), *framing), &up, input).unwrap();
        assert_eq!(got, (n + 1, want.clone()), "case {i}");
    }
}

#[test]
fn one_uplink_serves_vxlan_and_srv6_with_a_burst_in_order() {
    let mut up = UplinkDecap::new(VXLAN_PORT);
    up.add_vxlan(A6.into(), vni(1), 1, EgressFraming::Ethernet)
        .unwrap();
    up.add_vxlan(A4.into(), vni(2), 2, EgressFraming::Ethernet)
        .unwrap();
    up.add_sid(sid(3), Behavior::EndDx2, 3, EgressFraming::Ethernet)
        .unwrap();
    up.add_sid(sid(4), Behavior::EndDx4, 4, EgressFraming::Ip)
        .unwrap();
    let encaps: [Box<dyn Encap>; 4] = [
        Box::new(vxlan(true, vni(1), Framing::Ethernet)),
        Box::new(vxlan(false, vni(2), Framing::Ethernet)),
        Box::new(srv6(sid(3), Framing::Ethernet)),
        Box::new(srv6(sid(4), Framing::Ip)),
    ];
    let mut pool = BufferPool::new(64).unwrap();
    let mut burst = Burst::with_capacity(MAX_BURST);
    let mut want = Vec::new();
    // Runs of one tunnel (the cache hits) and changes of tunnel (it misses), and two strangers.
    for (i, t) in [0usize, 0, 1, 3, 3, 2, 0, 9, 2, 2, 1, 3]
        .into_iter()
        .enumerate()
    {
        let seq = u8::try_from(i).unwrap();
        let input = if t == 3 {
            ip4(&[seq])
        } else {
            eth_ip(INNER_DST, INNER_SRC, &ip4(&[seq]))
        };
        let b = load(&mut pool, &input);
        if t == 9 {
            // Unknown VNI.
            vxlan(false, vni(9), Framing::Ethernet)
                .encap(&mut pool, b)
                .unwrap();
        } else {
            encaps[t].encap(&mut pool, b).unwrap();
            want.push((PortId::try_from(t + 1).unwrap(), input));
        }
        assert!(burst.push(b));
    }
    let mut egress = [0; MAX_BURST];
    let mut drops = DropTally::new();
    up.decap_burst(&mut pool, &mut burst, &mut egress, &mut drops);
    let got: Vec<(PortId, Vec<u8>)> = burst
        .as_slice()
        .iter()
        .zip(egress)
        .map(|(&b, e)| (e, pool.packet(b).to_vec()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(drops.get(DropReason::TunnelUnknown), 1);
    assert_eq!(drops.total(), 1);
    pool.free_burst(burst.as_slice());
    assert_eq!(pool.available(), 64);
}

#[test]
fn unknown_tunnels_are_tunnel_unknown() {
    let frame = eth_ip(INNER_DST, INNER_SRC, &ip4(b"x"));
    let mut up = UplinkDecap::new(VXLAN_PORT);
    up.add_vxlan(A4.into(), vni(1), 1, EgressFraming::Ethernet)
        .unwrap();
    up.add_sid(sid(1), Behavior::EndDx2, 2, EgressFraming::Ethernet)
        .unwrap();
    let unknown = Err(DropReason::TunnelUnknown);
    // Known remote, unknown VNI; known VNI over another remote (the IPv6 underlay).
    assert_eq!(
        round_trip(&vxlan(false, vni(2), Framing::Ethernet), &up, &frame),
        unknown
    );
    assert_eq!(
        round_trip(&vxlan(true, vni(1), Framing::Ethernet), &up, &frame),
        unknown
    );
    // Unknown SID.
    assert_eq!(
        round_trip(&srv6(sid(2), Framing::Ethernet), &up, &frame),
        unknown
    );
    // VXLAN to another UDP port.
    let mut other_port = UplinkDecap::new(8472);
    other_port
        .add_vxlan(A4.into(), vni(1), 1, EgressFraming::Ethernet)
        .unwrap();
    assert_eq!(
        round_trip(
            &vxlan(false, vni(1), Framing::Ethernet),
            &other_port,
            &frame
        ),
        unknown
    );
    // An uplink that serves nothing.
    let empty = UplinkDecap::new(VXLAN_PORT);
    assert!(empty.is_empty());
    assert_eq!(
        round_trip(&vxlan(false, vni(1), Framing::Ethernet), &empty, &frame),
        unknown
    );
    assert_eq!(
        round_trip(&srv6(sid(1), Framing::Ethernet), &empty, &frame),
        unknown
    );
    // The known ones do pass.
    assert_eq!(up.len(), 2);
    assert!(round_trip(&vxlan(false, vni(1), Framing::Ethernet), &up, &frame).is_ok());
    assert!(round_trip(&srv6(sid(1), Framing::Ethernet), &up, &frame).is_ok());
}

#[test]
fn malformed_outer_headers_are_tunnel_malformed() {
    let frame = eth_ip(INNER_DST, INNER_SRC, &ip4(b"payload"));
    let mut up = UplinkDecap::new(VXLAN_PORT);
    up.add_vxlan(A4.into(), vni(1), 1, EgressFraming::Ethernet)
        .unwrap();
    up.add_sid(sid(1), Behavior::EndDx2, 2, EgressFraming::Ethernet)
        .unwrap();
    up.add_sid(sid(2), Behavior::EndDx6, 3, EgressFraming::Ip)
        .unwrap();
    let malformed = Err(DropReason::TunnelMalformed);

    let vx = encapped(&vxlan(false, vni(1), Framing::Ethernet), &frame).unwrap();
    // Truncated: the IP total length runs past the end.
    assert_eq!(decapped(&up, &vx[..vx.len() - 1]), malformed);
    assert_eq!(decapped(&up, &vx[..20]), malformed);
    // A corrupt IPv4 header checksum.
    let mut bad = vx.clone();
    bad[14 + 8] ^= 1; // TTL
    assert_eq!(decapped(&up, &bad), malformed);
    // Not IP at all.
    assert_eq!(decapped(&up, &arp()), malformed);

    let sr = encapped(&srv6(sid(1), Framing::Ethernet), &frame).unwrap();
    // Segments left ≠ 0: the SID is not the last one.
    let mut bad = sr.clone();
    bad[14 + 40 + 3] = 1;
    assert_eq!(decapped(&up, &bad), malformed);
    assert_eq!(decapped(&up, &sr[..60]), malformed);
    // IPv4 sent to an End.DX6 SID.
    let wrong = encapped(&srv6(sid(2), Framing::Ip), &ip4(b"v4")).unwrap();
    assert_eq!(decapped(&up, &wrong), malformed);

    // An uplink with SIDs only: VXLAN is not SRv6.
    let mut sr_only = UplinkDecap::new(VXLAN_PORT);
    sr_only
        .add_sid(sid(1), Behavior::EndDx2, 2, EgressFraming::Ethernet)
        .unwrap();
    assert_eq!(decapped(&sr_only, &vx), malformed);
    // An uplink with VXLAN only: SRv6 is IPv6 that is not UDP.
    let mut vx_only = UplinkDecap::new(VXLAN_PORT);
    vx_only
        .add_vxlan(A4.into(), vni(1), 1, EgressFraming::Ethernet)
        .unwrap();
    assert_eq!(decapped(&vx_only, &sr), malformed);
}

#[test]
fn non_ip_on_ip_tunnels_is_not_ip() {
    let not_ip = Some(DropReason::NotIp);
    // Encapsulation: ARP from a veth, a bare packet of version 0.
    let veth_in = Framing::EthernetIp;
    assert_eq!(
        encapped(&vxlan(false, vni(1), veth_in), &arp()).err(),
        not_ip
    );
    assert_eq!(encapped(&srv6(sid(1), veth_in), &arp()).err(), not_ip);
    assert_eq!(
        encapped(&vxlan(false, vni(1), veth_in), &[0u8; 14]).err(),
        not_ip
    );
    let zero = [0u8; 40];
    assert_eq!(
        encapped(&vxlan(true, vni(1), Framing::Ip), &zero).err(),
        not_ip
    );
    assert_eq!(encapped(&srv6(sid(1), Framing::Ip), &zero).err(), not_ip);
    assert_eq!(encapped(&srv6(sid(1), Framing::Ip), &[]).err(), not_ip);
    // Decapsulation: ARP through an Ethernet tunnel toward an IP port.
    let mut up = UplinkDecap::new(VXLAN_PORT);
    let veth = EgressFraming::EthernetIp {
        dst: VETH_PEER,
        src: VETH_LOCAL,
    };
    up.add_vxlan(A4.into(), vni(1), 1, EgressFraming::Ip)
        .unwrap();
    up.add_vxlan(A4.into(), vni(2), 1, veth).unwrap();
    up.add_sid(sid(1), Behavior::EndDx2, 2, EgressFraming::Ip)
        .unwrap();
    up.add_sid(sid(2), Behavior::EndDx4, 2, veth).unwrap();
    assert_eq!(
        round_trip(&vxlan(false, vni(1), Framing::Ethernet), &up, &arp()).err(),
        not_ip
    );
    assert_eq!(
        round_trip(&vxlan(false, vni(2), Framing::Ethernet), &up, &arp()).err(),
        not_ip
    );
    assert_eq!(
        round_trip(&srv6(sid(1), Framing::Ethernet), &up, &arp()).err(),
        not_ip
    );
    // End.DX4 whose payload's version nibble is not 4 or 6: no EtherType to give it.
    let outer = encapped(&srv6(sid(2), Framing::Ip), &ip4(b"x")).unwrap();
    let mut outer_bad = outer.clone();
    outer_bad[crate::srv6::ENCAP_LEN] = 0x05;
    assert_eq!(decapped(&up, &outer_bad).err(), not_ip);
    assert!(decapped(&up, &outer).is_ok());
}

#[test]
fn frames_beyond_the_uplink_mtu_are_too_big() {
    let max_frame = MTU as usize + 14;
    let encaps: [(Box<dyn Encap>, usize, bool); 6] = [
        (
            Box::new(vxlan(false, vni(1), Framing::Ethernet)),
            max_frame - OVERHEAD_V4,
            false,
        ),
        (
            Box::new(vxlan(true, vni(1), Framing::EthernetIp)),
            max_frame - OVERHEAD_V6,
            false,
        ),
        (
            Box::new(vxlan(true, vni(1), Framing::Ip)),
            max_frame - OVERHEAD_V6 - 14,
            true,
        ),
        (
            Box::new(srv6(sid(1), Framing::Ethernet)),
            max_frame - 78,
            false,
        ),
        (
            Box::new(srv6(sid(1), Framing::EthernetIp)),
            max_frame - 64,
            false,
        ),
        (Box::new(srv6(sid(1), Framing::Ip)), max_frame - 78, true),
    ];
    for (i, (enc, max_len, bare)) in encaps.iter().enumerate() {
        let make = |len: usize| {
            let ip = ip4(&vec![0x5a; len - 28 - if *bare { 0 } else { 14 }]);
            if *bare {
                ip
            } else {
                eth_ip(INNER_DST, INNER_SRC, &ip)
            }
        };
        let fits = make(*max_len);
        assert_eq!(fits.len(), *max_len);
        let outer = encapped(&**enc, &fits).unwrap();
        assert_eq!(
            outer.len(),
            max_frame,
            "case {i}: the largest packet fills the MTU"
        );
        let mut pool = BufferPool::new(1).unwrap();
        let over = make(max_len + 1);
        let b = load(&mut pool, &over);
        assert_eq!(enc.encap(&mut pool, b), Err(DropReason::TooBig), "case {i}");
        assert_eq!(
            pool.packet(b),
            &over[..],
            "case {i}: refused before any write"
        );
    }
    assert_eq!(
        vxlan(false, vni(1), Framing::Ip).max_len(),
        max_frame - OVERHEAD_V4 - 14
    );
    assert_eq!(srv6(sid(1), Framing::EthernetIp).max_len(), max_frame - 64);
    // An MTU smaller than the headers: everything is too big.
    let tiny = VxlanEncap::new(vxlan_header(true, vni(1)), Framing::Ethernet, 20);
    assert_eq!(tiny.max_len(), 0);
    assert_eq!(encapped(&tiny, &arp()), Err(DropReason::TooBig));
}

#[test]
fn building_an_uplink_refuses_duplicates_and_ip_sids_toward_ethernet() {
    let mut up = UplinkDecap::new(VXLAN_PORT);
    up.add_vxlan(A4.into(), vni(1), 1, EgressFraming::Ethernet)
        .unwrap();
    assert_eq!(
        up.add_vxlan(A4.into(), vni(1), 2, EgressFraming::Ip),
        Err(TunnelError::DuplicateVxlan {
            remote: A4.into(),
            vni: vni(1)
        })
    );
    up.add_vxlan(A6.into(), vni(1), 2, EgressFraming::Ip)
        .unwrap();
    up.add_sid(sid(1), Behavior::EndDx2, 3, EgressFraming::Ethernet)
        .unwrap();
    assert_eq!(
        up.add_sid(sid(1), Behavior::EndDx6, 3, EgressFraming::Ip),
        Err(TunnelError::DuplicateSid(sid(1)))
    );
    for b in [Behavior::EndDx4, Behavior::EndDx6] {
        assert_eq!(
            up.add_sid(sid(2), b, 3, EgressFraming::Ethernet),
            Err(TunnelError::IpSidToEthernet(sid(2)))
        );
    }
    assert_eq!(up.len(), 3);
    assert_eq!(up.vxlan_port(), VXLAN_PORT);
}

#[test]
fn every_core_error_has_a_drop_reason() {
    use DropReason::*;
    let vx: Vec<DropReason> = VxlanError::ALL.iter().map(|e| e.drop_reason()).collect();
    assert_eq!(VxlanError::NoHeadroom.drop_reason(), NoHeadroom);
    assert_eq!(VxlanError::TooLong.drop_reason(), TooBig);
    assert_eq!(VxlanError::InnerNotIp.drop_reason(), NotIp);
    assert_eq!(VxlanError::NotVxlanPort.drop_reason(), TunnelUnknown);
    assert_eq!(VxlanError::BadIpChecksum.drop_reason(), TunnelMalformed);
    assert!(vx
        .iter()
        .all(|r| [NoHeadroom, TooBig, NotIp, TunnelUnknown, TunnelMalformed].contains(r)));
    let sr: Vec<DropReason> = Srv6Error::ALL.iter().map(|e| e.drop_reason()).collect();
    assert_eq!(Srv6Error::OutOfBounds.drop_reason(), NoHeadroom);
    assert_eq!(Srv6Error::TooLong.drop_reason(), TooBig);
    assert_eq!(Srv6Error::PayloadNotIp.drop_reason(), NotIp);
    assert_eq!(Srv6Error::WrongPayload.drop_reason(), TunnelMalformed);
    assert!(sr
        .iter()
        .all(|r| [NoHeadroom, TooBig, NotIp, TunnelMalformed].contains(r)));
}

/// The whole path on a worker: a frame received on local port 1 is encapsulated and sent out of
/// the uplink (0); the test plays the network and sends it back into the uplink, whose decap
/// (keyed on this node's own address) delivers it to local port 2.
#[test]
fn a_worker_carries_frames_through_a_tunnel_and_back() {
    let veth = EgressFraming::EthernetIp {
        dst: VETH_PEER,
        src: VETH_LOCAL,
    };
    for (encap, decap_to) in [
        (
            Arc::new(vxlan(false, vni(7), Framing::EthernetIp)) as Arc<dyn Encap>,
            (true, veth),
        ),
        (
            Arc::new(srv6(sid(7), Framing::EthernetIp)) as Arc<dyn Encap>,
            (false, veth),
        ),
    ] {
        let mut up = UplinkDecap::new(VXLAN_PORT);
        if decap_to.0 {
            up.add_vxlan(A4.into(), vni(7), 2, decap_to.1).unwrap();
        } else {
            up.add_sid(sid(7), Behavior::EndDx4, 2, decap_to.1).unwrap();
        }
        let mut t = ForwardingTable::new(4);
        t.add_tunnel(1, 0, encap).unwrap();
        t.set_decap(0, Arc::new(up)).unwrap();
        let mut rig = Rig::new(t, 4, 128).unwrap();
        let mut peers: Vec<MemPort> = Vec::new();
        for id in 0..3 {
            let (port, peer) = mem_pair("port", "peer", 64);
            rig.worker.add_port(id, Box::new(port)).unwrap();
            peers.push(peer);
        }
        let ctr = PortCounters::default();
        let frames: Vec<Vec<u8>> = (0..5u8)
            .map(|i| eth_ip(INNER_DST, INNER_SRC, &ip4(&[i; 20])))
            .chain([arp()])
            .collect();
        let pool = rig.worker.pool_mut();
        let bufs: Vec<BufIdx> = frames.iter().map(|f| load(pool, f)).collect();
        assert_eq!(peers[1].tx_burst(pool, &bufs, &ctr), 6);
        rig.worker.poll_once();
        // The network: what left the uplink comes back in.
        let mut burst = Burst::with_capacity(MAX_BURST);
        peers[0].rx_burst(rig.worker.pool_mut(), &mut burst, &ctr);
        assert_eq!(burst.len(), 5, "the ARP frame was not carried");
        assert_eq!(
            peers[0].tx_burst(rig.worker.pool_mut(), burst.as_slice(), &ctr),
            5
        );
        rig.worker.poll_once();
        burst.clear();
        peers[2].rx_burst(rig.worker.pool_mut(), &mut burst, &ctr);
        let pool = rig.worker.pool_mut();
        let got: Vec<Vec<u8>> = burst
            .as_slice()
            .iter()
            .map(|&b| pool.packet(b).to_vec())
            .collect();
        pool.free_burst(burst.as_slice());
        let want: Vec<Vec<u8>> = (0..5u8)
            .map(|i| eth_ip(VETH_PEER, VETH_LOCAL, &ip4(&[i; 20])))
            .collect();
        assert_eq!(got, want);
        assert_eq!(rig.totals(1).drops(DropReason::NotIp), 1);
        assert_eq!((rig.totals(0).tx_packets, rig.totals(0).rx_packets), (5, 5));
        assert_eq!(rig.totals(2).tx_packets, 5);
        assert_eq!(rig.worker.pool_mut().available(), 128);
    }
}
