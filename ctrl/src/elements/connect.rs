//! connect: vwire as a client of the next hop. It sends the request to the Network Service
//! Endpoint, keeps the connection the endpoint returned (for xconnect and for the close), and
//! returns it upstream with the upstream mechanism and this hop's id put back.
//!
//! The endpoint is the one named by `network_service_endpoint_name`, or else the single endpoint
//! configured for the connection's `network_service` (`[[endpoint]]` in the config). Toward the
//! endpoint vwire offers MEMIF, then KERNEL (forwarder-vpp's order for a local next hop), both
//! with empty parameters; the endpoint chooses and answers with its namespace (`inodeURL`) and,
//! for MEMIF, its `socketfile`. Toward a `tcp://` next hop (a forwarder on another node) it
//! offers the REMOTE mechanisms instead (forwarder-vpp's `filtermechanisms`), in the order of
//! NSM_MECHANISM_PRIORITY, each with this side's parameters ([`Remote::offers`]); the
//! connection's MTU goes down as the largest any offered tunnel allows and comes back lowered
//! to what the chosen one allows here.
//!
//! Errors: no endpoint → NotFound; several candidates → FailedPrecondition; an endpoint that
//! cannot be reached or does not answer in time → Unavailable naming it. Other statuses from
//! the endpoint pass through, prefixed with its name. A close is sent to the endpoint with the
//! connection it returned; a failure there is logged, not returned (the local state is gone).
//!
//! Place it last: it does not call `next.request`.

use std::collections::HashMap;
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
use crate::elements::metadata::Metadata;
use crate::remote::Remote;
use crate::transport::{dial_lazy, Url, DIAL_TIMEOUT};

/// How long the endpoint may take to answer a request or a close.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The connection as the endpoint returned it, kept in metadata.
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
}

/// The connect element.
pub struct Connect {
    endpoints: Vec<EndpointConfig>,
    metadata: Arc<Metadata>,
    channels: Mutex<HashMap<String, Channel>>,
    remote: Option<Arc<Remote>>,
}

fn channel_to(url: &Url) -> Result<Channel, Status> {
    dial_lazy(url, DIAL_TIMEOUT).map_err(|e| Status::internal(format!("endpoint URL: {e}")))
}

impl Connect {
    /// A connect element over the configured endpoints.
    pub fn new(
        endpoints: Vec<EndpointConfig>,
        metadata: Arc<Metadata>,
        remote: Option<Arc<Remote>>,
    ) -> Self {
        Self {
            endpoints,
            metadata,
            channels: Mutex::new(HashMap::new()),
            remote,
        }
    }

    fn pick(&self, conn: &Connection) -> Result<&EndpointConfig, Status> {
        if !conn.network_service_endpoint_name.is_empty() {
            return self
                .endpoints
                .iter()
                .find(|e| e.name == conn.network_service_endpoint_name)
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "connection.network_service_endpoint_name: no endpoint named {:?} is configured",
                        conn.network_service_endpoint_name
                    ))
                });
        }
        let mut candidates = self
            .endpoints
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

    fn channel(&self, ep: &EndpointConfig) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        Ok(match channels.get(&ep.name) {
            Some(c) => c.clone(),
            None => {
                let c = channel_to(&ep.url)?;
                channels.insert(ep.name.clone(), c.clone());
                c
            }
        })
    }

    fn client(&self, ep: &EndpointConfig) -> Result<NetworkServiceClient<Channel>, Status> {
        self.channel(ep).map(NetworkServiceClient::new)
    }
}

fn describe(ep: &EndpointConfig) -> String {
    match &ep.url {
        Url::Unix(p) => format!("endpoint {:?} (unix://{})", ep.name, p.display()),
        Url::Tcp(a) => format!("endpoint {:?} (tcp://{a})", ep.name),
    }
}

impl Element for Connect {
    fn request<'a>(
        &'a self,
        req: NetworkServiceRequest,
        _next: Next<'a>,
    ) -> BoxFut<'a, Result<Connection, Status>> {
        Box::pin(async move {
            let conn = connection_of(&req)?.clone();
            let ep = self.pick(&conn)?;
            let channel = self.channel(ep)?;
            let mut client = NetworkServiceClient::new(channel.clone());
            let mut down = conn.clone();
            down.mechanism = None;
            down.network_service_endpoint_name = ep.name.clone();
            let remote_hop = matches!(ep.url, Url::Tcp(_));
            let payload_ip = conn.is_ip_payload();
            // A refresh re-offers what the endpoint chose before.
            let previous = self
                .metadata
                .get::<Downstream>(&conn.id)
                .and_then(|d| d.0.mechanism);
            let fresh = previous.is_none();
            let prefs = match (previous, remote_hop) {
                (Some(m), _) => vec![m],
                (None, false) => [MechanismType::Memif, MechanismType::Kernel]
                    .map(MechanismType::mechanism)
                    .into(),
                (None, true) => {
                    let remote = self.remote.as_ref().ok_or_else(|| {
                        Status::failed_precondition(format!(
                            "{} is on another node (tcp://) but this forwarder has no uplink for remote mechanisms (set NSM_TUNNEL_IP or a default route)",
                            describe(ep)
                        ))
                    })?;
                    remote.offers(&conn.id, payload_ip)?
                }
            };
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
            let call = client.request(NetworkServiceRequest {
                connection: Some(down),
                mechanism_preferences: prefs,
            });
            let answer = tokio::time::timeout(CALL_TIMEOUT, call).await;
            if let (Some(r), true, false) = (remote, fresh, matches!(answer, Ok(Ok(_)))) {
                r.settle(&conn.id, &Mechanism::default()); // the offers' SIDs go back
            }
            let got = match answer {
                Err(_) => {
                    return Err(Status::unavailable(format!(
                        "{}: no answer within {CALL_TIMEOUT:?}",
                        describe(ep)
                    )))
                }
                Ok(Err(s)) if s.code() == Code::Unavailable || s.code() == Code::Unknown => {
                    return Err(Status::unavailable(format!(
                        "{} is unreachable: {}",
                        describe(ep),
                        s.message()
                    )))
                }
                Ok(Err(s)) => {
                    return Err(Status::new(
                        s.code(),
                        format!("{}: {}", describe(ep), s.message()),
                    ))
                }
                Ok(Ok(r)) => r.into_inner(),
            };
            let mut got = got;
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
                NextHop {
                    name: ep.name.clone(),
                    channel,
                },
            );
            let mut up = got;
            up.id = conn.id.clone();
            if let (Some(p), Some(mine)) = (up.path.as_mut(), conn.path.as_ref()) {
                p.index = mine.index;
            }
            up.mechanism = conn.mechanism.clone();
            up.network_service_endpoint_name = ep.name.clone();
            Ok(up)
        })
    }

    fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
        Box::pin(async move {
            self.metadata.take::<NextHop>(&conn.id);
            if let Some(Downstream(down)) = self.metadata.take::<Downstream>(&conn.id) {
                if let Some(ep) = self
                    .endpoints
                    .iter()
                    .find(|e| e.name == down.network_service_endpoint_name)
                {
                    match self.client(ep) {
                        Ok(mut c) => {
                            match tokio::time::timeout(CALL_TIMEOUT, c.close(down)).await {
                                Ok(Ok(_)) => {}
                                Ok(Err(s)) => tracing::warn!("closing at {}: {s}", describe(ep)),
                                Err(_) => tracing::warn!("closing at {}: no answer", describe(ep)),
                            }
                        }
                        Err(s) => tracing::warn!("closing at {}: {s}", describe(ep)),
                    }
                }
            }
            next.close(conn).await
        })
    }
}
