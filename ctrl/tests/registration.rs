//! Registration with the registry through nsmgr, end to end: the real `vwire` binary, run from
//! the environment alone (no config file, as in a pod), registers with a registry stand-in that
//! serves `registry.NetworkServiceEndpointRegistry` on a real unix socket.
//!
//! The stand-in is written here against the generated server trait (it shares no code with
//! vwire's registration) and answers every Register with an `expiration_time` [`EXPIRY`] ahead,
//! so that refreshes come within seconds. It runs on its own thread and runtime; stopping it
//! drops the runtime, which closes every connection at once, as an nsmgr that dies does.
//!
//! Checked: the registered name, service names, labels and URL; a refresh before expiry; a new
//! Register after the stand-in restarts on the same path; retries (logged, the process alive)
//! while it is absent at start, then a Register once it appears; Unregister on SIGTERM while the
//! API socket still exists, and exit 0; a malformed NSM_LABELS is exit 2 naming the variable.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use tonic::{Request, Response, Status};
use vwire_proto::registry::network_service_endpoint_registry_server::{
    NetworkServiceEndpointRegistry, NetworkServiceEndpointRegistryServer,
};
use vwire_proto::registry::{
    NetworkServiceEndpoint, NetworkServiceEndpointQuery, NetworkServiceEndpointResponse,
};

/// How far ahead the stand-in sets `expiration_time`: vwire should refresh after about 2 s.
const EXPIRY: Duration = Duration::from_secs(3);
/// How long a test waits for something vwire should do within a few seconds (generous: the
/// machine may be busy with builds).
const PATIENCE: Duration = Duration::from_secs(20);

/// A call the stand-in received.
#[derive(Clone, Debug)]
enum Call {
    Register {
        nse: NetworkServiceEndpoint,
        at: Instant,
    },
    Unregister {
        nse: NetworkServiceEndpoint,
        /// Whether the socket file the registered URL names existed when Unregister came.
        url_socket_existed: bool,
    },
}

/// The calls of one stand-in, in order.
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<Call>>>);

impl Calls {
    fn push(&self, c: Call) {
        self.0.lock().unwrap().push(c);
    }

    fn registers(&self) -> Vec<(NetworkServiceEndpoint, Instant)> {
        let calls = self.0.lock().unwrap();
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Register { nse, at } => Some((nse.clone(), *at)),
                Call::Unregister { .. } => None,
            })
            .collect()
    }

    fn unregisters(&self) -> Vec<(NetworkServiceEndpoint, bool)> {
        let calls = self.0.lock().unwrap();
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Unregister {
                    nse,
                    url_socket_existed,
                } => Some((nse.clone(), *url_socket_existed)),
                Call::Register { .. } => None,
            })
            .collect()
    }

    /// Waits until at least `n` Registers arrived; panics with vwire's log after [`PATIENCE`].
    fn wait_registers(&self, n: usize, vw: &Node) -> Vec<(NetworkServiceEndpoint, Instant)> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let r = self.registers();
            if r.len() >= n {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{} Register(s) within {PATIENCE:?}, expected {n}:\n{}",
                r.len(),
                vw.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The registry the stand-in serves, from `dir`; it refuses the first `refuse` Registers with
/// an error, as a registry behind nsmgr that is not ready does.
struct Registry(Calls, PathBuf, std::sync::atomic::AtomicUsize);

/// `inode://<dev>/<ino>` of the file at `path` (grpcfd's name for it, nsm-api.md §7).
fn inode_url(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(format!("inode://{}/{}", m.dev(), m.ino()))
}

/// Whether a file of `dir` is the one `url` names (an `inode://` URL, or `unix://` path).
fn names_a_file_in(url: &str, dir: &Path) -> bool {
    if let Some(p) = url.strip_prefix("unix://") {
        return Path::new(p).exists();
    }
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| inode_url(&e.path()).as_deref() == Some(url))
}

#[tonic::async_trait]
impl NetworkServiceEndpointRegistry for Registry {
    async fn register(
        &self,
        request: Request<NetworkServiceEndpoint>,
    ) -> Result<Response<NetworkServiceEndpoint>, Status> {
        let mut nse = request.into_inner();
        let refuse = &self.2;
        if refuse
            .fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |n| n.checked_sub(1),
            )
            .is_ok()
        {
            return Err(Status::unavailable(
                "registry not ready (the stand-in refuses)",
            ));
        }
        self.0.push(Call::Register {
            nse: nse.clone(),
            at: Instant::now(),
        });
        nse.expiration_time = Some((SystemTime::now() + EXPIRY).into());
        Ok(Response::new(nse))
    }

    type FindStream = tokio_stream::Empty<Result<NetworkServiceEndpointResponse, Status>>;

    async fn find(
        &self,
        _: Request<NetworkServiceEndpointQuery>,
    ) -> Result<Response<Self::FindStream>, Status> {
        Ok(Response::new(tokio_stream::empty()))
    }

    async fn unregister(
        &self,
        request: Request<NetworkServiceEndpoint>,
    ) -> Result<Response<()>, Status> {
        let nse = request.into_inner();
        let url_socket_existed = names_a_file_in(&nse.url, &self.1);
        self.0.push(Call::Unregister {
            nse,
            url_socket_existed,
        });
        Ok(Response::new(()))
    }
}

/// A registry stand-in serving on a unix socket from its own thread and runtime; stopping it
/// (dropping it) ends every connection at once, as an nsmgr that dies does.
struct StandIn {
    _served: common::served::Served,
}

impl StandIn {
    /// Binds `path` (the socket exists when this returns) and serves, recording into `calls`.
    fn start(path: &Path, calls: Calls) -> Self {
        Self::start_refusing(path, calls, 0)
    }

    /// [`StandIn::start`], refusing the first `refuse` Registers with Unavailable.
    fn start_refusing(path: &Path, calls: Calls, refuse: usize) -> Self {
        let dir = path
            .parent()
            .expect("a socket in a directory")
            .to_path_buf();
        let served = common::served::Served::start(path, move || async move {
            tonic::transport::Server::builder().add_service(
                NetworkServiceEndpointRegistryServer::new(Registry(calls, dir, refuse.into())),
            )
        });
        StandIn { _served: served }
    }
}

/// A vwire process run from the environment alone.
struct Node {
    child: Option<Child>,
    log: PathBuf,
    /// The registered name.
    name: String,
    /// Its NSM API socket.
    listen: PathBuf,
    /// The listen socket's `inode://` URL, taken while it exists.
    listen_inode: std::cell::OnceCell<String>,
}

impl Node {
    /// Starts `vwire run` (no `--config`) with the NSM API on `<dir>/listen.sock`, nsmgr at
    /// `nsmgr`, and `extra` variables.
    fn start(dir: &Path, nsmgr: &Path, extra: &[(&str, &str)]) -> Self {
        let name = unique("vwire-reg-");
        let listen = dir.join("listen.sock");
        let log = dir.join("vwire.log");
        let metrics = format!("127.0.0.1:{}", free_port());
        let child = Command::new(vwire_bin())
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NSM_NAME", &name)
            .env("NSM_LISTEN_ON", format!("unix://{}", listen.display()))
            .env("NSM_CONNECT_TO", format!("unix://{}", nsmgr.display()))
            .env("NSM_INSECURE", "true")
            .env("NSM_TUNNEL_IP", "none")
            .env("NSM_PROMETHEUS_LISTEN_ON", metrics)
            .env("NSM_LABELS", "p2p:true,zone:test")
            .env("NSM_DIAL_TIMEOUT", "500ms")
            .env("NSM_LOG_LEVEL", "info")
            // forwarder-vpp's, which vwire ignores with a warning.
            .env("NSM_VPP_INIT", "AF_XDP")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(std::fs::File::create(log.with_extension("err")).expect("log file"))
            .spawn()
            .expect("spawn vwire");
        Self {
            child: Some(child),
            log,
            name,
            listen,
            listen_inode: std::cell::OnceCell::new(),
        }
    }

    fn logs(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "{}{}",
            read(&self.log),
            read(&self.log.with_extension("err"))
        )
    }

    /// Panics with the log if vwire has exited.
    fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("vwire was stopped");
        if let Some(status) = child.try_wait().expect("wait for vwire") {
            panic!("vwire exited ({status}):\n{}", self.logs());
        }
    }

    /// Waits until the log contains `needle`.
    fn wait_log(&mut self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.logs().contains(needle) {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "vwire did not log {needle:?} within {PATIENCE:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit.
    fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("vwire already stopped");
        // SAFETY: sends a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().expect("wait for vwire") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("vwire did not exit after SIGTERM:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Checks an endpoint vwire sent: its name, service, labels and URL.
    fn assert_endpoint(&self, nse: &NetworkServiceEndpoint) {
        assert_eq!(nse.name, self.name);
        assert_eq!(nse.network_service_names, vec!["forwarder"]);
        assert_eq!(nse.network_service_labels.len(), 1, "{nse:?}");
        let labels = &nse.network_service_labels["forwarder"].labels;
        assert_eq!(labels.len(), 2, "{nse:?}");
        assert_eq!(labels["p2p"], "true");
        assert_eq!(labels["zone"], "test");
        // grpcfd: the unix listen URL goes as the socket file's inode URL (its fd attached).
        let listen = self
            .listen_inode
            .get_or_init(|| inode_url(&self.listen).expect("the API socket exists"));
        assert_eq!(&nse.url, listen, "{nse:?}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A fresh directory for one test's sockets and logs.
fn test_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("vwreg-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The stand-in's reading ([`common::served::PlainIo`]) against vwire's grpcfd writing, deterministically:
/// each time an fd is queued and a message written whole (the fd's byte and the rest both
/// queued on the socket) before the stand-in reads, as when the stand-in's thread is slow to
/// run, the stand-in must read the whole message. A reader that stops after the fd's byte
/// stalls here as the refresh did (the 2nd Register on a connection, its fd freshly queued).
#[test]
fn the_stand_in_reads_past_a_byte_that_carries_an_fd() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let fds = vwire::transport::FdConn::new();
        let mut vwire_side = vwire::transport::FdStream::join(ours, &fds);
        let mut standin = common::served::PlainIo(theirs);
        let message: Vec<u8> = (0..=255).collect();
        for round in 1..=3 {
            fds.send_path(Path::new("/proc/self/exe")).unwrap();
            vwire_side.write_all(&message).await.unwrap();
            assert_eq!(fds.queued(), 0, "round {round}: the fd was not written");
            let mut got = vec![0; message.len()];
            tokio::time::timeout(Duration::from_secs(5), standin.read_exact(&mut got))
                .await
                .unwrap_or_else(|_| {
                    panic!("round {round}: the stand-in stopped reading after the fd's byte")
                })
                .unwrap();
            assert_eq!(got, message, "round {round}");
        }
    });
}

#[test]
fn registers_refreshes_and_unregisters_on_sigterm() {
    require(&[]);
    let dir = test_dir();
    let nsmgr = dir.join("nsmgr.sock");
    let calls = Calls::default();
    let _standin = StandIn::start(&nsmgr, calls.clone());
    let mut vw = Node::start(&dir, &nsmgr, &[]);

    let first = calls.wait_registers(1, &vw);
    vw.assert_endpoint(&first[0].0);
    assert!(
        vw.listen.exists(),
        "the registered URL's socket does not exist"
    );

    let two = calls.wait_registers(2, &vw);
    vw.assert_endpoint(&two[1].0);
    let gap = two[1].1 - two[0].1;
    assert!(
        gap < EXPIRY,
        "the refresh came {gap:?} after the Register, after its expiry ({EXPIRY:?})"
    );
    assert!(
        gap >= Duration::from_millis(500),
        "the refresh came only {gap:?} after the Register (expected about 2/3 of {EXPIRY:?})"
    );
    vw.wait_log("ignoring NSM_* variables vwire does not use: NSM_VPP_INIT");

    let status = vw.terminate();
    assert_eq!(status.code(), Some(0), "{}", vw.logs());
    let un = calls.unregisters();
    assert_eq!(un.len(), 1, "Unregisters: {un:?}\n{}", vw.logs());
    vw.assert_endpoint(&un[0].0);
    assert!(
        un[0].1,
        "Unregister came after the API socket was gone:\n{}",
        vw.logs()
    );
    assert!(!vw.listen.exists(), "the API socket outlived vwire");
}

#[test]
fn registers_again_after_nsmgr_restarts() {
    require(&[]);
    let dir = test_dir();
    let nsmgr = dir.join("nsmgr.sock");
    let calls = Calls::default();
    let standin = StandIn::start(&nsmgr, calls.clone());
    let mut vw = Node::start(&dir, &nsmgr, &[]);
    calls.wait_registers(1, &vw);

    drop(standin);
    // The refresh (about 2 s after the Register) fails while nsmgr is gone.
    vw.wait_log(&format!(
        "registering with nsmgr at unix://{} failed",
        nsmgr.display()
    ));
    std::thread::sleep(Duration::from_millis(500));
    vw.assert_running();

    let again = Calls::default();
    let _standin = StandIn::start(&nsmgr, again.clone());
    let r = again.wait_registers(1, &vw);
    vw.assert_endpoint(&r[0].0);
    vw.wait_log("registered with the registry");

    assert_eq!(vw.terminate().code(), Some(0), "{}", vw.logs());
    assert_eq!(again.unregisters().len(), 1, "{}", vw.logs());
}

#[test]
fn keeps_retrying_while_nsmgr_is_absent_then_registers() {
    require(&[]);
    let dir = test_dir();
    let nsmgr = dir.join("nsmgr.sock");
    let mut vw = Node::start(&dir, &nsmgr, &[]);
    vw.wait_log(&format!(
        "registering with nsmgr at unix://{} failed",
        nsmgr.display()
    ));
    vw.wait_log("failed again");
    vw.assert_running();

    let calls = Calls::default();
    let _standin = StandIn::start(&nsmgr, calls.clone());
    let r = calls.wait_registers(1, &vw);
    vw.assert_endpoint(&r[0].0);
    // The stand-in has the Register before vwire has its answer: a SIGTERM in between finds
    // nothing registered yet to unregister (seen in CI).
    vw.wait_log("registered with the registry");

    assert_eq!(vw.terminate().code(), Some(0), "{}", vw.logs());
    assert_eq!(calls.unregisters().len(), 1, "{}", vw.logs());
}

#[test]
fn retries_while_the_registry_answers_errors() {
    require(&[]);
    let dir = test_dir();
    let nsmgr = dir.join("nsmgr.sock");
    let calls = Calls::default();
    let _standin = StandIn::start_refusing(&nsmgr, calls.clone(), 3);
    let mut vw = Node::start(&dir, &nsmgr, &[]);
    let r = calls.wait_registers(1, &vw);
    vw.assert_endpoint(&r[0].0);
    // The refusals were logged, with the registry's message, and vwire kept running.
    vw.wait_log("registry not ready (the stand-in refuses)");
    vw.wait_log("failed again");
    vw.assert_running();
    assert_eq!(vw.terminate().code(), Some(0), "{}", vw.logs());
}

#[test]
fn malformed_labels_are_a_configuration_error_naming_nsm_labels() {
    let out = Command::new(vwire_bin())
        .arg("run")
        .env_clear()
        .env("NSM_LABELS", "p2p")
        .output()
        .expect("run vwire");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("key `nsm.labels` (from $NSM_LABELS)")
            && stderr.contains("\"p2p\" is not key:value"),
        "{stderr}"
    );
}
