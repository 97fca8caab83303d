//! nsmonitor: closes a connection whose client's network namespace is gone (the sdk-vpp
//! `nsmonitor`, for every local client rather than only for an NSE pod's `pause` process).
//!
//! After each successful request of a connection whose client mechanism is KERNEL or MEMIF with
//! a `file://` `inodeURL`, the namespace is watched; a close stops the watch. When the namespace
//! is gone, the connection is closed through the whole chain, exactly as if its client had sent
//! the Close (so everything the connection made is removed), and that is logged.
//!
//! **Gone** means: no process lives in the namespace and no bind mount names it. A namespace
//! whose `ip netns` name was deleted while a process still runs in it is alive (the client may
//! still use it), and so is one whose process died while `/var/run/netns/<name>` still exists.
//!
//! **How, without keeping it alive.** An open fd of the namespace (or a pidfd's, or a socket in
//! it) holds a reference that keeps the namespace from being destroyed, so the watch holds none:
//! at the request it records the namespace's identity (the nsfs device and inode, by `stat` of
//! the path) and then polls every [`POLL`]:
//!
//! 1. cheap, per connection: the path still `stat`s to that identity (a named namespace still
//!    has its mount; a `/proc/<pid>/ns/net` still has its process). Then it is alive.
//! 2. only for the connections that failed 1, once per tick for all of them: scan
//!    `/proc/<pid>/ns/net` of every process (other than vwire) and the nsfs mounts of
//!    `/proc/self/mountinfo` for the inode. Found: alive (it lost its name but not its life).
//!    Not found: gone.
//!
//! A path under vwire's own `/proc/<pid>/fd/` (an fd received over grpcfd, held by vwire until
//! the close) always passes 1 and says nothing about the client, so such connections go to 2 on
//! every tick. Limits: the scan sees the processes and mounts of vwire's own pid and mount
//! namespaces (run it with hostPID, as upstream's nsmonitor needs); an nsfs inode number reused
//! by a new namespace within one tick of the old one's death would hide it.
//!
//! One poller task serves every watch; it exists only while there are watches (no idle
//! wake-ups), and ends on its own when the last one is removed or the element is dropped.
//!
//! Place it after begin (its close is serialised with the requests of the same id, like
//! timeout's), after recvfd (it needs the `file://` path recvfd makes of a passed namespace, not
//! the client's `inode://` URL) and before mechanisms: it reads the client mechanism that the
//! request returns.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tonic::Status;
use vwire_mechanisms::kernel::netns_url_path;
use vwire_proto::connection::Connection;
use vwire_proto::mechanism::{keys, MechanismType};
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::{BoxFut, Chain, Element, Next};

/// How often the namespaces are checked. 200 ms: the heal contract's scale (the NSC retries a
/// failed refresh every 200 ms) so a gone client is closed within ~0.2–0.4 s, and step 1 is one
/// `stat` per connection, so even thousands of connections cost little per tick.
pub const POLL: Duration = Duration::from_millis(200);

/// A watched namespace.
#[derive(Clone, Debug)]
struct Watch {
    /// The connection as it returned at this element, for the close.
    conn: Connection,
    /// The inodeURL, for the log.
    url: String,
    path: PathBuf,
    /// nsfs device and inode at the request.
    ident: (u64, u64),
    /// The path is one of vwire's own fds: its `stat` says nothing about the client.
    own_fd: bool,
}

#[derive(Default)]
struct State {
    watches: HashMap<String, Watch>,
    poller: Option<JoinHandle<()>>,
}

/// The nsmonitor element.
#[derive(Default)]
pub struct NsMonitor {
    state: Mutex<State>,
    chain: OnceLock<Weak<Chain>>,
}

/// The namespace path of the client mechanism of `conn`, if it is watched: KERNEL or MEMIF with
/// a `file://` (or plain path) `inodeURL`.
fn watched_path(conn: &Connection) -> Option<(String, PathBuf)> {
    let m = conn.mechanism.as_ref()?;
    match m.mechanism_type() {
        Ok(MechanismType::Kernel | MechanismType::Memif) => {}
        _ => return None,
    }
    let url = m.parameters.get(keys::INODE_URL)?;
    let path = netns_url_path(url).ok()?;
    Some((url.clone(), PathBuf::from(path)))
}

fn ident(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// True if `path` is under vwire's own `/proc/<pid>/fd/` (or `/proc/self/fd/`).
fn is_own_fd(path: &Path) -> bool {
    let own = PathBuf::from(format!("/proc/{}", std::process::id()));
    ["/proc/self", "/proc/thread-self"]
        .iter()
        .map(PathBuf::from)
        .chain([own])
        .any(|p| path.starts_with(&p) && !path.starts_with(p.join("ns")))
}

/// The inode in an nsfs link or mount root such as `net:[4026531840]`.
fn ns_inode(s: &str) -> Option<u64> {
    s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// The inodes of the network namespaces that are alive other than through vwire: those some
/// other process is in, and those an nsfs bind mount names.
fn live_namespaces() -> HashSet<u64> {
    let me = std::process::id().to_string();
    let mut live = HashSet::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            if let Ok(link) = std::fs::read_link(e.path().join("ns/net")) {
                live.extend(link.to_str().and_then(ns_inode));
            }
        }
    }
    // mountinfo: "id parent major:minor root mountpoint ... - fstype source options"; an nsfs
    // bind mount has root `net:[inode]`.
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in mounts.lines() {
            let is_nsfs = line
                .split(" - ")
                .nth(1)
                .is_some_and(|t| t.starts_with("nsfs "));
            if is_nsfs {
                live.extend(line.split(' ').nth(3).and_then(ns_inode));
            }
        }
    }
    live
}

/// The ids of `watches` whose namespace is gone.
fn gone(watches: &[(String, Watch)]) -> Vec<String> {
    let suspects: Vec<&(String, Watch)> = watches
        .iter()
        .filter(|(_, w)| w.own_fd || ident(&w.path) != Some(w.ident))
        .collect();
    if suspects.is_empty() {
        return Vec::new();
    }
    let live = live_namespaces();
    suspects
        .into_iter()
        .filter(|(_, w)| !live.contains(&w.ident.1))
        .map(|(id, _)| id.clone())
        .collect()
}

impl NsMonitor {
    /// An nsmonitor element; [`NsMonitor::attach`] it to its chain once the chain is built.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Lets the poller close connections through `chain`.
    pub fn attach(&self, chain: &Arc<Chain>) {
        let _ = self.chain.set(Arc::downgrade(chain));
    }

    /// Connections whose namespace is watched.
    pub fn watched(&self) -> usize {
        self.lock().watches.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn watch(self: &Arc<Self>, conn: &Connection) {
        let Some((url, path)) = watched_path(conn) else {
            self.unwatch(&conn.id);
            return;
        };
        let Some(ident) = ident(&path) else {
            tracing::warn!(id = %conn.id, "cannot stat the client's namespace {url}: not watched");
            self.unwatch(&conn.id);
            return;
        };
        let own_fd = is_own_fd(&path);
        let mut st = self.lock();
        st.watches.insert(
            conn.id.clone(),
            Watch {
                conn: conn.clone(),
                url,
                path,
                ident,
                own_fd,
            },
        );
        if st.poller.as_ref().is_none_or(|p| p.is_finished()) {
            st.poller = Some(tokio::spawn(poll(Arc::downgrade(self))));
        }
    }

    fn unwatch(&self, id: &str) -> Option<Watch> {
        self.lock().watches.remove(id)
    }
}

/// The poller: every [`POLL`], closes the connections whose namespace is gone. Ends when there
/// is nothing to watch or the element is gone.
async fn poll(me: Weak<NsMonitor>) {
    loop {
        tokio::time::sleep(POLL).await;
        let Some(this) = me.upgrade() else { return };
        let watches: Vec<(String, Watch)> = {
            let mut st = this.lock();
            if st.watches.is_empty() {
                st.poller = None; // a later watch starts a new poller
                return;
            }
            st.watches
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let Ok(gone) = tokio::task::spawn_blocking(move || gone(&watches)).await else {
            continue;
        };
        for id in gone {
            let Some(w) = this.unwatch(&id) else { continue };
            tracing::info!(%id, "the client's network namespace {} is gone: closing the connection", w.url);
            let Some(chain) = this.chain.get().and_then(Weak::upgrade) else {
                continue;
            };
            tokio::spawn(async move {
                if let Err(e) = chain.close(w.conn).await {
                    tracing::warn!(%id, "closing the connection of a gone namespace: {e}");
                }
            });
        }
    }
}

impl Element for Arc<NsMonitor> {
    fn name(&self) -> &'static str {
        "nsmonitor"
    }

    fn request<'a>(
        &'a self,
        req: NetworkServiceRequest,
        next: Next<'a>,
    ) -> BoxFut<'a, Result<Connection, Status>> {
        Box::pin(async move {
            let c = next.request(req).await?;
            self.watch(&c);
            Ok(c)
        })
    }

    fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
        Box::pin(async move {
            self.unwatch(&conn.id);
            next.close(conn).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::tests::Recorder;
    use crate::elements::begin::Begin;
    use vwire_proto::connection::Mechanism;

    fn request(id: &str, ty: &str, url: &str) -> NetworkServiceRequest {
        NetworkServiceRequest {
            connection: Some(Connection {
                id: id.into(),
                mechanism: Some(Mechanism {
                    cls: "LOCAL".into(),
                    r#type: ty.into(),
                    parameters: [(keys::INODE_URL.to_string(), url.to_string())].into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn paths_and_inodes_are_parsed() {
        assert_eq!(ns_inode("net:[4026531840]"), Some(4026531840));
        assert_eq!(ns_inode("mnt:[4026531840]"), None);
        assert!(is_own_fd(Path::new("/proc/self/fd/7")));
        assert!(is_own_fd(Path::new(&format!(
            "/proc/{}/fd/7",
            std::process::id()
        ))));
        assert!(!is_own_fd(Path::new("/proc/self/ns/net")));
        assert!(!is_own_fd(Path::new("/proc/1/fd/7")));
        assert!(!is_own_fd(Path::new("/var/run/netns/x")));
        // This process's own namespace is alive through its other threads' view: at least
        // the init namespace is in use by some process or mount on any running system.
        assert!(!live_namespaces().is_empty());
    }

    /// A "namespace" path that vanishes: a plain file stands in for the nsfs file, and its inode
    /// is in no process's ns/net, so once it is removed the connection is closed through the
    /// chain; a KERNEL connection on a path that stays is not, nor is a VXLAN one.
    #[tokio::test(flavor = "current_thread")]
    async fn a_vanished_namespace_closes_its_connection_through_the_chain() {
        let dir = std::env::temp_dir().join(format!("vwire-nsmon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (gone_path, kept_path) = (dir.join("gone"), dir.join("kept"));
        std::fs::write(&gone_path, b"").unwrap();
        std::fs::write(&kept_path, b"").unwrap();
        let url = |p: &Path| format!("file://{}", p.display());

        let rec = Arc::new(Recorder::default());
        let nsmon = NsMonitor::new();
        let begin = Arc::new(Begin::new());
        let chain = Arc::new(Chain::new(vec![
            begin.clone(),
            Arc::new(nsmon.clone()),
            rec.clone(),
        ]));
        nsmon.attach(&chain);
        for (id, ty, u) in [
            ("a", "KERNEL", url(&gone_path)),
            ("b", "MEMIF", url(&kept_path)),
            ("c", "VXLAN", url(&gone_path)),
        ] {
            chain.request(request(id, ty, &u)).await.unwrap();
        }
        assert_eq!(nsmon.watched(), 2, "KERNEL and MEMIF only");
        tokio::time::sleep(POLL * 2).await;
        assert!(rec.closes.lock().unwrap().is_empty(), "both paths exist");

        std::fs::remove_file(&gone_path).unwrap();
        tokio::time::sleep(POLL * 3).await;
        let closed: Vec<String> = rec
            .closes
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.id.clone())
            .collect();
        assert_eq!(closed, ["a"], "the vanished one, through the chain");
        assert_eq!(begin.len(), 2, "the close went through begin");
        assert_eq!(nsmon.watched(), 1);

        // A client close ends the last watch, and the poller with it.
        chain
            .close(Connection {
                id: "b".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(nsmon.watched(), 0);
        tokio::time::sleep(POLL * 2).await;
        assert!(nsmon.lock().poller.is_none(), "no poller without watches");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
