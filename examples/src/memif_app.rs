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
//! nothing: bursts live on the stack, the pinger's bitmap and the poll vectors are sized before
//! it starts.
//!
//! Lifecycle: [`MemifApp::start`] returns once the driver accepted the configuration (a server
//! is listening). [`MemifApp::stop`] (or dropping the app) stops the packet loop, which releases
//! the port, then shuts the driver down and drops its runtime, which closes every socket it held
//! (the listener and the accepted connection included), so the socket name is free again when
//! `stop` returns.

use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vwire_dataplane::buffer::{BufIdx, BufferError, BufferPool, HEADROOM, JUMBO_FRAME_SIZE};
use vwire_dataplane::counters::{PortCounters, PortTotals};
use vwire_dataplane::port::{Burst, Port, BURST};
use vwire_dataplane::rcu::{Qsbr, Reader};
use vwire_mechanisms::memif::driver::{Driver, MemifConfig};
use vwire_mechanisms::memif::msg::Mode;
use vwire_mechanisms::memif::port::{Link, MemifPort, Role};
use vwire_mechanisms::memif::MemifError;

use crate::pinger::{PingAction, PingReport, PingSpec, Pinger};
use crate::responder::{Framing, Responder, ResponderError, Verdict, ETH_HLEN, ICMP_ECHO_HLEN};

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
pub const MAX_PING_SIZE: usize = JUMBO_FRAME_SIZE - HEADROOM - ETH_HLEN - 40 - ICMP_ECHO_HLEN;

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

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

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
}

impl AppConfig {
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
        let ctl = spawn_control(config.memif(), link.clone())?;
        let lp = PacketLoop {
            port: MemifPort::new(&config.name, link.clone()),
            link: link.clone(),
            reader: qsbr.register(),
            pool,
            responder,
            pinger: config.ping.map(|s| Pinger::new(s, config.peer)),
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

/// Writes a packet with `write` into a fresh buffer of `pool` and queues it.
fn emit(pool: &mut BufferPool, tx: &mut TxQueue, write: impl FnOnce(&mut [u8]) -> Option<usize>) {
    let Some(b) = pool.alloc() else { return };
    match write(&mut pool.frame_mut(b)[HEADROOM..]) {
        Some(n) => {
            pool.set_meta(b, HEADROOM, n);
            tx.push(pool, b, n);
        }
        None => pool.free(b),
    }
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
    stop: Arc<AtomicBool>,
    ctr: Arc<PortCounters>,
    // cold
    on_report: Option<OnReport>,
    tid: Arc<AtomicI32>,
}

/// Packets (and their lengths) queued for one transmit: a receive burst's answers plus one
/// packet of the pinger.
struct TxQueue {
    bufs: Burst,
    bytes: [usize; BURST + 1],
}

impl TxQueue {
    fn push(&mut self, pool: &mut BufferPool, b: BufIdx, len: usize) {
        let i = self.bufs.len();
        if self.bufs.push(b) {
            self.bytes[i] = len;
        } else {
            pool.free(b);
        }
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
        };
        let mut fds: Vec<RawFd> = Vec::with_capacity(8);
        let mut pollfds: Vec<libc::pollfd> = Vec::with_capacity(8);
        self.port.attach(&self.pool);
        while !self.stop.load(Ordering::Acquire) {
            self.reader.quiescent();
            let now = Instant::now();
            rx.clear();
            tx.bufs.clear();
            self.port.rx_burst(&mut self.pool, &mut rx, &self.ctr);
            for &b in rx.as_slice() {
                self.answer(b, &mut tx);
            }
            let wake = self.ping(now, &mut tx);
            let busy = !rx.is_empty() || !tx.bufs.is_empty();
            if !tx.bufs.is_empty() {
                let pkts = tx.bufs.as_slice();
                let sent = self.port.tx_burst(&mut self.pool, pkts, &self.ctr);
                let bytes: usize = tx.bytes[..sent].iter().sum();
                self.ctr.tx(sent as u64, bytes as u64);
                if let Some(rest) = pkts.get(sent..).filter(|r| !r.is_empty()) {
                    PortCounters::drop(&self.ctr, self.port.tx_drop_reason(), rest.len() as u64);
                    self.pool.free_burst(rest);
                }
            }
            self.port.flush(&mut self.pool, &self.ctr);
            if !busy {
                self.sleep(now, wake, &mut fds, &mut pollfds);
            }
        }
        self.finish();
    }

    /// Answers received packet `b` in place, or frees it.
    fn answer(&mut self, b: BufIdx, tx: &mut TxQueue) {
        let m = self.pool.meta(b);
        let (off, len) = (usize::from(m.offset), usize::from(m.len));
        self.ctr.rx(1, len as u64);
        let verdict = match self.pool.frame_mut(b).get_mut(off..) {
            Some(buf) => self.responder.handle(buf, len),
            None => Verdict::Absorbed,
        };
        match verdict {
            Verdict::Reply(n) => {
                self.pool.set_meta(b, off, n);
                tx.push(&mut self.pool, b, n);
            }
            Verdict::PingReply { seq, len } => {
                if let Some(p) = self.pinger.as_mut() {
                    p.handle_reply(seq, len);
                }
                self.pool.free(b);
            }
            Verdict::Absorbed | Verdict::Drop(_) => self.pool.free(b),
        }
    }

    /// Runs the pinger: queues its packet, if any; returns when it next wants to run.
    fn ping(&mut self, now: Instant, tx: &mut TxQueue) -> Option<Instant> {
        let p = self.pinger.as_mut()?;
        if !p.started() && !self.link.is_up() {
            return None; // the clock starts when the link first comes up
        }
        let size = p.spec().size;
        match p.poll(now, self.responder.peer_resolved()) {
            PingAction::Send(seq) => {
                let r = &self.responder;
                emit(&mut self.pool, tx, |buf| {
                    r.write_echo_request(buf, seq, size)
                });
                None
            }
            PingAction::Resolve => {
                let r = &self.responder;
                emit(&mut self.pool, tx, |buf| r.write_resolve(buf));
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
        tracing::debug!(
            iface = %self.port.name(),
            rx = t.rx_packets,
            tx = t.tx_packets,
            "memif packet loop stopped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
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
    /// in the given mode, with the given sizes; then both stop and the name is free again.
    fn ping_each_other(mode: Mode, a: &str, b: &str, server_size: usize, client_size: usize) {
        let sock = socket();
        let (tx, rx) = mpsc::channel();
        let count = 3;
        let server = MemifApp::start(
            cfg(
                Role::Server,
                &sock,
                mode,
                a,
                b,
                Some(PingSpec {
                    count,
                    size: server_size,
                }),
            ),
            reporter(&tx, "server"),
        )
        .unwrap();
        let client = MemifApp::start(
            cfg(
                Role::Client,
                &sock,
                mode,
                b,
                a,
                Some(PingSpec {
                    count,
                    size: client_size,
                }),
            ),
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
        // Both answered the other's pings: at least `count` requests in and replies out each.
        for app in [&server, &client] {
            let t = app.totals();
            assert!(t.rx_packets >= u64::from(2 * count), "{t:?}");
            assert!(t.tx_packets >= u64::from(2 * count), "{t:?}");
        }
        client.stop();
        server.stop();
        assert!(rx.try_recv().is_err(), "exactly one report each");
        // The listener is gone: the name can be bound again at once.
        let again = MemifApp::start(cfg(Role::Server, &sock, mode, a, b, None), None).unwrap();
        again.stop();
    }

    #[test]
    fn ethernet_mode_ipv4_with_a_3000_byte_ping_and_an_idle_cpu() {
        ping_each_other(Mode::Ethernet, "10.9.0.1", "10.9.0.2", 3000, 56);

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
        ping_each_other(Mode::Ip, "10.9.2.1", "10.9.2.2", 56, 3000);
    }

    #[test]
    fn ethernet_mode_ipv6_with_jumbo_pings() {
        ping_each_other(Mode::Ethernet, "fd00:9::1", "fd00:9::2", 9000, 1400);
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
