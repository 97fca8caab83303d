//! Heal inputs, replayed with the real vwire binary, network namespaces and `vwire-nse`: what
//! vwire tells its MonitorConnections subscribers when the next hop dies (passthrough monitoring,
//! `monitor_downstream`), and how it closes a connection whose client's namespace is deleted
//! (`nsmonitor`) without leaving anything behind.
//!
//! Privileged: run as root (bash scripts/test.sh); without root or the tools they fail, never
//! skip.

mod common;

use std::time::{Duration, Instant};

use common::nsm::*;
use common::*;
use vwire::transport::{dial, Url, DIAL_TIMEOUT};
use vwire_proto::connection::monitor_connection_client::MonitorConnectionClient;
use vwire_proto::connection::{
    Connection, ConnectionEvent, ConnectionEventType, MonitorScopeSelector, State,
};
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;
use vwire_proto::networkservice::NetworkServiceRequest;

type Events = tonic::codec::Streaming<ConnectionEvent>;

/// A KERNEL request from the client namespace `ns` (10-minute token: no timeout interferes).
fn request(ns: &Ns) -> NetworkServiceRequest {
    kernel_request(ns, "nsm-h", Duration::from_secs(600))
}

/// vwire's own id of `conn` (its path segment's), which keys its monitor events.
fn fwd_id(conn: &Connection) -> String {
    let seg = &conn.path.as_ref().expect("a path").path_segments[1];
    assert_eq!(seg.name, "fwd");
    seg.id.clone()
}

async fn channel(s: &Setup) -> tonic::transport::Channel {
    let url = Url::Unix(s.dir.join("fwd.sock"));
    dial(&url, DIAL_TIMEOUT).await.expect("connect to vwire")
}

/// Subscribes to all of vwire's connections; returns the stream and its initial state.
async fn subscribe(ch: &tonic::transport::Channel) -> (Events, ConnectionEvent) {
    let mut events = MonitorConnectionClient::new(ch.clone())
        .monitor_connections(MonitorScopeSelector::default())
        .await
        .expect("MonitorConnections")
        .into_inner();
    let first = events.message().await.unwrap().expect("an initial event");
    assert_eq!(first.r#type(), ConnectionEventType::InitialStateTransfer);
    (events, first)
}

/// The next event within `limit`; fails with vwire's logs otherwise.
async fn next_event(
    s: &Setup,
    events: &mut Events,
    limit: Duration,
    what: &str,
) -> ConnectionEvent {
    match tokio::time::timeout(limit, events.message()).await {
        Ok(Ok(Some(e))) => e,
        Ok(other) => panic!(
            "{what}: the monitor stream ended: {other:?}\n{}",
            s.vw.logs()
        ),
        Err(_) => panic!("{what}: no event within {limit:?}\n{}", s.vw.logs()),
    }
}

/// The host-side links whose peer is in one of the namespaces `nss` (this test's veths only:
/// the tests of this file run in parallel, so the host's other `vw*` links are not ours).
fn host_links_into(nss: &[&str]) -> Vec<String> {
    sh("ip -o link show")
        .lines()
        .filter(|l| {
            let words: Vec<&str> = l.split([' ', '\\']).collect();
            words
                .windows(2)
                .any(|w| w[0] == "link-netns" && nss.contains(&w[1]))
        })
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// Waits (at most 5 s) until none of the host links `names` exists and `nse` holds no `nse-`
/// link; fails naming what is left.
fn links_gone(s: &Setup, names: &[String]) {
    let t0 = Instant::now();
    loop {
        let host = sh("ip -o link show");
        let left: Vec<&String> = names
            .iter()
            .filter(|n| host.contains(&format!(": {n}@")) || host.contains(&format!(": {n}:")))
            .collect();
        if left.is_empty() && !s.nse.links().contains("nse-") {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "left behind: host {left:?}, NSE namespace: {}\n{}",
            s.nse.links(),
            s.vw.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .expect("vwire's /proc/<pid>/fd")
}

/// Waits (at most 2 s) until vwire's fd count is `want`; fails with both counts.
fn fds_back_to(s: &Setup, want: usize) {
    let t0 = Instant::now();
    loop {
        let now = fd_count(s.vw.pid());
        if now == want {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "vwire holds {now} fds, {want} before the connection\n{}",
            s.vw.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (a) The NSE process dies: the subscriber of vwire's MonitorConnections sees the connection
/// DOWN (an UPDATE in state DOWN) within 1 s, relayed from the broken stream of the NSE's
/// MonitorConnections. A Close afterwards still removes everything.
#[tokio::test(flavor = "current_thread")]
async fn next_hop_death_is_reported_down_within_a_second() {
    let mut s = setup(&[]);
    let ch = channel(&s).await;
    let (mut events, _) = subscribe(&ch).await;
    let conn = NetworkServiceClient::new(ch.clone())
        .request(request(&s.nsc))
        .await
        .expect("request")
        .into_inner();
    let up = next_event(&s, &mut events, Duration::from_secs(2), "the request").await;
    assert_eq!(up.r#type(), ConnectionEventType::Update);
    assert_eq!(up.connections[&fwd_id(&conn)].state(), State::Up);
    // Give the subscription to the NSE time to be established (it starts after the request).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.nse.links().contains("nse-"), "{}", s.nse.links());
    let veths = host_links_into(&[&s.nsc.0, &s.nse.0]);
    assert_eq!(veths.len(), 2, "the connection's host veths: {veths:?}");

    // A refresh: vwire's own UPDATE, and the NSE's UPDATE for it relayed (in vwire's view, UP).
    let mut refresh = request(&s.nsc);
    refresh.connection = Some(conn.clone());
    NetworkServiceClient::new(ch.clone())
        .request(refresh)
        .await
        .expect("refresh");
    for n in 0..2 {
        let e = next_event(
            &s,
            &mut events,
            Duration::from_secs(1),
            &format!("the refresh, event {n}"),
        )
        .await;
        assert_eq!(e.r#type(), ConnectionEventType::Update, "event {n}: {e:?}");
        let c = &e.connections[&fwd_id(&conn)];
        assert_eq!(
            (c.id.as_str(), c.state()),
            (fwd_id(&conn).as_str(), State::Up)
        );
        assert_eq!(
            c.path.as_ref().map(|p| p.index),
            Some(1),
            "vwire's path index"
        );
    }
    if let Ok(Ok(Some(e))) =
        tokio::time::timeout(Duration::from_millis(300), events.message()).await
    {
        panic!("one refresh, a third event: {e:?}");
    }

    let t0 = Instant::now();
    let _ = s.nse_proc.0.kill(); // SIGKILL: no Close, no goodbye
    let _ = s.nse_proc.0.wait();
    let down = next_event(&s, &mut events, Duration::from_secs(1), "the NSE's death").await;
    let took = t0.elapsed();
    assert_eq!(down.r#type(), ConnectionEventType::Update, "{down:?}");
    let c = &down.connections[&fwd_id(&conn)];
    assert_eq!(c.state(), State::Down, "{c:?}");
    assert_eq!(c.id, fwd_id(&conn), "in vwire's view");
    println!("DOWN reported {took:?} after the NSE was killed");
    assert!(
        s.vw.logs().contains("the connection is DOWN"),
        "logged:\n{}",
        s.vw.logs()
    );

    // The NSC's heal would now Close (or reselect): the Close removes vwire's side even though
    // the NSE is gone.
    NetworkServiceClient::new(ch.clone())
        .close(conn.clone())
        .await
        .expect("close");
    let gone = next_event(&s, &mut events, Duration::from_secs(2), "the close").await;
    assert_eq!(gone.r#type(), ConnectionEventType::Delete);
    links_gone(&s, &veths);
}

/// (b) The client's namespace is deleted (no process in it): vwire closes the connection
/// itself within ~1–2 s. Nothing is left: no veth on the host or in the NSE's namespace, the
/// connection gone from MonitorConnections (a DELETE, and a new subscriber's initial state is
/// empty), and vwire's fd count back to its value before the connection.
#[tokio::test(flavor = "current_thread")]
async fn deleted_client_namespace_closes_the_connection() {
    let s = setup(&[]);
    let ch = channel(&s).await;
    let mut nsc = NetworkServiceClient::new(ch.clone());
    // One cycle first, to open what vwire opens lazily (the NSE's channel, netlink, workers).
    let warm = nsc
        .request(request(&s.nsc))
        .await
        .expect("request")
        .into_inner();
    let warm_veths = host_links_into(&[&s.nsc.0, &s.nse.0]);
    nsc.close(warm).await.expect("close");
    links_gone(&s, &warm_veths);
    let fds = fd_count(s.vw.pid());

    let client_ns = Ns::new("h");
    let (mut events, _) = subscribe(&ch).await;
    let conn = nsc
        .request(request(&client_ns))
        .await
        .expect("request")
        .into_inner();
    let up = next_event(&s, &mut events, Duration::from_secs(2), "the request").await;
    assert_eq!(up.r#type(), ConnectionEventType::Update);
    assert!(client_ns.links().contains("nsm-h"), "{}", client_ns.links());
    let veths = host_links_into(&[&client_ns.0, &s.nse.0]);
    assert_eq!(veths.len(), 2, "the connection's host veths: {veths:?}");

    let t0 = Instant::now();
    sh(&format!("ip netns del {}", client_ns.0));
    let gone = next_event(
        &s,
        &mut events,
        Duration::from_secs(2),
        "the namespace's deletion",
    )
    .await;
    let took = t0.elapsed();
    assert_eq!(gone.r#type(), ConnectionEventType::Delete, "{gone:?}");
    assert!(gone.connections.contains_key(&fwd_id(&conn)), "{gone:?}");
    println!("closed {took:?} after the client's namespace was deleted");
    assert!(
        s.vw.logs().contains("is gone: closing the connection"),
        "logged:\n{}",
        s.vw.logs()
    );

    // Nothing left: interfaces (host, NSE namespace), monitor, fds.
    links_gone(&s, &veths);
    let (_, initial) = subscribe(&ch).await;
    assert!(
        initial.connections.is_empty(),
        "still monitored: {:?}",
        initial.connections.keys()
    );
    fds_back_to(&s, fds);
}

/// A namespace that loses its name but still has a process is alive: the connection stays.
/// Once its last process exits, the namespace is gone and the connection is closed.
#[tokio::test(flavor = "current_thread")]
async fn a_namespace_with_a_process_stays_connected_until_the_process_exits() {
    let s = setup(&[]);
    let ch = channel(&s).await;
    let client_ns = Ns::new("p");
    let mut sleeper = Proc(
        std::process::Command::new("ip")
            .args(["netns", "exec", &client_ns.0, "sleep", "60"])
            .spawn()
            .expect("start sleep in the namespace"),
    );
    std::thread::sleep(Duration::from_millis(100)); // ip netns exec has entered it
    let (mut events, _) = subscribe(&ch).await;
    let conn = NetworkServiceClient::new(ch.clone())
        .request(request(&client_ns))
        .await
        .expect("request")
        .into_inner();
    let up = next_event(&s, &mut events, Duration::from_secs(2), "the request").await;
    assert_eq!(up.r#type(), ConnectionEventType::Update);
    let veths = host_links_into(&[&client_ns.0, &s.nse.0]);
    assert_eq!(veths.len(), 2, "the connection's host veths: {veths:?}");

    sh(&format!("ip netns del {}", client_ns.0));
    if let Ok(Ok(Some(e))) =
        tokio::time::timeout(Duration::from_millis(1000), events.message()).await
    {
        panic!(
            "the namespace still has a process, yet: {e:?}\n{}",
            s.vw.logs()
        );
    }
    let t0 = Instant::now();
    let _ = sleeper.0.kill();
    let _ = sleeper.0.wait();
    let gone = next_event(
        &s,
        &mut events,
        Duration::from_secs(2),
        "the last process's exit",
    )
    .await;
    assert_eq!(gone.r#type(), ConnectionEventType::Delete, "{gone:?}");
    assert!(gone.connections.contains_key(&fwd_id(&conn)));
    println!("closed {:?} after the last process left", t0.elapsed());
    links_gone(&s, &veths);
}
