//! KERNEL↔KERNEL connections cross-connected inside the kernel (`nsm.kernel_xconnect = "tcx"`,
//! the default): the TCX program of `vwire_mechanisms::tcx` joins the two host veths, so a
//! connection between two pods runs at kernel speed with its super-packets, and its traffic does
//! not depend on vwire's process (it flows on while vwire restarts).
//!
//! Contract: one program serves every connection of the process, loaded at the first
//! connection or taken back from a connection of the previous run (`restore`). A kernel that
//! cannot run it (no TCX: Linux < 6.6) is reported once, as a WARN, and every KERNEL↔KERNEL
//! connection goes through the workers over AF_XDP instead; a failure of one connection is that
//! connection's error. Counters come from the program's map, in the shape of the workers'
//! (`PortTotals`), so the PathSegment metrics read the same whichever path a connection took.
//! Calls that attach (connect, adopt) take the RTNL lock: run them off the runtime thread.

use std::sync::{Arc, Mutex};

use vwire_dataplane::counters::{DropReason, PortTotals};
use vwire_mechanisms::tcx::{Redirector, TcxError};

use crate::config::KernelXconnect;

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
    /// or `None` if it is not cross-connected by vwire's program (the caller tries AF_XDP).
    pub(super) fn adopt(&self, a: &str, b: &str) -> Result<Option<[u32; 2]>, TcxError> {
        let mut s = self.state();
        let r = match &s.redirector {
            Some(r) => r.clone(),
            None => match Redirector::adopt(a)? {
                Some(r) => {
                    let r = Arc::new(r);
                    tracing::info!(
                        prog_id = r.prog_id(),
                        "the in-kernel cross-connect of the previous run taken back"
                    );
                    s.redirector = Some(r.clone());
                    r
                }
                None => return Ok(None),
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

    /// The counters of a connection cross-connected between `ends` (client's host veth, then
    /// the endpoint's), as the workers count a port: what arrives on one host veth is that
    /// side's rx and the other side's tx.
    pub(super) fn totals(&self, ends: [u32; 2]) -> Option<[PortTotals; 2]> {
        let r = self.state().redirector.clone()?;
        let [from_client, from_endpoint] = ends.map(|i| r.counters(i).unwrap_or_default());
        let side = |rx: vwire_mechanisms::tcx::Counters, tx: vwire_mechanisms::tcx::Counters| {
            let mut t = PortTotals {
                rx_packets: rx.packets,
                rx_bytes: rx.bytes,
                tx_packets: tx.packets,
                tx_bytes: tx.bytes,
                ..Default::default()
            };
            // A redirect the kernel refused (the other side's interface gone or down) is counted
            // where the packet arrived, as the workers count a drop.
            if let Some(d) = t.drops.get_mut(DropReason::LinkDown as usize) {
                *d = rx.drops;
            }
            t
        };
        Some([
            side(from_client, from_endpoint),
            side(from_endpoint, from_client),
        ])
    }
}

impl super::Xconnect {
    fn registry(&self) -> Option<Arc<crate::metrics::Registry>> {
        self.dataplane
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|core| core.registry().clone())
    }

    /// Shows the host veths of `w`, if it is cross-connected in the kernel, as ports in
    /// /metrics (the workers' ports show by themselves).
    pub(super) fn show_in_metrics(&self, w: &super::Wired) {
        let (Some(ends), Some(reg)) = (w.inkernel, self.registry()) else {
            return;
        };
        let mut ports = reg.kernel_ports.lock().unwrap_or_else(|e| e.into_inner());
        for (side, name) in w
            .sides
            .iter()
            .filter_map(super::Built::host_veth)
            .enumerate()
        {
            let xc = self.inkernel.clone();
            ports.push(crate::metrics::KernelPortEntry {
                name: name.to_string(),
                totals: Box::new(move || {
                    xc.totals(ends)
                        .and_then(|t| t.get(side).copied())
                        .unwrap_or_default()
                }),
            });
        }
    }

    /// Removes what [`Self::show_in_metrics`] showed.
    pub(super) fn hide_from_metrics(&self, w: &super::Wired) {
        let (Some(_), Some(reg)) = (w.inkernel, self.registry()) else {
            return;
        };
        let names: Vec<&str> = w.sides.iter().filter_map(super::Built::host_veth).collect();
        reg.kernel_ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| !names.contains(&p.name.as_str()));
    }
}
