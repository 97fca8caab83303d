//! File descriptors over gRPC unix sockets, wire-compatible with Go's `github.com/edwarnicke/grpcfd`
//! (what every NSM component speaks, see `nsm-api.md` §7).
//!
//! # The protocol
//!
//! File descriptors travel as `SCM_RIGHTS` ancillary data on the unix socket that carries the
//! HTTP/2 bytes of a gRPC connection; the gRPC messages name them by `inode://<dev>/<ino>` URLs
//! (decimal `st_dev` and `st_ino` of the file, see [`InodeUrl`]).
//!
//! * **Sending.** An fd is queued on the connection ([`FdConn::send`]) *before* the message that
//!   names its URL is written. The next write on the socket carries the queued fds, each on a
//!   message of its own holding **one byte** of the written data and that one fd; at most
//!   [`MAX_FDS_PER_WRITE`] fds go with one write call (never more fds than bytes). Once the
//!   queue is empty the rest of the buffer follows as a plain write; while fds remain, the
//!   write returns short and the next bytes carry them. So every fd queued before a message
//!   arrives no later than that message's last byte, if the message has at least as many
//!   bytes as fds were queued (an NSM message has hundreds of bytes for a few fds).
//!   On the wire this is upstream's rule: one byte and one fd per `sendmsg`, so a Go receiver
//!   sees the same messages from us as from a Go peer. (Upstream's writer sends the rest of a
//!   write plainly after 64 fds and leaves the others for a later write; the receiver cannot
//!   tell the difference.)
//! * **Receiving.** Every read is a `recvmsg` with room for [`MAX_FDS_PER_READ`] fds (upstream
//!   reserves the same, and the kernel hands out at most one fd-carrying message per read).
//!   Every received fd is made close-on-exec atomically (`MSG_CMSG_CLOEXEC`), `fstat`ed and held
//!   by its `(st_dev, st_ino)`. A read whose control data was truncated (`MSG_CTRUNC`: a peer
//!   sent more fds than fit) is logged and counted ([`FdStats::truncated`]); the kernel closes
//!   the fds that did not fit, the ones that did are held as usual.
//! * **Reading until `EAGAIN`.** The kernel ends every read of a unix stream after a byte that
//!   carries fds, whatever is queued behind it and however big the buffer, so a short read does
//!   not mean the socket is drained. [`FdStream`] reads until `EAGAIN`; tokio's plain
//!   `UnixStream` does not (on epoll it takes a short read for a drained socket and waits for
//!   the next readiness event, tokio-rs/tokio#5866), and under it a peer's whole message may
//!   sit unread behind the fd's byte. So every unix stream vwire reads is an [`FdStream`],
//!   even where nothing takes the fds (`super::dial`), and a peer that receives our fds must
//!   read the same way (Go's `net.Conn` does).
//!
//! # What is held, and until when
//!
//! An [`FdConn`] is the fd state of one connection (server side) or of one channel (client side,
//! across its reconnections). It is a cheap handle (an `Arc` inside) and holds:
//!
//! * **received fds**, at most [`MAX_HELD`], keyed by `(dev, ino)`. An fd re-sent for the same
//!   inode replaces the one held; when the table is full the oldest arrival is closed to make
//!   room ([`FdStats::evicted`]). [`FdConn::recv`] hands out a `dup` the caller owns and closes
//!   when it likes; the held fd stays until the last handle and the socket are gone.
//! * **queued fds**, at most [`MAX_QUEUED`]: dups made by [`FdConn::send`], each closed once
//!   written. On the server, the fds still queued when the socket closes are closed with it and
//!   later sends fail; a client's queue waits for the channel's next connection.
//!
//! Threat model: the peer is another local process, which may send fds we did not ask for. It
//! cannot make us hold more than [`MAX_HELD`] of them, nor leak any: every fd is owned (an
//! [`OwnedFd`]) from the moment `recvmsg` returns.
//!
//! # Usage
//!
//! Server: [`super::Listener::serve`] on a `unix://` URL wraps every accepted socket, and a tonic
//! handler finds the connection's state in the request extensions (take it before
//! `into_inner()`; over `tcp://` there is none):
//!
//! ```ignore
//! let fds = request.extensions().get::<FdConn>().cloned().ok_or(no_fds_status)?;
//! let netns: OwnedFd = fds.recv_url(&params["inodeURL"], Duration::from_secs(1)).await?;
//! // ... to answer with an fd, queue it before returning the response that names it:
//! params.insert("inodeURL".into(), fds.send(my_netns.as_fd())?.to_string());
//! ```
//!
//! Client: [`super::dial_with_fds`] gives the channel and its [`FdConn`]:
//!
//! ```ignore
//! let (channel, fds) = dial_with_fds(&url, DIAL_TIMEOUT).await?;
//! params.insert("inodeURL".into(), fds.send(netns.as_fd())?.to_string()); // before the call
//! let conn = NetworkServiceClient::new(channel).request(req).await?.into_inner();
//! let theirs = fds.recv_url(&conn_params["inodeURL"], Duration::from_secs(1)).await?;
//! ```
//!
//! [`GrpcfdError`] converts into a `tonic::Status` for a handler's `?`.
//!
//! Layering: this sits directly on the socket, below anything that wraps the byte stream (TLS
//! goes on top of an [`FdStream`], as upstream puts it under the TLS credentials).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::Notify;

/// The most fds sent along with one write, one per byte. Upstream's `maxFDCount`: a Go receiver
/// reserves control space for this many fds per read.
pub const MAX_FDS_PER_WRITE: usize = 64;

/// The fds one read has room for. The same 64 as upstream: the kernel never returns more than
/// one fd-carrying message per read of a stream socket, and a grpcfd peer puts one fd on each.
pub const MAX_FDS_PER_READ: usize = 64;

/// The most received fds a connection holds. An NSM connection carries a handful (a netns, a
/// memif socket, a listen socket per Request); 1024 leaves room for a peer that refreshes many
/// connections over one socket while keeping a hostile peer well below the process's fd limit.
pub const MAX_HELD: usize = 1024;

/// The most fds queued for sending on one connection. Same reasoning as [`MAX_HELD`]: the queue
/// drains with the next write, so only a caller that sends without ever calling fills it.
pub const MAX_QUEUED: usize = 1024;

/// The size of one fd in an `SCM_RIGHTS` payload.
#[allow(clippy::cast_possible_truncation)] // 4 fits any integer
const FD_LEN: libc::c_uint = std::mem::size_of::<RawFd>() as libc::c_uint;

/// Control buffer size for one read: one `SCM_RIGHTS` message of [`MAX_FDS_PER_READ`] fds.
#[allow(clippy::cast_possible_truncation)] // 64 fits any integer
                                           // SAFETY: CMSG_SPACE is pure arithmetic on its argument (it is `unsafe` only by libc's
                                           // convention for the CMSG_* family).
const CMSG_BUF: usize =
    unsafe { libc::CMSG_SPACE(MAX_FDS_PER_READ as libc::c_uint * FD_LEN) } as usize;

/// A control buffer aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([MaybeUninit<u8>; CMSG_BUF]);

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum GrpcfdError {
    /// the string is no `inode://<dev>/<ino>` URL with decimal numbers
    #[error("{0:?} is no inode://<dev>/<ino> URL")]
    BadInodeUrl(String),
    /// the fd did not arrive in time
    #[error("the fd for {url} did not arrive within {timeout:?}")]
    Timeout {
        /// the fd waited for
        url: InodeUrl,
        /// how long it was waited for
        timeout: Duration,
    },
    /// the connection closed before the fd arrived
    #[error("the connection closed before the fd for {0} arrived")]
    Closed(InodeUrl),
    /// the connection's socket is closed: nothing more can be sent on it
    #[error("the connection is closed: cannot send the fd for {0}")]
    SendClosed(InodeUrl),
    /// too many fds queued and not yet written
    #[error("{MAX_QUEUED} fds already queued: cannot send the fd for {0}")]
    QueueFull(InodeUrl),
    /// a system call failed
    #[error("{op}: {source}")]
    Sys {
        /// what was done
        op: String,
        /// the system error
        source: io::Error,
    },
}

impl GrpcfdError {
    fn sys(op: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let op = op.into();
        move |source| Self::Sys { op, source }
    }
}

impl From<GrpcfdError> for tonic::Status {
    fn from(e: GrpcfdError) -> Self {
        let msg = e.to_string();
        match e {
            GrpcfdError::BadInodeUrl(_) => Self::invalid_argument(msg),
            GrpcfdError::Timeout { .. } => Self::deadline_exceeded(msg),
            GrpcfdError::Closed(_) | GrpcfdError::SendClosed(_) => Self::unavailable(msg),
            GrpcfdError::QueueFull(_) => Self::resource_exhausted(msg),
            GrpcfdError::Sys { .. } => Self::internal(msg),
        }
    }
}

/// A file named by its device and inode numbers: `inode://<dev>/<ino>`, both decimal, as
/// upstream's `FDToURL` writes it (the URL's host is the device, its path the inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InodeUrl {
    /// `st_dev`
    pub dev: u64,
    /// `st_ino`
    pub ino: u64,
}

impl InodeUrl {
    /// Parses `inode://<dev>/<ino>`. Strict: lowercase scheme, decimal digits only, nothing
    /// before, between or after (no query, no second path segment, no sign, no overflow).
    pub fn parse(s: &str) -> Result<Self, GrpcfdError> {
        let bad = || GrpcfdError::BadInodeUrl(s.into());
        let (dev, ino) = s
            .strip_prefix("inode://")
            .and_then(|rest| rest.split_once('/'))
            .ok_or_else(bad)?;
        let num = |d: &str| {
            if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            d.parse::<u64>().ok()
        };
        Ok(Self {
            dev: num(dev).ok_or_else(bad)?,
            ino: num(ino).ok_or_else(bad)?,
        })
    }

    /// The device and inode of an open file (`fstat`).
    pub fn of(fd: BorrowedFd<'_>) -> Result<Self, GrpcfdError> {
        let mut st = MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `fd` is a live descriptor for the borrow, and `st` is a writable stat buffer.
        let r = unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) };
        if r != 0 {
            return Err(GrpcfdError::Sys {
                op: format!("fstat fd {}", fd.as_raw_fd()),
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: fstat succeeded, so it filled `st`.
        let st = unsafe { st.assume_init() };
        #[allow(clippy::useless_conversion)] // st_dev and st_ino are u64 on 64-bit Linux only
        Ok(Self {
            dev: u64::from(st.st_dev),
            ino: u64::from(st.st_ino),
        })
    }
}

impl std::fmt::Display for InodeUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "inode://{}/{}", self.dev, self.ino)
    }
}

impl std::str::FromStr for InodeUrl {
    type Err = GrpcfdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// `file:///proc/<pid>/fd/<n>`: how a receiver names a received fd in a message it passes on
/// (a mechanism's `inodeURL` after receipt). The pid rather than `self`: the string may be read
/// by a process other than ours (a log, a helper), and there `/proc/self` would silently name
/// a different file, while our pid names the right one or none. Valid while `fd` stays open.
pub fn proc_fd_url(fd: BorrowedFd<'_>) -> String {
    format!("file:///proc/{}/fd/{}", std::process::id(), fd.as_raw_fd())
}

/// Counters of one connection's fd traffic, since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdStats {
    /// fds received and held
    pub received: u64,
    /// fds written to the socket
    pub sent: u64,
    /// reads whose control data the kernel truncated (fds lost)
    pub truncated: u64,
    /// held fds closed to make room for newer ones
    pub evicted: u64,
    /// received fds that could not be `fstat`ed, closed at once
    pub unstatable: u64,
    /// queued fds the socket refused, closed unsent
    pub send_failed: u64,
}

/// Lock-free counters behind [`FdStats`].
#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    sent: AtomicU64,
    truncated: AtomicU64,
    evicted: AtomicU64,
    unstatable: AtomicU64,
    send_failed: AtomicU64,
}

/// Counts an event; true the first time, so that a peer-triggered event is logged once per
/// connection and counted always (a peer must not be able to flood the log).
fn bump(c: &AtomicU64) -> bool {
    // Relaxed: plain event counts, read only for reporting.
    c.fetch_add(1, Ordering::Relaxed) == 0
}

/// The fd state of one connection (server side) or one channel (client side). See the module
/// doc for what it holds and until when. Cheap to clone; all clones share the state.
#[derive(Clone)]
pub struct FdConn(Arc<Shared>);

struct Shared {
    state: Mutex<State>,
    /// Woken on every arrival and on close.
    arrived: Notify,
    counters: Counters,
    /// Server side: the connection has one socket, and closes with it.
    one_socket: bool,
    /// Server side: the peer's credentials, read at accept.
    peer_cred: Option<tokio::net::unix::UCred>,
}

#[derive(Default)]
struct State {
    held: HashMap<InodeUrl, Held>,
    /// Arrival counter, to find the oldest held fd.
    arrivals: u64,
    queue: VecDeque<OwnedFd>,
    /// Live sockets of this connection.
    sockets: usize,
    /// No socket will come any more (a server connection whose socket closed).
    closed: bool,
}

struct Held {
    fd: OwnedFd,
    arrival: u64,
}

impl std::fmt::Debug for FdConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("FdConn")
            .field("held", &st.held.len())
            .field("queued", &st.queue.len())
            .field("sockets", &st.sockets)
            .field("closed", &st.closed)
            .finish()
    }
}

impl Default for FdConn {
    fn default() -> Self {
        Self::new()
    }
}

impl FdConn {
    /// A client-side state, shared by the sockets [`FdStream::join`]ed to it: queued fds wait
    /// for the next socket, held fds stay until the last handle is dropped.
    pub fn new() -> Self {
        Self::make(false, None)
    }

    fn make(one_socket: bool, peer_cred: Option<tokio::net::unix::UCred>) -> Self {
        Self(Arc::new(Shared {
            state: Mutex::new(State::default()),
            arrived: Notify::new(),
            counters: Counters::default(),
            one_socket,
            peer_cred,
        }))
    }

    /// The state lock. Poisoning is ignored: no code under the lock panics, and the state is
    /// consistent after every statement that changes it.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a dup of `fd` for the next write, and returns the URL that names it. Call it before
    /// the message carrying the URL is sent; the caller keeps `fd` and may close it at once.
    pub fn send(&self, fd: BorrowedFd<'_>) -> Result<InodeUrl, GrpcfdError> {
        let dup = fd
            .try_clone_to_owned()
            .map_err(GrpcfdError::sys(format!("dup fd {}", fd.as_raw_fd())))?;
        let url = InodeUrl::of(dup.as_fd())?;
        let mut st = self.lock();
        if st.closed {
            return Err(GrpcfdError::SendClosed(url));
        }
        if st.queue.len() >= MAX_QUEUED {
            return Err(GrpcfdError::QueueFull(url));
        }
        st.queue.push_back(dup);
        Ok(url)
    }

    /// Opens `path` with `O_PATH` (no read or write access, and it works on sockets and
    /// namespace files alike, as upstream's `SendFilename` does) and [`send`](Self::send)s it.
    pub fn send_path(&self, path: &Path) -> Result<InodeUrl, GrpcfdError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(path)
            .map_err(GrpcfdError::sys(format!("open {}", path.display())))?;
        self.send(file.as_fd())
    }

    /// Waits up to `timeout` for the fd of inode `(dev, ino)`, and returns a dup of it that the
    /// caller owns. Returns at once if it has arrived already; fails early if the connection
    /// closed without it.
    pub async fn recv(
        &self,
        dev: u64,
        ino: u64,
        timeout: Duration,
    ) -> Result<OwnedFd, GrpcfdError> {
        let url = InodeUrl { dev, ino };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before looking, so an arrival between the look and the wait wakes us.
            let mut arrived = std::pin::pin!(self.0.arrived.notified());
            arrived.as_mut().enable();
            if let Some(fd) = self.try_recv(url)? {
                return Ok(fd);
            }
            if self.lock().closed {
                return Err(GrpcfdError::Closed(url));
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Err(GrpcfdError::Timeout { url, timeout });
            }
        }
    }

    /// [`recv`](Self::recv) by URL string (`inode://<dev>/<ino>`).
    pub async fn recv_url(&self, url: &str, timeout: Duration) -> Result<OwnedFd, GrpcfdError> {
        let u = InodeUrl::parse(url)?;
        self.recv(u.dev, u.ino, timeout).await
    }

    /// A dup of the fd of `url` if it has arrived, without waiting.
    pub fn try_recv(&self, url: InodeUrl) -> Result<Option<OwnedFd>, GrpcfdError> {
        let st = self.lock();
        let Some(h) = st.held.get(&url) else {
            return Ok(None);
        };
        h.fd.try_clone()
            .map(Some)
            .map_err(GrpcfdError::sys(format!("dup the fd for {url}")))
    }

    /// How many received fds are held.
    pub fn held(&self) -> usize {
        self.lock().held.len()
    }

    /// How many fds are queued and not yet written.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    /// The counters so far.
    pub fn stats(&self) -> FdStats {
        let c = &self.0.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FdStats {
            received: get(&c.received),
            sent: get(&c.sent),
            truncated: get(&c.truncated),
            evicted: get(&c.evicted),
            unstatable: get(&c.unstatable),
            send_failed: get(&c.send_failed),
        }
    }

    /// Server side: the peer process's credentials, as read when its socket was accepted.
    pub fn peer_cred(&self) -> Option<tokio::net::unix::UCred> {
        self.0.peer_cred
    }

    /// Holds fds just received.
    fn hold(&self, fds: Vec<OwnedFd>) {
        if fds.is_empty() {
            return;
        }
        let c = &self.0.counters;
        let mut st = self.lock();
        for fd in fds {
            let url = match InodeUrl::of(fd.as_fd()) {
                Ok(u) => u,
                Err(e) => {
                    if bump(&c.unstatable) {
                        tracing::warn!("grpcfd: received an fd that fstat refuses, closed it: {e}");
                    }
                    continue; // `fd` is closed here
                }
            };
            st.arrivals += 1;
            let arrival = st.arrivals;
            if !st.held.contains_key(&url) && st.held.len() >= MAX_HELD {
                // O(MAX_HELD) scan, only when a peer overfills the table.
                if let Some(oldest) = st
                    .held
                    .iter()
                    .min_by_key(|(_, h)| h.arrival)
                    .map(|(u, _)| *u)
                {
                    st.held.remove(&oldest);
                    if bump(&c.evicted) {
                        tracing::warn!(
                            "grpcfd: {MAX_HELD} fds held, closed the oldest ({oldest}); further \
                             evictions on this connection are only counted"
                        );
                    }
                }
            }
            // A re-sent inode replaces (and closes) the fd held for it.
            st.held.insert(url, Held { fd, arrival });
            let _ = bump(&c.received);
        }
        drop(st);
        self.0.arrived.notify_waiters();
    }

    fn socket_opened(&self) {
        self.lock().sockets += 1;
    }

    fn socket_closed(&self) {
        let mut st = self.lock();
        st.sockets -= 1;
        if self.0.one_socket && st.sockets == 0 {
            st.closed = true;
            if !st.queue.is_empty() {
                tracing::debug!(
                    "grpcfd: connection closed with {} fds unsent, closing them",
                    st.queue.len()
                );
                st.queue.clear();
            }
            drop(st);
            self.0.arrived.notify_waiters();
        }
    }

    fn has_queued(&self) -> bool {
        !self.lock().queue.is_empty()
    }

    /// One nonblocking write of `buf` on socket `sock` carrying queued fds: up to
    /// [`MAX_FDS_PER_WRITE`] one-byte messages with one fd each, then the rest of `buf` plainly.
    /// Returns the bytes written; `WouldBlock` only if nothing was.
    fn write_with_fds(&self, sock: RawFd, buf: &[u8]) -> io::Result<usize> {
        let c = &self.0.counters;
        let mut st = self.lock();
        let limit = buf.len().min(MAX_FDS_PER_WRITE);
        let mut done = 0;
        while done < limit {
            let Some(fd) = st.queue.front() else { break };
            match send_byte_with_fd(sock, buf[done], fd.as_raw_fd()) {
                Ok(()) => {
                    st.queue.pop_front(); // closes our dup: the peer has its own now
                    let _ = bump(&c.sent);
                    done += 1;
                }
                Err(e) if done > 0 && retry_later(&e) => return Ok(done),
                Err(e) if retry_later(&e) => return Err(e),
                Err(e) => {
                    // The socket refused this fd for good (or broke): drop it, like upstream,
                    // rather than offer it again on every write.
                    st.queue.pop_front();
                    if bump(&c.send_failed) {
                        tracing::warn!("grpcfd: sending an fd failed, dropped it: {e}");
                    }
                    return if done > 0 { Ok(done) } else { Err(e) };
                }
            }
        }
        // While fds wait, the rest of `buf` stays for the next write, which carries them: so
        // a message at least as long as the queue carries every fd queued before it.
        let drained = st.queue.is_empty();
        drop(st);
        if done == buf.len() || !drained {
            return Ok(done);
        }
        match send_plain(sock, &buf[done..]) {
            Ok(n) => Ok(done + n),
            Err(_) if done > 0 => Ok(done), // the error shows again on the next write
            Err(e) => Err(e),
        }
    }
}

fn retry_later(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// `sendmsg` of one byte with one fd in an `SCM_RIGHTS` message.
fn send_byte_with_fd(sock: RawFd, byte: u8, fd: RawFd) -> io::Result<()> {
    // SAFETY: arithmetic only.
    const SPACE: usize = unsafe { libc::CMSG_SPACE(FD_LEN) } as usize;
    #[repr(C, align(8))]
    struct Buf([u8; SPACE]);
    let mut cbuf = Buf([0; SPACE]);
    let mut data = [byte];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = SPACE as _;
    // SAFETY: msg_control points at SPACE bytes aligned for cmsghdr, room for one header and
    // one fd, so CMSG_FIRSTHDR is non-null and CMSG_DATA has FD_LEN bytes behind it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(FD_LEN) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    // SAFETY: `msg` and everything it points at (iov, data, cbuf) live across the call.
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    match n {
        1 => Ok(()),
        -1 => Err(io::Error::last_os_error()),
        _ => Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "sendmsg of one byte wrote none",
        )),
    }
}

/// `send` of plain bytes, without SIGPIPE.
fn send_plain(sock: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reading `buf.len()` bytes.
    let n = unsafe { libc::send(sock, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// One nonblocking `recvmsg` into `dst`, holding the fds it brings on `conn`.
fn recv_with_fds(sock: RawFd, dst: &mut [MaybeUninit<u8>], conn: &FdConn) -> io::Result<usize> {
    let mut cbuf = CmsgBuf([MaybeUninit::uninit(); CMSG_BUF]);
    let mut iov = libc::iovec {
        iov_base: dst.as_mut_ptr().cast(),
        iov_len: dst.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = CMSG_BUF as _;
    // SAFETY: `msg` points at `dst` (writable, dst.len() bytes; recvmsg only writes it) and at
    // `cbuf` (writable, CMSG_BUF bytes), both alive across the call.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;

    // Take ownership of every fd first, so none leaks whatever follows.
    let mut fds = Vec::new();
    let control_end = cbuf.0.as_ptr() as usize + msg.msg_controllen as usize;
    // SAFETY: the kernel wrote msg_controllen bytes of well-formed cmsghdrs into `cbuf`;
    // CMSG_FIRSTHDR/CMSG_NXTHDR stay within msg_controllen and return null past the end.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: non-null cmsg points at a complete header inside `cbuf` (see above).
        let (level, kind, len) =
            unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // SAFETY: as above; CMSG_DATA is the header's payload start.
            let data = unsafe { libc::CMSG_DATA(cmsg) };
            // SAFETY: arithmetic only.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            // Clamped to the control data actually returned, whatever cmsg_len says.
            #[allow(clippy::unnecessary_cast)] // cmsg_len is usize on glibc, u32 on musl
            let payload = (len as usize)
                .saturating_sub(header)
                .min(control_end.saturating_sub(data as usize));
            for i in 0..payload / std::mem::size_of::<RawFd>() {
                // SAFETY: index i is within the payload; the data may be unaligned.
                let raw =
                    unsafe { std::ptr::read_unaligned(data.cast::<RawFd>().add(i).cast_const()) };
                // SAFETY: SCM_RIGHTS fds are new descriptors installed for us by this recvmsg;
                // nothing else owns them.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: `msg` and `cmsg` as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 && bump(&conn.0.counters.truncated) {
        tracing::warn!(
            "grpcfd: a peer sent more fds than one read takes ({MAX_FDS_PER_READ}): the kernel \
             closed the rest, they will not arrive; further truncations on this connection are \
             only counted"
        );
    }
    conn.hold(fds);
    Ok(n)
}

/// A unix socket that carries fds for an [`FdConn`]: reads hold the fds that arrive, writes carry
/// the queued ones. What [`super::Listener::serve`] and [`super::dial_with_fds`] put under
/// tonic; usable under any HTTP/2 stack.
#[derive(Debug)]
pub struct FdStream {
    io: UnixStream,
    conn: FdConn,
}

impl FdStream {
    /// An accepted socket with a new [`FdConn`] of its own, closed with the socket.
    pub fn accept(io: UnixStream) -> Self {
        let conn = FdConn::make(true, io.peer_cred().ok());
        conn.socket_opened();
        Self { io, conn }
    }

    /// A (client) socket joined to the shared `conn`.
    pub fn join(io: UnixStream, conn: &FdConn) -> Self {
        conn.socket_opened();
        Self {
            io,
            conn: conn.clone(),
        }
    }

    /// This socket's fd state.
    pub fn conn(&self) -> &FdConn {
        &self.conn
    }
}

impl Drop for FdStream {
    fn drop(&mut self) {
        self.conn.socket_closed();
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(this.io.poll_read_ready(cx))?;
            let sock = this.io.as_raw_fd();
            // SAFETY: recv_with_fds only writes into the unfilled part, never reads it, and we
            // mark as initialised exactly the n bytes recvmsg says it wrote.
            let unfilled = unsafe { buf.unfilled_mut() };
            match this.io.try_io(Interest::READABLE, || {
                recv_with_fds(sock, unfilled, &this.conn)
            }) {
                Ok(n) => {
                    // SAFETY: recvmsg wrote the first n bytes of the unfilled part.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if retry_later(&e) => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() || !this.conn.has_queued() {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        }
        loop {
            ready!(this.io.poll_write_ready(cx))?;
            let sock = this.io.as_raw_fd();
            match this
                .io
                .try_io(Interest::WRITABLE, || this.conn.write_with_fds(sock, buf))
            {
                Err(e) if retry_later(&e) => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.conn.has_queued() {
            return Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs);
        }
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for FdStream {
    type ConnectInfo = FdConn;

    fn connect_info(&self) -> FdConn {
        self.conn.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_urls_parse_and_print() {
        for (s, dev, ino) in [
            ("inode://0/0", 0, 0),
            ("inode://64768/1234567", 64768, 1234567),
            ("inode://4/4026531840", 4, 4026531840),
            (
                "inode://18446744073709551615/18446744073709551615",
                u64::MAX,
                u64::MAX,
            ),
        ] {
            let u: InodeUrl = s.parse().unwrap();
            assert_eq!(u, InodeUrl { dev, ino });
            assert_eq!(u.to_string(), s);
        }
        // Leading zeros are digits (Go's ParseUint takes them); printing drops them.
        assert_eq!(
            InodeUrl::parse("inode://007/010").unwrap().to_string(),
            "inode://7/10"
        );
    }

    #[test]
    fn malformed_inode_urls_are_errors_naming_the_string() {
        for bad in [
            "",
            "inode://",
            "inode:///",
            "inode://1",
            "inode://1/",
            "inode:///2",
            "inode://1/2/3",
            "inode://1/2?x=y",
            "inode://+1/2",
            "inode://1/-2",
            "inode://a/2",
            "inode://1/2 ",
            " inode://1/2",
            "INODE://1/2",
            "file:///proc/1/fd/2",
            "inode:1/2",
            "inode://18446744073709551616/1",
        ] {
            match InodeUrl::parse(bad) {
                Err(e @ GrpcfdError::BadInodeUrl(_)) => {
                    assert!(e.to_string().contains(&format!("{bad:?}")), "{e}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_inode_url_names_the_file() {
        let f = std::fs::File::open("/proc/self/exe").unwrap();
        let u = InodeUrl::of(f.as_fd()).unwrap();
        let st = std::fs::metadata("/proc/self/exe").unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            u,
            InodeUrl {
                dev: st.dev(),
                ino: st.ino()
            }
        );
        let p = proc_fd_url(f.as_fd());
        assert_eq!(
            p,
            format!("file:///proc/{}/fd/{}", std::process::id(), f.as_raw_fd())
        );
        let via = std::fs::metadata(p.strip_prefix("file://").unwrap()).unwrap();
        assert_eq!((via.dev(), via.ino()), (st.dev(), st.ino()));
    }

    /// A unix socket pair: a client side joined to a fresh [`FdConn`], an accepted server side.
    fn pair() -> (FdConn, FdStream, FdStream) {
        let (a, b) = UnixStream::pair().unwrap();
        let conn = FdConn::new();
        let tx = FdStream::join(a, &conn);
        (conn, tx, FdStream::accept(b))
    }

    /// Writes `n` bytes on `tx` and reads them on `rx`, concurrently.
    async fn carry(tx: &mut FdStream, rx: &mut FdStream, n: usize) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let data: Vec<u8> = (0..n).map(|i| i.to_le_bytes()[0]).collect();
        let mut got = vec![0u8; n];
        tokio::try_join!(tx.write_all(&data), rx.read_exact(&mut got)).unwrap();
        assert_eq!(got, data);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn fds_cross_a_socket_pair_and_a_resent_inode_replaces_the_held_one() {
        let (conn, mut tx, mut rx) = pair();
        let f = std::fs::File::open("/proc/self/exe").unwrap();
        let url = conn.send(f.as_fd()).unwrap();
        assert_eq!(conn.send(f.as_fd()).unwrap(), url);
        // A waiter registered before the fd comes is woken by its arrival.
        let rconn = rx.conn().clone();
        let waiter =
            tokio::spawn(async move { rconn.recv(url.dev, url.ino, Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        carry(&mut tx, &mut rx, 3).await; // two bytes with an fd each, one plain
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(InodeUrl::of(got.as_fd()).unwrap(), url);
        assert_eq!(rx.conn().held(), 1);
        assert_eq!(rx.conn().stats().received, 2);
        assert_eq!(conn.stats().sent, 2);
        assert_eq!(conn.queued(), 0);
        // More fds than bytes: the rest waits for the next write.
        conn.send(f.as_fd()).unwrap();
        conn.send(f.as_fd()).unwrap();
        carry(&mut tx, &mut rx, 1).await;
        assert_eq!(conn.queued(), 1);
        carry(&mut tx, &mut rx, 1).await;
        assert_eq!(conn.queued(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_held_table_is_bounded_and_drops_the_oldest() {
        let dir = std::env::temp_dir().join(format!("vwire-grpcfd-held-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (conn, mut tx, mut rx) = pair();
        let total = MAX_HELD + 10;
        let mut urls = Vec::new();
        for start in (0..total).step_by(500) {
            for i in start..total.min(start + 500) {
                let p = dir.join(i.to_string());
                std::fs::write(&p, b"x").unwrap();
                urls.push(conn.send(std::fs::File::open(&p).unwrap().as_fd()).unwrap());
            }
            let n = conn.queued();
            carry(&mut tx, &mut rx, n).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(rx.conn().held(), MAX_HELD);
        assert_eq!(rx.conn().stats().evicted, 10);
        for u in &urls[..10] {
            assert!(rx.conn().try_recv(*u).unwrap().is_none(), "{u}");
        }
        for u in &urls[10..] {
            assert!(rx.conn().try_recv(*u).unwrap().is_some(), "{u}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_server_connection_closes_with_its_socket() {
        let (_conn, tx, rx) = pair();
        let sconn = rx.conn().clone();
        let f = std::fs::File::open("/proc/self/exe").unwrap();
        let url = sconn.send(f.as_fd()).unwrap();
        drop(rx); // its queued dup is closed with it
        assert_eq!(sconn.queued(), 0);
        assert!(matches!(
            sconn.send(f.as_fd()),
            Err(GrpcfdError::SendClosed(u)) if u == url
        ));
        let t = std::time::Instant::now();
        let e = sconn
            .recv(url.dev, url.ino, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, GrpcfdError::Closed(_)), "{e}");
        assert!(t.elapsed() < Duration::from_secs(1));
        drop(tx);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sent_fds_are_dups_and_a_missing_fd_times_out() {
        let conn = FdConn::new();
        let f = std::fs::File::open("/proc/self/exe").unwrap();
        let url = conn.send(f.as_fd()).unwrap();
        drop(f); // the queue holds its own dup
        assert_eq!(conn.queued(), 1);
        // By path (O_PATH), the same inode.
        assert_eq!(conn.send_path(Path::new("/proc/self/exe")).unwrap(), url);
        assert!(matches!(
            conn.send_path(Path::new("/nonexistent/grpcfd")),
            Err(e @ GrpcfdError::Sys { .. }) if e.to_string().contains("/nonexistent/grpcfd")
        ));
        assert_eq!(conn.queued(), 2);
        let e = conn
            .recv(url.dev, url.ino, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(matches!(e, GrpcfdError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains(&url.to_string()), "{e}");
    }
}
