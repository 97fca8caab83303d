//! connect: vwire as a client of the next hop. It sends the request to the Network Service
//! Endpoint, keeps the connection the endpoint returned (for xconnect and for the close), and
//! returns it upstream with the upstream mechanism and this hop's id put back.
//!
//! Which endpoint:
//! - with NSM_CONNECT_TO, the registry's ([`crate::elements::discover`]): the one named by
//!   `network_service_endpoint_name` (or, on a refresh that names none, the one the connection
//!   went to before); else the endpoints of the connection's `network_service` that its labels
//!   select, tried round robin: one that cannot be reached (Unavailable) is skipped for the next,
//!   and when all fail the request is Unavailable naming each. The service's `payload` is
//!   copied into a connection that has none;
//! - without it, the static `[[endpoint]]` map: the one named by `network_service_endpoint_name`,
//!   or else the single endpoint configured for the connection's `network_service`.
//!
//! The chosen endpoint's name goes into `network_service_endpoint_name`, down and up. Channels
//! are cached per endpoint name and URL; each dial is bounded by NSM_DIAL_TIMEOUT.
//!
//! Toward the endpoint vwire offers MEMIF, then KERNEL (forwarder-vpp's order for a local next
//! hop), both with empty parameters; the endpoint chooses and answers with its namespace
//! (`inodeURL`) and, for MEMIF, its `socketfile`. Toward a `tcp://` next hop (a forwarder on
//! another node) it offers the REMOTE mechanisms instead (forwarder-vpp's `filtermechanisms`),
//! in the order of NSM_MECHANISM_PRIORITY, each with this side's parameters
//! ([`Remote::offers`]); the connection's MTU goes down as the largest any offered tunnel allows
//! and comes back lowered to what the chosen one allows here.
//!
//! File descriptors (the sdk's `sendfd`/`recvfd` clients, `nsm-api.md` §7): a `unix://` next hop
//! is dialled with grpcfd. A `file://` parameter in what vwire offers (a refresh re-offers the
//! endpoint's earlier answer) goes as `inode://` with its fd attached. An `inode://` `inodeURL`
//! in the endpoint's answer is resolved by receiving its fd within NSM_DIAL_TIMEOUT
//! (InvalidArgument naming the URL if it does not arrive; a new connection is then closed at the
//! endpoint), the fd
//! is held until the close, and the later elements see `file:///proc/<pid>/fd/<n>` of it
//! ([`Downstream`]). The close goes to the endpoint with the connection as it returned it.
//!
//! Errors: no endpoint → NotFound; several static candidates → FailedPrecondition; an endpoint
//! that cannot be reached or does not answer in time → Unavailable naming it. Other statuses
//! from the endpoint pass through, prefixed with its name. A failure of the close at the
//! endpoint is logged, not returned (the local state is gone).
//!
//! Place it last: it does not call `next.request`.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Status};
use vwire_proto::connection::{Connection, Mechanism};
use vwire_proto::mechanism::MechanismType;
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::{connection_of, BoxFut, Element, Next};
use crate::config::EndpointConfig;
use crate::elements::discover::Discover;
use crate::elements::metadata::Metadata;
use crate::remote::Remote;
use crate::security::{self, Identity, Signer};
use crate::transport::{proc_fd_url, FdConn, Transport, Url};

/// How long the endpoint may take to answer a request or a close.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The mechanism parameter that names a namespace (or memif socket) file (`nsm-api.md` §4).
const INODE_URL: &str = "inodeURL";

/// The connection as the endpoint returned it, kept in metadata, with an `inode://` `inodeURL`
/// turned into `file:///proc/<pid>/fd/<n>` of the received fd (what xconnect opens).
#[derive(Clone, Debug)]
pub struct Downstream(pub Connection);

/// The channel of the next hop a connection was established through, kept in metadata next to
/// [`Downstream`] (for the elements that follow the next hop: its monitor stream).
#[derive(Clone, Debug)]
pub struct NextHop {
    /// The next hop's name (`network_service_endpoint_name`).
    pub name: String,
    /// Its gRPC channel.
    pub channel: Channel,
    /// Its certificate (mTLS), and this hop's identity, for the calls' path tokens.
    signer: Signer,
}

impl NextHop {
    /// `msg` as a call to this next hop, with this hop's path token when it has an identity.
    pub fn call<T>(&self, msg: T) -> Result<tonic::Request<T>, Status> {
        Ok(self.signer.call(msg)?)
    }
}

/// The connection exactly as the endpoint returned it (what the close sends), and the fd its
/// `inodeURL` stood for, held until the close.
struct Returned {
    conn: Connection,
    _fd: Option<OwnedFd>,
}

/// Where next hops come from.
enum Source {
    /// The `[[endpoint]]` map.
    Static(Vec<EndpointConfig>),
    /// The registry, through nsmgr.
    Registry(Discover),
}

/// A next hop to try.
struct Hop {
    name: String,
    /// The URL as configured or as the registry gave it.
    url: String,
    /// Already dialable (static), or to be resolved by the registry client.
    known: Option<Url>,
}

/// A cached channel to a next hop.
#[derive(Clone)]
struct Dialled {
    channel: Channel,
    /// Its fds (`unix://` only).
    fds: Option<FdConn>,
    /// Signs its calls.
    signer: Signer,
    /// `tcp://`: a forwarder on another node.
    remote: bool,
    /// The fd the dialled `unix:///proc/<pid>/fd/<n>` names, if the URL was `inode://`.
    _socket: Option<Arc<OwnedFd>>,
}

/// The connect element.
pub struct Connect {
    source: Source,
    transport: Transport,
    identity: Option<Arc<Identity>>,
    dial_timeout: Duration,
    metadata: Arc<Metadata>,
    channels: Mutex<HashMap<String, Dialled>>,
    remote: Option<Arc<Remote>>,
}

impl Connect {
    /// A connect element over the configured endpoints, or over the registry through nsmgr at
    /// `connect_to` when there is one; every dial through `transport` (its TLS, its dial
    /// timeout). With an `identity`, every call carries this hop's path token. Must run inside
    /// a tokio runtime.
    pub fn new(
        endpoints: Vec<EndpointConfig>,
        connect_to: Option<&Url>,
        transport: Transport,
        identity: Option<Arc<Identity>>,
        metadata: Arc<Metadata>,
        remote: Option<Arc<Remote>>,
    ) -> Result<Self, crate::transport::TransportError> {
        let source = match connect_to {
            Some(nsmgr) => Source::Registry(Discover::new(nsmgr, &transport, identity.clone())?),
            None => Source::Static(endpoints),
        };
        Ok(Self {
            source,
            dial_timeout: transport.dial_timeout(),
            transport,
            identity,
            metadata,
            channels: Mutex::new(HashMap::new()),
            remote,
        })
    }

    fn pick_static<'e>(
        endpoints: &'e [EndpointConfig],
        conn: &Connection,
    ) -> Result<&'e EndpointConfig, Status> {
        if !conn.network_service_endpoint_name.is_empty() {
            return endpoints
                .iter()
                .find(|e| e.name == conn.network_service_endpoint_name)
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "connection.network_service_endpoint_name: no endpoint named {:?} is configured",
                        conn.network_service_endpoint_name
                    ))
                });
        }
        let mut candidates = endpoints
            .iter()
            .filter(|e| e.service.as_deref() == Some(conn.network_service.as_str()));
        match (candidates.next(), candidates.next()) {
            (Some(e), None) => Ok(e),
            (None, _) => Err(Status::not_found(format!(
                "connection.network_service: no endpoint is configured for {:?}",
                conn.network_service
            ))),
            (Some(_), Some(_)) => Err(Status::failed_precondition(format!(
                "connection.network_service: several endpoints serve {:?}; set network_service_endpoint_name",
                conn.network_service
            ))),
        }
    }

    /// The next hops for `conn`, in the order to try them; `conn`'s payload is completed
    /// from the registry.
    async fn hops(&self, conn: &mut Connection) -> Result<Vec<Hop>, Status> {
        match &self.source {
            Source::Static(endpoints) => {
                let e = Self::pick_static(endpoints, conn)?;
                Ok(vec![Hop {
                    name: e.name.clone(),
                    url: e.url.to_string(),
                    known: Some(e.url.clone()),
                }])
            }
            Source::Registry(d) => {
                // A refresh that names no endpoint stays with the one it went to.
                let name = match conn.network_service_endpoint_name.as_str() {
                    "" => self
                        .metadata
                        .get::<NextHop>(&conn.id)
                        .map(|h| h.name)
                        .unwrap_or_default(),
                    n => n.to_string(),
                };
                let found = if name.is_empty() {
                    let (found, payload) = d.for_service(conn).await?;
                    if conn.payload.is_empty() {
                        conn.payload = payload;
                    }
                    found
                } else {
                    vec![d.by_name(&name).await?]
                };
                Ok(found
                    .into_iter()
                    .map(|c| Hop {
                        name: c.name,
                        url: c.url,
                        known: None,
                    })
                    .collect())
            }
        }
    }

    /// The channel to `hop`, cached per name and URL.
    async fn channel(&self, hop: &Hop) -> Result<Dialled, Status> {
        let key = format!("{} {}", hop.name, hop.url);
        if let Some(d) = self
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(d.clone());
        }
        let (url, socket) = match (&hop.known, &self.source) {
            (Some(u), _) => (u.clone(), None),
            (None, Source::Registry(d)) => {
                let r = d.resolve(&hop.name, &hop.url).await?;
                (r.url, r.fd.map(Arc::new))
            }
            (None, Source::Static(_)) => {
                return Err(Status::internal(format!(
                    "endpoint {:?}: no URL to dial",
                    hop.name
                )))
            }
        };
        // Dialled now, not on first use: the path token's audience is the server's certificate.
        let d = self.transport.dial(&url).await.map_err(|e| {
            Status::unavailable(format!(
                "{} is unreachable: {}",
                describe(hop),
                crate::transport::error_chain(&e)
            ))
        })?;
        let dialled = Dialled {
            channel: d.channel,
            fds: d.fds,
            signer: Signer::new(self.identity.clone(), d.server),
            remote: matches!(url, Url::Tcp(_)),
            _socket: socket,
        };
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        Ok(channels.entry(key).or_insert(dialled).clone())
    }

    /// One Request at `hop`: the connection to return upstream.
    async fn request_at(&self, conn: &Connection, hop: &Hop) -> Result<Connection, Status> {
        let dialled = self.channel(hop).await?;
        let channel = dialled.channel.clone();
        let mut client = NetworkServiceClient::new(channel.clone());
        let mut down = conn.clone();
        down.mechanism = None;
        down.network_service_endpoint_name = hop.name.clone();
        let remote_hop = dialled.remote;
        let payload_ip = conn.is_ip_payload();
        // A refresh re-offers what the endpoint chose before.
        let previous = self
            .metadata
            .get::<Downstream>(&conn.id)
            .and_then(|d| d.0.mechanism);
        let fresh = previous.is_none();
        let mut prefs = match (previous, remote_hop) {
            (Some(m), _) => vec![m],
            (None, false) => [MechanismType::Memif, MechanismType::Kernel]
                .map(MechanismType::mechanism)
                .into(),
            (None, true) => {
                let remote = self.remote.as_ref().ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "{} is on another node (tcp://) but this forwarder has no uplink for remote mechanisms (set NSM_TUNNEL_IP or a default route)",
                        describe(hop)
                    ))
                })?;
                remote.offers(&conn.id, payload_ip)?
            }
        };
        if let Some(fds) = &dialled.fds {
            send_files(fds, &mut prefs)?;
        }
        let remote = self.remote.as_ref().filter(|_| remote_hop);
        // The MTU a tunnel of `m`'s type allows; a type that is not SRV6 is held to VXLAN's.
        let max_mtu = |r: &Remote, m: &Mechanism| {
            let t = m.mechanism_type().unwrap_or(MechanismType::Vxlan);
            r.max_mtu(t, payload_ip)
        };
        if let Some(r) = remote {
            let allowed = prefs.iter().map(|m| max_mtu(r, m)).max().unwrap_or(0);
            let ctx = down.context.get_or_insert_with(Default::default);
            if ctx.mtu == 0 || ctx.mtu > allowed {
                ctx.mtu = allowed;
            }
        }
        // This hop's token for the next hop, in its own segment and in the call's metadata.
        let signed = dialled.signer.token().map_err(Status::from)?;
        if let (Some((token, expires)), Some(path)) = (&signed, down.path.as_mut()) {
            let index = usize::try_from(path.index).unwrap_or(usize::MAX);
            if let Some(own) = path.path_segments.get_mut(index) {
                own.token = token.clone();
                own.expires = Some(prost_types::Timestamp::from(*expires));
            }
        }
        let mut call = tonic::Request::new(NetworkServiceRequest {
            connection: Some(down),
            mechanism_preferences: prefs,
        });
        if let Some((token, expires)) = &signed {
            security::add_token(&mut call, token, *expires);
        }
        let call = client.request(call);
        let answer = tokio::time::timeout(CALL_TIMEOUT, call).await;
        if let (Some(r), true, false) = (remote, fresh, matches!(answer, Ok(Ok(_)))) {
            r.settle(&conn.id, &Mechanism::default()); // the offers' SIDs go back
        }
        let got = match answer {
            Err(_) => {
                return Err(Status::unavailable(format!(
                    "{}: no answer within {CALL_TIMEOUT:?}",
                    describe(hop)
                )))
            }
            Ok(Err(s)) if s.code() == Code::Unavailable || s.code() == Code::Unknown => {
                return Err(Status::unavailable(format!(
                    "{} is unreachable: {}",
                    describe(hop),
                    s.message()
                )))
            }
            Ok(Err(s)) => {
                return Err(Status::new(
                    s.code(),
                    format!("{}: {}", describe(hop), s.message()),
                ))
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        let returned = got.clone();
        let mut got = got;
        let fd = match self.receive_file(&dialled, hop, &mut got).await {
            Ok(fd) => fd,
            Err(e) => {
                if fresh {
                    // A new connection the endpoint made but vwire cannot use: undo it there.
                    // (A failed refresh leaves the established one as it was.)
                    if let Some(r) = remote {
                        r.settle(&conn.id, &Mechanism::default());
                    }
                    close_at(&channel, &dialled.signer, &describe(hop), returned).await;
                }
                return Err(e);
            }
        };
        if let Some(r) = remote {
            let chosen = got.mechanism.clone().unwrap_or_default();
            r.settle(&conn.id, &chosen);
            let allowed = max_mtu(r, &chosen);
            let ctx = got.context.get_or_insert_with(Default::default);
            if ctx.mtu == 0 || ctx.mtu > allowed {
                ctx.mtu = allowed;
            }
        }
        self.metadata.set(&conn.id, Downstream(got.clone()));
        self.metadata.set(
            &conn.id,
            Returned {
                conn: returned,
                _fd: fd,
            },
        );
        self.metadata.set(
            &conn.id,
            NextHop {
                name: hop.name.clone(),
                channel,
                signer: dialled.signer.clone(),
            },
        );
        let mut up = got;
        up.id = conn.id.clone();
        if let (Some(p), Some(mine)) = (up.path.as_mut(), conn.path.as_ref()) {
            p.index = mine.index;
        }
        up.mechanism = conn.mechanism.clone();
        up.network_service_endpoint_name = hop.name.clone();
        Ok(up)
    }

    /// Receives the fd of an `inode://` `inodeURL` in `got`'s mechanism and points the
    /// parameter at it (see the module doc); the fd, to be held until the close.
    async fn receive_file(
        &self,
        dialled: &Dialled,
        hop: &Hop,
        got: &mut Connection,
    ) -> Result<Option<OwnedFd>, Status> {
        let Some(m) = got.mechanism.as_mut() else {
            return Ok(None);
        };
        let Some(url) = m
            .parameters
            .get(INODE_URL)
            .filter(|u| u.starts_with("inode://"))
        else {
            return Ok(None);
        };
        let bad = |why: String| {
            Status::invalid_argument(format!(
                "{}: the answer's connection.mechanism.parameters[inodeURL] {url:?}: {why}",
                describe(hop)
            ))
        };
        let Some(fds) = &dialled.fds else {
            return Err(bad("no fd can travel over tcp://".into()));
        };
        let fd = fds
            .recv_url(url, self.dial_timeout)
            .await
            .map_err(|e| bad(e.to_string()))?;
        m.parameters
            .insert(INODE_URL.to_string(), proc_fd_url(fd.as_fd()));
        Ok(Some(fd))
    }
}

/// Turns every `file://` parameter of `prefs` into `inode://` with its fd queued on `fds`.
fn send_files(fds: &FdConn, prefs: &mut [Mechanism]) -> Result<(), Status> {
    for m in prefs {
        for (k, v) in m.parameters.iter_mut() {
            let Some(path) = v.strip_prefix("file://") else {
                continue;
            };
            let url = fds.send_path(Path::new(path)).map_err(|e| {
                Status::failed_precondition(format!(
                    "mechanism_preferences parameters[{k}] {v:?}: {e}"
                ))
            })?;
            *v = url.to_string();
        }
    }
    Ok(())
}

/// Sends a close for `conn` on `channel`, signed by `signer`; a failure is logged.
async fn close_at(channel: &Channel, signer: &Signer, hop: &str, conn: Connection) {
    let mut c = NetworkServiceClient::new(channel.clone());
    let call = match signer.call(conn) {
        Ok(call) => call,
        Err(e) => {
            tracing::warn!("closing at {hop}: {e}");
            return;
        }
    };
    match tokio::time::timeout(CALL_TIMEOUT, c.close(call)).await {
        Ok(Ok(_)) => {}
        Ok(Err(s)) => tracing::warn!("closing at {hop}: {s}"),
        Err(_) => tracing::warn!("closing at {hop}: no answer"),
    }
}

fn describe(hop: &Hop) -> String {
    format!("endpoint {:?} ({})", hop.name, hop.url)
}

impl Element for Connect {
    fn name(&self) -> &'static str {
        "connect"
    }

    fn request<'a>(
        &'a self,
        req: NetworkServiceRequest,
        _next: Next<'a>,
    ) -> BoxFut<'a, Result<Connection, Status>> {
        Box::pin(async move {
            let mut conn = connection_of(&req)?.clone();
            let hops = self.hops(&mut conn).await?;
            let mut failed = Vec::new();
            for hop in &hops {
                match self.request_at(&conn, hop).await {
                    Ok(up) => return Ok(up),
                    Err(s) if s.code() == Code::Unavailable && hops.len() > 1 => {
                        tracing::warn!("{}; trying the next candidate", s.message());
                        failed.push(s.message().to_string());
                    }
                    Err(s) => return Err(s),
                }
            }
            Err(Status::unavailable(format!(
                "connection.network_service {:?}: none of its {} endpoints answered: {}",
                conn.network_service,
                hops.len(),
                failed.join("; ")
            )))
        })
    }

    fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
        Box::pin(async move {
            let hop = self.metadata.take::<NextHop>(&conn.id);
            let down = self.metadata.take::<Downstream>(&conn.id);
            let returned = self.metadata.take::<Returned>(&conn.id);
            let sent = returned
                .as_ref()
                .map(|r| r.conn.clone())
                .or(down.map(|d| d.0));
            if let (Some(hop), Some(sent)) = (hop, sent) {
                let name = format!("endpoint {:?}", hop.name);
                close_at(&hop.channel, &hop.signer, &name, sent).await;
            }
            drop(returned); // the endpoint's fd, held until it has been told
            next.close(conn).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_file_urls_go_as_inode_urls_with_their_fds() {
        let fds = FdConn::new();
        let mut prefs = vec![Mechanism {
            cls: "LOCAL".into(),
            r#type: "KERNEL".into(),
            parameters: [
                (
                    "inodeURL".to_string(),
                    "file:///proc/self/ns/net".to_string(),
                ),
                ("name".to_string(), "nsm-1".to_string()),
            ]
            .into_iter()
            .collect(),
        }];
        send_files(&fds, &mut prefs).unwrap();
        let ns = std::fs::File::open("/proc/self/ns/net").unwrap();
        let want = crate::transport::InodeUrl::of(ns.as_fd())
            .unwrap()
            .to_string();
        assert_eq!(prefs[0].parameters["inodeURL"], want);
        assert_eq!(prefs[0].parameters["name"], "nsm-1");
        assert_eq!(fds.queued(), 1);

        let mut gone = vec![Mechanism {
            parameters: [("inodeURL".to_string(), "file:///nonexistent/ns".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        }];
        let e = send_files(&fds, &mut gone).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("parameters[inodeURL]"), "{e:?}");
    }
}
