//! Privileged tests of the kernel mechanism against real namespaces and veths.
//!
//! Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); CI runs as root, and these tests fail loudly
//! rather than skip when it is not. Every test makes its own namespaces (named with the pid and
//! a counter) and removes them in a guard's `Drop`, so a failing test leaves nothing behind.
//! Results are checked with `ip`, independently of the code under test.

use std::process::{Child, Command};

mod common;
use common::{delete_netns, require_root, run, succeeds};
use std::sync::atomic::{AtomicU32, Ordering};

use vwire_mechanisms::kernel::{
    apply_context, create_veth_into, delete_veth, delete_veths, format_mac, owned_group,
    remove_context, IpContextSpec, IpNet, KernelError, Neighbor, NetlinkIn, Netns, RouteSpec,
    VethSpec, DELETE_GROUP,
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`ip netns add`), deleted on drop.
struct TestNs {
    name: String,
}

impl TestNs {
    fn new(tag: &str) -> TestNs {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("vwk-{}-{n}-{tag}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        TestNs { name }
    }

    fn url(&self) -> String {
        format!("file:///var/run/netns/{}", self.name)
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    fn has_link(&self, name: &str) -> bool {
        succeeds(&["ip", "-n", &self.name, "link", "show", "dev", name])
    }

    /// The ifindex of `name` in this namespace, from `ip -o link`.
    fn ifindex(&self, name: &str) -> u32 {
        let out = self.ip(&["-o", "link", "show", "dev", name]);
        out.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no ifindex in {out:?}"))
    }

    /// How many times `name`'s carrier changed: `transns` in `ip -s -s link`.
    fn carrier_changes(&self, name: &str) -> u64 {
        carrier_changes(&self.ip(&["-s", "-s", "link", "show", "dev", name]))
    }

    async fn netlink(&self) -> (Netns, NetlinkIn) {
        let ns = Netns::open(&self.url()).expect("open the test namespace");
        let nl = NetlinkIn::new(&ns)
            .await
            .expect("netlink in the test namespace");
        (ns, nl)
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        // Deleting the namespace destroys the veths in it, and so their peers elsewhere.
        delete_netns(&self.name);
    }
}

fn carrier_changes(stats: &str) -> u64 {
    let mut lines = stats.lines();
    while let Some(line) = lines.next() {
        if line.contains("transns") {
            if let Some(n) = lines
                .next()
                .and_then(|l| l.split_whitespace().last())
                .and_then(|n| n.parse().ok())
            {
                return n;
            }
        }
    }
    panic!("no carrier changes (transns) in:\n{stats}");
}

/// Two namespaces, a netlink handle in each, as the forwarder (host) and a client (peer).
struct Pair {
    host: TestNs,
    peer: TestNs,
    host_nl: NetlinkIn,
    peer_nl: NetlinkIn,
}

async fn pair() -> Pair {
    require_root("network namespaces and veths");
    let host = TestNs::new("h");
    let peer = TestNs::new("p");
    let (_, host_nl) = host.netlink().await;
    let (_, peer_nl) = peer.netlink().await;
    Pair {
        host,
        peer,
        host_nl,
        peer_nl,
    }
}

fn spec(mtu: Option<u32>) -> VethSpec {
    VethSpec {
        host_name: "vw-host".to_string(),
        peer_name: "nsm-1".to_string(),
        mtu,
        peer_mac: Some([0x02, 0xfe, 0, 0, 0, 0x01]),
        host_group: None,
    }
}

fn net(text: &str) -> IpNet {
    text.parse().expect("test prefix")
}

/// NSM-like point-to-point context: /31 and /127 addresses, routes via the peer, neighbours.
fn context() -> IpContextSpec {
    IpContextSpec {
        addrs: vec![net("172.16.1.100/31"), net("fd00:1::100/127")],
        routes: vec![
            RouteSpec {
                dst: net("10.20.0.0/16"),
                gateway: Some("172.16.1.101".parse().expect("ip")),
            },
            RouteSpec {
                dst: net("192.168.77.0/24"),
                gateway: None,
            },
            RouteSpec {
                dst: net("fd00:2::/64"),
                gateway: Some("fd00:1::101".parse().expect("ip")),
            },
        ],
        neighbors: vec![
            Neighbor {
                ip: "172.16.1.101".parse().expect("ip"),
                mac: [0x02, 0xfe, 0, 0, 0, 0x02],
            },
            Neighbor {
                ip: "fd00:1::101".parse().expect("ip"),
                mac: [0x02, 0xfe, 0, 0, 0, 0x02],
            },
        ],
        mtu: Some(1450),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn veth_into_netns_with_name_and_mtu() {
    let p = pair().await;
    let got = create_veth_into(&p.host_nl, &p.peer_nl, &spec(Some(1400)))
        .await
        .expect("create veth");
    assert!(got.created);

    let peer = p.peer.ip(&["-d", "link", "show", "dev", "nsm-1"]);
    assert!(peer.contains("mtu 1400"), "peer MTU:\n{peer}");
    assert!(peer.contains("veth"), "peer kind:\n{peer}");
    assert!(peer.contains(",UP"), "peer admin up:\n{peer}");
    assert!(
        peer.contains("link/ether 02:fe:00:00:00:01"),
        "peer MAC:\n{peer}"
    );
    let host = p.host.ip(&["-d", "link", "show", "dev", "vw-host"]);
    assert!(host.contains("mtu 1400"), "host MTU:\n{host}");
    assert!(
        host.contains("state UP"),
        "host carrier (both ends up):\n{host}"
    );
    assert!(
        host.contains(&format!("link/ether {}", format_mac(&got.host_mac))),
        "host MAC:\n{host}"
    );

    assert_eq!(got.peer_ifindex, p.peer.ifindex("nsm-1"));
    assert_eq!(got.host_ifindex, p.host.ifindex("vw-host"));
    assert_eq!(got.peer_mac, [0x02, 0xfe, 0, 0, 0, 0x01]);
    assert!(
        !p.host.has_link("nsm-1"),
        "the peer must not appear in the host namespace"
    );
    assert!(
        !p.peer.has_link("vw-host"),
        "the host end must stay in the host namespace"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn veth_create_is_idempotent_without_flap() {
    let p = pair().await;
    let first = create_veth_into(&p.host_nl, &p.peer_nl, &spec(Some(1400)))
        .await
        .expect("create veth");
    let host_changes = p.host.carrier_changes("vw-host");
    let peer_changes = p.peer.carrier_changes("nsm-1");

    let again = create_veth_into(&p.host_nl, &p.peer_nl, &spec(Some(1400)))
        .await
        .expect("create the same veth again");
    assert!(
        !again.created,
        "the second call must find the pair, not recreate it"
    );
    assert_eq!(VethPairIds::of(&again), VethPairIds::of(&first));
    assert_eq!(p.peer.ifindex("nsm-1"), first.peer_ifindex);
    assert_eq!(
        p.host.carrier_changes("vw-host"),
        host_changes,
        "host end flapped"
    );
    assert_eq!(
        p.peer.carrier_changes("nsm-1"),
        peer_changes,
        "peer end flapped"
    );

    // A refresh with another MTU adjusts it in place.
    let resized = create_veth_into(&p.host_nl, &p.peer_nl, &spec(Some(1300)))
        .await
        .expect("same veth, new MTU");
    assert!(!resized.created);
    assert_eq!(resized.peer_ifindex, first.peer_ifindex);
    assert!(p
        .peer
        .ip(&["link", "show", "dev", "nsm-1"])
        .contains("mtu 1300"));
    assert!(p
        .host
        .ip(&["link", "show", "dev", "vw-host"])
        .contains("mtu 1300"));
    assert_eq!(
        p.peer.carrier_changes("nsm-1"),
        peer_changes,
        "an MTU change flapped the link"
    );
}

#[derive(Debug, PartialEq, Eq)]
struct VethPairIds(u32, u32, [u8; 6], [u8; 6]);

impl VethPairIds {
    fn of(p: &vwire_mechanisms::kernel::VethPair) -> Self {
        VethPairIds(p.host_ifindex, p.peer_ifindex, p.host_mac, p.peer_mac)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn leftover_host_veth_is_replaced() {
    let p = pair().await;
    // A veth with vwire's host name whose peer is something else (an earlier connection's).
    p.host.ip(&[
        "link", "add", "vw-host", "type", "veth", "peer", "name", "stale0",
    ]);
    let got = create_veth_into(&p.host_nl, &p.peer_nl, &spec(None))
        .await
        .expect("replace the leftover");
    assert!(got.created);
    assert!(
        !p.host.has_link("stale0"),
        "the leftover's peer must be gone"
    );
    assert!(p.peer.has_link("nsm-1"));
}

#[tokio::test(flavor = "current_thread")]
async fn names_taken_by_others_are_not_touched() {
    let p = pair().await;
    // The client already has an interface called nsm-1 that is not ours.
    p.peer.ip(&[
        "link", "add", "nsm-1", "type", "veth", "peer", "name", "other0",
    ]);
    let err = create_veth_into(&p.host_nl, &p.peer_nl, &spec(None))
        .await
        .expect_err("the peer name is taken");
    assert!(
        matches!(err, KernelError::NameTaken { ref name, .. } if name == "nsm-1"),
        "{err}"
    );
    assert!(p.peer.has_link("other0"), "someone else's veth was touched");
    assert!(!p.host.has_link("vw-host"), "nothing may be left half-made");

    // A host name taken by a non-veth is refused too.
    p.host.ip(&["link", "add", "vw-host", "type", "bridge"]);
    let err = create_veth_into(&p.host_nl, &p.peer_nl, &spec(None))
        .await
        .expect_err("bridge");
    assert!(matches!(err, KernelError::NameTaken { .. }), "{err}");
    let err = delete_veth(&p.host_nl, "vw-host")
        .await
        .expect_err("not a veth");
    assert!(matches!(err, KernelError::NameTaken { .. }), "{err}");
    assert!(p.host.has_link("vw-host"), "delete_veth removed a bridge");
}

#[tokio::test(flavor = "current_thread")]
async fn context_apply_reapply_remove() {
    let p = pair().await;
    let pair_ids = create_veth_into(&p.host_nl, &p.peer_nl, &spec(Some(1500)))
        .await
        .expect("create veth");
    // Start with IPv6 off on the link, as some pods have it: apply must turn it on.
    run(&[
        "ip",
        "netns",
        "exec",
        &p.peer.name,
        "sh",
        "-c",
        "echo 1 > /proc/sys/net/ipv6/conf/nsm-1/disable_ipv6",
    ]);
    let ctx = context();
    apply_context(&p.peer_nl, "nsm-1", &ctx)
        .await
        .expect("apply context");

    let link = p.peer.ip(&["link", "show", "dev", "nsm-1"]);
    assert!(link.contains("mtu 1450"), "MTU:\n{link}");
    let addrs = p.peer.ip(&["addr", "show", "dev", "nsm-1"]);
    assert!(
        addrs.contains("inet 172.16.1.100/31"),
        "IPv4 address:\n{addrs}"
    );
    assert!(
        addrs
            .lines()
            .filter(|l| l.contains("inet 172.16.1.100/31"))
            .all(|l| !l.contains("brd")),
        "a /31 has no broadcast:\n{addrs}"
    );
    assert!(
        addrs.contains("inet6 fd00:1::100/127"),
        "IPv6 address:\n{addrs}"
    );
    assert!(
        addrs
            .lines()
            .filter(|l| l.contains("inet6 fd00:1::100/127"))
            .all(|l| l.contains("nodad") && !l.contains("tentative")),
        "nodad expected:\n{addrs}"
    );
    let routes4 = p.peer.ip(&["route", "show", "dev", "nsm-1"]);
    assert!(
        routes4.contains("10.20.0.0/16 via 172.16.1.101"),
        "IPv4 route:\n{routes4}"
    );
    assert!(
        routes4.contains("onlink"),
        "gateway routes are onlink:\n{routes4}"
    );
    assert!(
        routes4.contains("192.168.77.0/24"),
        "connected route:\n{routes4}"
    );
    assert!(
        routes4.contains("scope link"),
        "connected route scope:\n{routes4}"
    );
    let routes6 = p.peer.ip(&["-6", "route", "show", "dev", "nsm-1"]);
    assert!(
        routes6.contains("fd00:2::/64 via fd00:1::101"),
        "IPv6 route:\n{routes6}"
    );
    let neigh = p.peer.ip(&["neigh", "show", "dev", "nsm-1"]);
    assert!(
        neigh.contains("172.16.1.101 lladdr 02:fe:00:00:00:02 PERMANENT"),
        "IPv4 neighbour:\n{neigh}"
    );
    assert!(
        neigh.contains("fd00:1::101 lladdr 02:fe:00:00:00:02 PERMANENT"),
        "IPv6 neighbour:\n{neigh}"
    );

    // Re-apply: no error, nothing changes, no flap.
    let snapshot = |ns: &TestNs| {
        [
            ns.ip(&["addr", "show", "dev", "nsm-1"]),
            ns.ip(&["route", "show", "dev", "nsm-1"]),
            ns.ip(&["-6", "route", "show", "dev", "nsm-1"]),
            ns.ip(&["neigh", "show", "dev", "nsm-1"]),
        ]
    };
    let before = snapshot(&p.peer);
    let changes = p.peer.carrier_changes("nsm-1");
    apply_context(&p.peer_nl, "nsm-1", &ctx)
        .await
        .expect("re-apply the same context");
    let again = create_veth_into(&p.host_nl, &p.peer_nl, &spec(Some(1450)))
        .await
        .expect("refresh the veth with the context's MTU");
    assert_eq!(again.peer_ifindex, pair_ids.peer_ifindex);
    assert_eq!(snapshot(&p.peer), before, "re-applying changed something");
    assert_eq!(p.peer.ifindex("nsm-1"), pair_ids.peer_ifindex);
    assert_eq!(
        p.peer.carrier_changes("nsm-1"),
        changes,
        "re-applying flapped the link"
    );

    // Remove: exactly what was added goes, twice is fine.
    remove_context(&p.peer_nl, "nsm-1", &ctx)
        .await
        .expect("remove context");
    let addrs = p.peer.ip(&["addr", "show", "dev", "nsm-1"]);
    assert!(
        !addrs.contains("172.16.1.100") && !addrs.contains("fd00:1::100"),
        "addresses left:\n{addrs}"
    );
    let routes = p.peer.ip(&["route", "show", "dev", "nsm-1"])
        + &p.peer.ip(&["-6", "route", "show", "dev", "nsm-1"]);
    for gone in ["10.20.0.0", "192.168.77.0", "fd00:2::"] {
        assert!(!routes.contains(gone), "route {gone} left:\n{routes}");
    }
    let neigh = p.peer.ip(&["neigh", "show", "dev", "nsm-1"]);
    assert!(!neigh.contains("PERMANENT"), "neighbours left:\n{neigh}");
    remove_context(&p.peer_nl, "nsm-1", &ctx)
        .await
        .expect("remove context again");
    assert!(
        p.peer.has_link("nsm-1"),
        "remove_context must not remove the link"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn delete_veths_deletes_a_batch_and_nothing_else() {
    let p = pair().await;
    for i in 0..4 {
        let spec = VethSpec {
            host_name: format!("vw-b{i}"),
            peer_name: format!("nsm-b{i}"),
            mtu: None,
            peer_mac: None,
            host_group: Some(owned_group("kernel-test")),
        };
        create_veth_into(&p.host_nl, &p.peer_nl, &spec)
            .await
            .expect("create veth");
    }
    // Not vwire's: a bridge under a name in the batch, and a veth outside it.
    p.host.ip(&["link", "add", "vw-br", "type", "bridge"]);
    p.host.ip(&[
        "link", "add", "other0", "type", "veth", "peer", "name", "other1",
    ]);
    let batch: Vec<String> = ["vw-b0", "vw-b1", "vw-b2", "vw-gone", "vw-br"]
        .into_iter()
        .map(String::from)
        .collect();
    let failed = delete_veths(&p.host_nl, &batch).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        matches!(&failed[0], KernelError::NameTaken { name, .. } if name == "vw-br"),
        "{:?}",
        failed[0]
    );
    for i in 0..3 {
        assert!(
            !p.host.has_link(&format!("vw-b{i}")),
            "host end vw-b{i} left"
        );
        assert!(
            !p.peer.has_link(&format!("nsm-b{i}")),
            "peer end nsm-b{i} left"
        );
    }
    assert!(
        p.host.has_link("vw-b3") && p.peer.has_link("nsm-b3"),
        "a veth outside the batch went"
    );
    assert!(p.host.has_link("vw-br"), "the bridge was deleted");
    assert!(
        p.host.has_link("other0") && p.host.has_link("other1"),
        "a foreign veth went"
    );
    // Nothing is left in the deletion group, and the others keep their group.
    let group = DELETE_GROUP.to_string();
    let listed = p.host.ip(&["-o", "link", "show", "group", &group]);
    assert!(
        listed.trim().is_empty(),
        "left in the deletion group: {listed}"
    );
    // The veth outside the batch keeps the group it was created in.
    let owned = p.host.ip(&[
        "-o",
        "link",
        "show",
        "group",
        &owned_group("kernel-test").to_string(),
    ]);
    assert!(
        owned.contains(" vw-b3@") && owned.lines().count() == 1,
        "vwire's group should hold vw-b3 only: {owned}"
    );
    // An empty batch and an all-gone batch are no-ops.
    assert!(delete_veths(&p.host_nl, &[]).await.is_empty());
    assert!(delete_veths(&p.host_nl, &batch[..3]).await.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn delete_veth_is_idempotent() {
    let p = pair().await;
    create_veth_into(&p.host_nl, &p.peer_nl, &spec(None))
        .await
        .expect("create veth");
    apply_context(&p.peer_nl, "nsm-1", &context())
        .await
        .expect("apply context");
    delete_veth(&p.host_nl, "vw-host")
        .await
        .expect("delete veth");
    assert!(!p.host.has_link("vw-host"), "host end left");
    assert!(!p.peer.has_link("nsm-1"), "peer end left");
    delete_veth(&p.host_nl, "vw-host")
        .await
        .expect("delete a deleted veth");
    delete_veth(&p.host_nl, "vw-host")
        .await
        .expect("and once more");
    // The context of a gone interface is gone too.
    remove_context(&p.peer_nl, "nsm-1", &context())
        .await
        .expect("remove context of a gone link");
}

/// A process sleeping inside a namespace, killed on drop.
struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn open_netns_by_name_pid_and_path() {
    require_root("network namespaces and veths");
    let ns = TestNs::new("o");
    let by_name = Netns::open(&ns.url()).expect("open by file:///var/run/netns/<name>");
    let by_path = Netns::open(&format!("/var/run/netns/{}", ns.name)).expect("open by path");

    let sleeper = Sleeper(
        Command::new("ip")
            .args(["netns", "exec", &ns.name, "sleep", "60"])
            .spawn()
            .expect("spawn sleep in the namespace"),
    );
    // `ip netns exec` sets the namespace and then execs sleep, keeping the pid; wait until it did.
    let pid = sleeper.0.id();
    let url = format!("file:///proc/{pid}/ns/net");
    let mut by_pid = None;
    for _ in 0..200 {
        let candidate = Netns::open(&url).expect("open by file:///proc/<pid>/ns/net");
        if candidate == by_name {
            by_pid = Some(candidate);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let by_pid = by_pid.expect("the sleeping process never entered the namespace");
    assert_eq!(by_path, by_name);
    assert_ne!(
        by_pid,
        Netns::current().expect("current netns"),
        "test namespace is the current one?"
    );

    // A handle made through the pid URL acts in that namespace.
    let host = TestNs::new("oh");
    let (_, host_nl) = host.netlink().await;
    let peer_nl = NetlinkIn::new(&by_pid).await.expect("netlink by pid URL");
    create_veth_into(&host_nl, &peer_nl, &spec(Some(1280)))
        .await
        .expect("veth into pid netns");
    assert!(ns
        .ip(&["link", "show", "dev", "nsm-1"])
        .contains("mtu 1280"));
    drop(sleeper);
}

#[tokio::test(flavor = "current_thread")]
async fn veth_from_the_current_namespace() {
    require_root("network namespaces and veths");
    // The real layout: the host end in the forwarder's (this process's) namespace.
    let peer = TestNs::new("c");
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let host_name = format!("vwk{}x{n}", std::process::id());
    struct DelLink(String);
    impl Drop for DelLink {
        fn drop(&mut self) {
            let _ = succeeds(&["ip", "link", "del", &self.0]);
        }
    }
    let _guard = DelLink(host_name.clone());

    let host_nl = NetlinkIn::new(&Netns::current().expect("current netns"))
        .await
        .expect("netlink here");
    let (_, peer_nl) = peer.netlink().await;
    let spec = VethSpec {
        host_name: host_name.clone(),
        peer_name: "nsm-1".to_string(),
        mtu: Some(9000),
        peer_mac: None,
        host_group: None,
    };
    let got = create_veth_into(&host_nl, &peer_nl, &spec)
        .await
        .expect("create veth");
    assert!(run(&["ip", "link", "show", "dev", &host_name]).contains("mtu 9000"));
    assert!(peer
        .ip(&["link", "show", "dev", "nsm-1"])
        .contains("mtu 9000"));
    assert_eq!(got.peer_ifindex, peer.ifindex("nsm-1"));
    delete_veth(&host_nl, &host_name)
        .await
        .expect("delete veth");
    assert!(!succeeds(&["ip", "link", "show", "dev", &host_name]));
    assert!(!peer.has_link("nsm-1"));
}

#[tokio::test(flavor = "current_thread")]
async fn bad_input_is_an_error_not_a_panic() {
    let p = pair().await;
    let mut bad = spec(None);
    bad.peer_name = "this-name-is-too-long".to_string();
    let err = create_veth_into(&p.host_nl, &p.peer_nl, &bad)
        .await
        .expect_err("long name");
    assert!(matches!(err, KernelError::InvalidName { .. }), "{err}");
    bad.peer_name = "a/b".to_string();
    assert!(create_veth_into(&p.host_nl, &p.peer_nl, &bad)
        .await
        .is_err());
    let mut bad = spec(None);
    bad.peer_mac = Some([0x01, 0, 0, 0, 0, 1]);
    let err = create_veth_into(&p.host_nl, &p.peer_nl, &bad)
        .await
        .expect_err("multicast MAC");
    assert!(matches!(err, KernelError::InvalidMac { .. }), "{err}");
    let err = create_veth_into(&p.host_nl, &p.peer_nl, &spec(Some(70_000)))
        .await
        .expect_err("MTU above the veth maximum");
    assert!(matches!(err, KernelError::Netlink { .. }), "{err}");
    assert!(
        err.to_string().contains("vw-host"),
        "the error names the interface: {err}"
    );
    assert!(!p.host.has_link("vw-host"));

    let err = apply_context(&p.peer_nl, "nsm-9", &context())
        .await
        .expect_err("no such interface");
    assert!(matches!(err, KernelError::NoSuchInterface { .. }), "{err}");
    remove_context(&p.peer_nl, "nsm-9", &context())
        .await
        .expect("removing from nothing is fine");

    assert!(matches!(
        Netns::open("inode://4/4026531840"),
        Err(KernelError::InvalidNetnsUrl { .. })
    ));
    assert!(matches!(
        Netns::open("file:///etc/hostname"),
        Err(KernelError::NotNetns { .. })
    ));
    assert!(matches!(
        Netns::open("file:///var/run/netns/vwk-no-such-namespace"),
        Err(KernelError::OpenNetns { .. })
    ));
}
