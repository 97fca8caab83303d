//! Helpers shared by the privileged tests of this crate: root check, running commands, entering
//! and deleting network namespaces. They fail loudly (panics naming the command and its output);
//! nothing here skips a test.

#![allow(dead_code)] // each test binary uses a part

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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

/// Sends raw Ethernet frames on `ifname` (call inside the namespace that has it).
pub(crate) fn send_raw(ifname: &str, frames: &[impl AsRef<[u8]>]) {
    let c = std::ffi::CString::new(ifname).expect("name");
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(ifindex, 0, "no interface {ifname}");
    // SAFETY: plain socket(2); the result is checked and then owned.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(
        raw >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>()).expect("len");
    for f in frames {
        let f = f.as_ref();
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = u16::try_from(libc::AF_PACKET).expect("AF_PACKET");
        sll.sll_protocol = u16::from_ne_bytes([f[12], f[13]]);
        sll.sll_ifindex = i32::try_from(ifindex).expect("ifindex");
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&f[..6]);
        // SAFETY: `f` and `sll` are live for the call, with the lengths passed.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                f.as_ptr().cast(),
                f.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                len,
            )
        };
        assert_eq!(
            n,
            isize::try_from(f.len()).expect("len"),
            "sendto: {}",
            std::io::Error::last_os_error()
        );
    }
}
