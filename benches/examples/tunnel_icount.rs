//! Instructions per packet of the tunnel cores, for `perf/tunnel_icount.sh`: runs one of the
//! `benches/tunnel.rs` workloads a given number of times over a burst of 32 frames, so that
//! `valgrind --tool=cachegrind` can count its instructions. The count is deterministic, unlike
//! the time on this class of machine (2 shared vCPUs), so two trees compare to the instruction.
//!
//! Usage: `tunnel_icount <encap_l2|encap_ip|srv6_decap|encap_v4|encap_v4_csum|encap_v6|decap_v4|
//! decap_v6> <frame size> <rounds>`. The frames and parameters are those of the criterion bench.
//! The API used is the one the tunnel cores had before and after issue 10, so the script can
//! copy this file into an older tree.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;

use etherparse::PacketBuilder;
use vwire_mechanisms::srv6::{self, EncapHeader, EncapParams};
use vwire_mechanisms::vxlan::{self, TunnelHeader, TunnelParams, Underlay, Vni, VXLAN_PORT};

const BURST: usize = 32;
const FRAME: usize = 4096;
const HR: usize = 256;

/// An Ethernet + IPv4 + UDP frame of `size` bytes, the UDP source port varying per packet.
fn inner(size: usize, i: usize) -> Vec<u8> {
    let port = 1000 + u16::try_from(i).expect("small");
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(port, 5001);
    let mut v = Vec::new();
    b.write(&mut v, &vec![7u8; size - 42]).expect("frame");
    v
}

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

fn run(op: &str, size: usize, rounds: usize) -> Result<(), String> {
    if !(64..=FRAME - HR).contains(&size) {
        return Err(format!("frame size {size}: expected 64..={}", FRAME - HR));
    }
    let mut frames = pool(size);
    let h = EncapHeader::new(&srv6_params());
    match op {
        "encap_l2" => (0..rounds).for_each(|_| {
            for f in frames.chunks_exact_mut(FRAME) {
                black_box(h.encap_l2(black_box(f), HR, size).expect("encap"));
            }
        }),
        "encap_ip" => (0..rounds).for_each(|_| {
            for f in frames.chunks_exact_mut(FRAME) {
                black_box(h.encap_ip(black_box(f), HR + 14, size - 14).expect("encap"));
            }
        }),
        "srv6_decap" => {
            let mut at = (0, 0);
            for f in frames.chunks_exact_mut(FRAME) {
                at = h.encap_l2(f, HR, size).expect("encap");
            }
            let (o, l) = at;
            (0..rounds).for_each(|_| {
                for f in frames.chunks_exact(FRAME) {
                    let d = srv6::decap(black_box(f), o, l).expect("decap");
                    srv6::Behavior::EndDx2.check(&d).expect("dx2");
                    black_box(d);
                }
            });
        }
        "encap_v4" | "encap_v4_csum" | "encap_v6" => {
            let th = TunnelHeader::new(&vxlan_params(op == "encap_v6", op != "encap_v4"));
            (0..rounds).for_each(|_| {
                for f in frames.chunks_exact_mut(FRAME) {
                    black_box(th.encap(black_box(f), HR, size).expect("encap"));
                }
            });
        }
        "decap_v4" | "decap_v6" => {
            let th = TunnelHeader::new(&vxlan_params(op == "decap_v6", false));
            let mut at = (0, 0);
            for f in frames.chunks_exact_mut(FRAME) {
                at = th.encap(f, HR, size).expect("encap");
            }
            let (o, l) = at;
            (0..rounds).for_each(|_| {
                for f in frames.chunks_exact(FRAME) {
                    black_box(vxlan::decap(black_box(f), o, l, VXLAN_PORT).expect("decap"));
                }
            });
        }
        _ => return Err(format!("unknown workload {op:?}")),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [op, size, rounds] => size.parse().ok().zip(rounds.parse().ok()).map(|s| (op, s)),
        _ => None,
    };
    let Some((op, (size, rounds))) = parsed else {
        eprintln!("usage: tunnel_icount <workload> <frame size> <rounds>");
        return ExitCode::from(2);
    };
    match run(op, size, rounds) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tunnel_icount: {e}");
            ExitCode::from(2)
        }
    }
}
