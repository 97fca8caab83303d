//! Poll-mode workers.
//!
//! A worker is a thread pinned to one CPU. It owns a [`BufferPool`] and a set of ports, and loops:
//! 1. drain control commands (add or remove a port);
//! 2. [`Worker::poll_once`]: for each port, one receive burst of at most [`BURST`] packets, run to
//!    completion (look up the forwarding table, transmit on the egress port or drop and count),
//!    then one flush per port;
//! 3. idle policy: with [`PollMode::Busy`] loop again at once. With [`PollMode::Adaptive`], after
//!    a loop that moved nothing: spin, then yield, then sleep in `poll(2)` on the ports' receive
//!    fds and the control doorbell for at most 1 ms.
//!
//! Work per loop is bounded: one burst per port, so no port can starve another or the control
//! commands.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::buffer::BufferPool;
use crate::counters::{DropReason, WorkerCounters};
use crate::port::{Burst, Port, PortId, BURST};
use crate::rcu::{RcuCell, Reader};
use crate::table::{Action, ForwardingTable, Rewrite};

/// How a worker waits when there is no traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollMode {
    /// Spin, then yield, then sleep up to 1 ms at a time: an idle worker costs well under 5% of a
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
/// The longest sleep, in milliseconds. A sleeping worker still notices a stop request, a command
/// or a packet within this time even if no fd becomes readable (e.g. an AF_XDP socket that needs
/// a wakeup).
const SLEEP_MS: i32 = 1;

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
    lens: [u32; BURST],
    // cold: control plane only
    cmds: Receiver<Command>,
    doorbell: Arc<Doorbell>,
    stop: Arc<AtomicBool>,
    poll_mode: PollMode,
    cpu: Option<usize>,
    pollfds: Vec<libc::pollfd>,
    wait_fds: Vec<RawFd>,
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
            lens: [0; BURST],
            cmds: p.cmds,
            doorbell: p.doorbell,
            stop: p.stop,
            poll_mode: p.poll_mode,
            cpu: p.cpu,
            pollfds: Vec::new(),
            wait_fds: Vec::new(),
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
        self.reader.quiescent();
        let table = self.table.load(&self.reader);
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
            let action = table.lookup(rx_id);
            if let Action::Xconnect { rewrite, .. } = action {
                if rewrite != Rewrite::None {
                    let pool = &mut self.pool;
                    self.burst.retain(|b| {
                        let ok = rewrite.apply(pool, b);
                        if !ok {
                            pool.free(b);
                        }
                        ok
                    });
                    rx_ctr.drop(DropReason::NotIp, (n - self.burst.len()) as u64);
                }
            }
            let pkts = self.burst.as_slice();
            let n = pkts.len();
            if n == 0 {
                continue;
            }
            for (len, &b) in self.lens.iter_mut().zip(pkts) {
                *len = u32::from(self.pool.meta(b).len);
            }
            match action {
                Action::Drop => {
                    rx_ctr.drop(DropReason::NoRoute, n as u64);
                    self.pool.free_burst(pkts);
                }
                Action::Xconnect { tx, .. } => {
                    let slot = self
                        .slot_of
                        .get(usize::from(tx))
                        .copied()
                        .unwrap_or(NO_SLOT);
                    let tx_ctr = self.counters.port(usize::from(tx));
                    match (self.ports.get_mut(usize::from(slot)), tx_ctr) {
                        (Some(egress), Some(tx_ctr)) => {
                            let sent = egress.port.tx_burst(&mut self.pool, pkts, tx_ctr);
                            let sent_bytes: u64 =
                                self.lens[..sent].iter().map(|&l| u64::from(l)).sum();
                            tx_ctr.tx(sent as u64, sent_bytes);
                            if sent < n {
                                tx_ctr.drop(egress.port.tx_drop_reason(), (n - sent) as u64);
                                self.pool.free_burst(&pkts[sent..]);
                            }
                        }
                        _ => {
                            rx_ctr.drop(DropReason::PortGone, n as u64);
                            self.pool.free_burst(pkts);
                        }
                    }
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

    /// Sleeps until a port has work, a command arrives, or [`SLEEP_MS`] passes. Ports that can
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
                SLEEP_MS,
            )
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
        // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(WorkerError::Pin {
                cpu,
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        // SAFETY: cpu is below CPU_SETSIZE (checked above), so the bit is inside `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
        let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
        if rc != 0 {
            return Err(WorkerError::Pin {
                cpu,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
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
