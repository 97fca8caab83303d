//! The single-node Kernel2Kernel example replayed in network namespaces: an NSC (vwire-nsc) in
//! one namespace asks vwire for the icmp-responder service, vwire asks the NSE (vwire-nse) in
//! another, builds a veth into each namespace, applies the IP context, and cross-connects the two
//! over AF_XDP. The NSC and the NSE ping each other (also 3000-byte pings); refreshes change
//! nothing (no link flap); Close, a token that expires without refresh, and a vwire shutdown
//! each leave no interface behind in any namespace; Request/Close cycles leak no fds.

mod common;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use vwire_proto::connection::monitor_connection_client::MonitorConnectionClient;
use vwire_proto::connection::{
    Connection, ConnectionEventType, Mechanism, MonitorScopeSelector, Path, PathSegment,
};
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;
use vwire_proto::networkservice::NetworkServiceRequest;

struct Ns(String);
impl Ns {
    fn new(tag: &str) -> Self {
        let n = unique(&format!("vwk-{tag}-"));
        sh(&format!("ip netns add {n}"));
        sh(&format!("ip -n {n} link set lo up"));
        Ns(n)
    }
    fn exec(&self, cmd: &str) -> std::process::Output {
        run(&format!("ip netns exec {} {cmd}", self.0))
    }
    fn links(&self) -> String {
        sh(&format!("ip -n {} -o link show", self.0))
    }
}
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = run(&format!("ip netns pids {} | xargs -r kill -9", self.0));
        let _ = run(&format!("ip netns del {}", self.0));
    }
}

/// A child process killed on drop.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn example(name: &str) -> PathBuf {
    // The examples are built into the same target directory as the vwire binary.
    PathBuf::from(vwire_bin()).with_file_name(name)
}

struct Setup {
    nsc: Ns,
    nse: Ns,
    dir: PathBuf,
    vw: Vwire,
    _nse_proc: Proc,
}

fn setup() -> Setup {
    require(&["ip", "ping"]);
    assert!(
        example("vwire-nse").exists(),
        "build the examples first: cargo build -p vwire-examples"
    );
    let nsc = Ns::new("c");
    let nse = Ns::new("e");
    let dir = temp_file("x", "").with_file_name("");
    let vw = Vwire::start(&format!(
        "[dataplane]\nworkers = [1]\n[nsm]\nname = \"fwd\"\nlisten_on = \"unix://{d}/fwd.sock\"\n\
         [[endpoint]]\nname = \"nse-1\"\nurl = \"unix://{d}/nse.sock\"\nservice = \"icmp-responder\"\n",
        d = dir.display()
    ));
    let nse_proc = Command::new("ip")
        .args(["netns", "exec", &nse.0])
        .arg(example("vwire-nse"))
        .args([
            "--listen",
            &format!("unix://{}/nse.sock", dir.display()),
            "--cidr",
            "172.16.1.100/31",
        ])
        .stderr(Stdio::null())
        .spawn()
        .expect("start vwire-nse");
    let t0 = Instant::now();
    while !dir.join("nse.sock").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "vwire-nse did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Setup {
        nsc,
        nse,
        dir,
        vw,
        _nse_proc: Proc(nse_proc),
    }
}

/// Starts vwire-nsc in the NSC namespace and waits for its `connected` line.
fn start_nsc(s: &Setup, extra: &[&str]) -> (Proc, String) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &s.nsc.0])
        .arg(example("vwire-nsc"))
        .args(["--connect", &format!("unix://{}/fwd.sock", s.dir.display())])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vwire-nsc");
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("read");
    assert!(
        line.starts_with("connected "),
        "vwire-nsc: {line:?}\n{}",
        s.vw.logs()
    );
    (Proc(child), line)
}

fn ifindex(ns: &Ns, name: &str) -> String {
    let out = sh(&format!("ip -n {} -o link show dev {name}", ns.0));
    out.split(':').next().unwrap_or_default().to_string()
}

fn nothing_left(s: &Setup) {
    let t0 = Instant::now();
    loop {
        let host = sh("ip -o link show");
        let clean = !host.contains(" vwc")
            && !host.contains(" vwe")
            && !s.nsc.links().contains("nsm-")
            && !s.nse.links().contains("nse-");
        if clean {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "left behind:\nhost: {host}\nnsc: {}\nnse: {}",
            s.nsc.links(),
            s.nse.links()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kernel2kernel_ping_refresh_close() {
    let s = setup();
    let (mut nsc, line) = start_nsc(&s, &["--refresh", "1"]);
    assert!(
        line.trim_end().ends_with("172.16.1.101 172.16.1.100"),
        "{line}"
    );
    for (ns, dst) in [(&s.nsc, "172.16.1.100"), (&s.nse, "172.16.1.101")] {
        for size in [56, 3000] {
            let out = ns.exec(&format!("ping -c 3 -i 0.2 -W 2 -s {size} {dst}"));
            assert!(
                out.status.success(),
                "ping -s {size} {dst}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                s.vw.logs()
            );
        }
    }
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
    // SAFETY: signals our own child process.
    unsafe { libc::kill(nsc.0.id() as i32, libc::SIGTERM) };
    let _ = nsc.0.wait();
    nothing_left(&s);
}

fn request(s: &Setup, expires_in: Duration) -> NetworkServiceRequest {
    let id = format!("test-{}", unique(""));
    let at = SystemTime::now() + expires_in;
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let expires = prost_types::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    };
    NetworkServiceRequest {
        connection: Some(Connection {
            id: id.clone(),
            network_service: "icmp-responder".into(),
            path: Some(Path {
                index: 0,
                path_segments: vec![PathSegment {
                    name: "test-nsc".into(),
                    id,
                    expires: Some(expires),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        mechanism_preferences: vec![Mechanism {
            cls: "LOCAL".into(),
            r#type: "KERNEL".into(),
            parameters: [
                (
                    "inodeURL".to_string(),
                    format!("file:///var/run/netns/{}", s.nsc.0),
                ),
                ("name".to_string(), "nsm-t".to_string()),
            ]
            .into(),
        }],
    }
}

async fn channel(s: &Setup) -> tonic::transport::Channel {
    let url = vwire::grpc::ListenOn::Unix(s.dir.join("fwd.sock"));
    vwire::grpc::channel(&url).await.expect("connect to vwire")
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "current_thread")]
async fn timeout_cycles_and_shutdown_leave_nothing() {
    let s = setup();
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
    const CYCLES: usize = 100;
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
