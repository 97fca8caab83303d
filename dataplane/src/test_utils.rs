//! Workers with no thread, driven by hand: for benches and tests of the packet path with no
//! kernel involved. [`Rig`] is a bare worker over a given table; [`LoopRig`] is a primed
//! cross-connect loop on top of it.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::buffer::{BufferError, BufferPool};
use crate::counters::{port_totals, PortTotals, WorkerCounters};
use crate::mem_port::mem_pair;
use crate::port::PortId;
use crate::rcu::{Qsbr, RcuCell};
use crate::table::ForwardingTable;
use crate::worker::{Doorbell, PollMode, Worker, WorkerParts};

/// A worker whose two in-memory ports, 0 and 1, are cross-connected and wired into a loop: what
/// port 1 transmits, port 0 receives again. Primed with packets, every [`Worker::poll_once`]
/// forwards up to a burst, forever, like testpmd's `--tx-first` io loop.
pub struct LoopRig {
    /// The worker; call `poll_once` on it.
    pub worker: Worker,
    /// Its counters.
    pub counters: Arc<WorkerCounters>,
    /// The forwarding table it reads.
    pub table: Arc<RcuCell<ForwardingTable>>,
}

/// Errors building a rig.
#[derive(Debug, thiserror::Error)]
pub enum RigError {
    /// the pool could not be mapped
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// the doorbell could not be created
    #[error("doorbell: {0}")]
    Io(#[from] std::io::Error),
}

/// A worker with no ports over a fixed forwarding table, driven by hand: add ports with
/// [`Worker::add_port`] and call [`Worker::poll_once`].
///
/// The table is set once, at build time: [`RcuCell::publish`] waits for the worker to pass a
/// quiescent point, which a worker driven on the publishing thread never does. Build a new rig
/// for another table.
pub struct Rig {
    /// The worker.
    pub worker: Worker,
    /// Its counters.
    pub counters: Arc<WorkerCounters>,
    /// The forwarding table it reads.
    pub table: Arc<RcuCell<ForwardingTable>>,
}

impl Rig {
    /// A worker for port ids `0..max_ports` with a pool of `frames` frames, reading `table`.
    pub fn new(table: ForwardingTable, max_ports: usize, frames: u32) -> Result<Self, RigError> {
        let qsbr = Qsbr::new();
        let table = Arc::new(RcuCell::new(table, qsbr.clone()));
        let counters = Arc::new(WorkerCounters::new(max_ports));
        let (_tx, rx) = crossbeam_channel::bounded(1);
        let worker = Worker::new(WorkerParts {
            pool: BufferPool::new(frames)?,
            table: table.clone(),
            reader: qsbr.register(),
            counters: counters.clone(),
            cmds: rx,
            doorbell: Arc::new(Doorbell::new()?),
            stop: Arc::new(AtomicBool::new(false)),
            poll_mode: PollMode::Busy,
            cpu: None,
            max_ports,
        });
        Ok(Self {
            worker,
            counters,
            table,
        })
    }

    /// Port `id`'s counters on this worker, summed into totals.
    pub fn totals(&self, id: PortId) -> PortTotals {
        port_totals([&*self.counters], usize::from(id))
    }
}

impl LoopRig {
    /// Builds the rig and primes it with `packets` copies of `frame`.
    pub fn new(frame: &[u8], packets: usize) -> Result<Self, RigError> {
        const PORTS: usize = 2;
        let mut t = ForwardingTable::new(PORTS);
        // Infallible: both ids are below PORTS and unused.
        let _ = t.add_xconnect(0, 1);
        let frames = u32::try_from(packets + 64).unwrap_or(u32::MAX);
        let Rig {
            mut worker,
            counters,
            table,
        } = Rig::new(t, PORTS, frames)?;
        // Port 0 ("rx") and port 1 ("tx") are the two ends of one in-memory wire, so a packet
        // received on 0 and sent out of 1 arrives on 0 again.
        let (p0, p1) = mem_pair("p0", "p1", packets.next_power_of_two().max(64));
        // Port 0's inbox is fed by port 1; priming it = port 1 having sent.
        let primed = p0.inject(worker.pool_mut(), frame, packets);
        debug_assert_eq!(primed, packets);
        let ids: [PortId; 2] = [0, 1];
        // Infallible: distinct ids below max_ports.
        let _ = worker.add_port(ids[0], Box::new(p0));
        let _ = worker.add_port(ids[1], Box::new(p1));
        Ok(Self {
            worker,
            counters,
            table,
        })
    }
}
