//! The per-packet cost of the tunnel cores (`vwire_mechanisms::vxlan`, `vwire_mechanisms::srv6`),
//! with no I/O: each iteration processes a burst of 32 packets sitting in 32 pool-like frames
//! (4 KiB apart, 256 bytes of headroom), so criterion's time per element is ns/packet at burst 32.
//! Inner frames are Ethernet + IPv4 + UDP of 64 and 1500 bytes.
//!
//! - `vxlan/encap_v4`: copy the 50-byte template, finish the IPv4 header checksum incrementally,
//!   flow-hash the inner frame for the UDP source port (UDP checksum 0, the default).
//! - `vxlan/encap_v4_csum`: the same with the optional IPv4 UDP checksum (sums the whole frame).
//! - `vxlan/encap_v6`: the 70-byte template, flow label, and the mandatory UDP checksum.
//! - `vxlan/decap_v4`, `vxlan/decap_v6`: parse and check the outer headers (IPv4 header checksum
//!   included), find the inner frame.
//! - `srv6/encap_l2` (H.Encaps.L2), `srv6/encap_ip` (H.Encaps of the IPv4 packet),
//!   `srv6/decap` (End.DX2's parse of an H.Encaps.L2 packet).
//!
//! Encapsulation writes only the headroom, so the same 32 frames are encapsulated again on every
//! iteration; decapsulation is read-only.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use etherparse::PacketBuilder;
use vwire_mechanisms::srv6::{self, EncapHeader, EncapParams};
use vwire_mechanisms::vxlan::{self, TunnelHeader, TunnelParams, Underlay, Vni, VXLAN_PORT};

const BURST: usize = 32;
const FRAME: usize = 4096;
const HR: usize = 256;
const SIZES: [usize; 2] = [64, 1500];

/// An Ethernet + IPv4 + UDP frame of `size` bytes; the UDP source port varies per packet so the
/// flow hashes differ.
fn inner(size: usize, i: usize) -> Vec<u8> {
    let port = 1000 + u16::try_from(i).expect("small");
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(port, 5001);
    let mut v = Vec::new();
    b.write(&mut v, &vec![7u8; size - 42]).expect("frame");
    v
}

/// 32 frames, each holding an inner frame of `size` bytes at offset HR.
fn pool(size: usize) -> Vec<u8> {
    let mut pool = vec![0u8; BURST * FRAME];
    for (i, f) in pool.chunks_exact_mut(FRAME).enumerate() {
        f[HR..HR + size].copy_from_slice(&inner(size, i));
    }
    pool
}

fn vxlan_params(v6: bool, csum: bool) -> TunnelParams {
    TunnelParams {
        underlay: if v6 {
            Underlay::V6 {
                local: Ipv6Addr::new(0xfd97, 0, 0, 0, 0, 0, 0, 1),
                remote: Ipv6Addr::new(0xfd97, 0, 0, 0, 0, 0, 0, 2),
            }
        } else {
            Underlay::V4 {
                local: Ipv4Addr::new(10, 97, 0, 1),
                remote: Ipv4Addr::new(10, 97, 0, 2),
            }
        },
        local_mac: [2, 0, 0, 0, 0xa, 1],
        next_hop_mac: [2, 0, 0, 0, 0xb, 1],
        dst_port: VXLAN_PORT,
        vni: Vni::new(100).expect("vni"),
        ttl: 64,
        udp_checksum_v4: csum,
    }
}

fn srv6_params() -> EncapParams {
    EncapParams {
        src: Ipv6Addr::new(0xfc00, 0xa, 0, 0, 0, 0, 0, 1),
        sid: Ipv6Addr::new(0xfc00, 0xb, 0, 0, 0, 0, 0, 0xd2),
        local_mac: [2, 0, 0, 0, 0xa, 1],
        next_hop_mac: [2, 0, 0, 0, 0xb, 1],
        hop_limit: 64,
    }
}

fn vxlan(c: &mut Criterion) {
    let mut g = c.benchmark_group("vxlan");
    g.throughput(Throughput::Elements(BURST as u64));
    for size in SIZES {
        for (name, v6, csum) in [
            ("encap_v4", false, false),
            ("encap_v4_csum", false, true),
            ("encap_v6", true, true),
        ] {
            let th = TunnelHeader::new(&vxlan_params(v6, csum));
            let mut frames = pool(size);
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, &size| {
                b.iter(|| {
                    for f in frames.chunks_exact_mut(FRAME) {
                        black_box(th.encap(black_box(f), HR, size).expect("encap"));
                    }
                })
            });
        }
        for (name, v6) in [("decap_v4", false), ("decap_v6", true)] {
            let th = TunnelHeader::new(&vxlan_params(v6, false));
            let mut frames = pool(size);
            let mut at = (0, 0);
            for f in frames.chunks_exact_mut(FRAME) {
                at = th.encap(f, HR, size).expect("encap");
            }
            let (o, l) = at;
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                b.iter(|| {
                    for f in frames.chunks_exact(FRAME) {
                        black_box(vxlan::decap(black_box(f), o, l, VXLAN_PORT).expect("decap"));
                    }
                })
            });
        }
    }
    g.finish();
}

fn srv6(c: &mut Criterion) {
    let mut g = c.benchmark_group("srv6");
    g.throughput(Throughput::Elements(BURST as u64));
    let h = EncapHeader::new(&srv6_params());
    for size in SIZES {
        let mut frames = pool(size);
        g.bench_with_input(BenchmarkId::new("encap_l2", size), &size, |b, &size| {
            b.iter(|| {
                for f in frames.chunks_exact_mut(FRAME) {
                    black_box(h.encap_l2(black_box(f), HR, size).expect("encap"));
                }
            })
        });
        // H.Encaps of the IP packet behind the Ethernet header.
        g.bench_with_input(BenchmarkId::new("encap_ip", size), &size, |b, &size| {
            b.iter(|| {
                for f in frames.chunks_exact_mut(FRAME) {
                    black_box(h.encap_ip(black_box(f), HR + 14, size - 14).expect("encap"));
                }
            })
        });
        let mut at = (0, 0);
        for f in frames.chunks_exact_mut(FRAME) {
            at = h.encap_l2(f, HR, size).expect("encap");
        }
        let (o, l) = at;
        g.bench_with_input(BenchmarkId::new("decap", size), &size, |b, _| {
            b.iter(|| {
                for f in frames.chunks_exact(FRAME) {
                    let d = srv6::decap(black_box(f), o, l).expect("decap");
                    srv6::Behavior::EndDx2.check(&d).expect("dx2");
                    black_box(d);
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, vxlan, srv6);
criterion_main!(benches);
