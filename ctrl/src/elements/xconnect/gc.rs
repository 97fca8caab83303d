//! Garbage collection of veths that belong to no connection: those a killed vwire left behind
//! (no Close ever came), and any a lost teardown left.
//!
//! What is vwire's: the host ends of the veths this instance makes carry its link group
//! ([`kernel::owned_group`] of its NSM listen URL), set in the creating `RTM_NEWLINK`; veths
//! caught in [`kernel::DELETE_GROUP`] were being deleted by a vwire when it died. Nothing else
//! is ever touched: not other groups, not another instance's group, not a link that is not a
//! veth. Deleting a host end deletes its peer in the client's or endpoint's namespace, and with
//! it the addresses, routes and neighbours vwire put there, and the XDP attachment.
//!
//! What is live: the names in [`Owned`], which the xconnect element fills before it creates a
//! veth and empties after the veth is deleted. A collection holds the set's lock from listing
//! the links to deleting the orphans, so no Request can create a veth in between: every veth
//! of the group that is not in the set at that moment is an orphan.
//!
//! It runs at start (before the first Request can be served the set is empty, so every
//! leftover goes) and every [`GC_PERIOD`] after; each removal is logged and counted in
//! `vwire_gc_removed_total{kind="veth"}`.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use vwire_mechanisms::kernel::{self, KernelError, NetlinkIn, Netns};

use crate::dataplane::SharedDataplane;

/// How often the collection runs after the first.
pub(super) const GC_PERIOD: Duration = Duration::from_secs(60);

/// The host veth names of this instance's connections: built, being built, being torn down.
pub(super) type Owned = Arc<Mutex<HashSet<String>>>;

/// Removes this instance's orphaned veths (see the module docs) and returns their names.
///
/// # Errors
/// The netlink failure that stopped it from listing the links; deletions that fail are logged.
pub(super) async fn collect(
    owned: &Owned,
    group: u32,
    dataplane: &SharedDataplane,
) -> Result<Vec<String>, KernelError> {
    let host = NetlinkIn::new(&Netns::current()?).await?;
    let live = owned.lock().await;
    let orphans: Vec<String> = host
        .links()
        .await?
        .into_iter()
        .filter(|l| l.is_veth())
        .filter(|l| {
            l.group == kernel::DELETE_GROUP || (l.group == group && !live.contains(&l.name))
        })
        .map(|l| l.name)
        .collect();
    if orphans.is_empty() {
        return Ok(orphans);
    }
    for name in &orphans {
        tracing::info!(veth = %name, "garbage collection: removing a veth that belongs to no connection");
    }
    let failed = kernel::delete_veths(&host, &orphans).await;
    drop(live);
    for e in &failed {
        tracing::warn!("garbage collection: {e}");
    }
    let removed = orphans.len().saturating_sub(failed.len());
    if let Some(core) = dataplane.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        core.registry().gc_removed_veths.fetch_add(
            u64::try_from(removed).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
    Ok(orphans)
}

/// Collects now, then every [`GC_PERIOD`], for as long as the runtime runs.
pub(super) async fn run(owned: Owned, group: u32, dataplane: SharedDataplane) {
    let mut tick = tokio::time::interval(GC_PERIOD);
    loop {
        tick.tick().await;
        if let Err(e) = collect(&owned, group, &dataplane).await {
            tracing::warn!("garbage collection: {e}");
        }
    }
}
