//! discover + roundrobin: the next hop of a connection, found in the registry through nsmgr, as
//! the NSM sdk's `discover` and `roundrobin` client elements find it
//! (`shared/spec/nsm-forwarder.md` §1). Used by [`crate::elements::connect`] when NSM_CONNECT_TO
//! is configured; without it connect keeps its static `[[endpoint]]` map.
//!
//! Contract:
//! - every query goes over one channel to nsmgr (NSM_CONNECT_TO), as
//!   `registry.NetworkServiceRegistry/Find` or `registry.NetworkServiceEndpointRegistry/Find`
//!   with `watch = false` (query by example, `nsm-api.md` §3), each bounded by [`FIND_TIMEOUT`];
//! - [`Discover::by_name`]: the endpoint of that name, or NotFound naming it;
//! - [`Discover::for_service`]: the service (NotFound naming it if the registry has none) and
//!   its endpoints that its `matches` select for the connection's labels ([`matching`]; expired
//!   ones are never candidates), in the order to try them: a rotation of the registry's order
//!   that starts one further at each call for the same service (round robin, a counter per
//!   service shared by all connections). No candidate: NotFound naming the service;
//! - [`Discover::resolve`] turns a registry URL into one to dial: `unix:///path` and
//!   `tcp://host:port` as they are; `inode://dev/ino` by receiving its fd (the endpoint's socket,
//!   sent by nsmgr with the Find answer) on the channel to nsmgr within NSM_DIAL_TIMEOUT, then
//!   `unix:///proc/<pid>/fd/<n>` of that fd, which the caller keeps open for as long as it dials
//!   that URL. Anything else, or an fd that does not arrive: InvalidArgument naming the URL.
//!
//! Errors of the registry itself come back with their code, prefixed with nsmgr's URL; a Find
//! that gets no answer in time is Unavailable.

pub mod matching;

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tonic::transport::Channel;
use tonic::{Code, Status};
use vwire_proto::connection::Connection;
use vwire_proto::registry::network_service_endpoint_registry_client::NetworkServiceEndpointRegistryClient;
use vwire_proto::registry::network_service_registry_client::NetworkServiceRegistryClient;
use vwire_proto::registry::{
    NetworkService, NetworkServiceEndpoint, NetworkServiceEndpointQuery, NetworkServiceQuery,
};

use crate::security::{Identity, Signer};
use crate::transport::{proc_fd_url, FdConn, Transport, TransportError, Url};

/// The bound of one Find, from the call to the end of its stream. 10 s, as a Register's
/// (`registration::CALL_TIMEOUT`): nsmgr forwards the query to the registry, which may sit
/// behind a busy API server.
pub const FIND_TIMEOUT: Duration = Duration::from_secs(10);

/// A next hop as the registry names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// `network_service_endpoint_name`.
    pub name: String,
    /// Its URL as the registry gave it (resolve it with [`Discover::resolve`]).
    pub url: String,
}

/// A registry URL made dialable.
#[derive(Debug)]
pub struct Resolved {
    /// What to dial.
    pub url: Url,
    /// The fd an `inode://` URL stood for: `url` names it, so it must stay open while `url`
    /// is dialled.
    pub fd: Option<OwnedFd>,
}

/// The registry client of the connect element.
pub struct Discover {
    nsmgr: Url,
    channel: Channel,
    /// Signs the calls (with SPIFFE).
    signer: Signer,
    /// The fds nsmgr sends with its answers (unix:// only).
    fds: Option<FdConn>,
    dial_timeout: Duration,
    /// Round-robin counters, per network service.
    turns: Mutex<HashMap<String, usize>>,
}

impl Discover {
    /// A registry client of nsmgr at `nsmgr`, through `transport`; it connects on first use.
    /// With an `identity`, its calls carry this hop's path token (whose audience is known
    /// from the first handshake on). Must run inside a tokio runtime.
    pub fn new(
        nsmgr: &Url,
        transport: &Transport,
        identity: Option<Arc<Identity>>,
    ) -> Result<Self, TransportError> {
        let d = transport.dial_lazy(nsmgr)?;
        Ok(Self {
            nsmgr: nsmgr.clone(),
            channel: d.channel,
            signer: Signer::new(identity, d.server),
            fds: d.fds,
            dial_timeout: transport.dial_timeout(),
            turns: Mutex::new(HashMap::new()),
        })
    }

    fn registry_error(&self, what: &str, s: &Status) -> Status {
        let code = match s.code() {
            Code::Unknown => Code::Unavailable, // tonic's word for "could not connect"
            c => c,
        };
        Status::new(
            code,
            format!(
                "registry {what} through nsmgr at {}: {}",
                self.nsmgr,
                s.message()
            ),
        )
    }

    /// The endpoints a Find for `query` lists (deletions left out).
    async fn find_endpoints(
        &self,
        query: NetworkServiceEndpoint,
    ) -> Result<Vec<NetworkServiceEndpoint>, Status> {
        let mut client = NetworkServiceEndpointRegistryClient::new(self.channel.clone());
        let what = "NetworkServiceEndpoint Find";
        let find = async {
            let call = self.signer.call(NetworkServiceEndpointQuery {
                network_service_endpoint: Some(query),
                watch: false,
            })?;
            let mut stream = client.find(call).await?.into_inner();
            let mut found = Vec::new();
            while let Some(r) = stream.message().await? {
                if let (Some(nse), false) = (r.network_service_endpoint, r.deleted) {
                    found.push(nse);
                }
            }
            Ok::<_, Status>(found)
        };
        match tokio::time::timeout(FIND_TIMEOUT, find).await {
            Ok(r) => r.map_err(|s| self.registry_error(what, &s)),
            Err(_) => Err(self.registry_error(
                what,
                &Status::unavailable(format!("no answer within {FIND_TIMEOUT:?}")),
            )),
        }
    }

    /// The network service named `name`, if the registry has it.
    async fn find_service(&self, name: &str) -> Result<Option<NetworkService>, Status> {
        let mut client = NetworkServiceRegistryClient::new(self.channel.clone());
        let what = "NetworkService Find";
        let find = async {
            let call = self.signer.call(NetworkServiceQuery {
                network_service: Some(NetworkService {
                    name: name.to_string(),
                    ..Default::default()
                }),
                watch: false,
            })?;
            let mut stream = client.find(call).await?.into_inner();
            while let Some(r) = stream.message().await? {
                match r.network_service {
                    Some(ns) if !r.deleted && ns.name == name => return Ok(Some(ns)),
                    _ => {}
                }
            }
            Ok::<_, Status>(None)
        };
        match tokio::time::timeout(FIND_TIMEOUT, find).await {
            Ok(r) => r.map_err(|s| self.registry_error(what, &s)),
            Err(_) => Err(self.registry_error(
                what,
                &Status::unavailable(format!("no answer within {FIND_TIMEOUT:?}")),
            )),
        }
    }

    /// The endpoint named `name`.
    pub async fn by_name(&self, name: &str) -> Result<Candidate, Status> {
        let found = self
            .find_endpoints(NetworkServiceEndpoint {
                name: name.to_string(),
                ..Default::default()
            })
            .await?;
        let now = SystemTime::now();
        found
            .into_iter()
            .find(|n| n.name == name && !matching::expired(n, now))
            .map(|n| Candidate {
                name: n.name,
                url: n.url,
            })
            .ok_or_else(|| {
                Status::not_found(format!(
                    "connection.network_service_endpoint_name: the registry has no endpoint named {name:?}"
                ))
            })
    }

    /// The candidates for `conn`'s network service, in the order to try them, and the service's
    /// payload (see the module doc).
    pub async fn for_service(&self, conn: &Connection) -> Result<(Vec<Candidate>, String), Status> {
        let service = conn.network_service.as_str();
        let ns = self.find_service(service).await?.ok_or_else(|| {
            Status::not_found(format!(
                "connection.network_service: the registry has no network service {service:?}"
            ))
        })?;
        let nses = self
            .find_endpoints(NetworkServiceEndpoint {
                network_service_names: vec![service.to_string()],
                ..Default::default()
            })
            .await?;
        let mut picked: Vec<Candidate> =
            matching::select(&ns, &conn.labels, &nses, SystemTime::now())
                .into_iter()
                .map(|n| Candidate {
                    name: n.name.clone(),
                    url: n.url.clone(),
                })
                .collect();
        if picked.is_empty() {
            return Err(Status::not_found(format!(
                "connection.network_service: no endpoint of {service:?} matches connection.labels {:?} ({} registered)",
                conn.labels,
                nses.len()
            )));
        }
        let start = {
            let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
            let t = turns.entry(service.to_string()).or_insert(0);
            let start = *t % picked.len();
            *t = t.wrapping_add(1);
            start
        };
        picked.rotate_left(start);
        Ok((picked, ns.payload))
    }

    /// `url` from the registry, made dialable (see the module doc).
    pub async fn resolve(&self, name: &str, url: &str) -> Result<Resolved, Status> {
        let bad = |why: String| {
            Status::invalid_argument(format!(
                "network_service_endpoint.url {url:?} of endpoint {name:?}: {why}"
            ))
        };
        if !url.starts_with("inode://") {
            return Url::parse(url)
                .map(|url| Resolved { url, fd: None })
                .map_err(|e| bad(e.to_string()));
        }
        let Some(fds) = &self.fds else {
            return Err(bad(format!(
                "its fd cannot travel over nsmgr's {} (unix:// only)",
                self.nsmgr
            )));
        };
        let fd = fds
            .recv_url(url, self.dial_timeout)
            .await
            .map_err(|e| bad(e.to_string()))?;
        let path = proc_fd_url(fd.as_fd());
        let path = PathBuf::from(path.strip_prefix("file://").unwrap_or(&path));
        Ok(Resolved {
            url: Url::Unix(path),
            fd: Some(fd),
        })
    }
}
