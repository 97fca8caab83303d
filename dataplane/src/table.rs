//! The forwarding table: what a worker does with a packet received on a port.
//!
//! The table is immutable once built. The control thread builds a new one and publishes it
//! through [`crate::rcu::RcuCell`]; workers look up by receiving [`PortId`] with one bounds-checked
//! array index. Cross-connects are the only action for now, optionally with an L3 [`Rewrite`]
//! (IP vWires between an Ethernet port and an IP-only port); tunnel actions come later as new
//! [`Action`] variants.

use crate::buffer::{BufIdx, BufferPool};
use crate::port::PortId;

const ETH_HDR: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];

/// What a cross-connect does to a packet's framing on its way to the egress port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rewrite {
    /// Nothing: an L2 cross-connect, or IP to IP.
    #[default]
    None,
    /// Ethernet in, IP out: remove the 14-byte Ethernet header. Frames that carry neither IPv4
    /// nor IPv6 (ARP, VLAN tags, ...) are dropped and counted `not_ip`.
    StripEth,
    /// IP in, Ethernet out: prepend an Ethernet header with these addresses and the EtherType of
    /// the packet's IP version. Anything whose version nibble is neither 4 nor 6 is dropped and
    /// counted `not_ip`.
    AddEth {
        /// Destination MAC.
        dst: [u8; 6],
        /// Source MAC.
        src: [u8; 6],
    },
}

impl Rewrite {
    /// Rewrites packet `b` in place. Returns false if the packet does not qualify (see the
    /// variants); the caller drops it and counts `not_ip`. No allocation; O(1) per packet.
    #[inline]
    pub fn apply(self, pool: &mut BufferPool, b: BufIdx) -> bool {
        let m = pool.meta(b);
        let (offset, len) = (usize::from(m.offset), usize::from(m.len));
        match self {
            Rewrite::None => true,
            Rewrite::StripEth => {
                let pkt = pool.packet(b);
                let ip = match pkt.get(12..ETH_HDR) {
                    Some(t) => t == ETHERTYPE_IPV4 || t == ETHERTYPE_IPV6,
                    None => false,
                };
                if ip {
                    pool.set_meta(b, offset + ETH_HDR, len - ETH_HDR);
                }
                ip
            }
            Rewrite::AddEth { dst, src } => {
                let ethertype = match pool.packet(b).first().map(|v| v >> 4) {
                    Some(4) => ETHERTYPE_IPV4,
                    Some(6) => ETHERTYPE_IPV6,
                    _ => return false,
                };
                let Some(start) = offset.checked_sub(ETH_HDR) else {
                    return false; // no headroom: cannot happen with pool frames (HEADROOM)
                };
                let Some(hdr) = pool.frame_mut(b).get_mut(start..offset) else {
                    return false;
                };
                hdr[..6].copy_from_slice(&dst);
                hdr[6..12].copy_from_slice(&src);
                hdr[12..].copy_from_slice(&ethertype);
                pool.set_meta(b, start, len + ETH_HDR);
                true
            }
        }
    }
}

/// What to do with packets received on a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Action {
    /// No entry: drop and count `no_route`.
    #[default]
    Drop,
    /// Cross-connect: send the packet out of `tx`, after `rewrite`.
    Xconnect {
        /// The egress port.
        tx: PortId,
        /// The framing change on the way.
        rewrite: Rewrite,
    },
}

/// Errors of this module.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    /// a port id beyond the table size
    #[error("port id {0} is beyond the table size {1}")]
    PortOutOfRange(PortId, usize),
    /// a port is already cross-connected
    #[error("port id {0} already has a forwarding entry")]
    Duplicate(PortId),
}

/// Forwarding entries indexed by receiving port.
#[derive(Clone, Debug)]
pub struct ForwardingTable {
    by_rx_port: Box<[Action]>,
}

impl ForwardingTable {
    /// An empty table for ports `0..max_ports`.
    pub fn new(max_ports: usize) -> Self {
        Self {
            by_rx_port: vec![Action::Drop; max_ports].into_boxed_slice(),
        }
    }

    /// The action for packets received on `rx`.
    #[inline]
    pub fn lookup(&self, rx: PortId) -> Action {
        self.by_rx_port
            .get(usize::from(rx))
            .copied()
            .unwrap_or(Action::Drop)
    }

    /// Adds a two-way L2 cross-connect between `a` and `b`.
    pub fn add_xconnect(&mut self, a: PortId, b: PortId) -> Result<(), TableError> {
        self.add_xconnect_with(a, b, Rewrite::None, Rewrite::None)
    }

    /// Adds a two-way cross-connect between `a` and `b` that applies `a_to_b` to what `a`
    /// receives and `b_to_a` to what `b` receives.
    pub fn add_xconnect_with(
        &mut self,
        a: PortId,
        b: PortId,
        a_to_b: Rewrite,
        b_to_a: Rewrite,
    ) -> Result<(), TableError> {
        for p in [a, b] {
            match self.by_rx_port.get(usize::from(p)) {
                None => return Err(TableError::PortOutOfRange(p, self.by_rx_port.len())),
                Some(Action::Drop) => {}
                Some(_) => return Err(TableError::Duplicate(p)),
            }
        }
        self.by_rx_port[usize::from(a)] = Action::Xconnect {
            tx: b,
            rewrite: a_to_b,
        };
        self.by_rx_port[usize::from(b)] = Action::Xconnect {
            tx: a,
            rewrite: b_to_a,
        };
        Ok(())
    }

    /// Removes every entry that receives on, or sends to, `port`.
    pub fn remove_port(&mut self, port: PortId) {
        for (rx, action) in self.by_rx_port.iter_mut().enumerate() {
            let hit = match *action {
                Action::Drop => false,
                Action::Xconnect { tx, .. } => tx == port,
            };
            if hit || rx == usize::from(port) {
                *action = Action::Drop;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xconnect_is_two_way_and_removable() {
        let mut t = ForwardingTable::new(8);
        t.add_xconnect(1, 2).unwrap();
        let l2 = |tx| Action::Xconnect {
            tx,
            rewrite: Rewrite::None,
        };
        assert_eq!(t.lookup(1), l2(2));
        assert_eq!(t.lookup(2), l2(1));
        assert_eq!(t.lookup(3), Action::Drop);
        assert_eq!(t.lookup(500), Action::Drop);
        assert_eq!(t.add_xconnect(2, 3), Err(TableError::Duplicate(2)));
        assert_eq!(t.add_xconnect(3, 9), Err(TableError::PortOutOfRange(9, 8)));
        t.remove_port(2);
        assert_eq!(t.lookup(1), Action::Drop);
        assert_eq!(t.lookup(2), Action::Drop);
        let eth = Rewrite::AddEth {
            dst: [2; 6],
            src: [4; 6],
        };
        t.add_xconnect_with(4, 5, Rewrite::StripEth, eth).unwrap();
        assert_eq!(
            t.lookup(4),
            Action::Xconnect {
                tx: 5,
                rewrite: Rewrite::StripEth
            }
        );
        assert_eq!(
            t.lookup(5),
            Action::Xconnect {
                tx: 4,
                rewrite: eth
            }
        );
    }

    fn pool_with(bytes: &[u8]) -> (BufferPool, BufIdx) {
        let mut pool = BufferPool::new(4).unwrap();
        let b = pool.alloc().unwrap();
        let off = crate::buffer::HEADROOM;
        pool.frame_mut(b)[off..off + bytes.len()].copy_from_slice(bytes);
        pool.set_meta(b, off, bytes.len());
        (pool, b)
    }

    #[test]
    fn strip_and_add_ethernet_round_trip() {
        let ip4 = [
            0x45u8, 0, 0, 20, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let (mut pool, b) = pool_with(&ip4);
        let eth = Rewrite::AddEth {
            dst: [0x02, 1, 2, 3, 4, 5],
            src: [0x02, 9, 9, 9, 9, 9],
        };
        assert!(eth.apply(&mut pool, b));
        let framed = pool.packet(b).to_vec();
        assert_eq!(&framed[..6], &[0x02, 1, 2, 3, 4, 5]);
        assert_eq!(&framed[6..12], &[0x02, 9, 9, 9, 9, 9]);
        assert_eq!(&framed[12..14], &ETHERTYPE_IPV4);
        assert_eq!(&framed[14..], &ip4);
        assert!(Rewrite::StripEth.apply(&mut pool, b));
        assert_eq!(pool.packet(b), &ip4);
        // IPv6 gets its own EtherType.
        let mut ip6 = [0u8; 40];
        ip6[0] = 0x60;
        let (mut pool, b) = pool_with(&ip6);
        assert!(eth.apply(&mut pool, b));
        assert_eq!(&pool.packet(b)[12..14], &ETHERTYPE_IPV6);
    }

    #[test]
    fn non_ip_is_refused_unchanged() {
        let mut arp = [0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let (mut pool, b) = pool_with(&arp);
        assert!(!Rewrite::StripEth.apply(&mut pool, b));
        assert_eq!(pool.packet(b), &arp);
        let (mut pool, b) = pool_with(&[0u8; 5]);
        assert!(!Rewrite::StripEth.apply(&mut pool, b));
        let eth = Rewrite::AddEth {
            dst: [2; 6],
            src: [4; 6],
        };
        assert!(!eth.apply(&mut pool, b));
        let (mut pool, b) = pool_with(&[]);
        assert!(!eth.apply(&mut pool, b));
        assert!(Rewrite::None.apply(&mut pool, b));
    }
}
