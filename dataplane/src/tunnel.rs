//! Tunnel stages of the packet path, independent of any tunnel format.
//!
//! A tunnel joins a *local* port (a memif, a kernel veth behind AF_XDP, ...) to an *uplink* port
//! that carries the encapsulated traffic of many tunnels:
//! - packets received on the local port go through the tunnel's [`Encap`], which prepends the
//!   outer headers into the buffer headroom, then out of the uplink
//!   ([`crate::table::Action::Encap`]);
//! - packets received on the uplink go through the uplink's [`Decap`], which strips the outer
//!   headers, gives the packet the framing its local port expects, and names that port
//!   ([`crate::table::Action::Decap`]); the worker then sends each packet to the port it was
//!   given, grouped by port.
//!
//! The formats (VXLAN, SRv6) live in `vwire-mechanisms`, which implements these traits; this
//! crate does not know them. The objects are built on the control thread, put into a
//! [`crate::table::ForwardingTable`] as `Arc<dyn Encap>` / `Arc<dyn Decap>`, and are immutable
//! from then on: a tunnel change publishes a new table.
//!
//! Contract for implementations (they run on the worker, once per packet):
//! - no allocation, lock, logging or system call; no panic on any packet content (they get
//!   bytes from the network);
//! - work in place inside the packet's frame: move the packet's start and length with
//!   [`BufferPool::set_meta`], write headers with [`BufferPool::frame_mut`]. A packet starts at
//!   [`crate::buffer::HEADROOM`] or later, so up to that many bytes can be prepended;
//! - refuse a packet by returning a [`DropReason`]; the caller frees the buffer and counts it.
//!
//! The per-burst methods are what the worker calls, one virtual call per burst. Their default
//! bodies loop over the per-packet method; a default method is compiled once per implementing
//! type, so the per-packet call inside it is static and can be inlined. Override them to keep
//! state across a burst (e.g. a one-entry lookup cache).

use std::fmt::Debug;

use crate::buffer::{BufIdx, BufferPool};
use crate::counters::{DropReason, DropTally};
use crate::port::{Burst, PortId, MAX_BURST};

/// Index of a tunnel in a [`crate::table::ForwardingTable`].
pub type TunnelId = u16;

/// Per-packet egress ports written by [`Decap::decap_burst`]: entry `i` is the egress of the
/// `i`-th packet left in the burst.
pub type EgressIds = [PortId; MAX_BURST];

/// Encapsulation of the packets a tunnel's local port receives. See the module docs for the
/// contract.
pub trait Encap: Send + Sync + Debug {
    /// Encapsulates packet `b` in place (outer headers into the headroom, metadata updated), or
    /// says why not. On error the packet's bytes may have changed; it is dropped anyway.
    fn encap(&self, pool: &mut BufferPool, b: BufIdx) -> Result<(), DropReason>;

    /// Encapsulates every packet of `burst`. Refused packets leave the burst (order kept), are
    /// freed into `pool` and counted in `drops`.
    #[inline]
    fn encap_burst(&self, pool: &mut BufferPool, burst: &mut Burst, drops: &mut DropTally) {
        encap_each(pool, burst, drops, |pool, b| self.encap(pool, b));
    }
}

/// Decapsulation of the packets an uplink port receives. See the module docs for the contract.
pub trait Decap: Send + Sync + Debug {
    /// Strips the outer headers of packet `b` in place, applies the framing its egress port
    /// expects, and returns that port; or says why the packet is dropped. On error the packet's
    /// bytes and metadata may have changed; it is dropped anyway.
    fn decap(&self, pool: &mut BufferPool, b: BufIdx) -> Result<PortId, DropReason>;

    /// Decapsulates every packet of `burst`. Refused packets leave the burst (order kept), are
    /// freed into `pool` and counted in `drops`; `egress[i]` is the egress port of the `i`-th
    /// packet left.
    #[inline]
    fn decap_burst(
        &self,
        pool: &mut BufferPool,
        burst: &mut Burst,
        egress: &mut EgressIds,
        drops: &mut DropTally,
    ) {
        decap_each(pool, burst, egress, drops, |pool, b| self.decap(pool, b));
    }
}

/// The body of [`Encap::encap_burst`], for implementations that override it: runs `f` on every
/// packet; those it refuses leave the burst, are freed and tallied.
#[inline]
pub fn encap_each(
    pool: &mut BufferPool,
    burst: &mut Burst,
    drops: &mut DropTally,
    mut f: impl FnMut(&mut BufferPool, BufIdx) -> Result<(), DropReason>,
) {
    burst.retain(|b| match f(pool, b) {
        Ok(()) => true,
        Err(reason) => {
            pool.free(b);
            drops.add(reason);
            false
        }
    });
}

/// The body of [`Decap::decap_burst`], for implementations that override it: runs `f` on every
/// packet and records the port it returns; packets it refuses leave the burst, are freed and
/// tallied.
#[inline]
pub fn decap_each(
    pool: &mut BufferPool,
    burst: &mut Burst,
    egress: &mut EgressIds,
    drops: &mut DropTally,
    mut f: impl FnMut(&mut BufferPool, BufIdx) -> Result<PortId, DropReason>,
) {
    let mut kept = 0usize;
    burst.retain(|b| match f(pool, b) {
        Ok(port) => {
            // A burst holds at most MAX_BURST buffers, the length of `egress`.
            if let Some(slot) = egress.get_mut(kept) {
                *slot = port;
                kept += 1;
                true
            } else {
                pool.free(b);
                drops.add(DropReason::PortGone);
                false
            }
        }
        Err(reason) => {
            pool.free(b);
            drops.add(reason);
            false
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::HEADROOM;

    /// Refuses odd first bytes, sends the rest to the port named by the first byte.
    #[derive(Debug)]
    struct ByFirstByte;

    impl Decap for ByFirstByte {
        fn decap(&self, pool: &mut BufferPool, b: BufIdx) -> Result<PortId, DropReason> {
            match pool.packet(b).first() {
                Some(v) if v % 2 == 0 => Ok(PortId::from(*v)),
                _ => Err(DropReason::TunnelMalformed),
            }
        }
    }

    impl Encap for ByFirstByte {
        fn encap(&self, pool: &mut BufferPool, b: BufIdx) -> Result<(), DropReason> {
            self.decap(pool, b).map(|_| ())
        }
    }

    fn burst_of(pool: &mut BufferPool, firsts: &[u8]) -> Burst {
        let mut burst = Burst::with_capacity(MAX_BURST);
        for &v in firsts {
            let b = pool.alloc().unwrap();
            pool.set_meta(b, HEADROOM, 1);
            pool.packet_mut(b)[0] = v;
            assert!(burst.push(b));
        }
        burst
    }

    #[test]
    fn default_burst_methods_keep_order_and_free_refusals() {
        let mut pool = BufferPool::new(16).unwrap();
        let mut burst = burst_of(&mut pool, &[2, 3, 4, 5, 6]);
        let mut egress = [0; MAX_BURST];
        let mut drops = DropTally::new();
        ByFirstByte.decap_burst(&mut pool, &mut burst, &mut egress, &mut drops);
        assert_eq!(burst.len(), 3);
        assert_eq!(&egress[..3], &[2, 4, 6]);
        let firsts: Vec<u8> = burst
            .as_slice()
            .iter()
            .map(|&b| pool.packet(b)[0])
            .collect();
        assert_eq!(firsts, [2, 4, 6]);
        assert_eq!(drops.get(DropReason::TunnelMalformed), 2);
        assert_eq!(pool.available(), 16 - 3);

        let mut drops = DropTally::new();
        ByFirstByte.encap_burst(&mut pool, &mut burst, &mut drops);
        assert_eq!(burst.len(), 3);
        assert_eq!(drops.total(), 0);
        pool.free_burst(burst.as_slice());
        assert_eq!(pool.available(), 16);
    }
}
