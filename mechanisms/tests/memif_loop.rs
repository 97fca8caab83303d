//! The memif data path of both roles against each other in one process, over one shared
//! region: random bursts and packet sizes (including chains across several buffers), enough
//! packets for the u16 ring indices to wrap, and every packet checked for order and content.
//! The model is a plain queue of what was sent.

use std::collections::VecDeque;

use proptest::prelude::*;
use vwire_dataplane::buffer::{BufferPool, HEADROOM};
use vwire_dataplane::counters::{DropReason, PortCounters};
use vwire_dataplane::port::{Burst, Port};
use vwire_dataplane::rcu::Qsbr;
use vwire_mechanisms::memif::driver::{session_pair, MemifConfig};
use vwire_mechanisms::memif::msg::Mode;
use vwire_mechanisms::memif::port::{Link, MemifPort, Role};

fn cfg(log2: u8, buffer_size: u32) -> MemifConfig {
    MemifConfig {
        name: "loop".into(),
        socket: "@unused".into(),
        role: Role::Client,
        id: 0,
        mode: Mode::Ethernet,
        queues: 1,
        log2_ring_size: log2,
        buffer_size,
        secret: String::new(),
        netns: None,
    }
}

/// Writes packet number `seq` into `pkt`: its number in the first bytes, then a fill byte that
/// changes with the number and the position, so that a misplaced chain segment shows.
fn fill(seq: usize, pkt: &mut [u8]) {
    for (i, chunk) in pkt.chunks_mut(64).enumerate() {
        chunk.fill(u8::try_from(seq.wrapping_add(i) % 251).unwrap_or(0));
    }
    let tag = u32::try_from(seq).unwrap_or(u32::MAX).to_le_bytes();
    let n = pkt.len().min(4);
    pkt[..n].copy_from_slice(&tag[..n]);
}

fn content(seq: usize, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    fill(seq, &mut v);
    v
}

/// Sends packets of `sizes` from `tx` to `rx` in bursts of up to `burst`, checking what
/// arrives against the model.
fn exchange(
    tx: &mut MemifPort,
    rx: &mut MemifPort,
    pool: &mut BufferPool,
    sizes: &[usize],
    burst: usize,
) {
    let ctr = PortCounters::default();
    let mut in_flight: VecDeque<usize> = VecDeque::new(); // seq numbers sent, not yet received
    let mut next = 0usize; // next seq to send
    let mut out = Burst::with_capacity(32);
    let mut idle = 0;
    while next < sizes.len() || !in_flight.is_empty() {
        let mut bufs = Vec::new();
        for (seq, &len) in sizes.iter().enumerate().skip(next).take(burst) {
            let b = pool.alloc().expect("pool");
            pool.set_meta(b, HEADROOM, len);
            fill(seq, pool.packet_mut(b));
            bufs.push(b);
        }
        let sent = tx.tx_burst(pool, &bufs, &ctr);
        if sent < bufs.len() {
            assert_eq!(tx.tx_drop_reason(), DropReason::TxRingFull);
            pool.free_burst(&bufs[sent..]); // resent next round
        }
        in_flight.extend(next..next + sent);
        next += sent;
        out.clear();
        let got = rx.rx_burst(pool, &mut out, &ctr);
        for &b in out.as_slice() {
            let seq = in_flight.pop_front().expect("more packets than sent");
            assert_eq!(
                pool.packet(b),
                &content(seq, sizes[seq])[..],
                "packet {seq}: content and order"
            );
            pool.free(b);
        }
        idle = if got == 0 && sent == 0 { idle + 1 } else { 0 };
        assert!(
            idle < 100,
            "stuck with {} in flight and {} to send",
            in_flight.len(),
            sizes.len() - next
        );
    }
    assert_eq!(
        pool.available(),
        pool.capacity() as usize,
        "every pool buffer came back"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn both_directions_wrap_and_chain(
        log2 in 1u8..6,
        buffer_size in prop_oneof![Just(128u32), Just(512), Just(2048)],
        burst in 1usize..40,
        sizes in proptest::collection::vec(1usize..3800, 50..300),
    ) {
        let qsbr = Qsbr::new();
        let (cl, sl) = (Link::new(qsbr.clone()), Link::new(qsbr));
        session_pair(&cfg(log2, buffer_size), &cl, &sl).unwrap();
        let mut client = MemifPort::new("c", cl);
        let mut server = MemifPort::new("s", sl);
        let mut pool = BufferPool::new(256).unwrap();
        // The client posts its M2S buffers on a receive poll.
        let mut scratch = Burst::with_capacity(32);
        client.rx_burst(&mut pool, &mut scratch, &PortCounters::default());
        // A packet can never need more descriptors than the ring has.
        let max = (1usize << log2) * buffer_size as usize;
        let capped: Vec<usize> = sizes.iter().map(|&s| s.min(max)).collect();
        // Enough rounds for the u16 indices to wrap at least once in each direction.
        let per_round: usize = capped.iter().map(|s| s.div_ceil(buffer_size as usize)).sum();
        let rounds = 66_000 / per_round + 1;
        let many: Vec<usize> = capped.iter().copied().cycle().take(capped.len() * rounds).collect();
        let descs: usize = many.iter().map(|s| s.div_ceil(buffer_size as usize)).sum();
        prop_assert!(descs > 65_536, "only {} descriptors: the indices would not wrap", descs);
        exchange(&mut client, &mut server, &mut pool, &many, burst);
        exchange(&mut server, &mut client, &mut pool, &many, burst);
    }
}

#[test]
fn nine_thousand_byte_frames_chain_both_ways() {
    let qsbr = Qsbr::new();
    let (cl, sl) = (Link::new(qsbr.clone()), Link::new(qsbr));
    session_pair(&cfg(10, 2048), &cl, &sl).unwrap();
    let mut client = MemifPort::new("c", cl);
    let mut server = MemifPort::new("s", sl);
    let mut pool =
        BufferPool::with_frame_size(256, vwire_dataplane::buffer::JUMBO_FRAME_SIZE).unwrap();
    let mut scratch = Burst::with_capacity(32);
    client.rx_burst(&mut pool, &mut scratch, &PortCounters::default());
    let sizes: Vec<usize> = (0..3000)
        .map(|i| [9000, 64, 4097, 9000, 1500][i % 5])
        .collect();
    exchange(&mut client, &mut server, &mut pool, &sizes, 32);
    exchange(&mut server, &mut client, &mut pool, &sizes, 32);
}

/// True if `fd` is readable right now.
fn readable(fd: std::os::fd::RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd, no timeout.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

/// Spec §7: the producer signals the ring's eventfd after publishing packets unless the
/// consumer set MASK_INT; the consumer owns the flag. A polling port keeps it set; a port about
/// to sleep clears it, re-checks for packets that arrived before, and sets it again on waking.
#[test]
fn interrupts_follow_mask_int() {
    let qsbr = Qsbr::new();
    let (cl, sl) = (Link::new(qsbr.clone()), Link::new(qsbr));
    session_pair(&cfg(6, 2048), &cl, &sl).unwrap();
    let mut client = MemifPort::new("c", cl);
    let mut server = MemifPort::new("s", sl);
    let mut pool = BufferPool::new(64).unwrap();
    let ctr = PortCounters::default();
    let mut fds = Vec::new();
    server.wait_fds(&mut fds);
    let [efd] = fds[..] else {
        panic!("one receive eventfd: {fds:?}")
    };
    let send = |port: &mut MemifPort, pool: &mut BufferPool| {
        let b = pool.alloc().unwrap();
        pool.set_meta(b, HEADROOM, 60);
        assert_eq!(port.tx_burst(pool, &[b], &ctr), 1);
    };
    let mut out = Burst::with_capacity(32);

    send(&mut client, &mut pool);
    assert!(!readable(efd), "a polling consumer is not signalled");
    assert!(
        server.prepare_sleep(),
        "a packet that arrived before sleeping is found"
    );
    server.after_sleep();
    assert_eq!(server.rx_burst(&mut pool, &mut out, &ctr), 1);
    pool.free_burst(out.as_slice());

    assert!(
        !server.prepare_sleep(),
        "nothing pending: the worker may sleep"
    );
    send(&mut client, &mut pool);
    assert!(readable(efd), "a sleeping consumer is signalled");
    server.after_sleep();
    assert!(!readable(efd), "waking drains the eventfd");
    send(&mut client, &mut pool);
    assert!(!readable(efd), "polling again: no more signals");
    out.clear();
    assert_eq!(server.rx_burst(&mut pool, &mut out, &ctr), 2);
}
