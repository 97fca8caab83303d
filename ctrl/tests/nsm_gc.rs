//! Garbage collection, with the real vwire binary, network namespaces and `vwire-nse`: the veths
//! of a vwire killed with SIGKILL (no Close, no shutdown) whose connection records are lost are
//! removed when vwire starts again,
//! with their peers in the clients' namespaces; every removal is logged and counted; links
//! vwire did not make are untouched, even when they look like vwire's (its name prefixes,
//! another instance's group, a non-veth in its group).
//!
//! Privileged: run as root (bash scripts/test.sh); without root or the tools it fails, never
//! skips.

mod common;

use std::time::{Duration, Instant};

use common::nsm::*;
use common::*;
use vwire::transport::{dial, Url, DIAL_TIMEOUT};
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;

/// The host ends of vwire's connection veths (`vwc…` client side, `vwe…` endpoint side) with
/// their link groups, from `ip -d`.
fn vwire_veths() -> Vec<(String, u32)> {
    sh("ip -d -o link show type veth")
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?.split('@').next()?.to_string();
            let group: u32 = l
                .split(" group ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            (name.starts_with("vwc") || name.starts_with("vwe")).then_some((name, group))
        })
        .collect()
}

fn has_link(name: &str) -> bool {
    run(&format!("ip link show dev {name}")).status.success()
}

/// Links made here, in the host namespace, that vwire must not touch; deleted on drop.
struct Foreign(Vec<&'static str>);
impl Drop for Foreign {
    fn drop(&mut self) {
        for l in &self.0 {
            let _ = run(&format!("ip link del {l}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_vwires_veths_are_removed_at_its_next_start() {
    let mut s = setup(&[]);
    let second = Ns::new("c2");
    let url = Url::Unix(s.dir.join("fwd.sock"));
    let mut client = NetworkServiceClient::new(dial(&url, DIAL_TIMEOUT).await.expect("dial vwire"));
    for ns in [&s.nsc, &second] {
        client
            .request(kernel_request(ns, "nsm-g", Duration::from_secs(600)))
            .await
            .unwrap_or_else(|e| panic!("Request from {}: {e}\n{}", ns.0, s.vw.logs()));
    }
    drop(client);
    let made = vwire_veths();
    assert_eq!(made.len(), 4, "two connections, two veths each: {made:?}");
    let group = made[0].1;
    assert!(
        made.iter().all(|(_, g)| *g == group) && group >> 24 == 0x75,
        "vwire's veths carry its own group: {made:?}"
    );

    // Look-alikes vwire must leave alone: a veth with its prefix in the default group, a veth in
    // another instance's group, and a bridge in its own group.
    let foreign = Foreign(vec!["vwc0foreign0", "vwe0other0", "vwc0bridge"]);
    sh("ip link add vwc0foreign0 type veth peer name vwc0foreign1");
    sh("ip link add vwe0other0 type veth peer name vwe0other1");
    sh(&format!("ip link set vwe0other0 group {}", group ^ 1));
    sh("ip link add vwc0bridge type bridge");
    sh(&format!("ip link set vwc0bridge group {group}"));

    // SIGKILL: nothing is closed, everything stays.
    // SAFETY: sends a signal to our own child process.
    unsafe { libc::kill(s.vw.pid() as i32, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));
    for (name, _) in &made {
        assert!(has_link(name), "{name} went with the killed vwire");
    }
    assert!(s.nsc.links().contains("nsm-g") && second.links().contains("nsm-g"));

    // The next start collects them, once their records are lost (a restart with its records
    // takes them back instead: nsm_restart.rs).
    std::fs::remove_dir_all(s.dir.join("state")).expect("remove vwire's connection records");
    s.vw = Vwire::start(&fwd_config(&s.dir));
    let t0 = Instant::now();
    loop {
        let left: Vec<_> = made.iter().filter(|(n, _)| has_link(n)).collect();
        if left.is_empty() && !s.nsc.links().contains("nsm-g") && !second.links().contains("nsm-g")
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "left after the restart: {left:?}, nsc: {}, second: {}\n{}",
            s.nsc.links(),
            second.links(),
            s.vw.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The count follows the deletion: wait for it (a count that stops short fails below).
    let removed = || s.vw.scrape().get("vwire_gc_removed_total{kind=\"veth\"}");
    while removed() < 4.0 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let logs = s.vw.logs();
    for (name, _) in &made {
        assert!(
            logs.lines()
                .any(|l| l.contains("garbage collection: removing") && l.contains(name.as_str())),
            "no log line for {name}:\n{logs}"
        );
    }
    assert_eq!(removed(), 4.0, "{logs}");
    for l in [
        "vwc0foreign0",
        "vwc0foreign1",
        "vwe0other0",
        "vwe0other1",
        "vwc0bridge",
    ] {
        assert!(has_link(l), "{l} was not vwire's, and it is gone");
    }
    drop(foreign);

    // The restarted vwire serves as usual, and its own connection is not collected.
    let mut client = NetworkServiceClient::new(dial(&url, DIAL_TIMEOUT).await.expect("dial vwire"));
    let conn = client
        .request(kernel_request(&s.nsc, "nsm-g", Duration::from_secs(600)))
        .await
        .unwrap_or_else(|e| panic!("Request after the restart: {e}\n{}", s.vw.logs()))
        .into_inner();
    // vwire-nse never saw the killed connections close, so its addresses moved on: ping the
    // one this connection got.
    let nse_ip = conn
        .context
        .as_ref()
        .and_then(|c| c.ip_context.as_ref())
        .and_then(|ip| ip.dst_ip_addrs.first())
        .and_then(|a| a.split('/').next())
        .expect("the endpoint's address in the connection context")
        .to_string();
    kernel_ping(&s, &s.nsc, &nse_ip);
    client.close(conn).await.expect("Close");
    nothing_left(&s);
    assert_eq!(
        s.vw.scrape().get("vwire_gc_removed_total{kind=\"veth\"}"),
        4.0
    );
}
