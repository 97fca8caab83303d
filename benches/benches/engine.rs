//! The engine's own cost per packet, with no kernel involved.
//!
//! - `engine/xconnect`: one worker loop (`poll_once`) over two cross-connected in-memory ports
//!   wired into a loop, so each call receives a burst of 32 on one port, looks up the table, and
//!   transmits the burst on the other, plus the counters and a flush of both ports. Criterion's
//!   element throughput is packets: time per element is ns/packet at burst 32.
//! - `engine/vxlan_loop`, `engine/vxlan3_loop`, `engine/srv6_loop`: the tunnel path through the
//!   worker. A local port and an uplink, each an in-memory port wired to itself: what the local
//!   port receives is encapsulated ([`VxlanEncap`] over IPv4, or [`Srv6Encap`] H.Encaps.L2) and
//!   sent to the uplink, which receives it again, decapsulates it ([`UplinkDecap`]) and sends it
//!   back to the local port. Primed with 64 packets, every `poll_once` decapsulates a burst of
//!   32 and encapsulates another 32, so the time per element is the cost of one packet crossing
//!   the tunnel both ways (one encap, one decap, two transmits) at burst 32. `vxlan3` spreads the
//!   packets over three tunnels (VNIs) and three local ports, so the uplink's bursts hold
//!   several egress ports and take the sort-and-group path. Measured on the shared 2-vCPU VM
//!   (load ~3, so ±10%), 64 / 1500 bytes, ns per packet: vxlan_loop 47 / 52, vxlan3_loop
//!   50 / 45, srv6_loop 36 / 39 (xconnect in the same run: 5.6).
//! - `checksum/complete_partial`: the per-packet cost AF_XDP ports pay to find (and complete)
//!   partial TCP checksums, for a frame whose checksum is already valid (the common case) and for
//!   a partial one.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use etherparse::PacketBuilder;
use vwire_dataplane::checksum::{complete_partial, make_partial, Outcome};
use vwire_dataplane::mem_port::mem_loop;
use vwire_dataplane::table::ForwardingTable;
use vwire_dataplane::test_utils::{LoopRig, Rig};
use vwire_dataplane::tunnel::Encap;
use vwire_dataplane::BURST;
use vwire_mechanisms::srv6::{Behavior, EncapHeader, EncapParams};
use vwire_mechanisms::tunnel::{EgressFraming, Framing, Srv6Encap, UplinkDecap, VxlanEncap};
use vwire_mechanisms::vxlan::{TunnelHeader, TunnelParams, Underlay, Vni, VXLAN_PORT};

fn xconnect(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    for size in [64usize, 1500] {
        let frame = vec![0xa5u8; size];
        let mut rig = LoopRig::new(&frame, 8 * BURST).expect("rig");
        g.throughput(Throughput::Elements(BURST as u64));
        g.bench_with_input(BenchmarkId::new("xconnect", size), &size, |b, _| {
            b.iter(|| {
                let n = rig.worker.poll_once();
                debug_assert_eq!(n, BURST);
                n
            })
        });
    }
    g.finish();
}

const LOCAL4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const UPLINK_MTU: u32 = 9000;

/// An Ethernet + IPv4 + UDP frame of `size` bytes.
fn udp_frame(size: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(1000, 5001);
    let mut v = Vec::new();
    b.write(&mut v, &vec![7u8; size - 42]).expect("frame");
    v
}

#[derive(Clone, Copy)]
enum Kind {
    Vxlan,
    Srv6,
}

/// The tunnel loop of the module docs: uplink 0, local ports `1..=tunnels`, 64 packets of
/// `size` bytes in flight. The uplink decaps what it sends itself, so it is keyed on this node's
/// own address (the outer source) and SID.
fn tunnel_rig(kind: Kind, tunnels: u16, size: usize) -> Rig {
    let ports = usize::from(tunnels) + 1;
    let mut t = ForwardingTable::new(ports);
    let mut up = UplinkDecap::new(VXLAN_PORT);
    for i in 1..=tunnels {
        let (encap, ok): (Arc<dyn Encap>, _) = match kind {
            Kind::Vxlan => {
                let vni = Vni::new(u32::from(i)).expect("vni");
                let h = TunnelHeader::new(&TunnelParams {
                    underlay: Underlay::V4 {
                        local: LOCAL4,
                        remote: Ipv4Addr::new(192, 0, 2, 2),
                    },
                    local_mac: [2, 0, 0, 0, 0xa, 1],
                    next_hop_mac: [2, 0, 0, 0, 0xb, 1],
                    dst_port: VXLAN_PORT,
                    vni,
                    ttl: 64,
                    udp_checksum_v4: false,
                });
                let ok = up.add_vxlan(LOCAL4.into(), vni, i, EgressFraming::Ethernet);
                (
                    Arc::new(VxlanEncap::new(h, Framing::Ethernet, UPLINK_MTU)),
                    ok,
                )
            }
            Kind::Srv6 => {
                let sid = Ipv6Addr::new(0xfc00, 0xb, 0, 0, 0, 0, 0, i);
                let h = EncapHeader::new(&EncapParams {
                    src: LOCAL6,
                    sid,
                    local_mac: [2, 0, 0, 0, 0xa, 1],
                    next_hop_mac: [2, 0, 0, 0, 0xb, 1],
                    hop_limit: 64,
                });
                let ok = up.add_sid(sid, Behavior::EndDx2, i, EgressFraming::Ethernet);
                (
                    Arc::new(Srv6Encap::new(h, Framing::Ethernet, UPLINK_MTU)),
                    ok,
                )
            }
        };
        ok.expect("decap entry");
        t.add_tunnel(i, 0, encap).expect("tunnel");
    }
    t.set_decap(0, Arc::new(up)).expect("decap");
    let mut rig = Rig::new(t, ports, 512).expect("rig");
    rig.worker
        .add_port(0, Box::new(mem_loop("uplink", 256)))
        .expect("uplink");
    let frame = udp_frame(size);
    let in_flight = 2 * BURST;
    for i in 1..=tunnels {
        let port = mem_loop("local", 256);
        // 64 packets over the local ports, the first ones taking the remainder.
        let share = in_flight / usize::from(tunnels)
            + usize::from(usize::from(i - 1) < in_flight % usize::from(tunnels));
        assert_eq!(port.inject(rig.worker.pool_mut(), &frame, share), share);
        rig.worker.add_port(i, Box::new(port)).expect("local");
    }
    // Warm up into the steady state, where each loop moves 64 packets: 32 decapsulated on the
    // uplink, 32 encapsulated on the local ports.
    for _ in 0..8 {
        rig.worker.poll_once();
    }
    let moved: usize = (0..100).map(|_| rig.worker.poll_once()).sum();
    assert_eq!(moved, 100 * 2 * BURST, "not in the steady state");
    rig
}

fn tunnel_loop(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(BURST as u64));
    for (name, kind, tunnels) in [
        ("vxlan_loop", Kind::Vxlan, 1),
        ("vxlan3_loop", Kind::Vxlan, 3),
        ("srv6_loop", Kind::Srv6, 1),
    ] {
        for size in [64usize, 1500] {
            let mut rig = tunnel_rig(kind, tunnels, size);
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                b.iter(|| rig.worker.poll_once())
            });
            // Nothing was dropped: every packet crossed the tunnel.
            let up = rig.totals(0);
            assert!(up.drops.iter().all(|&d| d == 0), "{name}: drops {up:?}");
            assert!(up.rx_packets > 0);
        }
    }
    g.finish();
}

fn tcp_frame(payload: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(80, 8080, 1, 4096);
    let mut v = Vec::new();
    b.write(&mut v, &vec![7u8; payload]).expect("frame");
    v
}

fn checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    g.throughput(Throughput::Elements(1));
    for (size, payload) in [(64usize, 10usize), (1500, 1446)] {
        let valid = tcp_frame(payload);
        g.bench_with_input(BenchmarkId::new("valid", size), &valid, |b, f| {
            let mut f = f.clone();
            b.iter(|| complete_partial(std::hint::black_box(&mut f)))
        });
        // A partial checksum: the field holds the pseudo-header sum. Completing it makes the
        // frame valid, so each iteration restores the partial field first.
        let mut partial = valid.clone();
        assert!(make_partial(&mut partial));
        assert_eq!(complete_partial(&mut partial.clone()), Outcome::Completed);
        let at = 14 + 20 + 16;
        g.bench_with_input(BenchmarkId::new("partial", size), &partial, |b, f| {
            let mut work = f.clone();
            b.iter(|| {
                work[at..at + 2].copy_from_slice(&f[at..at + 2]);
                complete_partial(std::hint::black_box(&mut work))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, xconnect, tunnel_loop, checksum);
criterion_main!(benches);
