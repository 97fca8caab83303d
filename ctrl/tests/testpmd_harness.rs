//! The DPDK testpmd harness (common/testpmd.rs) against itself, so CI proves that the memif peer
//! the memif tests rely on works: testpmd server (rxonly) ← testpmd client (txonly) for 2 s, an
//! exact echo through a macswap server, and a client without a server or a server on a stale
//! socket file failing visibly.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;
use std::thread::sleep;
use std::time::Duration;

use common::testpmd::*;

/// The tests pin busy-polling lcores on both vCPUs: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const READY: Duration = Duration::from_secs(10);

/// A fresh socket directory under /run, removed on drop.
struct SockDir(PathBuf);

impl SockDir {
    fn new(tag: &str) -> Self {
        let dir = PathBuf::from(format!("/run/vwtest-tp-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create socket dir");
        SockDir(dir)
    }

    fn sock(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for SockDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn testpmd_server_rxonly_client_txonly() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_testpmd();
    let dir = SockDir::new("flow");
    let sock = dir.sock("a.sock");

    let mut srv = Testpmd::start(&TestpmdConfig::server(&sock).forward_mode(ForwardMode::RxOnly));
    srv.wait_ready(READY);
    let mut cli = Testpmd::start(&TestpmdConfig::client(&sock).forward_mode(ForwardMode::TxOnly));
    cli.wait_ready(READY);
    srv.wait_link_up(READY);

    sleep(Duration::from_secs(2));
    let live = srv.nic_stats();
    assert!(
        live[0].rx_packets > 0,
        "server saw no packets yet: {live:?}\n{}",
        srv.output()
    );

    // Stop forwarding on both sides before either disconnects (DPDK 22.11 segfaults otherwise).
    let c = cli.stop_forwarding();
    let s = srv.stop_forwarding();
    let c_out = cli.output();
    let s_out = srv.output();
    cli.stop();
    srv.stop();

    let rx = s.port(0).rx_packets;
    let tx = c.port(0).tx_packets;
    eprintln!(
        "testpmd client TX {tx} (dropped {}), server RX {rx}",
        c.port(0).tx_dropped
    );
    assert!(
        rx > 1000,
        "server received only {rx} packets\nserver:\n{s_out}\nclient:\n{c_out}"
    );
    assert!(
        tx >= rx,
        "client sent {tx} < server received {rx}\nserver:\n{s_out}\nclient:\n{c_out}"
    );
}

#[test]
fn testpmd_macswap_server_echoes_exact_bursts() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_testpmd();
    let dir = SockDir::new("echo");
    let sock = dir.sock("a.sock");

    let mut srv = Testpmd::start(&TestpmdConfig::server(&sock).forward_mode(ForwardMode::MacSwap));
    srv.wait_ready(READY);
    let mut ccfg = TestpmdConfig::client(&sock).forward_mode(ForwardMode::RxOnly);
    ccfg.auto_start = false;
    ccfg.txpkts = 128;
    let mut cli = Testpmd::start(&ccfg);
    cli.wait_ready(READY);

    cli.start_tx_first(4); // exactly 4 bursts of 32 frames, then receive only
    sleep(Duration::from_millis(300));
    let c = cli.stop_forwarding();
    let s = srv.stop_forwarding();
    let out = format!("server:\n{}\nclient:\n{}", srv.output(), cli.output());
    cli.stop();
    srv.stop();

    assert_eq!(c.port(0).tx_packets, 128, "{out}");
    assert_eq!(s.port(0).rx_packets, 128, "{out}");
    assert_eq!(s.port(0).tx_packets, 128, "{out}");
    assert_eq!(c.port(0).rx_packets, 128, "{out}");
}

#[test]
fn testpmd_client_without_server_fails_visibly() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_testpmd();
    let dir = SockDir::new("nosrv");
    let mut cli = Testpmd::start(&TestpmdConfig::client(dir.sock("none.sock")));
    let err = cli
        .try_wait_ready(READY)
        .expect_err("a memif client without a server must not become ready");
    assert!(
        err.contains("Fail to start port"),
        "{err}\n{}",
        cli.output()
    );
}

#[test]
fn testpmd_server_on_stale_socket_fails_visibly() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_testpmd();
    let dir = SockDir::new("stale");
    let sock = dir.sock("stale.sock");
    drop(std::os::unix::net::UnixDatagram::bind(&sock).expect("bind stale socket"));
    let mut srv = Testpmd::start(&TestpmdConfig::server(&sock));
    let err = srv
        .try_wait_ready(READY)
        .expect_err("a memif server on a stale socket file must not become ready");
    assert!(
        err.contains("Address already in use"),
        "{err}\n{}",
        srv.output()
    );
}
