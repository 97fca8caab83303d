//! grpcfd over real unix sockets, against a peer written here from the protocol alone (raw
//! `sendmsg`/`recvmsg` with `SCM_RIGHTS`, none of vwire's grpcfd code), under plain tonic: fds
//! from the peer to a vwire server, from a vwire client to a peer server, back in a response,
//! 70 at once (more than one write or read takes), a truncated batch, an fd that never comes,
//! `unix:///proc/self/fd/N` dialling, tcp without fds, and no fd left open afterwards.
//!
//! The tests count this process's open fds, so they run one at a time (see [`serial`]).

#![allow(clippy::cast_possible_truncation)] // fd counts and sizes of a few hundred bytes

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Response, Status};
use vwire::transport::{
    bind, dial, dial_with_fds, FdConn, InodeUrl, TransportError, Url, DIAL_TIMEOUT,
};
use vwire_proto::connection::{Connection, Mechanism};
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;
use vwire_proto::networkservice::network_service_server::{NetworkService, NetworkServiceServer};
use vwire_proto::networkservice::NetworkServiceRequest;

// ---------------------------------------------------------------------------------------------
// The peer: fd passing written from the protocol.

/// Control space for one read of the peer: SCM_MAX_FD (253) fds, more than anyone sends.
const PEER_CMSG_FDS: usize = 253;

/// How the peer attaches fds to a write.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attach {
    /// As upstream grpcfd: one byte and one fd per message, at most 64 per write.
    PerByte,
    /// All queued fds in one message with the whole write (a peer that does not follow the rule).
    Batch,
}

/// One peer connection's fd state.
struct PeerFds {
    attach: Attach,
    outbox: Mutex<VecDeque<OwnedFd>>,
    inbox: Mutex<Vec<OwnedFd>>,
    /// The fd count of every fd-carrying message read.
    per_message: Mutex<Vec<usize>>,
}

impl PeerFds {
    fn new(attach: Attach) -> Arc<Self> {
        Arc::new(Self {
            attach,
            outbox: Mutex::new(VecDeque::new()),
            inbox: Mutex::new(Vec::new()),
            per_message: Mutex::new(Vec::new()),
        })
    }

    /// Queues a dup of `f`, returning its URL written by hand.
    fn queue(&self, f: &std::fs::File) -> String {
        let m = f.metadata().unwrap();
        self.outbox
            .lock()
            .unwrap()
            .push_back(f.as_fd().try_clone_to_owned().unwrap());
        format!("inode://{}/{}", m.dev(), m.ino())
    }

    /// Waits up to 2 s for a received fd with this URL's dev and ino.
    async fn find(&self, url: &str) -> Option<OwnedFd> {
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
struct PeerIo {
    io: UnixStream,
    fds: Arc<PeerFds>,
}

/// A `cmsghdr`-aligned control buffer.
fn cmsg_buf(fds: usize) -> Vec<u64> {
    // SAFETY: CMSG_SPACE is arithmetic.
    let bytes = unsafe { libc::CMSG_SPACE((fds * 4) as u32) } as usize;
    vec![0u64; bytes.div_ceil(8)]
}

fn peer_sendmsg(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
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
async fn peer_dial(path: &Path, fds: Arc<PeerFds>) -> Channel {
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

/// The peer's server: answers each `url*` parameter with what the fd it received holds.
struct PeerService;

#[tonic::async_trait]
impl NetworkService for PeerService {
    async fn request(
        &self,
        req: Request<NetworkServiceRequest>,
    ) -> Result<Response<Connection>, Status> {
        let fds = req.extensions().get::<Arc<PeerFds>>().unwrap().clone();
        let params = params_of(req.into_inner());
        let mut out = HashMap::new();
        for (k, url) in params.iter().filter(|(k, _)| k.starts_with("url")) {
            let fd = fds
                .find(url)
                .await
                .ok_or_else(|| Status::not_found(format!("peer: no fd for {url}")))?;
            out.insert(format!("{k}.content"), content(&fd));
        }
        let per_message = fds.per_message.lock().unwrap().clone();
        out.insert(
            "max_fds_per_message".into(),
            per_message.iter().max().copied().unwrap_or(0).to_string(),
        );
        out.insert("fd_messages".into(), per_message.len().to_string());
        Ok(Response::new(answer(out)))
    }

    async fn close(&self, _: Request<Connection>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }
}

/// Serves [`PeerService`] on `path` until the returned sender is dropped or fired.
async fn peer_server(path: &Path) -> Running {
    let _ = std::fs::remove_file(path);
    let l = tokio::net::UnixListener::bind(path).unwrap();
    let incoming = UnixListenerStream::new(l).map(|s| {
        s.map(|io| PeerIo {
            io,
            fds: PeerFds::new(Attach::PerByte),
        })
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        Server::builder()
            .add_service(NetworkServiceServer::new(PeerService))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.await;
            }),
    );
    Running {
        stop,
        task: tokio::spawn(async move { task.await.unwrap().map_err(|e| e.to_string()) }),
    }
}

// ---------------------------------------------------------------------------------------------
// The vwire side.

/// vwire's test server: receives the fd of every `url*` parameter through its [`FdConn`] and
/// answers with the fd's inode and content; sends back the file `reply_path` names.
struct VwireService;

#[tonic::async_trait]
impl NetworkService for VwireService {
    async fn request(
        &self,
        req: Request<NetworkServiceRequest>,
    ) -> Result<Response<Connection>, Status> {
        let fds = req.extensions().get::<FdConn>().cloned();
        let params = params_of(req.into_inner());
        let mut out = HashMap::new();
        out.insert("has_fdconn".into(), fds.is_some().to_string());
        let Some(fds) = fds else {
            return Ok(Response::new(answer(out)));
        };
        let timeout = Duration::from_millis(
            params
                .get("timeout_ms")
                .map_or(2000, |t| t.parse().unwrap()),
        );
        for (k, url) in params.iter().filter(|(k, _)| k.starts_with("url")) {
            let fd = fds.recv_url(url, timeout).await?;
            out.insert(
                format!("{k}.inode"),
                InodeUrl::of(fd.as_fd()).unwrap().to_string(),
            );
            out.insert(format!("{k}.content"), content(&fd));
        }
        if let Some(path) = params.get("reply_path") {
            let f = std::fs::File::open(path).unwrap();
            out.insert("reply_url".into(), fds.send(f.as_fd())?.to_string());
        }
        let stats = fds.stats();
        out.insert("held".into(), fds.held().to_string());
        out.insert("truncated".into(), stats.truncated.to_string());
        Ok(Response::new(answer(out)))
    }

    async fn close(&self, _: Request<Connection>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }
}

/// A running server: stop it and wait for its end with [`Running::stop`].
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Serves [`VwireService`] with vwire's transport on `url`.
async fn vwire_server(url: &Url) -> Running {
    let listener = bind(url).await.unwrap();
    let router = Server::builder().add_service(NetworkServiceServer::new(VwireService));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(listener.serve(router, async move {
        let _ = stopped.await;
    }));
    Running {
        stop,
        task: tokio::spawn(async move { task.await.unwrap().map_err(|e| e.to_string()) }),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn params_of(r: NetworkServiceRequest) -> HashMap<String, String> {
    r.mechanism_preferences
        .into_iter()
        .next()
        .map(|m| m.parameters)
        .unwrap_or_default()
}

fn mechanism(params: HashMap<String, String>) -> NetworkServiceRequest {
    NetworkServiceRequest {
        connection: Some(Connection {
            id: "grpcfd-test".into(),
            ..Default::default()
        }),
        mechanism_preferences: vec![Mechanism {
            cls: "LOCAL".into(),
            r#type: "KERNEL".into(),
            parameters: params,
        }],
    }
}

fn answer(params: HashMap<String, String>) -> Connection {
    Connection {
        id: "grpcfd-test".into(),
        mechanism: Some(Mechanism {
            cls: "LOCAL".into(),
            r#type: "KERNEL".into(),
            parameters: params,
        }),
        ..Default::default()
    }
}

async fn call(
    channel: Channel,
    params: HashMap<String, String>,
) -> Result<HashMap<String, String>, Status> {
    let c = NetworkServiceClient::new(channel)
        .request(mechanism(params))
        .await?;
    Ok(c.into_inner().mechanism.unwrap().parameters)
}

/// The file's content read at offset 0 (the fd shares its offset with the sender's), or
/// `<unreadable>` (a namespace file).
fn content(fd: &OwnedFd) -> String {
    let f = std::fs::File::from(fd.try_clone().unwrap());
    let mut buf = [0u8; 64];
    match f.read_at(&mut buf, 0) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(_) => "<unreadable>".into(),
    }
}

/// A scratch directory of this test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("vwire-grpcfd-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    /// A new file holding `text`, opened for reading.
    fn file(&self, name: &str, text: &str) -> std::fs::File {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::File::open(p).unwrap()
    }

    fn sock(&self) -> PathBuf {
        self.0.join("s.sock")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn inode_of(f: &std::fs::File) -> String {
    let m = f.metadata().unwrap();
    format!("inode://{}/{}", m.dev(), m.ino())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Runs `f` on a fresh runtime, one test at a time: they count this process's fds.
fn serial<F: std::future::Future<Output = ()>>(f: F) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g: MutexGuard<'_, ()> = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f);
}

fn p(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn peer_client_passes_a_netns_and_a_file_to_a_vwire_server() {
    serial(async {
        let s = Scratch::new("peer-to-vwire");
        let server = vwire_server(&Url::Unix(s.sock())).await;
        let netns = std::fs::File::open("/proc/self/ns/net").unwrap();
        let file = s.file("a", "hello from the peer");
        let fds = PeerFds::new(Attach::PerByte);
        let (netns_url, file_url) = (fds.queue(&netns), fds.queue(&file));
        drop((netns, file)); // the peer's queue holds its own dups
        let ch = peer_dial(&s.sock(), fds.clone()).await;
        let out = call(ch, p(&[("url.netns", &netns_url), ("url.file", &file_url)]))
            .await
            .unwrap();
        assert_eq!(out["has_fdconn"], "true");
        // The vwire side fstat'ed the fds it got: the same inodes.
        assert_eq!(out["url.netns.inode"], netns_url);
        assert_eq!(out["url.file.inode"], file_url);
        let ours = std::fs::metadata("/proc/self/ns/net").unwrap();
        assert_eq!(netns_url, format!("inode://{}/{}", ours.dev(), ours.ino()));
        assert_eq!(out["url.file.content"], "hello from the peer");
        assert_eq!(out["held"], "2");
        assert!(fds.outbox.lock().unwrap().is_empty());
        server.stop().await;
    });
}

#[test]
fn vwire_client_passes_fds_one_per_byte_to_a_peer_server() {
    serial(async {
        let s = Scratch::new("vwire-to-peer");
        let server = peer_server(&s.sock()).await;
        let (ch, fds) = dial_with_fds(&Url::Unix(s.sock()), DIAL_TIMEOUT)
            .await
            .unwrap();
        let file = s.file("b", "hello from vwire");
        let url = fds.send(file.as_fd()).unwrap();
        assert_eq!(url.to_string(), inode_of(&file));
        drop(file);
        assert_eq!(fds.queued(), 1);
        let out = call(ch, p(&[("url", &url.to_string())])).await.unwrap();
        assert_eq!(out["url.content"], "hello from vwire");
        assert_eq!(out["max_fds_per_message"], "1");
        assert_eq!(fds.queued(), 0);
        assert_eq!(fds.stats().sent, 1);
        server.stop().await;
    });
}

#[test]
fn vwire_server_answers_with_an_fd_the_peer_client_receives() {
    serial(async {
        let s = Scratch::new("vwire-reply");
        let server = vwire_server(&Url::Unix(s.sock())).await;
        let reply = s.0.join("reply");
        std::fs::write(&reply, "hello back").unwrap();
        let fds = PeerFds::new(Attach::PerByte);
        let ch = peer_dial(&s.sock(), fds.clone()).await;
        let out = call(ch, p(&[("reply_path", reply.to_str().unwrap())]))
            .await
            .unwrap();
        let url = &out["reply_url"];
        let m = std::fs::metadata(&reply).unwrap();
        assert_eq!(*url, format!("inode://{}/{}", m.dev(), m.ino()));
        // By the time the response is decoded, the fd that rode on its bytes has been read.
        let fd = fds.find(url).await.expect("the reply fd arrived");
        assert_eq!(content(&fd), "hello back");
        assert_eq!(*fds.per_message.lock().unwrap(), vec![1]);
        server.stop().await;
    });
}

#[test]
fn vwire_client_and_server_pass_fds_both_ways() {
    serial(async {
        let s = Scratch::new("vwire-both");
        let server = vwire_server(&Url::Unix(s.sock())).await;
        let (ch, fds) = dial_with_fds(&Url::Unix(s.sock()), DIAL_TIMEOUT)
            .await
            .unwrap();
        let file = s.file("c", "there");
        let url = fds.send(file.as_fd()).unwrap().to_string();
        let reply = s.0.join("reply");
        std::fs::write(&reply, "and back").unwrap();
        let out = call(
            ch,
            p(&[("url", &url), ("reply_path", reply.to_str().unwrap())]),
        )
        .await
        .unwrap();
        assert_eq!(out["url.content"], "there");
        let got = fds
            .recv_url(&out["reply_url"], Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(content(&got), "and back");
        // The caller owns the dup; the handle still holds its own.
        drop(got);
        assert_eq!(fds.held(), 1);
        server.stop().await;
    });
}

#[test]
fn seventy_fds_at_once_arrive_in_both_directions() {
    serial(async {
        let s = Scratch::new("seventy");
        let files: Vec<_> = (0..70)
            .map(|i| s.file(&format!("f{i}"), &format!("file {i}")))
            .collect();

        // Peer client -> vwire server, one fd per byte over several writes.
        let vsock = s.0.join("v.sock");
        let server = vwire_server(&Url::Unix(vsock.clone())).await;
        let pfds = PeerFds::new(Attach::PerByte);
        let params: HashMap<_, _> = files
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("url{i}"), pfds.queue(f)))
            .collect();
        let ch = peer_dial(&vsock, pfds.clone()).await;
        let out = call(ch, params).await.unwrap();
        for i in 0..70 {
            assert_eq!(out[&format!("url{i}.content")], format!("file {i}"));
        }
        assert_eq!(out["held"], "70");
        assert_eq!(out["truncated"], "0");
        server.stop().await;

        // vwire client -> peer server: 70 one-fd messages, in at least two writes.
        let psock = s.0.join("p.sock");
        let server = peer_server(&psock).await;
        let (ch, fds) = dial_with_fds(&Url::Unix(psock), DIAL_TIMEOUT)
            .await
            .unwrap();
        let params: HashMap<_, _> = files
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("url{i}"), fds.send(f.as_fd()).unwrap().to_string()))
            .collect();
        assert_eq!(fds.queued(), 70);
        let out = call(ch, params).await.unwrap();
        for i in 0..70 {
            assert_eq!(out[&format!("url{i}.content")], format!("file {i}"));
        }
        assert_eq!(out["max_fds_per_message"], "1");
        assert_eq!(out["fd_messages"], "70");
        assert_eq!(fds.stats().sent, 70);
        server.stop().await;
    });
}

#[test]
fn a_batch_of_seventy_fds_in_one_message_is_truncated_not_leaked() {
    serial(async {
        let s = Scratch::new("batch");
        let files: Vec<_> = (0..70)
            .map(|i| s.file(&format!("f{i}"), &format!("file {i}")))
            .collect();
        let before = open_fds();
        let server = vwire_server(&Url::Unix(s.sock())).await;
        let pfds = PeerFds::new(Attach::Batch);
        for f in &files {
            pfds.queue(f);
        }
        let ch = peer_dial(&s.sock(), pfds.clone()).await;
        // Ask for none of them: just report what arrived.
        let out = call(ch, HashMap::new()).await.unwrap();
        assert_eq!(out["truncated"], "1");
        assert_eq!(out["held"], "64");
        server.stop().await;
        drop(pfds);
        wait_for_fds(before).await;
    });
}

#[test]
fn an_fd_that_never_arrives_times_out_naming_the_url() {
    serial(async {
        let s = Scratch::new("never");
        let server = vwire_server(&Url::Unix(s.sock())).await;
        let ch = peer_dial(&s.sock(), PeerFds::new(Attach::PerByte)).await;
        let t = Instant::now();
        let e = call(ch, p(&[("url", "inode://1/2"), ("timeout_ms", "200")]))
            .await
            .unwrap_err();
        let took = t.elapsed();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
        assert!(e.message().contains("inode://1/2"), "{e:?}");
        assert!(e.message().contains("did not arrive within 200ms"), "{e:?}");
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
        // A malformed URL is an invalid argument.
        let ch = peer_dial(&s.sock(), PeerFds::new(Attach::PerByte)).await;
        let e = call(ch, p(&[("url", "inode://1")])).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        server.stop().await;
    });
}

#[test]
fn a_proc_fd_path_of_the_socket_file_dials() {
    serial(async {
        let s = Scratch::new("procfd");
        let server = vwire_server(&Url::Unix(s.sock())).await;
        // An O_PATH fd of the socket file, as an nsmgr holds a forwarder's listen socket.
        let sockfile = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(s.sock())
            .unwrap();
        let url: Url = format!("unix:///proc/self/fd/{}", sockfile.as_raw_fd())
            .parse()
            .unwrap();
        let (ch, _fds) = dial_with_fds(&url, DIAL_TIMEOUT).await.unwrap();
        let out = call(ch, HashMap::new()).await.unwrap();
        assert_eq!(out["has_fdconn"], "true");
        // And the helper's form names the same file from here.
        let named = vwire::transport::proc_fd_url(sockfile.as_fd());
        let m = std::fs::metadata(named.strip_prefix("file://").unwrap()).unwrap();
        assert_eq!(m.ino(), std::fs::metadata(s.sock()).unwrap().ino());
        server.stop().await;
    });
}

#[test]
fn over_tcp_handlers_find_no_fdconn_and_fds_cannot_be_dialled() {
    serial(async {
        let listener = bind(&"tcp://127.0.0.1:0".parse().unwrap()).await.unwrap();
        let url = listener.url().unwrap();
        drop(listener);
        let server = vwire_server(&url).await;
        let out = call(dial(&url, DIAL_TIMEOUT).await.unwrap(), HashMap::new())
            .await
            .unwrap();
        assert_eq!(out["has_fdconn"], "false");
        match dial_with_fds(&url, DIAL_TIMEOUT).await {
            Err(e @ TransportError::NoFds(_)) => assert!(e.to_string().contains("unix://"), "{e}"),
            other => panic!("{other:?}"),
        }
        server.stop().await;
    });
}

/// Waits up to 2 s for this process to have `n` open fds again.
async fn wait_for_fds(n: usize) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = open_fds();
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} fds open, {n} before: leaked {:?}",
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn no_fd_outlives_the_connections() {
    serial(async {
        let s = Scratch::new("leak");
        let files: Vec<_> = (0..5)
            .map(|i| s.file(&format!("f{i}"), &format!("file {i}")))
            .collect();
        let reply = s.0.join("f0");
        // Warm up what the runtime opens once (its timer, a blocking thread), then count.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let before = open_fds();
        {
            let vsock = s.0.join("v.sock");
            let psock = s.0.join("p.sock");
            let vserver = vwire_server(&Url::Unix(vsock.clone())).await;
            let pserver = peer_server(&psock).await;

            // Peer client -> vwire server, with an fd back.
            let pfds = PeerFds::new(Attach::PerByte);
            let mut params: HashMap<_, _> = files
                .iter()
                .enumerate()
                .map(|(i, f)| (format!("url{i}"), pfds.queue(f)))
                .collect();
            params.insert("reply_path".into(), reply.to_str().unwrap().into());
            let out = call(peer_dial(&vsock, pfds.clone()).await, params)
                .await
                .unwrap();
            assert!(pfds.find(&out["reply_url"]).await.is_some());

            // vwire client -> vwire server both ways, and an fd queued that never goes out.
            let (ch, fds) = dial_with_fds(&Url::Unix(vsock), DIAL_TIMEOUT)
                .await
                .unwrap();
            let url = fds.send(files[1].as_fd()).unwrap().to_string();
            let out = call(
                ch.clone(),
                p(&[("url", &url), ("reply_path", reply.to_str().unwrap())]),
            )
            .await
            .unwrap();
            let _kept = fds
                .recv_url(&out["reply_url"], Duration::from_secs(1))
                .await
                .unwrap();
            fds.send(files[2].as_fd()).unwrap();

            // vwire client -> peer server.
            let (ch2, fds2) = dial_with_fds(&Url::Unix(psock), DIAL_TIMEOUT)
                .await
                .unwrap();
            let url = fds2.send(files[3].as_fd()).unwrap().to_string();
            call(ch2.clone(), p(&[("url", &url)])).await.unwrap();

            assert!(open_fds() > before);
            drop((ch, ch2, fds, fds2, pfds));
            vserver.stop().await;
            pserver.stop().await;
        }
        wait_for_fds(before).await;
    });
}
