//! recvfd: the files a client sends with its Request over grpcfd (nsm-api.md §7).
//!
//! A client on a unix socket (nsmgr, an NSC) names its network namespace as
//! `parameters["inodeURL"] = "inode://<dev>/<ino>"` and sends the namespace's file descriptor
//! alongside the HTTP/2 bytes. For the connection's mechanism and every mechanism preference,
//! this element waits (up to the dial timeout) for the fd of each `inode://` URL on the calling
//! gRPC connection ([`crate::chain::peer_fds`]), holds it, and rewrites the parameter to
//! `file:///proc/<pid>/fd/<n>` for the elements below, which open namespaces by path. On the way
//! back up the returned connection gets the client's `inode://` URL again, so the client (and
//! the monitor stream) sees its own names.
//!
//! Holding: the fds of a connection are held from its Request to its Close (a namespace stays
//! open as long as vwire's interfaces live in it). A refresh reuses the fd held for the same URL
//! (a client re-sends it, which replaces grpcfd's copy and is dropped with the gRPC connection);
//! a URL the refresh no longer names is released. A failed first Request releases everything (the
//! metadata entry goes with it).
//!
//! Errors (InvalidArgument, naming the parameter and the URL): a malformed `inode://` URL, an
//! `inode://` URL over a connection that cannot carry fds (TCP), or no fd within the timeout.
//! A Close does not wait for fds: it uses the held ones, or passes the URL on unchanged.
//!
//! Place it after metadata (it keeps its fds there) and after monitor (which must see the
//! client's URLs), before the mechanism elements that read `inodeURL`.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tonic::Status;
use vwire_proto::connection::{Connection, Mechanism};
use vwire_proto::mechanism::keys;
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::{connection_of, peer_fds, BoxFut, Element, Next};
use crate::elements::metadata::Metadata;
use crate::transport::proc_fd_url;

/// The prefix of the URLs this element resolves.
const INODE_SCHEME: &str = "inode://";

/// The files a connection holds: `inode://` URL → (the fd, its `file://` path).
#[derive(Default)]
struct Held(HashMap<String, (OwnedFd, String)>);

impl Held {
    /// The held `file://` URL of `inode`, if any.
    fn file_of(&self, inode: &str) -> Option<&str> {
        self.0.get(inode).map(|(_, f)| f.as_str())
    }
}

/// The recvfd element.
pub struct RecvFd {
    metadata: Arc<Metadata>,
    timeout: Duration,
}

impl RecvFd {
    /// Holds its files in `metadata`; waits up to `timeout` for each (NSM_DIAL_TIMEOUT).
    pub fn new(metadata: Arc<Metadata>, timeout: Duration) -> Self {
        Self { metadata, timeout }
    }

    /// The `file://` URL for `inode`: held by this connection before (`old`), received now
    /// (moved into `now`), or waited for on the calling connection.
    async fn resolve(&self, inode: &str, old: &mut Held, now: &mut Held) -> Result<String, Status> {
        if let Some(file) = now.file_of(inode) {
            return Ok(file.to_string());
        }
        if let Some((fd, file)) = old.0.remove(inode) {
            now.0.insert(inode.to_string(), (fd, file.clone()));
            return Ok(file);
        }
        let bad = |why: String| {
            Status::invalid_argument(format!(
                "connection.mechanism.parameters[{}]: {inode}: {why}",
                keys::INODE_URL
            ))
        };
        let fds = peer_fds().ok_or_else(|| {
            bad(
                "an inode:// URL needs its file descriptor, which only a unix socket carries"
                    .into(),
            )
        })?;
        let fd = fds.recv_url(inode, self.timeout).await.map_err(|e| {
            bad(format!(
                "no file descriptor for it arrived with the request within {:?} ({e})",
                self.timeout
            ))
        })?;
        let file = proc_fd_url(fd.as_fd());
        now.0.insert(inode.to_string(), (fd, file.clone()));
        Ok(file)
    }
}

/// The `inode://` value of `m`'s `inodeURL`, if it has one.
fn inode_url(m: &Mechanism) -> Option<String> {
    m.parameters
        .get(keys::INODE_URL)
        .filter(|v| v.starts_with(INODE_SCHEME))
        .cloned()
}

/// Puts the client's `inode://` URLs back where `held`'s `file://` URLs stand in `conn`.
fn restore(conn: &mut Connection, held: &Held) {
    if let Some(v) = conn
        .mechanism
        .as_mut()
        .and_then(|m| m.parameters.get_mut(keys::INODE_URL))
    {
        if let Some(inode) = held.0.iter().find(|(_, (_, f))| f == v).map(|(i, _)| i) {
            v.clone_from(inode);
        }
    }
}

impl Element for RecvFd {
    fn name(&self) -> &'static str {
        "recvfd"
    }

    fn request<'a>(
        &'a self,
        req: NetworkServiceRequest,
        next: Next<'a>,
    ) -> BoxFut<'a, Result<Connection, Status>> {
        Box::pin(async move {
            let mut req = req;
            let id = connection_of(&req)?.id.clone();
            let mut old = self.metadata.take::<Held>(&id).unwrap_or_default();
            let mut now = Held::default();
            let mechanisms = req
                .connection
                .iter_mut()
                .filter_map(|c| c.mechanism.as_mut())
                .chain(req.mechanism_preferences.iter_mut());
            let mut resolved = Ok(());
            for m in mechanisms {
                let Some(inode) = inode_url(m) else { continue };
                match self.resolve(&inode, &mut old, &mut now).await {
                    Ok(file) => {
                        m.parameters.insert(keys::INODE_URL.into(), file);
                    }
                    Err(s) => {
                        resolved = Err(s);
                        break;
                    }
                }
            }
            if let Err(s) = resolved {
                // A refresh that failed here leaves the connection as it was.
                now.0.extend(old.0);
                self.metadata.set(&id, now);
                return Err(s);
            }
            match next.request(req).await {
                Ok(mut conn) => {
                    restore(&mut conn, &now);
                    self.metadata.set(&id, now); // `old`'s leftovers close here
                    Ok(conn)
                }
                Err(s) => {
                    now.0.extend(old.0);
                    self.metadata.set(&id, now);
                    Err(s)
                }
            }
        })
    }

    fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
        Box::pin(async move {
            let mut conn = conn;
            let held = self.metadata.take::<Held>(&conn.id).unwrap_or_default();
            if let Some(m) = conn.mechanism.as_mut() {
                if let Some(file) = inode_url(m).and_then(|i| held.file_of(&i).map(String::from)) {
                    m.parameters.insert(keys::INODE_URL.into(), file);
                }
            }
            let r = next.close(conn).await;
            drop(held); // the files close after the elements below have used them
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{with_peer_fds, Chain};
    use crate::elements::metadata::MetadataElement;
    use crate::transport::FdConn;
    use vwire_proto::mechanism::MechanismType;

    /// Records the inodeURL the elements below see, and answers with the request's mechanism.
    struct Below(std::sync::Mutex<Vec<String>>);

    impl Element for Below {
        fn name(&self) -> &'static str {
            "below"
        }

        fn request<'a>(
            &'a self,
            req: NetworkServiceRequest,
            _next: Next<'a>,
        ) -> BoxFut<'a, Result<Connection, Status>> {
            Box::pin(async move {
                let conn = req.connection.unwrap_or_default();
                let url = conn
                    .mechanism
                    .as_ref()
                    .and_then(|m| m.parameters.get(keys::INODE_URL));
                self.0
                    .lock()
                    .unwrap()
                    .push(url.cloned().unwrap_or_default());
                Ok(conn)
            })
        }
        fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
            Box::pin(async move {
                let url = conn
                    .mechanism
                    .as_ref()
                    .and_then(|m| m.parameters.get(keys::INODE_URL));
                self.0
                    .lock()
                    .unwrap()
                    .push(url.cloned().unwrap_or_default());
                next.close(conn).await
            })
        }
    }

    fn request(url: &str) -> NetworkServiceRequest {
        let mut m = MechanismType::Kernel.mechanism();
        m.parameters.insert(keys::INODE_URL.into(), url.into());
        NetworkServiceRequest {
            connection: Some(Connection {
                id: "c1".into(),
                mechanism: Some(m),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn chain(md: &Arc<Metadata>, below: Arc<Below>, timeout: Duration) -> Chain {
        Chain::new(vec![
            Arc::new(MetadataElement::new(md.clone())),
            Arc::new(RecvFd::new(md.clone(), timeout)),
            below,
        ])
    }

    /// A connected socket pair, the `FdConn` of its receiving side, and a sender that queues
    /// fds on the other side.
    async fn pair() -> (FdConn, FdConn, Vec<tokio::task::JoinHandle<()>>) {
        use crate::transport::FdStream;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let tx = FdConn::new();
        let rx_stream = FdStream::accept(b);
        let rx = rx_stream.conn().clone();
        let mut tx_stream = FdStream::join(a, &tx);
        let mut rx_stream = rx_stream;
        let writer = tokio::spawn(async move {
            // Keep writing single bytes so queued fds go out.
            for _ in 0..200 {
                if tx_stream.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while matches!(rx_stream.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        (tx, rx, vec![writer, reader])
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_inode_url_becomes_a_held_file_and_comes_back() {
        let (tx, rx, tasks) = pair().await;
        let ns = std::fs::File::open("/proc/self/ns/net").unwrap();
        let url = tx.send(ns.as_fd()).unwrap().to_string();
        let md = Metadata::new();
        let below = Arc::new(Below(Default::default()));
        let c = chain(&md, below.clone(), Duration::from_secs(2));
        let got = with_peer_fds(Some(rx.clone()), c.request(request(&url)))
            .await
            .unwrap();
        // The client gets its URL back; the elements below saw a file that is the namespace.
        let back = got.mechanism.unwrap().parameters[keys::INODE_URL].clone();
        assert_eq!(back, url);
        let seen = below.0.lock().unwrap()[0].clone();
        let path = seen.strip_prefix("file://").expect("a file:// URL");
        let same = |p: &str| {
            use std::os::unix::fs::MetadataExt;
            let (a, b) = (std::fs::metadata(p).unwrap(), ns.metadata().unwrap());
            (a.dev(), a.ino()) == (b.dev(), b.ino())
        };
        assert!(same(path), "{seen} is not this namespace");
        // A refresh reuses the held file without waiting for a new fd.
        let again = with_peer_fds(Some(rx.clone()), c.request(request(&url)))
            .await
            .unwrap();
        assert_eq!(again.mechanism.unwrap().parameters[keys::INODE_URL], url);
        assert_eq!(below.0.lock().unwrap()[1], seen);
        // Close passes the file down, then releases it.
        let mut conn = request(&url).connection.unwrap();
        conn.id = "c1".into();
        with_peer_fds(Some(rx), c.close(conn)).await.unwrap();
        assert_eq!(below.0.lock().unwrap()[2], seen);
        assert!(md.is_empty());
        assert!(
            std::fs::metadata(path).is_err(),
            "{path} still open after Close"
        );
        tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_missing_fd_is_an_invalid_argument_naming_the_url() {
        let (_tx, rx, tasks) = pair().await;
        let md = Metadata::new();
        let c = chain(
            &md,
            Arc::new(Below(Default::default())),
            Duration::from_millis(100),
        );
        let s = with_peer_fds(Some(rx), c.request(request("inode://7/42")))
            .await
            .unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(
            s.message()
                .contains("parameters[inodeURL]: inode://7/42: no file descriptor"),
            "{}",
            s.message()
        );
        assert!(md.is_empty(), "a failed first Request leaves nothing");
        // Over TCP (no fds at all) the error says why.
        let s = with_peer_fds(None, c.request(request("inode://7/42")))
            .await
            .unwrap_err();
        assert!(
            s.message().contains("only a unix socket"),
            "{}",
            s.message()
        );
        tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn file_urls_pass_through_untouched() {
        let md = Metadata::new();
        let below = Arc::new(Below(Default::default()));
        let c = chain(&md, below.clone(), Duration::from_millis(100));
        let got = c
            .request(request("file:///proc/self/ns/net"))
            .await
            .unwrap();
        assert_eq!(
            got.mechanism.unwrap().parameters[keys::INODE_URL],
            "file:///proc/self/ns/net"
        );
        assert_eq!(below.0.lock().unwrap()[0], "file:///proc/self/ns/net");
    }
}
