//! Privileged tests: pktgen → vwire → pktgen over AF_XDP veths in network namespaces and over
//! memif, with the real `vwire` binary (built here with `cargo build --release -p vwire`) as
//! the device under test; an RFC 2544 sweep that writes a report and plots; bad options.
//!
//! They need root, `ip`, and the vwire binary; without them they fail with a message saying
//! what is missing, never pass silently. Every namespace, socket directory and process is
//! named for the test and the pid, and removed by a guard's `Drop`, so a failing test cleans up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const PKTGEN: &str = env!("CARGO_BIN_EXE_vwire-pktgen");

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these privileged tests need root (network namespaces, AF_XDP): run them as root, e.g. sudo -E cargo test -p vwire-pktgen"
    );
    let ip = Command::new("ip").arg("-V").output();
    assert!(
        ip.is_ok_and(|o| o.status.success()),
        "these tests need `ip` (apt-get install iproute2)"
    );
}

/// The vwire binary, built once per test process.
fn vwire_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(&cargo)
            .args(["build", "--release", "--quiet", "-p", "vwire"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cargo} to build vwire: {e}"));
        assert!(
            out.status.success(),
            "building vwire failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
        let bin = target.join("release/vwire");
        assert!(
            bin.exists(),
            "vwire was built but {} is missing",
            bin.display()
        );
        bin
    })
}

fn sh(cmd: &str) -> Output {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{cmd}`: {e}"))
}

fn must(cmd: &str) {
    let o = sh(cmd);
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a test set up; all of it goes in `Drop`, failure or not.
#[derive(Default)]
struct Lab {
    netns: Vec<String>,
    dirs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SIGTERM first so vwire detaches its XDP programs, then make sure.
            // SAFETY: kill(2) on a child of ours that we have not reaped yet.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        for c in &mut self.children {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.netns {
            let _ = sh(&format!(
                "ip netns pids {ns} 2>/dev/null | xargs -r kill -9; ip netns del {ns}"
            ));
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Lab {
    fn netns(&mut self, prefix: &str) -> String {
        let ns = unique(prefix);
        must(&format!("ip netns add {ns}"));
        self.netns.push(ns.clone());
        must(&format!("ip -n {ns} link set lo up"));
        ns
    }

    fn dir(&mut self, prefix: &str) -> PathBuf {
        let d = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&d).expect("temp dir");
        self.dirs.push(d.clone());
        d
    }

    /// Starts vwire with `config`, inside `netns` if given.
    fn vwire(&mut self, dir: &Path, config: &str, netns: Option<&str>) -> PathBuf {
        let cfg = dir.join("vwire.toml");
        std::fs::write(&cfg, config).expect("config");
        let log = dir.join("vwire.log");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(vwire_bin());
                c
            }
            None => Command::new(vwire_bin()),
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn vwire");
        self.children.push(child);
        log
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs pktgen (inside `netns` if given); returns its exit status, JSON (if written) and stderr.
fn pktgen(netns: Option<&str>, args: &[&str]) -> (Option<i32>, Option<Value>, String) {
    let dir = std::env::temp_dir().join(unique("pgt-out-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let json = dir.join("out.json");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, PKTGEN]);
            c
        }
        None => Command::new(PKTGEN),
    };
    let mut full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    if matches!(args.first(), Some(&"run") | Some(&"rfc2544")) {
        full.push("--json".into());
        full.push(json.display().to_string());
    }
    let out = cmd.args(&full).output().expect("run vwire-pktgen");
    let v = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code(),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wait_for(what: &str, log: &Path, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{what} did not happen in 20 s; vwire log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Exact accounting of one stream: everything sent arrived once, in order.
fn assert_exact(v: &Value, count: u64, log: &Path) {
    let t = &v["trials"][0];
    let s = &t["streams"][0];
    let logs = std::fs::read_to_string(log).unwrap_or_default();
    assert_eq!(s["sent"], count, "sent: {s}\nvwire log:\n{logs}");
    assert_eq!(s["received"], count, "received: {s}\nvwire log:\n{logs}");
    assert_eq!(s["lost"], 0, "{s}");
    assert_eq!(s["duplicates"], 0, "{s}");
    assert_eq!(s["reordered"], 0, "{s}");
    assert_eq!(t["rx"][0]["stale"], 0, "{t}");
    let lat = &t["latency"];
    assert_eq!(lat["count"], count, "every frame has a latency sample");
    let (p50, max) = (lat["p50"].as_u64().unwrap(), lat["max"].as_u64().unwrap());
    assert!(p50 > 0 && p50 <= max, "latency {lat}");
}

fn memif_config(dir: &Path, metrics_port: u16) -> String {
    format!(
        "[dataplane]\nworkers = [{cpu}]\npoll = \"adaptive\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
         [[port]]\nname = \"a\"\ntype = \"memif\"\nsocket = \"{d}/a.sock\"\nrole = \"server\"\n\
         [[port]]\nname = \"b\"\ntype = \"memif\"\nsocket = \"{d}/b.sock\"\nrole = \"server\"\n\
         [[xconnect]]\na = \"a\"\nb = \"b\"\n",
        cpu = cpus() - 1,
        d = dir.display()
    )
}

fn metrics_port() -> u16 {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    u16::try_from(20_000 + (std::process::id() as usize % 20_000) + n * 7).unwrap_or(29_999)
}

/// pktgen's `--port` specs of memif clients `a` and `b` of [`memif_dut`]'s sockets in `dir`.
fn memif_clients(dir: &std::path::Path) -> (String, String) {
    (
        format!("a=memif:client:{}/a.sock", dir.display()),
        format!("b=memif:client:{}/b.sock", dir.display()),
    )
}

/// Starts vwire with two memif servers and waits for both sockets.
fn memif_dut(lab: &mut Lab) -> (PathBuf, PathBuf) {
    let dir = lab.dir("pgt-memif-");
    let log = lab.vwire(&dir, &memif_config(&dir, metrics_port()), None);
    let (a, b) = (dir.join("a.sock"), dir.join("b.sock"));
    wait_for("vwire's memif sockets", &log, || a.exists() && b.exists());
    (dir, log)
}

#[test]
fn memif_counts_match_exactly_at_a_low_rate() {
    require_root();
    let mut lab = Lab::default();
    let (dir, log) = memif_dut(&mut lab);
    let (a, b) = memif_clients(&dir);
    let (code, v, err) = pktgen(
        None,
        &[
            "run", "--port", &a, "--port", &b, "--tx", "a", "--rx", "b", "--rate", "20k",
            "--count", "20000", "--size", "128", "--cores", "0", "--quiet",
        ],
    );
    assert_eq!(code, Some(0), "pktgen failed: {err}");
    assert_exact(&v.expect("JSON results"), 20000, &log);

    // Both directions at once, IMIX, 16 flows: still exact.
    let (code, v, err) = pktgen(
        None,
        &[
            "run", "--port", &a, "--port", &b, "--tx", "a,b", "--rx", "a,b", "--rate", "10k",
            "--count", "12000", "--size", "imix", "--flows", "16", "--cores", "0", "--quiet",
        ],
    );
    assert_eq!(code, Some(0), "pktgen failed: {err}");
    let v = v.expect("JSON results");
    for s in v["trials"][0]["streams"].as_array().unwrap() {
        assert_eq!(s["sent"], 12000, "{s}");
        assert_eq!(s["received"], 12000, "{s}");
        assert_eq!(s["duplicates"], 0);
        assert_eq!(s["reordered"], 0);
    }
}

#[test]
fn afxdp_veths_counts_match_exactly_at_a_low_rate() {
    require_root();
    let mut lab = Lab::default();
    let gen = lab.netns("pgtg");
    let dut = lab.netns("pgtd");
    for (g, d) in [("pg0", "vw0"), ("pg1", "vw1")] {
        must(&format!(
            "ip link add {g} netns {gen} type veth peer name {d} netns {dut}"
        ));
        for (ns, i) in [(&gen, g), (&dut, d)] {
            // No IPv6 on the test links: no router or neighbour solicitations among the frames.
            must(&format!(
                "ip netns exec {ns} sysctl -qw net.ipv6.conf.{i}.disable_ipv6=1; ip -n {ns} link set {i} up"
            ));
        }
    }
    let dir = lab.dir("pgt-xdp-");
    let config = format!(
        "[dataplane]\nworkers = [{cpu}]\npoll = \"adaptive\"\n\
         [[port]]\nname = \"a\"\ntype = \"afxdp\"\ninterface = \"vw0\"\n\
         [[port]]\nname = \"b\"\ntype = \"afxdp\"\ninterface = \"vw1\"\n\
         [[xconnect]]\na = \"a\"\nb = \"b\"\n",
        cpu = cpus() - 1
    );
    let log = lab.vwire(&dir, &config, Some(&dut));
    wait_for("vwire's XDP programs on vw0 and vw1", &log, || {
        ["vw0", "vw1"].iter().all(|i| {
            String::from_utf8_lossy(&sh(&format!("ip -n {dut} link show {i}")).stdout)
                .contains("xdp")
        })
    });
    let (code, v, err) = pktgen(
        Some(&gen),
        &[
            "run",
            "--port",
            "a=afxdp:pg0",
            "--port",
            "b=afxdp:pg1",
            "--tx",
            "a",
            "--rx",
            "b",
            "--rate",
            "20k",
            "--count",
            "20000",
            "--size",
            "64",
            "--cores",
            "0",
            "--quiet",
        ],
    );
    assert_eq!(code, Some(0), "pktgen failed: {err}");
    assert_exact(&v.expect("JSON results"), 20000, &log);

    // IPv6 at 1518 bytes, the other way, from pktgen in the root namespace opening its ports
    // inside the generator's (afxdp:IFNAME@NETNS).
    let (pa, pb) = (format!("a=afxdp:pg0@{gen}"), format!("b=afxdp:pg1@{gen}"));
    let (code, v, err) = pktgen(
        None,
        &[
            "run", "--port", &pa, "--port", &pb, "--tx", "b", "--rx", "a", "--rate", "10k",
            "--count", "5000", "--size", "1518", "--src-ip", "fd00::1", "--dst-ip", "fd00::2",
            "--cores", "0", "--quiet",
        ],
    );
    assert_eq!(code, Some(0), "pktgen failed: {err}");
    assert_exact(&v.expect("JSON results"), 5000, &log);
}

#[test]
fn a_sweep_produces_a_report_and_plots() {
    require_root();
    let mut lab = Lab::default();
    let (dir, log) = memif_dut(&mut lab);
    let (a, b) = memif_clients(&dir);
    let (code, v, err) = pktgen(
        None,
        &[
            "rfc2544",
            "--port",
            &a,
            "--port",
            &b,
            "--tx",
            "a",
            "--rx",
            "b",
            "--sizes",
            "64,1518,9000",
            "--trial",
            "0.5",
            "--latency-trial",
            "0.5",
            "--max-iterations",
            "3",
            "--max-rate",
            "2M",
            // What is checked is the report, not the machine: on a shared VM a preempted vwire
            // loses frames at any rate, so allow loss and retry instead of expecting zero.
            "--loss",
            "0.2",
            "--retries",
            "2",
            "--cores",
            "0",
            "--quiet",
            "--label",
            "vwire",
        ],
    );
    assert_eq!(
        code,
        Some(0),
        "rfc2544 failed: {err}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let v = v.expect("JSON results");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    for r in results {
        assert!(r["skipped"].is_null(), "memif carries every size: {r}");
        assert!(r["throughput_pps"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["latency"]["p50"].as_u64().unwrap() > 0, "{r}");
    }
    let json = dir.join("sweep.json");
    std::fs::write(&json, v.to_string()).unwrap();
    let out = Command::new(PKTGEN)
        .args(["plot", "--out"])
        .arg(dir.join("plots"))
        .arg(&json)
        .output()
        .expect("plot");
    assert!(
        out.status.success(),
        "plot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "throughput_mpps.svg",
        "throughput_gbps.svg",
        "latency.svg",
        "latency_hist_64.svg",
    ] {
        let text = std::fs::read_to_string(dir.join("plots").join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(text.contains("<svg") && text.contains("vwire"), "{f}");
    }
}

#[test]
fn bad_options_get_clear_errors() {
    require_root();
    for (args, needle) in [
        (
            &["run", "--port", "a=tap:x", "--tx", "a"][..],
            "the kind is afxdp: or memif:",
        ),
        (
            &["run", "--port", "a=afxdp:x", "--tx", "b"][..],
            "\"b\" is not the name of a --port",
        ),
        (
            &["run", "--port", "a=afxdp:x", "--tx", "a", "--rate", "fast"][..],
            "--rate",
        ),
        (
            &["run", "--port", "a=afxdp:x", "--tx", "a", "--size", "10"][..],
            "64 to 9018",
        ),
        (
            &[
                "run",
                "--port",
                "a=afxdp:x",
                "--tx",
                "a",
                "--encap",
                "vxlan:99999999",
            ][..],
            "VNI",
        ),
        (
            &[
                "run",
                "--port",
                "a=afxdp:x",
                "--tx",
                "a",
                "--src-ip",
                "fd00::1",
                "--dst-ip",
                "fd00::2",
            ][..],
            "needs at least 84 bytes",
        ),
        (
            &[
                "run",
                "--port",
                "a=afxdp:x",
                "--tx",
                "a",
                "--dst-ip",
                "fd00::2",
            ][..],
            "must both be IPv4 or both IPv6",
        ),
        (
            &["run", "--port", "a=afxdp:nosuchif0", "--tx", "a"][..],
            "no network interface named \"nosuchif0\"",
        ),
        (
            &["run", "--port", "a=afxdp:x", "--tx", "a", "--count", "5"][..],
            "needs a paced --rate",
        ),
        (
            &[
                "rfc2544",
                "--port",
                "a=afxdp:x",
                "--tx",
                "a",
                "--rx",
                "a",
                "--loss",
                "2",
            ][..],
            "--loss",
        ),
        (&["run", "--tx", "a"][..], "--port"),
    ] {
        let out = Command::new(PKTGEN).args(args).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
    }
    // A memif peer that never comes: a run-time failure (1), saying what it waited for.
    let dir = std::env::temp_dir().join(unique("pgt-nopeer-"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = format!("a=memif:client:{}/none.sock", dir.display());
    let out = Command::new(PKTGEN)
        .args([
            "run",
            "--port",
            &port,
            "--tx",
            "a",
            "--connect-timeout",
            "1",
        ])
        .output()
        .expect("run");
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not connected after 1 s"), "{err}");
}

#[test]
fn memif_server_to_client_in_one_process() {
    require_root();
    let mut lab = Lab::default();
    let dir = lab.dir("pgt-loop-");
    let a = format!("a=memif:server:{}/x.sock", dir.display());
    let b = format!("b=memif:client:{}/x.sock", dir.display());
    let (code, v, err) = pktgen(
        None,
        &[
            "run", "--port", &a, "--port", &b, "--tx", "a,b", "--rx", "a,b", "--rate", "50k",
            "--count", "20000", "--size", "9000", "--quiet",
        ],
    );
    assert_eq!(code, Some(0), "pktgen failed: {err}");
    let v = v.expect("JSON results");
    for s in v["trials"][0]["streams"].as_array().unwrap() {
        assert_eq!(s["sent"], 20000, "{s}");
        assert_eq!(s["received"], 20000, "{s}");
        assert_eq!(s["duplicates"], 0, "{s}");
        assert_eq!(s["reordered"], 0, "{s}");
    }
}
