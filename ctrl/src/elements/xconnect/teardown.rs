//! Undoing a connection: on Close, the cross-connect (ports and memif sockets) and then the veth
//! pairs; after a failed build, the veth pairs it created.
//!
//! Contract: teardown never fails; what cannot be removed is logged. A connection cross-connected
//! in the kernel loses its map entries (and its /metrics ports) first; the attachments go with
//! the veths. The ports leave the
//! dataplane before their devices are deleted (in a batch with other Closes: `reaper`), and
//! their sockets are closed after.

use vwire_mechanisms::kernel::{self, NetlinkIn};

use super::{Built, Wired, Xconnect};

impl Xconnect {
    pub(super) async fn unwire(&self, id: &str, w: &Wired) {
        let t0 = std::time::Instant::now();
        // The ports leave the table and their worker first. Their sockets are closed only after
        // the veths are gone: deleting a device unbinds its AF_XDP sockets and detaches its XDP
        // program inside the kernel's own teardown (whose grace periods are expedited), while
        // closing them first costs a normal RCU grace period each.
        let retiring = match w.inkernel {
            Some(e) => {
                super::inkernel::hide_from_metrics(&self.dataplane, w);
                self.inkernel.disconnect(e.ends);
                None
            }
            None => {
                let (dp, key) = (self.dataplane.clone(), id.to_string());
                tokio::task::spawn_blocking(move || crate::dataplane::unwire(&dp, &key))
                    .await
                    .map_err(|e| tracing::warn!("cross-connect removal task: {e}"))
                    .ok()
            }
        };
        tracing::debug!(%id, ms = t0.elapsed().as_millis(), "cross-connect removed");
        let veths = w
            .sides
            .iter()
            .filter_map(Built::host_veth)
            .map(str::to_string)
            .collect();
        self.reaper.reap(veths, retiring).await;
        self.disown(w.sides.iter().filter_map(Built::host_veth))
            .await;
        tracing::debug!(%id, ms = t0.elapsed().as_millis(), "veths deleted, ports closed");
    }
}

impl Xconnect {
    /// Records host veth names as this instance's before they are created.
    pub(super) async fn own<'a>(&self, names: impl Iterator<Item = &'a str>) {
        let mut owned = self.owned.lock().await;
        owned.extend(names.map(str::to_string));
    }

    /// Forgets host veth names once they are deleted.
    pub(super) async fn disown<'a>(&self, names: impl Iterator<Item = &'a str>) {
        let mut owned = self.owned.lock().await;
        for n in names {
            owned.remove(n);
        }
    }
}

/// Deletes the host ends of the veths in `built`, after a failed build.
pub(super) async fn undo_veths(host: &NetlinkIn, built: &[Built]) {
    for h in built.iter().filter_map(Built::host_veth) {
        let _ = kernel::delete_veth(host, h).await;
    }
}
