//! A restart that keeps the datapath: recording connections, taking them back at start, and
//! adopting them at their first refresh.
//!
//! A KERNEL↔KERNEL connection's veths outlive a vwire killed with SIGKILL: the pods keep their
//! interfaces, addresses and routes, only the AF_XDP sockets (and with them the XDP programs)
//! go. At start, before the NSM API is served and before the garbage collection runs, each
//! record of `state` whose two host veths still exist in this instance's link group is taken
//! back, its veths marked as owned: a connection the previous run had moved into the kernel
//! (`inkernel`) still has its TCX program, whose traffic never stopped, and is adopted with it;
//! any other gets its AF_XDP ports opened and cross-connected again (traffic flows again without
//! the pods seeing a link change) and moves into the kernel at its first refresh when the kernel
//! path is wanted. The connection then waits in
//! `Xconnect::recovered` for its first refresh (nsmgr's heal or the client's own), which adopts
//! it when it asks for the same interfaces, or rebuilds it when it does not; a Close or the
//! expiry (timeout, with a grace) tears it down as any other.
//!
//! Contract: a record that cannot be taken back (unreadable, its veths gone or not this
//! instance's, the ports failing to open) is logged and removed; its veths, if any, are left to
//! the garbage collection, which runs right after. Nothing else of the kernel is touched here.

use std::collections::HashMap;

use vwire_dataplane::table::Rewrite;
use vwire_mechanisms::kernel::{NetlinkIn, Netns};
use vwire_proto::connection::Connection;

use super::plan::{plan, Plan, Side};
use super::state::{KernelSide, Record};
use super::{short_tag, Built, Wired, Xconnect};
use vwire_mechanisms::afxdp::AfXdpError;

use crate::dataplane::{DataplaneError, PortSpec, Wiring};
use crate::elements::connect::Downstream;

/// How long, from the start of the restore, ports wait for the XDP attachments of the killed
/// process to go.
const OLD_LINKS_GONE: std::time::Duration = std::time::Duration::from_secs(2);

/// The mechanism parameter that names a namespace file (`nsm-api.md` §4).
const INODE_URL: &str = "inodeURL";

impl Xconnect {
    /// Records the connection `id` as returned (`c`) and wired (`w`), when it is one a restart
    /// can take back (KERNEL on both sides); a failure to write is logged.
    pub(super) fn record(&self, id: &str, c: &Connection, w: &Wired) {
        let [Built::Kernel {
            host: h0,
            iface: i0,
        }, Built::Kernel {
            host: h1,
            iface: i1,
        }] = &w.sides
        else {
            return;
        };
        let mut connection = c.clone();
        // A namespace received as an fd is named by this process's /proc path below recvfd;
        // the record keeps the `inode://` name it came with, which outlives the process.
        if let Some(m) = connection.mechanism.as_mut() {
            if let Some(url) = m.parameters.get_mut(INODE_URL) {
                if let Some(inode) = inode_url_of(url) {
                    *url = inode;
                }
            }
        }
        let record = Record {
            connection,
            sides: [
                KernelSide {
                    host: h0.clone(),
                    iface: i0.clone(),
                },
                KernelSide {
                    host: h1.clone(),
                    iface: i1.clone(),
                },
            ],
        };
        if let Err(e) = self.store.save(&short_tag(id), &record) {
            tracing::warn!(%id, "recording the connection (a restart would drop it): {e}");
        }
    }

    /// Removes the record of `id` (before its teardown: a crash in between leaves garbage,
    /// never a record of something half gone).
    pub(super) fn forget(&self, id: &str) {
        if let Err(e) = self.store.remove(&short_tag(id)) {
            tracing::warn!(%id, "removing the connection's record: {e}");
        }
    }

    /// True if the refreshed connection `c` asks for the interfaces `w` has: the same names on
    /// both sides.
    pub(super) fn same_sides(&self, id: &str, c: &Connection, w: &Wired) -> bool {
        let tag = short_tag(id);
        let Some(down) = self.metadata.get::<Downstream>(id) else {
            return false;
        };
        let wanted = [
            (Side::Client, c.mechanism.as_ref()),
            (Side::Endpoint, down.0.mechanism.as_ref()),
        ];
        wanted
            .iter()
            .zip(&w.sides)
            .all(|((side, m), built)| match (plan(*m, *side, &tag), built) {
                (Ok(Plan::Kernel { name, .. }), Built::Kernel { host, iface }) => {
                    name == *iface && *host == format!("{}{tag}", side.prefix())
                }
                _ => false,
            })
    }

    /// Takes back the recorded connections whose veths are still there (see the module docs).
    pub(super) async fn restore(&self) -> Vec<Connection> {
        let records = self.store.load();
        if records.is_empty() {
            return Vec::new();
        }
        let t0 = std::time::Instant::now();
        let links = match Netns::current() {
            Ok(ns) => match NetlinkIn::new(&ns).await {
                Ok(nl) => nl.links().await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let links: HashMap<String, u32> = match links {
            Ok(l) => l
                .into_iter()
                .filter(|l| l.is_veth())
                .map(|l| (l.name, l.group))
                .collect(),
            Err(e) => {
                tracing::warn!("taking connections back after a restart: listing links: {e}");
                HashMap::new()
            }
        };
        // One window for all: the old links go together, and a program that is not the killed
        // process's must not hold up every record.
        let until = std::time::Instant::now() + OLD_LINKS_GONE;
        let mut back = Vec::new();
        for r in records {
            let (tag, record) = match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("dropping a connection record: {e}");
                    continue;
                }
            };
            let id = record.connection.id.clone();
            let gone: Vec<&str> = record
                .sides
                .iter()
                .map(|s| s.host.as_str())
                .filter(|h| links.get(*h) != Some(&self.group))
                .collect();
            let problem = if short_tag(&id) != tag {
                Some(format!("recorded as {tag}, which is not its tag"))
            } else if !gone.is_empty() {
                Some(format!("its veths are gone: {}", gone.join(", ")))
            } else {
                None
            };
            if let Some(why) = problem {
                tracing::info!(%id, "not taking the connection back: {why}");
                self.forget(&id);
                continue;
            }
            // Cross-connected in the kernel by the previous run: its traffic never stopped.
            let (xc, a, b) = (
                self.inkernel.clone(),
                record.sides[0].host.clone(),
                record.sides[1].host.clone(),
            );
            let found = tokio::task::spawn_blocking(move || xc.adopt(&a, &b))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            let inkernel = match found {
                Ok(ends) => ends.map(super::inkernel::InKernelEnds::new),
                Err(e) => {
                    tracing::warn!(%id, "looking for the connection's in-kernel cross-connect: {e}");
                    None
                }
            };
            if inkernel.is_none() && !self.reopen_ports(&id, &record, until).await {
                self.forget(&id);
                continue;
            }
            self.own(record.sides.iter().map(|s| s.host.as_str())).await;
            let w = Wired {
                sides: record.sides.clone().map(|s| Built::Kernel {
                    host: s.host,
                    iface: s.iface,
                }),
                inkernel,
            };
            super::inkernel::show_in_metrics(&self.dataplane, &self.inkernel, &w);
            tracing::info!(%id, client = %w.sides[0].describe(), endpoint = %w.sides[1].describe(), in_kernel = inkernel.is_some(), "connection taken back after a restart");
            self.recovered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, w);
            back.push(record.connection);
        }
        tracing::info!(
            connections = back.len(),
            ms = t0.elapsed().as_millis(),
            "connections taken back after a restart"
        );
        back
    }

    /// Opens the AF_XDP ports of a recorded connection and cross-connects them again, retrying
    /// while the killed process's XDP links are still attached (until `until`); false (logged)
    /// if they cannot be opened.
    async fn reopen_ports(&self, id: &str, record: &Record, until: std::time::Instant) -> bool {
        let specs = record
            .sides
            .clone()
            .map(|s| PortSpec::Afxdp { ifname: s.host });
        let (dp, key) = (self.dataplane.clone(), id.to_string());
        let wired = tokio::task::spawn_blocking(move || {
                let refs: Vec<&PortSpec> = specs.iter().collect();
                // The killed process's XDP links are released by the kernel after its exit
                // (deferred work): until then the interface still has its old program.
                let t0 = std::time::Instant::now();
                loop {
                    let wiring = Wiring::Xconnect([Rewrite::None; 2]);
                    match crate::dataplane::wire(&dp, &key, &refs, wiring) {
                        Err(DataplaneError::Port {
                            source: AfXdpError::Busy(_),
                            ..
                        }) if std::time::Instant::now() < until => {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                        r => {
                            tracing::debug!(id = %key, waited_ms = t0.elapsed().as_millis(), "ports reopened");
                            break r;
                        }
                    }
                }
            })
            .await;
        match wired {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(%id, "not taking the connection back: opening its ports: {e}");
                false
            }
            Err(e) => {
                tracing::warn!(%id, "not taking the connection back: {e}");
                false
            }
        }
    }
}

/// `inode://<dev>/<ino>` of the file a `file:///proc/...` URL names, if it is one.
fn inode_url_of(url: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let path = url
        .strip_prefix("file://")
        .filter(|p| p.starts_with("/proc/"))?;
    let m = std::fs::metadata(path).ok()?;
    Some(format!("inode://{}/{}", m.dev(), m.ino()))
}
