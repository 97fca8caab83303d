//! The memif "app" of the example workloads: one memif interface (either role) whose far end is a
//! tiny host that answers ARP / neighbour solicitations and ICMP echo ([`crate::responder`]) and
//! can ping its peer ([`crate::pinger`]). `vwire-nsc --mechanism memif` runs one as the memif
//! client of the socket the forwarder returns; `vwire-nse --mechanism memif` runs one server per
//! connection.
//!
//! It uses vwire's own memif implementation (`vwire_mechanisms::memif`) and runs on two threads
//! per interface:
//! - `memif-ctl`: a current-thread tokio runtime with one [`Driver`] that runs the memif
//!   handshakes (the server listens; the client dials every second until connected).
//! - `memif-io`: the packet loop over a [`MemifPort`]: receive a burst, answer it in place,
//!   add the pinger's packet, transmit. When a loop moved nothing it sleeps in `poll(2)` on the
//!   receive eventfds with the port's interrupts turned on (`prepare_sleep` → `poll` →
//!   `after_sleep`), at most [`MAX_SLEEP`], so an idle interface costs next to no CPU. It holds
//!   a QSBR [`Reader`] of the link, quiescent once per loop and offline while asleep, so the
//!   driver's `Link::detach` never waits long.
//!
//! Buffers come from a private [`BufferPool`] of [`JUMBO_FRAME_SIZE`] frames: a 9000-byte frame
//! arrives as a chain of 2048-byte memif buffers and is answered whole. The loop allocates
//! nothing: bursts live on the stack, and the pinger's bitmap, the poll vectors, the reassembly
//! slots and the scratch frame for fragmenting are sized before it starts.
//!
//! MTU, as a kernel handles it for IPv4. [`AppConfig::mtu`] is the connection's MTU
//! (`Connection.context.MTU`): the largest IP packet the forwarder carries on this connection,
//! which drops larger ones.
//! - An IPv4 datagram larger than the MTU (an echo reply, or the pinger's request) leaves as
//!   fragments ([`Fragments`]). Each fragment goes in a fresh pool frame, after a copy of the
//!   datagram's Ethernet header. A full transmit queue is transmitted before it takes another
//!   packet, so any number of fragments fits.
//! - Received IPv4 fragments are reassembled ([`Reassembler`]) before they are answered. At most
//!   [`REASSEMBLY_SLOTS`] datagrams are reassembled at once, each at most [`MAX_DATAGRAM`]
//!   bytes, for at most [`REASSEMBLY_TIMEOUT`]. The whole datagram replaces its last fragment in
//!   that fragment's frame.
//! - An MTU of 0 means no limit beyond a pool frame, and one below 68 counts as 68 (RFC 791's
//!   minimum). A running app takes a new MTU with [`MemifApp::set_mtu`], without a link flap.
//! - IPv6 is not fragmented: an IPv6 packet larger than the MTU is sent whole, and the
//!   forwarder drops it.
//!
//! Lifecycle: [`MemifApp::start`] returns once the driver accepted the configuration (a server
//! is listening). [`MemifApp::stop`] (or dropping the app) stops the packet loop, which releases
//! the port, then shuts the driver down and drops its runtime, which closes every socket it held
//! (the listener and the accepted connection included), so the socket name is free again when
//! `stop` returns.

use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vwire_dataplane::buffer::{BufIdx, BufferError, BufferPool, HEADROOM, JUMBO_FRAME_SIZE};
use vwire_dataplane::counters::{DropReason, PortCounters, PortTotals};
use vwire_dataplane::port::{Burst, Port, BURST};
use vwire_dataplane::rcu::{Qsbr, Reader};
use vwire_mechanisms::memif::driver::{Driver, MemifConfig};
use vwire_mechanisms::memif::msg::Mode;
use vwire_mechanisms::memif::port::{Link, MemifPort, Role};
use vwire_mechanisms::memif::MemifError;

use crate::ipv4frag::{
    Fragments, Reassembler, Reassembly, MIN_MTU, REASSEMBLY_SLOTS, REASSEMBLY_TIMEOUT,
};
use crate::pinger::{PingAction, PingReport, PingSpec, Pinger};
use crate::responder::{
    Discard, Framing, Responder, ResponderError, Verdict, ETH_HLEN, ICMP_ECHO_HLEN,
};
use vwire_dataplane::wire::IPV6_HLEN;

/// Longest sleep of an idle packet loop. It bounds how late a stop request or a ping tick is
/// noticed when no packet wakes the loop; 10 ms is 100 wake-ups a second, well under 1% of a CPU.
pub const MAX_SLEEP: Duration = Duration::from_millis(10);

/// Frames in each interface's pool: a receive burst of [`BURST`], its answers and a ping in
/// flight need about 2 × 32; twice that leaves room and costs 1.3 MB.
const POOL_FRAMES: u32 = 128;

/// Ring size (log2) and buffer size of the client role: VPP's and vwire's defaults (1024 × 2048).
const LOG2_RING: u8 = 10;
const BUFFER_SIZE: u32 = 2048;

/// Largest `--ping-size`: a pool frame after the headroom, minus Ethernet, IPv6 (the larger IP
/// header) and ICMP echo headers.
pub const MAX_PING_SIZE: usize =
    JUMBO_FRAME_SIZE - HEADROOM - ETH_HLEN - IPV6_HLEN - ICMP_ECHO_HLEN;

/// The largest IPv4 datagram the host reassembles: what fits in a pool frame after the headroom
/// and an Ethernet header, so that the datagram can replace its last fragment in that frame. It
/// covers the largest ping: [`MAX_PING_SIZE`] + 8 + 20 is less.
pub const MAX_DATAGRAM: usize = JUMBO_FRAME_SIZE - HEADROOM - ETH_HLEN;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum MemifAppError {
    /// The memif driver refused the interface (e.g. the socket name is in use).
    #[error("memif: {0}")]
    Memif(#[from] MemifError),
    /// The packet pool could not be mapped.
    #[error("packet pool: {0}")]
    Pool(#[from] BufferError),
    /// The addresses do not make a point-to-point link.
    #[error("{0}")]
    Responder(#[from] ResponderError),
    /// A thread or the control runtime could not be started.
    #[error("starting the memif threads: {0}")]
    Thread(std::io::Error),
    /// The control thread ended before it reported.
    #[error("the memif control thread stopped before the driver was ready")]
    ControlGone,
    /// The connection's mechanism is not MEMIF.
    #[error("connection.mechanism.type is {0:?}, not MEMIF")]
    NotMemif(String),
    /// The MEMIF mechanism has no socket name.
    #[error("connection.mechanism.parameters.socketfile is missing or empty")]
    NoSocket,
    /// An address list is empty.
    #[error("{0} is empty")]
    NoAddress(&'static str),
    /// An address is not `ip` or `ip/len`.
    #[error("{field}: {value:?} is not an IP address or CIDR")]
    BadAddress {
        /// The field.
        field: &'static str,
        /// What it held.
        value: String,
    },
    /// The payload is neither ETHERNET nor IP.
    #[error("connection.payload {0:?}: expected ETHERNET or IP")]
    BadPayload(String),
}

impl MemifAppError {
    /// True if the socket name is already taken by another listener.
    pub fn is_addr_in_use(&self) -> bool {
        matches!(self, Self::Memif(MemifError::Io(_, e)) if e.kind() == std::io::ErrorKind::AddrInUse)
    }
}

/// `--ping-count` / `--ping-size`, shared by both binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct PingArgs {
    /// MEMIF only: ping the peer (one echo request every 100 ms, ARP first in ethernet mode)
    /// until this many replies arrived or 15 s passed, then print `ping <peer ip>
    /// <received>/<sent>` on stdout. 0: do not ping.
    #[arg(long, default_value_t = 0)]
    pub ping_count: u32,
    /// ICMP echo payload bytes of those pings (larger than one memif buffer is fine).
    #[arg(long, default_value_t = 56, value_parser = parse_ping_size)]
    pub ping_size: usize,
}

impl PingArgs {
    /// The pinger's spec, `None` for `--ping-count 0`.
    pub fn spec(&self) -> Option<PingSpec> {
        (self.ping_count > 0).then_some(PingSpec {
            count: self.ping_count,
            size: self.ping_size,
        })
    }
}

fn parse_ping_size(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: expected a number of bytes"))?;
    if n > MAX_PING_SIZE {
        return Err(format!("{n}: at most {MAX_PING_SIZE} bytes"));
    }
    Ok(n)
}

/// The memif mode for a `Connection.payload`: `ETHERNET` (or empty) → ethernet, `IP` → IP.
pub fn mode_from_payload(payload: &str) -> Result<Mode, MemifAppError> {
    match payload {
        "ETHERNET" | "" => Ok(Mode::Ethernet),
        "IP" => Ok(Mode::Ip),
        other => Err(MemifAppError::BadPayload(other.to_string())),
    }
}

/// The address of the first entry of `list` (`ip` or `ip/len`); `field` names it in errors.
pub fn first_ip(list: &[String], field: &'static str) -> Result<IpAddr, MemifAppError> {
    let s = list.first().ok_or(MemifAppError::NoAddress(field))?;
    let addr = s.split_once('/').map_or(s.as_str(), |(a, _)| a);
    addr.trim().parse().map_err(|_| MemifAppError::BadAddress {
        field,
        value: s.clone(),
    })
}

/// 32-bit FNV-1a: a small, stable hash for names and MACs (not for anything adversarial).
pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A locally administered unicast MAC, `02:fe` and four bytes of a hash of `seed`.
pub fn mac_from_seed(seed: &str) -> [u8; 6] {
    let h = fnv1a(seed.as_bytes()).to_be_bytes();
    [0x02, 0xfe, h[0], h[1], h[2], h[3]]
}

/// `aa:bb:cc:dd:ee:ff`, as `ip` prints it (the kernel module's formatter).
pub use vwire_mechanisms::kernel::format_mac;

/// One memif interface and the host behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppConfig {
    /// Interface name (sent in the memif handshake; also names the shared memory).
    pub name: String,
    /// Control socket: `@name` (abstract, in this process's network namespace) or a path.
    pub socket: String,
    /// Server (listens) or client (dials).
    pub role: Role,
    /// Ethernet or IP.
    pub mode: Mode,
    /// This host's address.
    pub own: IpAddr,
    /// The peer's address.
    pub peer: IpAddr,
    /// This host's MAC (ethernet mode).
    pub mac: [u8; 6],
    /// Ping the peer, or not.
    pub ping: Option<PingSpec>,
    /// The connection's MTU (`Connection.context.MTU`): the largest IP packet sent whole.
    /// Larger IPv4 datagrams leave as fragments. 0 means no limit beyond a pool frame (module
    /// docs).
    pub mtu: u32,
}

impl AppConfig {
    /// True if `other` describes the same interface and host, whatever its MTU: a running app
    /// takes a new MTU with [`MemifApp::set_mtu`] instead of a restart.
    pub fn same_but_mtu(&self, other: &AppConfig) -> bool {
        Self {
            mtu: other.mtu,
            ..self.clone()
        } == *other
    }

    /// The driver's view: interface id 0, one queue pair, no secret, this network namespace.
    fn memif(&self) -> MemifConfig {
        MemifConfig {
            name: self.name.clone(),
            socket: self.socket.clone(),
            role: self.role,
            id: 0,
            mode: self.mode,
            queues: 1,
            log2_ring_size: LOG2_RING,
            buffer_size: BUFFER_SIZE,
            secret: String::new(),
            netns: None,
        }
    }
}

/// Called once with the pinger's result (from the packet thread).
pub type OnReport = Box<dyn FnOnce(PingReport) + Send>;

/// A running memif interface. See the module docs.
pub struct MemifApp {
    config: AppConfig,
    link: Arc<Link>,
    counters: Arc<PortCounters>,
    io_tid: Arc<AtomicI32>,
    stop: Arc<AtomicBool>,
    mtu: Arc<AtomicU32>,
    io: Option<JoinHandle<()>>,
    ctl: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
}

impl MemifApp {
    /// Starts the interface. Returns once the driver accepted it (a server is listening; a
    /// client has started dialling). `on_report` gets the ping result, if `config.ping` is set
    /// and the link came up.
    pub fn start(config: AppConfig, on_report: Option<OnReport>) -> Result<Self, MemifAppError> {
        let framing = match config.mode {
            Mode::Ip => Framing::Ip,
            _ => Framing::Ethernet,
        };
        let ident = u16::from_be_bytes([config.mac[4], config.mac[5]]);
        let responder = Responder::new(framing, config.mac, config.own, config.peer, ident)?;
        let pool = BufferPool::with_frame_size(POOL_FRAMES, JUMBO_FRAME_SIZE)?;
        let qsbr = Qsbr::new();
        let link = Link::new(qsbr.clone());
        let counters = Arc::new(PortCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let io_tid = Arc::new(AtomicI32::new(0));
        let mtu = Arc::new(AtomicU32::new(config.mtu));
        let ctl = spawn_control(config.memif(), link.clone())?;
        let lp = PacketLoop {
            port: MemifPort::new(&config.name, link.clone()),
            link: link.clone(),
            reader: qsbr.register(),
            pool,
            responder,
            pinger: config.ping.map(|s| Pinger::new(s, config.peer)),
            reasm: Reassembler::new(REASSEMBLY_SLOTS, MAX_DATAGRAM, REASSEMBLY_TIMEOUT),
            mtu: mtu.clone(),
            scratch: vec![0u8; JUMBO_FRAME_SIZE].into_boxed_slice(),
            on_report,
            stop: stop.clone(),
            ctr: counters.clone(),
            tid: io_tid.clone(),
        };
        let mut app = Self {
            config,
            link,
            counters,
            io_tid,
            stop,
            mtu,
            io: None,
            ctl: Some(ctl),
        };
        let io = std::thread::Builder::new()
            .name("memif-io".into())
            .spawn(move || lp.run())
            .map_err(MemifAppError::Thread)?; // `app` drops here on error: the driver stops
        app.io = Some(io);
        Ok(app)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &AppConfig {
        &self.config
    }

    /// True while a memif peer is connected.
    pub fn is_connected(&self) -> bool {
        self.link.is_up()
    }

    /// The MTU it keeps to (0: none).
    pub fn mtu(&self) -> u32 {
        self.config.mtu
    }

    /// Sets the MTU (0: none). The packet loop applies it from the next packet it sends, and the
    /// link stays up.
    pub fn set_mtu(&mut self, mtu: u32) {
        self.config.mtu = mtu;
        // Relaxed: the value stands alone; nothing else is published with it.
        self.mtu.store(mtu, Ordering::Relaxed);
    }

    /// The packet counters so far.
    pub fn totals(&self) -> PortTotals {
        let mut t = PortTotals::default();
        self.counters.add_to(&mut t);
        t
    }

    /// The packet thread's kernel thread id (0 until it started), e.g. to read its CPU time.
    pub fn io_thread_id(&self) -> i32 {
        self.io_tid.load(Ordering::Acquire)
    }

    /// Stops the packet loop, then the driver; see the module docs.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.io.take() {
            if t.join().is_err() {
                tracing::error!(iface = %self.config.name, "the memif packet thread panicked");
            }
        }
        if let Some((tx, t)) = self.ctl.take() {
            let _ = tx.send(());
            let _ = t.join();
        }
    }
}

impl Drop for MemifApp {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for MemifApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemifApp")
            .field("config", &self.config)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// Starts the control thread with its runtime and driver; returns once `Driver::add` answered.
fn spawn_control(
    cfg: MemifConfig,
    link: Arc<Link>,
) -> Result<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>), MemifAppError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), MemifAppError>>(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let t = std::thread::Builder::new()
        .name("memif-ctl".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(MemifAppError::Thread(e)));
                    return;
                }
            };
            rt.block_on(async move {
                let mut driver = Driver::new();
                if let Err(e) = driver.add(cfg, link) {
                    let _ = ready_tx.send(Err(e.into()));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                // A dropped sender (the app went away) also means stop.
                let _ = stop_rx.await;
                driver.shutdown();
            });
            // Dropping the runtime drops every task still alive, including the connections the
            // server accepted (the driver does not track those): their sockets close here.
            drop(rt);
        })
        .map_err(MemifAppError::Thread)?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok((stop_tx, t)),
        Ok(Err(e)) => {
            let _ = t.join();
            Err(e)
        }
        Err(_) => {
            let _ = t.join();
            Err(MemifAppError::ControlGone)
        }
    }
}

/// Writes a packet with `write` into a fresh buffer of `pool`, after the headroom. Returns the
/// buffer and the packet's length.
fn fill(
    pool: &mut BufferPool,
    write: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> Option<(BufIdx, usize)> {
    let b = pool.alloc()?;
    match pool.frame_mut(b).get_mut(HEADROOM..).and_then(write) {
        Some(n) => Some((b, n)),
        None => {
            pool.free(b);
            None
        }
    }
}

/// The largest IP packet sent whole for an MTU setting: `None` for 0 (no limit), else at least
/// [`MIN_MTU`].
fn link_mtu(mtu: u32) -> Option<usize> {
    (mtu != 0).then(|| usize::try_from(mtu).unwrap_or(usize::MAX).max(MIN_MTU))
}

/// The host's receive path, sans-IO: [`Responder::handle`] with IPv4 fragments reassembled
/// first. A fragment that completes its datagram is replaced in `buf` by the whole datagram
/// (after the fragment's Ethernet header, which stays), and that datagram is handled. A
/// fragment kept for later is [`Verdict::Absorbed`]; one that is not kept is
/// `Drop(Discard::Fragment)`. `buf` needs room for the whole datagram after the fragment's IP
/// header, or the datagram is dropped (`NoRoom`).
fn receive(
    responder: &mut Responder,
    reasm: &mut Reassembler,
    buf: &mut [u8],
    len: usize,
    now: Instant,
) -> Verdict {
    let (start, end) = match responder.handle(buf, len) {
        Verdict::Fragment { start, end } => (start, end),
        v => return v,
    };
    let Some(frag) = buf.get(start..end) else {
        return Verdict::Drop(Discard::Malformed);
    };
    let end = match reasm.push(frag, now) {
        Reassembly::Complete(dgram) => {
            let Some(dst) = start
                .checked_add(dgram.len())
                .and_then(|e| buf.get_mut(start..e))
            else {
                return Verdict::Drop(Discard::NoRoom);
            };
            dst.copy_from_slice(dgram);
            start + dgram.len()
        }
        Reassembly::Pending => return Verdict::Absorbed,
        Reassembly::Dropped(_) => return Verdict::Drop(Discard::Fragment),
    };
    match responder.handle(buf, end) {
        // Not expected: a reassembled datagram has MF and the offset cleared.
        Verdict::Fragment { .. } => Verdict::Drop(Discard::Fragment),
        v => v,
    }
}

/// Writes fragment `i` of `frags` after the link-layer header `l2` (empty in IP mode) into
/// `out`, and returns the frame's length.
fn write_fragment(frags: &Fragments<'_>, i: usize, l2: &[u8], out: &mut [u8]) -> Option<usize> {
    out.get_mut(..l2.len())?.copy_from_slice(l2);
    let n = frags.write(i, out.get_mut(l2.len()..)?)?;
    Some(l2.len() + n)
}

/// The packet thread's state. See the module docs.
struct PacketLoop {
    // hot: touched every loop
    port: MemifPort,
    link: Arc<Link>,
    reader: Reader,
    pool: BufferPool,
    responder: Responder,
    pinger: Option<Pinger>,
    reasm: Reassembler,
    /// The MTU as [`MemifApp::set_mtu`] last set it.
    mtu: Arc<AtomicU32>,
    /// A datagram to fragment is copied here first: pool frames are borrowed one at a time.
    scratch: Box<[u8]>,
    stop: Arc<AtomicBool>,
    ctr: Arc<PortCounters>,
    // cold
    on_report: Option<OnReport>,
    tid: Arc<AtomicI32>,
}

/// Packets (and their lengths) queued for one transmit: a receive burst's answers plus one
/// packet of the pinger. Fragments can make more, so a full queue is transmitted before it takes
/// another packet.
struct TxQueue {
    bufs: Burst,
    bytes: [usize; BURST + 1],
    /// Packets queued in this loop iteration, including those transmitted early.
    queued: usize,
    /// Packets the port did not take, since the loop started.
    lost: u64,
}

impl TxQueue {
    fn push(
        &mut self,
        port: &mut MemifPort,
        pool: &mut BufferPool,
        ctr: &PortCounters,
        b: BufIdx,
        len: usize,
    ) -> bool {
        if self.bufs.room() == 0 {
            self.transmit(port, pool, ctr);
        }
        let i = self.bufs.len();
        match self.bytes.get_mut(i) {
            Some(slot) if self.bufs.push(b) => {
                *slot = len;
                self.queued += 1;
                true
            }
            _ => {
                pool.free(b);
                false
            }
        }
    }

    /// Transmits what is queued. What the port did not take is freed and counted as dropped.
    fn transmit(&mut self, port: &mut MemifPort, pool: &mut BufferPool, ctr: &PortCounters) {
        if self.bufs.is_empty() {
            return;
        }
        let pkts = self.bufs.as_slice();
        let sent = port.tx_burst(pool, pkts, ctr);
        let bytes: usize = self.bytes.iter().take(sent).sum();
        ctr.tx(sent as u64, bytes as u64);
        if let Some(rest) = pkts.get(sent..).filter(|r| !r.is_empty()) {
            PortCounters::drop(ctr, port.tx_drop_reason(), rest.len() as u64);
            self.lost += rest.len() as u64;
            pool.free_burst(rest);
        }
        self.bufs.clear();
    }
}

impl PacketLoop {
    fn run(mut self) {
        // SAFETY: gettid(2) has no preconditions.
        self.tid.store(unsafe { libc::gettid() }, Ordering::Release);
        let mut rx = Burst::with_capacity(BURST);
        let mut tx = TxQueue {
            bufs: Burst::with_capacity(BURST + 1),
            bytes: [0; BURST + 1],
            queued: 0,
            lost: 0,
        };
        let mut fds: Vec<RawFd> = Vec::with_capacity(8);
        let mut pollfds: Vec<libc::pollfd> = Vec::with_capacity(8);
        self.port.attach(&self.pool);
        while !self.stop.load(Ordering::Acquire) {
            self.reader.quiescent();
            let now = Instant::now();
            rx.clear();
            tx.bufs.clear();
            tx.queued = 0;
            self.port.rx_burst(&mut self.pool, &mut rx, &self.ctr);
            for &b in rx.as_slice() {
                self.answer(b, &mut tx, now);
            }
            let wake = self.ping(now, &mut tx);
            let busy = !rx.is_empty() || tx.queued > 0;
            tx.transmit(&mut self.port, &mut self.pool, &self.ctr);
            self.port.flush(&mut self.pool, &self.ctr);
            if !busy {
                self.sleep(now, wake, &mut fds, &mut pollfds);
            }
        }
        self.finish();
    }

    /// Answers received packet `b` in place (or, for the last fragment of a datagram, the
    /// datagram), or frees it.
    fn answer(&mut self, b: BufIdx, tx: &mut TxQueue, now: Instant) {
        let m = self.pool.meta(b);
        let (off, len) = (usize::from(m.offset), usize::from(m.len));
        self.ctr.rx(1, len as u64);
        let verdict = match self.pool.frame_mut(b).get_mut(off..) {
            Some(buf) => receive(&mut self.responder, &mut self.reasm, buf, len, now),
            None => Verdict::Absorbed,
        };
        match verdict {
            Verdict::Reply(n) => {
                self.send(tx, b, off, n);
            }
            Verdict::PingReply { seq, len } => {
                if let Some(p) = self.pinger.as_mut() {
                    p.handle_reply(seq, len);
                }
                self.pool.free(b);
            }
            Verdict::Absorbed | Verdict::Drop(_) | Verdict::Fragment { .. } => self.pool.free(b),
        }
    }

    /// Queues the `n`-byte packet at `off` in frame `b`: whole if it fits the MTU (or is not
    /// IPv4), else as fragments in fresh frames, and `b` is freed. Returns false if it could
    /// not queue all of it.
    fn send(&mut self, tx: &mut TxQueue, b: BufIdx, off: usize, n: usize) -> bool {
        let l3 = self.responder.l3_offset();
        let ipv4 = self
            .pool
            .frame(b)
            .get(off + l3)
            .is_some_and(|v| v >> 4 == 4);
        let mtu = match link_mtu(self.mtu.load(Ordering::Relaxed)) {
            Some(mtu) if ipv4 && n.saturating_sub(l3) > mtu => mtu,
            _ => {
                self.pool.set_meta(b, off, n);
                return tx.push(&mut self.port, &mut self.pool, &self.ctr, b, n);
            }
        };
        let copied = match (
            self.pool.frame(b).get(off..off + n),
            self.scratch.get_mut(..n),
        ) {
            (Some(src), Some(dst)) => {
                dst.copy_from_slice(src);
                true
            }
            _ => false,
        };
        self.pool.free(b);
        let Some((l2, ip)) = self
            .scratch
            .get(..n)
            .filter(|_| copied)
            .map(|p| p.split_at(l3))
        else {
            PortCounters::drop(&self.ctr, DropReason::TooLong, 1);
            return false;
        };
        let Ok(frags) = Fragments::new(ip, mtu) else {
            // Larger than the MTU and not splittable: what the forwarder would drop anyway.
            PortCounters::drop(&self.ctr, DropReason::TooBig, 1);
            return false;
        };
        for i in 0..frags.count() {
            // Out of frames: the rest of the datagram is lost, and the peer's reassembly drops
            // the fragments already sent when it times out.
            let Some(fb) = self.pool.alloc() else {
                return false;
            };
            let written = self
                .pool
                .frame_mut(fb)
                .get_mut(HEADROOM..)
                .and_then(|out| write_fragment(&frags, i, l2, out));
            let Some(len) = written else {
                self.pool.free(fb);
                PortCounters::drop(&self.ctr, DropReason::TooLong, 1);
                return false;
            };
            self.pool.set_meta(fb, HEADROOM, len);
            if !tx.push(&mut self.port, &mut self.pool, &self.ctr, fb, len) {
                return false;
            }
        }
        true
    }

    /// Runs the pinger: sends its packet, if any, and returns when it next wants to run. An echo
    /// request is transmitted at once, on its own, so that one the port refuses is taken back
    /// ([`Pinger::unsend`]).
    fn ping(&mut self, now: Instant, tx: &mut TxQueue) -> Option<Instant> {
        let p = self.pinger.as_mut()?;
        if !p.started() && !self.link.is_up() {
            return None; // the clock starts when the link first comes up
        }
        let size = p.spec().size;
        match p.poll(now, self.responder.peer_resolved()) {
            PingAction::Send(seq) => {
                // The answers go first, so what the port does with the request is its own.
                tx.transmit(&mut self.port, &mut self.pool, &self.ctr);
                let lost = tx.lost;
                let r = &mut self.responder;
                let queued = match fill(&mut self.pool, |buf| r.write_echo_request(buf, seq, size))
                {
                    Some((b, n)) => self.send(tx, b, HEADROOM, n),
                    None => false,
                };
                tx.transmit(&mut self.port, &mut self.pool, &self.ctr);
                if !queued || tx.lost != lost {
                    // It never left (e.g. right after the link came up, before the peer
                    // posted its receive buffers): not sent, as for `ping`.
                    if let Some(p) = self.pinger.as_mut() {
                        p.unsend(seq);
                    }
                }
                None
            }
            PingAction::Resolve => {
                let r = &self.responder;
                if let Some((b, n)) = fill(&mut self.pool, |buf| r.write_resolve(buf)) {
                    let _ = self.send(tx, b, HEADROOM, n);
                }
                None
            }
            PingAction::Wait(t) => Some(t),
            PingAction::Done(r) => {
                self.report(r);
                None
            }
            PingAction::Idle => None,
        }
    }

    fn report(&mut self, r: PingReport) {
        tracing::info!(iface = %self.port.name(), "{r}");
        if let Some(f) = self.on_report.take() {
            f(r);
        }
    }

    /// Sleeps until a packet arrives, `wake`, or [`MAX_SLEEP`], with the port's interrupts on.
    fn sleep(
        &mut self,
        now: Instant,
        wake: Option<Instant>,
        fds: &mut Vec<RawFd>,
        pollfds: &mut Vec<libc::pollfd>,
    ) {
        let timeout = wake.map_or(MAX_SLEEP, |w| {
            MAX_SLEEP.min(w.saturating_duration_since(now))
        });
        if timeout.is_zero() {
            return;
        }
        if self.port.prepare_sleep() {
            // Something arrived while interrupts were being turned on.
            self.port.after_sleep();
            return;
        }
        fds.clear();
        self.port.wait_fds(fds);
        pollfds.clear();
        pollfds.extend(fds.iter().map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }));
        // Round up so that a 300 µs wait does not become a busy 0 ms poll.
        let ms = libc::c_int::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(10);
        // Offline while asleep: a detach on the control thread does not wait for this sleep.
        // The session (and its eventfds) may go away meanwhile; a stale fd number in `poll` at
        // worst wakes us early, and nothing of the session is touched before `quiescent`.
        self.reader.offline();
        // SAFETY: `pollfds` is a live array of `pollfds.len()` pollfd structures for the whole
        // call.
        unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, ms) };
        self.reader.quiescent();
        self.port.after_sleep();
    }

    fn finish(&mut self) {
        self.port.release(&mut self.pool);
        self.reader.offline();
        let held = self.port.shutdown();
        self.pool.free_burst(&held);
        if let Some(p) = &self.pinger {
            if p.started() && !p.is_done() {
                // Stopped before the pinger finished: report what it got, still exactly once.
                let r = p.report();
                self.report(r);
            }
        }
        let mut t = PortTotals::default();
        self.ctr.add_to(&mut t);
        let r = self.reasm.stats();
        tracing::debug!(
            iface = %self.port.name(),
            rx = t.rx_packets,
            tx = t.tx_packets,
            reassembled = r.completed,
            reassembly_timeouts = r.timed_out,
            reassembly_evictions = r.evicted,
            reassembly_failures = r.failed,
            fragments_dropped = r.dropped_fragments,
            "memif packet loop stopped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::Ipv4Header;
    use std::sync::mpsc;

    static NEXT: AtomicU32 = AtomicU32::new(0);

    fn socket() -> String {
        format!(
            "@vwire-examples-test/{}/{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn cfg(
        role: Role,
        socket: &str,
        mode: Mode,
        own: &str,
        peer: &str,
        ping: Option<PingSpec>,
    ) -> AppConfig {
        AppConfig {
            name: format!("{role:?}").to_lowercase(),
            socket: socket.to_string(),
            role,
            mode,
            own: own.parse().unwrap(),
            peer: peer.parse().unwrap(),
            mac: mac_from_seed(own),
            ping,
            mtu: 0,
        }
    }

    fn reporter(
        tx: &mpsc::Sender<(&'static str, PingReport)>,
        who: &'static str,
    ) -> Option<OnReport> {
        let tx = tx.clone();
        Some(Box::new(move |r| {
            let _ = tx.send((who, r));
        }))
    }

    /// CPU time (user + system, in clock ticks) of thread `tid` of this process.
    fn cpu_ticks(tid: i32) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // Fields after the command name (which ends with ')'): state is field 3, utime 14.
        let rest = &s[s.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// A server and a client app on one abstract socket ping each other: every reply arrives,
    /// in the given mode, with the given sizes and MTU; then both stop and the name is free
    /// again. Returns the packets each sent (server, client).
    fn ping_each_other(
        mode: Mode,
        a: &str,
        b: &str,
        server_size: usize,
        client_size: usize,
        mtu: u32,
    ) -> (u64, u64) {
        let sock = socket();
        let (tx, rx) = mpsc::channel();
        let count = 3;
        let server = MemifApp::start(
            AppConfig {
                mtu,
                ..cfg(
                    Role::Server,
                    &sock,
                    mode,
                    a,
                    b,
                    Some(PingSpec {
                        count,
                        size: server_size,
                    }),
                )
            },
            reporter(&tx, "server"),
        )
        .unwrap();
        let client = MemifApp::start(
            AppConfig {
                mtu,
                ..cfg(
                    Role::Client,
                    &sock,
                    mode,
                    b,
                    a,
                    Some(PingSpec {
                        count,
                        size: client_size,
                    }),
                )
            },
            reporter(&tx, "client"),
        )
        .unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(
                rx.recv_timeout(Duration::from_secs(10))
                    .expect("a ping report"),
            );
        }
        got.sort_by_key(|(who, _)| *who);
        let expect = |peer: &str| PingReport {
            peer: peer.parse().unwrap(),
            received: count,
            sent: count,
        };
        assert_eq!(
            got,
            [("client", expect(a)), ("server", expect(b))],
            "{mode:?}"
        );
        assert!(server.is_connected() && client.is_connected());
        // A packet thread counts a burst after handing it to the ring, so the peer can report
        // before the sender's counters include its last frames: read them once both stopped.
        let counters = [server.counters.clone(), client.counters.clone()];
        client.stop();
        server.stop();
        let totals = counters.map(|c| {
            let mut t = PortTotals::default();
            c.add_to(&mut t);
            t
        });
        // Both answered the other's pings: at least `count` requests in and replies out each.
        for t in &totals {
            assert!(t.rx_packets >= u64::from(2 * count), "{t:?}");
            assert!(t.tx_packets >= u64::from(2 * count), "{t:?}");
            assert_eq!(
                t.drops(DropReason::TooBig) + t.drops(DropReason::TooLong),
                0,
                "{t:?}"
            );
        }
        let sent = (totals[0].tx_packets, totals[1].tx_packets);
        assert!(rx.try_recv().is_err(), "exactly one report each");
        // The listener is gone: the name can be bound again at once.
        let again = MemifApp::start(cfg(Role::Server, &sock, mode, a, b, None), None).unwrap();
        again.stop();
        sent
    }

    #[test]
    fn ethernet_mode_ipv4_with_a_3000_byte_ping_and_an_idle_cpu() {
        ping_each_other(Mode::Ethernet, "10.9.0.1", "10.9.0.2", 3000, 56, 0);

        // Idle interfaces sleep: less than 5% of a CPU each over half a second.
        let sock = socket();
        let server = MemifApp::start(
            cfg(
                Role::Server,
                &sock,
                Mode::Ethernet,
                "10.9.1.1",
                "10.9.1.2",
                None,
            ),
            None,
        )
        .unwrap();
        let client = MemifApp::start(
            cfg(
                Role::Client,
                &sock,
                Mode::Ethernet,
                "10.9.1.2",
                "10.9.1.1",
                None,
            ),
            None,
        )
        .unwrap();
        let t0 = Instant::now();
        while !(server.is_connected() && client.is_connected()) {
            assert!(t0.elapsed() < Duration::from_secs(5), "no connection");
            std::thread::sleep(Duration::from_millis(10));
        }
        let tids = [server.io_thread_id(), client.io_thread_id()];
        let before: Vec<u64> = tids.iter().map(|&t| cpu_ticks(t)).collect();
        std::thread::sleep(Duration::from_millis(500));
        for (t, b) in tids.iter().zip(before) {
            let used = cpu_ticks(*t) - b;
            // Clock ticks are 10 ms: 2 ticks is 20 ms of 500.
            assert!(
                used <= 2,
                "an idle packet thread used {used} ticks in 500 ms"
            );
        }
    }

    #[test]
    fn ip_mode_ipv4_with_a_3000_byte_ping() {
        ping_each_other(Mode::Ip, "10.9.2.1", "10.9.2.2", 56, 3000, 0);
    }

    #[test]
    fn ethernet_mode_ipv6_with_jumbo_pings() {
        ping_each_other(Mode::Ethernet, "fd00:9::1", "fd00:9::2", 9000, 1400, 0);
    }

    /// Both ends keep to an MTU of 1446 (VXLAN over a 1500-byte uplink): 3000-byte pings and
    /// their replies travel as 3 fragments each and are reassembled; the largest ping too. The
    /// MTU is an IP MTU: in ethernet mode frames are 14 bytes longer.
    #[test]
    fn ipv4_pings_larger_than_the_mtu_go_as_fragments() {
        for (mode, net) in [(Mode::Ethernet, 4), (Mode::Ip, 5)] {
            let (a, b) = (format!("10.9.{net}.1"), format!("10.9.{net}.2"));
            let (server, client) = ping_each_other(mode, &a, &b, 3000, 3000, 1446);
            // 3 requests and 3 replies each, 3 fragments apiece.
            assert!(server >= 18 && client >= 18, "{mode:?}: {server} {client}");
        }
        let (server, client) =
            ping_each_other(Mode::Ip, "10.9.6.1", "10.9.6.2", MAX_PING_SIZE, 56, 1446);
        // 9922 + 8 bytes of ICMP in 1424-byte pieces: 7 fragments per request (the server's) and
        // per reply (the client's); and 3 small pings the other way.
        assert!(
            server >= 3 * 7 + 3 && client >= 3 * 7 + 3,
            "{server} {client}"
        );
    }

    /// Splits `frame` for `mtu` as the packet loop does: the link-layer header (the first `l3`
    /// bytes) in front of each fragment.
    fn split(frame: &[u8], l3: usize, mtu: usize) -> Vec<Vec<u8>> {
        let f = Fragments::new(&frame[l3..], mtu).unwrap();
        (0..f.count())
            .map(|i| {
                let mut out = vec![0xa5; 2048];
                let n = write_fragment(&f, i, &frame[..l3], &mut out).unwrap();
                out.truncate(n);
                out
            })
            .collect()
    }

    /// `f` received into a frame-sized buffer (0xa5 beyond it), through [`receive`].
    fn rx(
        r: &mut Responder,
        reasm: &mut Reassembler,
        f: &[u8],
        now: Instant,
    ) -> (Verdict, Vec<u8>) {
        let mut buf = vec![0xa5; JUMBO_FRAME_SIZE - HEADROOM];
        buf[..f.len()].copy_from_slice(f);
        let v = receive(r, reasm, &mut buf, f.len(), now);
        (v, buf)
    }

    fn reassembler() -> Reassembler {
        Reassembler::new(REASSEMBLY_SLOTS, MAX_DATAGRAM, REASSEMBLY_TIMEOUT)
    }

    /// The packet loop's path without the loop: a 3000-byte echo request at MTU 1446 leaves as 3
    /// fragments (offsets, flags, lengths, checksums as RFC 791 says), the peer reassembles and
    /// answers it, the answer leaves as 3 fragments too and, delivered in reverse, is the ping's
    /// reply.
    #[test]
    fn a_3000_byte_echo_at_mtu_1446_is_three_fragments_each_way() {
        let t0 = Instant::now();
        let (own, peer): (IpAddr, IpAddr) =
            ("10.9.7.1".parse().unwrap(), "10.9.7.2".parse().unwrap());
        for framing in [Framing::Ethernet, Framing::Ip] {
            let mut a = Responder::new(framing, mac_from_seed("a"), own, peer, 0x1111).unwrap();
            let mut b = Responder::new(framing, mac_from_seed("b"), peer, own, 0x2222).unwrap();
            let (mut ra, mut rb) = (reassembler(), reassembler());
            let l3 = a.l3_offset();
            let mut buf = vec![0u8; 4096];
            if framing == Framing::Ethernet {
                let n = a.write_resolve(&mut buf).unwrap();
                let Verdict::Reply(m) = b.handle(&mut buf, n) else {
                    panic!("no ARP reply")
                };
                assert_eq!(a.handle(&mut buf, m), Verdict::Absorbed);
            }
            let n = a.write_echo_request(&mut buf, 5, 3000).unwrap();
            assert_eq!(n, l3 + 20 + 8 + 3000);
            let request = buf[..n].to_vec();
            let req_id = Ipv4Header::from_slice(&request[l3..])
                .unwrap()
                .0
                .identification;
            let frags = split(&request, l3, 1446);
            assert_eq!(frags.len(), 3, "{framing:?}");
            let mut data = 0;
            for (k, f) in frags.iter().enumerate() {
                assert_eq!(
                    &f[..l3],
                    &request[..l3],
                    "the Ethernet header in front of each"
                );
                let (h, rest) = Ipv4Header::from_slice(&f[l3..]).unwrap();
                assert_eq!(h.header_checksum, h.calc_header_checksum(), "fragment {k}");
                assert_eq!(h.identification, req_id);
                assert!(!h.dont_fragment, "a fragment has no DF");
                assert_eq!(h.more_fragments, k < 2);
                assert_eq!(h.fragment_offset.value(), [0, 178, 356][k]);
                assert_eq!(usize::from(h.total_len), [1444, 1444, 180][k]);
                assert_eq!(f.len(), l3 + [1444, 1444, 180][k]);
                assert_eq!(rest.len() % 8 == 0, k < 2 || rest.len() == 160);
                data += rest.len();
            }
            assert_eq!(data, 3008);

            let mut reply = None;
            for (k, f) in frags.iter().enumerate() {
                match rx(&mut b, &mut rb, f, t0) {
                    (Verdict::Absorbed, _) => assert!(k < 2),
                    (Verdict::Reply(m), out) => {
                        assert_eq!((k, m), (2, n));
                        reply = Some(out[..m].to_vec());
                    }
                    (v, _) => panic!("{framing:?} fragment {k}: {v:?}"),
                }
            }
            let reply = reply.expect("an echo reply");
            let back = split(&reply, l3, 1446);
            assert_eq!(back.len(), 3);
            let got: Vec<Verdict> = back
                .iter()
                .rev()
                .map(|f| rx(&mut a, &mut ra, f, t0).0)
                .collect();
            assert_eq!(
                got,
                [
                    Verdict::Absorbed,
                    Verdict::Absorbed,
                    Verdict::PingReply { seq: 5, len: 3000 }
                ]
            );

            // A fragment the reassembly refuses: the first one again, with other data.
            assert_eq!(rx(&mut b, &mut rb, &frags[0], t0).0, Verdict::Absorbed);
            let mut other = frags[0].clone();
            *other.last_mut().unwrap() ^= 1;
            assert_eq!(
                rx(&mut b, &mut rb, &other, t0).0,
                Verdict::Drop(Discard::Fragment)
            );
            // A datagram with no room in its frame.
            assert_eq!(rx(&mut b, &mut rb, &frags[0], t0).0, Verdict::Absorbed);
            assert_eq!(rx(&mut b, &mut rb, &frags[1], t0).0, Verdict::Absorbed);
            let mut small = frags[2].clone();
            let len = small.len();
            assert_eq!(
                receive(&mut b, &mut rb, &mut small, len, t0),
                Verdict::Drop(Discard::NoRoom)
            );
        }
    }

    #[test]
    fn mtu_settings() {
        assert_eq!(link_mtu(0), None);
        assert_eq!(link_mtu(1), Some(MIN_MTU));
        assert_eq!(link_mtu(1446), Some(1446));
        assert_eq!(link_mtu(u32::MAX).map(|m| m >= 65535), Some(true));
        let c = cfg(
            Role::Client,
            &socket(),
            Mode::Ip,
            "10.0.0.1",
            "10.0.0.2",
            None,
        );
        assert!(c.same_but_mtu(&AppConfig {
            mtu: 1446,
            ..c.clone()
        }));
        assert!(!c.same_but_mtu(&AppConfig {
            mode: Mode::Ethernet,
            ..c.clone()
        }));
        let mut app = MemifApp::start(AppConfig { mtu: 1446, ..c }, None).unwrap();
        assert_eq!(app.mtu(), 1446);
        app.set_mtu(1400);
        assert_eq!((app.mtu(), app.config().mtu), (1400, 1400));
        app.stop();
    }

    #[test]
    fn a_busy_name_an_unreachable_server_and_bad_inputs() {
        let sock = socket();
        let server = MemifApp::start(
            cfg(Role::Server, &sock, Mode::Ip, "10.9.3.1", "10.9.3.2", None),
            None,
        )
        .unwrap();
        let e = MemifApp::start(
            cfg(Role::Server, &sock, Mode::Ip, "10.9.3.1", "10.9.3.2", None),
            None,
        )
        .unwrap_err();
        assert!(e.is_addr_in_use(), "{e}");
        server.stop();

        // A client with nobody to talk to never starts its pinger, and stops promptly.
        let (tx, rx) = mpsc::channel();
        let lonely = MemifApp::start(
            cfg(
                Role::Client,
                &socket(),
                Mode::Ip,
                "10.9.3.2",
                "10.9.3.1",
                Some(PingSpec { count: 1, size: 56 }),
            ),
            reporter(&tx, "client"),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!lonely.is_connected());
        let t0 = Instant::now();
        lonely.stop();
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert!(rx.try_recv().is_err(), "no report without a link");

        let e = MemifApp::start(
            cfg(Role::Client, "@x", Mode::Ip, "10.0.0.1", "fd00::1", None),
            None,
        )
        .unwrap_err();
        assert!(matches!(e, MemifAppError::Responder(_)), "{e}");

        assert_eq!(mode_from_payload("IP").unwrap(), Mode::Ip);
        assert_eq!(mode_from_payload("ETHERNET").unwrap(), Mode::Ethernet);
        assert_eq!(mode_from_payload("").unwrap(), Mode::Ethernet);
        assert!(matches!(
            mode_from_payload("MPLS"),
            Err(MemifAppError::BadPayload(_))
        ));
        let f = "connection.context.ip_context.src_ip_addrs";
        assert_eq!(
            first_ip(&["172.16.1.101/32".into()], f)
                .unwrap()
                .to_string(),
            "172.16.1.101"
        );
        assert_eq!(
            first_ip(&["fd00::1".into(), "x".into()], f)
                .unwrap()
                .to_string(),
            "fd00::1"
        );
        assert!(matches!(first_ip(&[], f), Err(MemifAppError::NoAddress(_))));
        let e = first_ip(&["172.16.1/32".into()], f).unwrap_err();
        assert!(e.to_string().contains("src_ip_addrs"), "{e}");
        let m = mac_from_seed("x");
        assert_eq!(&m[..2], &[0x02, 0xfe]);
        assert_ne!(mac_from_seed("y"), m);
        assert_eq!(
            format_mac(&[2, 0xfe, 0, 1, 0xab, 0xff]),
            "02:fe:00:01:ab:ff"
        );
        assert!(parse_ping_size("9922").is_ok());
        assert!(parse_ping_size("9923").is_err());
        assert!(parse_ping_size("-1").is_err());
    }
}
