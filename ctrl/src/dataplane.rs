//! The running dataplane as the control thread sees it: the engine, the workers' UMEMs, and the
//! cross-connects, static (from the config) and dynamic (one per NSM connection).
//!
//! Dynamic cross-connects join two ports, each an AF_XDP socket on a host interface or a memif
//! interface (either role) whose control channel the core's memif [`Driver`] runs. Both ports go
//! to one worker, the forwarding table is republished with the new pair (with an L3 [`Rewrite`]
//! per direction when one side carries Ethernet and the other bare IP), and removal goes the
//! other way: the table first (workers stop forwarding to the ports), then the ports (each
//! returns its buffers to the pool and closes its sockets, see `Port::release`), then their memif
//! control channels. Calls block briefly (socket setup, a quiescence wait); they run on a thread
//! of the control runtime (memif needs its context), never on a worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vwire_dataplane::counters::PortTotals;
use vwire_dataplane::engine::Engine;
use vwire_dataplane::port::Port;
use vwire_dataplane::port::PortId;
use vwire_dataplane::table::{ForwardingTable, Rewrite};
use vwire_mechanisms::afxdp::{socket, PortOptions, Umem};
use vwire_mechanisms::memif::driver::{Driver, MemifConfig, MemifHandle};
use vwire_mechanisms::memif::port::{Link, MemifPort};

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
    /// a memif interface could not be served
    #[error("serving memif {socket}: {source}")]
    Memif {
        /// its socket
        socket: String,
        /// why
        source: vwire_mechanisms::memif::MemifError,
    },
}

/// One end of a dynamic cross-connect.
#[derive(Clone, Debug)]
pub enum PortSpec {
    /// An AF_XDP port on this host interface.
    Afxdp {
        /// The interface.
        ifname: String,
    },
    /// A memif interface.
    Memif(MemifConfig),
}

impl PortSpec {
    fn name(&self) -> &str {
        match self {
            PortSpec::Afxdp { ifname } => ifname,
            PortSpec::Memif(m) => &m.name,
        }
    }
}

struct Dynamic {
    worker: usize,
    ports: [PortId; 2],
    /// The ids' counts when the ports took them (ids are reused).
    baselines: [PortTotals; 2],
    rewrites: [Rewrite; 2],
    memifs: Vec<MemifHandle>,
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
    memif: Driver,
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
            memif: Driver::new(),
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
            t.add_xconnect_with(d.ports[0], d.ports[1], d.rewrites[0], d.rewrites[1])?;
        }
        self.engine.table().publish(t);
        Ok(())
    }

    /// Cross-connects ports `a` and `b` for connection `key`, applying `rewrites[0]` to what
    /// `a` receives and `rewrites[1]` to what `b` receives. Idempotent: an existing key is left as
    /// it is. On failure nothing is left behind. Must run inside the control runtime's context
    /// (memif control channels are tasks on it).
    pub fn add_xconnect(
        &mut self,
        key: &str,
        a: &PortSpec,
        b: &PortSpec,
        rewrites: [Rewrite; 2],
    ) -> Result<(), DataplaneError> {
        if self.dynamic.contains_key(key) {
            return Ok(());
        }
        if self.free_ids.len() < 2 {
            return Err(DataplaneError::NoPortIds(
                self.max_ports - self.free_ids.len(),
            ));
        }
        let t0 = std::time::Instant::now();
        let w = self.next_worker % self.umems.len().max(1);
        let mut memifs = Vec::new();
        let mut opened: Vec<Box<dyn Port>> = Vec::new();
        for spec in [a, b] {
            match self.open(w, spec) {
                Ok((port, handle)) => {
                    opened.push(port);
                    memifs.extend(handle);
                }
                Err(e) => {
                    for h in &memifs {
                        self.memif.remove(h);
                    }
                    return Err(e);
                }
            }
        }
        tracing::debug!(key, ms = t0.elapsed().as_millis(), "ports open");
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
            for ((id, spec), (port, base)) in [(ia, a), (ib, b)]
                .into_iter()
                .zip(opened.iter().zip(baselines))
            {
                ports.push(crate::metrics::PortEntry {
                    id,
                    name: spec.name().to_string(),
                    stats: port.stats(),
                    baseline: base,
                });
            }
        }
        let mut added = Ok(());
        for (id, port) in [ia, ib].into_iter().zip(opened) {
            if added.is_ok() {
                added = self.engine.add_port(w, id, port);
            }
        }
        self.dynamic.insert(
            key.to_string(),
            Dynamic {
                worker: w,
                ports: [ia, ib],
                baselines,
                rewrites,
                memifs,
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
        tracing::debug!(
            key,
            ms = t0.elapsed().as_millis(),
            "cross-connect published"
        );
        Ok(())
    }

    /// Opens the port of `spec` for worker `w`.
    fn open(
        &mut self,
        w: usize,
        spec: &PortSpec,
    ) -> Result<(Box<dyn Port>, Option<MemifHandle>), DataplaneError> {
        match spec {
            PortSpec::Afxdp { ifname } => {
                let umem = self.umems.get_mut(w).ok_or(DataplaneError::Stopped)?;
                let port = socket::open(ifname, ifname, umem, PortOptions::default()).map_err(
                    |source| DataplaneError::Port {
                        ifname: ifname.clone(),
                        source,
                    },
                )?;
                Ok((Box::new(port), None))
            }
            PortSpec::Memif(cfg) => {
                let link = Link::new(self.engine.qsbr());
                let handle = self
                    .memif
                    .add(cfg.clone(), link.clone())
                    .map_err(|source| DataplaneError::Memif {
                        socket: cfg.socket.clone(),
                        source,
                    })?;
                Ok((Box::new(MemifPort::new(&cfg.name, link)), Some(handle)))
            }
        }
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
        for h in &d.memifs {
            self.memif.remove(h);
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
    pub fn stop(mut self) -> Vec<vwire_dataplane::worker::WorkerError> {
        self.memif.shutdown();
        let errors = self.engine.stop();
        drop(self.umems);
        errors
    }
}
