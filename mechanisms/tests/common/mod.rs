//! Helpers shared by the privileged tests of this crate: root check, running commands, entering
//! and deleting network namespaces. They fail loudly (panics naming the command and its output);
//! nothing here skips a test.

#![allow(dead_code)] // each test binary uses a part

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

/// Fails the test unless it runs as root (CI does); `what` says why root is needed.
pub(crate) fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root ({what}); run it as root, as CI does"
    );
}

/// Runs a command, asserts that it succeeded, returns its stdout.
pub(crate) fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// [`run`] of a command line whose words are separated by spaces (no quoting).
pub(crate) fn run_line(cmd: &str) -> String {
    run(&cmd.split_whitespace().collect::<Vec<_>>())
}

/// Runs a command and reports only whether it succeeded.
pub(crate) fn succeeds(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Deletes a named network namespace (and so the interfaces in it); warns if it cannot. For
/// guards' `Drop`: an empty name is nothing to delete.
pub(crate) fn delete_netns(name: &str) {
    if !name.is_empty() && !succeeds(&["ip", "netns", "del", name]) {
        eprintln!("warning: could not delete test namespace {name}");
    }
}

/// Enters namespace `ns` on the calling thread (which must be a thread of its own, ending when
/// `f` returns), then runs `f`.
pub(crate) fn enter_then<T>(ns: &str, f: impl FnOnce() -> T) -> T {
    let file = File::open(format!("/var/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("cannot open namespace {ns}: {e}"));
    // SAFETY: `file` is an open namespace file; setns changes only this thread's network
    // namespace, and the callers run this on a thread that ends when `f` returns.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    f()
}

/// Runs `f` on a thread that has entered namespace `ns`: sockets it creates live there, and may
/// be used from any thread afterwards. A panic in `f` is re-raised here.
pub(crate) fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| enter_then(ns, f))
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}
