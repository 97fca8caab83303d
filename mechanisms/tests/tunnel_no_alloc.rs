//! The tunnel drivers allocate nothing on the packet path: packets go round VXLAN (IPv4 and IPv6
//! underlays) and SRv6 tunnels through a real worker — encapsulated on their local ports,
//! decapsulated and demultiplexed on one uplink — and garbage is thrown at the uplink, while a
//! counting global allocator watches this thread. No privileges or devices needed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use vwire_dataplane::counters::DropReason;
use vwire_dataplane::mem_port::mem_loop;
use vwire_dataplane::table::ForwardingTable;
use vwire_dataplane::test_utils::Rig;
use vwire_dataplane::tunnel::Encap;
use vwire_mechanisms::srv6::{Behavior, EncapHeader, EncapParams};
use vwire_mechanisms::tunnel::{EgressFraming, Framing, Srv6Encap, UplinkDecap, VxlanEncap};
use vwire_mechanisms::vxlan::{TunnelHeader, TunnelParams, Underlay, Vni, VXLAN_PORT};

struct Counting;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    /// Allocations made by this thread while watching.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    if WATCHING.with(Cell::get) {
        ALLOCS.with(|a| a.set(a.get() + 1));
    }
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

const A4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn vxlan(v6: bool, vni: Vni) -> VxlanEncap {
    let underlay = if v6 {
        Underlay::V6 {
            local: A6,
            remote: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
        }
    } else {
        Underlay::V4 {
            local: A4,
            remote: Ipv4Addr::new(192, 0, 2, 2),
        }
    };
    let h = TunnelHeader::new(&TunnelParams {
        underlay,
        local_mac: MAC,
        next_hop_mac: MAC,
        dst_port: VXLAN_PORT,
        vni,
        ttl: 64,
        udp_checksum_v4: true,
    });
    VxlanEncap::new(h, Framing::EthernetIp, 1500)
}

#[test]
fn tunnelled_packets_and_garbage_allocate_nothing() {
    // Uplink 0; local ports 1 (VXLAN/IPv4), 2 (VXLAN/IPv6), 3 (SRv6 H.Encaps → End.DX4), all
    // wired to themselves, so packets circulate. The uplink decaps what it sends itself: it is
    // keyed on this node's own addresses.
    let veth = EgressFraming::EthernetIp {
        dst: [2, 0, 0, 0, 0, 0xa],
        src: [2, 0, 0, 0, 0, 0xb],
    };
    let sid = Ipv6Addr::new(0xfc00, 0xb, 0, 0, 0, 0, 0, 4);
    let mut up = UplinkDecap::new(VXLAN_PORT);
    up.add_vxlan(A4.into(), Vni::new(1).unwrap(), 1, veth)
        .unwrap();
    up.add_vxlan(A6.into(), Vni::new(2).unwrap(), 2, veth)
        .unwrap();
    up.add_sid(sid, Behavior::EndDx4, 3, veth).unwrap();
    let srv6 = Srv6Encap::new(
        EncapHeader::new(&EncapParams {
            src: A6,
            sid,
            local_mac: MAC,
            next_hop_mac: MAC,
            hop_limit: 64,
        }),
        Framing::EthernetIp,
        1500,
    );
    let encaps: [Arc<dyn Encap>; 3] = [
        Arc::new(vxlan(false, Vni::new(1).unwrap())),
        Arc::new(vxlan(true, Vni::new(2).unwrap())),
        Arc::new(srv6),
    ];
    let mut t = ForwardingTable::new(4);
    for (i, e) in (1..).zip(encaps) {
        t.add_tunnel(i, 0, e).unwrap();
    }
    t.set_decap(0, Arc::new(up)).unwrap();
    let mut rig = Rig::new(t, 4, 1024).expect("rig");
    // Ethernet + IPv4 + UDP, 64 bytes.
    let mut frame = vec![2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa, 0x08, 0x00];
    frame.extend_from_slice(&[0x45, 0, 0, 50, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    frame.extend_from_slice(&[
        10, 0, 0, 1, 10, 0, 0, 2, 0x1f, 0x90, 0x1f, 0x91, 0, 30, 0, 0,
    ]);
    frame.resize(64, 0x5a);
    let uplink = mem_loop("uplink", 512);
    for id in 1..=3 {
        let local = mem_loop("local", 512);
        assert_eq!(local.inject(rig.worker.pool_mut(), &frame, 40), 40);
        rig.worker.add_port(id, Box::new(local)).unwrap();
    }
    // Garbage on the uplink: the local frame itself (not a tunnel packet), and a truncated one.
    assert_eq!(uplink.inject(rig.worker.pool_mut(), &frame, 50), 50);
    assert_eq!(uplink.inject(rig.worker.pool_mut(), &frame[..20], 50), 50);
    rig.worker.add_port(0, Box::new(uplink)).unwrap();
    rig.worker.poll_once();

    WATCHING.with(|w| w.set(true));
    let mut moved = 0usize;
    while moved < 300_000 {
        moved += rig.worker.poll_once();
    }
    WATCHING.with(|w| w.set(false));

    assert_eq!(ALLOCS.with(Cell::get), 0, "the tunnel path allocated");
    let up = rig.totals(0);
    assert_eq!(up.drops(DropReason::TunnelMalformed), 100, "the garbage");
    assert_eq!(up.drops.iter().sum::<u64>(), 100);
    for id in 1..=3 {
        let l = rig.totals(id);
        assert!(l.rx_packets > 10_000, "port {id} took part");
        assert_eq!(l.drops.iter().sum::<u64>(), 0, "port {id}: {l:?}");
        assert_eq!(
            l.tx_bytes,
            l.tx_packets * 64,
            "port {id} gets its frames back"
        );
    }
    assert_eq!(rig.worker.pool_mut().available(), 1024 - 120, "no leak");
}
