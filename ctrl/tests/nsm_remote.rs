//! The remote NSM examples replayed on two nodes (network namespaces A and B joined by a veth
//! wire, see `common/nodes.rs`): an NSC pod (vwire-nsc) asks vwire A for the icmp-responder
//! service; vwire A offers REMOTE mechanisms to vwire B over `tcp://10.97.0.2:5002`; vwire B
//! accepts one, asks the NSE pod (vwire-nse), and the two vwires carry the connection over their
//! uplinks (AF_XDP with XDP steering) in a VXLAN or SRv6 tunnel.
//!
//! - Kernel2Vxlan2Kernel with ETHERNET and IP payloads (the default mechanism order picks VXLAN,
//!   though both vwires also have an SRv6 locator), Kernel2Srv6-2Kernel with ETHERNET (H.Encaps.L2
//!   / End.DX2) and IP (H.Encaps / End.DX4) payloads (vwire A's `mechanism_priority` puts SRV6
//!   first). Each: both vwires log the wiring with the expected tunnel type; both end interfaces
//!   have the clamped MTU (1500 minus the tunnel overhead); the NSC and the NSE ping each other
//!   with 56- and 3000-byte pings (the end kernels fragment); a 5 s iperf3 TCP run from the NSC to
//!   the NSE succeeds (its rate is printed); after vwire-nsc closes, no interface, socket or
//!   connection port is left in any node or pod; both vwires then stop cleanly.
//! - Memif2Vxlan2Memif with an ETHERNET payload: the example workloads ping each other over
//!   memif with 56- and 3000-byte pings (they fragment to the MTU like a kernel; no iperf3: a
//!   memif end has no kernel stack to run it).
//! - A next-hop MAC change (node B's uplink takes a new MAC) is followed by vwire A.
//! - Host traffic: with both vwires holding their uplinks, the nodes' own ping (IPv4, IPv6), TCP
//!   and UDP still reach the kernels, and still do after the vwires stop.
//! - An uplink guessed from the default route that cannot be used leaves the remote mechanisms
//!   off (a warning); a configured one that cannot be used stops vwire with a clear error.
//! - The topology alone comes and goes without leaving a namespace.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::nodes::*;
use common::nsm::{Lines, Ns};
use common::require;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tunnel {
    Vxlan,
    Srv6,
}

impl Tunnel {
    /// The mechanism type string.
    fn name(self) -> &'static str {
        match self {
            Tunnel::Vxlan => "VXLAN",
            Tunnel::Srv6 => "SRV6",
        }
    }

    fn other(self) -> &'static str {
        match self {
            Tunnel::Vxlan => "SRV6",
            Tunnel::Srv6 => "VXLAN",
        }
    }

    /// vwire A's `mechanism_priority`: none for VXLAN (the default order, VXLAN first).
    fn priority(self) -> Option<String> {
        match self {
            Tunnel::Vxlan => None,
            Tunnel::Srv6 => Some("SRV6,VXLAN".into()),
        }
    }

    /// The connection MTU over the 1500-byte IPv4 underlay.
    fn mtu(self, payload: &str) -> u32 {
        UNDERLAY_MTU
            - match (self, payload) {
                (Tunnel::Vxlan, _) => VXLAN_V4_OVERHEAD,
                (Tunnel::Srv6, "IP") => SRV6_IP_OVERHEAD,
                (Tunnel::Srv6, _) => SRV6_ETHERNET_OVERHEAD,
            }
    }
}

/// Kernel NSC and NSE on different nodes over `tunnel`.
fn kernel2tunnel2kernel(tunnel: Tunnel, payload: &str) {
    require(&["ip", "ping", "iperf3"]);
    let mut r = Remote::start(|a| a.mechanism_priority = tunnel.priority(), |_| {}, &[]);
    let dir = r.dir.clone();
    with_logs(
        || logs_in(&dir),
        || {
            let mut nsc = r.start_nsc(&["--payload", payload]);
            assert!(
                nsc.line.trim_end().ends_with(&format!("{NSC_IP} {NSE_IP}")),
                "{}",
                nsc.line
            );
            // vwire A wired its NSC side to the tunnel, vwire B the tunnel to its NSE side.
            r.vw_a.assert_wired_with(tunnel.name(), &[tunnel.other()]);
            r.vw_b.assert_wired_with(tunnel.name(), &[tunnel.other()]);
            // The MTU is clamped to what the underlay carries, on both end interfaces.
            let mtu = tunnel.mtu(payload);
            let nse_if = link_with_prefix(&r.nse, "nse-");
            assert_eq!(
                link_mtu(&r.nsc, "nsm-1"),
                mtu,
                "MTU of nsm-1 in the NSC pod"
            );
            assert_eq!(
                link_mtu(&r.nse, &nse_if),
                mtu,
                "MTU of {nse_if} in the NSE pod"
            );
            // Both ways, one frame and fragmented by the end kernels.
            ping(&r.nsc, NSE_IP, &[56, 3000]);
            ping(&r.nse, NSC_IP, &[56, 3000]);
            let bps = iperf(&r.nse, &r.nsc, NSE_IP);
            println!(
                "Kernel2{}2Kernel {payload}: iperf3 TCP NSC -> NSE {:.2} Gbit/s",
                tunnel.name(),
                bps / 1e9
            );
            // Close: nothing left on either node or in either pod.
            nsc.proc.terminate();
            r.nothing_left();
            r.stop();
        },
    );
}

#[test]
fn kernel2vxlan2kernel_ethernet() {
    kernel2tunnel2kernel(Tunnel::Vxlan, "ETHERNET");
}

#[test]
fn kernel2vxlan2kernel_ip() {
    kernel2tunnel2kernel(Tunnel::Vxlan, "IP");
}

#[test]
fn kernel2srv6_2kernel_ethernet() {
    kernel2tunnel2kernel(Tunnel::Srv6, "ETHERNET");
}

#[test]
fn kernel2srv6_2kernel_ip() {
    kernel2tunnel2kernel(Tunnel::Srv6, "IP");
}

/// The outer destination MAC follows the kernel's neighbour table: node B's uplink takes a new
/// MAC while a connection is up, node A's kernel learns it (from B's next ARP request), vwire A
/// rebuilds the tunnel's header with it, and traffic keeps flowing.
#[test]
fn tunnel_follows_a_next_hop_mac_change() {
    require(&["ip", "ping"]);
    let mut r = Remote::start(|_| {}, |_| {}, &[]);
    let dir = r.dir.clone();
    with_logs(
        || logs_in(&dir),
        || {
            let mut nsc = r.start_nsc(&[]);
            ping(&r.nsc, NSE_IP, &[56]);
            let new_mac = "02:76:aa:bb:cc:01";
            let out = r
                .nodes
                .b
                .exec(&format!("ip link set dev {UPLINK} address {new_mac}"));
            assert!(out.status.success(), "changing B's MAC: {out:?}");
            // B's kernel flushed its own neighbours; its next ARP request to A carries the new
            // MAC, and A's kernel updates its entry for B.
            ping(&r.nodes.b, A_V4, &[56]);
            let t0 = std::time::Instant::now();
            while !r.vw_a.logs().contains(&format!("mac={new_mac}")) {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "vwire A did not follow B's new MAC {new_mac}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            ping(&r.nsc, NSE_IP, &[56, 3000]);
            ping(&r.nse, NSC_IP, &[56]);
            nsc.proc.terminate();
            r.nothing_left();
            r.stop();
        },
    );
}

/// Pings a memif end sends (it prints its line once all are answered, or after 15 s).
const PINGS: &str = "3";

fn memif_args(size: &str) -> Vec<&str> {
    vec![
        "--mechanism",
        "memif",
        "--ping-count",
        PINGS,
        "--ping-size",
        size,
    ]
}

/// Waits for a memif end's `ping <peer> <received>/<sent>` line and checks every ping was
/// answered.
fn memif_pinged(out: &Lines, what: &str, peer: &str) {
    let line = out.wait("ping ", Duration::from_secs(40), what);
    assert_eq!(
        line.split(' ').nth(1),
        Some(peer),
        "{what} pinged the wrong peer: {line}"
    );
    let got = line.split(' ').nth(2).unwrap_or_default();
    assert!(got.starts_with(&format!("{PINGS}/")), "{what}: {line}");
}

/// Memif NSC and NSE on different nodes over VXLAN. The memif ends keep to the connection's
/// clamped MTU (1446) as a kernel does: the 3000-byte pings leave them as IPv4 fragments and are
/// reassembled at the other end. Each size gets a fresh setup because vwire-nse's ping size is
/// fixed at its start. No iperf3: a memif end has no kernel stack to run it.
#[test]
fn memif2vxlan2memif_ethernet() {
    for size in [56, 3000] {
        let size = size.to_string();
        let mut r = Remote::start(|_| {}, |_| {}, &memif_args(&size));
        let dir = r.dir.clone();
        with_logs(
            || logs_in(&dir),
            || {
                let mut args = vec!["--payload", "ETHERNET"];
                args.extend(memif_args(&size));
                let mut nsc = r.start_nsc(&args);
                memif_pinged(&nsc.out, "vwire-nsc", NSE_IP);
                memif_pinged(&r.nse_app.out, "vwire-nse", NSC_IP);
                for vw in [&r.vw_a, &r.vw_b] {
                    vw.assert_wired_with("VXLAN", &["SRV6", "KERNEL"]);
                    vw.assert_wired_with("MEMIF", &["KERNEL"]);
                }
                // The memif toward the NSC is served in the NSC's namespace.
                let socks = common::sh(&format!("ip netns exec {} ss -xlH", r.nsc.0));
                assert!(socks.contains("@/run/vwire/memif/"), "{socks}");
                nsc.proc.terminate();
                r.nothing_left();
                r.stop();
            },
        );
    }
}

/// Sends a UDP datagram from namespace `from` to a socket bound in `to` on `ip` (not the VXLAN
/// port) and checks it arrives.
fn udp_datagram(from: &Ns, to: &Ns, ip: &str) {
    let rx = in_netns(&to.0, || UdpSocket::bind((ip, 0)))
        .unwrap_or_else(|e| panic!("bind UDP {ip} in {}: {e}", to.0));
    rx.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("read timeout");
    let dst = rx.local_addr().expect("address");
    let any = if dst.is_ipv4() { "0.0.0.0" } else { "::" };
    let tx = in_netns(&from.0, || UdpSocket::bind((any, 0))).expect("bind UDP sender");
    let mut buf = [0u8; 64];
    // A few tries: the first datagram may wait for neighbour resolution.
    for _ in 0..3 {
        tx.send_to(b"vwire host traffic", dst)
            .unwrap_or_else(|e| panic!("UDP send from {} to {dst}: {e}", from.0));
        if let Ok((n, _)) = rx.recv_from(&mut buf) {
            assert_eq!(&buf[..n], b"vwire host traffic");
            return;
        }
    }
    panic!("UDP from {} to {dst} did not arrive", from.0);
}

/// Everything the nodes' kernels do on the underlay, both ways, both families: ping (also
/// fragmented), a TCP echo, a UDP datagram.
fn host_traffic(nodes: &Nodes) {
    for (from, to, v4, v6) in [
        (&nodes.b, &nodes.a, A_V4, A_V6),
        (&nodes.a, &nodes.b, B_V4, B_V6),
    ] {
        for ip in [v4, v6] {
            ping(from, ip, &[56, 3000]);
            tcp_echo(from, to, ip);
            udp_datagram(from, to, ip);
        }
    }
}

/// With vwire holding each node's uplink (XDP steering only tunnel traffic to itself), the
/// kernels' own traffic on the underlay is unaffected, and stays so after vwire stops.
#[test]
fn host_traffic_keeps_working() {
    require(&["ip", "ping"]);
    let nodes = Nodes::new();
    let dir = test_dir();
    let mut vw_a = NodeVwire::start("vwire-A", &nodes.a, &dir, &Fwd::a(&dir));
    let mut vw_b = NodeVwire::start("vwire-B", &nodes.b, &dir, &Fwd::b(&dir));
    with_logs(
        || logs_in(&dir),
        || {
            for n in [&nodes.a, &nodes.b] {
                assert!(
                    xdp_attached_in(n, UPLINK),
                    "no XDP program on {UPLINK} in {}: vwire did not open its uplink",
                    n.0
                );
            }
            host_traffic(&nodes);
            vw_a.stop_cleanly(&nodes.a);
            vw_b.stop_cleanly(&nodes.b);
            host_traffic(&nodes);
        },
    );
}

/// Runs a second vwire in node A with `tunnel_ip` (none: the default route's interface, up0,
/// which vwire A already holds) until its NSM socket appears or it exits; returns its exit
/// status (`None`: it runs, and was killed) and its log.
fn second_vwire(
    nodes: &Nodes,
    dir: &std::path::Path,
    tunnel_ip: Option<&str>,
) -> (Option<std::process::ExitStatus>, String) {
    let sock = dir.join("fwd-2.sock");
    let mut text = format!(
        "[dataplane]\nworkers = [1]\n[metrics]\nlisten = \"127.0.0.1:9465\"\n[nsm]\nname = \"fwd-2\"\nlisten_on = \"unix://{}\"\ninsecure = true\n",
        sock.display()
    );
    if let Some(ip) = tunnel_ip {
        text.push_str(&format!("tunnel_ip = \"{ip}\"\n"));
    }
    let config = dir.join("fwd-2.toml");
    std::fs::write(&config, &text).expect("write config");
    let log = dir.join("fwd-2.log");
    let out = std::fs::File::create(&log).expect("log");
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &nodes.a.0])
        .arg(common::vwire_bin())
        .args(["run", "--config"])
        .arg(&config)
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("spawn vwire");
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if sock.exists() {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the second vwire neither served nor exited:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_file(&sock);
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

/// The uplink is found from the default route unless NSM_TUNNEL_IP names it. When that guess
/// cannot be used (here: another vwire already holds up0), vwire runs with the remote mechanisms
/// off and says so; when a configured tunnel IP cannot be used, vwire refuses to start, naming
/// the interface and the reason.
#[test]
fn an_unusable_uplink_is_an_error_only_when_configured() {
    require(&["ip"]);
    let nodes = Nodes::new();
    let dir = test_dir();
    let _vw_a = NodeVwire::start("vwire-A", &nodes.a, &dir, &Fwd::a(&dir));
    let (status, log) = second_vwire(&nodes, &dir, None);
    assert!(
        status.is_none(),
        "with a guessed uplink vwire must run ({status:?}):\n{log}"
    );
    assert!(
        log.contains("remote mechanisms (VXLAN, SRV6) are off") && log.contains("up0"),
        "no warning naming the interface:\n{log}"
    );
    let (status, log) = second_vwire(&nodes, &dir, Some(A_V4));
    let status = status.expect("a configured but unusable uplink must stop vwire");
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("up0") && log.contains("already has an XDP program"),
        "{log}"
    );
}

/// The topology itself: the underlay carries both families, the pods exist, and dropping
/// everything leaves no namespace behind.
#[test]
fn two_node_topology_comes_and_goes() {
    require(&["ip", "ping"]);
    let names = {
        let nodes = Nodes::new();
        let pods = [Ns::new("c"), Ns::new("e")];
        ping(&nodes.a, B_V4, &[56, 3000]);
        ping(&nodes.a, B_V6, &[56, 3000]);
        ping(&nodes.b, A_V4, &[56]);
        ping(&nodes.b, A_V6, &[56]);
        assert_eq!(link_mtu(&nodes.a, UPLINK), UNDERLAY_MTU);
        assert_eq!(link_mtu(&nodes.b, UPLINK), UNDERLAY_MTU);
        assert_ne!(link_mac(&nodes.a, UPLINK), link_mac(&nodes.b, UPLINK));
        let mut names = vec![nodes.a.0.clone(), nodes.b.0.clone()];
        names.extend(pods.iter().map(|p| p.0.clone()));
        names
    };
    let list = common::sh("ip netns list");
    for n in names {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(n.as_str())),
            "namespace {n} left behind: {list}"
        );
    }
}
