//! Poll-mode workers.
//!
//! A worker is a thread pinned to one CPU. It owns a [`BufferPool`] and a set of ports, and loops:
//! 1. drain control commands (add or remove a port);
//! 2. [`Worker::poll_once`]: for each port, one receive burst of at most [`BURST`] packets, run to
//!    completion (look up the forwarding table, transmit on the egress port or drop and count),
//!    then one flush per port;
//! 3. idle policy: with [`PollMode::Busy`] loop again at once. With [`PollMode::Adaptive`], after
//!    a loop that moved nothing: spin, then yield, then sleep in `poll(2)` on the ports' receive
//!    fds and the control doorbell: 1 ms at first, doubling with every sleep that ends with
//!    nothing to do, up to [`MAX_SLEEP_MS`]. Every fd is level-triggered (an AF_XDP RX ring that
//!    is not empty, a memif interrupt eventfd, the doorbell), so traffic or a command ends a sleep
//!    at once whatever its length; the timeout only bounds how long an event that comes with no
//!    fd can wait, and sets the idle cost (a wakeup costs tens of µs on a VM).
//!
//! Work per loop is bounded: one burst per port, so no port can starve another or the control
//! commands.
//!
//! What a burst goes through, by the receiving port's [`Action`]:
//! - `Drop`: freed, counted `no_route`.
//! - `Xconnect`: the [`Rewrite`] (refusals counted `not_ip`), then one transmit on the egress.
//! - `Encap`: the tunnel's [`crate::tunnel::Encap::encap_burst`] (one virtual call per burst;
//!   refusals counted by reason on the receiving port), then one transmit on the uplink.
//! - `Decap`: the uplink's [`crate::tunnel::Decap::decap_burst`], which gives every packet its
//!   egress port, then one transmit per egress port. Grouping: if every packet goes to the same
//!   port (one tunnel per burst, the common case) the burst is sent as it is; otherwise the
//!   packets are sorted by `(egress, position in the burst)` in a fixed scratch array of
//!   [`BURST`] keys kept in the worker (no allocation; `sort_unstable` on 32 keys is a few dozen
//!   compares) and each run of one port is sent with one transmit, so order is kept within each
//!   egress port.
//!
//! Transmit accounting is the same for all: what the egress takes is counted as its tx, the
//! shortfall under its [`Port::tx_drop_reason`] and freed; an egress not on this worker is
//! counted `port_gone` on the receiving port.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::buffer::{BufIdx, BufferPool};
use crate::counters::{DropReason, DropTally, PortCounters, WorkerCounters};
use crate::port::{Burst, Port, PortId, BURST, MAX_BURST};
use crate::rcu::{RcuCell, Reader};
use crate::table::{Action, ForwardingTable, Rewrite};
use crate::tunnel::EgressIds;

/// How a worker waits when there is no traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollMode {
    /// Spin, then yield, then sleep (1 ms, growing to [`MAX_SLEEP_MS`] while idle): an idle worker costs well under 5% of a
    /// core.
    Adaptive,
    /// Never sleep: lowest latency, one full core per worker. For benchmarks.
    Busy,
}

/// Idle loops spent spinning before yielding. An idle loop over a few ports takes 50–100 ns here,
/// so this is 50–100 µs: long enough to catch the next packet of a flow without a wakeup, short
/// enough to cost nothing measurable when idle.
const SPIN_LOOPS: u32 = 1000;
/// Idle loops spent yielding before sleeping (a yield costs about a microsecond).
const YIELD_LOOPS: u32 = 100;
/// The first sleep, in milliseconds.
const SLEEP_MS: i32 = 1;
/// The longest sleep, in milliseconds, reached after a few sleeps in a row ended with nothing to
/// do. A sleeping worker still notices a stop request, a command or a packet within this time
/// even if no fd becomes readable.
pub const MAX_SLEEP_MS: i32 = 8;

/// Sentinel in `slot_of`: the port is not on this worker.
const NO_SLOT: u16 = u16::MAX;

/// A control command for a worker.
pub enum Command {
    /// Start polling `port` under `id`.
    AddPort {
        /// Its id (an index into the table and counters).
        id: PortId,
        /// The port.
        port: Box<dyn Port>,
    },
    /// Stop polling port `id` and hand it back. The worker no longer touches it once sent.
    RemovePort {
        /// The port to remove.
        id: PortId,
        /// Where the port goes; `None` if the worker did not have it.
        reply: Sender<Option<Box<dyn Port>>>,
    },
    /// Return these buffers to the pool (a removed port's, once its sockets are closed).
    FreeBuffers(Vec<crate::buffer::BufIdx>),
}

/// The control-to-worker doorbell: an eventfd the worker sleeps on.
#[derive(Debug)]
pub struct Doorbell(OwnedFd);

impl Doorbell {
    /// A new non-blocking eventfd.
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: plain syscall; the returned fd is checked and then owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(Self(unsafe {
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
        }))
    }

    /// Wakes the worker.
    pub fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. A full counter (EAGAIN) means the
        // worker is already due to wake, so the result is ignored on purpose.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN (nothing pending) is fine.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

struct Slot {
    id: PortId,
    port: Box<dyn Port>,
}

// The sort keys of `demux` hold a burst position in 8 bits.
const _: () = assert!(BURST <= 256);

/// Fixed per-worker scratch space for the tunnel stages (about 1 KiB, in the worker).
struct Scratch {
    /// Drops of the current burst's encap or decap, by reason.
    drops: DropTally,
    /// The egress port of each packet left after decap.
    egress: EgressIds,
    /// `egress << 40 | position << 32 | buffer` of each packet, sorted to group by egress.
    keys: [u64; BURST],
    /// The buffers in sorted order: each egress port's packets are one slice.
    sorted: [BufIdx; BURST],
}

impl Scratch {
    fn new() -> Self {
        Self {
            drops: DropTally::new(),
            egress: [0; MAX_BURST],
            keys: [0; BURST],
            sorted: [0; BURST],
        }
    }
}

/// Total length of `pkts`.
#[inline]
fn bytes_of(pool: &BufferPool, pkts: &[BufIdx]) -> u64 {
    pkts.iter().map(|&b| u64::from(pool.meta(b).len)).sum()
}

/// Sends `pkts` out of port `tx`, which takes what it can: counted as its tx, the rest counted
/// under its TX drop reason and freed. If `tx` is not on this worker, everything is freed and
/// counted `port_gone` on the receiving port (`rx_ctr`).
#[inline]
fn transmit(
    ports: &mut [Slot],
    slot_of: &[u16],
    counters: &WorkerCounters,
    pool: &mut BufferPool,
    rx_ctr: &PortCounters,
    tx: PortId,
    pkts: &[BufIdx],
) {
    if pkts.is_empty() {
        return;
    }
    let slot = slot_of.get(usize::from(tx)).copied().unwrap_or(NO_SLOT);
    match (
        ports.get_mut(usize::from(slot)),
        counters.port(usize::from(tx)),
    ) {
        (Some(egress), Some(tx_ctr)) => {
            // Lengths are read before the port owns the buffers; the ones it does not take are
            // still ours afterwards.
            let bytes = bytes_of(pool, pkts);
            let sent = egress.port.tx_burst(pool, pkts, tx_ctr);
            let unsent = pkts.get(sent..).unwrap_or(&[]);
            let unsent_bytes = bytes_of(pool, unsent);
            tx_ctr.tx((pkts.len() - unsent.len()) as u64, bytes - unsent_bytes);
            if !unsent.is_empty() {
                tx_ctr.drop(egress.port.tx_drop_reason(), unsent.len() as u64);
                pool.free_burst(unsent);
            }
        }
        _ => {
            rx_ctr.drop(DropReason::PortGone, pkts.len() as u64);
            pool.free_burst(pkts);
        }
    }
}

/// Sends each packet of `pkts` to its port in `egress` (same positions), one transmit per port,
/// keeping the order of each port's packets. See the module docs.
#[allow(clippy::too_many_arguments)] // the worker's fields, split for the borrow checker
#[inline]
fn demux(
    ports: &mut [Slot],
    slot_of: &[u16],
    counters: &WorkerCounters,
    pool: &mut BufferPool,
    rx_ctr: &PortCounters,
    pkts: &[BufIdx],
    egress: &[PortId],
    scratch_keys: &mut [u64; BURST],
    scratch_sorted: &mut [BufIdx; BURST],
) {
    // A Decap names one egress per packet; should an implementation name fewer, the packets
    // without one are dropped rather than leaked.
    let (pkts, orphans) = pkts.split_at(pkts.len().min(egress.len()));
    if !orphans.is_empty() {
        rx_ctr.drop(DropReason::PortGone, orphans.len() as u64);
        pool.free_burst(orphans);
    }
    let egress = egress.get(..pkts.len()).unwrap_or(egress);
    let Some(&first) = egress.first() else {
        return;
    };
    if egress.iter().all(|&e| e == first) {
        transmit(ports, slot_of, counters, pool, rx_ctr, first, pkts);
        return;
    }
    // The worker's bursts hold at most BURST packets: one chunk. Chunking keeps this total for
    // any length without indexing past the scratch arrays.
    for (pkts, egress) in pkts.chunks(BURST).zip(egress.chunks(BURST)) {
        let n = pkts.len().min(egress.len());
        let keys = &mut scratch_keys[..n];
        for (i, ((k, &e), &b)) in keys.iter_mut().zip(egress).zip(pkts).enumerate() {
            // Position (< BURST) breaks ties: the sort keeps arrival order within a port.
            *k = (u64::from(e) << 40) | ((i as u64) << 32) | u64::from(b);
        }
        keys.sort_unstable();
        for (s, &k) in scratch_sorted.iter_mut().zip(keys.iter()) {
            #[allow(clippy::cast_possible_truncation)] // the low 32 bits are the buffer
            {
                *s = k as BufIdx;
            }
        }
        let mut at = 0;
        for run in keys.chunk_by(|a, b| a >> 40 == b >> 40) {
            let end = at + run.len();
            let Some(&k) = run.first() else {
                continue; // chunk_by yields no empty runs
            };
            #[allow(clippy::cast_possible_truncation)] // bits 40.. hold a PortId
            let port = (k >> 40) as PortId;
            if let Some(bufs) = scratch_sorted.get(at..end) {
                transmit(ports, slot_of, counters, pool, rx_ctr, port, bufs);
            }
            at = end;
        }
    }
}

/// A poll-mode worker. See the module docs.
pub struct Worker {
    // hot: accessed by the worker every burst. `ports` is declared before `pool` so that ports
    // (and the AF_XDP sockets using the pool as UMEM) are dropped first.
    ports: Vec<Slot>,
    slot_of: Box<[u16]>,
    pool: BufferPool,
    table: Arc<RcuCell<ForwardingTable>>,
    reader: Reader,
    counters: Arc<WorkerCounters>,
    burst: Burst,
    /// Scratch of the tunnel stages, reused every burst.
    scratch: Scratch,
    // cold: control plane only
    cmds: Receiver<Command>,
    doorbell: Arc<Doorbell>,
    stop: Arc<AtomicBool>,
    poll_mode: PollMode,
    cpu: Option<usize>,
    pollfds: Vec<libc::pollfd>,
    wait_fds: Vec<RawFd>,
    /// The next sleep's timeout: [`SLEEP_MS`] after any work, doubling while idle.
    sleep_ms: i32,
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// the port id does not fit the counters and table
    #[error("port id {0} is beyond the dataplane's {1} ports")]
    PortIdOutOfRange(PortId, usize),
    /// the port id is already used on this worker
    #[error("port id {0} is already in use")]
    DuplicatePort(PortId),
    /// pinning failed
    #[error("cannot pin worker to CPU {cpu}: {source}")]
    Pin {
        /// the CPU
        cpu: usize,
        /// the system error
        source: std::io::Error,
    },
}

/// What a worker is built from.
pub struct WorkerParts {
    /// The worker's pool.
    pub pool: BufferPool,
    /// The forwarding table.
    pub table: Arc<RcuCell<ForwardingTable>>,
    /// The worker's QSBR reader.
    pub reader: Reader,
    /// The worker's counters.
    pub counters: Arc<WorkerCounters>,
    /// Control commands.
    pub cmds: Receiver<Command>,
    /// The doorbell the control rings after sending a command or a stop.
    pub doorbell: Arc<Doorbell>,
    /// Set to stop the worker.
    pub stop: Arc<AtomicBool>,
    /// Idle policy.
    pub poll_mode: PollMode,
    /// CPU to pin to when run.
    pub cpu: Option<usize>,
    /// Largest port id + 1.
    pub max_ports: usize,
}

impl Worker {
    /// Builds a worker with no ports.
    pub fn new(p: WorkerParts) -> Self {
        Self {
            ports: Vec::new(),
            slot_of: vec![NO_SLOT; p.max_ports].into_boxed_slice(),
            pool: p.pool,
            table: p.table,
            reader: p.reader,
            counters: p.counters,
            burst: Burst::with_capacity(BURST),
            scratch: Scratch::new(),
            cmds: p.cmds,
            doorbell: p.doorbell,
            stop: p.stop,
            poll_mode: p.poll_mode,
            cpu: p.cpu,
            pollfds: Vec::new(),
            wait_fds: Vec::new(),
            sleep_ms: SLEEP_MS,
        }
    }

    /// The worker's pool (tests and benches inject packets through it).
    pub fn pool_mut(&mut self) -> &mut BufferPool {
        &mut self.pool
    }

    /// Adds a port. Not for the packet path: it may allocate.
    pub fn add_port(&mut self, id: PortId, port: Box<dyn Port>) -> Result<(), WorkerError> {
        let max = self.slot_of.len();
        let Some(entry) = self.slot_of.get(usize::from(id)) else {
            return Err(WorkerError::PortIdOutOfRange(id, max));
        };
        if *entry != NO_SLOT {
            return Err(WorkerError::DuplicatePort(id));
        }
        #[allow(clippy::cast_possible_truncation)] // a worker never holds 65535 ports
        let slot = self.ports.len() as u16;
        let mut port = port;
        port.attach(&self.pool);
        self.ports.push(Slot { id, port });
        self.slot_of[usize::from(id)] = slot;
        self.rebuild_pollfds();
        Ok(())
    }

    /// Removes a port and returns it.
    pub fn remove_port(&mut self, id: PortId) -> Option<Box<dyn Port>> {
        let slot = *self.slot_of.get(usize::from(id))?;
        if slot == NO_SLOT {
            return None;
        }
        let removed = self.ports.swap_remove(usize::from(slot));
        self.slot_of[usize::from(id)] = NO_SLOT;
        if let Some(moved) = self.ports.get(usize::from(slot)) {
            self.slot_of[usize::from(moved.id)] = slot;
        }
        self.rebuild_pollfds();
        let mut port = removed.port;
        port.release(&mut self.pool);
        Some(port)
    }

    /// Collects the fds to sleep on: the doorbell and every port's wait fds. Runs before each
    /// sleep (a port's fds can change, e.g. a memif reconnect); it reuses the vectors' capacity,
    /// so after the first sleeps it does not allocate.
    fn rebuild_pollfds(&mut self) {
        self.pollfds.clear();
        self.pollfds.push(libc::pollfd {
            fd: self.doorbell.fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        self.wait_fds.clear();
        for s in &self.ports {
            s.port.wait_fds(&mut self.wait_fds);
        }
        self.pollfds
            .extend(self.wait_fds.iter().map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }));
    }

    /// One loop iteration over every port; returns the number of packets received.
    ///
    /// Packet path: no allocation, lock, log or per-packet system call.
    pub fn poll_once(&mut self) -> usize {
        let online = self.reader.online();
        let table = self.table.load(&online);
        let mut total = 0;
        for i in 0..self.ports.len() {
            let rx_id = self.ports[i].id;
            let Some(rx_ctr) = self.counters.port(usize::from(rx_id)) else {
                continue; // unreachable: add_port checked the id against the same size
            };
            self.burst.clear();
            let n = self.ports[i]
                .port
                .rx_burst(&mut self.pool, &mut self.burst, rx_ctr);
            if n == 0 {
                continue;
            }
            total += n;
            let mut bytes = 0u64;
            for &b in self.burst.as_slice() {
                bytes += u64::from(self.pool.meta(b).len);
            }
            rx_ctr.rx(n as u64, bytes);
            let burst = &mut self.burst;
            let pool = &mut self.pool;
            match table.lookup(rx_id) {
                Action::Drop => {
                    rx_ctr.drop(DropReason::NoRoute, n as u64);
                    pool.free_burst(burst.as_slice());
                }
                Action::Xconnect { tx, rewrite } => {
                    if rewrite != Rewrite::None {
                        burst.retain(|b| {
                            let ok = rewrite.apply(pool, b);
                            if !ok {
                                pool.free(b);
                            }
                            ok
                        });
                        rx_ctr.drop(DropReason::NotIp, (n - burst.len()) as u64);
                    }
                    transmit(
                        &mut self.ports,
                        &self.slot_of,
                        &self.counters,
                        pool,
                        rx_ctr,
                        tx,
                        burst.as_slice(),
                    );
                }
                Action::Encap { tx, tunnel } => {
                    let Some(encap) = table.encap(tunnel) else {
                        rx_ctr.drop(DropReason::TunnelUnknown, n as u64);
                        pool.free_burst(burst.as_slice());
                        continue;
                    };
                    let drops = &mut self.scratch.drops;
                    encap.encap_burst(pool, burst, drops);
                    drops.drain_into(rx_ctr);
                    transmit(
                        &mut self.ports,
                        &self.slot_of,
                        &self.counters,
                        pool,
                        rx_ctr,
                        tx,
                        burst.as_slice(),
                    );
                }
                Action::Decap => {
                    let Some(decap) = table.decap(rx_id) else {
                        rx_ctr.drop(DropReason::TunnelUnknown, n as u64);
                        pool.free_burst(burst.as_slice());
                        continue;
                    };
                    let sc = &mut self.scratch;
                    decap.decap_burst(pool, burst, &mut sc.egress, &mut sc.drops);
                    sc.drops.drain_into(rx_ctr);
                    demux(
                        &mut self.ports,
                        &self.slot_of,
                        &self.counters,
                        pool,
                        rx_ctr,
                        burst.as_slice(),
                        &sc.egress,
                        &mut sc.keys,
                        &mut sc.sorted,
                    );
                }
            }
        }
        for s in &mut self.ports {
            if let Some(ctr) = self.counters.port(usize::from(s.id)) {
                s.port.flush(&mut self.pool, ctr);
            }
        }
        total
    }

    fn drain_commands(&mut self) {
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                Command::AddPort { id, port } => {
                    if let Err(e) = self.add_port(id, port) {
                        // Cold path: the control validated the id, so this is a bug; say so once.
                        eprintln!("vwire worker: cannot add port {id}: {e}");
                    }
                }
                Command::RemovePort { id, reply } => {
                    let port = self.remove_port(id);
                    // The control side may have given up waiting; then the port is dropped here,
                    // which is also safe: this worker no longer polls it.
                    let _ = reply.send(port);
                }
                Command::FreeBuffers(bufs) => self.pool.free_burst(&bufs),
            }
        }
    }

    /// Sleeps until a port has work, a command arrives, or the current timeout passes (see the
    /// module docs). Ports that can
    /// be woken (memif) turn their interrupts on first, and the worker stays awake if one of them
    /// already has work (the re-check after enabling notifications: no wakeup is lost).
    fn sleep(&mut self) {
        let mut pending = false;
        for s in &mut self.ports {
            pending |= s.port.prepare_sleep();
        }
        if pending {
            for s in &mut self.ports {
                s.port.after_sleep();
            }
            return;
        }
        self.rebuild_pollfds();
        self.reader.offline();
        // SAFETY: pollfds is a live, correctly sized array of pollfd for the duration of the call.
        let rc = unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                self.sleep_ms,
            )
        };
        // A sleep that timed out with nothing to do makes the next one longer.
        self.sleep_ms = if rc == 0 {
            (self.sleep_ms * 2).min(MAX_SLEEP_MS)
        } else {
            SLEEP_MS
        };
        if rc > 0 && self.pollfds[0].revents != 0 {
            self.doorbell.clear();
        }
        self.reader.quiescent();
        for s in &mut self.ports {
            s.port.after_sleep();
        }
    }

    /// Pins the calling thread to `cpu`.
    pub fn pin_current_thread(cpu: usize) -> Result<(), WorkerError> {
        crate::cpu::pin_current_thread(&[cpu]).map_err(|source| WorkerError::Pin { cpu, source })
    }

    /// Runs until the stop flag is set, then returns itself (so that the caller drops the ports
    /// and the pool outside the loop) and whether it ran at all.
    pub fn run(mut self) -> (Self, Result<(), WorkerError>) {
        if let Some(cpu) = self.cpu {
            if let Err(e) = Self::pin_current_thread(cpu) {
                self.reader.offline();
                return (self, Err(e));
            }
        }
        self.rebuild_pollfds();
        let mut idle_loops: u32 = 0;
        let mut last = Instant::now();
        while !self.stop.load(Relaxed) {
            if !self.cmds.is_empty() {
                self.drain_commands();
            }
            let n = self.poll_once();
            let now = Instant::now();
            #[allow(clippy::cast_possible_truncation)] // a loop never takes 584 years
            let dt = now.duration_since(last).as_nanos() as u64;
            last = now;
            self.counters.loop_done();
            self.counters.pool_free(self.pool.available());
            if n > 0 {
                self.counters.busy(dt);
                idle_loops = 0;
                self.sleep_ms = SLEEP_MS;
                continue;
            }
            self.counters.idle(dt);
            if self.poll_mode == PollMode::Busy {
                continue;
            }
            idle_loops = idle_loops.saturating_add(1);
            if idle_loops <= SPIN_LOOPS {
                std::hint::spin_loop();
            } else if idle_loops <= SPIN_LOOPS + YIELD_LOOPS {
                std::thread::yield_now();
            } else {
                self.sleep();
            }
        }
        self.reader.offline();
        (self, Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::HEADROOM;
    use crate::counters::PortCounters;
    use crate::mem_port::{mem_pair, MemPort};
    use crate::test_utils::Rig;
    use crate::tunnel::{Decap, Encap};

    /// Prepends `n` bytes of `tag`; refuses packets that start with 0xff as too big.
    #[derive(Debug)]
    struct Prepend {
        n: usize,
        tag: u8,
    }

    impl Encap for Prepend {
        fn encap(&self, pool: &mut BufferPool, b: BufIdx) -> Result<(), DropReason> {
            let m = pool.meta(b);
            let (off, len) = (usize::from(m.offset), usize::from(m.len));
            if pool.packet(b).first() == Some(&0xff) {
                return Err(DropReason::TooBig);
            }
            let start = off.checked_sub(self.n).ok_or(DropReason::NoHeadroom)?;
            pool.frame_mut(b)[start..off].fill(self.tag);
            pool.set_meta(b, start, len + self.n);
            Ok(())
        }
    }

    /// Strips `n` bytes; the last stripped byte names the egress port (0xee: unknown).
    #[derive(Debug)]
    struct Strip {
        n: usize,
    }

    impl Decap for Strip {
        fn decap(&self, pool: &mut BufferPool, b: BufIdx) -> Result<PortId, DropReason> {
            let m = pool.meta(b);
            let (off, len) = (usize::from(m.offset), usize::from(m.len));
            if len <= self.n {
                return Err(DropReason::TunnelMalformed);
            }
            let port = match pool.packet(b)[self.n - 1] {
                0xee => return Err(DropReason::TunnelUnknown),
                p => PortId::from(p),
            };
            pool.set_meta(b, off + self.n, len - self.n);
            Ok(port)
        }
    }

    const FRAMES: u32 = 256;

    /// A rig over `table` with, for each id, a port on the worker whose peer end the test
    /// keeps (to send into the worker and receive what it sends).
    fn rig(table: ForwardingTable, ids: &[PortId], cap: usize) -> (Rig, Vec<MemPort>) {
        let mut rig = Rig::new(table, 8, FRAMES).unwrap();
        let mut peers = Vec::new();
        for &id in ids {
            let (port, peer) = mem_pair(&format!("p{id}"), &format!("peer{id}"), cap);
            rig.worker.add_port(id, Box::new(port)).unwrap();
            peers.push(peer);
        }
        (rig, peers)
    }

    fn send(rig: &mut Rig, peer: &mut MemPort, frames: &[&[u8]]) {
        let pool = rig.worker.pool_mut();
        let mut bufs = Vec::new();
        for f in frames {
            let b = pool.alloc().unwrap();
            pool.set_meta(b, HEADROOM, f.len());
            pool.packet_mut(b).copy_from_slice(f);
            bufs.push(b);
        }
        let ctr = PortCounters::default();
        assert_eq!(peer.tx_burst(pool, &bufs, &ctr), bufs.len());
    }

    /// Everything waiting at `peer`, freed back to the pool.
    fn recv(rig: &mut Rig, peer: &mut MemPort) -> Vec<Vec<u8>> {
        let pool = rig.worker.pool_mut();
        let mut burst = Burst::with_capacity(MAX_BURST);
        peer.rx_burst(pool, &mut burst, &PortCounters::default());
        let out = burst
            .as_slice()
            .iter()
            .map(|&b| pool.packet(b).to_vec())
            .collect();
        pool.free_burst(burst.as_slice());
        out
    }

    #[test]
    fn encap_sends_to_the_uplink_and_counts_refusals_by_reason() {
        let mut t = ForwardingTable::new(8);
        t.add_tunnel(1, 0, Arc::new(Prepend { n: 4, tag: 0xe0 }))
            .unwrap();
        let (mut rig, mut peers) = rig(t, &[0, 1], 64);
        let [wire, local] = &mut peers[..] else {
            unreachable!()
        };
        send(
            &mut rig,
            local,
            &[&[1, 2, 3], &[0xff, 9], &[4, 5], &[0xff], &[6]],
        );
        assert_eq!(rig.worker.poll_once(), 5);
        let got = recv(&mut rig, wire);
        let tagged = |p: &[u8]| [&[0xe0; 4][..], p].concat();
        assert_eq!(got, [tagged(&[1, 2, 3]), tagged(&[4, 5]), tagged(&[6])]);
        let (up, lo) = (rig.totals(0), rig.totals(1));
        assert_eq!((lo.rx_packets, lo.rx_bytes), (5, 9));
        assert_eq!(lo.drops(DropReason::TooBig), 2);
        assert_eq!((up.tx_packets, up.tx_bytes), (3, 6 + 3 * 4));
        assert_eq!(up.rx_packets + lo.tx_packets, 0);
        assert_eq!(rig.worker.pool_mut().available(), FRAMES as usize);
    }

    #[test]
    fn a_full_uplink_counts_its_shortfall_and_frees_it() {
        let mut t = ForwardingTable::new(8);
        t.add_tunnel(1, 0, Arc::new(Prepend { n: 8, tag: 1 }))
            .unwrap();
        let (mut rig, mut peers) = rig(t, &[0, 1], 4);
        let [wire, local] = &mut peers[..] else {
            unreachable!()
        };
        // The local ring holds 4: two rounds of 4, the uplink ring (4) fills after the first.
        for _ in 0..2 {
            send(&mut rig, local, &[&[7u8; 10][..]; 4]);
            rig.worker.poll_once();
        }
        assert_eq!(recv(&mut rig, wire).len(), 4);
        let up = rig.totals(0);
        assert_eq!((up.tx_packets, up.tx_bytes), (4, 4 * 18));
        assert_eq!(up.drops(DropReason::TxRingFull), 4);
        assert_eq!(rig.worker.pool_mut().available(), FRAMES as usize);
    }

    #[test]
    fn decap_demuxes_to_three_ports_in_order() {
        let mut t = ForwardingTable::new(8);
        t.set_decap(0, Arc::new(Strip { n: 2 })).unwrap();
        // Ports 1-3 are on the worker; port 4 is not.
        let (mut rig, mut peers) = rig(t, &[0, 1, 2, 3], 64);
        let mut frames: Vec<Vec<u8>> = Vec::new();
        for seq in 0..29u8 {
            let port = [2, 1, 3, 3][usize::from(seq % 4)];
            frames.push(vec![0xaa, port, seq]);
        }
        frames.insert(5, vec![0xaa, 0xee, 100]); // unknown tunnel
        frames.insert(9, vec![0xaa, 2]); // nothing left after the outer header
        frames.insert(20, vec![0xaa, 4, 101]); // an egress on no worker
        assert_eq!(frames.len(), BURST);
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        send(&mut rig, &mut peers[0], &refs);
        assert_eq!(rig.worker.poll_once(), BURST);
        for port in 1..=3u8 {
            let got = recv(&mut rig, &mut peers[usize::from(port)]);
            let want: Vec<Vec<u8>> = (0..29u8)
                .filter(|s| [2, 1, 3, 3][usize::from(s % 4)] == port)
                .map(|s| vec![s])
                .collect();
            assert_eq!(got, want, "port {port}: its packets, stripped, in order");
            let tot = rig.totals(PortId::from(port));
            assert_eq!(tot.tx_packets, want.len() as u64);
            assert_eq!(tot.tx_bytes, want.len() as u64);
        }
        let up = rig.totals(0);
        assert_eq!(up.rx_packets, BURST as u64);
        assert_eq!(up.drops(DropReason::TunnelUnknown), 1);
        assert_eq!(up.drops(DropReason::TunnelMalformed), 1);
        assert_eq!(up.drops(DropReason::PortGone), 1);
        assert_eq!(rig.worker.pool_mut().available(), FRAMES as usize);

        // One egress for the whole burst: sent as it is.
        let frames: Vec<Vec<u8>> = (0..10u8).map(|s| vec![0, 2, s]).collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        send(&mut rig, &mut peers[0], &refs);
        rig.worker.poll_once();
        let got = recv(&mut rig, &mut peers[2]);
        assert_eq!(got, (0..10u8).map(|s| vec![s]).collect::<Vec<_>>());
        assert_eq!(rig.worker.pool_mut().available(), FRAMES as usize);
    }

    #[test]
    fn a_full_egress_keeps_the_others_going() {
        let mut t = ForwardingTable::new(8);
        t.set_decap(0, Arc::new(Strip { n: 1 })).unwrap();
        // Port 1's ring holds 2 packets; port 2's holds 64.
        let mut rig = Rig::new(t, 8, FRAMES).unwrap();
        let (up, mut wire) = mem_pair("up", "wire", 64);
        let (one, mut peer1) = mem_pair("one", "peer1", 2);
        let (two, mut peer2) = mem_pair("two", "peer2", 64);
        rig.worker.add_port(0, Box::new(up)).unwrap();
        rig.worker.add_port(1, Box::new(one)).unwrap();
        rig.worker.add_port(2, Box::new(two)).unwrap();
        let frames: Vec<[u8; 2]> = (0..8u8).map(|s| [1 + s % 2, s]).collect();
        let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        send(&mut rig, &mut wire, &refs);
        rig.worker.poll_once();
        assert_eq!(recv(&mut rig, &mut peer1), [[0], [2]]);
        assert_eq!(recv(&mut rig, &mut peer2), [[1], [3], [5], [7]]);
        assert_eq!(rig.totals(1).drops(DropReason::TxRingFull), 2);
        assert_eq!(rig.worker.pool_mut().available(), FRAMES as usize);
    }
}
