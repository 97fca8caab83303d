//! memif socket features between two vwire processes: an abstract socket created inside a
//! network namespace (both ends use the namespace, from the root namespace), several interface
//! ids on one socket, and a secret (a wrong one is refused with a reason, a right one connects).
//!
//! Path: host a → vwire S (a ↔ id 0) → vwire C (id 0 ↔ id 1) → vwire S (id 1 ↔ b) → host b.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn abstract_socket_in_a_netns_with_several_ids_and_a_secret() {
    require(&["ip", "ping", "sysctl"]);
    let a = Host::new("10.215.0.1", 1);
    let b = Host::new("10.215.0.2", 1);
    let sock_ns = unique("vwt-sock-");
    sh(&format!("ip netns add {sock_ns}"));
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = run(&format!("ip netns del {}", self.0));
        }
    }
    let _ns = Ns(sock_ns.clone());
    let netns = format!("/var/run/netns/{sock_ns}");
    let socket = format!("@{}", unique("vwire-abs-"));
    let memif = |name: &str, role: &str, id: u32, secret: &str| {
        format!(
            "[[port]]\nname = \"{name}\"\ntype = \"memif\"\nsocket = \"{socket}\"\nnetns = \"{netns}\"\n\
             role = \"{role}\"\nid = {id}\nsecret = \"{secret}\"\n"
        )
    };
    let server = Vwire::start(&format!(
        "[dataplane]\nworkers = [1]\n\
         [[port]]\nname = \"a\"\ntype = \"afxdp\"\ninterface = \"{}\"\n\
         [[port]]\nname = \"b\"\ntype = \"afxdp\"\ninterface = \"{}\"\n{}{}{}\
         [[xconnect]]\na = \"a\"\nb = \"m0\"\n[[xconnect]]\na = \"b\"\nb = \"m1\"\n",
        a.port_if,
        b.port_if,
        memif("m0", "server", 0, "s3cret"),
        memif("m1", "server", 1, ""),
        memif("m2", "server", 2, "other"),
    ));
    // The abstract name exists in the namespace only.
    let in_ns = sh(&format!("ip netns exec {sock_ns} ss -xl"));
    assert!(
        in_ns.contains(&socket[1..]),
        "no abstract socket in the netns:\n{in_ns}"
    );
    assert!(
        !sh("ss -xl").contains(&socket[1..]),
        "the abstract socket leaked into the root netns"
    );

    let client = Vwire::start(&format!(
        "[dataplane]\nworkers = [1]\n{}{}{}[[xconnect]]\na = \"m0\"\nb = \"m1\"\n",
        memif("m0", "client", 0, "s3cret"),
        memif("m1", "client", 1, ""),
        memif("m2", "client", 2, "wrong"),
    ));
    let t0 = Instant::now();
    while !a.ping(&b.ip, 1, 56) {
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "a→b through both ids:\n{}\n{}",
            server.logs(),
            client.logs()
        );
    }
    assert!(b.ping(&a.ip, 3, 1000), "b→a");
    // The wrong secret is refused with a reason, on the client's side too.
    let t0 = Instant::now();
    while !client.logs().contains("incorrect secret") {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no refusal logged:\n{}",
            client.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
