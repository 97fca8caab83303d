//! The two-node topology of the REMOTE mechanism tests (VXLAN, SRv6).
//!
//! ```text
//!   NSC pod ──veth── node A ═══════ up0 ── up0 ═══════ node B ──veth── NSE pod
//!   (vwire-nsc)      vwire A     10.97.0.1/24  10.97.0.2/24     vwire B      (vwire-nse)
//!                                fd97::1/64    fd97::2/64
//! ```
//!
//! - [`Nodes`]: namespaces A and B joined by a veth wire named [`UPLINK`] on both sides (MTU
//!   1500, addresses without DAD, default routes via the peer for both families).
//! - [`Fwd`] and [`NodeVwire`]: a vwire configuration and a vwire process running inside a node
//!   namespace (`ip netns exec <node> vwire run`), its /metrics served on the node's own
//!   loopback and scraped from a thread that entered the node ([`in_netns`]).
//! - Pods: the NSC and NSE namespaces are plain [`Ns`]es. vwire creates the connection's
//!   interfaces in its node and moves one end into the pod, so the host-side veths (`vw*`) live
//!   in the nodes. [`start_nse`] runs `vwire-nse` in a pod on a unix socket and [`start_nsc`]
//!   runs `vwire-nsc` in a pod against vwire A's unix socket; both socket files are in a temp
//!   dir, which every namespace sees.
//! - [`Remote`]: the whole picture (nodes, pods, vwire A and B, vwire-nse), and the checks that
//!   a Close left nothing behind.
//!
//! Every process is ended and every namespace deleted on drop (namespaces delete their links), so
//! a failing test cleans up too. Names are unique per test ([`super::unique`] through [`Ns::new`]).
//! Each process's output goes to `<dir>/<name>.log`; [`logs_in`] collects them and [`with_logs`]
//! appends them to any panic of a test body.

use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::nsm::{example, Lines, Ns, Nsc, Proc};
use super::{require, run, sh, temp_file, try_scrape, vwire_bin, Metrics};

/// The underlay interface's name in both nodes.
pub const UPLINK: &str = "up0";
/// The underlay MTU.
pub const UNDERLAY_MTU: u32 = 1500;
/// Node A's underlay IPv4 address.
pub const A_V4: &str = "10.97.0.1";
/// Node B's underlay IPv4 address.
pub const B_V4: &str = "10.97.0.2";
/// Node A's underlay IPv6 address.
pub const A_V6: &str = "fd97::1";
/// Node B's underlay IPv6 address.
pub const B_V6: &str = "fd97::2";
/// Where vwire B serves the NSM API, inside node B.
pub const B_GRPC: &str = "10.97.0.2:5002";
/// vwire A's SRv6 locator.
pub const LOCATOR_A: &str = "fc00:a::/48";
/// vwire B's SRv6 locator.
pub const LOCATOR_B: &str = "fc00:b::/48";
/// The VXLAN port.
pub const VXLAN_PORT: u16 = 4789;
/// The NSE's address (vwire-nse's IPAM gives the endpoint the first of the pair).
pub const NSE_IP: &str = "172.16.1.100";
/// The NSC's address.
pub const NSC_IP: &str = "172.16.1.101";
/// Where each vwire serves /metrics, on its node's loopback.
pub const METRICS_LISTEN: &str = "127.0.0.1:9464";

/// MTU a VXLAN connection loses over an IPv4 underlay (the contract's clamp).
pub const VXLAN_V4_OVERHEAD: u32 = 54;
/// MTU a VXLAN connection loses over an IPv6 underlay.
pub const VXLAN_V6_OVERHEAD: u32 = 74;
/// MTU an SRv6 connection with an ETHERNET payload loses (H.Encaps.L2).
pub const SRV6_ETHERNET_OVERHEAD: u32 = 82;
/// MTU an SRv6 connection with an IP payload loses (H.Encaps).
pub const SRV6_IP_OVERHEAD: u32 = 64;

// ---------------------------------------------------------------------------------------------
// Running code inside a namespace

/// Runs `f` on a fresh thread that entered network namespace `ns` (a name under
/// /var/run/netns). Sockets created there stay in that namespace wherever they are used later.
/// A panic in `f` is passed on.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            enter_netns(ns);
            f()
        });
        match h.join() {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e),
        }
    })
}

fn enter_netns(ns: &str) {
    let path = format!("/var/run/netns/{ns}");
    let f = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
    // SAFETY: setns with a valid namespace fd; CLONE_NEWNET changes only the calling thread,
    // which is the helper thread of `in_netns`.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

/// Runs the future that `make` builds to completion on a current-thread tokio runtime inside
/// network namespace `ns` (e.g. a gRPC call from a node).
pub fn block_on_in<F: Future>(ns: &str, make: impl FnOnce() -> F + Send) -> F::Output
where
    F::Output: Send,
{
    in_netns(ns, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(make())
    })
}

// ---------------------------------------------------------------------------------------------
// Logs

/// The process names whose `<dir>/<name>.log` [`logs_in`] collects.
const LOG_NAMES: &[&str] = &["vwire-A", "vwire-B", "vwire-nse", "vwire-nsc"];

/// Every log in `dir` ([`LOG_NAMES`]), each under a header.
pub fn logs_in(dir: &Path) -> String {
    let mut out = String::new();
    for name in LOG_NAMES {
        let p = dir.join(format!("{name}.log"));
        if let Ok(text) = std::fs::read_to_string(&p) {
            out.push_str(&format!("\n----- {name} ({}) -----\n{text}", p.display()));
        }
    }
    out
}

/// Runs `f`; if it panics, panics again with the message followed by `logs()`, so that every
/// failed assertion inside shows the processes' logs.
pub fn with_logs<T>(logs: impl Fn() -> String, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "(a panic without a message)".to_string());
            panic!("{msg}\n===== logs ====={}", logs());
        }
    }
}

fn log_file(dir: &Path, name: &str) -> (PathBuf, File) {
    let p = dir.join(format!("{name}.log"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", p.display()));
    (p, f)
}

/// A fresh directory for a test's sockets, configs and logs.
pub fn test_dir() -> PathBuf {
    temp_file("x", "")
        .parent()
        .expect("temp file in a dir")
        .to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// Namespaces and links

/// The names of the links in `ns`.
pub fn link_names(ns: &Ns) -> Vec<String> {
    sh(&format!("ip -n {} -o link show", ns.0))
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// The first link in `ns` whose name starts with `prefix`; panics listing the links otherwise.
pub fn link_with_prefix(ns: &Ns, prefix: &str) -> String {
    let names = link_names(ns);
    names
        .iter()
        .find(|n| n.starts_with(prefix))
        .cloned()
        .unwrap_or_else(|| panic!("no {prefix}* link in {}: {names:?}", ns.0))
}

fn link_field(ns: &Ns, dev: &str, key: &str) -> String {
    let out = sh(&format!("ip -n {} -o link show dev {dev}", ns.0));
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w == key {
            if let Some(v) = words.next() {
                return v.to_string();
            }
        }
    }
    panic!("no {key} in `ip link show dev {dev}` in {}: {out}", ns.0)
}

/// The MTU of `dev` in `ns`.
pub fn link_mtu(ns: &Ns, dev: &str) -> u32 {
    let v = link_field(ns, dev, "mtu");
    v.parse()
        .unwrap_or_else(|_| panic!("mtu of {dev} in {}: {v:?}", ns.0))
}

/// The MAC address of `dev` in `ns` (lower case, colon-separated).
pub fn link_mac(ns: &Ns, dev: &str) -> String {
    link_field(ns, dev, "link/ether").to_ascii_lowercase()
}

/// True if `dev` in `ns` has an XDP program attached (any mode).
pub fn xdp_attached_in(ns: &Ns, dev: &str) -> bool {
    sh(&format!("ip -n {} -d link show dev {dev}", ns.0)).contains("prog/xdp")
}

/// Two node namespaces, A and B, joined by a veth wire named [`UPLINK`] on both sides.
pub struct Nodes {
    /// Node A (10.97.0.1, fd97::1).
    pub a: Ns,
    /// Node B (10.97.0.2, fd97::2).
    pub b: Ns,
}

impl Nodes {
    /// Creates both nodes: the wire (MTU 1500) with 10.97.0.x/24 and fd97::x/64 (no DAD) on each
    /// end, and default routes via the peer for IPv4 and IPv6. IP forwarding stays off (see
    /// [`Nodes::router`]).
    pub fn new() -> Self {
        require(&["ip", "sysctl"]);
        let nodes = Self {
            a: Ns::new("na"),
            b: Ns::new("nb"),
        };
        for ns in [&nodes.a, &nodes.b] {
            sh(&format!(
                "ip netns exec {} sysctl -qw net.ipv6.conf.all.accept_dad=0 \
                 net.ipv6.conf.default.accept_dad=0",
                ns.0
            ));
        }
        sh(&format!(
            "ip -n {} link add {UPLINK} mtu {UNDERLAY_MTU} type veth peer name {UPLINK} \
             mtu {UNDERLAY_MTU} netns {}",
            nodes.a.0, nodes.b.0
        ));
        for (ns, v4, v6, peer4, peer6) in [
            (&nodes.a, A_V4, A_V6, B_V4, B_V6),
            (&nodes.b, B_V4, B_V6, A_V4, A_V6),
        ] {
            let n = &ns.0;
            sh(&format!("ip -n {n} addr add {v4}/24 dev {UPLINK}"));
            sh(&format!("ip -n {n} addr add {v6}/64 dev {UPLINK} nodad"));
            sh(&format!("ip -n {n} link set {UPLINK} up"));
            sh(&format!("ip -n {n} route add default via {peer4}"));
            sh(&format!("ip -n {n} -6 route add default via {peer6}"));
        }
        nodes
    }

    /// Makes `node` a router for the kernel-peer tests: IPv4 and IPv6 forwarding, SRv6 enabled,
    /// no reverse-path filtering.
    pub fn router(node: &Ns) {
        sh(&format!(
            "ip netns exec {} sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
             net.ipv6.conf.all.seg6_enabled=1 net.ipv6.conf.{UPLINK}.seg6_enabled=1 \
             net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0",
            node.0
        ));
    }
}

impl Default for Nodes {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------------------------
// vwire in a node

/// A vwire configuration for a node (the keys of the REMOTE mechanisms contract).
#[derive(Clone, Debug)]
pub struct Fwd {
    /// `[nsm] name`.
    pub name: String,
    /// `[nsm] listen_on`.
    pub listen_on: String,
    /// The one worker's CPU.
    pub worker: usize,
    /// `[nsm] tunnel_ip`.
    pub tunnel_ip: Option<String>,
    /// `[nsm] vxlan_port`.
    pub vxlan_port: Option<u16>,
    /// `[nsm] mechanism_priority`, e.g. `"SRV6,VXLAN"`.
    pub mechanism_priority: Option<String>,
    /// `[srv6] locator`; none: no `[srv6]` section.
    pub locator: Option<String>,
    /// `[srv6] host_ip`.
    pub host_ip: Option<String>,
    /// The url of `[[endpoint]]` `nse-1` for service `icmp-responder`; none: no endpoint.
    pub endpoint: Option<String>,
}

impl Fwd {
    /// vwire A: serves the NSC on `unix://<dir>/fwd-a.sock`, forwards to vwire B at
    /// `tcp://10.97.0.2:5002`; tunnel IP 10.97.0.1, `vxlan_port = 4789` written out, SRv6 locator
    /// fc00:a::/48 with the default host IP (the uplink's fd97::1); worker on CPU 1.
    pub fn a(dir: &Path) -> Self {
        Self {
            name: "fwd-a".into(),
            listen_on: format!("unix://{}", dir.join("fwd-a.sock").display()),
            worker: 1,
            tunnel_ip: Some(A_V4.into()),
            vxlan_port: Some(VXLAN_PORT),
            mechanism_priority: None,
            locator: Some(LOCATOR_A.into()),
            host_ip: None,
            endpoint: Some(format!("tcp://{B_GRPC}")),
        }
    }

    /// vwire B: serves vwire A on `tcp://10.97.0.2:5002`, forwards to vwire-nse at
    /// `unix://<dir>/nse.sock`; tunnel IP 10.97.0.2, the default VXLAN port, SRv6 locator
    /// fc00:b::/48 with `host_ip = "fd97::2"` written out; worker on CPU 0.
    pub fn b(dir: &Path) -> Self {
        Self {
            name: "fwd-b".into(),
            listen_on: format!("tcp://{B_GRPC}"),
            worker: 0,
            tunnel_ip: Some(B_V4.into()),
            vxlan_port: None,
            mechanism_priority: None,
            locator: Some(LOCATOR_B.into()),
            host_ip: Some(B_V6.into()),
            endpoint: Some(format!("unix://{}", dir.join("nse.sock").display())),
        }
    }

    /// The TOML text (without `[metrics]`, which [`NodeVwire::start`] adds).
    pub fn toml(&self) -> String {
        let mut t = format!(
            "[dataplane]\nworkers = [{}]\n\n[nsm]\nname = \"{}\"\nlisten_on = \"{}\"\ninsecure = true\n",
            self.worker, self.name, self.listen_on
        );
        if let Some(ip) = &self.tunnel_ip {
            t.push_str(&format!("tunnel_ip = \"{ip}\"\n"));
        }
        if let Some(p) = self.vxlan_port {
            t.push_str(&format!("vxlan_port = {p}\n"));
        }
        if let Some(p) = &self.mechanism_priority {
            t.push_str(&format!("mechanism_priority = \"{p}\"\n"));
        }
        if let Some(l) = &self.locator {
            t.push_str(&format!("\n[srv6]\nlocator = \"{l}\"\n"));
            if let Some(h) = &self.host_ip {
                t.push_str(&format!("host_ip = \"{h}\"\n"));
            }
        }
        if let Some(url) = &self.endpoint {
            t.push_str(&format!(
                "\n[[endpoint]]\nname = \"nse-1\"\nurl = \"{url}\"\nservice = \"icmp-responder\"\n"
            ));
        }
        t
    }
}

/// A vwire process inside a node namespace, killed on drop if the test did not stop it.
pub struct NodeVwire {
    child: Option<Child>,
    /// `vwire-A` or `vwire-B` (also the name of its config and log in the test dir).
    pub label: String,
    /// The node namespace.
    pub node: String,
    /// Its config file.
    pub config: PathBuf,
    /// Its stdout and stderr.
    pub log: PathBuf,
    /// Where /metrics is served, inside the node.
    pub metrics: SocketAddr,
}

impl NodeVwire {
    /// Writes `fwd`'s config (plus `[metrics] listen` on the node's loopback) to
    /// `<dir>/<label>.toml`, starts `ip netns exec <node> vwire run --config` with its output in
    /// `<dir>/<label>.log`, and waits until /metrics answers inside the node and the NSM API
    /// listens (the unix socket file exists, or the TCP port accepts inside the node). Fails
    /// with the config and the log if vwire exits or is not ready within 15 s.
    pub fn start(label: &str, node: &Ns, dir: &Path, fwd: &Fwd) -> Self {
        let metrics: SocketAddr = METRICS_LISTEN.parse().expect("metrics address");
        let text = format!("{}\n[metrics]\nlisten = \"{metrics}\"\n", fwd.toml());
        let config = dir.join(format!("{label}.toml"));
        std::fs::write(&config, &text).expect("write the vwire config");
        let (log, out) = log_file(dir, label);
        let err = out.try_clone().expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &node.0])
            .arg(vwire_bin())
            .args(["run", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn `ip netns exec <node> vwire run`");
        let mut v = Self {
            child: Some(child),
            label: label.to_string(),
            node: node.0.clone(),
            config,
            log,
            metrics,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if v.try_scrape().is_some() && v.nsm_listening(&fwd.listen_on) {
                return v;
            }
            if let Some(status) = v.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                v.child = None;
                panic!(
                    "{label} (in node {}) exited at start ({status}).\nconfig:\n{text}\nlog:\n{}",
                    node.0,
                    v.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{label} (in node {}) was not ready within 15 s (/metrics on {metrics} and the \
                 NSM API on {}).\nconfig:\n{text}\nlog:\n{}",
                node.0,
                fwd.listen_on,
                v.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn nsm_listening(&self, listen_on: &str) -> bool {
        if let Some(p) = listen_on.strip_prefix("unix://") {
            return Path::new(p).exists();
        }
        let Some(addr) = listen_on.strip_prefix("tcp://") else {
            return true;
        };
        let addr: SocketAddr = addr.parse().expect("listen_on address");
        in_netns(&self.node, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
        })
    }

    /// What vwire logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id (of vwire itself: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn try_scrape(&self) -> Option<Metrics> {
        let addr = self.metrics;
        in_netns(&self.node, || try_scrape(addr))
    }

    /// Scrapes /metrics inside the node.
    pub fn scrape(&self) -> Metrics {
        self.try_scrape().unwrap_or_else(|| {
            panic!(
                "cannot scrape {} /metrics at {} in node {}",
                self.label, self.metrics, self.node
            )
        })
    }

    /// Its `connection wired` log lines.
    pub fn wired_lines(&self) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|l| l.contains("connection wired"))
            .map(str::to_string)
            .collect()
    }

    /// Asserts that the last `connection wired` line names mechanism type `mech` (e.g. `VXLAN`,
    /// `SRV6`) and none of `not` (the other tunnel types).
    pub fn assert_wired_with(&self, mech: &str, not: &[&str]) {
        let lines = self.wired_lines();
        let last = lines.last().unwrap_or_else(|| {
            panic!(
                "{} logged no \"connection wired\" line (a {mech} connection was expected)",
                self.label
            )
        });
        assert!(
            last.contains(mech) && not.iter().all(|o| !last.contains(o)),
            "{}: the \"connection wired\" line should name {mech} (not {not:?}): {last}",
            self.label
        );
    }

    /// Sends SIGTERM and waits up to `limit` for the exit; panics if vwire is still running.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} already stopped", self.label));
        let pid = libc::pid_t::try_from(child.id()).expect("a pid");
        // SAFETY: sends a signal to our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t0 = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait for vwire") {
                return status;
            }
            if t0.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not exit within {limit:?} of SIGTERM", self.label);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops vwire with SIGTERM and checks that it exited with 0 within 5 s and left no XDP
    /// program on its node's uplink.
    pub fn stop_cleanly(&mut self, node: &Ns) {
        let status = self.terminate(Duration::from_secs(5));
        assert!(status.success(), "{} exited with {status}", self.label);
        assert!(
            !xdp_attached_in(node, UPLINK),
            "{} left an XDP program on {UPLINK} in node {}",
            self.label,
            node.0
        );
    }
}

impl Drop for NodeVwire {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pods

/// A running vwire-nse and its stdout.
pub struct Nse {
    /// The process (killed on drop).
    pub proc: Proc,
    /// Its stdout, line by line (`ping …` lines of a memif end).
    pub out: Lines,
}

/// Starts `vwire-nse` in pod `ns`, serving `unix://<dir>/nse.sock` with the pool
/// 172.16.1.100/31 and `extra` arguments, stderr to `<dir>/vwire-nse.log`; waits for the socket.
pub fn start_nse(ns: &Ns, dir: &Path, extra: &[&str]) -> Nse {
    assert!(
        example("vwire-nse").exists() && example("vwire-nsc").exists(),
        "build the examples first: cargo build -p vwire-examples"
    );
    let sock = dir.join("nse.sock");
    let (_, err) = log_file(dir, "vwire-nse");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(example("vwire-nse"))
        .arg("--listen")
        .arg(format!("unix://{}", sock.display()))
        .args(["--cidr", "172.16.1.100/31"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("start vwire-nse");
    let out = Lines::new(child.stdout.take().expect("stdout"));
    let mut proc = Proc(child);
    let t0 = Instant::now();
    while !sock.exists() {
        if let Ok(Some(status)) = proc.0.try_wait() {
            panic!("vwire-nse exited at start ({status})");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "vwire-nse did not create {} within 5 s",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Nse { proc, out }
}

/// Starts `vwire-nsc` in pod `ns` against vwire A's `unix://<dir>/fwd-a.sock` with `extra`
/// arguments (stderr to `<dir>/vwire-nsc.log`) and waits up to 30 s for its `connected` line.
pub fn start_nsc(ns: &Ns, dir: &Path, extra: &[&str]) -> Nsc {
    let (_, err) = log_file(dir, "vwire-nsc");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(example("vwire-nsc"))
        .arg("--connect")
        .arg(format!("unix://{}", dir.join("fwd-a.sock").display()))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("start vwire-nsc");
    let out = Lines::new(child.stdout.take().expect("stdout"));
    let proc = Proc(child);
    let line = out.wait("", Duration::from_secs(30), "vwire-nsc");
    assert!(
        line.starts_with("connected "),
        "vwire-nsc's first line is not `connected …`: {line:?}"
    );
    Nsc { proc, out, line }
}

// ---------------------------------------------------------------------------------------------
// Traffic

/// Pings `dst` from namespace `ns` with the kernel's ping: 3 pings of each size in `sizes`, all
/// answered, or a panic with ping's output.
pub fn ping(ns: &Ns, dst: &str, sizes: &[u32]) {
    for size in sizes {
        let out = run(&format!(
            "ip netns exec {} ping -c 3 -i 0.2 -W 2 -s {size} {dst}",
            ns.0
        ));
        assert!(
            out.status.success(),
            "ping -s {size} {dst} from {}: {}{}",
            ns.0,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A 5 s iperf3 TCP run from `client` to an iperf3 server in `server` listening on `dst`;
/// returns the receiver's rate in bit/s, having checked that it moved data.
pub fn iperf(server: &Ns, client: &Ns, dst: &str) -> f64 {
    require(&["iperf3", "timeout"]);
    let s = run(&format!(
        "ip netns exec {} iperf3 -s -D -1 --logfile /dev/null",
        server.0
    ));
    assert!(
        s.status.success(),
        "iperf3 -s in {}: {}",
        server.0,
        String::from_utf8_lossy(&s.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = run(&format!(
        "ip netns exec {} timeout 30 iperf3 -c {dst} -t 5 -J",
        client.0
    ));
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "iperf3 -c {dst} from {} failed: {json}{}",
        client.0,
        String::from_utf8_lossy(&out.stderr)
    );
    let bps = iperf_received_bps(&json);
    assert!(bps > 1e6, "iperf3 moved only {bps} bit/s: {json}");
    bps
}

/// The receiver's bit rate from iperf3's JSON report.
fn iperf_received_bps(json: &str) -> f64 {
    let at = json
        .find("\"sum_received\"")
        .unwrap_or_else(|| panic!("iperf3 JSON without sum_received: {json}"));
    let rest = &json[at..];
    let k = rest
        .find("\"bits_per_second\"")
        .expect("bits_per_second in sum_received");
    let v = rest[k + "\"bits_per_second\"".len()..].trim_start_matches([':', ' ', '\t', '\n']);
    let end = v.find([',', '\n', '}']).unwrap_or(v.len());
    v[..end]
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("bits_per_second is not a number: {json}"))
}

/// Opens a TCP connection from namespace `from` to a listener bound in namespace `to` on `ip`
/// (any free port), and echoes 64 KiB through it; panics naming the step that failed.
pub fn tcp_echo(from: &Ns, to: &Ns, ip: &str) {
    let listener = in_netns(&to.0, || TcpListener::bind((ip, 0)))
        .unwrap_or_else(|e| panic!("bind {ip} in {}: {e}", to.0));
    let addr = listener.local_addr().expect("listener address");
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            s.write_all(&buf[..n])?;
        }
    });
    let mut c = in_netns(&from.0, || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
    })
    .unwrap_or_else(|e| panic!("TCP connect from {} to {addr}: {e}", from.0));
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let data: Vec<u8> = (0..64 * 1024u32)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect();
    let mut back = vec![0u8; data.len()];
    let writer = {
        let mut w = c.try_clone().expect("clone the stream");
        let data = data.clone();
        std::thread::spawn(move || w.write_all(&data))
    };
    c.read_exact(&mut back)
        .unwrap_or_else(|e| panic!("TCP echo from {} via {addr}: {e}", from.0));
    writer
        .join()
        .expect("writer thread")
        .unwrap_or_else(|e| panic!("TCP write from {} to {addr}: {e}", from.0));
    assert!(back == data, "TCP echo via {addr} returned other bytes");
    drop(c);
    server
        .join()
        .expect("echo thread")
        .unwrap_or_else(|e| panic!("TCP echo server on {addr}: {e}"));
}

// ---------------------------------------------------------------------------------------------
// What a Close must leave behind: nothing

/// Waits (at most 5 s) until no connection state is left: no `vw*` link in any node, no
/// `nsm-*`/`nse-*` link and no vwire or vwire-nse memif socket in any pod, and no connection
/// port (`port="vwc…"`/`port="vwe…"`) in any vwire's /metrics. Fails listing what is left.
pub fn no_connection_state(nodes: &[&Ns], pods: &[&Ns], vwires: &[&NodeVwire]) {
    let t0 = Instant::now();
    loop {
        let mut left = Vec::new();
        for n in nodes {
            for l in link_names(n).into_iter().filter(|l| l.starts_with("vw")) {
                left.push(format!("link {l} in node {}", n.0));
            }
        }
        for p in pods {
            for l in link_names(p)
                .into_iter()
                .filter(|l| l.starts_with("nsm-") || l.starts_with("nse-"))
            {
                left.push(format!("link {l} in pod {}", p.0));
            }
            let socks = sh(&format!("ip netns exec {} ss -xlH", p.0));
            for s in socks
                .lines()
                .filter(|s| s.contains("/run/vwire/memif") || s.contains("vwire-nse/"))
            {
                left.push(format!("memif socket in pod {}: {s}", p.0));
            }
        }
        for v in vwires {
            let m = v.scrape();
            for k in
                m.0.keys()
                    .filter(|k| k.contains("port=\"vwc") || k.contains("port=\"vwe"))
            {
                left.push(format!("{} /metrics series {k}", v.label));
            }
        }
        if left.is_empty() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "left behind 5 s after the Close:\n{}",
            left.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// The whole remote picture

/// Nodes A and B, the NSC and NSE pods, vwire B (serving vwire A over TCP), vwire-nse and
/// vwire A (serving the NSC on a unix socket). `vwire-nsc` is started per test with
/// [`Remote::start_nsc`]. Fields drop in order: processes first, then the namespaces.
pub struct Remote {
    /// vwire A, in node A.
    pub vw_a: NodeVwire,
    /// vwire B, in node B.
    pub vw_b: NodeVwire,
    /// vwire-nse, in the NSE pod.
    pub nse_app: Nse,
    /// The NSC pod.
    pub nsc: Ns,
    /// The NSE pod.
    pub nse: Ns,
    /// The nodes.
    pub nodes: Nodes,
    /// Sockets, configs and logs.
    pub dir: PathBuf,
}

impl Remote {
    /// Builds everything with [`Fwd::a`] and [`Fwd::b`] changed by `edit_a`/`edit_b`, and
    /// vwire-nse started with `nse_args`.
    pub fn start(
        edit_a: impl FnOnce(&mut Fwd),
        edit_b: impl FnOnce(&mut Fwd),
        nse_args: &[&str],
    ) -> Self {
        require(&["ip", "ping", "ss"]);
        let nodes = Nodes::new();
        let nsc = Ns::new("c");
        let nse = Ns::new("e");
        let dir = test_dir();
        let (mut a, mut b) = (Fwd::a(&dir), Fwd::b(&dir));
        edit_a(&mut a);
        edit_b(&mut b);
        let vw_b = NodeVwire::start("vwire-B", &nodes.b, &dir, &b);
        let nse_app = start_nse(&nse, &dir, nse_args);
        let vw_a = NodeVwire::start("vwire-A", &nodes.a, &dir, &a);
        Self {
            vw_a,
            vw_b,
            nse_app,
            nsc,
            nse,
            nodes,
            dir,
        }
    }

    /// Every log of this setup.
    pub fn logs(&self) -> String {
        logs_in(&self.dir)
    }

    /// Starts vwire-nsc in the NSC pod (see [`start_nsc`]).
    pub fn start_nsc(&self, extra: &[&str]) -> Nsc {
        start_nsc(&self.nsc, &self.dir, extra)
    }

    /// See [`no_connection_state`], over both nodes, both pods and both vwires.
    pub fn nothing_left(&self) {
        no_connection_state(
            &[&self.nodes.a, &self.nodes.b],
            &[&self.nsc, &self.nse],
            &[&self.vw_a, &self.vw_b],
        );
    }

    /// Stops both vwires (see [`NodeVwire::stop_cleanly`]).
    pub fn stop(&mut self) {
        self.vw_a.stop_cleanly(&self.nodes.a);
        self.vw_b.stop_cleanly(&self.nodes.b);
    }
}
