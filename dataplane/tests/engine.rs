//! The engine on real threads: a worker forwards between in-memory ports, the control side
//! publishes a new forwarding table under load, takes a port back through the command queue,
//! and stops the engine.

use std::time::{Duration, Instant};

use vwire_dataplane::counters::DropReason;
use vwire_dataplane::engine::{EngineBuilder, EngineConfig};
use vwire_dataplane::mem_port::mem_pair;
use vwire_dataplane::table::ForwardingTable;
use vwire_dataplane::worker::PollMode;

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn table_swap_and_port_removal_under_load() {
    let mut b = EngineBuilder::new(&EngineConfig {
        cpus: vec![None],
        poll_mode: PollMode::Adaptive,
        pool_frames: vec![1024],
        frame_sizes: vec![],
        max_ports: 8,
    })
    .unwrap();
    let (p0, p1) = mem_pair("p0", "p1", 1024);
    let primed = p0.inject(b.pool_mut(0).unwrap(), &[7u8; 100], 512);
    assert_eq!(primed, 512);
    b.add_port(0, 0, Box::new(p0)).unwrap();
    b.add_port(0, 1, Box::new(p1)).unwrap();
    let mut t = ForwardingTable::new(8);
    t.add_xconnect(0, 1).unwrap();
    b.table().publish(t);
    let mut engine = b.start().unwrap();

    // The primed packets circulate: received on 0, sent on 1, received on 0 again.
    wait_for("100k packets forwarded", || {
        engine.port_totals(0).rx_packets > 100_000
    });
    assert!(engine.is_healthy());
    let busy = engine.worker_counters()[0].time().0;
    assert!(busy > 0, "busy time is counted");

    // Swap in an empty table while traffic flows: the worker drops what it receives (no_route),
    // which drains the loop. publish() returns only after the worker has passed a quiescent
    // point, so the old table is freed safely.
    engine.table().publish(ForwardingTable::new(8));
    // Every one of the 512 packets in flight is dropped exactly once.
    wait_for("the loop to drain", || {
        engine.port_totals(0).drops(DropReason::NoRoute) == 512
    });
    let t0 = engine.port_totals(0);
    std::thread::sleep(Duration::from_millis(50));
    let t1 = engine.port_totals(0);
    assert_eq!(
        t0.rx_packets, t1.rx_packets,
        "nothing moves once the table is empty"
    );
    assert_eq!(
        t1.rx_packets,
        engine.port_totals(1).tx_packets + t1.drops(DropReason::NoRoute),
        "every packet received was either sent or counted as dropped"
    );

    // Take port 1 back: the worker no longer polls it, and it can be dropped here.
    let port = engine
        .remove_port(0, 1)
        .unwrap()
        .expect("the worker had port 1");
    assert_eq!(port.name(), "p1");
    assert!(
        engine.remove_port(0, 1).unwrap().is_none(),
        "port 1 is gone"
    );
    drop(port);
    assert!(engine.stop().is_empty(), "workers stopped cleanly");
}
