//! A grpcfd peer written from the protocol alone (raw `sendmsg`/`recvmsg` with `SCM_RIGHTS`,
//! none of vwire's grpcfd code), to run plain tonic servers and channels over: one byte and one
//! fd per message as upstream grpcfd sends them (or all in one batch, for a hostile peer), and
//! every received fd kept in an inbox. Its per-connection state reaches tonic handlers as the
//! request extension `Arc<PeerFds>`.

#![allow(clippy::cast_possible_truncation)] // fd counts and sizes of a few hundred bytes

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

/// Control space for one read of the peer: SCM_MAX_FD (253) fds, more than anyone sends.
pub const PEER_CMSG_FDS: usize = 253;

/// How the peer attaches fds to a write.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// As upstream grpcfd: one byte and one fd per message, at most 64 per write.
    PerByte,
    /// All queued fds in one message with the whole write (a peer that does not follow the rule).
    Batch,
}

/// One peer connection's fd state.
pub struct PeerFds {
    pub attach: Attach,
    pub outbox: Mutex<VecDeque<OwnedFd>>,
    pub inbox: Mutex<Vec<OwnedFd>>,
    /// The fd count of every fd-carrying message read.
    pub per_message: Mutex<Vec<usize>>,
}

impl PeerFds {
    pub fn new(attach: Attach) -> Arc<Self> {
        Arc::new(Self {
            attach,
            outbox: Mutex::new(VecDeque::new()),
            inbox: Mutex::new(Vec::new()),
            per_message: Mutex::new(Vec::new()),
        })
    }

    /// Queues a dup of `f`, returning its URL written by hand.
    pub fn queue(&self, f: &std::fs::File) -> String {
        let m = f.metadata().unwrap();
        self.outbox
            .lock()
            .unwrap()
            .push_back(f.as_fd().try_clone_to_owned().unwrap());
        format!("inode://{}/{}", m.dev(), m.ino())
    }

    /// Waits up to 2 s for a received fd with this URL's dev and ino.
    pub async fn find(&self, url: &str) -> Option<OwnedFd> {
        let (dev, ino) = url.strip_prefix("inode://")?.split_once('/')?;
        let (dev, ino): (u64, u64) = (dev.parse().ok()?, ino.parse().ok()?);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            for fd in self.inbox.lock().unwrap().iter() {
                let m = std::fs::File::from(fd.try_clone().unwrap())
                    .metadata()
                    .unwrap();
                if (m.dev(), m.ino()) == (dev, ino) {
                    return Some(fd.try_clone().unwrap());
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }
}

/// A unix stream that passes fds the way the protocol says.
pub struct PeerIo {
    pub io: UnixStream,
    pub fds: Arc<PeerFds>,
}

/// A `cmsghdr`-aligned control buffer.
pub fn cmsg_buf(fds: usize) -> Vec<u64> {
    // SAFETY: CMSG_SPACE is arithmetic.
    let bytes = unsafe { libc::CMSG_SPACE((fds * 4) as u32) } as usize;
    vec![0u64; bytes.div_ceil(8)]
}

pub fn peer_sendmsg(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut control = cmsg_buf(fds.len());
    // SAFETY: an all-zero msghdr is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() * 8;
    // SAFETY: the control buffer has room for one header and `fds.len()` fds.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN((fds.len() * 4) as u32) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), fds.len() * 4);
    }
    // SAFETY: everything `msg` points at lives across the call.
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

impl PeerIo {
    fn write_fds(&self, buf: &[u8]) -> io::Result<usize> {
        let sock = self.io.as_raw_fd();
        let mut out = self.fds.outbox.lock().unwrap();
        match self.fds.attach {
            Attach::Batch => {
                let raw: Vec<RawFd> = out.iter().map(|f| f.as_raw_fd()).collect();
                let n = peer_sendmsg(sock, buf, &raw)?;
                out.clear();
                Ok(n)
            }
            Attach::PerByte => {
                let mut n = 0;
                while n < buf.len().min(64) {
                    let Some(fd) = out.front() else { break };
                    match peer_sendmsg(sock, &buf[n..n + 1], &[fd.as_raw_fd()]) {
                        Ok(_) => {
                            out.pop_front();
                            n += 1;
                        }
                        Err(e) if n == 0 => return Err(e),
                        Err(_) => break,
                    }
                }
                Ok(n)
            }
        }
    }

    fn read_fds(&self, dst: &mut [u8]) -> io::Result<usize> {
        let mut iov = libc::iovec {
            iov_base: dst.as_mut_ptr().cast(),
            iov_len: dst.len(),
        };
        let mut control = cmsg_buf(PEER_CMSG_FDS);
        // SAFETY: an all-zero msghdr is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len() * 8;
        // SAFETY: `msg` points at live, writable buffers of the sizes it gives.
        let n = unsafe { libc::recvmsg(self.io.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        assert_eq!(
            msg.msg_flags & libc::MSG_CTRUNC,
            0,
            "the peer's control buffer was too small"
        );
        // SAFETY: the kernel filled msg_controllen bytes of cmsghdrs; the macros stay within.
        let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !c.is_null() {
            // SAFETY: `c` is a complete header within the control buffer.
            let (level, kind, len) = unsafe { ((*c).cmsg_level, (*c).cmsg_type, (*c).cmsg_len) };
            if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
                // SAFETY: arithmetic.
                let count = (len - unsafe { libc::CMSG_LEN(0) } as usize) / 4;
                let mut inbox = self.fds.inbox.lock().unwrap();
                for i in 0..count {
                    // SAFETY: fd i lies within this header's data; new fds belong to us.
                    inbox.push(unsafe {
                        OwnedFd::from_raw_fd(std::ptr::read_unaligned(
                            libc::CMSG_DATA(c).cast::<RawFd>().add(i),
                        ))
                    });
                }
                self.fds.per_message.lock().unwrap().push(count);
            }
            // SAFETY: as above.
            c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
        }
        Ok(n as usize)
    }
}

impl AsyncRead for PeerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.io.poll_read_ready(cx))?;
            let dst = buf.initialize_unfilled();
            match self.io.try_io(Interest::READABLE, || self.read_fds(dst)) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for PeerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.fds.outbox.lock().unwrap().is_empty() {
            return Pin::new(&mut self.get_mut().io).poll_write(cx, buf);
        }
        loop {
            ready!(self.io.poll_write_ready(cx))?;
            match self.io.try_io(Interest::WRITABLE, || self.write_fds(buf)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Connected for PeerIo {
    type ConnectInfo = Arc<PeerFds>;
    fn connect_info(&self) -> Arc<PeerFds> {
        self.fds.clone()
    }
}

/// A plain tonic channel over a peer stream.
pub async fn peer_dial(path: &Path, fds: Arc<PeerFds>) -> Channel {
    let path = path.to_path_buf();
    Endpoint::from_static("http://[::]:0")
        .connect_with_connector(tower::service_fn(move |_| {
            let (path, fds) = (path.clone(), fds.clone());
            async move {
                let io = UnixStream::connect(path).await?;
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(PeerIo { io, fds }))
            }
        }))
        .await
        .unwrap()
}

/// The connections accepted on a new unix socket at `path`, each wrapped in a [`PeerIo`] that
/// attaches fds one per byte, for `serve_with_incoming`. Must run inside a tokio runtime.
pub fn peer_incoming(
    path: &Path,
) -> impl tokio_stream::Stream<Item = io::Result<PeerIo>> + Send + 'static {
    use tokio_stream::StreamExt;
    let l = tokio::net::UnixListener::bind(path).expect("bind the peer's socket");
    tokio_stream::wrappers::UnixListenerStream::new(l).map(|s| {
        s.map(|io| PeerIo {
            io,
            fds: PeerFds::new(Attach::PerByte),
        })
    })
}
