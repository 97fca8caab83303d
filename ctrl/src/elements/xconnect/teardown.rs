//! Undoing a connection: on Close, the cross-connect (ports and memif sockets) and then the veth
//! pairs; after a failed build, the veth pairs it created.
//!
//! Contract: teardown never fails; what cannot be removed is logged. The ports leave the
//! dataplane before their devices are deleted, and their sockets are closed after.

use vwire_mechanisms::kernel::{self, NetlinkIn, Netns};

use super::{Built, Wired, Xconnect};

impl Xconnect {
    pub(super) async fn unwire(&self, id: &str, w: &Wired) {
        let t0 = std::time::Instant::now();
        // The ports leave the table and their worker first. Their sockets are closed only after
        // the veths are gone: deleting a device unbinds its AF_XDP sockets and detaches its XDP
        // program inside the kernel's own teardown (whose grace periods are expedited), while
        // closing them first costs a normal RCU grace period each.
        let (dp, key) = (self.dataplane.clone(), id.to_string());
        let retiring = tokio::task::spawn_blocking(move || crate::dataplane::unwire(&dp, &key))
            .await
            .map_err(|e| tracing::warn!("cross-connect removal task: {e}"))
            .ok();
        tracing::debug!(%id, ms = t0.elapsed().as_millis(), "cross-connect removed");
        self.delete_veths(w).await;
        if let Some(r) = retiring {
            if let Err(e) = tokio::task::spawn_blocking(move || r.finish()).await {
                tracing::warn!("closing the ports: {e}");
            }
        }
        tracing::debug!(%id, ms = t0.elapsed().as_millis(), "ports closed");
    }

    async fn delete_veths(&self, w: &Wired) {
        let veths: Vec<&str> = w.sides.iter().filter_map(Built::host_veth).collect();
        if veths.is_empty() {
            return;
        }
        match Netns::current().map(|ns| async move { NetlinkIn::new(&ns).await }) {
            Ok(f) => match f.await {
                Ok(host) => {
                    // Each deletion waits on the kernel (device unregistration): both at once.
                    let host = &host;
                    async fn delete(host: &NetlinkIn, h: &str) {
                        if let Err(e) = kernel::delete_veth(host, h).await {
                            tracing::warn!("deleting {h}: {e}");
                        }
                    }
                    match veths.as_slice() {
                        [a, b] => {
                            tokio::join!(delete(host, a), delete(host, b));
                        }
                        [a] => delete(host, a).await,
                        _ => {}
                    }
                }
                Err(e) => tracing::warn!("netlink: {e}"),
            },
            Err(e) => tracing::warn!("netns: {e}"),
        }
    }
}

/// Deletes the host ends of the veths in `built`, after a failed build.
pub(super) async fn undo_veths(host: &NetlinkIn, built: &[Built]) {
    for h in built.iter().filter_map(Built::host_veth) {
        let _ = kernel::delete_veth(host, h).await;
    }
}
