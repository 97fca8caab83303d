//! An in-memory port pair: what one transmits, the other receives. No kernel is involved, so the
//! engine's own cost can be measured and tested in isolation.
//!
//! Both ports of a pair must be on the same worker (they carry [`BufIdx`] values of that worker's
//! pool). The rings between them are single-producer single-consumer with fixed capacity.

use std::sync::atomic::{
    AtomicU32, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::Arc;

use crate::buffer::{BufIdx, BufferPool, HEADROOM};
use crate::counters::PortCounters;
use crate::port::{Burst, Port};

/// A bounded SPSC ring of buffer indices.
#[derive(Debug)]
struct Ring {
    slots: Box<[AtomicU32]>,
    mask: usize,
    /// Next slot to read; written by the consumer only.
    head: AtomicUsize,
    /// Next slot to write; written by the producer only.
    tail: AtomicUsize,
}

impl Ring {
    fn new(capacity: usize) -> Self {
        let cap = capacity.max(2).next_power_of_two();
        Self {
            slots: (0..cap).map(|_| AtomicU32::new(0)).collect(),
            mask: cap - 1,
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
        }
    }

    fn push(&self, bufs: &[BufIdx]) -> usize {
        let tail = self.tail.load(Relaxed);
        // Acquire pairs with the consumer's Release of head: its reads of the slots are done.
        let head = self.head.load(Acquire);
        let n = bufs.len().min(self.slots.len() - tail.wrapping_sub(head));
        for (i, &b) in bufs[..n].iter().enumerate() {
            self.slots[(tail + i) & self.mask].store(b, Relaxed);
        }
        // Release pairs with the consumer's Acquire of tail: the slots are written.
        self.tail.store(tail.wrapping_add(n), Release);
        n
    }

    fn pop(&self, out: &mut Burst) -> usize {
        let head = self.head.load(Relaxed);
        // Acquire pairs with the producer's Release of tail.
        let tail = self.tail.load(Acquire);
        let n = out.room().min(tail.wrapping_sub(head));
        for i in 0..n {
            out.push(self.slots[(head + i) & self.mask].load(Relaxed));
        }
        // Release pairs with the producer's Acquire of head.
        self.head.store(head.wrapping_add(n), Release);
        n
    }

    fn len(&self) -> usize {
        self.tail
            .load(Acquire)
            .wrapping_sub(self.head.load(Acquire))
    }
}

/// One end of an in-memory pair.
#[derive(Debug)]
pub struct MemPort {
    name: String,
    inbox: Arc<Ring>,
    outbox: Arc<Ring>,
}

/// Two connected ports with `capacity` slots in each direction.
pub fn mem_pair(a: &str, b: &str, capacity: usize) -> (MemPort, MemPort) {
    let ab = Arc::new(Ring::new(capacity));
    let ba = Arc::new(Ring::new(capacity));
    (
        MemPort {
            name: a.to_string(),
            inbox: ba.clone(),
            outbox: ab.clone(),
        },
        MemPort {
            name: b.to_string(),
            inbox: ab,
            outbox: ba,
        },
    )
}

/// A port wired to itself with `capacity` slots: what it transmits, it receives again. For
/// loops through one worker (e.g. a tunnel uplink whose encapsulated packets come back to be
/// decapsulated).
pub fn mem_loop(name: &str, capacity: usize) -> MemPort {
    let ring = Arc::new(Ring::new(capacity));
    MemPort {
        name: name.to_string(),
        inbox: ring.clone(),
        outbox: ring,
    }
}

impl MemPort {
    /// Puts `count` copies of `frame` into this port's receive queue, as if the peer had sent
    /// them. Returns how many fit (limited by the ring and the pool).
    pub fn inject(&self, pool: &mut BufferPool, frame: &[u8], count: usize) -> usize {
        let mut done = 0;
        while done < count {
            let Some(b) = pool.alloc() else { break };
            pool.set_meta(b, HEADROOM, frame.len());
            pool.packet_mut(b).copy_from_slice(frame);
            if self.inbox.push(&[b]) == 0 {
                pool.free(b);
                break;
            }
            done += 1;
        }
        done
    }

    /// Packets waiting in this port's receive queue.
    pub fn pending_rx(&self) -> usize {
        self.inbox.len()
    }
}

impl Port for MemPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, _pool: &mut BufferPool, out: &mut Burst, _ctr: &PortCounters) -> usize {
        self.inbox.pop(out)
    }

    fn tx_burst(&mut self, _pool: &mut BufferPool, pkts: &[BufIdx], _ctr: &PortCounters) -> usize {
        self.outbox.push(pkts)
    }

    fn flush(&mut self, _pool: &mut BufferPool, _ctr: &PortCounters) {}

    /// Frees what waits in this port's receive queue (its peer's sends stay with the peer).
    fn release(&mut self, pool: &mut BufferPool) {
        let mut burst = Burst::with_capacity(crate::port::MAX_BURST);
        loop {
            burst.clear();
            if self.inbox.pop(&mut burst) == 0 {
                break;
            }
            pool.free_burst(burst.as_slice());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_one_end_sends_the_other_receives() {
        let mut pool = BufferPool::new(16).unwrap();
        let (mut a, mut b) = mem_pair("a", "b", 4);
        let ctr = PortCounters::default();
        let bufs = [pool.alloc().unwrap(), pool.alloc().unwrap()];
        assert_eq!(a.tx_burst(&mut pool, &bufs, &ctr), 2);
        let mut out = Burst::with_capacity(8);
        assert_eq!(b.rx_burst(&mut pool, &mut out, &ctr), 2);
        assert_eq!(out.as_slice(), &bufs);
        assert_eq!(a.rx_burst(&mut pool, &mut out, &ctr), 0);
    }

    #[test]
    fn a_full_ring_takes_only_what_fits() {
        let mut pool = BufferPool::new(16).unwrap();
        let (mut a, _b) = mem_pair("a", "b", 4);
        let ctr = PortCounters::default();
        let mut bufs = [0; 6];
        pool.alloc_burst(&mut bufs);
        assert_eq!(a.tx_burst(&mut pool, &bufs, &ctr), 4);
    }

    #[test]
    fn a_loop_receives_what_it_sends() {
        let mut pool = BufferPool::new(16).unwrap();
        let mut p = mem_loop("l", 4);
        let ctr = PortCounters::default();
        let bufs = [pool.alloc().unwrap(), pool.alloc().unwrap()];
        assert_eq!(p.tx_burst(&mut pool, &bufs, &ctr), 2);
        let mut out = Burst::with_capacity(8);
        assert_eq!(p.rx_burst(&mut pool, &mut out, &ctr), 2);
        assert_eq!(out.as_slice(), &bufs);
    }

    #[test]
    fn inject_stops_when_the_ring_is_full() {
        let mut pool = BufferPool::new(16).unwrap();
        let (a, _b) = mem_pair("a", "b", 4);
        assert_eq!(a.inject(&mut pool, &[1, 2, 3], 10), 4);
        assert_eq!(a.pending_rx(), 4);
        assert_eq!(pool.available(), 12);
    }
}
