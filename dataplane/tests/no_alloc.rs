//! The packet path allocates nothing: one million packets cross an in-memory port pair through
//! the real worker loop (receive, table lookup, transmit, counters) while a counting global
//! allocator watches this thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use vwire_dataplane::counters::DropReason;
use vwire_dataplane::test_utils::LoopRig;

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

#[test]
fn the_counting_allocator_does_count() {
    // Guards the test above against a watcher that sees nothing.
    WATCHING.with(|w| w.set(true));
    let v = std::hint::black_box(vec![1u8; 10]);
    WATCHING.with(|w| w.set(false));
    drop(v);
    assert!(allocs() >= 1);
}
