//! The port abstraction every mechanism implements.
//!
//! A port is owned by exactly one worker, which does all of its receive and transmit work; the
//! control thread only creates it, hands it to the worker, and gets it back to drop it. So a port
//! needs no internal locking, and its methods take `&mut self` plus the worker's
//! [`BufferPool`].
//!
//! Call order within one worker loop iteration: any number of [`Port::rx_burst`] and
//! [`Port::tx_burst`] calls, then exactly one [`Port::flush`]. A port may defer its TX kick (one
//! system call per burst, not per packet) to `flush`.

use std::os::fd::RawFd;
use std::sync::Arc;

use crate::buffer::{BufIdx, BufferPool};
use crate::counters::{DropReason, PortCounters};

/// Global identifier of a port: an index into the forwarding table and the counter arrays.
pub type PortId = u16;

/// Packets per receive burst. 32 matches the copy-mode AF_XDP TX batch (the kernel sends 32
/// frames per kick) and DPDK's default burst; the engine bench showed no gain above it, and a
/// larger burst only adds latency on 2 vCPUs.
pub const BURST: usize = 32;

/// Largest burst a port is ever handed.
pub const MAX_BURST: usize = 256;

/// A fixed-capacity array of buffers, kept on the stack.
#[derive(Clone, Debug)]
pub struct Burst {
    bufs: [BufIdx; MAX_BURST],
    len: usize,
    cap: usize,
}

impl Burst {
    /// An empty burst that accepts up to `cap` buffers (clamped to 1..=[`MAX_BURST`]).
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            bufs: [0; MAX_BURST],
            len: 0,
            cap: cap.clamp(1, MAX_BURST),
        }
    }

    /// How many buffers it may hold.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// How many more buffers fit.
    #[inline]
    pub fn room(&self) -> usize {
        self.cap - self.len
    }

    /// Number of buffers held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if it holds nothing.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a buffer. Returns false (and keeps nothing) when full.
    #[inline]
    pub fn push(&mut self, b: BufIdx) -> bool {
        if self.len == self.cap {
            return false;
        }
        self.bufs[self.len] = b;
        self.len += 1;
        true
    }

    /// The buffers held.
    #[inline]
    pub fn as_slice(&self) -> &[BufIdx] {
        &self.bufs[..self.len]
    }

    /// Keeps the buffers for which `keep` returns true, in order, without allocating. `keep` sees
    /// each buffer once; the ones it rejects leave the burst, and `keep` must free them.
    #[inline]
    pub fn retain(&mut self, mut keep: impl FnMut(BufIdx) -> bool) {
        let mut kept = 0;
        for i in 0..self.len {
            let b = self.bufs[i];
            if keep(b) {
                self.bufs[kept] = b;
                kept += 1;
            }
        }
        self.len = kept;
    }

    /// Empties the burst (the buffers are not freed: the caller owns them).
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Extra per-port statistics that the control thread reads on demand, outside the worker (for
/// AF_XDP: the kernel's XDP_STATISTICS). Reading must be safe from any thread.
pub trait PortStats: Send + Sync {
    /// Appends `(name, count)` pairs of counters kept outside vwire's own counters.
    fn counters(&self, out: &mut Vec<(&'static str, u64)>);
}

/// A packet port. See the module docs for the ownership and call-order contract.
pub trait Port: Send {
    /// The port's name, for logs and metrics.
    fn name(&self) -> &str;

    /// Receives up to `out.room()` packets into `out` and returns how many were added. Buffers
    /// come from, and empty receive slots are refilled from, `pool`.
    fn rx_burst(&mut self, pool: &mut BufferPool, out: &mut Burst, ctr: &PortCounters) -> usize;

    /// Queues `pkts` for transmission and returns how many were taken. The port now owns the
    /// first `n` buffers (and returns them to `pool` once sent); the caller still owns the rest.
    fn tx_burst(&mut self, pool: &mut BufferPool, pkts: &[BufIdx], ctr: &PortCounters) -> usize;

    /// Why the packets the last [`Port::tx_burst`] did not take were not taken (counted by the
    /// worker under this reason).
    fn tx_drop_reason(&self) -> DropReason {
        DropReason::TxRingFull
    }

    /// Called once per worker loop after all bursts: kick pending TX, reap completions, refill
    /// receive resources.
    fn flush(&mut self, pool: &mut BufferPool, ctr: &PortCounters);

    /// Appends the file descriptors that become readable when packets arrive, for idle
    /// sleeping. Called right before each sleep.
    fn wait_fds(&self, _out: &mut Vec<RawFd>) {}

    /// The worker is about to sleep: turn on wakeups (e.g. clear memif's MASK_INT), then check
    /// again for work that arrived meanwhile. Returns true if there is work (the worker then
    /// does not sleep).
    fn prepare_sleep(&mut self) -> bool {
        false
    }

    /// The worker woke up (or decided not to sleep): back to polling (e.g. set MASK_INT again
    /// and drain the eventfds).
    fn after_sleep(&mut self) {}

    /// The port joins a worker whose pool is `pool` (called once, before any burst; it may
    /// allocate).
    fn attach(&mut self, _pool: &BufferPool) {}

    /// The port leaves its worker: return to `pool` the buffers the port holds that no one
    /// else can touch (e.g. queued in user-space rings). Called once, by the worker; it must not
    /// block.
    fn release(&mut self, _pool: &mut BufferPool) {}

    /// On the control thread, after the port left its worker: stop all use of the pool's memory
    /// (close sockets; this may block) and return the buffers the port still held, which the
    /// engine then gives back to the worker's pool. So a worker never blocks on a port's
    /// teardown.
    fn shutdown(&mut self) -> Vec<BufIdx> {
        Vec::new()
    }

    /// Statistics kept outside vwire's counters, readable from the control thread.
    fn stats(&self) -> Option<Arc<dyn PortStats>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_respects_capacity() {
        let mut b = Burst::with_capacity(2);
        assert!(b.push(7));
        assert!(b.push(8));
        assert!(!b.push(9));
        assert_eq!(b.as_slice(), &[7, 8]);
        assert_eq!(b.room(), 0);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(Burst::with_capacity(10_000).capacity(), MAX_BURST);
        assert_eq!(Burst::with_capacity(0).capacity(), 1);
    }
}
