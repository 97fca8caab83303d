//! DPDK `dpdk-testpmd` as a real memif peer for integration tests.
//!
//! testpmd runs in **interactive mode** (`-i`) with its stdin on a pipe: the helper sends
//! `start`, `stop`, `show port stats all`, `quit` and waits for the next `testpmd> ` prompt, so
//! forwarding can be stopped (and its counters read) *before* either memif peer disconnects.
//! That order matters: DPDK 22.11 unmaps memif memory on disconnect while its forwarding lcore may
//! still poll it, and segfaults (a testpmd rxonly server dies when its txonly client exits).
//! So with two peers: `stop_forwarding()` on both (or stop vwire's datapath), then `stop()`.
//! Dropping without that (a failing test) still cleans up, but the peer that stays may segfault
//! (harmless then; its socket file is left behind, so use a fresh socket directory per test).
//!
//! Each instance gets a unique `--file-prefix` (its runtime dir `/var/run/dpdk/<prefix>` is
//! removed on drop), `--no-pci --no-huge -m 256 --no-mlockall --total-num-mbufs=16384`, filesystem
//! sockets (`socket-abstract=no`) and `stdbuf -o0` (testpmd's printf output is block-buffered on a
//! pipe while the prompt is written directly, so without it responses and prompts reorder).
//!
//! Needs root and `apt-get install dpdk-dev librte-net-memif23` (Debian 12, DPDK 22.11).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The prompt testpmd prints when it is ready for the next command.
const PROMPT: &str = "testpmd> ";
/// What to install when testpmd or its memif driver is missing.
const INSTALL_HINT: &str =
    "apt-get install -y --no-install-recommends dpdk-dev librte-net-memif23 \
                            (bash scripts/test.sh installs them)";
/// How long a single interactive command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Fails the test unless it runs as root with `dpdk-testpmd` and DPDK's memif driver installed.
pub fn require_testpmd() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "testpmd tests need root; run the suite as root: bash scripts/test.sh"
    );
    let sh_ok = |script: &str| {
        Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    assert!(
        sh_ok("command -v dpdk-testpmd && command -v stdbuf"),
        "this test needs `dpdk-testpmd` (and coreutils' stdbuf): {INSTALL_HINT}"
    );
    assert!(
        sh_ok(
            "ls /usr/lib/*/dpdk/pmds-*/librte_net_memif.so* || ls /usr/lib/*/librte_net_memif.so*"
        ),
        "this test needs DPDK's memif driver (librte_net_memif): {INSTALL_HINT}"
    );
}

/// memif role of a testpmd port (DPDK's `role=server|client`; server = master in libmemif terms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Listens on the socket (`role=server`); may start before its peer.
    Server,
    /// Connects at port start (`role=client`); the server must already listen, and after a
    /// disconnect the port stays down (DPDK does not reconnect).
    Client,
}

/// testpmd `--forward-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardMode {
    /// Receive and drop.
    RxOnly,
    /// Generate `txpkts`-byte UDP frames (198.18.0.1 → 198.18.0.2, dst MAC from `--eth-peer`,
    /// default 02:00:00:00:00:0<port>), receive nothing.
    TxOnly,
    /// Send what is received unchanged (out of the paired port; a single port pairs with itself).
    Io,
    /// Like `Io`, swapping source and destination MAC.
    MacSwap,
}

impl ForwardMode {
    /// The name testpmd uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardMode::RxOnly => "rxonly",
            ForwardMode::TxOnly => "txonly",
            ForwardMode::Io => "io",
            ForwardMode::MacSwap => "macswap",
        }
    }
}

/// One `--vdev net_memifN,...` port. Always ethernet mode (the only mode DPDK's memif has).
#[derive(Clone, Debug)]
pub struct MemifPort {
    /// Server or client.
    pub role: Role,
    /// Filesystem socket path (`socket-abstract=no`). A stale file makes a server's bind fail,
    /// so use a fresh path per test.
    pub socket: PathBuf,
    /// memif interface id.
    pub id: u32,
    /// log2 of the ring size (`rsize`, DPDK default 10 = 1024 slots).
    pub ring_size_log2: Option<u8>,
    /// Buffer size in bytes (`bsize`, default 2048).
    pub buffer_size: Option<u32>,
    /// More devargs, comma-separated, e.g. `"mac=02:00:00:00:00:aa,secret=abc"`.
    pub extra_devargs: String,
}

impl MemifPort {
    /// A port with id 0 and DPDK's default ring and buffer sizes.
    pub fn new(role: Role, socket: impl Into<PathBuf>) -> Self {
        MemifPort {
            role,
            socket: socket.into(),
            id: 0,
            ring_size_log2: None,
            buffer_size: None,
            extra_devargs: String::new(),
        }
    }

    fn devargs(&self, index: usize) -> String {
        let role = match self.role {
            Role::Server => "server",
            Role::Client => "client",
        };
        let mut s = format!(
            "net_memif{index},role={role},id={},socket={},socket-abstract=no",
            self.id,
            self.socket.display()
        );
        if let Some(r) = self.ring_size_log2 {
            s.push_str(&format!(",rsize={r}"));
        }
        if let Some(b) = self.buffer_size {
            s.push_str(&format!(",bsize={b}"));
        }
        if !self.extra_devargs.is_empty() {
            s.push(',');
            s.push_str(&self.extra_devargs);
        }
        s
    }
}

/// How to run one testpmd instance. Build with [`TestpmdConfig::server`] or
/// [`TestpmdConfig::client`], then adjust the public fields.
#[derive(Clone, Debug)]
pub struct TestpmdConfig {
    /// memif ports, numbered 0.. in order (testpmd pairs 0↔1, 2↔3 for io/macswap).
    pub ports: Vec<MemifPort>,
    /// Forwarding engine.
    pub forward_mode: ForwardMode,
    /// Frame length for txonly and `start tx_first` (`--txpkts`), 64 by default.
    pub txpkts: u16,
    /// Packets per burst (`--burst`, max 512), 32 by default; `start tx_first N` sends N bursts.
    pub burst: u16,
    /// EAL core list (`-l`). Needs two lcores: the main one (idle at the prompt) and one that
    /// forwards.
    pub lcores: String,
    /// `--main-lcore`; forwarding runs on the other lcore of `lcores`. Defaults: server 0
    /// (forwards on 1), client 1 (forwards on 0), so two instances use different cores.
    pub main_lcore: u32,
    /// `--file-prefix`; `None` picks a name unique to this process and instance.
    pub file_prefix: Option<String>,
    /// EAL memory in MB without hugepages (`--no-huge -m`), 256 by default.
    pub mem_mb: u32,
    /// `--total-num-mbufs`, 16384 by default (the default pool does not fit in 256 MB).
    pub total_num_mbufs: u32,
    /// Start forwarding as soon as the ports are up (`--auto-start`); otherwise call
    /// [`Testpmd::start_forwarding`] or [`Testpmd::start_tx_first`].
    pub auto_start: bool,
    /// Extra EAL arguments (before `--`).
    pub extra_eal_args: Vec<String>,
    /// Extra testpmd arguments (after `--`), e.g. `--eth-peer=0,02:00:00:00:00:02`.
    pub extra_args: Vec<String>,
}

impl TestpmdConfig {
    /// One memif port with `role` on `socket`, rxonly, auto-start, lcores per the role.
    pub fn new(role: Role, socket: impl Into<PathBuf>) -> Self {
        TestpmdConfig {
            ports: vec![MemifPort::new(role, socket)],
            forward_mode: ForwardMode::RxOnly,
            txpkts: 64,
            burst: 32,
            lcores: "0,1".to_string(),
            main_lcore: match role {
                Role::Server => 0,
                Role::Client => 1,
            },
            file_prefix: None,
            mem_mb: 256,
            total_num_mbufs: 16384,
            auto_start: true,
            extra_eal_args: Vec::new(),
            extra_args: Vec::new(),
        }
    }

    /// One memif server port on `socket`.
    pub fn server(socket: impl Into<PathBuf>) -> Self {
        Self::new(Role::Server, socket)
    }

    /// One memif client port on `socket`.
    pub fn client(socket: impl Into<PathBuf>) -> Self {
        Self::new(Role::Client, socket)
    }

    /// Sets the forwarding mode.
    pub fn forward_mode(mut self, mode: ForwardMode) -> Self {
        self.forward_mode = mode;
        self
    }

    /// The full argument list for `dpdk-testpmd` (without the program name).
    pub fn args(&self, file_prefix: &str) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-l".into(),
            self.lcores.clone(),
            "--main-lcore".into(),
            self.main_lcore.to_string(),
            "--no-pci".into(),
            "--no-huge".into(),
            "-m".into(),
            self.mem_mb.to_string(),
            "--file-prefix".into(),
            file_prefix.into(),
        ];
        for (i, p) in self.ports.iter().enumerate() {
            a.push("--vdev".into());
            a.push(p.devargs(i));
        }
        a.extend(self.extra_eal_args.iter().cloned());
        a.push("--".into());
        a.push("-i".into());
        if self.auto_start {
            a.push("--auto-start".into());
        }
        a.extend([
            format!("--forward-mode={}", self.forward_mode.as_str()),
            format!("--txpkts={}", self.txpkts),
            format!("--burst={}", self.burst),
            "--nb-cores=1".into(),
            format!("--total-num-mbufs={}", self.total_num_mbufs),
            "--no-mlockall".into(),
        ]);
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// Forwarding counters of one port (or of all ports), from testpmd's `stop` output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdStats {
    /// `RX-packets`.
    pub rx_packets: u64,
    /// `RX-dropped`.
    pub rx_dropped: u64,
    /// `RX-total`.
    pub rx_total: u64,
    /// `TX-packets`: handed to the memif ring.
    pub tx_packets: u64,
    /// `TX-dropped`: the ring was full (txonly frees them).
    pub tx_dropped: u64,
    /// `TX-total`.
    pub tx_total: u64,
}

/// testpmd's forward statistics since forwarding last started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestpmdStats {
    /// Per port, indexed by testpmd port number.
    pub ports: Vec<FwdStats>,
    /// "Accumulated forward statistics for all ports" (sum of the ports if not printed).
    pub total: FwdStats,
}

impl TestpmdStats {
    /// The counters of port `n`; panics if testpmd reported no such port.
    pub fn port(&self, n: usize) -> FwdStats {
        *self
            .ports
            .get(n)
            .unwrap_or_else(|| panic!("no forward stats for port {n} in {self:?}"))
    }
}

/// Live NIC counters of one port, from `show port stats all`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NicStats {
    /// `RX-packets`.
    pub rx_packets: u64,
    /// `RX-missed`.
    pub rx_missed: u64,
    /// `RX-bytes`.
    pub rx_bytes: u64,
    /// `RX-errors`.
    pub rx_errors: u64,
    /// `RX-nombuf`.
    pub rx_nombuf: u64,
    /// `TX-packets`.
    pub tx_packets: u64,
    /// `TX-errors`.
    pub tx_errors: u64,
    /// `TX-bytes`.
    pub tx_bytes: u64,
}

/// The `KEY: VALUE` pairs of one stats line, e.g. `RX-packets: 5   RX-dropped: 0`.
fn key_values(line: &str) -> Vec<(&str, u64)> {
    let toks: Vec<&str> = line.split_whitespace().collect();
    let mut out = Vec::new();
    for w in toks.windows(2) {
        if let Some(key) = w[0].strip_suffix(':') {
            if let Ok(v) = w[1].parse::<u64>() {
                out.push((key, v));
            }
        }
    }
    out
}

/// The number after `marker` on `line` (`"... statistics for port 3  ---"` → 3).
fn number_after(line: &str, marker: &str) -> Option<usize> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Parses testpmd's forward statistics (printed by `stop`, `quit` or SIGINT while forwarding).
/// When `text` holds several reports, later blocks win. `None` if there is none.
pub fn parse_forward_stats(text: &str) -> Option<TestpmdStats> {
    enum Block {
        None,
        Port(usize),
        Total,
    }
    let mut block = Block::None;
    let mut stats = TestpmdStats::default();
    let mut seen = false;
    let mut total_seen = false;
    for line in text.lines() {
        if let Some(n) = number_after(line, "Forward statistics for port") {
            if stats.ports.len() <= n {
                stats.ports.resize(n + 1, FwdStats::default());
            }
            stats.ports[n] = FwdStats::default();
            block = Block::Port(n);
            seen = true;
            continue;
        }
        if line.contains("Accumulated forward statistics for all ports") {
            stats.total = FwdStats::default();
            block = Block::Total;
            total_seen = true;
            seen = true;
            continue;
        }
        let t = line.trim_start();
        if !(t.starts_with("RX-") || t.starts_with("TX-")) {
            if t.starts_with("---") || t.starts_with("+++") || t.is_empty() {
                block = Block::None;
            }
            continue;
        }
        let target = match block {
            Block::None => continue,
            Block::Port(n) => &mut stats.ports[n],
            Block::Total => &mut stats.total,
        };
        for (k, v) in key_values(t) {
            match k {
                "RX-packets" => target.rx_packets = v,
                "RX-dropped" => target.rx_dropped = v,
                "RX-total" => target.rx_total = v,
                "TX-packets" => target.tx_packets = v,
                "TX-dropped" => target.tx_dropped = v,
                "TX-total" => target.tx_total = v,
                _ => {}
            }
        }
    }
    if !seen {
        return None;
    }
    if !total_seen {
        for p in &stats.ports {
            stats.total.rx_packets += p.rx_packets;
            stats.total.rx_dropped += p.rx_dropped;
            stats.total.rx_total += p.rx_total;
            stats.total.tx_packets += p.tx_packets;
            stats.total.tx_dropped += p.tx_dropped;
            stats.total.tx_total += p.tx_total;
        }
    }
    Some(stats)
}

/// Parses `show port stats all` (also the `--stats-period` reports): NIC counters per port,
/// indexed by port number; later reports win.
pub fn parse_nic_stats(text: &str) -> Vec<NicStats> {
    let mut ports: Vec<NicStats> = Vec::new();
    let mut cur: Option<usize> = None;
    for line in text.lines() {
        if let Some(n) = number_after(line, "NIC statistics for port") {
            if ports.len() <= n {
                ports.resize(n + 1, NicStats::default());
            }
            ports[n] = NicStats::default();
            cur = Some(n);
            continue;
        }
        let Some(n) = cur else { continue };
        let t = line.trim_start();
        if t.starts_with("Throughput") || t.starts_with("####") {
            cur = None;
            continue;
        }
        let p = &mut ports[n];
        for (k, v) in key_values(t) {
            match k {
                "RX-packets" => p.rx_packets = v,
                "RX-missed" => p.rx_missed = v,
                "RX-bytes" => p.rx_bytes = v,
                "RX-errors" => p.rx_errors = v,
                "RX-nombuf" => p.rx_nombuf = v,
                "TX-packets" => p.tx_packets = v,
                "TX-errors" => p.tx_errors = v,
                "TX-bytes" => p.tx_bytes = v,
                _ => {}
            }
        }
    }
    ports
}

/// Parses `show port summary all`: link up (`true`) or down per port, indexed by port number.
pub fn parse_link_status(text: &str) -> Vec<bool> {
    let mut links = Vec::new();
    for line in text.lines() {
        // "0    86:42:22:34:D7:96 net_memif0   net_memif      up       100 Gbps"
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 5 || !cols[2].starts_with("net_") {
            continue;
        }
        let Ok(n) = cols[0].parse::<usize>() else {
            continue;
        };
        if links.len() <= n {
            links.resize(n + 1, false);
        }
        links[n] = cols[4] == "up";
    }
    links
}

/// Output collected from testpmd (stdout and stderr merged) by a reader thread.
#[derive(Default)]
struct Shared {
    text: String,
    eof: bool,
}

type SharedOut = Arc<(Mutex<Shared>, Condvar)>;

fn lock(out: &SharedOut) -> std::sync::MutexGuard<'_, Shared> {
    out.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running `dpdk-testpmd` with memif ports, driven through its interactive prompt.
/// Dropping it quits testpmd (then SIGINT, then SIGKILL) and removes its runtime files.
pub struct Testpmd {
    child: Child,
    stdin: Option<ChildStdin>,
    out: SharedOut,
    reader: Option<JoinHandle<()>>,
    file_prefix: String,
    command_line: String,
    forwarding: bool,
    last_stats: Option<TestpmdStats>,
    status: Option<ExitStatus>,
}

static INSTANCE: AtomicUsize = AtomicUsize::new(0);

impl Testpmd {
    /// Spawns testpmd with `cfg` (creating the sockets' parent directories). Returns at once;
    /// call [`Testpmd::wait_ready`] before relying on it.
    pub fn start(cfg: &TestpmdConfig) -> Testpmd {
        assert!(!cfg.ports.is_empty(), "testpmd config without memif ports");
        for p in &cfg.ports {
            if let Some(dir) = p.socket.parent() {
                std::fs::create_dir_all(dir)
                    .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
            }
        }
        let file_prefix = cfg.file_prefix.clone().unwrap_or_else(|| {
            format!(
                "vwtp-{}-{}",
                std::process::id(),
                INSTANCE.fetch_add(1, Ordering::Relaxed)
            )
        });
        let args = cfg.args(&file_prefix);
        let command_line = format!("stdbuf -o0 dpdk-testpmd {}", args.join(" "));
        // `exec` keeps the pid: sh → stdbuf → dpdk-testpmd, with stderr merged into stdout.
        let mut child = Command::new("sh")
            .args([
                "-c",
                "exec \"$@\" 2>&1",
                "sh",
                "stdbuf",
                "-o0",
                "dpdk-testpmd",
            ])
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn `{command_line}`: {e}; {INSTALL_HINT}"));
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("piped stdout");
        let out: SharedOut = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let out2 = Arc::clone(&out);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            loop {
                let n = stdout.read(&mut buf).unwrap_or(0);
                let mut g = lock(&out2);
                if n == 0 {
                    g.eof = true;
                } else {
                    g.text.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                drop(g);
                out2.1.notify_all();
                if n == 0 {
                    break;
                }
            }
        });
        Testpmd {
            child,
            stdin,
            out,
            reader: Some(reader),
            file_prefix,
            command_line,
            forwarding: cfg.auto_start,
            last_stats: None,
            status: None,
        }
    }

    /// The process id of testpmd.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `--file-prefix` in use.
    pub fn file_prefix(&self) -> &str {
        &self.file_prefix
    }

    /// The command line and everything testpmd printed so far, for error messages.
    pub fn output(&self) -> String {
        format!("$ {}\n{}", self.command_line, lock(&self.out).text)
    }

    /// Waits until the output after byte `from` contains `needle`; returns the offset just past
    /// it. Errors on timeout or when testpmd exits first.
    fn wait_for(&self, from: usize, needle: &str, timeout: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        let mut g = lock(&self.out);
        loop {
            if let Some(i) = g.text.get(from..).and_then(|t| t.find(needle)) {
                return Ok(from + i + needle.len());
            }
            if g.eof {
                return Err(format!("testpmd exited while waiting for {needle:?}"));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {needle:?}"
                ));
            }
            g = self
                .out
                .1
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Like [`Testpmd::wait_ready`], returning the reason instead of panicking (e.g. a client
    /// whose server is not listening: `Fail to start port 0`).
    pub fn try_wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        self.wait_for(0, PROMPT, timeout)?;
        let text = lock(&self.out).text.clone();
        // A client without a listening server: "memif_connect_client(): Failed to connect socket"
        // and "Fail to start port 0". A stale server socket file: "memif_socket_create(): Failed
        // to setup socket ...: Address already in use" and "No probed ethernet devices" (as with
        // a missing memif driver). testpmd still reaches its prompt in all these cases.
        const FAILURES: [&str; 5] = [
            "Failed to connect socket",
            "Fail to start port",
            "Failed to setup socket",
            "No probed ethernet devices",
            "EAL: Error",
        ];
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| FAILURES.iter().any(|f| l.contains(f)))
            .collect();
        if !bad.is_empty() {
            return Err(format!("testpmd failed to start: {}", bad.join(" / ")));
        }
        let client_ports: Vec<usize> = self.client_ports();
        if client_ports.is_empty() {
            return Ok(());
        }
        self.try_wait_link(
            &client_ports,
            deadline.saturating_duration_since(Instant::now()),
        )
    }

    fn client_ports(&self) -> Vec<usize> {
        // Parsed back from our own command line: net_memif<N>,role=client.
        self.command_line
            .split_whitespace()
            .filter(|a| a.starts_with("net_memif") && a.contains(",role=client"))
            .filter_map(|a| number_after(a, "net_memif"))
            .collect()
    }

    /// Waits until testpmd shows its prompt with every port started; for client ports also until
    /// their link is up (the memif handshake finished). Panics with the output otherwise. A
    /// server is ready once it listens; use [`Testpmd::wait_link_up`] to wait for its peer.
    pub fn wait_ready(&mut self, timeout: Duration) {
        if let Err(e) = self.try_wait_ready(timeout) {
            panic!("testpmd not ready: {e}\n{}", self.output());
        }
    }

    fn try_wait_link(&mut self, ports: &[usize], timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let links = self.link_status();
            if ports
                .iter()
                .all(|&p| links.get(p).copied().unwrap_or(false))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "memif link of ports {ports:?} not up after {timeout:?} (links {links:?})"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the memif link of every port is up (a peer connected); panics on timeout.
    pub fn wait_link_up(&mut self, timeout: Duration) {
        let ports: Vec<usize> = (0..self.link_status().len()).collect();
        if let Err(e) = self.try_wait_link(&ports, timeout) {
            panic!("{e}\n{}", self.output());
        }
    }

    /// Runs one interactive command and returns what it printed (up to the next prompt).
    /// Panics with the output if testpmd exits or does not answer in time.
    pub fn command(&mut self, cmd: &str) -> String {
        let mark = lock(&self.out).text.len();
        let sent = match self.stdin.as_mut() {
            Some(s) => s
                .write_all(format!("{cmd}\n").as_bytes())
                .and_then(|()| s.flush()),
            None => Err(std::io::Error::other("stdin closed")),
        };
        if let Err(e) = sent {
            panic!("cannot send {cmd:?} to testpmd: {e}\n{}", self.output());
        }
        match self.wait_for(mark, PROMPT, COMMAND_TIMEOUT) {
            Ok(end) => {
                let g = lock(&self.out);
                g.text[mark..end - PROMPT.len()].to_string()
            }
            Err(e) => panic!("testpmd command {cmd:?}: {e}\n{}", self.output()),
        }
    }

    /// Link up/down per port (`show port summary all`).
    pub fn link_status(&mut self) -> Vec<bool> {
        parse_link_status(&self.command("show port summary all"))
    }

    /// Live NIC counters per port (`show port stats all`); they count since port start.
    pub fn nic_stats(&mut self) -> Vec<NicStats> {
        parse_nic_stats(&self.command("show port stats all"))
    }

    /// Starts forwarding (`start`); forward stats restart from zero.
    pub fn start_forwarding(&mut self) {
        let r = self.command("start");
        assert!(
            !r.contains("not started") && !r.contains("already started"),
            "testpmd `start` failed: {r}\n{}",
            self.output()
        );
        self.forwarding = true;
    }

    /// `start tx_first N`: sends exactly `bursts` bursts of `burst` frames of `txpkts` bytes
    /// (txonly's frames) on every port, then forwards in the configured mode. With rxonly this is
    /// the way to send an exact number of packets (`TX-dropped` counts any that did not fit
    /// the ring) and count what comes back.
    pub fn start_tx_first(&mut self, bursts: u32) {
        let r = self.command(&format!("start tx_first {bursts}"));
        assert!(
            !r.contains("not started") && !r.contains("already started"),
            "testpmd `start tx_first` failed: {r}\n{}",
            self.output()
        );
        self.forwarding = true;
    }

    /// Stops forwarding (`stop`) and returns the forward statistics since it started. The ports
    /// stay connected; do this on both sides before either disconnects.
    pub fn stop_forwarding(&mut self) -> TestpmdStats {
        let r = self.command("stop");
        self.forwarding = false;
        let stats = parse_forward_stats(&r)
            .unwrap_or_else(|| panic!("no forward stats in `stop` output: {r}\n{}", self.output()));
        self.last_stats = Some(stats.clone());
        stats
    }

    /// Stops forwarding if it runs, quits testpmd and waits for a clean exit. Returns the
    /// forward statistics of the last forwarding run (zeros if it never forwarded). Panics with
    /// the output if testpmd crashed or did not exit.
    pub fn stop(mut self) -> TestpmdStats {
        let stats = if self.forwarding {
            self.stop_forwarding()
        } else {
            self.last_stats.clone().unwrap_or_default()
        };
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(b"quit\n");
        }
        match self.wait_exit(Duration::from_secs(10)) {
            Some(st) if st.success() => stats,
            Some(st) => panic!("testpmd exited with {st}\n{}", self.output()),
            None => panic!(
                "testpmd did not exit within 10 s of `quit`\n{}",
                self.output()
            ),
        }
    }

    /// The exit status if testpmd has exited (without waiting).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet
            // (callers check try_status first), so the pid still names it.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            // `quit` (stops forwarding, closes ports), then EOF on stdin, then SIGINT, SIGKILL.
            if let Some(mut s) = self.stdin.take() {
                let _ = s.write_all(b"stop\nquit\n");
            }
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                self.signal(libc::SIGINT);
                if self.wait_exit(Duration::from_secs(3)).is_none() {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                }
            }
        }
        self.stdin = None;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.file_prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real `stop` output of a two-port testpmd (io forwarding, memif clients), DPDK 22.11.
    const STOP_TWO_PORTS: &str = "stop
Telling cores to stop...
Waiting for lcores to finish...

  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 25833856       RX-dropped: 0             RX-total: 25833856
  TX-packets: 25833824       TX-dropped: 0             TX-total: 25833824
  ----------------------------------------------------------------------------

  ---------------------- Forward statistics for port 1  ----------------------
  RX-packets: 25833792       RX-dropped: 0             RX-total: 25833792
  TX-packets: 25833888       TX-dropped: 0             TX-total: 25833888
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 51667648       RX-dropped: 0             RX-total: 51667648
  TX-packets: 51667712       TX-dropped: 0             TX-total: 51667712
  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++

Done.
";

    /// Real final output of a txonly memif client stopped by SIGINT (non-interactive mode,
    /// `--stats-period 1`; trailing spaces trimmed).
    const SIGINT_TXONLY: &str = "\x1b[2J\x1b[1;1H
Port statistics ====================================
  ######################## NIC statistics for port 0  ########################
  RX-packets: 0          RX-missed: 0          RX-bytes:  0
  RX-errors: 0
  RX-nombuf:  0
  TX-packets: 37769152   TX-errors: 0          TX-bytes:  2417225728

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:     18882524          Tx-bps:   9667852560
  ############################################################################
Telling cores to stop...
Waiting for lcores to finish...

  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 0              RX-dropped: 0             RX-total: 0
  TX-packets: 56416832       TX-dropped: 1557312       TX-total: 57974144
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 0              RX-dropped: 0             RX-total: 0
  TX-packets: 56416832       TX-dropped: 1557312       TX-total: 57974144
  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++

Done.

Primary: Sending 'stop_req' request to secondary...

Stopping port 0...
Stopping ports...
Done

Shutting down port 0...
Closing ports...
Port 0 is closed
Done

Bye...
";

    /// Real `show port stats all` output of a two-port testpmd (trailing spaces trimmed).
    const NIC_TWO_PORTS: &str = "show port stats all

  ######################## NIC statistics for port 0  ########################
  RX-packets: 25761952   RX-missed: 0          RX-bytes:  1648764928
  RX-errors: 0
  RX-nombuf:  0
  TX-packets: 25761888   TX-errors: 0          TX-bytes:  1648760832

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:            0          Tx-bps:            0
  ############################################################################

  ######################## NIC statistics for port 1  ########################
  RX-packets: 25761856   RX-missed: 0          RX-bytes:  1648758784
  RX-errors: 0
  RX-nombuf:  0
  TX-packets: 25761984   TX-errors: 0          TX-bytes:  1648766976

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:            0          Tx-bps:            0
  ############################################################################
";

    /// Real `show port summary all` output of a memif server without a peer.
    const SUMMARY_DOWN: &str = "show port summary all
Number of available ports: 1
Port MAC Address       Name         Driver         Status   Link
0    86:42:22:34:D7:96 net_memif0   net_memif      down     100 Gbps
";

    #[test]
    fn parses_two_port_stop() {
        let s = parse_forward_stats(STOP_TWO_PORTS).expect("stats");
        assert_eq!(s.ports.len(), 2);
        assert_eq!(
            s.port(0),
            FwdStats {
                rx_packets: 25833856,
                rx_dropped: 0,
                rx_total: 25833856,
                tx_packets: 25833824,
                tx_dropped: 0,
                tx_total: 25833824,
            }
        );
        assert_eq!(s.port(1).rx_packets, 25833792);
        assert_eq!(s.port(1).tx_packets, 25833888);
        assert_eq!(s.total.rx_packets, 51667648);
        assert_eq!(s.total.tx_packets, 51667712);
    }

    #[test]
    fn parses_sigint_final_stats_ignoring_nic_stats() {
        let s = parse_forward_stats(SIGINT_TXONLY).expect("stats");
        assert_eq!(s.ports.len(), 1);
        assert_eq!(s.port(0).rx_packets, 0);
        assert_eq!(s.port(0).tx_packets, 56416832);
        assert_eq!(s.port(0).tx_dropped, 1557312);
        assert_eq!(s.port(0).tx_total, 57974144);
        assert_eq!(s.total, s.port(0));
        assert_eq!(parse_forward_stats("Port 0 is closed\nBye...\n"), None);
    }

    #[test]
    fn parses_nic_stats() {
        let n = parse_nic_stats(NIC_TWO_PORTS);
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].rx_packets, 25761952);
        assert_eq!(n[0].rx_bytes, 1648764928);
        assert_eq!(n[0].tx_packets, 25761888);
        assert_eq!(n[1].tx_bytes, 1648766976);
        let n = parse_nic_stats(SIGINT_TXONLY);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].tx_packets, 37769152);
        assert_eq!(n[0].rx_packets, 0);
    }

    #[test]
    fn parses_link_status() {
        assert_eq!(parse_link_status(SUMMARY_DOWN), vec![false]);
        let up = SUMMARY_DOWN.replace("down    ", "up      ");
        assert_eq!(parse_link_status(&up), vec![true]);
    }

    #[test]
    fn builds_args() {
        let mut cfg =
            TestpmdConfig::client("/run/vwtest-x/a.sock").forward_mode(ForwardMode::TxOnly);
        cfg.ports[0].ring_size_log2 = Some(12);
        let a = cfg.args("pfx").join(" ");
        assert!(a.starts_with("-l 0,1 --main-lcore 1 --no-pci --no-huge -m 256 --file-prefix pfx"));
        assert!(a.contains(
            "--vdev net_memif0,role=client,id=0,socket=/run/vwtest-x/a.sock,socket-abstract=no,rsize=12 -- -i --auto-start --forward-mode=txonly"
        ));
    }
}
