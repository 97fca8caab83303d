//! The running dataplane as the control thread sees it: the engine, the workers' UMEMs, and the
//! cross-connects, static (from the config) and dynamic (one per NSM connection).
//!
//! Dynamic cross-connects join two interfaces over AF_XDP: both ports go to one worker, the
//! forwarding table is republished with the new pair, and removal goes the other way: the table
//! first (workers stop forwarding to the ports), then the ports (each returns its buffers to the
//! pool and closes its sockets, see `Port::release`). Calls block briefly (socket setup, a
//! quiescence wait); they run on the control thread, never on a worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vwire_dataplane::counters::PortTotals;
use vwire_dataplane::engine::Engine;
use vwire_dataplane::port::Port;
use vwire_dataplane::port::PortId;
use vwire_dataplane::table::ForwardingTable;
use vwire_mechanisms::afxdp::{socket, PortOptions, Umem};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// the dataplane has stopped
    #[error("the dataplane is stopped")]
    Stopped,
    /// no port ids left
    #[error("no free port ids left ({0} in use)")]
    NoPortIds(usize),
    /// a port could not be opened
    #[error("opening an AF_XDP port on {ifname}: {source}")]
    Port {
        /// the interface
        ifname: String,
        /// why
        source: vwire_mechanisms::afxdp::AfXdpError,
    },
    /// the engine refused
    #[error(transparent)]
    Engine(#[from] vwire_dataplane::engine::EngineError),
    /// the table refused
    #[error(transparent)]
    Table(#[from] vwire_dataplane::table::TableError),
}

struct Dynamic {
    worker: usize,
    ports: [PortId; 2],
    /// The ids' counts when the ports took them (ids are reused).
    baselines: [PortTotals; 2],
}

/// The engine and its cross-connects.
pub struct DataplaneCore {
    engine: Engine,
    registry: Arc<crate::metrics::Registry>,
    umems: Vec<Umem>,
    max_ports: usize,
    static_pairs: Vec<(PortId, PortId)>,
    dynamic: HashMap<String, Dynamic>,
    free_ids: Vec<PortId>,
    next_worker: usize,
}

/// Shared handle: `None` once stopped.
pub type SharedDataplane = Arc<Mutex<Option<DataplaneCore>>>;

impl DataplaneCore {
    /// Wraps a started engine whose static ports use ids `0..used_ids`.
    pub fn new(
        engine: Engine,
        umems: Vec<Umem>,
        max_ports: usize,
        used_ids: usize,
        static_pairs: Vec<(PortId, PortId)>,
        registry: Arc<crate::metrics::Registry>,
    ) -> Self {
        let free_ids = (used_ids..max_ports)
            .rev()
            .filter_map(|i| PortId::try_from(i).ok())
            .collect();
        Self {
            engine,
            registry,
            umems,
            max_ports,
            static_pairs,
            dynamic: HashMap::new(),
            free_ids,
            next_worker: 0,
        }
    }

    /// The engine (health, counters).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn publish(&self) -> Result<(), DataplaneError> {
        let mut t = ForwardingTable::new(self.max_ports);
        for &(a, b) in &self.static_pairs {
            t.add_xconnect(a, b)?;
        }
        for d in self.dynamic.values() {
            t.add_xconnect(d.ports[0], d.ports[1])?;
        }
        self.engine.table().publish(t);
        Ok(())
    }

    /// Cross-connects interfaces `a` and `b` for connection `key`. Idempotent: an existing key
    /// is left as it is. On failure nothing is left behind.
    pub fn add_xconnect(&mut self, key: &str, a: &str, b: &str) -> Result<(), DataplaneError> {
        if self.dynamic.contains_key(key) {
            return Ok(());
        }
        if self.free_ids.len() < 2 {
            return Err(DataplaneError::NoPortIds(
                self.max_ports - self.free_ids.len(),
            ));
        }
        let w = self.next_worker % self.umems.len().max(1);
        let open = |umem: &mut Umem, ifname: &str| {
            socket::open(ifname, ifname, umem, PortOptions::default()).map_err(|source| {
                DataplaneError::Port {
                    ifname: ifname.to_string(),
                    source,
                }
            })
        };
        let umem = self.umems.get_mut(w).ok_or(DataplaneError::Stopped)?;
        let pa = open(umem, a)?;
        let pb = open(umem, b)?;
        let (ia, ib) = match (self.free_ids.pop(), self.free_ids.pop()) {
            (Some(x), Some(y)) => (x, y),
            _ => return Err(DataplaneError::NoPortIds(self.max_ports)),
        };
        let baselines = [self.engine.port_totals(ia), self.engine.port_totals(ib)];
        {
            let mut ports = self
                .registry
                .ports
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (id, name, stats, base) in [
                (ia, a, pa.stats(), baselines[0]),
                (ib, b, pb.stats(), baselines[1]),
            ] {
                ports.push(crate::metrics::PortEntry {
                    id,
                    name: name.to_string(),
                    stats,
                    baseline: base,
                });
            }
        }
        let added = self
            .engine
            .add_port(w, ia, Box::new(pa))
            .and_then(|()| self.engine.add_port(w, ib, Box::new(pb)));
        self.dynamic.insert(
            key.to_string(),
            Dynamic {
                worker: w,
                ports: [ia, ib],
                baselines,
            },
        );
        if let Err(e) = added
            .map_err(DataplaneError::from)
            .and_then(|()| self.publish())
        {
            self.remove_xconnect(key);
            return Err(e);
        }
        self.next_worker += 1;
        Ok(())
    }

    /// Removes the cross-connect of `key` and its ports (unknown keys are fine).
    pub fn remove_xconnect(&mut self, key: &str) {
        let Some(d) = self.dynamic.remove(key) else {
            return;
        };
        if let Err(e) = self.publish() {
            tracing::warn!("republishing the table: {e}");
        }
        self.registry
            .ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| !d.ports.contains(&p.id));
        for id in d.ports {
            match self.engine.remove_port(d.worker, id) {
                Ok(port) => drop(port),
                Err(e) => tracing::warn!("removing port {id}: {e}"),
            }
            self.free_ids.push(id);
        }
    }

    /// The counters of the two ports of `key` (in the order given to `add_xconnect`), counted
    /// since the connection was wired.
    pub fn totals(&self, key: &str) -> Option<[PortTotals; 2]> {
        let d = self.dynamic.get(key)?;
        Some([0, 1].map(|i| self.engine.port_totals(d.ports[i]).since(&d.baselines[i])))
    }

    /// Number of dynamic cross-connects.
    pub fn dynamic_len(&self) -> usize {
        self.dynamic.len()
    }

    /// Stops the workers and closes every port, then the UMEMs.
    pub fn stop(self) -> Vec<vwire_dataplane::worker::WorkerError> {
        let errors = self.engine.stop();
        drop(self.umems);
        errors
    }
}
