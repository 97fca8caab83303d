//! The shared queue-redirect XDP program against the real kernel: ports on three veths, opened
//! at once, attach one and the same program; a frame injected on each veth's peer reaches that
//! port's socket and no other; closing one port removes its entries from the shared maps and
//! leaves the others working; a port opened again takes the freed slot; the last port's close
//! empties the maps and unloads the program.
//!
//! Topology, in two namespaces of its own (so this test has its namespace's shared program to
//! itself, whatever other tests of the process do in theirs):
//!
//! ```text
//!   node namespace (vsh-n-*)            peer namespace (vsh-p-*)
//!   vshn0  AF_XDP port (shared prog) ── vshp0   frames injected with AF_PACKET
//!   vshn1  AF_XDP port (shared prog) ── vshp1
//!   vshn2  AF_XDP port (shared prog) ── vshp2
//! ```
//!
//! Needs root; fails loudly (never skips) when it cannot set things up. The namespaces are
//! removed by a guard's `Drop`, which takes the veth pairs with them.

use std::sync::atomic::{AtomicU32, Ordering};

mod common;
use common::{delete_netns, enter_then, in_ns, require_root, run_line as run, send_raw};
use std::time::{Duration, Instant};

use vwire_dataplane::counters::PortCounters;
use vwire_dataplane::{BufferPool, Burst, Port, BURST};
use vwire_mechanisms::afxdp::{socket, AfXdpPort, PortOptions, SharedProgram, SlotRange, Umem};

const PORTS: usize = 3;
/// Longest wait for a frame that must arrive.
const ARRIVAL: Duration = Duration::from_secs(5);
/// How long to watch for a frame that must not arrive.
const QUIET: Duration = Duration::from_millis(300);
/// A local experimental EtherType: nothing in either namespace answers it.
const ETHERTYPE: u16 = 0x88b5;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn node_if(k: usize) -> String {
    format!("vshn{k}")
}

fn peer_if(k: usize) -> String {
    format!("vshp{k}")
}

/// The two namespaces and the veth pairs between them; removed on drop.
struct Topology {
    node: String,
    peer: String,
}

impl Topology {
    fn new() -> Self {
        require_root("network namespaces, AF_XDP, XDP");
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", std::process::id());
        let mut t = Topology {
            node: String::new(),
            peer: String::new(),
        };
        // Record each namespace as soon as it exists, so Drop removes it if a later step fails.
        for (slot, role) in [(&mut t.node, "n"), (&mut t.peer, "p")] {
            let name = format!("vsh-{role}-{id}");
            run(&format!("ip netns add {name}"));
            *slot = name;
        }
        let (node, peer) = (t.node.as_str(), t.peer.as_str());
        for ns in [node, peer] {
            // No IPv6 chatter: the ports should see only the frames injected here.
            run(&format!(
                "ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1"
            ));
            run(&format!(
                "ip netns exec {ns} sysctl -qw net.ipv6.conf.default.disable_ipv6=1"
            ));
        }
        for k in 0..PORTS {
            let (a, b) = (node_if(k), peer_if(k));
            run(&format!(
                "ip -n {node} link add {a} type veth peer name {b} netns {peer}"
            ));
            run(&format!("ip -n {node} link set {a} up"));
            run(&format!("ip -n {peer} link set {b} up"));
        }
        t
    }

    /// The XDP program id attached to node interface `k`, if any (`ip -d link`).
    fn prog_id(&self, k: usize) -> Option<u32> {
        let shown = run(&format!(
            "ip -n {} -d link show dev {}",
            self.node,
            node_if(k)
        ));
        let mut words = shown.split_whitespace();
        words.find(|w| w.starts_with("prog/xdp"))?;
        (words.next()? == "id").then_some(())?;
        words.next()?.parse().ok()
    }

    /// The index of node interface `k`.
    fn ifindex(&self, k: usize) -> u32 {
        in_ns(&self.node, || socket::ifindex(&node_if(k))).expect("the interface exists")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.node, &self.peer] {
            delete_netns(ns);
        }
    }
}

/// A broadcast frame of the experimental EtherType carrying `payload`.
fn frame(payload: &str) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0x56, 0x53, 0x48, 0x00, 0x01]);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(payload.as_bytes());
    f.resize(f.len().max(60), 0);
    f
}

/// A port, its own pool and counters.
struct Xsk {
    // Field order is drop order: the port (sockets, link, map entries) before its pool.
    port: AfXdpPort,
    pool: BufferPool,
    ctr: PortCounters,
}

impl Xsk {
    /// Every frame received now, copied out; the buffers go back to the pool.
    fn poll(&mut self) -> Vec<Vec<u8>> {
        let mut burst = Burst::with_capacity(BURST);
        let mut got = Vec::new();
        loop {
            burst.clear();
            if self.port.rx_burst(&mut self.pool, &mut burst, &self.ctr) == 0 {
                break;
            }
            for &b in burst.as_slice() {
                got.push(self.pool.packet(b).to_vec());
                self.pool.free(b);
            }
        }
        self.port.flush(&mut self.pool, &self.ctr);
        got
    }
}

/// Opens the ports on the node interfaces `ks`, all at once (one thread each, as concurrent NSM
/// Requests do), with the default options: the shared program.
fn open_ports(t: &Topology, ks: &[usize]) -> Vec<Xsk> {
    std::thread::scope(|s| {
        let handles: Vec<_> = ks
            .iter()
            .map(|&k| {
                s.spawn(move || {
                    let pool = BufferPool::new(4096).expect("a 16 MiB pool");
                    let umem = Umem::new(pool.region());
                    let name = node_if(k);
                    let mut port = enter_then(&t.node, || {
                        socket::open(&name, &name, &umem, PortOptions::default())
                    })
                    .unwrap_or_else(|e| panic!("opening {name} with the shared program: {e}"));
                    port.attach(&pool);
                    let mut x = Xsk {
                        port,
                        pool,
                        ctr: PortCounters::default(),
                    };
                    // Post the fill ring before any traffic, as a polling worker would.
                    let early = x.poll();
                    assert!(early.is_empty(), "{name}: frames before any traffic");
                    x
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Injects one frame on the peer of each node interface in `ks` (tagged with `round`), then
/// checks that each reaches the port of its own interface, and only that one. `ports[i]` serves
/// node interface `ks[i]`.
fn each_reaches_its_own(t: &Topology, ks: &[usize], ports: &mut [Xsk], round: &str) {
    let frames: Vec<Vec<u8>> = ks.iter().map(|k| frame(&format!("{round} {k}"))).collect();
    in_ns(&t.peer, || {
        for (k, f) in ks.iter().zip(&frames) {
            send_raw(&peer_if(*k), &[f]);
        }
    });
    let mut got: Vec<Vec<Vec<u8>>> = vec![Vec::new(); ports.len()];
    let t0 = Instant::now();
    while (0..ports.len()).any(|i| !got[i].contains(&frames[i])) {
        assert!(
            t0.elapsed() < ARRIVAL,
            "{round}: frames missing after {ARRIVAL:?}; got {got:02x?}"
        );
        for (i, x) in ports.iter_mut().enumerate() {
            got[i].extend(x.poll());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(QUIET);
    for (i, x) in ports.iter_mut().enumerate() {
        got[i].extend(x.poll());
        assert_eq!(
            got[i],
            vec![frames[i].clone()],
            "{round}: the port on {} gets its own frame once, and nothing else",
            node_if(ks[i])
        );
    }
}

/// The shared program of the node namespace, as its ports hold it.
fn shared(t: &Topology) -> std::sync::Arc<SharedProgram> {
    in_ns(&t.node, SharedProgram::loaded).expect("the node namespace's ports hold the program")
}

fn disjoint(ranges: &[SlotRange]) -> bool {
    ranges.iter().enumerate().all(|(i, a)| {
        ranges[i + 1..]
            .iter()
            .all(|b| a.base + a.queues <= b.base || b.base + b.queues <= a.base)
    })
}

#[test]
fn ports_share_one_program_and_release_their_entries() {
    let t = Topology::new();
    let all: Vec<usize> = (0..PORTS).collect();
    let mut ports = open_ports(&t, &all);

    // One program, attached to all three interfaces.
    let ids: Vec<Option<u32>> = all.iter().map(|&k| t.prog_id(k)).collect();
    assert!(ids[0].is_some(), "an XDP program on {}", node_if(0));
    assert!(ids.iter().all(|i| *i == ids[0]), "one program: {ids:?}");
    let shown = run(&format!("ip -n {} -d link show dev {}", t.node, node_if(0)));
    assert!(
        shown.contains("vwire_shared"),
        "the shared program: {shown}"
    );

    // Each interface has its own entry and its own slots (a veth has one queue).
    let prog = shared(&t);
    let ranges: Vec<SlotRange> = ports
        .iter()
        .map(|x| {
            x.port
                .shared_slots()
                .expect("the port uses the shared program")
        })
        .collect();
    assert!(ranges.iter().all(|r| r.queues == 1), "{ranges:?}");
    assert!(disjoint(&ranges), "slots overlap: {ranges:?}");
    let mut want: Vec<(u32, SlotRange)> = all.iter().map(|&k| t.ifindex(k)).zip(ranges).collect();
    want.sort_unstable_by_key(|&(i, _)| i);
    assert_eq!(prog.entries().expect("read the map"), want);
    assert_eq!(prog.slots_in_use(), 3);

    each_reaches_its_own(&t, &all, &mut ports, "all three");

    // Close the middle one: its entry and slot go, its interface loses the program, the others
    // keep working.
    let closed = ports.remove(1);
    let closed_range = closed.port.shared_slots().expect("shared");
    drop(closed);
    let left: Vec<(u32, SlotRange)> = want
        .iter()
        .copied()
        .filter(|&(i, _)| i != t.ifindex(1))
        .collect();
    assert_eq!(prog.entries().expect("read the map"), left, "entry removed");
    assert_eq!(prog.slots_in_use(), 2, "slot freed");
    assert_eq!(t.prog_id(1), None, "program detached from {}", node_if(1));
    assert_eq!(t.prog_id(0), ids[0], "still attached to {}", node_if(0));
    each_reaches_its_own(&t, &[0, 2], &mut ports, "after a close");
    // A frame on the closed interface reaches no socket.
    in_ns(&t.peer, || send_raw(&peer_if(1), &[frame("closed")]));
    std::thread::sleep(QUIET);
    for x in &mut ports {
        assert_eq!(
            x.poll(),
            Vec::<Vec<u8>>::new(),
            "nothing from the closed one"
        );
    }

    // Opened again, the interface takes the freed slot and the same program.
    let again = open_ports(&t, &[1]).pop().expect("one port");
    assert_eq!(again.port.shared_slots(), Some(closed_range), "first fit");
    assert_eq!(t.prog_id(1), ids[0], "the same program");
    ports.insert(1, again);
    each_reaches_its_own(&t, &all, &mut ports, "reopened");

    // The last close empties the maps, and the program goes with the last holder.
    drop(ports);
    assert_eq!(prog.entries().expect("read the map"), Vec::new());
    assert_eq!(prog.slots_in_use(), 0);
    assert!(all.iter().all(|&k| t.prog_id(k).is_none()), "all detached");
    drop(prog);
    assert!(
        in_ns(&t.node, SharedProgram::loaded).is_none(),
        "the program is unloaded with its last port"
    );
}

#[test]
fn a_kept_program_outlives_its_ports() {
    let t = Topology::new();
    let kept = in_ns(&t.node, SharedProgram::keep_attached)
        .unwrap_or_else(|e| panic!("keeping the shared program attached: {e}"));
    assert!(kept.is_kept_attached());
    let again = in_ns(&t.node, SharedProgram::keep_attached).expect("a second call is a no-op");
    assert!(
        std::sync::Arc::ptr_eq(&kept, &again),
        "one program per namespace"
    );
    drop(again);

    let mut ports = open_ports(&t, &[0]);
    let id = t.prog_id(0).expect("attached");
    each_reaches_its_own(&t, &[0], &mut ports, "kept");
    drop(ports);
    assert_eq!(t.prog_id(0), None, "the port's own link is gone");
    assert_eq!(kept.entries().expect("read the map"), Vec::new());
    assert_eq!(kept.slots_in_use(), 0);
    drop(kept);

    // Still loaded (and attached to its private interface): the next port gets the same one.
    let still = in_ns(&t.node, SharedProgram::loaded).expect("kept for the process's life");
    assert!(still.is_kept_attached());
    let mut ports = open_ports(&t, &[2]);
    assert_eq!(t.prog_id(2), Some(id), "the same program");
    each_reaches_its_own(&t, &[2], &mut ports, "kept, reopened");
}
