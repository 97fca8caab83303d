//! Builds, starts and stops the workers.
//!
//! Life cycle: [`EngineBuilder::new`] maps one pool per worker; the caller creates ports (they
//! may need a worker's [`PoolRegion`], e.g. as AF_XDP UMEM) and places each on a worker with
//! [`EngineBuilder::add_port`]; [`EngineBuilder::start`] spawns the pinned threads. At run time
//! [`Engine::add_port`] and [`Engine::remove_port`] move ports in and out through each worker's
//! command queue, and [`Engine::table`] publishes forwarding tables. [`Engine::stop`] stops and
//! joins every worker, then drops their ports before their pools.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::buffer::{BufferError, BufferPool, PoolRegion};
use crate::counters::{port_totals, PortTotals, WorkerCounters};
use crate::port::{Port, PortId, PortStats};
use crate::rcu::{Qsbr, RcuCell};
use crate::table::ForwardingTable;
use crate::worker::{Command, Doorbell, PollMode, Worker, WorkerError, WorkerParts};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// no worker index
    #[error("there is no worker {0}")]
    NoSuchWorker(usize),
    /// pool setup failed
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// worker-level failure
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// a system call failed
    #[error("{what}: {source}")]
    Io {
        /// what was being done
        what: &'static str,
        /// the system error
        source: std::io::Error,
    },
    /// a worker did not answer a command
    #[error("worker {0} did not answer within 1 s")]
    WorkerStuck(usize),
}

/// What the engine is built from.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// One entry per worker: the CPU to pin it to (`None`: do not pin; tests only).
    pub cpus: Vec<Option<usize>>,
    /// Idle policy of every worker.
    pub poll_mode: PollMode,
    /// Number of frames in each worker's pool.
    pub pool_frames: Vec<u32>,
    /// Frame size of each worker's pool (default [`crate::buffer::FRAME_SIZE`]).
    pub frame_sizes: Vec<usize>,
    /// Port ids are `0..max_ports`.
    pub max_ports: usize,
}

struct WorkerControl {
    cmds: Sender<Command>,
    doorbell: Arc<Doorbell>,
}

/// An engine whose workers have not started yet.
pub struct EngineBuilder {
    qsbr: Arc<Qsbr>,
    workers: Vec<Worker>,
    controls: Vec<WorkerControl>,
    regions: Vec<PoolRegion>,
    counters: Vec<Arc<WorkerCounters>>,
    table: Arc<RcuCell<ForwardingTable>>,
    stop: Arc<AtomicBool>,
    cpus: Vec<Option<usize>>,
    stats: HashMap<PortId, Arc<dyn PortStats>>,
}

impl EngineBuilder {
    /// Maps the pools and builds the (stopped) workers.
    pub fn new(cfg: &EngineConfig) -> Result<Self, EngineError> {
        let qsbr = Qsbr::new();
        let table = Arc::new(RcuCell::new(
            ForwardingTable::new(cfg.max_ports),
            qsbr.clone(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let mut b = Self {
            qsbr: qsbr.clone(),
            workers: Vec::new(),
            controls: Vec::new(),
            regions: Vec::new(),
            counters: Vec::new(),
            table,
            stop,
            cpus: cfg.cpus.clone(),
            stats: HashMap::new(),
        };
        for (i, cpu) in cfg.cpus.iter().enumerate() {
            let frames = cfg.pool_frames.get(i).copied().unwrap_or(4096);
            let frame_size = cfg
                .frame_sizes
                .get(i)
                .copied()
                .unwrap_or(crate::buffer::FRAME_SIZE);
            let pool = BufferPool::with_frame_size(frames, frame_size)?;
            b.regions.push(pool.region());
            let counters = Arc::new(WorkerCounters::new(cfg.max_ports));
            let (tx, rx) = crossbeam_channel::bounded(64);
            let doorbell = Arc::new(Doorbell::new().map_err(|source| EngineError::Io {
                what: "creating a worker doorbell eventfd",
                source,
            })?);
            b.workers.push(Worker::new(WorkerParts {
                pool,
                table: b.table.clone(),
                reader: qsbr.register_named(format!("worker {i}")),
                counters: counters.clone(),
                cmds: rx,
                doorbell: doorbell.clone(),
                stop: b.stop.clone(),
                poll_mode: cfg.poll_mode,
                cpu: *cpu,
                max_ports: cfg.max_ports,
            }));
            b.controls.push(WorkerControl { cmds: tx, doorbell });
            b.counters.push(counters);
        }
        Ok(b)
    }

    /// The memory of worker `w`'s pool.
    pub fn pool_region(&self, w: usize) -> Result<PoolRegion, EngineError> {
        self.regions
            .get(w)
            .copied()
            .ok_or(EngineError::NoSuchWorker(w))
    }

    /// Places `port` on worker `w` under `id`.
    pub fn add_port(
        &mut self,
        w: usize,
        id: PortId,
        port: Box<dyn Port>,
    ) -> Result<(), EngineError> {
        let stats = port.stats();
        let worker = self
            .workers
            .get_mut(w)
            .ok_or(EngineError::NoSuchWorker(w))?;
        worker.add_port(id, port)?;
        if let Some(s) = stats {
            self.stats.insert(id, s);
        }
        Ok(())
    }

    /// The forwarding table.
    pub fn table(&self) -> &Arc<RcuCell<ForwardingTable>> {
        &self.table
    }

    /// The quiescence registry of the workers: ports that publish state to workers (memif
    /// sessions) reclaim it through this.
    pub fn qsbr(&self) -> Arc<Qsbr> {
        self.qsbr.clone()
    }

    /// Worker `w`'s pool, before it starts (e.g. to prime in-memory ports in tests).
    pub fn pool_mut(&mut self, w: usize) -> Option<&mut BufferPool> {
        self.workers.get_mut(w).map(Worker::pool_mut)
    }

    /// Spawns one thread per worker. On failure, the workers already started are stopped.
    pub fn start(self) -> Result<Engine, EngineError> {
        let mut engine = Engine {
            threads: Vec::new(),
            controls: self.controls,
            counters: self.counters,
            table: self.table,
            stop: self.stop,
            stats: self.stats,
            cpus: self.cpus,
            qsbr: self.qsbr,
        };
        for (i, w) in self.workers.into_iter().enumerate() {
            let spawned = std::thread::Builder::new()
                .name(format!("vwire-worker-{i}"))
                .spawn(move || w.run());
            match spawned {
                Ok(t) => engine.threads.push(t),
                Err(source) => {
                    engine.shutdown();
                    return Err(EngineError::Io {
                        what: "spawning a worker thread",
                        source,
                    });
                }
            }
        }
        Ok(engine)
    }
}

type WorkerResult = (Worker, Result<(), WorkerError>);

/// A running engine. Dropping it stops the workers too.
pub struct Engine {
    threads: Vec<JoinHandle<WorkerResult>>,
    controls: Vec<WorkerControl>,
    counters: Vec<Arc<WorkerCounters>>,
    table: Arc<RcuCell<ForwardingTable>>,
    stop: Arc<AtomicBool>,
    stats: HashMap<PortId, Arc<dyn PortStats>>,
    cpus: Vec<Option<usize>>,
    qsbr: Arc<Qsbr>,
}

/// Finishes the removal of ports that [`Engine::take_port`] took from one worker.
#[derive(Clone)]
pub struct Retirer {
    worker: usize,
    cmds: Sender<Command>,
    doorbell: Arc<Doorbell>,
}

impl Retirer {
    /// Shuts `port` down on this thread (closing its sockets may block for an RCU grace period)
    /// and gives the buffers it held back to the worker's pool. Afterwards the port may be
    /// dropped.
    pub fn retire(&self, port: &mut dyn Port) -> Result<(), EngineError> {
        let held = port.shutdown();
        if !held.is_empty() {
            self.cmds
                .send_timeout(Command::FreeBuffers(held), Duration::from_secs(1))
                .map_err(|_| EngineError::WorkerStuck(self.worker))?;
            self.doorbell.ring();
        }
        Ok(())
    }
}

impl Engine {
    /// The quiescence registry of the workers, for ports added at run time that publish state
    /// to workers (memif sessions).
    pub fn qsbr(&self) -> Arc<Qsbr> {
        self.qsbr.clone()
    }

    /// The forwarding table; `publish` a new one to change forwarding.
    pub fn table(&self) -> &Arc<RcuCell<ForwardingTable>> {
        &self.table
    }

    /// Per-worker counters.
    pub fn worker_counters(&self) -> &[Arc<WorkerCounters>] {
        &self.counters
    }

    /// The CPU of each worker.
    pub fn worker_cpus(&self) -> &[Option<usize>] {
        &self.cpus
    }

    /// Counters of port `id`, summed over the workers.
    pub fn port_totals(&self, id: PortId) -> PortTotals {
        port_totals(self.counters.iter().map(|c| &**c), usize::from(id))
    }

    /// Counters of port `id` kept outside vwire (e.g. the kernel's XDP statistics).
    pub fn port_extra_counters(&self, id: PortId, out: &mut Vec<(&'static str, u64)>) {
        if let Some(s) = self.stats.get(&id) {
            s.counters(out);
        }
    }

    /// True while every worker thread is running.
    pub fn is_healthy(&self) -> bool {
        self.threads.iter().all(|t| !t.is_finished())
    }

    /// Hands `port` to worker `w` under `id`.
    pub fn add_port(
        &mut self,
        w: usize,
        id: PortId,
        port: Box<dyn Port>,
    ) -> Result<(), EngineError> {
        let stats = port.stats();
        let c = self.controls.get(w).ok_or(EngineError::NoSuchWorker(w))?;
        c.cmds
            .send_timeout(Command::AddPort { id, port }, Duration::from_secs(1))
            .map_err(|_| EngineError::WorkerStuck(w))?;
        c.doorbell.ring();
        if let Some(s) = stats {
            self.stats.insert(id, s);
        }
        Ok(())
    }

    /// Takes port `id` back from worker `w`, shuts it down on this thread (closing sockets may
    /// block for a few milliseconds) and returns the buffers it held to the worker's pool. Once
    /// this returns, no worker touches the port, so dropping it is safe. Remove it from the
    /// forwarding table first. [`Engine::take_port`] and [`Retirer::retire`] do the same in two
    /// steps, so that the slow second one can run without holding the engine.
    pub fn remove_port(
        &mut self,
        w: usize,
        id: PortId,
    ) -> Result<Option<Box<dyn Port>>, EngineError> {
        let retirer = self.retirer(w)?;
        let mut port = self.take_port(w, id)?;
        if let Some(p) = port.as_mut() {
            retirer.retire(p.as_mut())?;
        }
        Ok(port)
    }

    /// Takes port `id` back from worker `w` without shutting it down: once this returns the
    /// worker no longer polls it, but the port may still hold sockets that the kernel fills
    /// with the pool's memory, so it must go through [`Retirer::retire`] before it is dropped
    /// or its buffers are reused. Fast: one round trip to the worker.
    pub fn take_port(
        &mut self,
        w: usize,
        id: PortId,
    ) -> Result<Option<Box<dyn Port>>, EngineError> {
        let c = self.controls.get(w).ok_or(EngineError::NoSuchWorker(w))?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        c.cmds
            .send_timeout(
                Command::RemovePort { id, reply: tx },
                Duration::from_secs(1),
            )
            .map_err(|_| EngineError::WorkerStuck(w))?;
        c.doorbell.ring();
        let port = rx
            .recv_timeout(Duration::from_secs(1))
            .map_err(|_| EngineError::WorkerStuck(w))?;
        self.stats.remove(&id);
        Ok(port)
    }

    /// A handle that finishes the removal of ports taken from worker `w` without access to the
    /// engine (so without the control thread's lock around it).
    pub fn retirer(&self, w: usize) -> Result<Retirer, EngineError> {
        let c = self.controls.get(w).ok_or(EngineError::NoSuchWorker(w))?;
        Ok(Retirer {
            worker: w,
            cmds: c.cmds.clone(),
            doorbell: c.doorbell.clone(),
        })
    }

    fn shutdown(&mut self) -> Vec<WorkerError> {
        self.stop.store(true, Relaxed);
        for c in &self.controls {
            c.doorbell.ring();
        }
        let mut errors = Vec::new();
        for t in self.threads.drain(..) {
            // Joining returns the worker; dropping it here closes its ports, then unmaps its pool.
            // A panicked worker (Err from join) already dropped its state while unwinding.
            if let Ok((worker, result)) = t.join() {
                drop(worker);
                if let Err(e) = result {
                    errors.push(e);
                }
            }
        }
        errors
    }

    /// Stops and joins every worker, then closes all ports. Returns errors workers stopped with.
    pub fn stop(mut self) -> Vec<WorkerError> {
        self.shutdown()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}
