//! A restart that keeps the datapath, with the real vwire binary, network namespaces and
//! `vwire-nse`: ten KERNEL connections carry pings every 10 ms (and one an iperf3 stream) while
//! vwire is killed with SIGKILL and started again. The connections come back from vwire's
//! records: the clients' interfaces keep their index and never lose carrier, the traffic resumes,
//! the outage is measured and printed (`perf/nsm_restart.sh` reports it); afterwards a refresh
//! adopts each connection without rebuilding it and a Close removes everything. Twice: with the
//! connections cross-connected in the kernel (the default: their traffic does not stop at all,
//! not one ping is lost) and through the workers' AF_XDP ports (reopened at start). Another test:
//! a record whose veths are gone is dropped, and veths whose record is lost are collected.
//!
//! Privileged: run as root (bash scripts/test.sh); without root or the tools it fails, never
//! skips.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::nsm::*;
use common::*;
use vwire::transport::{dial, Url, DIAL_TIMEOUT};
use vwire_proto::connection::Connection;
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;
use vwire_proto::networkservice::NetworkServiceRequest;

/// The tests of this file kill and restart vwire while timing traffic: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One client pod: its namespace and its connection.
struct Flow {
    ns: Ns,
    conn: Connection,
    /// The endpoint's address of this connection.
    nse_ip: String,
}

fn nse_ip(conn: &Connection) -> String {
    conn.context
        .as_ref()
        .and_then(|c| c.ip_context.as_ref())
        .and_then(|ip| ip.dst_ip_addrs.first())
        .and_then(|a| a.split('/').next())
        .expect("the endpoint's address in the connection context")
        .to_string()
}

/// The client interface's index and carrier-change count.
fn link_identity(ns: &Ns) -> (String, String) {
    let carrier = ns.exec("cat /sys/class/net/nsm-r/carrier_changes");
    (
        ifindex(ns, "nsm-r"),
        String::from_utf8_lossy(&carrier.stdout).trim().to_string(),
    )
}

/// A refresh of `conn` as its client sends it: the connection as returned, the same preference.
fn refresh(ns: &Ns, conn: &Connection) -> NetworkServiceRequest {
    let mut req = kernel_request(ns, "nsm-r", Duration::from_secs(600));
    req.connection = Some(conn.clone());
    req
}

/// `ping -D` reply times (seconds since the epoch) from its output.
fn reply_times(out: &str) -> Vec<f64> {
    out.lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect()
}

/// The connection's id at vwire: its path segment's (the second), which vwire's records name.
fn vwire_id(c: &Connection) -> String {
    c.path.as_ref().expect("a path").path_segments[1].id.clone()
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn state_files(s: &Setup) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(dirs) = std::fs::read_dir(s.dir.join("state")) else {
        return files;
    };
    for d in dirs.flatten() {
        if let Ok(entries) = std::fs::read_dir(d.path()) {
            files.extend(entries.flatten().map(|e| e.path()));
        }
    }
    files
}

async fn connect(s: &Setup) -> NetworkServiceClient<tonic::transport::Channel> {
    let url = Url::Unix(s.dir.join("fwd.sock"));
    NetworkServiceClient::new(dial(&url, DIAL_TIMEOUT).await.expect("dial vwire"))
}

fn kill_vwire(s: &Setup) {
    // SAFETY: sends a signal to our own child process.
    unsafe { libc::kill(s.vw.pid() as i32, libc::SIGKILL) };
}

/// vwire's configuration with KERNEL↔KERNEL connections cross-connected as `mode` says.
fn config(s: &Setup, mode: &str) -> String {
    fwd_config(&s.dir).replace("[nsm]\n", &format!("[nsm]\nkernel_xconnect = \"{mode}\"\n"))
}

/// The default: the connections are cross-connected in the kernel, whose traffic does not
/// depend on vwire's process at all: not one ping is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_vwire_takes_its_connections_back_without_a_link_change() {
    restart_keeps_the_datapath("tcx").await;
}

/// Through the workers: the AF_XDP ports are opened again at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_vwire_reopens_its_afxdp_ports_without_a_link_change() {
    restart_keeps_the_datapath("afxdp").await;
}

async fn restart_keeps_the_datapath(mode: &str) {
    require(&["ip", "ping", "iperf3"]);
    let _one = ONE_AT_A_TIME.lock().await;
    let mut s = setup(&[]);
    s.vw.terminate(Duration::from_secs(10));
    s.vw = Vwire::start(&config(&s, mode));
    let mut client = connect(&s).await;
    let mut flows = Vec::new();
    for i in 0..10 {
        let ns = Ns::new(&format!("r{i}"));
        let conn = client
            .request(kernel_request(&ns, "nsm-r", Duration::from_secs(600)))
            .await
            .unwrap_or_else(|e| panic!("Request {i}: {e}\n{}", s.vw.logs()))
            .into_inner();
        let nse_ip = nse_ip(&conn);
        flows.push(Flow { ns, conn, nse_ip });
    }
    drop(client);
    assert_eq!(state_files(&s).len(), 10, "one record per connection");
    if mode == "tcx" {
        s.vw.wait_log(
            "connection moved into the kernel",
            10,
            Duration::from_secs(20),
        );
    }
    let before: Vec<_> = flows.iter().map(|f| link_identity(&f.ns)).collect();

    // Traffic: a ping every 10 ms on each connection, an iperf3 stream on the first.
    let seconds = 10;
    let iperf_server = Proc(
        Command::new("ip")
            .args(["netns", "exec", &s.nse.0, "iperf3", "-s", "-1", "-B"])
            .arg(&flows[0].nse_ip)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 -s"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let spawn = |ns: &Ns, cmd: String| -> Child {
        Command::new("ip")
            .args(["netns", "exec", &ns.0, "sh", "-c", &cmd])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start traffic")
    };
    let pings: Vec<Child> = flows
        .iter()
        .map(|f| {
            spawn(
                &f.ns,
                format!("ping -D -n -i 0.01 -W 1 -w {seconds} {}", f.nse_ip),
            )
        })
        .collect();
    let iperf = spawn(
        &flows[0].ns,
        format!(
            "timeout 20 iperf3 -c {} -t {} -b 20M -i 0.5 -f m --forceflush",
            flows[0].nse_ip,
            seconds - 1
        ),
    );
    std::thread::sleep(Duration::from_millis(1500));

    // The crash, and the restart.
    let killed_at = now_secs();
    kill_vwire(&s);
    let t0 = Instant::now();
    // Dead once it is a zombie (reaped when the old handle drops) or gone.
    while std::fs::read_to_string(format!("/proc/{}/stat", s.vw.pid())).is_ok_and(|st| {
        st.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    }) {
        assert!(t0.elapsed() < Duration::from_secs(5), "vwire did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
    let restarted_at = now_secs();
    s.vw = Vwire::start(&config(&s, mode));

    let mut gaps = Vec::new();
    let mut resumed = Vec::new();
    let mut lost = Vec::new();
    for (i, p) in pings.into_iter().enumerate() {
        let out = p.wait_with_output().expect("ping");
        let out = String::from_utf8_lossy(&out.stdout).to_string();
        let times = reply_times(&out);
        let last = times.last().copied().unwrap_or(0.0);
        assert!(
            last > restarted_at + 0.5,
            "connection {i}: no reply after the restart (last at {last:.3}, restart at {restarted_at:.3}):\n{}\n{}",
            out.lines().rev().take(5).collect::<Vec<_>>().join("\n"),
            s.vw.logs()
        );
        resumed.push(
            times
                .iter()
                .find(|&&t| t > restarted_at)
                .map_or(f64::NAN, |t| t - restarted_at),
        );
        let gap = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(0.0_f64, f64::max);
        let transmitted = out
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<usize>().ok())
            .expect("ping's summary");
        gaps.push(gap);
        lost.push(transmitted.saturating_sub(times.len()));
    }
    let iperf_out = iperf.wait_with_output().expect("iperf3");
    let iperf_out = String::from_utf8_lossy(&iperf_out.stdout).to_string();
    drop(iperf_server);
    let intervals: Vec<String> = iperf_out
        .lines()
        .filter(|l| l.contains("Mbits/sec") && !l.contains("sender") && !l.contains("receiver"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let at = f.iter().position(|w| *w == "Mbits/sec")?;
            Some(f.get(at - 1)?.to_string())
        })
        .collect();
    let worst = gaps.iter().copied().fold(0.0_f64, f64::max);
    println!(
        "RESTART {mode}: kill-to-restart {:.3} s; first reply after the restart began (s): {}; outage per connection (largest gap between ping replies, s): {}; worst {worst:.3} s; lost pings: {:?}; iperf3 Mbit/s per 0.5 s: {}",
        restarted_at - killed_at,
        resumed.iter().map(|g| format!("{g:.3}")).collect::<Vec<_>>().join(" "),
        gaps.iter().map(|g| format!("{g:.3}")).collect::<Vec<_>>().join(" "),
        lost,
        intervals.join(" ")
    );
    assert!(
        iperf_out.contains("receiver"),
        "iperf3 did not finish across the restart:\n{iperf_out}\n{}",
        s.vw.logs()
    );

    // No link change: same interface, carrier never lost.
    let after: Vec<_> = flows.iter().map(|f| link_identity(&f.ns)).collect();
    assert_eq!(
        before, after,
        "index and carrier_changes of the clients' interfaces"
    );
    let logs = s.vw.logs();
    assert_eq!(
        logs.matches("connection taken back after a restart")
            .count(),
        10,
        "ten connections taken back:\n{logs}"
    );
    let in_kernel = mode == "tcx";
    assert_eq!(
        logs.matches(&format!("in_kernel={in_kernel}")).count(),
        10,
        "taken back {}:\n{logs}",
        if in_kernel {
            "in the kernel"
        } else {
            "through AF_XDP"
        }
    );
    if in_kernel {
        assert!(
            lost.iter().all(|&l| l == 0),
            "in the kernel, the restart loses no ping: {lost:?}"
        );
    }

    // The refreshes adopt them; the Closes remove everything.
    let mut client = connect(&s).await;
    for (i, f) in flows.iter_mut().enumerate() {
        f.conn = client
            .request(refresh(&f.ns, &f.conn))
            .await
            .unwrap_or_else(|e| panic!("refresh {i} after the restart: {e}\n{}", s.vw.logs()))
            .into_inner();
    }
    let logs = s.vw.logs();
    assert_eq!(
        logs.matches("after a restart: adopted").count(),
        10,
        "each refresh adopted its connection:\n{logs}"
    );
    let after_refresh: Vec<_> = flows.iter().map(|f| link_identity(&f.ns)).collect();
    assert_eq!(before, after_refresh, "a refresh changes no link");
    kernel_ping(&s, &flows[9].ns, &flows[9].nse_ip);
    for f in &flows {
        client.close(f.conn.clone()).await.expect("Close");
    }
    nothing_left(&s);
    assert!(
        state_files(&s).is_empty(),
        "records left: {:?}",
        state_files(&s)
    );
    for f in &flows {
        assert!(
            !f.ns.links().contains("nsm-r"),
            "{} keeps its interface",
            f.ns.0
        );
    }
    s.vw.terminate(Duration::from_secs(10));
    assert!(
        !s.dir.join("state").exists(),
        "vwire's state directory outlives a clean shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_without_veths_are_dropped_and_veths_without_records_collected() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut s = setup(&[]);
    let mut client = connect(&s).await;
    let mut conns = Vec::new();
    let spaces = [Ns::new("k0"), Ns::new("k1"), Ns::new("k2")];
    for ns in &spaces {
        conns.push(
            client
                .request(kernel_request(ns, "nsm-r", Duration::from_secs(600)))
                .await
                .unwrap_or_else(|e| panic!("Request: {e}\n{}", s.vw.logs()))
                .into_inner(),
        );
    }
    drop(client);
    kill_vwire(&s);
    std::thread::sleep(Duration::from_millis(300));
    // The records, by the client's host veth each names.
    let field = |text: &str, key: &str| {
        text.split(&format!("\"{key}\":\""))
            .nth(1)
            .and_then(|t| t.split('"').next())
            .unwrap_or_else(|| panic!("no {key} in the record {text}"))
            .to_string()
    };
    let mut records: Vec<(std::path::PathBuf, String)> = Vec::new();
    for c in &conns {
        let found = state_files(&s).into_iter().find_map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (field(&text, "id") == vwire_id(c)).then(|| (p, field(&text, "host")))
        });
        records.push(found.unwrap_or_else(|| panic!("no record of {}", vwire_id(c))));
    }
    assert_eq!(state_files(&s).len(), 3);
    // Connection 0: its veth is gone (its pod went while vwire was down). Connection 1: its
    // record is lost. Connection 2 comes back.
    sh(&format!("ip link del {}", records[0].1));
    std::fs::remove_file(&records[1].0).unwrap();
    let kept = &records[2].1;
    s.vw = Vwire::start(&fwd_config(&s.dir));
    let t0 = Instant::now();
    loop {
        let host = sh("ip -o link show");
        let logs = s.vw.logs();
        if !host.contains(&records[1].1)
            && host.contains(kept.as_str())
            && logs.contains("not taking the connection back: its veths are gone")
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "after the restart: {host}\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !records[0].0.exists(),
        "the record of a connection whose veths are gone is removed"
    );
    assert!(
        records[2].0.exists(),
        "the record of the connection taken back stays"
    );
    assert!(
        !spaces[1].links().contains("nsm-r"),
        "a collected veth's peer goes too"
    );
    assert!(spaces[2].links().contains("nsm-r"), "{}", s.vw.logs());
    let logs = s.vw.logs();
    assert!(
        logs.lines().any(
            |l| l.contains("garbage collection: removing") && l.contains(records[1].1.as_str())
        ),
        "{logs}"
    );
    // The one taken back closes like any other; the others are unknown (nothing to do).
    let mut client = connect(&s).await;
    for c in conns {
        client.close(c).await.expect("Close");
    }
    nothing_left(&s);
    assert!(state_files(&s).is_empty());
}
