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
use vwire_dataplane::engine::{Engine, Retirer};
use vwire_dataplane::port::Port;
use vwire_dataplane::port::PortId;
use vwire_dataplane::table::{ForwardingTable, Rewrite};
use vwire_mechanisms::afxdp::{socket, AfXdpPort, PortOptions, Umem};
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
    /// an AF_XDP side reached the last step without its port
    #[error("an AF_XDP side of the cross-connect was not opened")]
    NotOpened,
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
    umems: Vec<Arc<Umem>>,
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
            umems: umems.into_iter().map(Arc::new).collect(),
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

    /// Step 1 of [`wire`], under the lock: `None` if `key` is already wired (a refresh), else
    /// the worker its ports go to and that worker's UMEM.
    pub fn placement(&mut self, key: &str) -> Result<Option<Placement>, DataplaneError> {
        if self.dynamic.contains_key(key) {
            return Ok(None);
        }
        if self.free_ids.len() < 2 {
            return Err(DataplaneError::NoPortIds(
                self.max_ports - self.free_ids.len(),
            ));
        }
        let worker = self.next_worker % self.umems.len().max(1);
        self.next_worker += 1;
        let umem = self.umems.get(worker).ok_or(DataplaneError::Stopped)?;
        Ok(Some(Placement {
            worker,
            umem: umem.clone(),
        }))
    }

    /// Step 3 of [`wire`], under the lock: cross-connects `a` and `b` for connection `key`,
    /// with the AF_XDP ports `opened` in step 2, applying `rewrites[0]` to what `a` receives
    /// and `rewrites[1]` to what `b` receives. Idempotent: an existing key is left as it is
    /// (and `opened` closed). On failure nothing is left behind. Must run inside the control
    /// runtime's context (memif control channels are tasks on it).
    pub fn add_xconnect(
        &mut self,
        key: &str,
        [a, b]: [&PortSpec; 2],
        rewrites: [Rewrite; 2],
        opened: Opened,
    ) -> Result<(), DataplaneError> {
        if self.dynamic.contains_key(key) {
            return Ok(());
        }
        let w = opened.worker;
        let mut memifs = Vec::new();
        let mut ports: Vec<Box<dyn Port>> = Vec::new();
        for (spec, afxdp) in [a, b].into_iter().zip(opened.afxdp) {
            let port: Box<dyn Port> = match (spec, afxdp) {
                (PortSpec::Afxdp { .. }, Some(port)) => Box::new(port),
                (PortSpec::Memif(cfg), _) => {
                    let link = Link::new(self.engine.qsbr());
                    match self.memif.add(cfg.clone(), link.clone()) {
                        Ok(handle) => memifs.push(handle),
                        Err(source) => {
                            for h in &memifs {
                                self.memif.remove(h);
                            }
                            return Err(DataplaneError::Memif {
                                socket: cfg.socket.clone(),
                                source,
                            });
                        }
                    }
                    Box::new(MemifPort::new(&cfg.name, link))
                }
                (PortSpec::Afxdp { .. }, None) => {
                    for h in &memifs {
                        self.memif.remove(h);
                    }
                    return Err(DataplaneError::NotOpened);
                }
            };
            ports.push(port);
        }
        let (ia, ib) = match (self.free_ids.pop(), self.free_ids.pop()) {
            (Some(x), Some(y)) => (x, y),
            (x, _) => {
                self.free_ids.extend(x);
                for h in &memifs {
                    self.memif.remove(h);
                }
                return Err(DataplaneError::NoPortIds(self.max_ports));
            }
        };
        let baselines = [self.engine.port_totals(ia), self.engine.port_totals(ib)];
        {
            let mut entries = self
                .registry
                .ports
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for ((id, spec), (port, base)) in [(ia, a), (ib, b)]
                .into_iter()
                .zip(ports.iter().zip(baselines))
            {
                entries.push(crate::metrics::PortEntry {
                    id,
                    name: spec.name().to_string(),
                    stats: port.stats(),
                    baseline: base,
                });
            }
        }
        let mut added = Ok(());
        for (id, port) in [ia, ib].into_iter().zip(ports) {
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
            self.remove_xconnect(key).finish();
            return Err(e);
        }
        Ok(())
    }

    /// Removes the cross-connect of `key` from the table and takes its ports back from their
    /// worker (unknown keys are fine). The ports still hold their sockets: call
    /// [`Retiring::finish`] on the result, preferably after releasing the lock, since closing
    /// AF_XDP sockets waits for RCU grace periods.
    pub fn remove_xconnect(&mut self, key: &str) -> Retiring {
        let Some(d) = self.dynamic.remove(key) else {
            return Retiring::default();
        };
        if let Err(e) = self.publish() {
            tracing::warn!("republishing the table: {e}");
        }
        self.registry
            .ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| !d.ports.contains(&p.id));
        let mut retiring = Retiring {
            retirer: self.engine.retirer(d.worker).ok(),
            ports: Vec::new(),
        };
        for id in d.ports {
            match self.engine.take_port(d.worker, id) {
                Ok(port) => retiring.ports.extend(port),
                Err(e) => tracing::warn!("removing port {id}: {e}"),
            }
            self.free_ids.push(id);
        }
        for h in &d.memifs {
            self.memif.remove(h);
        }
        retiring
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

/// Where a new cross-connect's ports go: step 1 of [`wire`].
pub struct Placement {
    worker: usize,
    umem: Arc<Umem>,
}

impl Placement {
    /// Step 2 of [`wire`], without the lock: opens the AF_XDP sides, both at once (each waits
    /// mostly on the kernel: loading and attaching the XDP program, binding the socket).
    pub fn open(self, specs: [&PortSpec; 2]) -> Result<Opened, DataplaneError> {
        let umem = &*self.umem;
        let open = |spec: &PortSpec| match spec {
            PortSpec::Afxdp { ifname } => {
                socket::open(ifname, ifname, umem, PortOptions::default())
                    .map(Some)
                    .map_err(|source| DataplaneError::Port {
                        ifname: ifname.clone(),
                        source,
                    })
            }
            PortSpec::Memif(_) => Ok(None),
        };
        let [a, b] = specs;
        let (ra, rb) = std::thread::scope(|s| {
            let second = s.spawn(|| open(b));
            let first = open(a);
            (first, second.join())
        });
        let rb = rb.unwrap_or(Err(DataplaneError::NotOpened));
        Ok(Opened {
            worker: self.worker,
            afxdp: [ra?, rb?],
        })
    }
}

/// The AF_XDP ports of a new cross-connect, opened without the lock: step 2 of [`wire`].
pub struct Opened {
    worker: usize,
    afxdp: [Option<AfXdpPort>; 2],
}

/// Ports taken out of the dataplane that still have to be shut down; see
/// [`DataplaneCore::remove_xconnect`]. Dropping it unfinished finishes it.
#[derive(Default)]
pub struct Retiring {
    retirer: Option<Retirer>,
    ports: Vec<Box<dyn Port>>,
}

impl Retiring {
    /// Shuts the ports down (closing their sockets, detaching their XDP programs), gives their
    /// buffers back to the worker's pool, and drops them.
    pub fn finish(mut self) {
        self.retire();
    }

    fn retire(&mut self) {
        for mut port in self.ports.drain(..) {
            if let Some(r) = &self.retirer {
                if let Err(e) = r.retire(port.as_mut()) {
                    tracing::warn!("retiring a port: {e}");
                }
            }
        }
    }
}

impl Drop for Retiring {
    fn drop(&mut self) {
        self.retire();
    }
}

/// Cross-connects `a` and `b` for connection `key` (see [`DataplaneCore::add_xconnect`]),
/// holding the lock only for the bookkeeping: the AF_XDP ports are opened between the two
/// short critical sections, so concurrent Requests overlap their kernel waits. Blocks; call it
/// off the async runtime's threads but inside its context.
pub fn wire(
    dp: &SharedDataplane,
    key: &str,
    specs: [&PortSpec; 2],
    rewrites: [Rewrite; 2],
) -> Result<(), DataplaneError> {
    let lock = || dp.lock().unwrap_or_else(|e| e.into_inner());
    let placement = match lock().as_mut() {
        Some(core) => core.placement(key)?,
        None => return Err(DataplaneError::Stopped),
    };
    let Some(placement) = placement else {
        return Ok(()); // already wired: a refresh
    };
    let opened = placement.open(specs)?;
    match lock().as_mut() {
        Some(core) => core.add_xconnect(key, specs, rewrites, opened),
        None => Err(DataplaneError::Stopped),
    }
}

/// Removes the cross-connect of `key`, holding the lock only to take its ports out, and
/// returns them still open (see [`Retiring`]). Blocks briefly, like [`wire`].
pub fn unwire(dp: &SharedDataplane, key: &str) -> Retiring {
    dp.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .map(|core| core.remove_xconnect(key))
        .unwrap_or_default()
}
