//! The memif control driver: runs the handshakes (spec §4) on the control thread's tokio
//! runtime, builds a [`Session`] per connection, publishes it through the port's [`Link`], and
//! tears it down on disconnect.
//!
//! - Server: one listener per socket name (and netns) serves every interface id registered on it;
//!   each id accepts one peer at a time. The listener stays up across disconnects.
//! - Client: dials every second until connected, and again after a disconnect.
//!
//! Every handshake error, malformed message or timeout sends DISCONNECT with a reason and
//! closes that one connection (spec §9); nothing else is affected. A connection's memory and fds
//! are released only after [`Link::detach`] returned, i.e. after the workers quiesced.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use super::msg::{AddRing, Hello, Init, Mode, Msg, COOKIE, MSG_SIZE, VERSION};
use super::port::{Link, Role, Session, SessionRing, MAX_QUEUES};
use super::shm::{ring_bytes, Region, Regions, Ring, MAX_LOG2_RING};
use super::sock::{self, Received};
use super::MemifError;

/// How long a peer may take to send the next handshake message.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a client re-dials (spec: libmemif 2 s, VPP 3 s; the issue asks for 1 s).
const REDIAL: Duration = Duration::from_secs(1);
/// Largest region a peer may announce: offsets are u32 (spec §5.1).
const MAX_REGION: u64 = 1 << 32;
/// Most regions a peer may add.
const MAX_REGIONS: usize = 16;

/// A memif port's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemifConfig {
    /// Interface name (sent in CONNECT/CONNECTED).
    pub name: String,
    /// Socket: a path, or `@name` for an abstract socket.
    pub socket: String,
    /// Our role.
    pub role: Role,
    /// Interface id on the socket.
    pub id: u32,
    /// Ethernet or IP.
    pub mode: Mode,
    /// Queue pairs.
    pub queues: u16,
    /// log2 of the ring size.
    pub log2_ring_size: u8,
    /// Client: bytes per buffer.
    pub buffer_size: u32,
    /// Secret ("" for none).
    pub secret: String,
    /// Network namespace of an abstract socket.
    pub netns: Option<PathBuf>,
}

type Conn = AsyncFd<OwnedFd>;

/// Registers a socket with the runtime.
fn register(fd: OwnedFd) -> Result<Conn, MemifError> {
    // SAFETY: an OwnedFd is a valid open descriptor that stays open and unchanged for as long as
    // the AsyncFd owns it.
    unsafe { AsyncFd::register(fd) }.map_err(|e| {
        MemifError::Io(
            "registering a socket with the runtime".into(),
            std::io::Error::other(e.to_string()),
        )
    })
}

async fn send(c: &Conn, m: &Msg, fd: Option<RawFd>) -> Result<(), MemifError> {
    let bytes = m.encode();
    loop {
        let mut g = c
            .writable()
            .await
            .map_err(|e| MemifError::Io("waiting to send".into(), e))?;
        if sock::send(c.get_ref(), &bytes, fd)? {
            return Ok(());
        }
        g.clear_ready();
    }
}

async fn recv(c: &Conn) -> Result<(Msg, Option<OwnedFd>), MemifError> {
    loop {
        let mut g = c
            .readable()
            .await
            .map_err(|e| MemifError::Io("waiting to receive".into(), e))?;
        match sock::recv(c.get_ref())? {
            Received::WouldBlock => g.clear_ready(),
            Received::Closed => {
                return Err(MemifError::Protocol("peer closed the connection".into()))
            }
            Received::Msg { buf, len, fd } => {
                if len != MSG_SIZE {
                    return Err(MemifError::Protocol(format!(
                        "malformed message of {len} bytes"
                    )));
                }
                let m = Msg::decode(&buf)
                    .map_err(|e| MemifError::Protocol(format!("malformed message: {e}")))?;
                return Ok((m, fd));
            }
        }
    }
}

async fn recv_timeout(c: &Conn) -> Result<(Msg, Option<OwnedFd>), MemifError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, recv(c))
        .await
        .map_err(|_| MemifError::Protocol("handshake timed out".into()))?
}

/// Best effort: tell the peer why, then the caller drops the connection.
async fn disconnect(c: &Conn, reason: &str) {
    let m = Msg::Disconnect {
        code: 0,
        reason: reason.to_string(),
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), send(c, &m, None)).await;
}

fn eventfd() -> Result<OwnedFd, MemifError> {
    // SAFETY: plain eventfd(2); checked and owned below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemifError::io("eventfd"));
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits until the connected peer disconnects (or breaks the protocol), then detaches.
async fn serve_connected(c: &Conn, link: &Link) {
    let reason = match recv(c).await {
        Ok((Msg::Disconnect { reason, .. }, _)) => format!("peer disconnected: {reason}"),
        Ok((m, _)) => {
            disconnect(c, "unexpected message after connect").await;
            format!("unexpected {} after connect", m.name())
        }
        Err(e) => e.to_string(),
    };
    tracing::info!(%reason, "memif link down");
    drop(link.detach());
}

// ---------------------------------------------------------------- server

struct ServerIface {
    cfg: MemifConfig,
    link: Arc<Link>,
    busy: bool,
    /// Set to true when the interface is removed: its connection task ends.
    stop: tokio::sync::watch::Sender<bool>,
}

impl ServerIface {
    fn new(cfg: MemifConfig, link: Arc<Link>) -> Self {
        Self {
            cfg,
            link,
            busy: false,
            stop: tokio::sync::watch::Sender::new(false),
        }
    }
}

/// A listening socket shared by the server interfaces registered on it.
struct Listener {
    ifaces: Mutex<HashMap<u32, ServerIface>>,
}

type ListenerKey = (String, Option<PathBuf>);

/// Names one interface served by a [`Driver`], for [`Driver::remove`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemifHandle(HandleKind);

#[derive(Clone, Debug, PartialEq, Eq)]
enum HandleKind {
    Client(u64),
    Server(ListenerKey, u32),
}

/// The control side of every memif port of a process.
#[derive(Default)]
pub struct Driver {
    listeners: HashMap<ListenerKey, (Arc<Listener>, JoinHandle<()>)>,
    clients: HashMap<u64, (Arc<Link>, JoinHandle<()>)>,
    next_client: u64,
}

impl Driver {
    /// A driver with no ports.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts serving `cfg` (either role) for `link`. Must be called inside a tokio runtime.
    pub fn add(&mut self, cfg: MemifConfig, link: Arc<Link>) -> Result<MemifHandle, MemifError> {
        match cfg.role {
            Role::Client => {
                let n = self.next_client;
                self.next_client += 1;
                let task = tokio::spawn(client_loop(cfg, link.clone()));
                self.clients.insert(n, (link, task));
                Ok(MemifHandle(HandleKind::Client(n)))
            }
            Role::Server => self.add_server(cfg, link),
        }
    }

    fn add_server(&mut self, cfg: MemifConfig, link: Arc<Link>) -> Result<MemifHandle, MemifError> {
        let key = (cfg.socket.clone(), cfg.netns.clone());
        let handle = MemifHandle(HandleKind::Server(key.clone(), cfg.id));
        if let Some((l, _)) = self.listeners.get(&key) {
            let mut ifaces = l.ifaces.lock().unwrap_or_else(|e| e.into_inner());
            if ifaces.contains_key(&cfg.id) {
                return Err(MemifError::Config(format!(
                    "id {} is already served on {}",
                    cfg.id, cfg.socket
                )));
            }
            ifaces.insert(cfg.id, ServerIface::new(cfg, link));
            return Ok(handle);
        }
        let fd = sock::socket_in_netns(cfg.netns.as_deref())?;
        sock::listen(&fd, &cfg.socket)?;
        let afd = register(fd)?;
        let listener = Arc::new(Listener {
            ifaces: Mutex::new(HashMap::from([(
                cfg.id,
                ServerIface::new(cfg.clone(), link),
            )])),
        });
        let socket = cfg.socket.clone();
        let l = listener.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok(mut g) = afd.readable().await else {
                    return;
                };
                match sock::accept(afd.get_ref()) {
                    Ok(Some(conn)) => {
                        let l = l.clone();
                        tokio::spawn(async move {
                            if let Ok(c) = register(conn) {
                                server_conn(c, l).await;
                            }
                        });
                    }
                    Ok(None) => g.clear_ready(),
                    Err(e) => {
                        tracing::warn!(socket = %socket, "memif accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        self.listeners.insert(key, (listener, task));
        Ok(handle)
    }

    /// Stops serving one interface: disconnects its peer, detaches its link (unmapping the
    /// session's memory once the workers have quiesced, so it may block briefly), and closes
    /// the listening socket when it was the socket's last interface. Unknown handles are fine.
    pub fn remove(&mut self, h: &MemifHandle) {
        match &h.0 {
            HandleKind::Client(n) => {
                if let Some((link, task)) = self.clients.remove(n) {
                    task.abort();
                    drop(link.detach());
                }
            }
            HandleKind::Server(key, id) => {
                let Some((listener, _)) = self.listeners.get(key) else {
                    return;
                };
                let (removed, empty) = {
                    let mut ifaces = listener.ifaces.lock().unwrap_or_else(|e| e.into_inner());
                    (ifaces.remove(id), ifaces.is_empty())
                };
                if let Some(i) = removed {
                    i.stop.send_replace(true);
                    drop(i.link.detach());
                }
                if empty {
                    if let Some((_, task)) = self.listeners.remove(key) {
                        task.abort();
                    }
                    if !key.0.starts_with('@') {
                        let _ = std::fs::remove_file(&key.0);
                    }
                }
            }
        }
    }

    /// Stops every listener and client, and detaches every link (unmapping its memory once the
    /// workers have quiesced). Filesystem sockets of listeners are removed.
    pub fn shutdown(&mut self) {
        for (_, (link, task)) in self.clients.drain() {
            task.abort();
            drop(link.detach());
        }
        for ((socket, _), (l, task)) in self.listeners.drain() {
            task.abort();
            if !socket.starts_with('@') {
                let _ = std::fs::remove_file(&socket);
            }
            for (_, i) in l.ifaces.lock().unwrap_or_else(|e| e.into_inner()).drain() {
                i.stop.send_replace(true);
                drop(i.link.detach());
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Marks the interface free again when the connection task ends, however it ends.
struct BusyGuard {
    listener: Arc<Listener>,
    id: u32,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut ifaces = self
            .listener
            .ifaces
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(i) = ifaces.get_mut(&self.id) {
            drop(i.link.detach());
            i.busy = false;
        }
    }
}

async fn server_conn(c: Conn, listener: Arc<Listener>) {
    if let Err(e) = send(&c, &Msg::Hello(Hello::vwire()), None).await {
        tracing::debug!("memif: {e}");
        return;
    }
    let init = match recv_timeout(&c).await {
        Ok((Msg::Init(i), _)) => i,
        Ok((m, _)) => {
            return disconnect(
                &c,
                &format!("unexpected message {} (expected INIT)", m.name()),
            )
            .await
        }
        Err(e) => return disconnect(&c, &e.to_string()).await,
    };
    // Claim the interface by id (no await while the lock is held).
    let claimed = {
        let mut ifaces = listener.ifaces.lock().unwrap_or_else(|e| e.into_inner());
        match ifaces.get_mut(&init.id) {
            None => Err("unmatched interface id"),
            Some(i) if i.busy => Err("interface already connected"),
            Some(i) => {
                i.busy = true;
                Ok((i.cfg.clone(), i.link.clone(), i.stop.subscribe()))
            }
        }
    };
    let (cfg, link, mut stop) = match claimed {
        Ok(c) => c,
        Err(reason) => return disconnect(&c, reason).await,
    };
    let _guard = BusyGuard {
        listener: listener.clone(),
        id: init.id,
    };
    let session = async {
        match server_handshake(&c, &cfg, &init, &link).await {
            Ok(()) => {
                tracing::info!(port = %cfg.name, peer = %init.name, "memif connected (server)");
                serve_connected(&c, &link).await;
            }
            Err(e) => {
                tracing::warn!(port = %cfg.name, "memif handshake failed: {e}");
                disconnect(&c, &e.to_string()).await;
            }
        }
    };
    tokio::select! {
        () = session => {}
        () = stopped(&mut stop) => {
            disconnect(&c, "interface deleted").await;
            drop(link.detach());
        }
    }
}

/// Resolves once the interface's stop flag is set (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        let set = *stop.borrow_and_update();
        if set || stop.changed().await.is_err() {
            return;
        }
    }
}

/// Checks INIT against our interface (spec §3 field semantics).
fn check_init(cfg: &MemifConfig, init: &Init) -> Result<(), MemifError> {
    if init.version != VERSION {
        return Err(MemifError::Protocol(format!(
            "unsupported version {:#06x}",
            init.version
        )));
    }
    if init.mode != cfg.mode {
        return Err(MemifError::Protocol("mode mismatch".into()));
    }
    if !cfg.secret.is_empty() && init.secret != cfg.secret {
        return Err(MemifError::Protocol(
            if init.secret.is_empty() {
                "secret required"
            } else {
                "incorrect secret"
            }
            .into(),
        ));
    }
    Ok(())
}

async fn server_handshake(
    c: &Conn,
    cfg: &MemifConfig,
    init: &Init,
    link: &Link,
) -> Result<(), MemifError> {
    check_init(cfg, init)?;
    send(c, &Msg::Ack, None).await?;
    let mut regions = Regions::default();
    let mut s2m: Vec<SessionRing> = Vec::new();
    let mut m2s: Vec<SessionRing> = Vec::new();
    loop {
        let (m, fd) = recv_timeout(c).await?;
        match m {
            Msg::AddRegion { index, size } => {
                let fd =
                    fd.ok_or_else(|| MemifError::Protocol("missing memory region fd".into()))?;
                if usize::from(index) != regions.0.len() || regions.0.len() >= MAX_REGIONS {
                    return Err(MemifError::Protocol("unexpected region index".into()));
                }
                if size == 0 || size > MAX_REGION {
                    return Err(MemifError::Protocol(format!(
                        "region size {size} out of range"
                    )));
                }
                let len = usize::try_from(size)
                    .map_err(|_| MemifError::Protocol("region too large".into()))?;
                regions.0.push(Region::map(fd, len)?);
            }
            Msg::AddRing(r) => {
                let fd =
                    fd.ok_or_else(|| MemifError::Protocol("missing ring interrupt fd".into()))?;
                add_ring(cfg, &regions, &mut s2m, &mut m2s, &r, fd)?;
            }
            Msg::Connect { if_name } => {
                if s2m.is_empty() || m2s.is_empty() {
                    return Err(MemifError::Protocol(
                        "connect without rings in both directions".into(),
                    ));
                }
                for r in s2m.iter().chain(&m2s) {
                    if r.ring.cookie() != COOKIE {
                        return Err(MemifError::Protocol("wrong cookie on a ring".into()));
                    }
                }
                link.attach(Session {
                    generation: link.next_generation(),
                    role: Role::Server,
                    regions,
                    s2m,
                    m2s,
                    buffer_size: 0,
                    buffer_offset: 0,
                });
                send(
                    c,
                    &Msg::Connected {
                        if_name: cfg.name.clone(),
                    },
                    None,
                )
                .await?;
                tracing::debug!(peer_if = %if_name, "memif CONNECT");
                return Ok(());
            }
            Msg::Disconnect { reason, .. } => {
                return Err(MemifError::Protocol(format!("peer disconnected: {reason}")))
            }
            other => {
                return Err(MemifError::Protocol(format!(
                    "unexpected message {}",
                    other.name()
                )))
            }
        }
        send(c, &Msg::Ack, None).await?;
    }
}

fn add_ring(
    cfg: &MemifConfig,
    regions: &Regions,
    s2m: &mut Vec<SessionRing>,
    m2s: &mut Vec<SessionRing>,
    r: &AddRing,
    eventfd: OwnedFd,
) -> Result<(), MemifError> {
    if r.private_hdr_size != 0 {
        return Err(MemifError::Protocol("private headers not supported".into()));
    }
    let list = if r.s2m { s2m } else { m2s };
    if usize::from(r.index) != list.len() {
        return Err(MemifError::Protocol("unexpected ring index".into()));
    }
    if r.index >= cfg.queues {
        return Err(MemifError::Protocol("invalid ring index".into()));
    }
    let ring = Ring::locate(regions, r.region, r.offset, r.log2_ring_size)?;
    list.push(SessionRing {
        ring,
        eventfd,
        first_slot: 0,
    });
    Ok(())
}

// ---------------------------------------------------------------- client

async fn client_loop(cfg: MemifConfig, link: Arc<Link>) {
    let mut last_error = String::new();
    loop {
        match client_once(&cfg, &link).await {
            Ok(()) => last_error.clear(),
            Err(e) => {
                let e = e.to_string();
                if e != last_error {
                    tracing::info!(port = %cfg.name, "memif client: {e}; retrying every {REDIAL:?}");
                    last_error = e;
                }
            }
        }
        drop(link.detach());
        tokio::time::sleep(REDIAL).await;
    }
}

async fn client_once(cfg: &MemifConfig, link: &Link) -> Result<(), MemifError> {
    let fd = sock::socket_in_netns(cfg.netns.as_deref())?;
    sock::connect(&fd, &cfg.socket)?;
    let c = register(fd)?;
    let result = client_handshake(&c, cfg, link).await;
    match result {
        Ok(()) => {
            tracing::info!(port = %cfg.name, "memif connected (client)");
            serve_connected(&c, link).await;
            Ok(())
        }
        Err(e) => {
            disconnect(&c, &e.to_string()).await;
            Err(e)
        }
    }
}

/// The client's memory: region 0 holds all S2M rings, then all M2S rings, then one buffer per
/// descriptor (spec §5.2, the VPP/DPDK copy layout).
struct ClientLayout {
    n_s2m: u16,
    n_m2s: u16,
    log2: u8,
    buffer_size: u32,
    buffer_offset: u32,
    size: u32,
}

impl ClientLayout {
    fn new(cfg: &MemifConfig, hello: &Hello) -> Result<Self, MemifError> {
        if hello.min_version > VERSION || hello.max_version < VERSION {
            return Err(MemifError::Protocol("incompatible version".into()));
        }
        let n_s2m = cfg.queues.min(hello.max_s2m_ring.saturating_add(1));
        let n_m2s = cfg.queues.min(hello.max_m2s_ring.saturating_add(1));
        let log2 = cfg
            .log2_ring_size
            .min(hello.max_log2_ring_size)
            .min(MAX_LOG2_RING);
        let rings = (u64::from(n_s2m) + u64::from(n_m2s)) * ring_bytes(log2) as u64;
        let buffers =
            (u64::from(n_s2m) + u64::from(n_m2s)) * (1u64 << log2) * u64::from(cfg.buffer_size);
        let size = u32::try_from(rings + buffers)
            .map_err(|_| MemifError::Config("rings and buffers exceed 4 GiB".into()))?;
        Ok(Self {
            n_s2m,
            n_m2s,
            log2,
            buffer_size: cfg.buffer_size,
            buffer_offset: u32::try_from(rings).unwrap_or(u32::MAX),
            size,
        })
    }

    fn ring_offset(&self, s2m: bool, i: u16) -> u32 {
        let g = if s2m {
            u32::from(i)
        } else {
            u32::from(self.n_s2m) + u32::from(i)
        };
        g * u32::try_from(ring_bytes(self.log2)).unwrap_or(0)
    }
}

/// Creates the client's region 0 and initialises its rings and descriptors (spec §5.2): every
/// descriptor points at its own buffer slot, with the buffer size as capacity.
fn client_memory(
    name: &str,
    layout: &ClientLayout,
) -> Result<(Regions, [Vec<SessionRing>; 2]), MemifError> {
    let region = Region::create(&format!("vwire-memif-{name}"), layout.size as usize)?;
    let regions = Regions(vec![region]);
    let mut rings: [Vec<SessionRing>; 2] = [Vec::new(), Vec::new()];
    for (dir, s2m) in [(0usize, true), (1, false)] {
        let n = if s2m { layout.n_s2m } else { layout.n_m2s };
        for i in 0..n {
            let ring = Ring::locate(&regions, 0, layout.ring_offset(s2m, i), layout.log2)?;
            ring.init(COOKIE);
            let g = if s2m {
                u32::from(i)
            } else {
                u32::from(layout.n_s2m) + u32::from(i)
            };
            let first_slot = g << layout.log2;
            for k in 0..ring.size() {
                let offset =
                    layout.buffer_offset + (first_slot + u32::from(k)) * layout.buffer_size;
                ring.write_desc(
                    k,
                    super::shm::Desc {
                        flags: 0,
                        region: 0,
                        length: layout.buffer_size,
                        offset,
                    },
                );
            }
            rings[dir].push(SessionRing {
                ring,
                eventfd: eventfd()?,
                first_slot,
            });
        }
    }
    Ok((regions, rings))
}

async fn client_handshake(c: &Conn, cfg: &MemifConfig, link: &Link) -> Result<(), MemifError> {
    let hello = match recv_timeout(c).await? {
        (Msg::Hello(h), _) => h,
        (m, _) => {
            return Err(MemifError::Protocol(format!(
                "unexpected message {} (expected HELLO)",
                m.name()
            )))
        }
    };
    let layout = ClientLayout::new(cfg, &hello)?;
    let (regions, rings) = client_memory(&cfg.name, &layout)?;
    let expect_ack = |m: Msg| match m {
        Msg::Ack => Ok(()),
        Msg::Disconnect { reason, .. } => {
            Err(MemifError::Protocol(format!("server refused: {reason}")))
        }
        other => Err(MemifError::Protocol(format!(
            "unexpected message {} (expected ACK)",
            other.name()
        ))),
    };
    let init = Msg::Init(Init {
        version: VERSION,
        id: cfg.id,
        mode: cfg.mode,
        secret: cfg.secret.clone(),
        name: "vwire".into(),
    });
    send(c, &init, None).await?;
    expect_ack(recv_timeout(c).await?.0)?;
    let region_msg = Msg::AddRegion {
        index: 0,
        size: u64::from(layout.size),
    };
    send(c, &region_msg, Some(regions.0[0].fd().as_raw_fd())).await?;
    expect_ack(recv_timeout(c).await?.0)?;
    for (dir, s2m) in [(0usize, true), (1, false)] {
        for (i, r) in rings[dir].iter().enumerate() {
            let m = Msg::AddRing(AddRing {
                s2m,
                index: u16::try_from(i).unwrap_or(u16::MAX),
                region: 0,
                offset: layout.ring_offset(s2m, u16::try_from(i).unwrap_or(0)),
                log2_ring_size: layout.log2,
                private_hdr_size: 0,
            });
            send(c, &m, Some(r.eventfd.as_raw_fd())).await?;
            expect_ack(recv_timeout(c).await?.0)?;
        }
    }
    send(
        c,
        &Msg::Connect {
            if_name: cfg.name.clone(),
        },
        None,
    )
    .await?;
    match recv_timeout(c).await?.0 {
        Msg::Connected { .. } => {}
        Msg::Disconnect { reason, .. } => {
            return Err(MemifError::Protocol(format!("server refused: {reason}")))
        }
        other => {
            return Err(MemifError::Protocol(format!(
                "unexpected message {} (expected CONNECTED)",
                other.name()
            )))
        }
    }
    let [s2m, m2s] = rings;
    link.attach(Session {
        generation: link.next_generation(),
        role: Role::Client,
        regions,
        s2m,
        m2s,
        buffer_size: layout.buffer_size,
        buffer_offset: layout.buffer_offset,
    });
    Ok(())
}

/// Builds a connected client and server session over one shared region, in this process, as
/// the handshake would: for tests and benches of the data path without sockets.
pub fn session_pair(cfg: &MemifConfig, client: &Link, server: &Link) -> Result<(), MemifError> {
    let layout = ClientLayout::new(cfg, &Hello::vwire())?;
    let (regions, rings) = client_memory(&cfg.name, &layout)?;
    let fd = regions.0[0]
        .fd()
        .try_clone()
        .map_err(|e| MemifError::Io("dup".into(), e))?;
    let server_regions = Regions(vec![Region::map(fd, regions.0[0].len())?]);
    let mut server_rings: [Vec<SessionRing>; 2] = [Vec::new(), Vec::new()];
    for (dir, s2m) in [(0usize, true), (1, false)] {
        for (i, r) in rings[dir].iter().enumerate() {
            let offset = layout.ring_offset(s2m, u16::try_from(i).unwrap_or(0));
            server_rings[dir].push(SessionRing {
                ring: Ring::locate(&server_regions, 0, offset, layout.log2)?,
                eventfd: r
                    .eventfd
                    .try_clone()
                    .map_err(|e| MemifError::Io("dup".into(), e))?,
                first_slot: 0,
            });
        }
    }
    let [s2m, m2s] = rings;
    client.attach(Session {
        generation: client.next_generation(),
        role: Role::Client,
        regions,
        s2m,
        m2s,
        buffer_size: layout.buffer_size,
        buffer_offset: layout.buffer_offset,
    });
    let [s2m, m2s] = server_rings;
    server.attach(Session {
        generation: server.next_generation(),
        role: Role::Server,
        regions: server_regions,
        s2m,
        m2s,
        buffer_size: 0,
        buffer_offset: 0,
    });
    Ok(())
}

/// Checks a configuration's numbers (the ctrl config calls this).
pub fn validate(cfg: &MemifConfig) -> Result<(), MemifError> {
    if cfg.queues == 0 || usize::from(cfg.queues) > MAX_QUEUES {
        return Err(MemifError::Config(format!(
            "queues must be 1 to {MAX_QUEUES}"
        )));
    }
    if cfg.log2_ring_size == 0 || cfg.log2_ring_size > MAX_LOG2_RING {
        return Err(MemifError::Config(format!(
            "ring_size must be a power of two from 2 to {}",
            1u32 << MAX_LOG2_RING
        )));
    }
    if !(128..=65_535).contains(&cfg.buffer_size) {
        return Err(MemifError::Config(
            "buffer_size must be 128 to 65535".into(),
        ));
    }
    if cfg.secret.len() > 23 {
        return Err(MemifError::Config("secret is at most 23 bytes".into()));
    }
    sock::sockaddr(&cfg.socket).map(|_| ())
}
