//! The forwarding table: what a worker does with a packet received on a port.
//!
//! The table is immutable once built. The control thread builds a new one and publishes it
//! through [`crate::rcu::RcuCell`]; workers look up by receiving [`PortId`] with one bounds-checked
//! array index. Cross-connects are the only action for now; tunnel actions come later as new
//! [`Action`] variants.

use crate::port::PortId;

/// What to do with packets received on a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Action {
    /// No entry: drop and count `no_route`.
    #[default]
    Drop,
    /// L2 cross-connect: send the frame unchanged out of `tx`.
    Xconnect {
        /// The egress port.
        tx: PortId,
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
        for p in [a, b] {
            match self.by_rx_port.get(usize::from(p)) {
                None => return Err(TableError::PortOutOfRange(p, self.by_rx_port.len())),
                Some(Action::Drop) => {}
                Some(_) => return Err(TableError::Duplicate(p)),
            }
        }
        self.by_rx_port[usize::from(a)] = Action::Xconnect { tx: b };
        self.by_rx_port[usize::from(b)] = Action::Xconnect { tx: a };
        Ok(())
    }

    /// Removes every entry that receives on, or sends to, `port`.
    pub fn remove_port(&mut self, port: PortId) {
        for (rx, action) in self.by_rx_port.iter_mut().enumerate() {
            let hit = match *action {
                Action::Drop => false,
                Action::Xconnect { tx } => tx == port,
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
        assert_eq!(t.lookup(1), Action::Xconnect { tx: 2 });
        assert_eq!(t.lookup(2), Action::Xconnect { tx: 1 });
        assert_eq!(t.lookup(3), Action::Drop);
        assert_eq!(t.lookup(500), Action::Drop);
        assert_eq!(t.add_xconnect(2, 3), Err(TableError::Duplicate(2)));
        assert_eq!(t.add_xconnect(3, 9), Err(TableError::PortOutOfRange(9, 8)));
        t.remove_port(2);
        assert_eq!(t.lookup(1), Action::Drop);
        assert_eq!(t.lookup(2), Action::Drop);
    }
}
