//! Discovery of the next hop through nsmgr, end to end: the real `vwire` binary with
//! NSM_CONNECT_TO pointing at an nsmgr stand-in that serves `registry.NetworkServiceRegistry` and
//! `registry.NetworkServiceEndpointRegistry` over a real unix socket, and test endpoints that
//! serve `networkservice.NetworkService` and record what reaches them. Both are written here
//! from the protocol (tonic and the generated types); the stand-in passes fds with the raw
//! `SCM_RIGHTS` peer of `common::peerfd`, not with vwire's grpcfd.
//!
//! The point is selection, not the datapath: in the first two tests the endpoints answer MEMIF
//! without a `socketfile`, which xconnect refuses (FailedPrecondition naming `socketfile`) before
//! it builds anything, and then closes the endpoint. So those Requests fail *after* connect has
//! chosen and reached an endpoint; what is checked is which endpoint got it (and the Close that
//! followed). The third establishes KERNEL connections between two namespaces (root), to
//! refresh one.
//!
//! Checked: round robin among the endpoints a service's `matches` select for the request's
//! labels, skipping an unreachable one and an expired one; another match for other labels; a
//! request naming its endpoint; NotFound for an unknown service or endpoint; Unavailable naming
//! every candidate when none answers; an `inode://` endpoint URL whose socket fd comes with the
//! Find answer; an endpoint answering with an `inode://` `inodeURL` and its fd, and the Close
//! carrying that URL back; InvalidArgument naming an `inode://` URL whose fd never comes; a
//! refresh and a close going to the endpoint chosen before, the refresh re-offering the
//! endpoint's namespace as `inode://` with its fd.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::peerfd::{peer_incoming, PeerFds};
use common::*;
use tonic::transport::Server;
use tonic::{Code, Request, Response, Status};
use vwire::transport::{dial, Url};
use vwire_proto::connection::{Connection, Mechanism};
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;
use vwire_proto::networkservice::network_service_server::{NetworkService, NetworkServiceServer};
use vwire_proto::networkservice::NetworkServiceRequest;
use vwire_proto::registry::network_service_endpoint_registry_server::{
    NetworkServiceEndpointRegistry, NetworkServiceEndpointRegistryServer,
};
use vwire_proto::registry::network_service_registry_server::{
    NetworkServiceRegistry, NetworkServiceRegistryServer,
};
use vwire_proto::registry::{
    Destination, Match, NetworkService as Service, NetworkServiceEndpoint,
    NetworkServiceEndpointQuery, NetworkServiceEndpointResponse, NetworkServiceLabels,
    NetworkServiceQuery, NetworkServiceResponse,
};

/// What reached the test endpoints: (endpoint, "request" or "close", the connection).
type Log = Arc<Mutex<Vec<(String, &'static str, Connection)>>>;

// ---------------------------------------------------------------------------------------------
// The nsmgr stand-in.

/// An endpoint as the stand-in lists it; with `fd_of`, its URL goes out as `inode://` of that
/// socket file, whose fd is sent with the answer.
#[derive(Clone)]
struct Listed {
    nse: NetworkServiceEndpoint,
    fd_of: Option<PathBuf>,
}

#[derive(Clone)]
struct Nsmgr {
    services: Vec<Service>,
    nses: Vec<Listed>,
}

type Stream<T> = tokio_stream::Iter<std::vec::IntoIter<Result<T, Status>>>;

#[tonic::async_trait]
impl NetworkServiceRegistry for Nsmgr {
    async fn register(&self, r: Request<Service>) -> Result<Response<Service>, Status> {
        Ok(Response::new(r.into_inner()))
    }

    type FindStream = Stream<NetworkServiceResponse>;

    async fn find(
        &self,
        r: Request<NetworkServiceQuery>,
    ) -> Result<Response<Self::FindStream>, Status> {
        let q = r.into_inner();
        assert!(!q.watch, "vwire asked to watch");
        let name = q.network_service.unwrap_or_default().name;
        let found: Vec<_> = self
            .services
            .iter()
            .filter(|s| name.is_empty() || s.name == name)
            .map(|s| {
                Ok(NetworkServiceResponse {
                    network_service: Some(s.clone()),
                    deleted: false,
                })
            })
            .collect();
        Ok(Response::new(tokio_stream::iter(found)))
    }

    async fn unregister(&self, _: Request<Service>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }
}

#[tonic::async_trait]
impl NetworkServiceEndpointRegistry for Nsmgr {
    async fn register(
        &self,
        r: Request<NetworkServiceEndpoint>,
    ) -> Result<Response<NetworkServiceEndpoint>, Status> {
        Ok(Response::new(r.into_inner())) // vwire's own registration
    }

    type FindStream = Stream<NetworkServiceEndpointResponse>;

    async fn find(
        &self,
        r: Request<NetworkServiceEndpointQuery>,
    ) -> Result<Response<Self::FindStream>, Status> {
        let fds = r.extensions().get::<Arc<PeerFds>>().cloned();
        let q = r.into_inner();
        assert!(!q.watch, "vwire asked to watch");
        let q = q.network_service_endpoint.unwrap_or_default();
        // Query by example (nsm-api.md §3): the name if given, each service name listed.
        let mut found = Vec::new();
        for l in &self.nses {
            let n = &l.nse;
            if (!q.name.is_empty() && q.name != n.name)
                || !q
                    .network_service_names
                    .iter()
                    .all(|s| n.network_service_names.contains(s))
            {
                continue;
            }
            let mut n = n.clone();
            if let Some(path) = &l.fd_of {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH)
                    .open(path)
                    .expect("O_PATH of the endpoint's socket");
                n.url = fds.as_ref().expect("a unix peer").queue(&file);
            }
            found.push(Ok(NetworkServiceEndpointResponse {
                network_service_endpoint: Some(n),
                deleted: false,
            }));
        }
        Ok(Response::new(tokio_stream::iter(found)))
    }

    async fn unregister(&self, _: Request<NetworkServiceEndpoint>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }
}

/// Serves `nsmgr` on `path` with the raw fd peer under every connection.
fn serve_nsmgr(path: &Path, nsmgr: Nsmgr) {
    let incoming = peer_incoming(path);
    tokio::spawn(
        Server::builder()
            .add_service(NetworkServiceRegistryServer::new(nsmgr.clone()))
            .add_service(NetworkServiceEndpointRegistryServer::new(nsmgr))
            .serve_with_incoming(incoming),
    );
}

// ---------------------------------------------------------------------------------------------
// Test endpoints.

/// An endpoint that records what reaches it and answers the first mechanism offered, with
/// `answer_fd` (a file) as an `inode://` `inodeURL` when given; or, with `kernel_in`, KERNEL in
/// that network namespace.
#[derive(Clone, Default)]
struct Nse {
    name: String,
    log: Log,
    answer_fd: Option<Arc<std::fs::File>>,
    kernel_in: Option<String>,
    /// Each `inode://` `inodeURL` offered to it, and whether its fd came along.
    offered: Arc<Mutex<Vec<(String, bool)>>>,
}

#[tonic::async_trait]
impl NetworkService for Nse {
    async fn request(
        &self,
        r: Request<NetworkServiceRequest>,
    ) -> Result<Response<Connection>, Status> {
        let fds = r.extensions().get::<Arc<PeerFds>>().cloned();
        let r = r.into_inner();
        let mut conn = r.connection.unwrap_or_default();
        self.log
            .lock()
            .unwrap()
            .push((self.name.clone(), "request", conn.clone()));
        let mut m: Mechanism = r.mechanism_preferences.first().cloned().unwrap_or_default();
        if let (Some(url), Some(fds)) = (m.parameters.get("inodeURL"), &fds) {
            if url.starts_with("inode://") {
                let came = fds.find(url).await.is_some();
                self.offered.lock().unwrap().push((url.clone(), came));
            }
        }
        if let (Some(f), Some(fds)) = (&self.answer_fd, &fds) {
            m.parameters.insert("inodeURL".into(), fds.queue(f));
        }
        if let Some(ns) = &self.kernel_in {
            m = Mechanism {
                cls: "LOCAL".into(),
                r#type: "KERNEL".into(),
                parameters: map(&[
                    ("inodeURL", format!("file:///var/run/netns/{ns}").as_str()),
                    ("name", &format!("nse-{}", conn.id)),
                ]),
            };
        }
        conn.mechanism = Some(m);
        Ok(Response::new(conn))
    }

    async fn close(&self, r: Request<Connection>) -> Result<Response<()>, Status> {
        self.log
            .lock()
            .unwrap()
            .push((self.name.clone(), "close", r.into_inner()));
        Ok(Response::new(()))
    }
}

/// Serves `nse` on `path` (with the raw fd peer under it, for answers that carry an fd).
fn serve_nse(path: &Path, nse: Nse) {
    let incoming = peer_incoming(path);
    tokio::spawn(
        Server::builder()
            .add_service(NetworkServiceServer::new(nse))
            .serve_with_incoming(incoming),
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
}

fn listed(name: &str, service: &str, labels: &[(&str, &str)], url: String) -> Listed {
    Listed {
        nse: NetworkServiceEndpoint {
            name: name.into(),
            network_service_names: vec![service.into()],
            network_service_labels: [(
                service.to_string(),
                NetworkServiceLabels {
                    labels: map(labels),
                },
            )]
            .into_iter()
            .collect(),
            url,
            expiration_time: Some((SystemTime::now() + Duration::from_secs(600)).into()),
            ..Default::default()
        },
        fd_of: None,
    }
}

fn route(dest: &[(&str, &str)]) -> Destination {
    Destination {
        destination_selector: map(dest),
        weight: 0,
    }
}

/// Starts vwire with NSM_CONNECT_TO = `dir`/nsmgr.sock, serving on `dir`/fwd.sock; `extra`
/// goes first in its config.
fn start_vwire_with(dir: &Path, extra: &str) -> Vwire {
    Vwire::start(&format!(
        "{extra}[nsm]\nname = \"fwd\"\nlisten_on = \"unix://{d}/fwd.sock\"\ninsecure = true\ntunnel_ip = \"none\"\n\
         connect_to = \"unix://{d}/nsmgr.sock\"\ndial_timeout = \"500ms\"\n",
        d = dir.display()
    ))
}

fn start_vwire(dir: &Path) -> Vwire {
    start_vwire_with(dir, "")
}

/// A Request for `service` with `labels` (and `nse`, if not empty) as a client sends it: KERNEL
/// in vwire's own namespace, which mechanisms accepts.
fn request(id: &str, service: &str, labels: &[(&str, &str)], nse: &str) -> NetworkServiceRequest {
    request_in("/proc/self/ns/net", id, service, labels, nse)
}

/// [`request`] from a client in the namespace file `netns`.
fn request_in(
    netns: &str,
    id: &str,
    service: &str,
    labels: &[(&str, &str)],
    nse: &str,
) -> NetworkServiceRequest {
    NetworkServiceRequest {
        connection: Some(Connection {
            id: id.into(),
            network_service: service.into(),
            network_service_endpoint_name: nse.into(),
            labels: map(labels),
            ..Default::default()
        }),
        mechanism_preferences: vec![Mechanism {
            cls: "LOCAL".into(),
            r#type: "KERNEL".into(),
            parameters: map(&[("inodeURL", &format!("file://{netns}"))]),
        }],
    }
}

struct Client(NetworkServiceClient<tonic::transport::Channel>);

impl Client {
    async fn new(dir: &Path) -> Self {
        let ch = dial(&Url::Unix(dir.join("fwd.sock")), Duration::from_secs(5))
            .await
            .expect("dial vwire");
        Self(NetworkServiceClient::new(ch))
    }

    /// Sends `r`; the status it fails with.
    async fn fails(&mut self, r: NetworkServiceRequest) -> Status {
        match self.0.request(r).await {
            Ok(c) => panic!("the request succeeded: {:?}", c.into_inner()),
            Err(s) => s,
        }
    }

    /// Sends `r`, which reaches an endpoint and then fails in xconnect (see the module doc).
    async fn reaches_an_endpoint(&mut self, r: NetworkServiceRequest) {
        let s = self.fails(r).await;
        assert!(
            s.code() == Code::FailedPrecondition && s.message().contains("socketfile"),
            "expected xconnect's refusal of the test endpoint's answer, got {s:?}"
        );
    }
}

/// The endpoints the requests with these ids reached, in the log's order, and the endpoint name
/// each request carried.
fn reached(log: &Log, id: &str) -> Vec<(String, &'static str, String)> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(_, _, c)| c.id.starts_with(id))
        .map(|(n, what, c)| (n.clone(), *what, c.network_service_endpoint_name.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_among_matching_endpoints_skipping_dead_and_expired_ones() {
    let dir = temp_file("x", "").with_file_name("");
    let log: Log = Log::default();
    let sock = |n: &str| dir.join(format!("{n}.sock"));
    for n in ["nse-a", "nse-b", "nse-c", "nse-old"] {
        serve_nse(
            &sock(n),
            Nse {
                name: n.into(),
                log: log.clone(),
                ..Default::default()
            },
        );
    }
    let url = |n: &str| format!("unix://{}", sock(n).display());
    let mut old = listed("nse-old", "svc", &[("color", "blue")], url("nse-old"));
    old.nse.expiration_time = Some((SystemTime::now() - Duration::from_secs(5)).into());
    let nsmgr = Nsmgr {
        services: vec![
            Service {
                name: "svc".into(),
                payload: "ETHERNET".into(),
                matches: vec![
                    Match {
                        source_selector: map(&[("app", "blue")]),
                        routes: vec![route(&[("color", "blue")])],
                        fallthrough: false,
                        metadata: None,
                    },
                    Match {
                        source_selector: map(&[]),
                        routes: vec![route(&[("color", "red")])],
                        fallthrough: false,
                        metadata: None,
                    },
                ],
                ..Default::default()
            },
            Service {
                name: "all-dead".into(),
                ..Default::default()
            },
        ],
        nses: vec![
            listed("nse-a", "svc", &[("color", "blue")], url("nse-a")),
            listed("nse-b", "svc", &[("color", "red")], url("nse-b")),
            // Registered, but its socket is gone: a dead endpoint.
            listed("nse-dead", "svc", &[("color", "blue")], url("nse-dead")),
            listed("nse-c", "svc", &[("color", "blue")], url("nse-c")),
            old,
            listed("dead-1", "all-dead", &[], url("dead-1")),
            listed("dead-2", "all-dead", &[], url("dead-2")),
        ],
    };
    serve_nsmgr(&dir.join("nsmgr.sock"), nsmgr);
    let vw = start_vwire(&dir);
    let mut c = Client::new(&dir).await;

    // Blue clients: candidates nse-a, nse-dead, nse-c in registry order; each request starts one
    // further, and the dead one passes its turn to the next.
    for i in 0..4 {
        c.reaches_an_endpoint(request(&format!("rr-{i}"), "svc", &[("app", "blue")], ""))
            .await;
    }
    let got = reached(&log, "rr-");
    let requests: Vec<&str> = got
        .iter()
        .filter(|(_, w, _)| *w == "request")
        .map(|(n, _, _)| n.as_str())
        .collect();
    assert_eq!(
        requests,
        ["nse-a", "nse-c", "nse-c", "nse-a"],
        "{got:?}\n{}",
        vw.logs()
    );
    // Each carried its own name down, and xconnect's failure closed it there.
    for (n, _, carried) in &got {
        assert_eq!(n, carried, "{got:?}");
    }
    assert_eq!(got.iter().filter(|(_, w, _)| *w == "close").count(), 4);
    assert!(
        vw.logs().contains("nse-dead"),
        "the skipped endpoint is logged"
    );

    // Other labels fall to the second match: the red endpoint; the payload came from the service.
    c.reaches_an_endpoint(request("red-1", "svc", &[("app", "green")], ""))
        .await;
    let red: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, w, c)| *w == "request" && c.id.starts_with("red-"))
        .map(|(n, _, c)| (n.clone(), c.payload.clone()))
        .collect();
    assert_eq!(red, [("nse-b".to_string(), "ETHERNET".to_string())]);

    // A request naming its endpoint goes there, whatever its labels select.
    c.reaches_an_endpoint(request("named-1", "svc", &[("app", "blue")], "nse-b"))
        .await;
    assert_eq!(reached(&log, "named-")[0].0, "nse-b");

    // Unknown service, unknown endpoint: NotFound naming them.
    let s = c.fails(request("nf-1", "no-such-svc", &[], "")).await;
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert!(s.message().contains("\"no-such-svc\""), "{s:?}");
    let s = c.fails(request("nf-2", "svc", &[], "no-such-nse")).await;
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert!(s.message().contains("\"no-such-nse\""), "{s:?}");

    // No candidate answers: Unavailable naming each.
    let s = c.fails(request("dead-1", "all-dead", &[], "")).await;
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert!(
        s.message().contains("\"dead-1\"") && s.message().contains("\"dead-2\""),
        "{s:?}"
    );
    assert!(
        reached(&log, "nf-").is_empty() && reached(&log, "dead-").is_empty(),
        "{:?}",
        log.lock().unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inode_urls_resolve_by_the_fds_that_come_with_them() {
    let dir = temp_file("x", "").with_file_name("");
    let log: Log = Log::default();
    // The endpoint answers with its "namespace": a file whose fd it sends along.
    let netns = dir.join("nse-netns");
    std::fs::write(&netns, b"not a namespace").unwrap();
    let netns = Arc::new(std::fs::File::open(&netns).unwrap());
    let nse_sock = dir.join("hidden-nse.sock");
    serve_nse(
        &nse_sock,
        Nse {
            name: "nse-fd".into(),
            log: log.clone(),
            answer_fd: Some(netns.clone()),
            ..Default::default()
        },
    );
    let mut by_fd = listed("nse-fd", "svc", &[], String::new());
    by_fd.fd_of = Some(nse_sock.clone());
    let nsmgr = Nsmgr {
        services: vec![Service {
            name: "svc".into(),
            ..Default::default()
        }],
        nses: vec![
            by_fd,
            // An inode:// URL whose fd nsmgr never sends.
            listed("nse-nofd", "other", &[], "inode://1/2".into()),
        ],
    };
    serve_nsmgr(&dir.join("nsmgr.sock"), nsmgr);
    let vw = start_vwire(&dir);
    let mut c = Client::new(&dir).await;

    // Reached through the fd nsmgr sent: the registry gave no path at all.
    c.reaches_an_endpoint(request("fd-1", "svc", &[], "")).await;
    let got = log.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}\n{}", vw.logs());
    let (n, what, req) = &got[0];
    assert_eq!((n.as_str(), *what), ("nse-fd", "request"));
    assert_eq!(req.network_service_endpoint_name, "nse-fd");
    // vwire received the endpoint's inodeURL fd (xconnect saw it as file:///proc/<pid>/fd/N and
    // got to refuse the missing socketfile), and the close carried the URL as the endpoint sent
    // it.
    let (n, what, closed) = &got[1];
    assert_eq!((n.as_str(), *what), ("nse-fd", "close"));
    let sent = {
        use std::os::unix::fs::MetadataExt;
        let m = netns.metadata().unwrap();
        format!("inode://{}/{}", m.dev(), m.ino())
    };
    assert_eq!(
        closed
            .mechanism
            .as_ref()
            .and_then(|m| m.parameters.get("inodeURL")),
        Some(&sent),
        "{closed:?}"
    );

    // An inode:// URL without its fd: InvalidArgument naming it.
    let s = c.fails(request("nofd-1", "other", &[], "nse-nofd")).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("inode://1/2"), "{s:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A connection established for real (root: veths into two namespaces), refreshed twice and
/// closed: both refreshes and the close go to the endpoint round robin chose first, though the
/// counter has moved on; the refresh re-offers the endpoint's namespace as `inode://` with its
/// fd (vwire's `sendfd` side).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_goes_to_the_endpoint_chosen_before() {
    require(&["ip"]);
    let nsc = common::nsm::Ns::new("dc");
    let nse_ns = common::nsm::Ns::new("de");
    let dir = temp_file("x", "").with_file_name("");
    let log: Log = Log::default();
    let offered: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let sock = |n: &str| dir.join(format!("{n}.sock"));
    for n in ["nse-a", "nse-b", "nse-c"] {
        serve_nse(
            &sock(n),
            Nse {
                name: n.into(),
                log: log.clone(),
                kernel_in: Some(nse_ns.0.clone()),
                offered: offered.clone(),
                ..Default::default()
            },
        );
    }
    let url = |n: &str| format!("unix://{}", sock(n).display());
    let nsmgr = Nsmgr {
        services: vec![Service {
            name: "svc".into(),
            payload: "ETHERNET".into(),
            ..Default::default()
        }],
        nses: ["nse-a", "nse-b", "nse-c"]
            .map(|n| listed(n, "svc", &[], url(n)))
            .into(),
    };
    serve_nsmgr(&dir.join("nsmgr.sock"), nsmgr);
    let vw = start_vwire_with(&dir, "[dataplane]\nworkers = [1]\n");
    let mut c = Client::new(&dir).await;
    let netns = format!("/var/run/netns/{}", nsc.0);

    // Another connection first, so that the counter is not where it starts.
    let first = request_in(&netns, "other", "svc", &[], "");
    let other =
        c.0.request(first)
            .await
            .unwrap_or_else(|s| panic!("{s:?}\n{}", vw.logs()));
    let other = other.into_inner();
    let mut req = request_in(&netns, "conn", "svc", &[], "");
    let mut conn = c.0.request(req.clone()).await.unwrap().into_inner();
    let chosen = conn.network_service_endpoint_name.clone();
    assert_eq!(chosen, "nse-b", "round robin's second pick");
    for _ in 0..2 {
        req.connection = Some(conn.clone());
        conn = c.0.request(req.clone()).await.unwrap().into_inner();
        assert_eq!(conn.network_service_endpoint_name, chosen);
    }
    c.0.close(conn.clone()).await.unwrap();
    c.0.close(other.clone()).await.unwrap();

    let got: Vec<(String, &str)> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, c)| c.id == "conn")
        .map(|(n, w, _)| (n.clone(), *w))
        .collect();
    let b = "nse-b".to_string();
    assert_eq!(
        got,
        [
            (b.clone(), "request"),
            (b.clone(), "request"),
            (b.clone(), "request"),
            (b, "close")
        ],
        "{}",
        vw.logs()
    );
    let offered = offered.lock().unwrap().clone();
    assert!(
        offered.len() >= 2 && offered.iter().all(|(_, came)| *came),
        "refreshes re-offer the namespace as inode:// with its fd: {offered:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
