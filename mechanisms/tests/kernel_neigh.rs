//! Privileged tests of `kernel::neigh` (next hops, neighbour resolution, the neighbour watcher)
//! against real namespaces.
//!
//! Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); CI runs as root, and these tests fail loudly
//! rather than skip when it is not, or when the topology cannot be built. Every test builds its
//! own topology (names with the prefix `vnb`, the pid and a counter) and removes it in a guard's
//! `Drop`, so a failing test leaves nothing behind:
//!
//! ```text
//!   namespace A                         namespace B
//!   <p>a 10.98.0.1/24 fd98::1/64 ====== <p>b 10.98.0.2/24 fd98::2/64  (veth, MTU 1400)
//!   10.99.0.0/24 via 10.98.0.2                lo 10.99.0.1/24 fd99::1/64
//!   fd99::/64 via fd98::2
//! ```
//!
//! The code under test acts in A through a `NetlinkIn` handle opened on A (the module's
//! per-namespace handle), so the test threads never change namespace. `ip` and `ping` are used
//! for setup and for independent checks only.

use std::net::IpAddr;
mod common;
use common::{delete_netns, require_root, run, succeeds};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vwire_mechanisms::kernel::{
    format_mac, parse_mac, resolve, route_to, NeighError, NeighEvent, NeighWatcher, NetlinkIn,
    Netns,
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

const A4: &str = "10.98.0.1";
const B4: &str = "10.98.0.2";
const A6: &str = "fd98::1";
const B6: &str = "fd98::2";
/// B's addresses on the second subnet, reached from A through B
const FAR4: &str = "10.99.0.1";
const FAR6: &str = "fd99::1";
/// on-link addresses that nobody has
const NOBODY4: &str = "10.98.0.77";
const NOBODY6: &str = "fd98::77";
/// a non-default MTU, to see that the interface's own is reported
const MTU: u32 = 1400;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// A named network namespace (`ip netns add`), deleted on drop.
struct TestNs {
    name: String,
}

impl TestNs {
    fn new(name: String) -> TestNs {
        run(&["ip", "netns", "add", &name]);
        TestNs { name }
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Runs a command inside the namespace (`ip netns exec`).
    fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Pings `dst` until one answer comes back (up to 5 tries of 2 s).
    fn ping(&self, dst: &str) {
        let mut args = vec![
            "ip", "netns", "exec", &self.name, "ping", "-c1", "-W2", "-q",
        ];
        if dst.contains(':') {
            args.push("-6");
        }
        args.push(dst);
        for _ in 0..5 {
            if succeeds(&args) {
                return;
            }
        }
        panic!("no answer to {args:?}");
    }

    /// The ifindex of `name` in this namespace, from `ip -o link`.
    fn ifindex(&self, name: &str) -> u32 {
        let out = self.ip(&["-o", "link", "show", "dev", name]);
        out.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no ifindex in {out:?}"))
    }

    /// The MAC of `name` in this namespace, from `ip -o link`.
    fn mac(&self, name: &str) -> [u8; 6] {
        let out = self.ip(&["-o", "link", "show", "dev", name]);
        let mac = out
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no link/ether in {out:?}"));
        parse_mac(mac).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `ip neigh show to <dst> dev <dev>`: the entry, or an empty string.
    fn neigh(&self, dst: &str, dev: &str) -> String {
        self.ip(&["neigh", "show", "to", dst, "dev", dev])
            .trim()
            .to_string()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        // Deleting the namespace destroys the veth in it, and so its peer in the other.
        delete_netns(&self.name);
    }
}

/// The topology of the module doc, with a netlink handle in A.
struct Topo {
    // the handle first: it is dropped before the namespaces
    nl: NetlinkIn,
    ns_a: Netns,
    a_if: String,
    b_if: String,
    a_ifindex: u32,
    a_mac: [u8; 6],
    b_mac: [u8; 6],
    a: TestNs,
    b: TestNs,
}

impl Topo {
    async fn new() -> Topo {
        require_root("network namespaces and veths");
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let a = TestNs::new(format!("vnb-{pid}-{n}-a"));
        let b = TestNs::new(format!("vnb-{pid}-{n}-b"));
        let a_if = format!("vnb{pid}x{n}a");
        let b_if = format!("vnb{pid}x{n}b");
        assert!(a_if.len() <= 15, "interface name {a_if} too long");

        a.ip(&[
            "link", "add", &a_if, "type", "veth", "peer", "name", &b_if, "netns", &b.name,
        ]);
        let mtu = MTU.to_string();
        for (ns, dev, v4, v6) in [(&a, &a_if, A4, A6), (&b, &b_if, B4, B6)] {
            ns.ip(&["link", "set", "dev", dev, "mtu", &mtu]);
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev]);
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            ns.ip(&["link", "set", "dev", "lo", "up"]);
            ns.ip(&["link", "set", "dev", dev, "up"]);
        }
        b.ip(&["addr", "add", &format!("{FAR4}/24"), "dev", "lo"]);
        b.ip(&["addr", "add", &format!("{FAR6}/64"), "dev", "lo"]);
        a.ip(&["route", "add", "10.99.0.0/24", "via", B4]);
        a.ip(&["-6", "route", "add", "fd99::/64", "via", B6]);
        // the topology works, both families, on-link and through B
        for dst in [B4, B6, FAR4, FAR6] {
            a.ping(dst);
        }

        let ns_a = Netns::open(&format!("/var/run/netns/{}", a.name)).expect("open namespace A");
        let nl = NetlinkIn::new(&ns_a).await.expect("netlink in namespace A");
        Topo {
            nl,
            ns_a,
            a_ifindex: a.ifindex(&a_if),
            a_mac: a.mac(&a_if),
            b_mac: b.mac(&b_if),
            a_if,
            b_if,
            a,
            b,
        }
    }

    /// Empties A's neighbour table, and checks that the entry for `dst` is gone.
    fn flush(&self, dst: &str) {
        self.a.ip(&["neigh", "flush", "all"]);
        let left = self.a.neigh(dst, &self.a_if);
        assert!(
            left.is_empty() || !left.contains("lladdr"),
            "after a flush A still has {left:?}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn route_to_on_link() {
    let t = Topo::new().await;
    for (dst, src) in [(B4, A4), (B6, A6)] {
        let hop = route_to(&t.nl, ip(dst))
            .await
            .unwrap_or_else(|e| panic!("route_to {dst}: {e}"));
        assert_eq!(hop.dst, ip(dst));
        assert_eq!(hop.gateway, None, "{hop}");
        assert_eq!(hop.neighbour(), ip(dst), "on-link: the next hop is dst");
        assert_eq!(hop.ifindex, t.a_ifindex, "{hop}");
        assert_eq!(hop.ifname, t.a_if);
        assert_eq!(hop.src, Some(ip(src)), "{hop}");
        assert_eq!(hop.if_mac, t.a_mac, "{hop}");
        assert_eq!(hop.mtu, MTU, "{hop}");
        assert_eq!(hop.route_mtu, None, "{hop}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn route_to_via_gateway() {
    let t = Topo::new().await;
    for (dst, gw, src) in [(FAR4, B4, A4), (FAR6, B6, A6)] {
        let hop = route_to(&t.nl, ip(dst))
            .await
            .unwrap_or_else(|e| panic!("route_to {dst}: {e}"));
        assert_eq!(hop.dst, ip(dst));
        assert_eq!(hop.gateway, Some(ip(gw)), "{hop}");
        assert_eq!(hop.neighbour(), ip(gw), "the next hop is the gateway");
        assert_eq!(hop.ifindex, t.a_ifindex, "{hop}");
        assert_eq!(hop.ifname, t.a_if);
        assert_eq!(hop.src, Some(ip(src)), "{hop}");
        assert_eq!(hop.if_mac, t.a_mac, "{hop}");
        assert_eq!(hop.mtu, MTU, "{hop}");
    }

    // a route with its own MTU is reported beside the interface's
    t.a.ip(&["route", "add", "10.97.0.0/24", "via", B4, "mtu", "1300"]);
    let hop = route_to(&t.nl, ip("10.97.0.5")).await.expect("route_to");
    assert_eq!(hop.route_mtu, Some(1300), "{hop}");
    assert_eq!(hop.mtu, MTU, "{hop}");
}

#[tokio::test(flavor = "current_thread")]
async fn route_to_refuses_what_has_no_next_hop() {
    let t = Topo::new().await;
    // A's own address: the kernel's answer is a local route
    for own in [A4, A6] {
        match route_to(&t.nl, ip(own)).await {
            Err(e @ NeighError::NotUnicast { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(own) && msg.contains("local"), "{msg}");
            }
            other => panic!("route_to {own}: expected NotUnicast, got {other:?}"),
        }
    }
    // the subnet's broadcast address
    assert!(matches!(
        route_to(&t.nl, ip("10.98.0.255")).await,
        Err(NeighError::NotUnicast { .. })
    ));
    // no route at all (A has no default route)
    for far in ["192.0.2.1", "2001:db8::1"] {
        match route_to(&t.nl, ip(far)).await {
            Err(e @ NeighError::RouteLookup { .. }) => {
                assert!(e.to_string().contains(far), "{e}");
                let NeighError::RouteLookup { source, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(source.raw_os_error(), Some(libc::ENETUNREACH), "{e}");
            }
            other => panic!("route_to {far}: expected RouteLookup, got {other:?}"),
        }
    }
    // a blackhole: an error naming the address, whichever way the kernel says it
    t.a.ip(&["route", "add", "blackhole", "10.96.0.0/24"]);
    let e = route_to(&t.nl, ip("10.96.0.1"))
        .await
        .expect_err("a blackhole has no next hop");
    assert!(e.to_string().contains("10.96.0.1"), "{e}");
    // refused before asking the kernel
    for bad in ["0.0.0.0", "::", "224.0.0.5", "ff02::1", "255.255.255.255"] {
        assert!(
            matches!(
                route_to(&t.nl, ip(bad)).await,
                Err(NeighError::InvalidAddress { .. })
            ),
            "{bad}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn resolve_absent_entry_v4_v6() {
    let t = Topo::new().await;
    // on-link, then through the gateway (whose MAC is B's too)
    for dst in [B4, B6, FAR4, FAR6] {
        let hop = route_to(&t.nl, ip(dst)).await.expect("route_to");
        let neighbour = hop.neighbour().to_string();
        t.flush(&neighbour);
        let mac = resolve(&t.nl, &hop, Duration::from_secs(3))
            .await
            .unwrap_or_else(|e| panic!("resolve {hop}: {e}"));
        assert_eq!(
            format_mac(&mac),
            format_mac(&t.b_mac),
            "resolve {dst} via {neighbour}"
        );
        // the kernel resolved it: a dynamic entry, not one vwire wrote
        let entry = t.a.neigh(&neighbour, &t.a_if);
        assert!(
            entry.contains(&format_mac(&t.b_mac)) && !entry.contains("PERMANENT"),
            "A's entry for {neighbour}: {entry:?}"
        );
        // and again, now that the entry is there
        let again = resolve(&t.nl, &hop, Duration::ZERO)
            .await
            .unwrap_or_else(|e| panic!("resolve {hop} again: {e}"));
        assert_eq!(again, t.b_mac);
    }
}

/// `route_to` of an on-link address nobody has.
async fn nobody(t: &Topo, dst: &str) -> vwire_mechanisms::kernel::NextHop {
    let hop = route_to(&t.nl, ip(dst)).await.expect("route_to");
    assert_eq!(hop.neighbour(), ip(dst));
    hop
}

#[tokio::test(flavor = "current_thread")]
async fn resolve_nobody_times_out() {
    let t = Topo::new().await;
    let timeout = Duration::from_secs(1);
    for dst in [NOBODY4, NOBODY6] {
        let hop = nobody(&t, dst).await;
        let start = Instant::now();
        let result = resolve(&t.nl, &hop, timeout).await;
        let took = start.elapsed();
        match result {
            Err(e @ NeighError::Timeout { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(dst) && msg.contains(&t.a_if),
                    "the error names the address and the interface: {msg}"
                );
                eprintln!("{dst}: {msg} (after {took:?})");
            }
            other => panic!("resolve {dst}: expected a timeout, got {other:?}"),
        }
        assert!(
            took >= timeout && took < timeout + Duration::from_millis(500),
            "resolve {dst} took {took:?} for a timeout of {timeout:?}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn resolve_reports_failure() {
    let t = Topo::new().await;
    // The kernel gives up after mcast_solicit (3) probes retrans_time apart: make that 100 ms.
    for family in ["ipv4", "ipv6"] {
        t.a.exec(&[
            "sysctl",
            "-qw",
            &format!("net.{family}.neigh.{}.retrans_time_ms=100", t.a_if),
        ]);
    }
    for dst in [NOBODY4, NOBODY6] {
        let hop = nobody(&t, dst).await;
        let start = Instant::now();
        let result = resolve(&t.nl, &hop, Duration::from_secs(5)).await;
        let took = start.elapsed();
        match result {
            Err(e @ NeighError::Unreachable { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(dst) && msg.contains(&t.a_if),
                    "the error names the address and the interface: {msg}"
                );
                eprintln!("{dst}: {msg} (after {took:?})");
            }
            other => panic!("resolve {dst}: expected Unreachable, got {other:?}"),
        }
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }
}

/// Waits for `want` (in any order across keys, in order per key) on `rx`: every event must be
/// the next one expected for its key. Fails after 5 s.
async fn expect_changes(
    rx: &mut mpsc::Receiver<NeighEvent>,
    ifindex: u32,
    want: &[(&str, Option<[u8; 6]>)],
) {
    let mut left: Vec<(IpAddr, Option<[u8; 6]>)> =
        want.iter().map(|&(a, mac)| (ip(a), mac)).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !left.is_empty() {
        let event = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no event within 5 s; still waiting for {left:?}"))
            .expect("the watcher's channel ended");
        let NeighEvent::Changed {
            ifindex: got_index,
            ip: got_ip,
            mac,
        } = event
        else {
            panic!("unexpected {event:?}");
        };
        assert_eq!(got_index, ifindex, "{event:?}");
        let at = left
            .iter()
            .position(|(a, _)| *a == got_ip)
            .unwrap_or_else(|| panic!("unexpected {event:?}, waiting for {left:?}"));
        assert_eq!(mac, left[at].1, "{event:?}");
        left.remove(at);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn watcher_follows_mac_change_and_deletion() {
    let t = Topo::new().await;
    // Flushed before the watcher starts: the flush's own deletions are not part of the test.
    t.flush(B4);
    let (watcher, mut rx) = NeighWatcher::new(&t.ns_a).await.expect("start the watcher");
    for dst in [B4, B6] {
        assert!(watcher.watch(t.a_ifindex, ip(dst)));
    }
    assert!(!watcher.watch(t.a_ifindex, ip(B4)), "already watched");
    assert_eq!(watcher.watched().len(), 2);

    // resolution is seen
    for dst in [B4, B6] {
        let hop = route_to(&t.nl, ip(dst)).await.expect("route_to");
        let mac = resolve(&t.nl, &hop, Duration::from_secs(3))
            .await
            .unwrap_or_else(|e| panic!("resolve {dst}: {e}"));
        assert_eq!(mac, t.b_mac);
    }
    expect_changes(
        &mut rx,
        t.a_ifindex,
        &[(B4, Some(t.b_mac)), (B6, Some(t.b_mac))],
    )
    .await;

    // B's MAC changes. Its own neighbour table is flushed with it, so a ping from B to A starts
    // with an ARP request / neighbour solicitation carrying the new MAC, from which A's kernel
    // updates its entry for B.
    let new_mac = [0x02, 0x76, 0x6e, 0x62, 0x00, 0x01];
    t.b.ip(&[
        "link",
        "set",
        "dev",
        &t.b_if,
        "address",
        &format_mac(&new_mac),
    ]);
    t.b.ping(A4);
    t.b.ping(A6);
    expect_changes(
        &mut rx,
        t.a_ifindex,
        &[(B4, Some(new_mac)), (B6, Some(new_mac))],
    )
    .await;
    let entry = t.a.neigh(B4, &t.a_if);
    assert!(entry.contains(&format_mac(&new_mac)), "{entry:?}");

    // deletions
    t.a.ip(&["neigh", "del", B4, "dev", &t.a_if]);
    expect_changes(&mut rx, t.a_ifindex, &[(B4, None)]).await;
    t.a.ip(&["neigh", "del", B6, "dev", &t.a_if]);
    expect_changes(&mut rx, t.a_ifindex, &[(B6, None)]).await;

    // an unwatched entry is not reported
    assert!(watcher.unwatch(t.a_ifindex, ip(B4)));
    assert!(!watcher.unwatch(t.a_ifindex, ip(B4)));
    let hop = route_to(&t.nl, ip(B4)).await.expect("route_to");
    assert_eq!(
        resolve(&t.nl, &hop, Duration::from_secs(3)).await.ok(),
        Some(new_mac)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rx.try_recv().is_err(),
        "an event for an unwatched entry was delivered"
    );

    // Dropping the handle stops the task. The task owns the only sender and the socket, so the
    // channel's end shows that both are gone.
    drop(watcher);
    let end = tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .expect("the watcher task did not stop within 1 s of the drop");
    assert_eq!(end, None, "no event after the drop");
}
