//! `vwire-nsc` against a `vwire-nse` (no forwarder in between): the `connected` line, refreshes,
//! Close on SIGTERM, and exit status 1 with the gRPC status when the first Request fails.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn term_and_wait(&mut self) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.0.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        wait(&mut self.0)
    }
}

fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "vwire-nsc-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start_nse(sock: &std::path::Path, cidr: &str) -> Proc {
    let p = Proc(
        Command::new(env!("CARGO_BIN_EXE_vwire-nse"))
            .args(["--listen", &format!("unix://{}", sock.display())])
            .args(["--name", "nse-1", "--cidr", cidr])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "no NSE socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

fn nsc(sock: &std::path::Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vwire-nsc"))
        .args(["--connect", &format!("unix://{}", sock.display())])
        .args(extra)
        .env("RUST_LOG", "info,vwire_nsc=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The stdout lines of `child`, as they come.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    rx
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

#[test]
fn nsc_connects_refreshes_closes_and_fails_cleanly() {
    let dir = temp_dir();
    let sock = dir.join("nse.sock");
    let _nse = start_nse(&sock, "172.16.1.254/31"); // a single pair

    let mut a = Proc(nsc(&sock, &["--refresh", "200ms", "--iface", "nsm-7"]));
    let rx = lines(&mut a.0);
    let line = rx.recv_timeout(Duration::from_secs(5)).expect("a line");
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.len(), 4, "{line}");
    assert_eq!(f[0], "connected");
    assert_eq!(f[1].len(), 36, "a UUID: {line}");
    assert_eq!((f[2], f[3]), ("172.16.1.255", "172.16.1.254"), "{line}");

    // The pool is full while the first client holds its pair: the second one fails with status 1.
    let mut b = nsc(&sock, &["--name", "nsc-2"]);
    let status = wait(&mut b);
    assert_eq!(status.code(), Some(1));
    let err = stderr_of(&mut b);
    assert!(err.contains("ResourceExhausted"), "{err}");

    std::thread::sleep(Duration::from_millis(700)); // a few refreshes
    let status = a.term_and_wait();
    assert!(status.success(), "{status:?}");
    let err = stderr_of(&mut a.0);
    assert!(err.matches("refreshed").count() >= 2, "{err}");
    assert!(!err.contains("refresh failed"), "{err}");
    assert!(err.contains("closed"), "{err}");
    assert!(rx.try_recv().is_err(), "exactly one stdout line");

    // Close freed the pair: the next client gets it.
    let mut c = Proc(nsc(&sock, &["--name", "nsc-3", "--payload", "IP"]));
    let rx = lines(&mut c.0);
    let line = rx.recv_timeout(Duration::from_secs(5)).expect("a line");
    assert!(line.ends_with(" 172.16.1.255 172.16.1.254"), "{line}");
    assert!(c.term_and_wait().success());

    // Nothing listening: exit status 1.
    let mut d = nsc(&dir.join("missing.sock"), &[]);
    assert_eq!(wait(&mut d).code(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}
