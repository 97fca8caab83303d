//! vwire behind an nsmgr that passes the client's namespace as a file descriptor, as a real NSM
//! cluster does (nsm-api.md §7): the NSC (`vwire-nsc`) asks an nsmgr stand-in, which forwards
//! the Request to vwire over a unix socket with `inodeURL = inode://<dev>/<ino>` and the
//! namespace's fd attached (grpcfd), and maps the answer back for the NSC.
//!
//! The stand-in is written here from the protocol: plain tonic over the test's own
//! `sendmsg`/`recvmsg` peer ([`common::peerfd`]), none of vwire's grpcfd code. vwire cannot
//! resolve an `inode://` URL by path, so a working datapath shows that it used the fd.
//!
//! Checked: KERNEL and MEMIF connections, pinged both ways, with vwire answering the nsmgr in
//! its own `inode://` terms; Close leaves nothing behind, and vwire's fd count is where it was
//! once the nsmgr's connection closes (grpcfd holds what a connection brought until then); an
//! `inode://` URL whose fd never comes is InvalidArgument naming the URL, and leaks nothing.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nsm::*;
use common::peerfd::{peer_dial, Attach, PeerFds};
use common::sh;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use vwire_proto::connection::{Connection, Mechanism};
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;
use vwire_proto::networkservice::network_service_server::{NetworkService, NetworkServiceServer};
use vwire_proto::networkservice::NetworkServiceRequest;

const INODE_URL: &str = "inodeURL";

/// The nsmgr stand-in's service: forwards to vwire, turning `file://` namespace URLs into
/// `inode://` URLs with the fd, and back.
struct Nsmgr {
    vwire: NetworkServiceClient<Channel>,
    fds: Arc<PeerFds>,
    /// The `inodeURL` of every answer vwire gave, as vwire sent it.
    answers: Arc<Mutex<Vec<String>>>,
}

impl Nsmgr {
    /// Rewrites `m`'s `file://` inodeURL to `inode://`, queueing the file's fd; records the
    /// mapping in `urls`.
    fn send_fd(&self, m: &mut Mechanism, urls: &mut HashMap<String, String>) -> Result<(), Status> {
        let Some(file_url) = m.parameters.get(INODE_URL).cloned() else {
            return Ok(());
        };
        let Some(path) = file_url.strip_prefix("file://") else {
            return Ok(());
        };
        let f = std::fs::File::open(path)
            .map_err(|e| Status::invalid_argument(format!("stand-in: {path}: {e}")))?;
        let inode = self.fds.queue(&f);
        m.parameters.insert(INODE_URL.into(), inode.clone());
        urls.insert(inode, file_url);
        Ok(())
    }

    fn restore(conn: &mut Connection, urls: &HashMap<String, String>) {
        if let Some(v) = conn
            .mechanism
            .as_mut()
            .and_then(|m| m.parameters.get_mut(INODE_URL))
        {
            if let Some(file) = urls.get(v.as_str()) {
                v.clone_from(file);
            }
        }
    }
}

#[tonic::async_trait]
impl NetworkService for Nsmgr {
    async fn request(
        &self,
        req: Request<NetworkServiceRequest>,
    ) -> Result<Response<Connection>, Status> {
        let mut r = req.into_inner();
        let mut urls = HashMap::new();
        if let Some(m) = r.connection.as_mut().and_then(|c| c.mechanism.as_mut()) {
            self.send_fd(m, &mut urls)?;
        }
        for m in &mut r.mechanism_preferences {
            self.send_fd(m, &mut urls)?;
        }
        let mut conn = self.vwire.clone().request(r).await?.into_inner();
        let answered = conn
            .mechanism
            .as_ref()
            .and_then(|m| m.parameters.get(INODE_URL))
            .cloned()
            .unwrap_or_default();
        self.answers.lock().unwrap().push(answered);
        Nsmgr::restore(&mut conn, &urls);
        Ok(Response::new(conn))
    }

    async fn close(&self, req: Request<Connection>) -> Result<Response<()>, Status> {
        let mut conn = req.into_inner();
        let mut urls = HashMap::new();
        if let Some(m) = conn.mechanism.as_mut() {
            self.send_fd(m, &mut urls)?;
        }
        self.vwire.clone().close(conn).await
    }
}

/// The stand-in, serving on its own thread and runtime.
struct StandIn {
    _served: common::served::Served,
    answers: Arc<Mutex<Vec<String>>>,
    fds: Arc<PeerFds>,
}

impl StandIn {
    /// Serves on `path`, forwarding to vwire at `vwire`.
    fn start(path: &Path, vwire: &Path) -> Self {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let fds = PeerFds::new(Attach::PerByte);
        let (a, f, vwire) = (answers.clone(), fds.clone(), vwire.to_path_buf());
        let served = common::served::Served::start(path, move || async move {
            let channel = peer_dial(&vwire, f.clone()).await;
            tonic::transport::Server::builder().add_service(NetworkServiceServer::new(Nsmgr {
                vwire: NetworkServiceClient::new(channel),
                fds: f,
                answers: a,
            }))
        });
        Self {
            _served: served,
            answers,
            fds,
        }
    }
}

fn nsmgr_sock(s: &Setup) -> PathBuf {
    s.dir.join("nsmgr.sock")
}

/// Starts vwire-nsc in the NSC namespace against the stand-in, waiting for `connected`.
fn nsc_via_nsmgr(s: &Setup, extra: &[&str]) -> (Proc, Lines, String) {
    let nsc = start_nsc_at(s, &nsmgr_sock(s), extra);
    (nsc.proc, nsc.out, nsc.line)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What vwire's fds are, for a failure message.
fn fd_list(pid: u32) -> String {
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect();
    fds.sort();
    fds.join("\n")
}

/// Waits up to 5 s for vwire's fd count to come back to `n`.
fn fds_back_to(s: &Setup, n: usize) {
    let t0 = Instant::now();
    while fd_count(s.vw.pid()) != n && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        fd_count(s.vw.pid()),
        n,
        "vwire's fds after Close:\n{}\n{}",
        fd_list(s.vw.pid()),
        s.vw.logs()
    );
}

/// Every answer vwire gave named the namespace in the nsmgr's `inode://` terms.
fn answers_were_inode_urls(standin: &StandIn) {
    let answers = standin.answers.lock().unwrap().clone();
    assert!(!answers.is_empty(), "vwire answered nothing");
    for a in answers {
        assert!(a.starts_with("inode://"), "vwire answered inodeURL {a:?}");
    }
}

/// Runs `connect` twice through a fresh stand-in, each time closing the connection (the NSC
/// exits) and stopping the stand-in; after the second, vwire's fd count must be what it was
/// after the first (which opens the lazily made pieces: the XDP program, netlink sockets).
fn twice_without_leaks(s: &Setup, connect: impl Fn(&StandIn) -> Proc) {
    let mut after_first = None;
    for _ in 0..2 {
        let standin = StandIn::start(&nsmgr_sock(s), &s.dir.join("fwd.sock"));
        let mut nsc = connect(&standin);
        answers_were_inode_urls(&standin);
        assert!(
            standin.fds.outbox.lock().unwrap().is_empty(),
            "the stand-in sent every fd it queued"
        );
        nsc.terminate();
        nothing_left(s);
        // grpcfd holds what a connection received until the connection closes (as upstream's
        // does): stop the stand-in, then count.
        drop(standin);
        match after_first {
            None => {
                std::thread::sleep(Duration::from_millis(300));
                after_first = Some(fd_count(s.vw.pid()));
            }
            Some(n) => fds_back_to(s, n),
        }
    }
}

#[test]
fn kernel_with_the_namespace_passed_as_an_fd() {
    let s = setup(&[]);
    twice_without_leaks(&s, |standin| {
        let (nsc, _out, line) = nsc_via_nsmgr(&s, &["--refresh", "1"]);
        assert!(line.ends_with("172.16.1.101 172.16.1.100"), "{line}");
        let wired = s.vw.logs().matches("connection wired").count();
        kernel_ping(&s, &s.nsc, "172.16.1.100");
        kernel_ping(&s, &s.nse, "172.16.1.101");
        // Refreshes (each sends the fd again) keep the same interface.
        std::thread::sleep(Duration::from_millis(2500));
        assert!(s
            .nsc
            .exec("ping -c 2 -i 0.2 -W 2 172.16.1.100")
            .status
            .success());
        assert_eq!(
            s.vw.logs().matches("connection wired").count(),
            wired,
            "refreshes wired nothing anew:\n{}",
            s.vw.logs()
        );
        assert!(
            standin.answers.lock().unwrap().len() >= 2,
            "refreshes reached vwire"
        );
        nsc
    });
}

#[test]
fn memif_with_the_namespace_passed_as_an_fd() {
    let s = setup(&[]);
    twice_without_leaks(&s, |_| {
        let (nsc, out, _line) = nsc_via_nsmgr(
            &s,
            &[
                "--mechanism",
                "memif",
                "--ping-count",
                "3",
                "--ping-size",
                "56",
            ],
        );
        let ping = out.wait("ping ", Duration::from_secs(30), "vwire-nsc (memif)");
        assert!(
            ping.starts_with("ping 172.16.1.100 3/"),
            "the memif NSC's pings: {ping}\n{}",
            s.vw.logs()
        );
        kernel_ping(&s, &s.nse, "172.16.1.101");
        nsc
    });
}

#[test]
fn an_inode_url_without_its_fd_is_an_invalid_argument() {
    let s = setup(&[]);
    let fds = fd_count(s.vw.pid());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        // A peer connection that sends no fd at all.
        let channel = peer_dial(&s.dir.join("fwd.sock"), PeerFds::new(Attach::PerByte)).await;
        let mut m = Mechanism {
            cls: "LOCAL".into(),
            r#type: "KERNEL".into(),
            ..Default::default()
        };
        m.parameters
            .insert(INODE_URL.into(), "inode://4242/4242".into());
        let req = NetworkServiceRequest {
            connection: Some(Connection {
                id: "no-fd".into(),
                network_service: "icmp-responder".into(),
                ..Default::default()
            }),
            mechanism_preferences: vec![m],
        };
        let t0 = Instant::now();
        let r = NetworkServiceClient::new(channel).request(req).await;
        (r, t0.elapsed())
    });
    drop(rt); // closes the peer's connection
    let (r, took) = status;
    let e = r.expect_err("a Request whose fd never came");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("inode://4242/4242"), "{}", e.message());
    // Within the dial timeout (750 ms by default), not a hang.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(!s.nsc.links().contains("nsm-"), "{}", s.nsc.links());
    fds_back_to(&s, fds);
}

/// A client namespace that vwire only holds as a passed fd: when the NSC dies without a Close
/// and its namespace is deleted, vwire's own fd must not keep the connection alive (nsmonitor
/// scans /proc and the mounts for `/proc/<pid>/fd/<n>` namespaces): it closes the connection and
/// removes what it built, and the namespace's last reference (vwire's fd) goes with it.
#[test]
fn a_passed_namespace_that_goes_away_closes_the_connection() {
    let s = setup(&[]);
    let standin = StandIn::start(&nsmgr_sock(&s), &s.dir.join("fwd.sock"));
    let (mut nsc, _out, _line) = nsc_via_nsmgr(&s, &[]);
    kernel_ping(&s, &s.nse, "172.16.1.101");
    answers_were_inode_urls(&standin);
    // The NSC dies without a Close; then its namespace is deleted.
    let _ = nsc.0.kill();
    let _ = nsc.0.wait();
    sh(&format!("ip netns del {}", s.nsc.0));
    // Noticed within a few ticks (200 ms each); the teardown may then wait for the kernel's
    // RTNL, which namespace deletions of tests running in parallel hold for seconds.
    let t0 = Instant::now();
    let mut noticed = None;
    loop {
        let host = sh("ip -o link show");
        let clean =
            !host.contains(" vwc") && !host.contains(" vwe") && !s.nse.links().contains("nse-");
        if noticed.is_none() && s.vw.logs().contains("the client's network namespace") {
            noticed = Some(t0.elapsed());
        }
        if clean && noticed.is_some() {
            break;
        }
        assert!(
            noticed.is_some() || t0.elapsed() < Duration::from_secs(2),
            "vwire did not notice the deleted namespace within 2 s:\n{}",
            s.vw.logs()
        );
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the connection of a deleted namespace is still there after 15 s:\nhost: {host}\nnse: {}\n{}",
            s.nse.links(),
            s.vw.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "noticed after {:?}, everything removed after {:?}",
        noticed.unwrap_or_default(),
        t0.elapsed()
    );
}
