//! The single-node Kernel2Kernel example replayed in network namespaces: an NSC (vwire-nsc) in
//! one namespace asks vwire for the icmp-responder service, vwire asks the NSE (vwire-nse) in
//! another, builds a veth into each namespace, applies the IP context, and cross-connects the two
//! over AF_XDP. The NSC and the NSE ping each other (also 3000-byte pings); refreshes change
//! nothing (no link flap); Close, a token that expires without refresh, and a vwire shutdown
//! each leave no interface behind in any namespace; Request/Close cycles leak no fds.

mod common;

use std::time::{Duration, Instant};

use common::nsm::*;
use common::*;
use vwire::transport::{dial, Url, DIAL_TIMEOUT};
use vwire_proto::connection::monitor_connection_client::MonitorConnectionClient;
use vwire_proto::connection::{ConnectionEventType, MonitorScopeSelector};
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;
use vwire_proto::networkservice::NetworkServiceRequest;

#[test]
fn kernel2kernel_ping_refresh_close() {
    let s = setup(&[]);
    let mut nsc = start_nsc(&s, &["--refresh", "1"]);
    assert!(
        nsc.line.trim_end().ends_with("172.16.1.101 172.16.1.100"),
        "{}",
        nsc.line
    );
    // No MTU requested: vwire's default, on both interfaces, so a 3000-byte ping is one frame.
    assert!(s.nsc.links().contains("mtu 3498"), "{}", s.nsc.links());
    assert!(s.nse.links().contains("mtu 3498"), "{}", s.nse.links());
    kernel_ping(&s, &s.nsc, "172.16.1.100");
    kernel_ping(&s, &s.nse, "172.16.1.101");
    // The connection's ports show in /metrics while it exists, with the pings counted.
    let m = s.vw.scrape();
    let counted: u64 =
        m.0.iter()
            .filter(|(k, _)| k.starts_with("vwire_port_rx_packets_total{port=\"vwc"))
            .map(|(_, v)| v.parse::<u64>().unwrap_or(0))
            .sum();
    assert!(counted >= 12, "the NSC-side port counted {counted} packets");

    // Refreshes every second: same interfaces, traffic keeps flowing.
    let before = (
        ifindex(&s.nsc, "nsm-1"),
        sh(&format!("ip -n {} -s -o link show dev nsm-1", s.nsc.0)),
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        s.nsc
            .exec("ping -c 2 -i 0.2 -W 2 172.16.1.100")
            .status
            .success(),
        "ping after refreshes"
    );
    assert_eq!(
        ifindex(&s.nsc, "nsm-1"),
        before.0,
        "no new interface on refresh"
    );
    assert_eq!(
        s.vw.logs().matches("connection wired").count(),
        1,
        "wired once, refreshed since:\n{}",
        s.vw.logs()
    );
    // Close (the NSC exits on SIGTERM): nothing left anywhere.
    nsc.proc.terminate();
    nothing_left(&s);
}

/// Kernel2Kernel carries TCP as super-packets once moved into the kernel (the default): the NSC's
/// interface keeps TSO, the NSE's interface receives packets far larger than the MTU, no XDP
/// program sits on the host veths, and /metrics counts the segments. A fall back to the
/// AF_XDP path (one MTU-sized frame at a time) fails here.
#[test]
fn kernel2kernel_tcp_crosses_as_super_packets() {
    require(&["iperf3", "ethtool"]);
    let s = setup(&[]);
    let mut nsc = start_nsc(&s, &[]);
    // Wired through the workers first, then moved into the kernel.
    s.vw.wait_log(
        "connection moved into the kernel",
        1,
        Duration::from_secs(10),
    );
    let features = sh(&format!("ip netns exec {} ethtool -k nsm-1", s.nsc.0));
    assert!(
        features.contains("tcp-segmentation-offload: on"),
        "TSO on the NSC's interface: {features}"
    );
    let host = sh("ip -d -o link show");
    let vwire_veths: Vec<&str> = host
        .lines()
        .filter(|l| l.contains(": vwc") || l.contains(": vwe"))
        .collect();
    assert_eq!(vwire_veths.len(), 2, "two host veths: {host}");
    assert!(
        vwire_veths.iter().all(|l| !l.contains("xdp")),
        "no XDP on the host veths: {vwire_veths:?}"
    );
    let dev = nse_iface(&s);
    let rx = |what: &str| -> u64 {
        sh(&format!(
            "ip netns exec {} cat /sys/class/net/{dev}/statistics/{what}",
            s.nse.0
        ))
        .trim()
        .parse()
        .expect("a counter")
    };
    let (bytes0, packets0) = (rx("rx_bytes"), rx("rx_packets"));
    let server = Proc(
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &s.nse.0,
                "iperf3",
                "-s",
                "-1",
                "-B",
                "172.16.1.100",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("iperf3 -s"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = sh(&format!(
        "ip netns exec {} iperf3 -c 172.16.1.100 -t 1 -f g",
        s.nsc.0
    ));
    drop(server);
    let (bytes, packets) = (rx("rx_bytes") - bytes0, rx("rx_packets") - packets0);
    let per_packet = bytes / packets.max(1);
    println!(
        "TCP through vwire: {}; the NSE received {bytes} B in {packets} packets ({per_packet} B each)",
        out.lines().find(|l| l.contains("receiver")).unwrap_or("?").trim()
    );
    assert!(
        per_packet > 3498 + 14,
        "super-packets reach the NSE ({per_packet} B a packet on average)"
    );
    let m = s.vw.scrape();
    let segments: u64 =
        m.0.iter()
            .filter(|(k, _)| k.starts_with("vwire_port_rx_packets_total{port=\"vwc"))
            .map(|(_, v)| v.parse::<u64>().unwrap_or(0))
            .sum();
    assert!(
        segments > packets,
        "/metrics counts segments ({segments}), more than the super-packets received ({packets})"
    );
    nsc.proc.terminate();
    nothing_left(&s);
}

/// Kernel2Kernel with an IP payload: permanent neighbour entries on both kernel interfaces, so
/// pings cross without any ARP.
#[test]
fn kernel2kernel_ip_payload_needs_no_arp() {
    let s = setup(&[]);
    let mut nsc = start_nsc(&s, &["--payload", "IP"]);
    for (ns, dev, peer) in [
        (&s.nsc, "nsm-1".to_string(), "172.16.1.100"),
        (&s.nse, nse_iface(&s), "172.16.1.101"),
    ] {
        let neigh = sh(&format!("ip -n {} neigh show dev {dev}", ns.0));
        assert!(
            neigh.contains(peer) && neigh.contains("PERMANENT"),
            "neighbours on {dev}: {neigh}"
        );
    }
    kernel_ping(&s, &s.nsc, "172.16.1.100");
    kernel_ping(&s, &s.nse, "172.16.1.101");
    // Still only the permanent entries: nothing was resolved by ARP.
    let neigh = sh(&format!("ip -n {} neigh show", s.nsc.0));
    assert!(
        neigh.lines().all(|l| l.contains("PERMANENT")),
        "NSC neighbours: {neigh}"
    );
    nsc.proc.terminate();
    nothing_left(&s);
}

/// The NSE's interface name (the one `nse-*` link in its namespace).
fn nse_iface(s: &Setup) -> String {
    s.nse
        .links()
        .split(": ")
        .find(|w| w.starts_with("nse-"))
        .map(|w| w.split('@').next().unwrap_or(w).to_string())
        .expect("an nse- interface in the NSE namespace")
}

fn request(s: &Setup, expires_in: Duration) -> NetworkServiceRequest {
    kernel_request(&s.nsc, "nsm-t", expires_in)
}

async fn channel(s: &Setup) -> tonic::transport::Channel {
    let url = Url::Unix(s.dir.join("fwd.sock"));
    dial(&url, DIAL_TIMEOUT).await.expect("connect to vwire")
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "current_thread")]
async fn timeout_cycles_and_shutdown_leave_nothing() {
    let s = setup(&[]);
    let ch = channel(&s).await;
    let mut c = NetworkServiceClient::new(ch.clone());
    let mut events = MonitorConnectionClient::new(ch)
        .monitor_connections(MonitorScopeSelector::default())
        .await
        .expect("monitor")
        .into_inner();
    let first = events.message().await.unwrap().unwrap();
    assert_eq!(first.r#type(), ConnectionEventType::InitialStateTransfer);

    // A connection whose token expires without a refresh is closed by vwire itself; the monitor
    // sees it come (UPDATE) and go (DELETE).
    let conn = c
        .request(request(&s, Duration::from_secs(2)))
        .await
        .expect("request")
        .into_inner();
    // This hop's path segment carries forwarder-vpp's metrics keys.
    let seg = &conn.path.as_ref().unwrap().path_segments[1];
    assert_eq!(seg.name, "fwd");
    assert_eq!(
        seg.metrics.get("server_interface").map(String::as_str),
        Some("KERNEL/nsm-t")
    );
    assert!(
        seg.metrics
            .get("client_interface")
            .is_some_and(|v| v.starts_with("KERNEL/nse-")),
        "{:?}",
        seg.metrics
    );
    for k in [
        "server_rx_packets",
        "server_tx_bytes",
        "client_rx_bytes",
        "client_drops",
    ] {
        assert!(
            seg.metrics.contains_key(k),
            "missing {k}: {:?}",
            seg.metrics
        );
    }
    assert!(s.nsc.links().contains("nsm-t"));
    let up = events.message().await.unwrap().unwrap();
    assert_eq!(up.r#type(), ConnectionEventType::Update);
    assert_eq!(up.connections.len(), 1);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    nothing_left(&s);
    let gone = events.message().await.unwrap().unwrap();
    assert_eq!(gone.r#type(), ConnectionEventType::Delete);

    // Request/Close cycles leak no fds (one cycle first, to warm up the lazily opened pieces).
    let conn = c
        .request(request(&s, Duration::from_secs(600)))
        .await
        .unwrap()
        .into_inner();
    c.close(conn).await.unwrap();
    let fds = fd_count(s.vw.pid());
    let t0 = Instant::now();
    const CYCLES: usize = 200;
    for _ in 0..CYCLES {
        let conn = c
            .request(request(&s, Duration::from_secs(600)))
            .await
            .unwrap()
            .into_inner();
        c.close(conn).await.unwrap();
    }
    println!("{CYCLES} Request/Close cycles in {:?}", t0.elapsed());
    nothing_left(&s);
    assert_eq!(
        fd_count(s.vw.pid()),
        fds,
        "vwire's fds after {CYCLES} Request/Close cycles"
    );

    // Shutdown closes what is still connected.
    let _conn = c
        .request(request(&s, Duration::from_secs(600)))
        .await
        .unwrap();
    let mut s = s;
    let (status, _) = s.vw.terminate(Duration::from_secs(3));
    assert!(status.success());
    nothing_left(&s);
}
