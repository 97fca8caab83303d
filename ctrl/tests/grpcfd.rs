//! grpcfd over real unix sockets, against a peer written here from the protocol alone (raw
//! `sendmsg`/`recvmsg` with `SCM_RIGHTS`, none of vwire's grpcfd code), under plain tonic: fds
//! from the peer to a vwire server, from a vwire client to a peer server, back in a response,
//! 70 at once (more than one write or read takes), a truncated batch, an fd that never comes,
//! `unix:///proc/self/fd/N` dialling, tcp without fds, and no fd left open afterwards.
//!
//! The tests count this process's open fds, so they run one at a time (see [`serial`]).

#![allow(clippy::cast_possible_truncation)] // fd counts and sizes of a few hundred bytes

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};
use vwire::transport::{
    bind, dial, dial_with_fds, InodeUrl, Peer, TransportError, Url, DIAL_TIMEOUT,
};
use vwire_proto::connection::{Connection, Mechanism};
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;
use vwire_proto::networkservice::network_service_server::{NetworkService, NetworkServiceServer};
use vwire_proto::networkservice::NetworkServiceRequest;

mod common;
use common::peerfd::{peer_dial, peer_incoming, Attach, PeerFds};

// ---------------------------------------------------------------------------------------------
// The peer: fd passing written from the protocol, in `common::peerfd`.

/// The peer's server: answers each `url*` parameter with what the fd it received holds.
struct PeerService;

#[tonic::async_trait]
impl NetworkService for PeerService {
    async fn request(
        &self,
        req: Request<NetworkServiceRequest>,
    ) -> Result<Response<Connection>, Status> {
        let fds = req.extensions().get::<Arc<PeerFds>>().unwrap().clone();
        let params = params_of(req.into_inner());
        let mut out = HashMap::new();
        for (k, url) in params.iter().filter(|(k, _)| k.starts_with("url")) {
            let fd = fds
                .find(url)
                .await
                .ok_or_else(|| Status::not_found(format!("peer: no fd for {url}")))?;
            out.insert(format!("{k}.content"), content(&fd));
        }
        let per_message = fds.per_message.lock().unwrap().clone();
        out.insert(
            "max_fds_per_message".into(),
            per_message.iter().max().copied().unwrap_or(0).to_string(),
        );
        out.insert("fd_messages".into(), per_message.len().to_string());
        Ok(Response::new(answer(out)))
    }

    async fn close(&self, _: Request<Connection>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }
}

/// Serves [`PeerService`] on `path` until the returned sender is dropped or fired.
async fn peer_server(path: &Path) -> Running {
    let _ = std::fs::remove_file(path);
    let incoming = peer_incoming(path);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        Server::builder()
            .add_service(NetworkServiceServer::new(PeerService))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.await;
            }),
    );
    Running {
        stop,
        task: tokio::spawn(async move { task.await.unwrap().map_err(|e| e.to_string()) }),
    }
}

// ---------------------------------------------------------------------------------------------
// The vwire side.

/// vwire's test server: receives the fd of every `url*` parameter through its [`FdConn`] and
/// answers with the fd's inode and content; sends back the file `reply_path` names.
struct VwireService;

#[tonic::async_trait]
impl NetworkService for VwireService {
    async fn request(
        &self,
        req: Request<NetworkServiceRequest>,
    ) -> Result<Response<Connection>, Status> {
        let fds = req.extensions().get::<Peer>().and_then(|p| p.fds.clone());
        let params = params_of(req.into_inner());
        let mut out = HashMap::new();
        out.insert("has_fdconn".into(), fds.is_some().to_string());
        let Some(fds) = fds else {
            return Ok(Response::new(answer(out)));
        };
        let timeout = Duration::from_millis(
            params
                .get("timeout_ms")
                .map_or(2000, |t| t.parse().unwrap()),
        );
        for (k, url) in params.iter().filter(|(k, _)| k.starts_with("url")) {
            let fd = fds.recv_url(url, timeout).await?;
            out.insert(
                format!("{k}.inode"),
                InodeUrl::of(fd.as_fd()).unwrap().to_string(),
            );
            out.insert(format!("{k}.content"), content(&fd));
        }
        if let Some(path) = params.get("reply_path") {
            let f = std::fs::File::open(path).unwrap();
            out.insert("reply_url".into(), fds.send(f.as_fd())?.to_string());
        }
        let stats = fds.stats();
        out.insert("held".into(), fds.held().to_string());
        out.insert("truncated".into(), stats.truncated.to_string());
        Ok(Response::new(answer(out)))
    }

    async fn close(&self, _: Request<Connection>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }
}

/// A running server: stop it and wait for its end with [`Running::stop`].
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Serves [`VwireService`] with vwire's transport on `url`.
async fn vwire_server(url: &Url) -> Running {
    let listener = bind(url).await.unwrap();
    let router = Server::builder().add_service(NetworkServiceServer::new(VwireService));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(listener.serve(router, async move {
        let _ = stopped.await;
    }));
    Running {
        stop,
        task: tokio::spawn(async move { task.await.unwrap().map_err(|e| e.to_string()) }),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn params_of(r: NetworkServiceRequest) -> HashMap<String, String> {
    r.mechanism_preferences
        .into_iter()
        .next()
        .map(|m| m.parameters)
        .unwrap_or_default()
}

fn mechanism(params: HashMap<String, String>) -> NetworkServiceRequest {
    NetworkServiceRequest {
        connection: Some(Connection {
            id: "grpcfd-test".into(),
            ..Default::default()
        }),
        mechanism_preferences: vec![Mechanism {
            cls: "LOCAL".into(),
            r#type: "KERNEL".into(),
            parameters: params,
        }],
    }
}

fn answer(params: HashMap<String, String>) -> Connection {
    Connection {
        id: "grpcfd-test".into(),
        mechanism: Some(Mechanism {
            cls: "LOCAL".into(),
            r#type: "KERNEL".into(),
            parameters: params,
        }),
        ..Default::default()
    }
}

async fn call(
    channel: Channel,
    params: HashMap<String, String>,
) -> Result<HashMap<String, String>, Status> {
    let c = NetworkServiceClient::new(channel)
        .request(mechanism(params))
        .await?;
    Ok(c.into_inner().mechanism.unwrap().parameters)
}

/// The file's content read at offset 0 (the fd shares its offset with the sender's), or
/// `<unreadable>` (a namespace file).
fn content(fd: &OwnedFd) -> String {
    let f = std::fs::File::from(fd.try_clone().unwrap());
    let mut buf = [0u8; 64];
    match f.read_at(&mut buf, 0) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(_) => "<unreadable>".into(),
    }
}

/// A scratch directory of this test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("vwire-grpcfd-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    /// A new file holding `text`, opened for reading.
    fn file(&self, name: &str, text: &str) -> std::fs::File {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::File::open(p).unwrap()
    }

    fn sock(&self) -> PathBuf {
        self.0.join("s.sock")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn inode_of(f: &std::fs::File) -> String {
    let m = f.metadata().unwrap();
    format!("inode://{}/{}", m.dev(), m.ino())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Runs `f` on a fresh runtime, one test at a time: they count this process's fds.
fn serial<F: std::future::Future<Output = ()>>(f: F) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g: MutexGuard<'_, ()> = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f);
}

fn p(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn peer_client_passes_a_netns_and_a_file_to_a_vwire_server() {
    serial(async {
        let s = Scratch::new("peer-to-vwire");
        let server = vwire_server(&Url::Unix(s.sock())).await;
        let netns = std::fs::File::open("/proc/self/ns/net").unwrap();
        let file = s.file("a", "hello from the peer");
        let fds = PeerFds::new(Attach::PerByte);
        let (netns_url, file_url) = (fds.queue(&netns), fds.queue(&file));
        drop((netns, file)); // the peer's queue holds its own dups
        let ch = peer_dial(&s.sock(), fds.clone()).await;
        let out = call(ch, p(&[("url.netns", &netns_url), ("url.file", &file_url)]))
            .await
            .unwrap();
        assert_eq!(out["has_fdconn"], "true");
        // The vwire side fstat'ed the fds it got: the same inodes.
        assert_eq!(out["url.netns.inode"], netns_url);
        assert_eq!(out["url.file.inode"], file_url);
        let ours = std::fs::metadata("/proc/self/ns/net").unwrap();
        assert_eq!(netns_url, format!("inode://{}/{}", ours.dev(), ours.ino()));
        assert_eq!(out["url.file.content"], "hello from the peer");
        assert_eq!(out["held"], "2");
        assert!(fds.outbox.lock().unwrap().is_empty());
        server.stop().await;
    });
}

#[test]
fn vwire_client_passes_fds_one_per_byte_to_a_peer_server() {
    serial(async {
        let s = Scratch::new("vwire-to-peer");
        let server = peer_server(&s.sock()).await;
        let (ch, fds) = dial_with_fds(&Url::Unix(s.sock()), DIAL_TIMEOUT)
            .await
            .unwrap();
        let file = s.file("b", "hello from vwire");
        let url = fds.send(file.as_fd()).unwrap();
        assert_eq!(url.to_string(), inode_of(&file));
        drop(file);
        assert_eq!(fds.queued(), 1);
        let out = call(ch, p(&[("url", &url.to_string())])).await.unwrap();
        assert_eq!(out["url.content"], "hello from vwire");
        assert_eq!(out["max_fds_per_message"], "1");
        assert_eq!(fds.queued(), 0);
        assert_eq!(fds.stats().sent, 1);
        server.stop().await;
    });
}

#[test]
fn vwire_server_answers_with_an_fd_the_peer_client_receives() {
    serial(async {
        let s = Scratch::new("vwire-reply");
        let server = vwire_server(&Url::Unix(s.sock())).await;
        let reply = s.0.join("reply");
        std::fs::write(&reply, "hello back").unwrap();
        let fds = PeerFds::new(Attach::PerByte);
        let ch = peer_dial(&s.sock(), fds.clone()).await;
        let out = call(ch, p(&[("reply_path", reply.to_str().unwrap())]))
            .await
            .unwrap();
        let url = &out["reply_url"];
        let m = std::fs::metadata(&reply).unwrap();
        assert_eq!(*url, format!("inode://{}/{}", m.dev(), m.ino()));
        // By the time the response is decoded, the fd that rode on its bytes has been read.
        let fd = fds.find(url).await.expect("the reply fd arrived");
        assert_eq!(content(&fd), "hello back");
        assert_eq!(*fds.per_message.lock().unwrap(), vec![1]);
        server.stop().await;
    });
}

#[test]
fn vwire_client_and_server_pass_fds_both_ways() {
    serial(async {
        let s = Scratch::new("vwire-both");
        let server = vwire_server(&Url::Unix(s.sock())).await;
        let (ch, fds) = dial_with_fds(&Url::Unix(s.sock()), DIAL_TIMEOUT)
            .await
            .unwrap();
        let file = s.file("c", "there");
        let url = fds.send(file.as_fd()).unwrap().to_string();
        let reply = s.0.join("reply");
        std::fs::write(&reply, "and back").unwrap();
        let out = call(
            ch,
            p(&[("url", &url), ("reply_path", reply.to_str().unwrap())]),
        )
        .await
        .unwrap();
        assert_eq!(out["url.content"], "there");
        let got = fds
            .recv_url(&out["reply_url"], Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(content(&got), "and back");
        // The caller owns the dup; the handle still holds its own.
        drop(got);
        assert_eq!(fds.held(), 1);
        server.stop().await;
    });
}

#[test]
fn seventy_fds_at_once_arrive_in_both_directions() {
    serial(async {
        let s = Scratch::new("seventy");
        let files: Vec<_> = (0..70)
            .map(|i| s.file(&format!("f{i}"), &format!("file {i}")))
            .collect();

        // Peer client -> vwire server, one fd per byte over several writes.
        let vsock = s.0.join("v.sock");
        let server = vwire_server(&Url::Unix(vsock.clone())).await;
        let pfds = PeerFds::new(Attach::PerByte);
        let params: HashMap<_, _> = files
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("url{i}"), pfds.queue(f)))
            .collect();
        let ch = peer_dial(&vsock, pfds.clone()).await;
        let out = call(ch, params).await.unwrap();
        for i in 0..70 {
            assert_eq!(out[&format!("url{i}.content")], format!("file {i}"));
        }
        assert_eq!(out["held"], "70");
        assert_eq!(out["truncated"], "0");
        server.stop().await;

        // vwire client -> peer server: 70 one-fd messages, in at least two writes.
        let psock = s.0.join("p.sock");
        let server = peer_server(&psock).await;
        let (ch, fds) = dial_with_fds(&Url::Unix(psock), DIAL_TIMEOUT)
            .await
            .unwrap();
        let params: HashMap<_, _> = files
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("url{i}"), fds.send(f.as_fd()).unwrap().to_string()))
            .collect();
        assert_eq!(fds.queued(), 70);
        let out = call(ch, params).await.unwrap();
        for i in 0..70 {
            assert_eq!(out[&format!("url{i}.content")], format!("file {i}"));
        }
        assert_eq!(out["max_fds_per_message"], "1");
        assert_eq!(out["fd_messages"], "70");
        assert_eq!(fds.stats().sent, 70);
        server.stop().await;
    });
}

#[test]
fn a_batch_of_seventy_fds_in_one_message_is_truncated_not_leaked() {
    serial(async {
        let s = Scratch::new("batch");
        let files: Vec<_> = (0..70)
            .map(|i| s.file(&format!("f{i}"), &format!("file {i}")))
            .collect();
        let before = open_fds();
        let server = vwire_server(&Url::Unix(s.sock())).await;
        let pfds = PeerFds::new(Attach::Batch);
        for f in &files {
            pfds.queue(f);
        }
        let ch = peer_dial(&s.sock(), pfds.clone()).await;
        // Ask for none of them: just report what arrived.
        let out = call(ch, HashMap::new()).await.unwrap();
        assert_eq!(out["truncated"], "1");
        assert_eq!(out["held"], "64");
        server.stop().await;
        drop(pfds);
        wait_for_fds(before).await;
    });
}

#[test]
fn an_fd_that_never_arrives_times_out_naming_the_url() {
    serial(async {
        let s = Scratch::new("never");
        let server = vwire_server(&Url::Unix(s.sock())).await;
        let ch = peer_dial(&s.sock(), PeerFds::new(Attach::PerByte)).await;
        let t = Instant::now();
        let e = call(ch, p(&[("url", "inode://1/2"), ("timeout_ms", "200")]))
            .await
            .unwrap_err();
        let took = t.elapsed();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
        assert!(e.message().contains("inode://1/2"), "{e:?}");
        assert!(e.message().contains("did not arrive within 200ms"), "{e:?}");
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
        // A malformed URL is an invalid argument.
        let ch = peer_dial(&s.sock(), PeerFds::new(Attach::PerByte)).await;
        let e = call(ch, p(&[("url", "inode://1")])).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        server.stop().await;
    });
}

#[test]
fn a_proc_fd_path_of_the_socket_file_dials() {
    serial(async {
        let s = Scratch::new("procfd");
        let server = vwire_server(&Url::Unix(s.sock())).await;
        // An O_PATH fd of the socket file, as an nsmgr holds a forwarder's listen socket.
        let sockfile = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(s.sock())
            .unwrap();
        let url: Url = format!("unix:///proc/self/fd/{}", sockfile.as_raw_fd())
            .parse()
            .unwrap();
        let (ch, _fds) = dial_with_fds(&url, DIAL_TIMEOUT).await.unwrap();
        let out = call(ch, HashMap::new()).await.unwrap();
        assert_eq!(out["has_fdconn"], "true");
        // And the helper's form names the same file from here.
        let named = vwire::transport::proc_fd_url(sockfile.as_fd());
        let m = std::fs::metadata(named.strip_prefix("file://").unwrap()).unwrap();
        assert_eq!(m.ino(), std::fs::metadata(s.sock()).unwrap().ino());
        server.stop().await;
    });
}

#[test]
fn over_tcp_handlers_find_no_fdconn_and_fds_cannot_be_dialled() {
    serial(async {
        let listener = bind(&"tcp://127.0.0.1:0".parse().unwrap()).await.unwrap();
        let url = listener.url().unwrap();
        drop(listener);
        let server = vwire_server(&url).await;
        let out = call(dial(&url, DIAL_TIMEOUT).await.unwrap(), HashMap::new())
            .await
            .unwrap();
        assert_eq!(out["has_fdconn"], "false");
        match dial_with_fds(&url, DIAL_TIMEOUT).await {
            Err(e @ TransportError::NoFds(_)) => assert!(e.to_string().contains("unix://"), "{e}"),
            other => panic!("{other:?}"),
        }
        server.stop().await;
    });
}

/// Waits up to 2 s for this process to have `n` open fds again.
async fn wait_for_fds(n: usize) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = open_fds();
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} fds open, {n} before: leaked {:?}",
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn no_fd_outlives_the_connections() {
    serial(async {
        let s = Scratch::new("leak");
        let files: Vec<_> = (0..5)
            .map(|i| s.file(&format!("f{i}"), &format!("file {i}")))
            .collect();
        let reply = s.0.join("f0");
        // Warm up what the runtime opens once (its timer, a blocking thread), then count.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let before = open_fds();
        {
            let vsock = s.0.join("v.sock");
            let psock = s.0.join("p.sock");
            let vserver = vwire_server(&Url::Unix(vsock.clone())).await;
            let pserver = peer_server(&psock).await;

            // Peer client -> vwire server, with an fd back.
            let pfds = PeerFds::new(Attach::PerByte);
            let mut params: HashMap<_, _> = files
                .iter()
                .enumerate()
                .map(|(i, f)| (format!("url{i}"), pfds.queue(f)))
                .collect();
            params.insert("reply_path".into(), reply.to_str().unwrap().into());
            let out = call(peer_dial(&vsock, pfds.clone()).await, params)
                .await
                .unwrap();
            assert!(pfds.find(&out["reply_url"]).await.is_some());

            // vwire client -> vwire server both ways, and an fd queued that never goes out.
            let (ch, fds) = dial_with_fds(&Url::Unix(vsock), DIAL_TIMEOUT)
                .await
                .unwrap();
            let url = fds.send(files[1].as_fd()).unwrap().to_string();
            let out = call(
                ch.clone(),
                p(&[("url", &url), ("reply_path", reply.to_str().unwrap())]),
            )
            .await
            .unwrap();
            let _kept = fds
                .recv_url(&out["reply_url"], Duration::from_secs(1))
                .await
                .unwrap();
            fds.send(files[2].as_fd()).unwrap();

            // vwire client -> peer server.
            let (ch2, fds2) = dial_with_fds(&Url::Unix(psock), DIAL_TIMEOUT)
                .await
                .unwrap();
            let url = fds2.send(files[3].as_fd()).unwrap().to_string();
            call(ch2.clone(), p(&[("url", &url)])).await.unwrap();

            assert!(open_fds() > before);
            drop((ch, ch2, fds, fds2, pfds));
            vserver.stop().await;
            pserver.stop().await;
        }
        wait_for_fds(before).await;
    });
}
