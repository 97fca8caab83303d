//! Zero trust as NSM does it: this hop's identity (an X.509-SVID from the SPIFFE Workload API),
//! mTLS on every gRPC socket, the path tokens it signs, and the policies that authorise what
//! its peers ask.
//!
//! - [`Identity`] follows the Workload API at `SPIFFE_ENDPOINT_SOCKET` (the `spiffe` crate's
//!   `X509Source`): a rotated SVID or trust bundle is used by the next handshake and the next
//!   token, without a restart; connections already open keep theirs.
//! - [`Identity::tls`] gives the rustls configurations for [`crate::transport`]: TLS 1.2 or
//!   1.3, client certificates required, ALPN `h2`, and any SPIFFE ID of the trust bundle
//!   accepted at the TLS layer (`spiffe-rustls`), as upstream does: which peer may do what is
//!   the policies' business.
//! - [`Identity::sign`] signs a path token (`nsm-api.md` §6, [`token`]): `sub` this hop's
//!   SPIFFE ID, `aud` the peer's, expiring at the earliest of now + NSM_MAX_TOKEN_LIFETIME and
//!   the two certificates' NotAfter.
//! - [`policy`] evaluates Rego policies (upstream's OPA policies, with `regorus`) over a path or
//!   a monitor subscription; [`crate::elements::authorize`] applies them.
//!
//! Without SPIFFE (`NSM_INSECURE=true`, for labs) none of this runs: plaintext gRPC, no tokens,
//! no authorisation.

pub mod policy;
pub mod token;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use spiffe::X509Source;

use crate::transport::{ServerCert, TlsConfig};

/// Path-token metadata of every NSM call (`nsm-api.md` §5): the caller's token.
pub const TOKEN_HEADER: &str = "nsm-client-token";
/// Path-token metadata of every NSM call: the token's expiry, RFC 3339.
pub const TOKEN_EXPIRES_HEADER: &str = "nsm-client-token-expires";

/// How long start-up waits for a first SVID before it says so in the log (and waits on).
const SVID_WAIT_LOG: Duration = Duration::from_secs(10);

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// the Workload API failed, or gave nothing usable
    #[error("SPIFFE Workload API at {endpoint}: {source}")]
    WorkloadApi {
        /// `SPIFFE_ENDPOINT_SOCKET`
        endpoint: String,
        /// what failed
        source: spiffe::X509SourceError,
    },
    /// the TLS configuration could not be built from the SVID
    #[error("TLS configuration from the SVID: {0}")]
    Tls(#[from] spiffe_rustls::Error),
    /// a certificate is not what a SPIFFE peer presents
    #[error("certificate: {0}")]
    Certificate(String),
    /// signing a token failed
    #[error("signing a token: {0}")]
    Token(#[from] token::TokenError),
    /// the thread that follows the Workload API could not run
    #[error("the SPIFFE thread: {0}")]
    Thread(std::io::Error),
}

/// What a run with SPIFFE needs for its NSM server: this hop's identity and the policies.
pub struct Trust {
    /// This hop's identity.
    pub identity: Arc<Identity>,
    /// The policies of Requests and Closes.
    pub requests: policy::Policies,
    /// The policies of MonitorConnections subscriptions.
    pub monitors: policy::Policies,
}

/// What a certificate says about its holder, as far as tokens and policies care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFacts {
    /// The SPIFFE ID of its URI SAN.
    pub spiffe_id: String,
    /// When it expires.
    pub not_after: SystemTime,
}

impl CertFacts {
    /// Reads the SPIFFE ID and the expiry of a DER certificate.
    pub fn of(der: &[u8]) -> Result<Self, SecurityError> {
        let id = spiffe::cert::spiffe_id_from_der(der)
            .map_err(|e| SecurityError::Certificate(e.to_string()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| SecurityError::Certificate(e.to_string()))?;
        let secs = cert.validity().not_after.timestamp();
        let not_after =
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
        Ok(Self {
            spiffe_id: id.to_string(),
            not_after,
        })
    }
}

/// This hop's SPIFFE identity, following the Workload API.
pub struct Identity {
    source: X509Source,
    tls: TlsConfig,
    max_token_lifetime: Duration,
    /// Stops the `vwire-spiffe` thread, and the thread.
    stop: std::sync::Mutex<
        Option<(
            tokio::sync::oneshot::Sender<()>,
            std::thread::JoinHandle<()>,
        )>,
    >,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("spiffe_id", &self.spiffe_id().ok())
            .finish()
    }
}

impl Identity {
    /// Connects to the Workload API at `endpoint` (`unix:///path`, as `SPIFFE_ENDPOINT_SOCKET`
    /// is written) and waits for a first SVID, as long as it takes (a SPIRE agent may come up
    /// after vwire; the wait is logged every 10 s). Tokens it signs live at most
    /// `max_token_lifetime`. Must run inside a tokio runtime.
    ///
    /// The Workload API client and the TLS material it feeds run on a thread of their own
    /// (`vwire-spiffe`, with its own small runtime), not on the caller's: `spiffe-rustls`
    /// refuses handshakes between a rotation reaching the source and its TLS material being
    /// rebuilt, and on a busy control thread that window would last as long as the control
    /// thread keeps the rebuild from running. On a thread of its own it lasts microseconds.
    pub async fn start(
        endpoint: &str,
        max_token_lifetime: Duration,
    ) -> Result<Arc<Self>, SecurityError> {
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let url = endpoint.to_string();
        let thread = std::thread::Builder::new()
            .name("vwire-spiffe".into())
            .spawn(move || follow(url, started_tx, stopped))
            .map_err(SecurityError::Thread)?;
        let (source, tls) = match started.await {
            Ok(r) => r?,
            Err(_) => {
                let _ = thread.join();
                return Err(SecurityError::Thread(std::io::Error::other(
                    "the SPIFFE thread ended",
                )));
            }
        };
        let identity = Self {
            source,
            tls,
            max_token_lifetime,
            stop: std::sync::Mutex::new(Some((stop, thread))),
        };
        tracing::info!(
            "SPIFFE identity {} from {endpoint}: mTLS on every gRPC socket, path tokens, policies",
            identity.spiffe_id()?
        );
        Ok(Arc::new(identity))
    }

    /// The rustls configurations for [`crate::transport::Transport::tls`].
    pub fn tls(&self) -> TlsConfig {
        self.tls.clone()
    }

    /// This hop's SPIFFE ID (of the current SVID).
    pub fn spiffe_id(&self) -> Result<String, SecurityError> {
        Ok(self.svid()?.spiffe_id().to_string())
    }

    /// The current SVID.
    fn svid(&self) -> Result<Arc<spiffe::X509Svid>, SecurityError> {
        self.source
            .svid()
            .map_err(|source| SecurityError::WorkloadApi {
                endpoint: "(current SVID)".into(),
                source,
            })
    }

    /// Signs this hop's path token for `peer` (the certificate of the other end of the TLS
    /// connection, DER) with the current SVID: `sub` = this hop, `aud` = [peer's SPIFFE ID],
    /// and the expiry, which is returned with it: the earliest of now +
    /// NSM_MAX_TOKEN_LIFETIME, this SVID's NotAfter and the peer's. Without a peer
    /// certificate the token has no audience.
    pub fn sign(
        &self,
        peer: Option<&CertificateDer<'_>>,
    ) -> Result<(String, SystemTime), SecurityError> {
        self.sign_as(&*self.svid()?, peer)
    }

    /// [`Identity::sign`] with `svid` rather than the current one.
    fn sign_as(
        &self,
        svid: &spiffe::X509Svid,
        peer: Option<&CertificateDer<'_>>,
    ) -> Result<(String, SystemTime), SecurityError> {
        let own = svid
            .cert_chain()
            .first()
            .ok_or_else(|| SecurityError::Certificate("the SVID has no certificate".into()))?;
        let mut expires = SystemTime::now() + self.max_token_lifetime;
        expires = expires.min(CertFacts::of(own.as_bytes())?.not_after);
        let mut aud = Vec::new();
        if let Some(peer) = peer {
            let facts = CertFacts::of(peer)?;
            expires = expires.min(facts.not_after);
            aud.push(facts.spiffe_id);
        }
        let exp = expires
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = token::Claims {
            sub: svid.spiffe_id().to_string(),
            aud,
            exp,
        };
        let signed = token::sign(&claims, svid.private_key().as_bytes())?;
        // The claim has whole seconds; the expiry said with the token must not be later.
        Ok((signed, SystemTime::UNIX_EPOCH + Duration::from_secs(exp)))
    }

    /// Stops following the Workload API.
    pub async fn shutdown(&self) {
        let taken = self
            .stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some((stop, thread)) = taken {
            let _ = stop.send(());
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// What the `vwire-spiffe` thread hands over: the source and the TLS configurations.
type Started = Result<(X509Source, TlsConfig), SecurityError>;

/// The `vwire-spiffe` thread: follows the Workload API at `endpoint` until `stopped` (or until
/// the starter gives up waiting for the first SVID).
fn follow(
    endpoint: String,
    started: tokio::sync::oneshot::Sender<Started>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = started.send(Err(SecurityError::Thread(e)));
            return;
        }
    };
    rt.block_on(async move {
        let mut started = started;
        let first = tokio::select! {
            r = first_svid(&endpoint) => r,
            () = started.closed() => return,
        };
        let source = match &first {
            Ok((source, _)) => source.clone(),
            Err(_) => {
                let _ = started.send(first);
                return;
            }
        };
        if started.send(first).is_ok() {
            let _ = stopped.await;
        }
        source.shutdown().await;
    });
}

/// Builds the source at `endpoint`, waiting for a first SVID, and the TLS configurations.
async fn first_svid(endpoint: &str) -> Started {
    let source = loop {
        let built = X509Source::builder()
            .endpoint(endpoint)
            .initial_sync_timeout(SVID_WAIT_LOG)
            .build()
            .await;
        match built {
            Ok(s) => break s,
            Err(spiffe::X509SourceError::InitialSyncTimeout) => {
                tracing::warn!(
                    "no X.509-SVID from the SPIFFE Workload API at {endpoint} yet; waiting"
                );
            }
            Err(source) => {
                return Err(SecurityError::WorkloadApi {
                    endpoint: endpoint.to_string(),
                    source,
                })
            }
        }
    };
    let h2 = [b"h2".to_vec()];
    let server = spiffe_rustls::mtls_server(source.clone())
        .with_alpn_protocols(h2.clone())
        .build()?;
    let client = spiffe_rustls::mtls_client(source.clone())
        .with_alpn_protocols(h2)
        .build()?;
    Ok((
        source,
        TlsConfig {
            server: Arc::new(server),
            client: Arc::new(client),
        },
    ))
}

/// Signs the calls of one channel: this hop's identity (none without SPIFFE) and the server
/// certificate of the channel's connection ([`crate::transport::Dialled::server`]).
///
/// The server verifies a token against the certificate this hop presented in the handshake of
/// the connection it arrives on, so a channel's tokens are signed with the SVID that was
/// current at its latest handshake (taken at the first token after it): after a rotation an
/// open connection keeps signing with the SVID it presented, and a new connection signs with
/// the new one.
#[derive(Clone, Debug, Default)]
pub struct Signer {
    identity: Option<Arc<Identity>>,
    server: ServerCert,
    /// The handshake count and the SVID its tokens are signed with.
    pinned: Arc<std::sync::Mutex<Option<Pinned>>>,
}

impl Signer {
    /// Signs as `identity`, for the server of `server`.
    pub fn new(identity: Option<Arc<Identity>>, server: ServerCert) -> Self {
        Self {
            identity,
            server,
            pinned: Arc::default(),
        }
    }

    /// This hop's token for the server and its expiry ([`Identity::sign`]); none without an
    /// identity. Before the channel's first handshake the server is unknown and the token has
    /// no audience.
    pub fn token(&self) -> Result<Option<(String, SystemTime)>, SecurityError> {
        let Some(identity) = &self.identity else {
            return Ok(None);
        };
        let handshakes = self.server.handshakes();
        let svid = {
            let mut pinned = self
                .pinned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match pinned.as_ref() {
                Some((n, svid)) if *n == handshakes => svid.clone(),
                _ => {
                    let svid = identity.svid()?;
                    *pinned = Some((handshakes, svid.clone()));
                    svid
                }
            }
        };
        identity
            .sign_as(&svid, self.server.get().as_ref())
            .map(Some)
    }

    /// `msg` as a call carrying the token ([`add_token`]), when there is an identity.
    pub fn call<T>(&self, msg: T) -> Result<tonic::Request<T>, SecurityError> {
        let mut req = tonic::Request::new(msg);
        if let Some((token, expires)) = self.token()? {
            add_token(&mut req, &token, expires);
        }
        Ok(req)
    }
}

/// A channel's handshake count and the SVID that was current at that handshake.
type Pinned = (u64, Arc<spiffe::X509Svid>);

/// Adds a path token to the metadata of an outgoing call: `nsm-client-token` and
/// `nsm-client-token-expires` (RFC 3339).
pub fn add_token<T>(req: &mut tonic::Request<T>, token: &str, expires: SystemTime) {
    let md = req.metadata_mut();
    // A JWT and an RFC 3339 time are ASCII: both parse.
    if let Ok(v) = token.parse() {
        md.insert(TOKEN_HEADER, v);
    }
    if let Ok(v) = rfc3339(expires).parse() {
        md.insert(TOKEN_EXPIRES_HEADER, v);
    }
}

impl From<SecurityError> for tonic::Status {
    fn from(e: SecurityError) -> Self {
        tonic::Status::internal(format!("security: {e}"))
    }
}

/// RFC 3339 in UTC with nanoseconds, trailing zeros trimmed (Go's RFC3339Nano, which NSM
/// uses). Times before the epoch are clamped to it.
pub fn rfc3339(t: SystemTime) -> String {
    let ts = prost_types::Timestamp::from(t.max(SystemTime::UNIX_EPOCH)).to_string();
    // prost writes 0, 3, 6 or 9 fraction digits; Go trims every trailing zero.
    match ts.trim_end_matches('Z').split_once('.') {
        Some((secs, frac)) => match frac.trim_end_matches('0') {
            "" => format!("{secs}Z"),
            frac => format!("{secs}.{frac}Z"),
        },
        None => ts,
    }
}

/// Parses an RFC 3339 time, as `nsm-client-token-expires` carries it.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let ts: prost_types::Timestamp = s.parse().ok()?;
    SystemTime::try_from(ts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_000_000);
        let s = rfc3339(t);
        assert!(s.starts_with("2023-11-14T22:13:20.123"), "{s}");
        assert!(s.ends_with('Z'), "{s}");
        assert_eq!(parse_rfc3339(&s), Some(t));
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20+01:00"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_699_996_400))
        );
        assert_eq!(parse_rfc3339("tomorrow"), None);
    }
}
