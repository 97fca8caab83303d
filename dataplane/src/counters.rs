//! Per-port and per-worker counters.
//!
//! Every counter has exactly one writer: the worker that owns the port (or the worker itself for
//! [`WorkerCounters`]). Writers add with a relaxed load and store, which compiles to plain
//! instructions with no bus lock; readers on the control thread load relaxed and sum across
//! workers. A port moved between workers keeps its earlier counts in the old worker's slot, so
//! sums stay monotonic.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why the dataplane dropped a packet. The names are the `reason` label of
/// `vwire_port_drops_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DropReason {
    /// The forwarding table has no entry for the receiving port.
    NoRoute = 0,
    /// The entry names a port that is not on this worker (or no longer exists).
    PortGone,
    /// The transmit ring of the egress port was full.
    TxRingFull,
    /// The kernel returned a receive descriptor outside the buffer pool.
    BadRxDesc,
    /// The kernel completed a transmit descriptor outside the buffer pool.
    BadTxCompletion,
    /// A packet (or a peer's buffer chain) larger than a frame.
    TooLong,
    /// The egress port's link is down (e.g. a memif peer is not connected).
    LinkDown,
    /// A peer published a descriptor outside its shared memory, or an empty one.
    BadDesc,
    /// A peer published a ring index beyond the ring size.
    BadIndex,
    /// An L3 cross-connect, or a tunnel carrying IP, received something that is not IPv4 or
    /// IPv6.
    NotIp,
    /// A packet received on a tunnel uplink failed the outer-header checks (truncated, bad
    /// length or checksum, fragment, unexpected extension header, payload type that does not
    /// match the SID's behaviour).
    TunnelMalformed,
    /// A well-formed tunnel packet addressed to no tunnel of this dataplane (unknown remote and
    /// VNI, unknown local SID, another UDP port), or a tunnel action whose tunnel is gone.
    TunnelUnknown,
    /// The encapsulated frame would exceed the uplink MTU (or 65535 bytes of IP).
    TooBig,
    /// Not enough headroom in front of a packet for the encapsulation, or packet bounds outside
    /// its frame: a bug (pool frames always keep [`crate::buffer::HEADROOM`]), counted rather
    /// than panicking.
    NoHeadroom,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 14] = [
        DropReason::NoRoute,
        DropReason::PortGone,
        DropReason::TxRingFull,
        DropReason::BadRxDesc,
        DropReason::BadTxCompletion,
        DropReason::TooLong,
        DropReason::LinkDown,
        DropReason::BadDesc,
        DropReason::BadIndex,
        DropReason::NotIp,
        DropReason::TunnelMalformed,
        DropReason::TunnelUnknown,
        DropReason::TooBig,
        DropReason::NoHeadroom,
    ];

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NoRoute => "no_route",
            DropReason::PortGone => "port_gone",
            DropReason::TxRingFull => "tx_ring_full",
            DropReason::BadRxDesc => "bad_rx_desc",
            DropReason::BadTxCompletion => "bad_tx_completion",
            DropReason::TooLong => "too_long",
            DropReason::LinkDown => "link_down",
            DropReason::BadDesc => "bad_desc",
            DropReason::BadIndex => "bad_index",
            DropReason::NotIp => "not_ip",
            DropReason::TunnelMalformed => "tunnel_malformed",
            DropReason::TunnelUnknown => "tunnel_unknown",
            DropReason::TooBig => "too_big",
            DropReason::NoHeadroom => "no_headroom",
        }
    }
}

const N_REASONS: usize = DropReason::ALL.len();

#[inline]
fn bump(c: &AtomicU64, n: u64) {
    // Single writer (module docs): load + store is enough and avoids a locked instruction.
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Counters of one port on one worker.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct PortCounters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    drops: [AtomicU64; N_REASONS],
}

impl PortCounters {
    /// Counts received packets.
    #[inline]
    pub fn rx(&self, packets: u64, bytes: u64) {
        bump(&self.rx_packets, packets);
        bump(&self.rx_bytes, bytes);
    }

    /// Counts transmitted packets.
    #[inline]
    pub fn tx(&self, packets: u64, bytes: u64) {
        bump(&self.tx_packets, packets);
        bump(&self.tx_bytes, bytes);
    }

    /// Counts dropped packets.
    #[inline]
    pub fn drop(&self, reason: DropReason, packets: u64) {
        bump(&self.drops[reason as usize], packets);
    }

    /// Adds this worker's counts into `total`.
    pub fn add_to(&self, total: &mut PortTotals) {
        total.rx_packets += self.rx_packets.load(Relaxed);
        total.rx_bytes += self.rx_bytes.load(Relaxed);
        total.tx_packets += self.tx_packets.load(Relaxed);
        total.tx_bytes += self.tx_bytes.load(Relaxed);
        for (t, c) in total.drops.iter_mut().zip(&self.drops) {
            *t += c.load(Relaxed);
        }
    }
}

/// A port's counters summed over all workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortTotals {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Drops, indexed by `DropReason as usize`.
    pub drops: [u64; N_REASONS],
}

impl PortTotals {
    /// What was counted since `base` was taken (for a port id that is reused: its slot keeps
    /// the earlier port's counts).
    pub fn since(&self, base: &PortTotals) -> PortTotals {
        let mut t = PortTotals {
            rx_packets: self.rx_packets.saturating_sub(base.rx_packets),
            rx_bytes: self.rx_bytes.saturating_sub(base.rx_bytes),
            tx_packets: self.tx_packets.saturating_sub(base.tx_packets),
            tx_bytes: self.tx_bytes.saturating_sub(base.tx_bytes),
            drops: self.drops,
        };
        for (d, b) in t.drops.iter_mut().zip(&base.drops) {
            *d = d.saturating_sub(*b);
        }
        t
    }

    /// Drops for one reason.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }
}

/// Drops tallied on the stack during one burst, then added to a port's counters at once
/// ([`DropTally::drain_into`]): stages that refuse packets one by one (tunnel encapsulation and
/// decapsulation) count here, so they need no access to the counters and the counters see one
/// add per reason per burst.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropTally {
    counts: [u32; N_REASONS],
    total: u32,
}

impl DropTally {
    /// An empty tally.
    pub const fn new() -> Self {
        Self {
            counts: [0; N_REASONS],
            total: 0,
        }
    }

    /// Counts one packet dropped for `reason`.
    #[inline]
    pub fn add(&mut self, reason: DropReason) {
        let c = &mut self.counts[reason as usize];
        *c = c.wrapping_add(1);
        self.total = self.total.wrapping_add(1);
    }

    /// Packets counted for `reason`.
    pub fn get(&self, reason: DropReason) -> u32 {
        self.counts[reason as usize]
    }

    /// Packets counted for any reason.
    #[inline]
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Adds the tally to `ctr` and empties it. Costs one branch when nothing was dropped.
    #[inline]
    pub fn drain_into(&mut self, ctr: &PortCounters) {
        if self.total == 0 {
            return;
        }
        for (c, r) in self.counts.iter_mut().zip(DropReason::ALL) {
            if *c != 0 {
                ctr.drop(r, u64::from(*c));
                *c = 0;
            }
        }
        self.total = 0;
    }
}

/// Counters of one worker: its time split and one [`PortCounters`] slot per possible port.
#[derive(Debug)]
pub struct WorkerCounters {
    busy_ns: AtomicU64,
    idle_ns: AtomicU64,
    loops: AtomicU64,
    pool_free: AtomicU64,
    ports: Box<[PortCounters]>,
}

impl WorkerCounters {
    /// Counters for up to `max_ports` ports.
    pub fn new(max_ports: usize) -> Self {
        Self {
            busy_ns: AtomicU64::new(0),
            idle_ns: AtomicU64::new(0),
            loops: AtomicU64::new(0),
            pool_free: AtomicU64::new(0),
            ports: (0..max_ports).map(|_| PortCounters::default()).collect(),
        }
    }

    /// The slot of port `id`, if `id` is in range.
    #[inline]
    pub fn port(&self, id: usize) -> Option<&PortCounters> {
        self.ports.get(id)
    }

    /// Counts time spent doing packet work.
    #[inline]
    pub fn busy(&self, ns: u64) {
        bump(&self.busy_ns, ns);
    }

    /// Counts time spent polling with nothing to do, or sleeping.
    #[inline]
    pub fn idle(&self, ns: u64) {
        bump(&self.idle_ns, ns);
    }

    /// Counts one loop iteration.
    #[inline]
    pub fn loop_done(&self) {
        bump(&self.loops, 1);
    }

    /// Records the number of free buffers in the worker's pool (a gauge, set once per loop).
    #[inline]
    pub fn pool_free(&self, n: usize) {
        self.pool_free.store(n as u64, Relaxed);
    }

    /// Free buffers in the worker's pool at its last loop.
    pub fn pool_free_buffers(&self) -> u64 {
        self.pool_free.load(Relaxed)
    }

    /// (busy ns, idle ns, loop iterations) so far.
    pub fn time(&self) -> (u64, u64, u64) {
        (
            self.busy_ns.load(Relaxed),
            self.idle_ns.load(Relaxed),
            self.loops.load(Relaxed),
        )
    }
}

/// Sums port `id` over a set of workers.
pub fn port_totals<'a>(
    workers: impl IntoIterator<Item = &'a WorkerCounters>,
    id: usize,
) -> PortTotals {
    let mut t = PortTotals::default();
    for w in workers {
        if let Some(p) = w.port(id) {
            p.add_to(&mut t);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_over_workers() {
        let a = WorkerCounters::new(4);
        let b = WorkerCounters::new(4);
        a.port(1).unwrap().rx(3, 300);
        b.port(1).unwrap().rx(2, 100);
        b.port(1).unwrap().drop(DropReason::TxRingFull, 5);
        a.port(2).unwrap().tx(9, 9);
        let t = port_totals([&a, &b], 1);
        assert_eq!((t.rx_packets, t.rx_bytes), (5, 400));
        assert_eq!(t.drops(DropReason::TxRingFull), 5);
        assert_eq!(t.tx_packets, 0);
        assert_eq!(port_totals([&a, &b], 9), PortTotals::default());
    }

    #[test]
    fn a_tally_drains_into_the_counters_once() {
        let ctr = PortCounters::default();
        let mut t = DropTally::new();
        t.drain_into(&ctr);
        t.add(DropReason::TooBig);
        t.add(DropReason::TooBig);
        t.add(DropReason::TunnelUnknown);
        assert_eq!((t.get(DropReason::TooBig), t.total()), (2, 3));
        t.drain_into(&ctr);
        assert_eq!(t, DropTally::new());
        t.drain_into(&ctr);
        let mut total = PortTotals::default();
        ctr.add_to(&mut total);
        assert_eq!(total.drops(DropReason::TooBig), 2);
        assert_eq!(total.drops(DropReason::TunnelUnknown), 1);
        assert_eq!(total.drops(DropReason::NoRoute), 0);
    }

    #[test]
    fn reason_names_are_unique() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
