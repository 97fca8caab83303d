//! The single-node NSM topology of the namespace replays: an NSC namespace, an NSE namespace,
//! vwire serving the NSM API on a unix socket with one `[[endpoint]]`, and `vwire-nse` running in
//! its namespace. `vwire-nsc` is started per test with [`start_nsc`]. Everything is removed on
//! drop: processes killed, namespaces deleted.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

/// A network namespace deleted (with its processes) on drop.
pub struct Ns(pub String);
impl Ns {
    pub fn new(tag: &str) -> Self {
        let n = unique(&format!("vwk-{tag}-"));
        sh(&format!("ip netns add {n}"));
        sh(&format!("ip -n {n} link set lo up"));
        Ns(n)
    }
    pub fn exec(&self, cmd: &str) -> std::process::Output {
        run(&format!("ip netns exec {} {cmd}", self.0))
    }
    pub fn links(&self) -> String {
        sh(&format!("ip -n {} -o link show", self.0))
    }
    /// The abstract unix sockets bound in this namespace.
    pub fn abstract_sockets(&self) -> String {
        sh(&format!("ip netns exec {} ss -xlH", self.0))
    }
}
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = run(&format!("ip netns pids {} | xargs -r kill -9", self.0));
        let _ = run(&format!("ip netns del {}", self.0));
    }
}

/// A child process killed on drop.
pub struct Proc(pub Child);
impl Proc {
    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) {
        // SAFETY: signals our own child process.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An example binary, built into the same target directory as the vwire binary.
pub fn example(name: &str) -> PathBuf {
    PathBuf::from(vwire_bin()).with_file_name(name)
}

pub struct Setup {
    pub nsc: Ns,
    pub nse: Ns,
    pub dir: PathBuf,
    pub vw: Vwire,
    pub nse_proc: Proc,
    /// vwire-nse's stdout.
    pub nse_out: Lines,
}

/// A child's stdout, line by line, read on a thread so that waits can time out.
pub struct Lines(mpsc::Receiver<String>);

impl Lines {
    pub fn new(out: ChildStdout) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines(rx)
    }

    /// The next line starting with `prefix` (others are skipped), within `limit`; fails naming
    /// `what` otherwise.
    pub fn wait(&self, prefix: &str, limit: Duration, what: &str) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("{what} printed no {prefix:?} line within {limit:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("{what} exited before printing a {prefix:?} line")
                }
            }
        }
    }
}

/// The configuration of the vwire of [`setup`], whose sockets are in `dir`.
pub fn fwd_config(dir: &std::path::Path) -> String {
    format!(
        "[dataplane]\nworkers = [1]\n[nsm]\nname = \"fwd\"\nlisten_on = \"unix://{d}/fwd.sock\"\ninsecure = true\ntunnel_ip = \"none\"\nstate_dir = \"{d}/state\"\n\
         [[endpoint]]\nname = \"nse-1\"\nurl = \"unix://{d}/nse.sock\"\nservice = \"icmp-responder\"\n",
        d = dir.display()
    )
}

/// Starts vwire and `vwire-nse` (with `nse_args` added to its command line).
pub fn setup(nse_args: &[&str]) -> Setup {
    require(&["ip", "ping", "ss"]);
    assert!(
        example("vwire-nse").exists(),
        "build the examples first: cargo build -p vwire-examples"
    );
    let nsc = Ns::new("c");
    let nse = Ns::new("e");
    let dir = temp_file("x", "").with_file_name("");
    let vw = Vwire::start(&fwd_config(&dir));
    let mut child = Command::new("ip")
        .args(["netns", "exec", &nse.0])
        .arg(example("vwire-nse"))
        .args([
            "--listen",
            &format!("unix://{}/nse.sock", dir.display()),
            "--cidr",
            "172.16.1.100/31",
        ])
        .args(nse_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vwire-nse");
    let nse_out = Lines::new(child.stdout.take().expect("stdout"));
    let t0 = Instant::now();
    // Connectable, not only present: the file appears at bind(), before listen().
    while std::os::unix::net::UnixStream::connect(dir.join("nse.sock")).is_err() {
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
        nse_proc: Proc(child),
        nse_out,
    }
}

/// A running vwire-nsc and its stdout.
pub struct Nsc {
    pub proc: Proc,
    pub out: Lines,
    /// Its `connected <id> <src> <dst>` line.
    pub line: String,
}

/// Starts vwire-nsc in the NSC namespace and waits for its `connected` line.
pub fn start_nsc(s: &Setup, extra: &[&str]) -> Nsc {
    start_nsc_at(s, &s.dir.join("fwd.sock"), extra)
}

/// [`start_nsc`] asking the NSM API at `socket` (vwire's, or an nsmgr stand-in's).
pub fn start_nsc_at(s: &Setup, socket: &std::path::Path, extra: &[&str]) -> Nsc {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &s.nsc.0])
        .arg(example("vwire-nsc"))
        .args(["--connect", &format!("unix://{}", socket.display())])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vwire-nsc");
    let out = Lines::new(child.stdout.take().expect("stdout"));
    let line = out.wait("", Duration::from_secs(20), "vwire-nsc");
    assert!(
        line.starts_with("connected "),
        "vwire-nsc: {line:?}\n{}",
        s.vw.logs()
    );
    Nsc {
        proc: Proc(child),
        out,
        line,
    }
}

/// Pings `dst` from namespace `ns` with the kernel's ping, 56- and 3000-byte payloads, 3 each;
/// fails with ping's output and vwire's logs.
pub fn kernel_ping(s: &Setup, ns: &Ns, dst: &str) {
    for size in [56, 3000] {
        let out = ns.exec(&format!("ping -c 3 -i 0.2 -W 2 -s {size} {dst}"));
        assert!(
            out.status.success(),
            "ping -s {size} {dst} in {}: {}\n{}",
            ns.0,
            String::from_utf8_lossy(&out.stdout),
            s.vw.logs()
        );
    }
}

pub fn ifindex(ns: &Ns, name: &str) -> String {
    let out = sh(&format!("ip -n {} -o link show dev {name}", ns.0));
    out.split(':').next().unwrap_or_default().to_string()
}

/// Waits until no connection interface or memif socket is left on the host or in either
/// namespace (at most 5 s), and fails naming what is left.
pub fn nothing_left(s: &Setup) {
    let t0 = Instant::now();
    loop {
        let host = sh("ip -o link show");
        let nsc_socks = s.nsc.abstract_sockets();
        let nse_socks = s.nse.abstract_sockets();
        let clean = !host.contains(" vwc")
            && !host.contains(" vwe")
            && !s.nsc.links().contains("nsm-")
            && !s.nse.links().contains("nse-")
            && !nsc_socks.contains("/run/vwire/memif")
            && !nse_socks.contains("vwire-nse/");
        if clean {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "left behind:\nhost: {host}\nnsc: {}\nnse: {}\nnsc sockets: {nsc_socks}\nnse sockets: {nse_socks}",
            s.nsc.links(),
            s.nse.links()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A KERNEL Request for icmp-responder from the client namespace `ns`: a fresh connection id,
/// the client's path segment with a token expiring in `expires_in`, and interface `iface`.
pub fn kernel_request(
    ns: &Ns,
    iface: &str,
    expires_in: Duration,
) -> vwire_proto::networkservice::NetworkServiceRequest {
    use vwire_proto::connection::{Connection, Mechanism, Path, PathSegment};
    let id = format!("test-{}", unique(""));
    let at = std::time::SystemTime::now() + expires_in;
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap();
    let expires = prost_types::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    };
    vwire_proto::networkservice::NetworkServiceRequest {
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
                    format!("file:///var/run/netns/{}", ns.0),
                ),
                ("name".to_string(), iface.to_string()),
            ]
            .into(),
        }],
    }
}
