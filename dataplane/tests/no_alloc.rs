//! The packet path allocates nothing: one million packets cross an in-memory port pair through
//! the real worker loop (receive, table lookup, transmit, counters) while a counting global
//! allocator watches this thread; and one million go round a tunnel loop (encap to an uplink,
//! decap and demux back to two local ports).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use std::sync::Arc;

use vwire_dataplane::counters::DropReason;
use vwire_dataplane::mem_port::mem_loop;
use vwire_dataplane::table::ForwardingTable;
use vwire_dataplane::test_utils::{LoopRig, Rig};
use vwire_dataplane::tunnel::{Decap, Encap};
use vwire_dataplane::{BufIdx, BufferPool, PortId};

struct Counting;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    /// Allocations made by this thread while watching (per thread: tests run in parallel).
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    if WATCHING.with(Cell::get) {
        ALLOCS.with(|a| a.set(a.get() + 1));
    }
}

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

// SAFETY: forwards every call to the system allocator unchanged; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_million_packets_allocate_nothing() {
    let frame = [0xa5u8; 64];
    let mut rig = LoopRig::new(&frame, 256).expect("rig");
    // Warm up outside the watch (first-touch of lazily created state, if any).
    rig.worker.poll_once();

    WATCHING.with(|w| w.set(true));
    let mut moved = 0usize;
    while moved < 1_000_000 {
        moved += rig.worker.poll_once();
    }
    WATCHING.with(|w| w.set(false));

    assert_eq!(allocs(), 0, "the packet path allocated");
    let t = vwire_dataplane::counters::port_totals([&*rig.counters], 0);
    let out = vwire_dataplane::counters::port_totals([&*rig.counters], 1);
    assert!(
        t.rx_packets >= 1_000_000,
        "only {} packets received",
        t.rx_packets
    );
    assert_eq!(
        out.tx_packets, t.rx_packets,
        "every packet received was sent"
    );
    assert_eq!(out.tx_bytes, t.rx_packets * 64);
    for r in DropReason::ALL {
        assert_eq!(
            t.drops(r) + out.drops(r),
            0,
            "unexpected {} drops",
            r.name()
        );
    }
}

/// Prepends 4 bytes of `tag`.
#[derive(Debug)]
struct Tag(u8);

impl Encap for Tag {
    fn encap(&self, pool: &mut BufferPool, b: BufIdx) -> Result<(), DropReason> {
        let m = pool.meta(b);
        let (off, len) = (usize::from(m.offset), usize::from(m.len));
        let start = off.checked_sub(4).ok_or(DropReason::NoHeadroom)?;
        pool.frame_mut(b)[start..off].fill(self.0);
        pool.set_meta(b, start, len + 4);
        Ok(())
    }
}

/// Strips 4 bytes; the first names the egress port.
#[derive(Debug)]
struct Untag;

impl Decap for Untag {
    fn decap(&self, pool: &mut BufferPool, b: BufIdx) -> Result<PortId, DropReason> {
        let m = pool.meta(b);
        let (off, len) = (usize::from(m.offset), usize::from(m.len));
        let port = *pool.packet(b).first().ok_or(DropReason::TunnelMalformed)?;
        pool.set_meta(b, off + 4, len - 4);
        Ok(PortId::from(port))
    }
}

#[test]
fn a_million_tunnelled_packets_allocate_nothing() {
    // Port 0 is the uplink, 1 and 2 local ports, each wired to itself: what the worker sends
    // out of one comes back in on the same port. So every packet is encapsulated on its local
    // port, decapsulated on the uplink (interleaved with the other tunnel's: the demux sorts),
    // and sent back to its local port, forever.
    let mut t = ForwardingTable::new(3);
    t.add_tunnel(1, 0, Arc::new(Tag(1))).unwrap();
    t.add_tunnel(2, 0, Arc::new(Tag(2))).unwrap();
    t.set_decap(0, Arc::new(Untag)).unwrap();
    let mut rig = Rig::new(t, 3, 1024).expect("rig");
    let up = mem_loop("up", 512);
    let (l1, l2) = (mem_loop("l1", 512), mem_loop("l2", 512));
    let frame = [0xa5u8; 64];
    assert_eq!(l1.inject(rig.worker.pool_mut(), &frame, 100), 100);
    assert_eq!(l2.inject(rig.worker.pool_mut(), &frame, 60), 60);
    rig.worker.add_port(0, Box::new(up)).unwrap();
    rig.worker.add_port(1, Box::new(l1)).unwrap();
    rig.worker.add_port(2, Box::new(l2)).unwrap();
    rig.worker.poll_once();

    WATCHING.with(|w| w.set(true));
    let mut moved = 0usize;
    while moved < 1_000_000 {
        moved += rig.worker.poll_once();
    }
    WATCHING.with(|w| w.set(false));

    assert_eq!(allocs(), 0, "the tunnel path allocated");
    let (up, l1, l2) = (rig.totals(0), rig.totals(1), rig.totals(2));
    assert!(
        up.rx_packets >= 400_000,
        "only {} decapsulated",
        up.rx_packets
    );
    assert!(l1.rx_packets > 0 && l2.rx_packets > 0);
    for r in DropReason::ALL {
        assert_eq!(
            up.drops(r) + l1.drops(r) + l2.drops(r),
            0,
            "unexpected {} drops",
            r.name()
        );
    }
    // 160 packets in flight, none lost: each port sent what it received, give or take those
    // still queued.
    assert_eq!(up.tx_packets, l1.rx_packets + l2.rx_packets);
    assert_eq!(l1.tx_packets + l2.tx_packets, up.rx_packets);
    assert_eq!(up.tx_bytes, (l1.rx_packets + l2.rx_packets) * 68);
    assert_eq!(
        rig.worker.pool_mut().available(),
        1024 - 160,
        "no buffer leaked"
    );
}

#[test]
fn the_counting_allocator_does_count() {
    // Guards the test above against a watcher that sees nothing.
    WATCHING.with(|w| w.set(true));
    let v = std::hint::black_box(vec![1u8; 10]);
    WATCHING.with(|w| w.set(false));
    drop(v);
    assert!(allocs() >= 1);
}
