//! The in-kernel cross-connect against the real kernel: two "pods" (namespaces) each with a veth
//! whose host end lives in a "node" namespace; the TCX program joins the two host ends.
//!
//! ```text
//!   client ns (vtx-c-*)        node ns (vtx-n-*)          endpoint ns (vtx-e-*)
//!   vtxc 10.77.0.1/24 ─────── vtxhc ══ tcx ══ vtxhe ─────── vtxe 10.77.0.2/24
//! ```
//!
//! Checked: ping (ARP included) crosses; a TCP stream crosses as super-packets (the client's
//! interface keeps TSO on, the program counts super-packets, and the endpoint's interface
//! receives more bytes per packet than its MTU allows on a wire); the counters match what the
//! pods' interfaces saw; the cross-connect keeps forwarding after its owner dropped every
//! descriptor (a killed vwire), and a new owner finds it by name ([`Redirector::adopt`]);
//! disconnecting stops the traffic.
//!
//! Needs root, TCX (Linux ≥ 6.6) and iperf3; fails loudly (never skips) when it cannot set things
//! up. The namespaces are removed by a guard's `Drop`, which takes the veth pairs with them.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

mod common;
use common::{delete_netns, in_ns, require_root, run_line as run, succeeds};

use vwire_mechanisms::tcx::{attached, Redirector};

static COUNTER: AtomicU32 = AtomicU32::new(0);

const HOST_C: &str = "vtxhc";
const HOST_E: &str = "vtxhe";

struct Topology {
    client: String,
    node: String,
    endpoint: String,
}

impl Topology {
    fn new() -> Self {
        require_root("network namespaces, TC BPF programs");
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", std::process::id());
        let mut t = Topology {
            client: String::new(),
            node: String::new(),
            endpoint: String::new(),
        };
        for (slot, role) in [
            (&mut t.client, "c"),
            (&mut t.node, "n"),
            (&mut t.endpoint, "e"),
        ] {
            let name = format!("vtx-{role}-{id}");
            run(&format!("ip netns add {name}"));
            *slot = name;
        }
        let node = t.node.clone();
        // No IPv6 chatter from the host ends (vwire disables it on its host veths too): every
        // packet a pod receives then comes through the cross-connect.
        run(&format!(
            "ip netns exec {node} sysctl -qw net.ipv6.conf.default.disable_ipv6=1"
        ));
        for (ns, host, pod, addr) in [
            (&t.client, HOST_C, "vtxc", "10.77.0.1/24"),
            (&t.endpoint, HOST_E, "vtxe", "10.77.0.2/24"),
        ] {
            run(&format!(
                "ip -n {node} link add {host} type veth peer name {pod} netns {ns}"
            ));
            run(&format!("ip -n {node} link set {host} up"));
            run(&format!("ip -n {ns} addr add {addr} dev {pod}"));
            run(&format!("ip -n {ns} link set {pod} up"));
            run(&format!("ip -n {ns} link set lo up"));
        }
        t
    }

    fn ping(&self, count: u32) -> bool {
        succeeds(&[
            "ip",
            "netns",
            "exec",
            &self.client,
            "ping",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            "10.77.0.2",
        ])
    }

    /// `(rx_bytes, rx_packets)` of an interface inside a namespace.
    fn rx(&self, ns: &str, ifname: &str) -> (u64, u64) {
        let read = |what: &str| -> u64 {
            run(&format!(
                "ip netns exec {ns} cat /sys/class/net/{ifname}/statistics/{what}"
            ))
            .trim()
            .parse()
            .expect("a counter")
        };
        (read("rx_bytes"), read("rx_packets"))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.client, &self.node, &self.endpoint] {
            delete_netns(ns);
        }
    }
}

/// A one-off iperf3 server in `ns`, killed on drop.
struct Server(Child);

impl Server {
    fn start(ns: &str) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "iperf3", "-s", "-1", "-B", "10.77.0.2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 -s");
        std::thread::sleep(Duration::from_millis(300));
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn two_pods_talk_through_the_kernel_and_keep_their_super_packets() {
    let t = Topology::new();
    let node = t.node.clone();
    let r = in_ns(&node, Redirector::load).expect("load the program");
    assert!(!t.ping(1), "no path before the cross-connect");
    let t0 = std::time::Instant::now();
    let ends = in_ns(&node, || r.connect(HOST_C, HOST_E)).expect("connect");
    eprintln!("connect (two TCX attaches): {:?}", t0.elapsed());
    assert!(t.ping(3), "ping through the cross-connect");
    assert!(in_ns(&node, || r.connected(HOST_C, HOST_E)).expect("query"));
    let attached_c = in_ns(&node, || attached(HOST_C, ends[0])).expect("query");
    assert_eq!(
        attached_c,
        vec![r.prog_id()],
        "only vwire's program is attached"
    );

    // A TCP stream: the client's interface keeps TSO, the stream crosses as super-packets.
    let features = run(&format!("ip netns exec {} ethtool -k vtxc", t.client));
    assert!(
        features.contains("tcp-segmentation-offload: on"),
        "TSO on the client's interface: {features}"
    );
    let before_c = r.counters(ends[0]).expect("counted");
    let (bytes0, packets0) = t.rx(&t.endpoint, "vtxe");
    {
        let _server = Server::start(&t.endpoint);
        run(&format!(
            "ip netns exec {} iperf3 -c 10.77.0.2 -t 1 -f m",
            t.client
        ));
    }
    let after_c = r.counters(ends[0]).expect("counted");
    let (bytes1, packets1) = t.rx(&t.endpoint, "vtxe");
    let (bytes, packets) = (bytes1 - bytes0, packets1 - packets0);
    let per_packet = bytes / packets.max(1);
    eprintln!(
        "endpoint received {bytes} B in {packets} packets ({per_packet} B each); program: \
         {} super-packets, {} segments, {} bytes",
        after_c.gso_packets - before_c.gso_packets,
        after_c.packets - before_c.packets,
        after_c.bytes - before_c.bytes,
    );
    assert!(
        after_c.gso_packets > before_c.gso_packets,
        "super-packets crossed: {after_c:?}"
    );
    assert!(
        per_packet > 1500,
        "the endpoint received super-packets ({per_packet} B a packet on average)"
    );
    assert_eq!(
        after_c.bytes - before_c.bytes,
        bytes,
        "the program counted every byte the endpoint received from the client"
    );
    assert!(
        after_c.packets - before_c.packets > packets,
        "segments counted, more than the super-packets received"
    );
    assert_eq!(after_c.drops, 0);
    assert!(
        r.counters(ends[1]).expect("counted").packets > 0,
        "the way back is counted too"
    );

    in_ns(&node, || r.disconnect(ends));
    assert_eq!(r.counters(ends[0]), None);
    assert!(!t.ping(1), "no path after disconnecting");
}

#[test]
fn the_cross_connect_outlives_its_owner_and_is_adopted() {
    let t = Topology::new();
    let node = t.node.clone();
    let (prog_id, ends) = {
        let r = in_ns(&node, Redirector::load).expect("load the program");
        let ends = in_ns(&node, || r.connect(HOST_C, HOST_E)).expect("connect");
        assert!(t.ping(2));
        (r.prog_id(), ends)
        // Every descriptor of the program and map closes here, as when vwire is killed.
    };
    assert!(t.ping(2), "traffic keeps flowing without the owner");
    let r = in_ns(&node, || Redirector::adopt(HOST_C))
        .expect("query")
        .expect("the program is found on the veth");
    assert_eq!(r.prog_id(), prog_id);
    assert!(in_ns(&node, || r.connected(HOST_C, HOST_E)).expect("query"));
    let c = r.counters(ends[0]).expect("the old counters");
    assert!(
        c.packets >= 4,
        "the counts of before the restart are kept: {c:?}"
    );
    assert!(
        in_ns(&node, || Redirector::adopt("lo"))
            .expect("query")
            .is_none(),
        "an interface without the program has nothing to adopt"
    );
    in_ns(&node, || r.disconnect(ends));
    assert!(!t.ping(1), "no path after disconnecting");
}
