//! The memif control socket: `AF_UNIX` / `SOCK_SEQPACKET`, one 128-byte message per datagram,
//! at most one file descriptor per message as `SCM_RIGHTS` (spec §2).
//!
//! Addresses: a filesystem path, or `@name` for an abstract name (`sun_path[0] = 0`, the name
//! with no trailing NUL, and an address length that counts exactly those bytes). Abstract names
//! live in a network namespace: [`socket_in_netns`] creates the socket inside another namespace
//! from a short-lived thread (setns is per thread), and the socket stays bound to that namespace.
//!
//! All sockets are non-blocking; the driver waits for readiness with tokio's `AsyncFd`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::msg::MSG_SIZE;
use super::MemifError;

/// A socket address as given in the config.
pub fn sockaddr(name: &str) -> Result<(libc::sockaddr_un, libc::socklen_t), MemifError> {
    // SAFETY: sockaddr_un is plain data; zeroed is a valid empty address.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX).unwrap_or_default();
    let (bytes, abstract_) = match name.strip_prefix('@') {
        Some(n) => (n.as_bytes(), true),
        None => (name.as_bytes(), false),
    };
    // Room: filesystem paths need a NUL; abstract names need the leading 0.
    if bytes.is_empty() || bytes.len() + 1 > sa.sun_path.len() || bytes.contains(&0) {
        return Err(MemifError::Config(format!(
            "{name:?} is not a usable socket name"
        )));
    }
    let start = usize::from(abstract_);
    for (d, s) in sa.sun_path[start..].iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let base = std::mem::size_of::<libc::sa_family_t>();
    let len = if abstract_ {
        base + 1 + bytes.len()
    } else {
        std::mem::size_of::<libc::sockaddr_un>()
    };
    Ok((sa, libc::socklen_t::try_from(len).unwrap_or(0)))
}

/// A new non-blocking SOCK_SEQPACKET socket in this thread's network namespace.
pub fn socket() -> Result<OwnedFd, MemifError> {
    // SAFETY: plain socket(2); checked and owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(MemifError::io("socket(AF_UNIX, SOCK_SEQPACKET)"));
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new socket created inside the network namespace at `netns` (a `/proc/<pid>/ns/net` or
/// `/var/run/netns/<name>` file), or in ours if `None`.
pub fn socket_in_netns(netns: Option<&Path>) -> Result<OwnedFd, MemifError> {
    let Some(path) = netns else { return socket() };
    let file = std::fs::File::open(path)
        .map_err(|e| MemifError::Config(format!("netns {}: {e}", path.display())))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this short-lived thread only; the namespace fd is live.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(MemifError::io("setns into the memif socket's netns"));
            }
            socket()
        })
        .join()
        .unwrap_or_else(|_| Err(MemifError::Protocol("netns thread panicked".into())))
    })
}

/// Binds and listens (server). A stale filesystem socket nobody answers on is removed first.
pub fn listen(fd: &OwnedFd, name: &str) -> Result<(), MemifError> {
    let (sa, len) = sockaddr(name)?;
    if !name.starts_with('@') && Path::new(name).exists() {
        let probe = socket()?;
        if connect(&probe, name).is_err() {
            let _ = std::fs::remove_file(name);
        }
    }
    // SAFETY: binds our socket to a valid address of the given length.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_un).cast(),
            len,
        )
    } != 0
    {
        return Err(MemifError::io_ctx(format!("bind {name}")));
    }
    // Credentials are received but not used (spec §2); SO_PASSCRED matches the other servers.
    let one: libc::c_int = 1;
    // SAFETY: sets an int option from a live int.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&one as *const libc::c_int).cast(),
            4,
        )
    };
    // SAFETY: plain listen on our socket.
    if unsafe { libc::listen(fd.as_raw_fd(), 8) } != 0 {
        return Err(MemifError::io_ctx(format!("listen {name}")));
    }
    Ok(())
}

/// Connects (client). Unix sockets connect at once or fail.
pub fn connect(fd: &OwnedFd, name: &str) -> Result<(), MemifError> {
    let (sa, len) = sockaddr(name)?;
    // SAFETY: connects our socket to a valid address of the given length.
    if unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_un).cast(),
            len,
        )
    } != 0
    {
        return Err(MemifError::io_ctx(format!("connect {name}")));
    }
    Ok(())
}

/// Accepts one connection, non-blocking. `Ok(None)`: nobody waiting.
pub fn accept(fd: &OwnedFd) -> Result<Option<OwnedFd>, MemifError> {
    // SAFETY: accept4 with no address buffers.
    let c = unsafe {
        libc::accept4(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if c < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err(MemifError::Io("accept".into(), e));
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(c) }))
}

/// Sends one message with an optional fd. `Ok(false)`: would block.
pub fn send(fd: &OwnedFd, msg: &[u8; MSG_SIZE], pass: Option<RawFd>) -> Result<bool, MemifError> {
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut libc::c_void,
        iov_len: MSG_SIZE,
    };
    // One fd: CMSG_SPACE(sizeof(int)) = 24 bytes on 64-bit; u64 alignment as cmsghdr needs.
    let mut cbuf = [0u64; 4];
    // SAFETY: msghdr is plain data; zeroed is an empty header.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    if let Some(pfd) = pass {
        mh.msg_control = cbuf.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure size computation.
        mh.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as _;
        // SAFETY: the control buffer is large enough for one cmsghdr carrying one int, so
        // CMSG_FIRSTHDR is non-null and CMSG_DATA points inside `cbuf`.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as _;
            libc::CMSG_DATA(c)
                .cast::<libc::c_int>()
                .write_unaligned(pfd);
        }
    }
    // SAFETY: mh points to live iovec and control buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &mh, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(false);
        }
        return Err(MemifError::Io("sending a control message".into(), e));
    }
    Ok(true)
}

/// What [`recv`] got.
#[derive(Debug)]
pub enum Received {
    /// Nothing yet.
    WouldBlock,
    /// The peer closed the connection.
    Closed,
    /// A datagram of `len` bytes (anything but [`MSG_SIZE`] is malformed) and the first fd
    /// passed with it; any further fds are closed.
    Msg {
        /// The bytes (up to MSG_SIZE).
        buf: [u8; MSG_SIZE],
        /// The datagram's length (may exceed MSG_SIZE if truncated).
        len: usize,
        /// A passed fd.
        fd: Option<OwnedFd>,
    },
}

/// Receives one message, non-blocking.
pub fn recv(fd: &OwnedFd) -> Result<Received, MemifError> {
    let mut buf = [0u8; MSG_SIZE];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: MSG_SIZE,
    };
    // Room for several fds and a ucred, so that a hostile peer's extra fds are received (and
    // closed) rather than leaked into the truncation path.
    let mut cbuf = [0u64; 32];
    // SAFETY: msghdr is plain data; zeroed is an empty header.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.as_mut_ptr().cast();
    mh.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: mh points to live buffers for the duration of the call.
    let n = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut mh,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(Received::WouldBlock);
        }
        return Err(MemifError::Io("receiving a control message".into(), e));
    }
    if n == 0 {
        return Ok(Received::Closed);
    }
    let mut first: Option<OwnedFd> = None;
    // SAFETY: walks the control messages the kernel wrote into `cbuf`, within msg_controllen;
    // each SCM_RIGHTS payload holds (cmsg_len - CMSG_LEN(0)) / 4 fds that are now ours.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&mh);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize) / 4;
                let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
                for i in 0..count {
                    let owned = OwnedFd::from_raw_fd(data.add(i).read_unaligned());
                    if first.is_none() {
                        first = Some(owned);
                    } // else: dropped here, closing the extra fd
                }
            }
            c = libc::CMSG_NXTHDR(&mh, c);
        }
    }
    let len = usize::try_from(n).unwrap_or(0);
    let truncated = mh.msg_flags & libc::MSG_TRUNC != 0;
    Ok(Received::Msg {
        buf,
        len: if truncated { MSG_SIZE + 1 } else { len },
        fd: first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abstract_addresses_have_no_trailing_nul() {
        let (sa, len) = sockaddr("@vw").unwrap();
        assert_eq!(len as usize, 2 + 1 + 2);
        assert_eq!(sa.sun_path[0], 0);
        assert_eq!(sa.sun_path[1] as u8, b'v');
        let (sa, len) = sockaddr("/run/x.sock").unwrap();
        assert_eq!(len as usize, std::mem::size_of::<libc::sockaddr_un>());
        assert_eq!(sa.sun_path[0] as u8, b'/');
        assert!(sockaddr("@").is_err());
        assert!(sockaddr(&"x".repeat(200)).is_err());
    }

    #[test]
    fn a_message_and_an_fd_cross_a_socket_pair() {
        let name = format!("@vwire-sock-test-{}", std::process::id());
        let server = socket().unwrap();
        listen(&server, &name).unwrap();
        let client = socket().unwrap();
        connect(&client, &name).unwrap();
        let conn = accept(&server).unwrap().expect("a pending connection");
        let mut msg = [0u8; MSG_SIZE];
        msg[0] = 4;
        let memfd = super::super::shm::Region::create("t", 4096).unwrap();
        assert!(send(&client, &msg, Some(memfd.fd().as_raw_fd())).unwrap());
        match recv(&conn).unwrap() {
            Received::Msg { buf, len, fd } => {
                assert_eq!(len, MSG_SIZE);
                assert_eq!(buf[0], 4);
                assert!(fd.is_some(), "the fd arrived");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(recv(&conn).unwrap(), Received::WouldBlock));
        drop(client);
        assert!(matches!(recv(&conn).unwrap(), Received::Closed));
    }
}
