//! memif between two vwire processes, one server and one client, each cross-connecting its
//! memif port to an AF_XDP port toward a network namespace: ping and TCP cross both, a killed
//! peer takes only its own port down (counters survive, other ports keep forwarding), and
//! traffic resumes when the peer comes back, without restarting the survivor. Both roles are
//! restarted in turn.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn memif_side(port_if: &str, role: &str, socket: &str, extra: &str) -> String {
    format!(
        "[dataplane]\nworkers = [1]\n\
         [[port]]\nname = \"host\"\ntype = \"afxdp\"\ninterface = \"{port_if}\"\n\
         [[port]]\nname = \"m\"\ntype = \"memif\"\nsocket = \"{socket}\"\nrole = \"{role}\"\nid = 7\n\
         [[xconnect]]\na = \"host\"\nb = \"m\"\n{extra}"
    )
}

/// Pings until one succeeds or `limit` passes.
fn ping_until(h: &Host, dst: &str, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if h.ping(dst, 1, 56) {
            return true;
        }
    }
    false
}

#[test]
fn vwire_to_vwire_over_memif_survives_peer_restarts() {
    require(&["ip", "ping", "iperf3", "sysctl"]);
    let a = Host::new("10.210.0.1", 1);
    let b = Host::new("10.210.0.2", 1);
    // A second, unrelated cross-connect on the server process: it must not notice the memif peer
    // coming and going.
    let c = Host::new("10.211.0.1", 1);
    let d = Host::new("10.211.0.2", 1);
    let dir = temp_file("x", "");
    let socket = dir.with_file_name("m.sock").display().to_string();
    let extra = format!(
        "[[port]]\nname = \"c\"\ntype = \"afxdp\"\ninterface = \"{}\"\n\
         [[port]]\nname = \"d\"\ntype = \"afxdp\"\ninterface = \"{}\"\n\
         [[xconnect]]\na = \"c\"\nb = \"d\"\n",
        c.port_if, d.port_if
    );
    let server_cfg = memif_side(&a.port_if, "server", &socket, &extra);
    let client_cfg = memif_side(&b.port_if, "client", &socket, "");
    let server = Vwire::start(&server_cfg);
    let client = Vwire::start(&client_cfg);

    assert!(
        ping_until(&a, &b.ip, Duration::from_secs(5)),
        "a→b over memif:\n{}\n{}",
        server.logs(),
        client.logs()
    );
    assert!(a.ping(&b.ip, 5, 56), "ping a→b");
    assert!(b.ping(&a.ip, 5, 56), "ping b→a");
    assert!(
        a.ping(&b.ip, 5, 1400),
        "1400-byte ping a→b (more than one memif buffer is not needed: 2048)"
    );
    assert!(
        b.ping(&a.ip, 5, 3000),
        "3000-byte ping b→a, fragmented by the sender"
    );
    let iperf = b.exec("iperf3 -s -D -1 --logfile /dev/null");
    assert!(iperf.status.success());
    std::thread::sleep(Duration::from_millis(300));
    let out = a.exec(&format!("timeout 20 iperf3 -c {} -t 2", b.ip));
    assert!(
        out.status.success(),
        "iperf3 over memif failed:\n{}",
        server.logs()
    );
    let before = server.scrape();
    let m_rx = before.port("rx_packets", "m");
    let m_tx = before.port("tx_packets", "m");
    assert!(
        m_rx > 1000 && m_tx > 1000,
        "memif counters: rx {m_rx} tx {m_tx}"
    );

    // Kill the client mid-traffic (a ping stream runs): the server's memif port goes down, its
    // counters stay, c↔d keeps going.
    let mut stream = std::process::Command::new("ip")
        .args([
            "netns", "exec", &a.ns, "ping", "-q", "-c", "150", "-i", "0.01", &b.ip,
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ping stream");
    std::thread::sleep(Duration::from_millis(500));
    drop(client);
    let _ = stream.wait();
    assert!(!a.ping(&b.ip, 2, 56), "a→b must fail with the peer gone");
    let after = server.scrape();
    assert!(
        after.port("rx_packets", "m") >= m_rx,
        "counters survive a disconnect"
    );
    assert!(
        after.count("vwire_port_drops_total{port=\"m\",reason=\"link_down\"}") > 0,
        "packets toward a down memif port are counted as link_down"
    );
    assert!(
        c.ping(&d.ip, 3, 56),
        "the other cross-connect is unaffected"
    );

    // The client comes back: traffic resumes, the server was not restarted.
    let client = Vwire::start(&client_cfg);
    assert!(
        ping_until(&a, &b.ip, Duration::from_secs(5)),
        "a→b after the client returned:\n{}",
        server.logs()
    );

    // Now the server goes away and comes back: the client re-dials by itself.
    drop(server);
    assert!(!b.ping(&a.ip, 1, 56));
    let server = Vwire::start(&server_cfg);
    assert!(
        ping_until(&b, &a.ip, Duration::from_secs(8)),
        "b→a after the server returned:\n{}\n{}",
        client.logs(),
        server.logs()
    );
    assert!(c.ping(&d.ip, 2, 56));
}
