//! KERNEL↔KERNEL connections cross-connected inside the kernel (`nsm.kernel_xconnect = "tcx"`,
//! the default): the TCX program of `vwire_mechanisms::tcx` joins the two host veths, so a
//! connection between two pods runs at kernel speed with its super-packets, and its traffic does
//! not depend on vwire's process (it flows on while vwire restarts).
//!
//! A connection is first wired through the workers (AF_XDP), as before, and its Request
//! answered; then the [`Mover`], one connection at a time and when no other connection is being
//! wired, attaches the program to its host veths, removes its AF_XDP ports (from then on the
//! packets reach the program) and records the move. Why not at once: each attach to an
//! interface's TCX hook makes the kernel wait for an RCU grace period under the RTNL lock
//! (`tcx_entry_sync`: 10–15 ms here), which would serialise concurrent Requests; moving later
//! keeps a Request as fast as before (the packets of the few milliseconds of the switch that sit
//! in the AF_XDP rings are lost: TCP resends them).
//!
//! Contract: one program serves every connection of the process, loaded at the first
//! connection or taken back from a connection of the previous run (`restore`). A kernel that
//! cannot run it (no TCX: Linux < 6.6) is reported once, as a WARN, and every KERNEL↔KERNEL
//! connection goes through the workers over AF_XDP instead; a failure of one connection is that
//! connection's error. Counters come from the program's map, in the shape of the workers'
//! (`PortTotals`), so the PathSegment metrics read the same whichever path a connection took.
//! Calls that attach (connect, adopt) take the RTNL lock: run them off the runtime thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vwire_dataplane::counters::{DropReason, PortTotals};
use vwire_mechanisms::tcx::{Counters, Redirector, TcxError};

use super::{Built, Wired};
use crate::config::KernelXconnect;
use crate::dataplane::SharedDataplane;
use crate::elements::metadata::Metadata;

/// A connection cross-connected in the kernel: the indexes of its two host veths (client's,
/// endpoint's), and what the workers counted before it moved there.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InKernelEnds {
    pub(super) ends: [u32; 2],
    pub(super) carried: [PortTotals; 2],
}

impl InKernelEnds {
    pub(super) fn new(ends: [u32; 2]) -> Self {
        Self {
            ends,
            carried: Default::default(),
        }
    }
}

/// The in-kernel path of this process.
#[derive(Debug)]
pub(super) struct InKernel {
    mode: KernelXconnect,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    redirector: Option<Arc<Redirector>>,
    /// The kernel cannot run the program (reported once).
    unavailable: bool,
}

impl InKernel {
    pub(super) fn new(mode: KernelXconnect) -> Self {
        Self {
            mode,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether new KERNEL↔KERNEL connections should move into the kernel.
    pub(super) fn wanted(&self) -> bool {
        self.mode == KernelXconnect::Tcx && !self.state().unavailable
    }

    /// The program, loaded if this is the first use; `None` if the kernel cannot run it.
    fn redirector(&self) -> Result<Option<Arc<Redirector>>, TcxError> {
        let mut s = self.state();
        if self.mode != KernelXconnect::Tcx || s.unavailable {
            return Ok(None);
        }
        if let Some(r) = &s.redirector {
            return Ok(Some(r.clone()));
        }
        match Redirector::load() {
            Ok(r) => {
                let r = Arc::new(r);
                tracing::info!(
                    prog_id = r.prog_id(),
                    "KERNEL↔KERNEL connections are cross-connected in the kernel (TCX)"
                );
                s.redirector = Some(r.clone());
                Ok(Some(r))
            }
            Err(e) if e.unsupported() => {
                s.unavailable = true;
                tracing::warn!("this kernel cannot cross-connect in the kernel ({e}); KERNEL↔KERNEL connections go through the workers (AF_XDP)");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Cross-connects host veths `a` and `b` in the kernel; `Ok(None)` if that cannot be done
    /// on this kernel (or is not configured): the caller uses AF_XDP. Blocks (RTNL).
    pub(super) fn connect(&self, a: &str, b: &str) -> Result<Option<[u32; 2]>, TcxError> {
        let Some(r) = self.redirector()? else {
            return Ok(None);
        };
        match r.connect(a, b) {
            Ok(ends) => Ok(Some(ends)),
            Err(e) if e.unsupported() => {
                self.state().unavailable = true;
                tracing::warn!("this kernel cannot attach the in-kernel cross-connect ({e}); KERNEL↔KERNEL connections go through the workers (AF_XDP)");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Takes back a connection of the previous run cross-connected in the kernel between host
    /// veths `a` and `b`, whatever the configured mode (its traffic never stopped): its ends,
    /// or `None` if it is not cross-connected by vwire's program (the caller tries AF_XDP), as
    /// on a kernel without TCX.
    pub(super) fn adopt(&self, a: &str, b: &str) -> Result<Option<[u32; 2]>, TcxError> {
        let mut s = self.state();
        let r = match &s.redirector {
            Some(r) => r.clone(),
            None => match Redirector::adopt(a) {
                Err(e) if e.unsupported() => return Ok(None),
                Err(e) => return Err(e),
                Ok(None) => return Ok(None),
                Ok(Some(r)) => {
                    let r = Arc::new(r);
                    tracing::info!(
                        prog_id = r.prog_id(),
                        "the in-kernel cross-connect of the previous run taken back"
                    );
                    s.redirector = Some(r.clone());
                    r
                }
            },
        };
        drop(s);
        if !r.connected(a, b)? {
            return Ok(None);
        }
        let index = |n: &str| {
            vwire_mechanisms::afxdp::socket::ifindex(n)
                .ok_or_else(|| TcxError::NoSuchInterface(n.to_string()))
        };
        Ok(Some([index(a)?, index(b)?]))
    }

    /// Removes the cross-connect of the host veths `ends` (their deletion follows).
    pub(super) fn disconnect(&self, ends: [u32; 2]) {
        if let Some(r) = &self.state().redirector {
            r.disconnect(ends);
        }
    }

    /// The counters of a connection cross-connected in the kernel (client's side, then the
    /// endpoint's), as the workers count a port, what they counted before the move included:
    /// what arrives on one host veth is that side's rx and the other side's tx.
    pub(super) fn totals(&self, e: &InKernelEnds) -> Option<[PortTotals; 2]> {
        let r = self.state().redirector.clone()?;
        let [from_client, from_endpoint] = e.ends.map(|i| r.counters(i).unwrap_or_default());
        let side = |rx: Counters, tx: Counters, carried: &PortTotals| {
            let mut t = *carried;
            t.rx_packets += rx.packets;
            t.rx_bytes += rx.bytes;
            t.tx_packets += tx.packets;
            t.tx_bytes += tx.bytes;
            // A redirect the kernel refused (the other side's interface gone or down) is counted
            // where the packet arrived, as the workers count a drop.
            if let Some(d) = t.drops.get_mut(DropReason::LinkDown as usize) {
                *d += rx.drops;
            }
            t
        };
        Some([
            side(from_client, from_endpoint, &e.carried[0]),
            side(from_endpoint, from_client, &e.carried[1]),
        ])
    }
}

fn registry(dp: &SharedDataplane) -> Option<Arc<crate::metrics::Registry>> {
    dp.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|core| core.registry().clone())
}

/// Shows the host veths of `w`, if it is cross-connected in the kernel, as ports in /metrics
/// (the workers' ports show by themselves).
pub(super) fn show_in_metrics(dp: &SharedDataplane, xc: &Arc<InKernel>, w: &Wired) {
    let (Some(e), Some(reg)) = (w.inkernel, registry(dp)) else {
        return;
    };
    let mut ports = reg.kernel_ports.lock().unwrap_or_else(|e| e.into_inner());
    for (side, name) in w.sides.iter().filter_map(Built::host_veth).enumerate() {
        let xc = xc.clone();
        ports.push(crate::metrics::KernelPortEntry {
            name: name.to_string(),
            totals: Box::new(move || {
                xc.totals(&e)
                    .and_then(|t| t.get(side).copied())
                    .unwrap_or_default()
            }),
        });
    }
}

/// Removes what [`show_in_metrics`] showed.
pub(super) fn hide_from_metrics(dp: &SharedDataplane, w: &Wired) {
    let (Some(_), Some(reg)) = (w.inkernel, registry(dp)) else {
        return;
    };
    let names: Vec<&str> = w.sides.iter().filter_map(Built::host_veth).collect();
    reg.kernel_ports
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| !names.contains(&p.name.as_str()));
}

/// How long the mover waits for the wirings in progress to end before moving a connection
/// anyway.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Moves KERNEL↔KERNEL connections wired through the workers into the kernel, one at a time
/// (see the module docs). Its task ends with the element.
#[derive(Debug)]
pub(super) struct Mover {
    queue: tokio::sync::mpsc::UnboundedSender<String>,
    /// Connections being wired now (the mover waits for none).
    wiring: Arc<AtomicUsize>,
}

/// What the mover's task works with.
struct MoverTask {
    metadata: Arc<Metadata>,
    dataplane: SharedDataplane,
    inkernel: Arc<InKernel>,
    switching: Arc<tokio::sync::Mutex<()>>,
    wiring: Arc<AtomicUsize>,
}

impl Mover {
    /// Starts the mover's task (inside a tokio runtime). `switching` is held while a
    /// connection's record changes from the workers to the kernel; Close takes it too.
    pub(super) fn start(
        metadata: Arc<Metadata>,
        dataplane: SharedDataplane,
        inkernel: Arc<InKernel>,
        switching: Arc<tokio::sync::Mutex<()>>,
    ) -> Self {
        let (queue, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let wiring = Arc::new(AtomicUsize::new(0));
        let task = MoverTask {
            metadata,
            dataplane,
            inkernel,
            switching,
            wiring: wiring.clone(),
        };
        tokio::spawn(async move {
            while let Some(id) = rx.recv().await {
                task.wait_for_quiet().await;
                task.move_one(&id).await;
            }
        });
        Self { queue, wiring }
    }

    /// Counts a wiring in progress until the guard drops.
    pub(super) fn wiring(&self) -> WiringGuard {
        self.wiring.fetch_add(1, Ordering::Relaxed);
        WiringGuard(self.wiring.clone())
    }

    /// Whether a connection wired as `w` is to move: KERNEL↔KERNEL through the workers, with
    /// the kernel path wanted.
    pub(super) fn wants(&self, w: &Wired, inkernel: &InKernel) -> bool {
        let both_kernel = w.sides.iter().all(|s| s.host_veth().is_some());
        w.inkernel.is_none() && both_kernel && inkernel.wanted()
    }

    /// Queues connection `id` (recorded in the metadata) for the move.
    pub(super) fn queue(&self, id: &str) {
        let _ = self.queue.send(id.to_string());
    }
}

/// A wiring in progress (see [`Mover::wiring`]).
pub(super) struct WiringGuard(Arc<AtomicUsize>);

impl Drop for WiringGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl MoverTask {
    async fn wait_for_quiet(&self) {
        let t0 = std::time::Instant::now();
        while self.wiring.load(Ordering::Relaxed) > 0 && t0.elapsed() < IDLE_WAIT {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn move_one(&self, id: &str) {
        let t0 = std::time::Instant::now();
        let Some(w) = self.metadata.get::<Wired>(id) else {
            return; // closed meanwhile
        };
        let [Built::Kernel { host: a, .. }, Built::Kernel { host: b, .. }] = &w.sides else {
            return;
        };
        if w.inkernel.is_some() {
            return;
        }
        let (xc, a, b) = (self.inkernel.clone(), a.clone(), b.clone());
        let ends = match tokio::task::spawn_blocking(move || xc.connect(&a, &b)).await {
            Ok(Ok(Some(ends))) => ends,
            Ok(Ok(None)) => return, // the kernel cannot: stays with the workers (logged once)
            Ok(Err(e)) => {
                tracing::warn!(%id, "moving the connection into the kernel: {e}; it stays with the workers");
                return;
            }
            Err(e) => {
                tracing::warn!(%id, "moving the connection into the kernel: {e}");
                return;
            }
        };
        let guard = self.switching.lock().await;
        let Some(w) = self.metadata.get::<Wired>(id) else {
            // Closed while the program was attached: its veths are going.
            self.inkernel.disconnect(ends);
            return;
        };
        // The AF_XDP ports leave: from now on the interfaces' packets reach the program.
        let (dp, key) = (self.dataplane.clone(), id.to_string());
        let removed = tokio::task::spawn_blocking(move || {
            let carried = dp
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(|core| core.totals(&key));
            (carried, crate::dataplane::unwire(&dp, &key))
        })
        .await;
        let Ok((carried, retiring)) = removed else {
            self.inkernel.disconnect(ends);
            return;
        };
        let moved = Wired {
            inkernel: Some(InKernelEnds {
                ends,
                carried: carried.unwrap_or_default(),
            }),
            ..w
        };
        show_in_metrics(&self.dataplane, &self.inkernel, &moved);
        self.metadata.set(id, moved);
        drop(guard);
        let _ = tokio::task::spawn_blocking(move || retiring.finish()).await;
        tracing::info!(%id, ms = t0.elapsed().as_millis(), "connection moved into the kernel");
    }
}
