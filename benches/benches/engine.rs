//! The engine's own cost per packet, with no kernel involved.
//!
//! - `engine/xconnect`: one worker loop (`poll_once`) over two cross-connected in-memory ports
//!   wired into a loop, so each call receives a burst of 32 on one port, looks up the table, and
//!   transmits the burst on the other, plus the counters and a flush of both ports. Criterion's
//!   element throughput is packets: time per element is ns/packet at burst 32.
//! - `checksum/complete_partial`: the per-packet cost AF_XDP ports pay to find (and complete)
//!   partial TCP checksums, for a frame whose checksum is already valid (the common case) and for
//!   a partial one.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use etherparse::PacketBuilder;
use vwire_dataplane::checksum::{complete_partial, make_partial, Outcome};
use vwire_dataplane::test_utils::LoopRig;
use vwire_dataplane::BURST;

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

criterion_group!(benches, xconnect, checksum);
criterion_main!(benches);
