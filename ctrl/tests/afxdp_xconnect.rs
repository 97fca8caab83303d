//! vwire cross-connects two network namespaces over AF_XDP: ping both ways (small and 1400-byte),
//! a 5 s iperf3 TCP run with the veths' default offloads, /metrics agreeing with the kernel's own
//! interface counters, and a clean SIGTERM that leaves no XDP program behind.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn cross_connect_two_namespaces() {
    require(&["ip", "ping", "iperf3", "sysctl"]);
    let a = Host::new("10.201.0.1", 1);
    let b = Host::new("10.201.0.2", 1);
    assert!(!xdp_attached(&a.port_if) && !xdp_attached(&b.port_if));
    let mut vw = Vwire::start(&xconnect_config(&a.port_if, &b.port_if, "adaptive"));
    assert!(
        xdp_attached(&a.port_if),
        "no XDP program on {}:\n{}",
        a.port_if,
        vw.logs()
    );
    assert!(xdp_attached(&b.port_if));

    // ping both ways, small and 1400-byte.
    assert!(a.ping(&b.ip, 5, 56), "ping a→b failed:\n{}", vw.logs());
    assert!(b.ping(&a.ip, 5, 56), "ping b→a failed");
    assert!(a.ping(&b.ip, 5, 1400), "1400-byte ping a→b failed");
    assert!(b.ping(&a.ip, 5, 1400), "1400-byte ping b→a failed");

    // The counters agree with the kernel's: every frame a's interface sent, vwire received on
    // "left" and sent on "right", and b's interface received, and the reverse.
    let kernel = || {
        [
            a.stat("tx_packets"),
            b.stat("rx_packets"),
            b.stat("rx_bytes"),
            b.stat("tx_packets"),
            a.stat("rx_packets"),
        ]
    };
    std::thread::sleep(Duration::from_millis(300));
    let (k0, m0) = (kernel(), vw.scrape());
    assert!(a.ping(&b.ip, 50, 200), "ping burst failed");
    std::thread::sleep(Duration::from_millis(300));
    let (k1, m1) = (kernel(), vw.scrape());
    let [a_tx, b_rx, b_rx_bytes, b_tx, a_rx] = [0, 1, 2, 3, 4].map(|i| k1[i] - k0[i]);
    let dm = |fam: &str, port: &str| m1.port(fam, port) - m0.port(fam, port);
    assert!(a_tx >= 50, "a sent {a_tx} frames, expected at least 50");
    assert_eq!(dm("rx_packets", "left"), a_tx, "left rx vs a's tx_packets");
    assert_eq!(
        dm("tx_packets", "right"),
        b_rx,
        "right tx vs b's rx_packets"
    );
    assert_eq!(
        dm("tx_bytes", "right"),
        b_rx_bytes,
        "right tx bytes vs b's rx_bytes"
    );
    // The receiving veth counts whole frames, as vwire does; frames cross unchanged. (The sending
    // veth counts 14 bytes less per frame when its peer runs XDP, so a's tx_bytes is not used.)
    assert_eq!(
        dm("rx_bytes", "left"),
        b_rx_bytes,
        "left rx bytes vs b's rx_bytes"
    );
    assert_eq!(
        dm("rx_packets", "right"),
        b_tx,
        "right rx vs b's tx_packets"
    );
    assert_eq!(dm("tx_packets", "left"), a_rx, "left tx vs a's rx_packets");
    assert_eq!(
        m1.count("vwire_port_drops_total{port=\"left\",reason=\"no_route\"}"),
        0
    );

    // A 5 s iperf3 TCP run completes, with checksum offload left on (the default).
    let offload = a.exec(&format!(
        "ethtool -k {} 2>/dev/null | grep '^tx-checksumming'",
        a.inner_if
    ));
    let server = b.exec("iperf3 -s -D -1 --logfile /dev/null");
    assert!(server.status.success(), "iperf3 server failed to start");
    std::thread::sleep(Duration::from_millis(300));
    let out = a.exec(&format!("timeout 30 iperf3 -c {} -t 5 -J", b.ip));
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "iperf3 failed: {json}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bps = iperf_received_bps(&json);
    assert!(bps > 1e6, "iperf3 moved only {bps} bit/s");
    println!(
        "iperf3 TCP through vwire: {:.2} Gbit/s ({})",
        bps / 1e9,
        String::from_utf8_lossy(&offload.stdout).trim()
    );

    // SIGTERM: exit 0 within 2 s, and no XDP program left behind.
    let (status, took) = vw.terminate(Duration::from_secs(2));
    assert!(
        status.success(),
        "vwire exited with {status}:\n{}",
        vw.logs()
    );
    println!("vwire stopped in {took:?}");
    assert!(
        !xdp_attached(&a.port_if),
        "XDP program left on {}",
        a.port_if
    );
    assert!(
        !xdp_attached(&b.port_if),
        "XDP program left on {}",
        b.port_if
    );
}

/// The receiver's bit rate from iperf3's JSON report.
fn iperf_received_bps(json: &str) -> f64 {
    let at = json
        .find("\"sum_received\"")
        .expect("iperf3 JSON has sum_received");
    let rest = &json[at..];
    let k = rest.find("\"bits_per_second\"").expect("bits_per_second");
    let v = &rest[k + "\"bits_per_second\"".len()..];
    let v = v.trim_start_matches([':', ' ', '\t', '\n']);
    let end = v.find([',', '\n', '}']).unwrap_or(v.len());
    v[..end].trim().parse().expect("a number")
}

#[test]
fn every_queue_of_a_multi_queue_interface_is_served() {
    require(&["ip", "ping", "iperf3", "sysctl"]);
    let a = Host::new("10.202.0.1", 1);
    let b = Host::new("10.202.0.2", 4);
    let vw = Vwire::start(&xconnect_config(&a.port_if, &b.port_if, "adaptive"));
    // Several parallel flows from b hash onto different queues of b's 4-queue veth.
    assert!(b.exec("true").status.success());
    let server = a.exec("iperf3 -s -D -1 --logfile /dev/null");
    assert!(server.status.success());
    std::thread::sleep(Duration::from_millis(300));
    let out = b.exec(&format!("timeout 30 iperf3 -c {} -t 2 -P 8 -J", a.ip));
    assert!(out.status.success(), "iperf3 -P 8 failed:\n{}", vw.logs());
    // b's stack may still send a frame (a last ACK, an IPv6 solicitation) while the counters
    // are read: read b's counter first, then vwire's, until both reads agree (at most 2 s).
    let settle = Instant::now();
    let (rx_b, tx_b) = loop {
        let tx_b = b.stat("tx_packets");
        let rx_b = vw.scrape().port("rx_packets", "right");
        if rx_b == tx_b || settle.elapsed() > Duration::from_secs(2) {
            break (rx_b, tx_b);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(rx_b > 1000, "right received only {rx_b} frames");
    assert_eq!(
        rx_b, tx_b,
        "every frame b sent, on any queue, reached vwire"
    );
    assert!(vw.logs().contains("queues=[0, 1, 2, 3]"), "{}", vw.logs());
}
