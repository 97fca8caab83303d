//! The uplink's steering XDP program against the real kernel: it must load (the verifier accepts
//! it), hand vwire's VXLAN and SRv6 traffic to the AF_XDP socket, and leave everything else to
//! the host stack sharing the interface.
//!
//! Topology, in two namespaces of its own (so the root namespace, shared with whoever else uses
//! the machine, is untouched, and port 4789 is surely free for the kernel-side checks):
//!
//! ```text
//!   node namespace (vst-n-*)                       peer namespace (vst-p-*)
//!   vstu0 "uplink" 10.99.0.1 (tunnel), 10.99.0.3   vstp0 10.99.0.2
//!          fd99::1 (tunnel), fd99::3                     fd99::2
//!          AF_XDP port, steering program                 fc00::/16 via fe80::aa (static
//!          (VXLAN 4789, SRv6 locator fc00:1::/48)        neighbour: the uplink's MAC)
//! ```
//!
//! Needs root; fails loudly (never skips) when it cannot set things up. Every namespace is
//! removed by a guard's `Drop`, which takes the veth pair with it, so a failing test leaves
//! nothing behind; the port's sockets and program go when the port is dropped.

use std::io::{Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket,
};
use std::sync::atomic::{AtomicU32, Ordering};

mod common;
use common::{delete_netns, in_ns, require_root, run_line as run, send_raw};
use std::time::{Duration, Instant};

use vwire_dataplane::counters::{DropReason, PortCounters, PortTotals};
use vwire_dataplane::{BufferPool, Burst, Port, BURST};
use vwire_mechanisms::afxdp::{
    socket, AfXdpPort, PortOptions, Steering, Umem, XdpMode, XdpProgram,
};

const UPLINK: &str = "vstu0";
const PEER_IF: &str = "vstp0";
const UPLINK_MAC: [u8; 6] = [0x02, 0x56, 0x53, 0x54, 0x00, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0x56, 0x53, 0x54, 0x00, 0x02];
const TUNNEL4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const OTHER4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);
const PEER4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const TUNNEL6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 1);
const OTHER6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 3);
const PEER6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 2);
const LOCATOR: Ipv6Addr = Ipv6Addr::new(0xfc00, 1, 0, 0, 0, 0, 0, 0);
const LOCATOR_LEN: u8 = 48;
const VXLAN: u16 = 4789;
/// Longest wait for a packet that must arrive.
const ARRIVAL: Duration = Duration::from_secs(5);

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn mac(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// The two namespaces and the veth pair between them; removed on drop.
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
            let name = format!("vst-{role}-{id}");
            run(&format!("ip netns add {name}"));
            *slot = name;
        }
        let (node, peer) = (t.node.as_str(), t.peer.as_str());
        for ns in [node, peer] {
            // No DAD: addresses (link-local included) are usable at once.
            for key in ["all", "default"] {
                run(&format!(
                    "ip netns exec {ns} sysctl -qw net.ipv6.conf.{key}.accept_dad=0"
                ));
            }
            run(&format!("ip -n {ns} link set lo up"));
        }
        let (umac, pmac) = (mac(UPLINK_MAC), mac(PEER_MAC));
        run(&format!(
            "ip -n {node} link add {UPLINK} address {umac} type veth \
             peer name {PEER_IF} address {pmac} netns {peer}"
        ));
        for (ns, dev, addrs) in [
            (
                node,
                UPLINK,
                ["10.99.0.1/24", "10.99.0.3/24", "fd99::1/64", "fd99::3/64"].as_slice(),
            ),
            (peer, PEER_IF, ["10.99.0.2/24", "fd99::2/64"].as_slice()),
        ] {
            for a in addrs {
                run(&format!("ip -n {ns} addr add {a} dev {dev} nodad"));
            }
            run(&format!("ip -n {ns} link set {dev} up"));
        }
        // The peer reaches the SRv6 space through the uplink, by a static neighbour.
        run(&format!(
            "ip -n {peer} -6 neigh add fe80::aa lladdr {umac} dev {PEER_IF} nud permanent"
        ));
        run(&format!(
            "ip -n {peer} -6 route add fc00::/16 via fe80::aa dev {PEER_IF}"
        ));
        t
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth end in it, and so the pair.
        for ns in [&self.node, &self.peer] {
            delete_netns(ns);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Frames built by hand, for what a socket cannot send (tags, fragments, truncation, an SRH).

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = UPLINK_MAC.to_vec();
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn udp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("small");
    let mut u = 40000u16.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]); // no checksum (allowed over IPv4; nobody checks these)
    u.extend_from_slice(payload);
    u
}

/// IPv4 to `dst` with `options` bytes of NOP options, the given flags/fragment word, and a
/// correct header checksum.
fn ipv4(dst: Ipv4Addr, proto: u8, frag: u16, options: usize, l4: &[u8]) -> Vec<u8> {
    let ihl = u8::try_from(5 + options / 4).expect("small");
    let total = u16::try_from(20 + options + l4.len()).expect("small");
    let mut h = vec![0x40 | ihl, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&PEER4.octets());
    h.extend_from_slice(&dst.octets());
    h.extend(std::iter::repeat_n(1u8, options));
    let sum = h
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let csum = !u16::try_from((folded & 0xffff) + (folded >> 16)).expect("folded");
    h[10..12].copy_from_slice(&csum.to_be_bytes());
    h.extend_from_slice(l4);
    eth(0x0800, &h)
}

fn ipv6(dst: Ipv6Addr, next: u8, l4: &[u8]) -> Vec<u8> {
    let len = u16::try_from(l4.len()).expect("small");
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&PEER6.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(l4);
    eth(0x86dd, &h)
}

/// A segment routing header (next header IPv4, one segment), then `inner`.
fn srh(segment: Ipv6Addr, inner: &[u8]) -> Vec<u8> {
    let mut s = vec![4, 2, 4, 0, 0, 0, 0, 0];
    s.extend_from_slice(&segment.octets());
    s.extend_from_slice(inner);
    s
}

// ---------------------------------------------------------------------------------------------
// The AF_XDP side, driven directly through `Port::rx_burst`.

/// The steering port on the uplink, its pool and counters.
struct Xsk {
    // Field order is drop order: the port (sockets, program) before the pool it uses.
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

    /// Every frame received until one satisfies `last` (included); fails after [`ARRIVAL`].
    fn until(&mut self, what: &str, last: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let t0 = Instant::now();
        let mut all = Vec::new();
        loop {
            let got = self.poll();
            let done = got.iter().any(|f| last(f));
            all.extend(got);
            if done {
                return all;
            }
            assert!(
                t0.elapsed() < ARRIVAL,
                "{what}: not received on the AF_XDP socket within {ARRIVAL:?}; got {} other frames: {:02x?}",
                all.len(),
                all
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Every frame received within `d`.
    fn for_a_while(&mut self, d: Duration) -> Vec<Vec<u8>> {
        let t0 = Instant::now();
        let mut all = Vec::new();
        while t0.elapsed() < d {
            all.extend(self.poll());
            std::thread::sleep(Duration::from_millis(5));
        }
        all
    }

    /// A UDP datagram that only the steering program delivers: VXLAN to the tunnel address,
    /// with a payload naming the step. Everything sent before it on the peer's (single) queue
    /// has been through the program when it arrives.
    fn marker(&mut self, t: &Topology, step: &str) -> Vec<Vec<u8>> {
        let payload = format!("marker {step}").into_bytes();
        let frame = ipv4(TUNNEL4, 17, 0, 0, &udp(VXLAN, &payload));
        in_ns(&t.peer, || send_raw(PEER_IF, std::slice::from_ref(&frame)));
        let mut got = self.until(&format!("the {step} marker"), |f| f == frame.as_slice());
        got.retain(|f| *f != frame);
        got
    }

    fn rx_desc_errors(&self) -> u64 {
        let mut t = PortTotals::default();
        self.ctr.add_to(&mut t);
        t.drops(DropReason::BadRxDesc)
    }
}

/// The UDP payload of an untagged IPv4 or IPv6 frame, with its destination address and port
/// (no extension headers).
fn udp_of(f: &[u8]) -> Option<(IpAddr, u16, &[u8])> {
    let be16 = |at: usize| f.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (dst, l4, proto): (IpAddr, usize, u8) = match be16(12)? {
        0x0800 => {
            let ihl = usize::from(f.get(14)? & 0x0f) * 4;
            let a: [u8; 4] = f.get(30..34)?.try_into().ok()?;
            (a.into(), 14 + ihl, *f.get(23)?)
        }
        0x86dd => {
            let a: [u8; 16] = f.get(38..54)?.try_into().ok()?;
            (a.into(), 54, *f.get(20)?)
        }
        _ => return None,
    };
    if proto != 17 {
        return None;
    }
    let len = usize::from(be16(l4 + 4)?);
    Some((dst, be16(l4 + 2)?, f.get(l4 + 8..l4 + len)?))
}

/// Sends `payload` over UDP from the peer namespace to `to`.
fn peer_udp(t: &Topology, to: SocketAddr, payload: &[u8]) {
    in_ns(&t.peer, || {
        let any: SocketAddr = match to {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let s = UdpSocket::bind(any).expect("bind in the peer namespace");
        s.send_to(payload, to)
            .unwrap_or_else(|e| panic!("send to {to}: {e}"));
    });
}

fn sock(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    (ip.into(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .expect("address")
}

fn open_port(t: &Topology, allow_native: bool) -> Xsk {
    let pool = BufferPool::new(4096).expect("a 16 MiB pool");
    let umem = Umem::new(pool.region());
    let opts = PortOptions {
        allow_native,
        program: XdpProgram::Steer(Steering {
            vxlan_port: VXLAN,
            ipv4: Some(TUNNEL4),
            ipv6: Some(TUNNEL6),
            srv6_locator: Some((LOCATOR, LOCATOR_LEN)),
        }),
        ..Default::default()
    };
    let mut port = in_ns(&t.node, || socket::open("uplink", UPLINK, &umem, opts))
        .unwrap_or_else(|e| panic!("the steering program must load and attach: {e}"));
    port.attach(&pool);
    let want = if allow_native {
        XdpMode::Native
    } else {
        XdpMode::Generic
    };
    assert_eq!(port.xdp_mode(), want, "veth has native XDP");
    let shown = run(&format!("ip -n {} -d link show dev {UPLINK}", t.node));
    assert!(shown.contains("vwire_steer"), "program attached: {shown}");
    let mut x = Xsk {
        port,
        pool,
        ctr: PortCounters::default(),
    };
    // Post the fill ring before any traffic (a worker would be polling already): a frame
    // steered to a socket with an empty fill ring is dropped.
    let nothing = x.poll();
    assert!(
        nothing.is_empty(),
        "frames before any traffic: {nothing:02x?}"
    );
    x
}

/// (a) VXLAN to the tunnel addresses reaches the socket, byte for byte.
fn tunnel_traffic_is_steered(t: &Topology, x: &mut Xsk) {
    let cases = [
        (sock(TUNNEL4, VXLAN), b"vxlan over ipv4".as_slice()),
        (sock(TUNNEL6, VXLAN), b"vxlan over ipv6".as_slice()),
    ];
    for (to, payload) in cases {
        // The first datagram also waits for ARP / ND, which must pass to the kernel.
        peer_udp(t, to, payload);
        let got = x.until(&format!("UDP to {to}"), |f| {
            udp_of(f).is_some_and(|(_, _, p)| p == payload)
        });
        assert_eq!(got.len(), 1, "only the datagram: {got:02x?}");
        let (dst, port, p) = udp_of(&got[0]).expect("a UDP frame");
        assert_eq!((dst, port, p), (to.ip(), VXLAN, payload));
        assert_eq!(&got[0][..6], &UPLINK_MAC, "to the uplink's MAC");
        assert_eq!(&got[0][6..12], &PEER_MAC, "from the peer");
    }

    // Frames a socket cannot send: an IPv4 header with options (IHL 6 and 15) and an SRH.
    let vx = udp(VXLAN, b"vxlan after options");
    let with_options = ipv4(TUNNEL4, 17, 0, 4, &vx);
    let longest_header = ipv4(TUNNEL4, 17, 0, 40, &vx);
    let sid = Ipv6Addr::new(0xfc00, 1, 0, 0, 0, 0, 0, 0xd4);
    let srv6 = ipv6(
        sid,
        43,
        &srh(sid, &ipv4(PEER4, 17, 0, 0, &udp(7, b"inner"))[14..]),
    );
    let sent = vec![with_options, longest_header, srv6];
    in_ns(&t.peer, || send_raw(PEER_IF, &sent));
    let mut got = x.marker(t, "raw tunnel frames");
    got.sort();
    let mut want = sent.clone();
    want.sort();
    assert_eq!(got, want, "raw tunnel frames arrive intact");
}

/// (b) Everything else on the shared uplink is the host's: ARP, ND, ICMP, TCP, other UDP, and
/// malformed or tagged frames never reach the socket.
fn host_traffic_passes(t: &Topology, x: &mut Xsk) {
    for ip in [IpAddr::from(TUNNEL4), IpAddr::from(TUNNEL6)] {
        let target = ip.to_string();
        run(&format!("ip netns exec {} ping -c 1 -W 3 {target}", t.peer));
    }

    // TCP to the tunnel addresses themselves (the node's addresses): the kernel accepts.
    for ip in [IpAddr::from(TUNNEL4), IpAddr::from(TUNNEL6)] {
        let listener = in_ns(&t.node, || TcpListener::bind((ip, 0)).expect("listen"));
        let to = listener.local_addr().expect("address");
        let mut c = in_ns(&t.peer, || {
            TcpStream::connect_timeout(&to, ARRIVAL)
                .unwrap_or_else(|e| panic!("TCP connect to {to} through the uplink: {e}"))
        });
        c.write_all(b"hello host").expect("write");
        listener.set_nonblocking(true).expect("nonblocking");
        let t0 = Instant::now();
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(t0.elapsed() < ARRIVAL, "no TCP connection accepted on {to}");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        s.set_nonblocking(false).expect("blocking");
        s.set_read_timeout(Some(ARRIVAL)).expect("timeout");
        let mut buf = [0u8; 10];
        s.read_exact(&mut buf)
            .expect("read from the TCP connection");
        assert_eq!(&buf, b"hello host");
    }

    // UDP that is not VXLAN to the tunnel address: another port on it, or port 4789 on another
    // of the node's addresses. The kernel's sockets get them.
    for to in [
        sock(TUNNEL4, 0),
        sock(TUNNEL6, 0),
        sock(OTHER4, VXLAN),
        sock(OTHER6, VXLAN),
    ] {
        let host = in_ns(&t.node, || UdpSocket::bind(to).expect("bind on the node"));
        let to = host.local_addr().expect("address");
        host.set_read_timeout(Some(ARRIVAL)).expect("timeout");
        let payload = format!("for the host on {to}").into_bytes();
        peer_udp(t, to, &payload);
        let mut buf = [0u8; 100];
        let (n, _) = host
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("the host's UDP socket on {to} got nothing: {e}"));
        assert_eq!(&buf[..n], payload.as_slice());
    }

    // Frames shaped like VXLAN but not matching: tagged, fragmented, truncated, with an IPv6
    // extension header, TCP to 4789.
    let vx = udp(VXLAN, b"not for vwire");
    let mut tagged = ipv4(TUNNEL4, 17, 0, 0, &vx);
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x0a]);
    let not_steered = vec![
        tagged,
        ipv4(TUNNEL4, 17, 0x2000, 0, &vx), // first fragment: MF
        ipv4(TUNNEL4, 17, 0x0020, 0, &vx), // a later fragment
        ipv4(TUNNEL4, 17, 0, 0, &vx)[..41].to_vec(), // UDP header cut short
        ipv4(TUNNEL4, 17, 0, 40, &vx)[..14 + 60 + 4].to_vec(), // IHL 15, UDP header cut
        ipv4(TUNNEL4, 6, 0, 0, &vx),       // TCP
        ipv6(
            TUNNEL6,
            0,
            &[&[17u8, 0, 1, 4, 0, 0, 0, 0][..], &vx].concat(),
        ), // hop-by-hop
        ipv6(TUNNEL6, 17, &vx)[..60].to_vec(), // UDP header cut short
    ];
    in_ns(&t.peer, || send_raw(PEER_IF, &not_steered));

    let got = x.marker(t, "host traffic");
    assert!(
        got.is_empty(),
        "the socket got frames meant for the host: {got:02x?}"
    );
}

/// (c) IPv6 to any address inside the SRv6 locator reaches the socket; outside it, not.
fn locator_is_steered(t: &Topology, x: &mut Xsk) {
    let inside = [
        Ipv6Addr::new(0xfc00, 1, 0, 0, 0, 0, 0, 5),
        Ipv6Addr::new(0xfc00, 1, 0, 0xffff, 0, 0, 0, 7), // last /64 of the /48
    ];
    let outside = [
        Ipv6Addr::new(0xfc00, 1, 1, 0, 0, 0, 0, 5), // shares 32 bits and half a word
        Ipv6Addr::new(0xfc00, 2, 0, 0, 0, 0, 0, 5),
    ];
    for a in outside.iter().chain(&inside) {
        peer_udp(t, sock(*a, 9999), format!("srv6 to {a}").as_bytes());
    }
    let mut got: Vec<IpAddr> = x
        .marker(t, "srv6")
        .iter()
        .map(|f| udp_of(f).expect("UDP").0)
        .collect();
    got.sort();
    let want: Vec<IpAddr> = inside.iter().map(|&a| a.into()).collect();
    assert_eq!(
        got, want,
        "exactly the addresses inside {LOCATOR}/{LOCATOR_LEN}"
    );
}

fn scenario(allow_native: bool) {
    let t = Topology::new();
    let mut x = open_port(&t, allow_native);
    tunnel_traffic_is_steered(&t, &mut x);
    host_traffic_passes(&t, &mut x);
    locator_is_steered(&t, &mut x);
    let late = x.for_a_while(Duration::from_millis(200));
    assert!(late.is_empty(), "late frames on the socket: {late:02x?}");
    assert_eq!(x.rx_desc_errors(), 0, "bad RX descriptors");
    let stats = x.port.stats().expect("AF_XDP statistics");
    let mut counters = Vec::new();
    stats.counters(&mut counters);
    let dropped = counters.iter().find(|(k, _)| *k == "rx_dropped");
    assert_eq!(dropped, Some(&("rx_dropped", 0)), "{counters:?}");
    drop(x);
    let shown = run(&format!("ip -n {} -d link show dev {UPLINK}", t.node));
    assert!(
        !shown.contains("prog/xdp"),
        "program detached with the port: {shown}"
    );
}

#[test]
fn steering_native_xdp() {
    scenario(true);
}

#[test]
fn steering_generic_xdp() {
    scenario(false);
}
