//! An interface nobody uses, in a network namespace of its own, that keeps a program attached
//! (and so in the kernel's XDP dispatcher) while no port has it: see
//! [`super::SharedProgram::keep_attached`].
//!
//! The namespace is created by `unshare(CLONE_NEWNET)` on a short-lived thread (only that thread
//! enters it) and held by an fd of this process, never named or mounted; inside, a veth pair,
//! both ends down, gets the program through a bpf_link (native mode, else generic). No frame
//! ever crosses it. When the process exits or crashes, the kernel closes both fds: the link
//! detaches and the namespace, with its veth, is destroyed. Nothing is left behind.
//!
//! The veth is created with one hand-built `RTM_NEWLINK` request on a netlink socket opened in
//! the new namespace (message layout from `linux/netlink.h`, `linux/rtnetlink.h`,
//! `linux/if_link.h`), so this needs no netlink library and no runtime.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::afxdp::error::AfXdpError;
use crate::afxdp::sys::{ifindex, link_create};

/// The anchor veth's name, inside its private namespace (its peer is named by the kernel).
const ANCHOR_IF: &str = "vwire-anchor";

const RTM_NEWLINK: u16 = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
/// `struct nlmsghdr` and `struct ifinfomsg`.
const NLMSG_HDR_LEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

/// A program attached to a veth of a private namespace, for as long as this value lives.
#[derive(Debug)]
pub(crate) struct Anchor {
    // Field order is drop order: the link detaches, then the namespace (and its veth) goes.
    _link: OwnedFd,
    _netns: OwnedFd,
}

impl Anchor {
    /// Creates the namespace and its veth and attaches `prog` there. Needs CAP_SYS_ADMIN (a
    /// new namespace) besides what attaching XDP needs. Blocks for tens of milliseconds: the
    /// attach is the one that adds the program to the dispatcher, if no port has it yet.
    pub(crate) fn new(prog: &OwnedFd) -> Result<Self, AfXdpError> {
        std::thread::scope(|s| {
            s.spawn(|| Self::in_new_netns(prog))
                .join()
                .unwrap_or_else(|_| Err(anchor_err("the anchor thread", libc::EIO)))
        })
    }

    /// Runs on its own thread, which it moves to a new namespace: the thread ends right after.
    fn in_new_netns(prog: &OwnedFd) -> Result<Self, AfXdpError> {
        let os = |what: &'static str| {
            move |source| AfXdpError::Bpf {
                ifname: ANCHOR_IF.to_string(),
                what,
                source,
            }
        };
        // SAFETY: unshare takes no pointers; CLONE_NEWNET moves only the calling thread, a
        // scoped thread of `Anchor::new` that exits when this function returns.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(os("creating the anchor's network namespace")(
                std::io::Error::last_os_error(),
            ));
        }
        let netns: OwnedFd = File::open("/proc/thread-self/ns/net")
            .map_err(os("holding the anchor's network namespace"))?
            .into();
        create_veth(ANCHOR_IF).map_err(os("creating the anchor veth"))?;
        let index =
            ifindex(ANCHOR_IF).ok_or_else(|| anchor_err("the anchor veth", libc::ENODEV))?;
        let (link, _mode) = link_create(ANCHOR_IF, index, prog, true)?;
        Ok(Self {
            _link: link,
            _netns: netns,
        })
    }
}

fn anchor_err(what: &'static str, errno: i32) -> AfXdpError {
    AfXdpError::Bpf {
        ifname: ANCHOR_IF.to_string(),
        what,
        source: std::io::Error::from_raw_os_error(errno),
    }
}

/// Appends a netlink attribute (`struct rtattr` and its payload, padded to 4 bytes).
fn push_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(4 + payload.len())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EMSGSIZE))?;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
    Ok(())
}

/// The `RTM_NEWLINK` request that creates veth `name` (its peer named by the kernel), with
/// sequence number `seq`. Pure.
fn newlink_veth(name: &str, seq: u32) -> std::io::Result<Vec<u8>> {
    let mut m = vec![0u8; NLMSG_HDR_LEN + IFINFOMSG_LEN]; // ifinfomsg: all zero (AF_UNSPEC)
    let mut ifname = name.as_bytes().to_vec();
    ifname.push(0);
    push_attr(&mut m, IFLA_IFNAME, &ifname)?;
    let mut info = Vec::new();
    push_attr(&mut info, IFLA_INFO_KIND, b"veth\0")?;
    push_attr(&mut m, IFLA_LINKINFO, &info)?;
    let len =
        u32::try_from(m.len()).map_err(|_| std::io::Error::from_raw_os_error(libc::EMSGSIZE))?;
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel fills in the port.
    Ok(m)
}

/// The result an `NLMSG_ERROR` reply carries (0 is an acknowledgement); `None` for any other
/// message.
fn ack_errno(reply: &[u8]) -> Option<i32> {
    let kind = u16::from_ne_bytes(reply.get(4..6)?.try_into().ok()?);
    if kind != NLMSG_ERROR {
        return None;
    }
    Some(i32::from_ne_bytes(
        reply
            .get(NLMSG_HDR_LEN..NLMSG_HDR_LEN + 4)?
            .try_into()
            .ok()?,
    ))
}

/// Creates veth `name` in the calling thread's namespace and waits for the kernel's answer.
fn create_veth(name: &str) -> std::io::Result<()> {
    let req = newlink_veth(name, 1)?;
    // SAFETY: plain socket(2); the result is checked and then owned.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // The kernel answers a request at once; the timeout only bounds a broken kernel.
    let timeout = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: passes a live timeval with its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::timeval>()).unwrap_or(0),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: sockaddr_nl is plain old data; all-zero (then the family) addresses the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = u16::try_from(libc::AF_NETLINK).unwrap_or(0);
    // SAFETY: `req` and `kernel` are live for the call, with the lengths passed.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_nl>()).unwrap_or(0),
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut reply = [0u8; 4096];
    // Only the acknowledgement comes back on this socket (it joined no multicast group).
    for _ in 0..8 {
        // SAFETY: `reply` is live and writable for its full length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
        let n = usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?;
        match reply.get(..n).and_then(ack_errno) {
            Some(0) => return Ok(()),
            Some(e) => return Err(std::io::Error::from_raw_os_error(-e)),
            None => continue,
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::EPROTO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlink_request_layout() {
        let m = newlink_veth("ab", 7).expect("small");
        // header 16, ifinfomsg 16, IFLA_IFNAME "ab\0" (4 + 3, padded to 8), IFLA_LINKINFO with
        // IFLA_INFO_KIND "veth\0" inside (4 + (4 + 5 padded to 12) = 16).
        assert_eq!(m.len(), 16 + 16 + 8 + 16);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 56);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_NEWLINK);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 0x605);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert!(
            m[12..32].iter().all(|&b| b == 0),
            "pid and ifinfomsg are zero"
        );
        assert_eq!(u16::from_ne_bytes([m[32], m[33]]), 7);
        assert_eq!(u16::from_ne_bytes([m[34], m[35]]), IFLA_IFNAME);
        assert_eq!(&m[36..40], b"ab\0\0");
        assert_eq!(u16::from_ne_bytes([m[40], m[41]]), 16);
        assert_eq!(u16::from_ne_bytes([m[42], m[43]]), IFLA_LINKINFO);
        assert_eq!(u16::from_ne_bytes([m[44], m[45]]), 9);
        assert_eq!(u16::from_ne_bytes([m[46], m[47]]), IFLA_INFO_KIND);
        assert_eq!(&m[48..56], b"veth\0\0\0\0");
    }

    #[test]
    fn acks_and_errors_are_told_apart() {
        let mut r = vec![0u8; 36];
        r[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(ack_errno(&r), Some(0));
        r[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        assert_eq!(ack_errno(&r), Some(-libc::EEXIST));
        r[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
        assert_eq!(ack_errno(&r), None, "not an error message");
        assert_eq!(ack_errno(&r[..10]), None, "truncated");
    }
}
