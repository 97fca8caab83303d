//! Registration of this forwarder with the registry, through nsmgr: forwarder-vpp's startup
//! step 9 (`shared/spec/nsm-forwarder.md` §2), which is how nsmgr learns that a forwarder runs on
//! its node and picks it for connections.
//!
//! Contract, once [`Registration::spawn`]ed on a tokio runtime:
//! - it sends `registry.NetworkServiceEndpointRegistry/Register` with
//!   `NetworkServiceEndpoint{name: NSM_NAME, network_service_names: [NSM_NSNAME],
//!   network_service_labels: {NSM_NSNAME: {labels: NSM_LABELS}}, url: `[`advertised_url`]`}`
//!   to NSM_CONNECT_TO, and the same again before the registration expires (a refresh);
//! - it never gives up: while nsmgr is absent or answers errors it retries with a backoff, and
//!   it registers again after nsmgr restarts (the refresh fails, then Register succeeds anew).
//!   The first failure of a run of failures is a warning naming nsmgr's URL, each later one
//!   an info line, and the success that ends the run an info line again;
//! - [`Handle::unregister`] stops it and sends Unregister, if a Register ever succeeded; the
//!   caller does this while the NSM API still listens, so that nsmgr never holds a URL that
//!   leads nowhere for longer than it must;
//! - every dial to nsmgr goes through [`crate::transport::dial`], bounded by NSM_DIAL_TIMEOUT.
//!
//! The channel to nsmgr is kept across refreshes and dropped after any failure, so that the
//! next attempt dials again (a restarted nsmgr has a new socket).
//!
//! Uses only the configuration and [`crate::transport`]; nothing of the server chain.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tracing::{debug, info, warn};
use vwire_proto::registry::network_service_endpoint_registry_client::NetworkServiceEndpointRegistryClient;
use vwire_proto::registry::{NetworkServiceEndpoint, NetworkServiceLabels};

use crate::config::RegistrationConfig;
use crate::security::{Identity, SecurityError, Signer};
use crate::transport::{FdConn, Transport, TransportError, Url};

/// The first retry delay after a failed Register. 100 ms: nsmgr starting in the same pod
/// restart (the usual reason it is absent) is back within a few hundred milliseconds.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest retry delay. 5 s: an absent nsmgr costs one dial per 5 s, and a forwarder is
/// registered at most 5 s after nsmgr comes back.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// When to refresh if the registry's answer has no `expiration_time`. 20 s: a third of nsmgr's
/// default expiry of 1 min, so that even a registry with that default which forgot to say so
/// sees two refreshes before it would expire the forwarder.
const FALLBACK_REFRESH: Duration = Duration::from_secs(20);
/// The shortest time between two refreshes. 1 s: a registry whose clock is ahead of ours (an
/// `expiration_time` already past) then costs one Register a second, not a busy loop.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// The bound of one Register call once connected. 10 s: nsmgr forwards it to the registry
/// (registry-k8s writes a custom resource), which takes a few seconds on a busy API server;
/// a hung nsmgr is then given up on and dialled again.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of one Register or Unregister attempt (never fatal: the task retries).
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// dialling nsmgr failed
    #[error(transparent)]
    Dial(#[from] TransportError),
    /// nsmgr (or the registry behind it) answered with an error
    #[error("nsmgr answered {}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// nsmgr did not answer in time
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// signing the call's path token failed
    #[error(transparent)]
    Security(#[from] SecurityError),
}

type Client = NetworkServiceEndpointRegistryClient<Channel>;

/// What to register, and where.
#[derive(Debug, Clone)]
pub struct Registration {
    /// nsmgr.
    connect_to: Url,
    /// The bound of each dial, and of the whole Unregister.
    dial_timeout: Duration,
    /// How nsmgr is dialled (plain or mTLS).
    transport: Transport,
    /// Signs the calls' path tokens (with SPIFFE).
    identity: Option<Arc<Identity>>,
    /// What Register and Unregister send.
    endpoint: NetworkServiceEndpoint,
}

/// The URL the registry records for this forwarder, as the listen URL says: where nsmgr will
/// dial its NSM API. On the wire a unix one becomes `inode://<dev>/<ino>` of the socket file,
/// its descriptor attached ([`Nsmgr::advertise`]), as forwarder-vpp's `sendfd` registry client
/// does, so that nsmgr reaches the socket from another mount namespace.
pub fn advertised_url(listen: &Url) -> String {
    listen.to_string()
}

/// A client of nsmgr's registry, and the descriptors of its channel when it is a unix socket.
struct Nsmgr {
    client: Client,
    fds: Option<FdConn>,
    signer: Signer,
}

impl Nsmgr {
    /// `endpoint` as it goes on the wire: a `unix://` URL turned into the `inode://` URL of the
    /// socket file, whose descriptor is queued to go with the call (grpcfd). Over TCP, or if the
    /// socket file cannot be opened (a warning), the URL as configured.
    fn advertise(&self, endpoint: &NetworkServiceEndpoint) -> NetworkServiceEndpoint {
        let mut e = endpoint.clone();
        if let (Some(fds), Ok(Url::Unix(path))) = (&self.fds, Url::parse(&endpoint.url)) {
            match fds.send_path(&path) {
                Ok(inode) => e.url = inode.to_string(),
                Err(err) => warn!(
                    "registering {} with its path, not as inode:// with its descriptor: {err}",
                    endpoint.url
                ),
            }
        }
        e
    }
}

impl Registration {
    /// The registration of forwarder `name` serving the NSM API on `listen`, per `cfg`; `None`
    /// when no nsmgr is configured (NSM_CONNECT_TO unset).
    pub fn new(cfg: &RegistrationConfig, name: &str, listen: &Url) -> Option<Self> {
        let connect_to = cfg.connect_to.clone()?;
        let labels = NetworkServiceLabels {
            labels: cfg
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        //= shared/spec/nsm-forwarder.md §2, step 9
        //# Register with the registry (through `NSM_CONNECT_TO` = nsmgr) as
        //# `NetworkServiceEndpoint{name: NSM_NAME, network_service_names: [NSM_NSNAME="forwarder"],
        //# network_service_labels: {"forwarder": {labels: NSM_LABELS (default p2p:true)}}, url: NSM_LISTEN_ON}`.
        let endpoint = NetworkServiceEndpoint {
            name: name.to_string(),
            network_service_names: vec![cfg.service_name.clone()],
            network_service_labels: [(cfg.service_name.clone(), labels)].into_iter().collect(),
            url: advertised_url(listen),
            ..Default::default()
        };
        Some(Self {
            connect_to,
            dial_timeout: cfg.dial_timeout,
            transport: Transport::plain(cfg.dial_timeout),
            identity: None,
            endpoint,
        })
    }

    /// This registration dialling nsmgr through `transport` (mTLS), its calls signed by
    /// `identity`.
    pub fn secured(self, transport: Transport, identity: Option<Arc<Identity>>) -> Self {
        Self {
            transport,
            identity,
            ..self
        }
    }

    /// What Register sends.
    pub fn endpoint(&self) -> &NetworkServiceEndpoint {
        &self.endpoint
    }

    /// Starts registering (see the module doc) on the current tokio runtime.
    pub fn spawn(self) -> Handle {
        let (stop, stopped) = oneshot::channel();
        let bound = self.dial_timeout;
        let task = tokio::spawn(self.run(stopped));
        Handle { stop, task, bound }
    }

    /// Registers and refreshes until `stop` fires (or its sender is dropped), then unregisters.
    async fn run(self, mut stop: oneshot::Receiver<()>) {
        let mut client: Option<Nsmgr> = None;
        let mut backoff = BACKOFF_FIRST;
        let mut failures = 0u32;
        let mut ever_registered = false;
        info!(nsmgr = %self.connect_to, name = %self.endpoint.name, url = %self.endpoint.url, "registering with the registry through nsmgr");
        loop {
            let attempt = tokio::select! {
                r = self.register(&mut client) => r,
                _ = &mut stop => break,
            };
            let wait = match attempt {
                Ok(answer) => {
                    let wait = refresh_delay(answer.expiration_time.as_ref(), SystemTime::now());
                    if failures > 0 || !ever_registered {
                        info!(nsmgr = %self.connect_to, failed_attempts = failures, refresh_in = ?wait, "registered with the registry");
                    } else {
                        debug!(refresh_in = ?wait, "registration refreshed");
                    }
                    ever_registered = true;
                    failures = 0;
                    backoff = BACKOFF_FIRST;
                    wait
                }
                Err(e) => {
                    let e = crate::transport::error_chain(&e);
                    client = None;
                    failures += 1;
                    let wait = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    if failures == 1 {
                        warn!("registering with nsmgr at {} failed: {e}; retrying in {wait:?}, and until it succeeds", self.connect_to);
                    } else {
                        info!(
                            attempt = failures,
                            "registering with nsmgr at {} failed again: {e}; retrying in {wait:?}",
                            self.connect_to
                        );
                    }
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut stop => break,
            }
        }
        if !ever_registered {
            return;
        }
        match self.unregister(client).await {
            Ok(()) => info!(nsmgr = %self.connect_to, "unregistered from the registry"),
            Err(e) => warn!(
                "unregistering from nsmgr at {} failed: {e}; the registry expires the entry",
                self.connect_to
            ),
        }
    }

    /// A client on a fresh channel to nsmgr, the dial bounded by NSM_DIAL_TIMEOUT; over a unix
    /// socket with file descriptor passing.
    async fn connect(&self) -> Result<Nsmgr, RegistrationError> {
        let d = self.transport.dial(&self.connect_to).await?;
        Ok(Nsmgr {
            client: Client::new(d.channel),
            fds: d.fds,
            signer: Signer::new(self.identity.clone(), d.server),
        })
    }

    /// One Register, on `client` or on a new channel it is set to; the registry's answer.
    async fn register(
        &self,
        client: &mut Option<Nsmgr>,
    ) -> Result<NetworkServiceEndpoint, RegistrationError> {
        let c = match client {
            Some(c) => c,
            None => client.insert(self.connect().await?),
        };
        let endpoint = c.advertise(&self.endpoint);
        let call = c.signer.call(endpoint)?;
        let call = c.client.register(call);
        let answer = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| RegistrationError::Timeout(CALL_TIMEOUT))??;
        Ok(answer.into_inner())
    }

    /// One Unregister, on `client` or a new channel; the whole of it bounded by NSM_DIAL_TIMEOUT,
    /// since it runs while the node shuts down.
    async fn unregister(&self, client: Option<Nsmgr>) -> Result<(), RegistrationError> {
        let call = async {
            let mut c = match client {
                Some(c) => c,
                None => self.connect().await?,
            };
            let endpoint = c.advertise(&self.endpoint);
            let call = c.signer.call(endpoint)?;
            c.client.unregister(call).await?;
            Ok(())
        };
        tokio::time::timeout(self.dial_timeout, call)
            .await
            .map_err(|_| RegistrationError::Timeout(self.dial_timeout))?
    }
}

/// When to refresh a registration the registry answered with `expiration`, at `now`: at 2/3 of
/// the time left, as the NSM sdk's refresh client does, but not sooner than [`MIN_REFRESH`];
/// [`FALLBACK_REFRESH`] without an expiration.
fn refresh_delay(expiration: Option<&prost_types::Timestamp>, now: SystemTime) -> Duration {
    //= shared/spec/nsm-forwarder.md §2, step 9
    //# The registry client chain does refresh (re-Register at 2/3 of the `expiration_time` left;
    //# nsmgr's default expiry is 1 min) plus retry/heal.
    let Some(expiration) = expiration else {
        return FALLBACK_REFRESH;
    };
    let Ok(expiration) = SystemTime::try_from(*expiration) else {
        return FALLBACK_REFRESH;
    };
    let left = expiration.duration_since(now).unwrap_or_default();
    (left * 2 / 3).max(MIN_REFRESH)
}

/// A running registration.
#[derive(Debug)]
pub struct Handle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    /// NSM_DIAL_TIMEOUT, which bounds the Unregister.
    bound: Duration,
}

impl Handle {
    /// Stops refreshing and unregisters (if a Register ever succeeded), waiting at most
    /// NSM_DIAL_TIMEOUT and a little more for the task to end.
    pub async fn unregister(self) {
        let _ = self.stop.send(());
        // The Unregister is bounded by `bound` in the task; the 100 ms on top is for the task
        // to be scheduled and to log.
        let mut task = self.task;
        if tokio::time::timeout(self.bound + Duration::from_millis(100), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RegistrationConfig {
        RegistrationConfig {
            connect_to: Some(Url::Unix("/run/nsm.sock".into())),
            service_name: "forwarder".into(),
            labels: [("p2p".to_string(), "true".to_string())].into(),
            dial_timeout: Duration::from_millis(750),
            max_token_lifetime: Duration::from_secs(600),
            open_telemetry_endpoint: String::new(),
        }
    }

    #[test]
    fn the_endpoint_is_forwarder_vpps() {
        let listen = Url::Unix("/listen.on.sock".into());
        let r = Registration::new(&cfg(), "fwd-1", &listen).unwrap();
        let e = r.endpoint();
        assert_eq!(e.name, "fwd-1");
        assert_eq!(e.network_service_names, vec!["forwarder"]);
        assert_eq!(e.url, "unix:///listen.on.sock");
        let labels = &e.network_service_labels["forwarder"].labels;
        assert_eq!(labels.len(), 1);
        assert_eq!(labels["p2p"], "true");
        assert_eq!(e.expiration_time, None);
        let off = RegistrationConfig {
            connect_to: None,
            ..cfg()
        };
        assert!(Registration::new(&off, "fwd-1", &listen).is_none());
    }

    #[test]
    fn refresh_at_two_thirds_of_what_is_left() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |secs: i64| prost_types::Timestamp {
            seconds: 1_000_000 + secs,
            nanos: 0,
        };
        assert_eq!(refresh_delay(Some(&at(60)), now), Duration::from_secs(40));
        assert_eq!(refresh_delay(Some(&at(3)), now), Duration::from_secs(2));
        assert_eq!(refresh_delay(Some(&at(-5)), now), MIN_REFRESH);
        assert_eq!(refresh_delay(None, now), FALLBACK_REFRESH);
    }
}
