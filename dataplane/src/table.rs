//! The forwarding table: what a worker does with a packet received on a port.
//!
//! The table is immutable once built. The control thread builds a new one and publishes it
//! through [`crate::rcu::RcuCell`]; workers look up by receiving [`PortId`] with one bounds-checked
//! array index. The actions:
//! - cross-connects, optionally with an L3 [`Rewrite`] (IP vWires between an Ethernet port and an
//!   IP-only port);
//! - tunnels ([`crate::tunnel`]): the local port of a tunnel encapsulates with the tunnel's
//!   [`Encap`] and sends to the uplink ([`Action::Encap`]); an uplink decapsulates with its
//!   [`Decap`], which picks the egress port per packet ([`Action::Decap`]).
//!
//! The tunnel objects are held here as `Arc`s, so a table clone shares them and a published
//! table keeps them alive until the workers have left it (the old table, and with it the last
//! reference, is dropped on the control thread after the quiescence wait). Changing a tunnel means
//! building a new object and publishing a new table.

use std::sync::Arc;

use crate::buffer::{BufIdx, BufferPool};
use crate::port::PortId;
use crate::tunnel::{Decap, Encap, TunnelId};

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
    /// The local port of a tunnel: encapsulate with tunnel `tunnel`'s [`Encap`], then send out
    /// of the uplink `tx`.
    Encap {
        /// The uplink port.
        tx: PortId,
        /// The tunnel, an index into the table's tunnels.
        tunnel: TunnelId,
    },
    /// An uplink port: decapsulate with the port's [`Decap`], which names each packet's egress.
    Decap,
}

/// Errors of this module.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    /// a port id beyond the table size
    #[error("port id {0} is beyond the table size {1}")]
    PortOutOfRange(PortId, usize),
    /// a port is already cross-connected, a tunnel's local port, or an uplink
    #[error("port id {0} already has a forwarding entry")]
    Duplicate(PortId),
    /// a tunnel whose local port is its uplink
    #[error("port id {0} cannot be both the local port and the uplink of a tunnel")]
    SamePort(PortId),
    /// every tunnel id is taken
    #[error("no tunnel ids left ({0} tunnels)")]
    TooManyTunnels(usize),
}

/// One tunnel: its ports and its encapsulation.
#[derive(Clone, Debug)]
struct Tunnel {
    local: PortId,
    uplink: PortId,
    encap: Arc<dyn Encap>,
}

/// Forwarding entries indexed by receiving port, and the tunnel objects they use.
#[derive(Clone, Debug)]
pub struct ForwardingTable {
    // hot: read by the workers every burst
    by_rx_port: Box<[Action]>,
    /// Indexed by [`TunnelId`]; `None` once the tunnel was removed (ids are not reused within a
    /// table, so an id in an [`Action::Encap`] never names another tunnel).
    tunnels: Vec<Option<Tunnel>>,
    /// Indexed by uplink port id.
    decaps: Box<[Option<Arc<dyn Decap>>]>,
}

impl ForwardingTable {
    /// An empty table for ports `0..max_ports`.
    pub fn new(max_ports: usize) -> Self {
        Self {
            by_rx_port: vec![Action::Drop; max_ports].into_boxed_slice(),
            tunnels: Vec::new(),
            decaps: vec![None; max_ports].into_boxed_slice(),
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

    /// The encapsulation of tunnel `id`, if the tunnel exists.
    #[inline]
    pub fn encap(&self, id: TunnelId) -> Option<&dyn Encap> {
        match self.tunnels.get(usize::from(id)) {
            Some(Some(t)) => Some(&*t.encap),
            _ => None,
        }
    }

    /// The decapsulation of uplink port `port`, if it is one.
    #[inline]
    pub fn decap(&self, port: PortId) -> Option<&dyn Decap> {
        match self.decaps.get(usize::from(port)) {
            Some(Some(d)) => Some(&**d),
            _ => None,
        }
    }

    /// The `(local, uplink)` ports of tunnel `id`, if the tunnel exists.
    pub fn tunnel_ports(&self, id: TunnelId) -> Option<(PortId, PortId)> {
        match self.tunnels.get(usize::from(id)) {
            Some(Some(t)) => Some((t.local, t.uplink)),
            _ => None,
        }
    }

    fn check_free(&self, p: PortId) -> Result<(), TableError> {
        match self.by_rx_port.get(usize::from(p)) {
            None => Err(TableError::PortOutOfRange(p, self.by_rx_port.len())),
            Some(Action::Drop) => Ok(()),
            Some(_) => Err(TableError::Duplicate(p)),
        }
    }

    fn check_range(&self, p: PortId) -> Result<(), TableError> {
        if usize::from(p) < self.by_rx_port.len() {
            Ok(())
        } else {
            Err(TableError::PortOutOfRange(p, self.by_rx_port.len()))
        }
    }

    /// Adds a tunnel: what `local` receives is encapsulated by `encap` and sent out of `uplink`.
    /// Returns the tunnel's id. The way back is the uplink's [`Decap`] ([`Self::set_decap`]),
    /// which may serve many tunnels.
    ///
    /// # Errors
    /// [`TableError::PortOutOfRange`] for either port, [`TableError::Duplicate`] if `local`
    /// already has an entry, [`TableError::SamePort`] if `local == uplink`,
    /// [`TableError::TooManyTunnels`] past 65536 tunnels.
    pub fn add_tunnel(
        &mut self,
        local: PortId,
        uplink: PortId,
        encap: Arc<dyn Encap>,
    ) -> Result<TunnelId, TableError> {
        self.check_range(uplink)?;
        self.check_free(local)?;
        if local == uplink {
            return Err(TableError::SamePort(local));
        }
        let id = TunnelId::try_from(self.tunnels.len())
            .map_err(|_| TableError::TooManyTunnels(self.tunnels.len()))?;
        self.tunnels.push(Some(Tunnel {
            local,
            uplink,
            encap,
        }));
        self.by_rx_port[usize::from(local)] = Action::Encap {
            tx: uplink,
            tunnel: id,
        };
        Ok(id)
    }

    /// Makes `uplink` a tunnel uplink: what it receives is decapsulated by `decap`.
    ///
    /// # Errors
    /// [`TableError::PortOutOfRange`], or [`TableError::Duplicate`] if `uplink` already has an
    /// entry (a decap included).
    pub fn set_decap(&mut self, uplink: PortId, decap: Arc<dyn Decap>) -> Result<(), TableError> {
        self.check_free(uplink)?;
        self.by_rx_port[usize::from(uplink)] = Action::Decap;
        self.decaps[usize::from(uplink)] = Some(decap);
        Ok(())
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
            self.check_free(p)?;
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

    /// Removes every entry that receives on, or sends to, `port`: its cross-connect, the
    /// tunnels it is the local port or the uplink of, and its decap. An uplink's [`Decap`] may
    /// still name `port` as an egress (it is immutable): the workers count what it sends there as
    /// `port_gone`; the control thread rebuilds the decap to drop the mapping.
    pub fn remove_port(&mut self, port: PortId) {
        for (rx, action) in self.by_rx_port.iter_mut().enumerate() {
            let hit = match *action {
                Action::Drop | Action::Decap => false,
                Action::Xconnect { tx, .. } | Action::Encap { tx, .. } => tx == port,
            };
            if hit || rx == usize::from(port) {
                *action = Action::Drop;
            }
        }
        for t in &mut self.tunnels {
            if t.as_ref()
                .is_some_and(|t| t.local == port || t.uplink == port)
            {
                *t = None;
            }
        }
        if let Some(d) = self.decaps.get_mut(usize::from(port)) {
            *d = None;
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

    #[derive(Debug)]
    struct Nop;

    impl Encap for Nop {
        fn encap(&self, _: &mut BufferPool, _: BufIdx) -> Result<(), crate::counters::DropReason> {
            Ok(())
        }
    }

    impl Decap for Nop {
        fn decap(
            &self,
            _: &mut BufferPool,
            _: BufIdx,
        ) -> Result<PortId, crate::counters::DropReason> {
            Ok(0)
        }
    }

    #[test]
    fn tunnels_and_decaps_are_entries_of_their_ports() {
        let mut t = ForwardingTable::new(8);
        let nop = Arc::new(Nop);
        assert_eq!(t.add_tunnel(1, 0, nop.clone()), Ok(0));
        assert_eq!(t.add_tunnel(2, 0, nop.clone()), Ok(1));
        t.set_decap(0, nop.clone()).unwrap();
        assert_eq!(t.lookup(1), Action::Encap { tx: 0, tunnel: 0 });
        assert_eq!(t.lookup(2), Action::Encap { tx: 0, tunnel: 1 });
        assert_eq!(t.lookup(0), Action::Decap);
        assert!(t.encap(1).is_some() && t.encap(2).is_none());
        assert!(t.decap(0).is_some() && t.decap(1).is_none() && t.decap(99).is_none());
        assert_eq!(t.tunnel_ports(1), Some((2, 0)));

        assert_eq!(
            t.add_tunnel(1, 0, nop.clone()),
            Err(TableError::Duplicate(1))
        );
        assert_eq!(
            t.add_tunnel(3, 3, nop.clone()),
            Err(TableError::SamePort(3))
        );
        assert_eq!(
            t.add_tunnel(3, 8, nop.clone()),
            Err(TableError::PortOutOfRange(8, 8))
        );
        assert_eq!(
            t.add_tunnel(9, 0, nop.clone()),
            Err(TableError::PortOutOfRange(9, 8))
        );
        assert_eq!(t.set_decap(0, nop.clone()), Err(TableError::Duplicate(0)));
        assert_eq!(t.set_decap(1, nop.clone()), Err(TableError::Duplicate(1)));
        assert_eq!(
            t.set_decap(8, nop.clone()),
            Err(TableError::PortOutOfRange(8, 8))
        );
        assert_eq!(t.add_xconnect(2, 5), Err(TableError::Duplicate(2)));

        // A clone shares the objects; the original is untouched by changes to the clone.
        let mut next = t.clone();
        next.remove_port(2);
        assert_eq!(next.lookup(2), Action::Drop);
        assert!(next.encap(1).is_none());
        assert_eq!(next.lookup(1), Action::Encap { tx: 0, tunnel: 0 });
        assert!(t.encap(1).is_some());
        // Ids are not reused within a table.
        assert_eq!(next.add_tunnel(2, 0, nop.clone()), Ok(2));
        // Removing the uplink removes its decap and every tunnel through it.
        next.remove_port(0);
        for p in 0..8 {
            assert_eq!(next.lookup(p), Action::Drop);
        }
        assert!(next.decap(0).is_none() && next.encap(0).is_none() && next.encap(2).is_none());
        // Held by t (two tunnels and the decap) and by the test; next let go of its references.
        assert_eq!(Arc::strong_count(&nop), 4);
    }

    #[test]
    fn too_many_tunnels_is_refused() {
        let mut t = ForwardingTable::new(2);
        let nop: Arc<dyn Encap> = Arc::new(Nop);
        t.tunnels = vec![None; usize::from(TunnelId::MAX) + 1];
        assert_eq!(
            t.add_tunnel(1, 0, nop),
            Err(TableError::TooManyTunnels(65536))
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
