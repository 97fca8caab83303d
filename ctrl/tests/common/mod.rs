//! Shared helpers of the privileged integration tests: preconditions, network namespace
//! topologies that clean up after themselves, a vwire process under test, and a /metrics reader.
//!
//! These tests need root and real tools. When either is missing they fail with a message that
//! says what to install or how to run them; they never pass without running.

#![allow(dead_code, unreachable_pub)] // shared by several test binaries, each using a subset

pub mod nodes;
pub mod nsm;
pub mod peerfd;
pub mod served;
pub mod spiffe;
pub mod testpmd;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Fails the test unless it runs as root with every tool in `tools` on the PATH.
pub fn require(tools: &[&str]) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this privileged test needs root (network namespaces, AF_XDP, XDP); run the suite as root: bash scripts/test.sh"
    );
    for t in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(found, "this test needs `{t}`; bash scripts/test.sh installs it (apt-get install iproute2 iputils-ping iperf3)");
    }
}

/// Reports a check that did not run because this machine's kernel lacks an optional feature:
/// prints `line` and, when `NOT_CHECKED_REPORT` names a file (scripts/test.sh sets it), appends
/// it there so that the end of a green run lists what it did not cover. Only for kernel
/// features a probe found missing; never for anything the suite must check.
pub fn not_checked(line: &str) {
    eprintln!("NOT CHECKED: {line}");
    if let Some(path) = std::env::var_os("NOT_CHECKED_REPORT") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open NOT_CHECKED_REPORT file {path:?}: {e}"));
        writeln!(f, "{line}")
            .unwrap_or_else(|e| panic!("cannot write NOT_CHECKED_REPORT file {path:?}: {e}"));
    }
}

/// Runs a command and returns its output; panics with the command line and stderr on failure.
pub fn sh(cmd: &str) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "`{cmd}` failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and returns its output, success or not.
pub fn run(cmd: &str) -> Output {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{cmd}`: {e}"))
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A short name unique to this process and call, for namespaces and interfaces (≤ 15 chars).
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{n}", std::process::id() % 100_000)
}

/// An end host: a namespace holding one end of a veth pair whose other end (`port_if`) stays in
/// the root namespace for vwire to attach to.
pub struct Host {
    /// The namespace.
    pub ns: String,
    /// The interface inside the namespace.
    pub inner_if: String,
    /// The interface in the root namespace, where vwire attaches.
    pub port_if: String,
    /// The host's address.
    pub ip: String,
}

impl Host {
    /// Creates the namespace and veth pair, addresses `ip/24` inside, and turns off IPv6 on
    /// both ends so that no unsolicited IPv6 traffic blurs the counters. `queues` sets the
    /// number of veth queues.
    pub fn new(ip: &str, queues: u32) -> Self {
        let tag = unique("");
        let h = Self {
            ns: format!("vwt-{tag}"),
            inner_if: format!("vwi{tag}"),
            port_if: format!("vwp{tag}"),
            ip: ip.to_string(),
        };
        sh(&format!("ip netns add {}", h.ns));
        sh(&format!(
            "ip link add {p} numtxqueues {q} numrxqueues {q} type veth peer name {i} numtxqueues {q} numrxqueues {q} netns {ns}",
            p = h.port_if, i = h.inner_if, ns = h.ns, q = queues
        ));
        sh(&format!(
            "sysctl -qw net.ipv6.conf.{}.disable_ipv6=1",
            h.port_if
        ));
        sh(&format!(
            "ip netns exec {} sysctl -qw net.ipv6.conf.all.disable_ipv6=1",
            h.ns
        ));
        sh(&format!("ip link set {} up", h.port_if));
        sh(&format!(
            "ip -n {} addr add {}/24 dev {}",
            h.ns, h.ip, h.inner_if
        ));
        sh(&format!("ip -n {} link set {} up", h.ns, h.inner_if));
        sh(&format!("ip -n {} link set lo up", h.ns));
        h
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &str) -> Output {
        run(&format!("ip netns exec {} {cmd}", self.ns))
    }

    /// An interface statistic of the inner interface (read inside the namespace, where /sys is
    /// the namespace's own).
    pub fn stat(&self, name: &str) -> u64 {
        let out = self.exec(&format!(
            "cat /sys/class/net/{}/statistics/{name}",
            self.inner_if
        ));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("cannot read {name} of {} in {}", self.inner_if, self.ns))
    }

    /// Pings `dst` from this host; returns true if every reply came back.
    pub fn ping(&self, dst: &str, count: u32, size: u32) -> bool {
        let out = self.exec(&format!("ping -c {count} -i 0.05 -W 2 -s {size} {dst}"));
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains(&format!("{count} received"))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Processes left inside (an iperf3 server whose client failed) would keep the namespace,
        // and so the veth pair, alive: end them first. Deleting the namespace then deletes the
        // inner veth end, which deletes the root end too.
        let _ = run(&format!("ip netns pids {} | xargs -r kill -9", self.ns));
        let _ = run(&format!("ip netns del {}", self.ns));
        let _ = run(&format!("ip link del {} 2>/dev/null", self.port_if));
    }
}

/// True if `ifname` has an XDP program attached (any mode).
pub fn xdp_attached(ifname: &str) -> bool {
    let out = sh(&format!("ip -d link show dev {ifname}"));
    out.contains("prog/xdp")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// A vwire process under test, killed on drop if the test did not stop it.
pub struct Vwire {
    child: Option<Child>,
    /// Where its metrics are served.
    pub metrics: SocketAddr,
    /// Its config file.
    pub config: PathBuf,
    log: PathBuf,
}

/// The path of the vwire binary built for this test run.
pub fn vwire_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vwire")
}

/// Writes `text` to a fresh file in the temp dir and returns its path.
pub fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("vwire-test-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write temp file");
    p
}

impl Vwire {
    /// Starts `vwire run` with `config` (the `[metrics]` section is added here) and waits until
    /// /metrics answers.
    pub fn start(config: &str) -> Self {
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let text = format!("{config}\n[metrics]\nlisten = \"{metrics}\"\n");
        let config = temp_file("vwire.toml", &text);
        let log = config.with_file_name("vwire.log");
        let child = Command::new(vwire_bin())
            .args(["run", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(std::fs::File::create(log.with_extension("err")).expect("log file"))
            .spawn()
            .expect("spawn vwire");
        let mut v = Self {
            child: Some(child),
            metrics,
            config,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if try_scrape(metrics).is_some() {
                break;
            }
            if let Some(status) = v.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("vwire exited early ({status}):\n{}", v.logs());
            }
            assert!(
                Instant::now() < deadline,
                "vwire did not serve /metrics within 10 s:\n{}",
                v.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        v
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// What vwire logged so far.
    pub fn logs(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "{}{}",
            read(&self.log),
            read(&self.log.with_extension("err"))
        )
    }

    /// Waits up to `limit` until vwire has logged `line` at least `count` times; fails the test
    /// with the logs otherwise.
    pub fn wait_log(&self, line: &str, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.logs().matches(line).count() < count {
            assert!(
                Instant::now() < deadline,
                "vwire did not log {line:?} {count} times within {limit:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Scrapes /metrics.
    pub fn scrape(&self) -> Metrics {
        try_scrape(self.metrics)
            .unwrap_or_else(|| panic!("cannot scrape {}:\n{}", self.metrics, self.logs()))
    }

    /// Sends SIGTERM and waits up to `limit` for the exit; returns the status and the time taken.
    pub fn terminate(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("vwire already stopped");
        let t0 = Instant::now();
        // SAFETY: sends a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        loop {
            if let Some(status) = child.try_wait().expect("wait for vwire") {
                return (status, t0.elapsed());
            }
            if t0.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "vwire did not exit within {limit:?} of SIGTERM:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Vwire {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A parsed /metrics page: series (name with labels) to value, as printed.
pub struct Metrics(pub HashMap<String, String>);

impl Metrics {
    fn raw(&self, series: &str) -> &str {
        self.0
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in /metrics"))
    }

    /// The value of a series, e.g. `vwire_port_rx_packets_total{port="left"}`; panics if absent.
    pub fn get(&self, series: &str) -> f64 {
        self.raw(series)
            .parse()
            .unwrap_or_else(|_| panic!("{series} is not a number"))
    }

    /// A counter printed as an integer.
    pub fn count(&self, series: &str) -> u64 {
        self.raw(series)
            .parse()
            .unwrap_or_else(|_| panic!("{series} is not an integer"))
    }

    /// A port counter.
    pub fn port(&self, family: &str, port: &str) -> u64 {
        self.count(&format!("vwire_port_{family}_total{{port=\"{port}\"}}"))
    }
}

fn try_scrape(addr: SocketAddr) -> Option<Metrics> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: vwire\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let (head, body) = body.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let mut m = HashMap::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (k, v) = line.rsplit_once(' ')?;
        m.insert(k.to_string(), v.to_string());
    }
    Some(Metrics(m))
}

/// The config of two AF_XDP ports, "left" and "right", cross-connected, with one worker on the
/// highest CPU.
pub fn xconnect_config(left_if: &str, right_if: &str, poll: &str) -> String {
    let cpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        - 1;
    format!(
        "[dataplane]\nworkers = [{cpu}]\npoll = \"{poll}\"\n\n\
         [[port]]\nname = \"left\"\ntype = \"afxdp\"\ninterface = \"{left_if}\"\n\n\
         [[port]]\nname = \"right\"\ntype = \"afxdp\"\ninterface = \"{right_if}\"\n\n\
         [[xconnect]]\na = \"left\"\nb = \"right\"\n"
    )
}

/// CPU time (user + system) the process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/pid/stat");
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}
