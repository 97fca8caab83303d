//! The AF_XDP port: [`open`] (cold: attaches the program, opens a socket per queue, steers each
//! queue to its socket) and the [`vwire_dataplane::Port`] driver (the hot path).
//!
//! A port has one socket ([`XskQueue`]) per receive queue of its interface. Per receive burst:
//! for each queue in turn until the burst is full, refill its fill ring from the pool (keeping
//! [`FILL_TARGET`] frames posted), take RX descriptors, check each against the pool, complete
//! partial checksums. Per transmit burst: reap completions back into the pool, then queue
//! descriptors on the first queue's socket; the kick (`sendto`, one per socket per loop, never
//! per packet) waits for [`Port::flush`].
//!
//! Descriptors from the kernel are checked before use: an address outside the pool or a length
//! past the frame is counted (`bad_rx_desc`, `bad_tx_completion`) and dropped, never followed.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use vwire_dataplane::buffer::{BufIdx, BufferPool};
use vwire_dataplane::checksum;
use vwire_dataplane::counters::{DropReason, PortCounters};
use vwire_dataplane::port::{Burst, Port, PortStats};

use super::abi::XdpDesc;
use super::error::AfXdpError;
use super::programs::{SlotRange, XdpAttachment, XdpProgram};
use super::ring::MmapRing;
use super::sys::{ifindex, rx_queue_count, XdpMode};
use super::xsk::{open_queue, QueueParts, RingSizes, Umem, XskStats, FILL_TARGET};

/// Frames posted to the fill ring per refill step: refilling in batches keeps the index store
/// (a cache line the kernel reads) off the per-packet path.
const REFILL_BATCH: usize = 64;
/// The smallest refill worth a ring update: a batch, or half a small fill target.
const REFILL_STEP: u32 = 64;
/// Most frames posted per refill call, so the first calls (an empty fill ring) stay bounded.
const REFILL_MAX: u32 = 2048;
/// Receive calls that find nothing before a queue's adaptive fill target halves: a fraction of a
/// second of a busy-polling worker, longer for one that sleeps when idle. Shorter (16,384, a
/// millisecond) shrank the target in TCP's own pauses, and the next burst found the fill ring
/// empty (`perf/kernel_iperf.sh`, afxdp: ~1,500 instead of ~5,000 retransmits a window, 4 streams).
const QUIET_POLLS: u32 = 1 << 22;
/// Most completions reaped per call.
const COMP_BATCH: u32 = 256;

/// The frames a port has handed to the kernel (posted to a fill ring or a TX ring) and not yet
/// got back. The kernel may only give back frames it was given: anything else is counted as a
/// bad descriptor and ignored. When the port leaves its worker, whatever is still held returns to
/// the pool once the sockets are closed, so adding and removing ports leaks no buffers.
#[derive(Debug, Default)]
struct KernelFrames {
    bits: Vec<u64>,
}

impl KernelFrames {
    fn for_pool(frames: u32) -> Self {
        Self {
            bits: vec![0; (frames as usize).div_ceil(64)],
        }
    }

    #[inline]
    fn insert(&mut self, b: BufIdx) {
        if let Some(w) = self.bits.get_mut(b as usize / 64) {
            *w |= 1 << (b % 64);
        }
    }

    /// Clears `b`; false if the port did not hold it.
    #[inline]
    fn remove(&mut self, b: BufIdx) -> bool {
        match self.bits.get_mut(b as usize / 64) {
            Some(w) if *w & (1 << (b % 64)) != 0 => {
                *w &= !(1 << (b % 64));
                true
            }
            _ => false,
        }
    }

    /// Appends every held frame to `out`.
    fn collect_into(mut self, out: &mut Vec<BufIdx>) {
        for (i, w) in self.bits.iter_mut().enumerate() {
            while *w != 0 {
                let bit = w.trailing_zeros();
                *w &= *w - 1;
                if let Ok(b) = BufIdx::try_from(i * 64 + bit as usize) {
                    out.push(b);
                }
            }
        }
    }
}

/// The socket and rings of one interface queue.
pub struct XskQueue {
    // hot: accessed by the worker every burst
    rx: MmapRing<XdpDesc>,
    tx: MmapRing<XdpDesc>,
    fill: MmapRing<u64>,
    comp: MmapRing<u64>,
    fd: RawFd,
    /// Frames posted to the fill ring and not yet received back.
    in_fill: u32,
    /// How many frames [`XskQueue::refill`] keeps posted now: between `fill_min` and
    /// `fill_max`, doubled when the kernel has used up more than half of it, halved after
    /// [`QUIET_POLLS`] receive calls that found nothing.
    fill_target: u32,
    fill_min: u32,
    fill_max: u32,
    /// Receive calls in a row that found nothing.
    quiet: u32,
    /// Frames in this socket's fill and TX rings.
    held: KernelFrames,
    zero_copy: bool,
    // cold: dropped after the rings are unmapped
    socket: Arc<OwnedFd>,
    queue: u32,
}

impl XskQueue {
    /// A queue that keeps between `fill.0` and `fill.1` frames posted (each clamped to 32 to
    /// [`FILL_TARGET`]), starting at the lower.
    pub(crate) fn new(p: QueueParts, fill: (u32, u32)) -> Self {
        let fill_max = fill.1.clamp(32, FILL_TARGET);
        let fill_min = fill.0.clamp(32, fill_max);
        Self {
            fd: p.socket.as_raw_fd(),
            rx: p.rx,
            tx: p.tx,
            fill: p.fill,
            comp: p.comp,
            in_fill: 0,
            fill_target: fill_min,
            fill_min,
            fill_max,
            quiet: 0,
            held: KernelFrames::default(),
            zero_copy: p.zero_copy,
            socket: p.socket,
            queue: p.queue,
        }
    }

    /// Keeps up to `fill_target` frames posted in the fill ring.
    #[inline]
    fn refill(&mut self, pool: &mut BufferPool) {
        let want = self
            .fill_target
            .saturating_sub(self.in_fill)
            .min(REFILL_MAX);
        if want < REFILL_STEP.min(self.fill_target / 2) {
            return;
        }
        let n = self.fill.reserve(want);
        let mut done = 0u32;
        let mut batch = [0 as BufIdx; REFILL_BATCH];
        while done < n {
            let take = ((n - done) as usize).min(REFILL_BATCH);
            let got = pool.alloc_burst(&mut batch[..take]);
            for &b in &batch[..got] {
                self.fill.write(done, pool.frame_addr(b));
                self.held.insert(b);
                done += 1;
            }
            if got < take {
                break; // pool empty: post what we have, try again next poll
            }
        }
        if done > 0 {
            self.fill.submit(done);
            self.in_fill += done;
            if self.fill.needs_wakeup() {
                self.wake_rx();
            }
        }
    }

    /// Returns completed TX frames to the pool.
    #[inline]
    fn reap(&mut self, pool: &mut BufferPool, ctr: &PortCounters) {
        let n = self.comp.peek(COMP_BATCH);
        for i in 0..n {
            let addr = self.comp.read(i);
            match pool.locate(addr) {
                Some((b, _)) if self.held.remove(b) => pool.free(b),
                _ => ctr.drop(DropReason::BadTxCompletion, 1),
            }
        }
        if n > 0 {
            self.comp.release(n);
        }
    }

    #[inline]
    fn receive(&mut self, pool: &mut BufferPool, out: &mut Burst, ctr: &PortCounters, csum: bool) {
        self.refill(pool);
        let room = u32::try_from(out.room()).unwrap_or(u32::MAX);
        let n = self.rx.peek(room);
        for i in 0..n {
            let d = self.rx.read(i);
            let len = d.len as usize;
            match pool.locate(d.addr) {
                Some((b, off))
                    if usize::from(off) + len <= pool.frame_size() && self.held.remove(b) =>
                {
                    pool.set_meta(b, usize::from(off), len);
                    if csum {
                        let _ = checksum::complete_partial(pool.packet_mut(b));
                    }
                    out.push(b);
                }
                // A kernel bug, a foreign UMEM address, or a frame this port never posted: count
                // it, never follow it.
                _ => ctr.drop(DropReason::BadRxDesc, 1),
            }
        }
        if n > 0 {
            self.rx.release(n);
            self.in_fill = self.in_fill.saturating_sub(n);
            self.quiet = 0;
            // Grow when the kernel has used up more than half of what is posted: what waits in
            // the RX ring is already received, so `in_fill` alone (which still counts it) never
            // falls that low while bursts keep coming, and the target would stay at its start.
            if self.fill_target < self.fill_max && self.fill.unconsumed() < self.fill_target / 2 {
                self.fill_target = (self.fill_target * 2).min(self.fill_max);
            }
        } else if self.fill_target > self.fill_min {
            self.quiet += 1;
            if self.quiet >= QUIET_POLLS {
                self.quiet = 0;
                self.fill_target = (self.fill_target / 2).max(self.fill_min);
            }
        }
    }

    #[inline]
    fn transmit(&mut self, pool: &mut BufferPool, pkts: &[BufIdx], ctr: &PortCounters) -> usize {
        self.reap(pool, ctr);
        let want = u32::try_from(pkts.len()).unwrap_or(u32::MAX);
        let n = self.tx.reserve(want);
        for (i, &b) in (0..n).zip(pkts) {
            let m = pool.meta(b);
            self.tx.write(
                i,
                XdpDesc {
                    addr: pool.frame_addr(b) + u64::from(m.offset),
                    len: u32::from(m.len),
                    options: 0,
                },
            );
            self.held.insert(b);
        }
        if n > 0 {
            self.tx.submit(n);
        }
        n as usize
    }

    #[inline]
    fn flush(&mut self, pool: &mut BufferPool, ctr: &PortCounters) {
        // In copy mode the kernel sends only inside sendto, a batch per call; in zero-copy mode
        // only when it asks for a wakeup.
        if self.tx.unconsumed() > 0 && (!self.zero_copy || self.tx.needs_wakeup()) {
            self.kick_tx();
        }
        self.reap(pool, ctr);
        self.refill(pool);
    }

    fn wake_rx(&self) {
        // SAFETY: a zero-length, non-blocking recvfrom on our socket: the documented AF_XDP way
        // to make the kernel process the fill ring. No buffer is passed.
        unsafe {
            libc::recvfrom(
                self.fd,
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }

    fn kick_tx(&self) {
        // SAFETY: a zero-length, non-blocking sendto on our socket: the documented AF_XDP TX
        // kick. Errors (EAGAIN, EBUSY, ENOBUFS: the kernel is busy; ENETDOWN) leave the
        // descriptors queued for the next kick, so they are not reported.
        unsafe {
            libc::sendto(
                self.fd,
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
    }
}

/// How to open a port.
#[derive(Clone, Copy, Debug)]
pub struct PortOptions {
    /// Try native XDP before generic.
    pub allow_native: bool,
    /// Complete partial TCP/UDP checksums on receive (see `vwire_dataplane::checksum`).
    pub complete_checksums: bool,
    /// The XDP program to attach: by default every frame of a served queue goes to the port,
    /// through the program all ports of the namespace share ([`XdpProgram::SharedRedirect`]);
    /// the same from a program of the interface's own ([`XdpProgram::QueueRedirect`]); on an
    /// uplink shared with the host, only vwire's tunnel traffic ([`XdpProgram::Steer`]).
    pub program: XdpProgram,
    /// Frames each queue keeps posted in its fill ring, at most (clamped to
    /// 32..=[`FILL_TARGET`]): what the port takes from its worker's pool for receiving.
    /// [`FILL_TARGET`] for a port that must absorb line-rate bursts alone.
    pub fill_target: u32,
    /// Frames each queue keeps posted while idle (32..=`fill_target`). Below `fill_target`, the
    /// queue starts here and doubles its target whenever receiving drains the ring below half
    /// of it, and halves it again once idle: a worker serving many ports from one pool (NSM
    /// connections) lends its frames to the busy ones. Equal to `fill_target` (the default):
    /// a fixed target.
    pub fill_idle: u32,
    /// The sockets' ring sizes; the fill ring should hold twice `fill_target`.
    pub rings: RingSizes,
}

impl Default for PortOptions {
    fn default() -> Self {
        Self {
            allow_native: true,
            complete_checksums: true,
            program: XdpProgram::SharedRedirect,
            fill_target: FILL_TARGET,
            fill_idle: FILL_TARGET,
            rings: RingSizes::DEFAULT,
        }
    }
}

/// Opens an AF_XDP port named `name` on `ifname`: attaches the XDP program chosen in `opts`
/// (loading it first, unless it is the namespace's shared program and another port holds it),
/// then opens one socket per receive queue, all sharing (and if needed registering) `umem`, and
/// steers each queue to its socket. `ifname` is looked up, and the shared program chosen, in the
/// calling thread's network namespace. On failure nothing is left behind: the program detaches
/// and the port's map entries are removed.
pub fn open(
    name: &str,
    ifname: &str,
    umem: &Umem,
    opts: PortOptions,
) -> Result<AfXdpPort, AfXdpError> {
    let ifindex = ifindex(ifname).ok_or_else(|| AfXdpError::NoSuchInterface(ifname.to_string()))?;
    let nqueues = rx_queue_count(ifname);
    let attachment =
        XdpAttachment::attach_program(ifname, ifindex, nqueues, opts.allow_native, &opts.program)?;
    let native = attachment.mode() == XdpMode::Native;
    let queues = (0..nqueues)
        .map(|q| {
            let parts = open_queue(ifname, ifindex, q, umem, native, opts.rings)?;
            attachment
                .insert(q, parts.socket.as_raw_fd())
                .map_err(|source| AfXdpError::Bpf {
                    ifname: ifname.to_string(),
                    what: "inserting the socket into the XSKMAP",
                    source,
                })?;
            Ok(XskQueue::new(parts, (opts.fill_idle, opts.fill_target)))
        })
        .collect::<Result<Vec<_>, AfXdpError>>()?;
    Ok(AfXdpPort::new(Parts {
        name: name.to_string(),
        ifname: ifname.to_string(),
        queues,
        attachment,
        complete_checksums: opts.complete_checksums,
    }))
}

/// What [`AfXdpPort::new`] is built from (see [`open`]).
pub(crate) struct Parts {
    pub(crate) name: String,
    pub(crate) ifname: String,
    pub(crate) queues: Vec<XskQueue>,
    pub(crate) attachment: XdpAttachment,
    pub(crate) complete_checksums: bool,
}

/// An AF_XDP port. Create it with [`open`].
pub struct AfXdpPort {
    // hot: accessed by the worker every burst
    queues: Vec<XskQueue>,
    /// The queue the next receive burst starts at (round robin, so no queue starves).
    next_rx: usize,
    complete_checksums: bool,
    // cold: control plane only. Dropped after the queues: the link (detaching the program),
    // then the program of the interface's own or the interface's entries in the shared maps.
    attachment: XdpAttachment,
    stats: Arc<XskStats>,
    name: String,
    ifname: String,
}

impl AfXdpPort {
    pub(crate) fn new(p: Parts) -> Self {
        let stats = Arc::new(XskStats {
            fds: p.queues.iter().map(|q| Arc::downgrade(&q.socket)).collect(),
        });
        Self {
            queues: p.queues,
            next_rx: 0,
            complete_checksums: p.complete_checksums,
            attachment: p.attachment,
            stats,
            name: p.name,
            ifname: p.ifname,
        }
    }

    /// The interface served.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// How the XDP program is attached.
    pub fn xdp_mode(&self) -> XdpMode {
        self.attachment.mode()
    }

    /// The interface's slots in the shared program's XSKMAP, if the port uses the shared
    /// program ([`XdpProgram::SharedRedirect`]).
    pub fn shared_slots(&self) -> Option<SlotRange> {
        self.attachment.shared_slots()
    }

    /// True if the sockets are bound in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.queues.first().is_some_and(|q| q.zero_copy)
    }

    /// The interface queues served, one socket each.
    pub fn queue_ids(&self) -> Vec<u32> {
        self.queues.iter().map(|q| q.queue).collect()
    }
}

impl Port for AfXdpPort {
    fn name(&self) -> &str {
        &self.name
    }

    #[inline]
    fn rx_burst(&mut self, pool: &mut BufferPool, out: &mut Burst, ctr: &PortCounters) -> usize {
        let before = out.len();
        let nq = self.queues.len();
        for k in 0..nq {
            if out.room() == 0 {
                break;
            }
            let q = (self.next_rx + k) % nq;
            self.queues[q].receive(pool, out, ctr, self.complete_checksums);
        }
        self.next_rx = (self.next_rx + 1) % nq.max(1);
        out.len() - before
    }

    #[inline]
    fn tx_burst(&mut self, pool: &mut BufferPool, pkts: &[BufIdx], ctr: &PortCounters) -> usize {
        match self.queues.first_mut() {
            Some(q) => q.transmit(pool, pkts, ctr),
            None => 0,
        }
    }

    #[inline]
    fn flush(&mut self, pool: &mut BufferPool, ctr: &PortCounters) {
        for q in &mut self.queues {
            q.flush(pool, ctr);
        }
    }

    fn wait_fds(&self, out: &mut Vec<RawFd>) {
        out.extend(self.queues.iter().map(|q| q.fd));
    }

    fn attach(&mut self, pool: &BufferPool) {
        for q in &mut self.queues {
            q.held = KernelFrames::for_pool(pool.capacity());
        }
    }

    /// Closes the sockets (closing an AF_XDP socket waits until the kernel no longer uses its
    /// rings or its UMEM: an RCU grace period, which is why this runs on the control thread),
    /// then returns the frames they held. The XDP program goes when the port is dropped.
    fn shutdown(&mut self) -> Vec<BufIdx> {
        let mut frames = Vec::new();
        for mut q in self.queues.drain(..) {
            let held = std::mem::take(&mut q.held);
            drop(q);
            held.collect_into(&mut frames);
        }
        frames
    }

    fn stats(&self) -> Option<Arc<dyn PortStats>> {
        Some(self.stats.clone())
    }
}
