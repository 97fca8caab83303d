//! The single-node NSM examples with memif ends, replayed in network namespaces: Kernel2Memif,
//! Memif2Kernel and Memif2Memif, each with an ETHERNET and an IP payload.
//!
//! A memif end is the example workload itself (`vwire-nsc --mechanism memif`, `vwire-nse
//! --mechanism memif`): it answers ARP and ICMP echo on its memif and pings the other end,
//! printing `ping <peer> <received>/<sent>`. vwire is the memif server in the NSC's namespace and
//! the memif client of the NSE's socket. A kernel end is pinged with the kernel's ping. Each end
//! pings the other, with 3000-byte pings too (the connection MTU is 3498, so they are one frame).
//! A refresh changes nothing (no second memif connection), and Close leaves no interface or
//! socket behind in any namespace.

mod common;

use std::time::Duration;

use common::nsm::*;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mech {
    Kernel,
    Memif,
}

const NSE_IP: &str = "172.16.1.100";
const NSC_IP: &str = "172.16.1.101";
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

/// Waits for a memif end's ping line and checks every ping was answered.
fn memif_pinged(out: &Lines, what: &str, peer: &str, s: &Setup) {
    let line = out.wait("ping ", Duration::from_secs(30), what);
    assert_eq!(
        line.split(' ').nth(1),
        Some(peer),
        "{what} pinged the wrong peer: {line}"
    );
    let got = line.split(' ').nth(2).unwrap_or_default();
    assert!(
        got.starts_with(&format!("{PINGS}/")),
        "{what}: {line}\n{}",
        s.vw.logs()
    );
}

fn replay(nsc_mech: Mech, nse_mech: Mech, payload: &str) {
    let mut nse_args = Vec::new();
    if nse_mech == Mech::Memif {
        nse_args = memif_args("3000");
    }
    let s = setup(&nse_args);
    let mut nsc_args = vec!["--payload", payload, "--refresh", "1"];
    if nsc_mech == Mech::Memif {
        nsc_args.extend(memif_args("3000"));
    }
    let mut nsc = start_nsc(&s, &nsc_args);
    assert!(
        nsc.line.trim_end().ends_with(&format!("{NSC_IP} {NSE_IP}")),
        "{}",
        nsc.line
    );
    // The NSC pings the NSE, the NSE pings the NSC.
    match nsc_mech {
        Mech::Kernel => kernel_ping(&s, &s.nsc, NSE_IP),
        Mech::Memif => memif_pinged(&nsc.out, "vwire-nsc", NSE_IP, &s),
    }
    match nse_mech {
        Mech::Kernel => kernel_ping(&s, &s.nse, NSC_IP),
        Mech::Memif => memif_pinged(&s.nse_out, "vwire-nse", NSC_IP, &s),
    }
    // A memif toward the client lives on an abstract socket in the client's namespace.
    if nsc_mech == Mech::Memif {
        assert!(
            s.nsc.abstract_sockets().contains("@/run/vwire/memif/"),
            "{}",
            s.nsc.abstract_sockets()
        );
    }
    // IP payload: the kernel end resolved its peer without ARP.
    if payload == "IP" {
        for (mech, ns) in [(nsc_mech, &s.nsc), (nse_mech, &s.nse)] {
            if mech == Mech::Kernel {
                let neigh = common::sh(&format!("ip -n {} neigh show", ns.0));
                assert!(
                    !neigh.is_empty() && neigh.lines().all(|l| l.contains("PERMANENT")),
                    "neighbours in {}: {neigh}",
                    ns.0
                );
            }
        }
    }
    // Refreshes every second change nothing: one wiring, one memif connection per memif side.
    std::thread::sleep(Duration::from_millis(2500));
    let logs = s.vw.logs();
    assert_eq!(logs.matches("connection wired").count(), 1, "{logs}");
    let memif_sides = [nsc_mech, nse_mech]
        .iter()
        .filter(|&&m| m == Mech::Memif)
        .count();
    assert_eq!(
        logs.matches("memif connected").count(),
        memif_sides,
        "{logs}"
    );
    if nsc_mech == Mech::Kernel {
        kernel_ping(&s, &s.nsc, NSE_IP);
    }
    if nse_mech == Mech::Kernel {
        kernel_ping(&s, &s.nse, NSC_IP);
    }
    nsc.proc.terminate();
    nothing_left(&s);
}

#[test]
fn kernel2memif_ethernet() {
    replay(Mech::Kernel, Mech::Memif, "ETHERNET");
}

#[test]
fn kernel2memif_ip() {
    replay(Mech::Kernel, Mech::Memif, "IP");
}

#[test]
fn memif2kernel_ethernet() {
    replay(Mech::Memif, Mech::Kernel, "ETHERNET");
}

#[test]
fn memif2kernel_ip() {
    replay(Mech::Memif, Mech::Kernel, "IP");
}

#[test]
fn memif2memif_ethernet() {
    replay(Mech::Memif, Mech::Memif, "ETHERNET");
}

#[test]
fn memif2memif_ip() {
    replay(Mech::Memif, Mech::Memif, "IP");
}
