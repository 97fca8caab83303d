//! What the examples add to vwire's transport ([`vwire::transport`], which parses the
//! `unix://` and `tcp://` URLs, listens and dials, and words errors with their whole chain of
//! causes): a bounded shutdown grace for servers, and `--spiffe`: an SVID from the Workload API
//! at `SPIFFE_ENDPOINT_SOCKET` for mTLS and path tokens, as NSM's own clients and endpoints
//! have.

use std::time::Duration;

use tonic::transport::server::Router;
use vwire::transport::{TransportError, Url};

pub use vwire::transport::error_chain;

/// The token lifetime of the examples' path tokens: NSM's default.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// With `spiffe`, this program's SPIFFE identity from the Workload API at
/// `SPIFFE_ENDPOINT_SOCKET` (waiting for a first SVID); without, none.
pub async fn identity(
    spiffe: bool,
) -> Result<Option<std::sync::Arc<vwire::security::Identity>>, String> {
    if !spiffe {
        return Ok(None);
    }
    let endpoint = std::env::var("SPIFFE_ENDPOINT_SOCKET")
        .map_err(|_| "--spiffe needs SPIFFE_ENDPOINT_SOCKET (unix:///path)".to_string())?;
    vwire::security::Identity::start(&endpoint, MAX_TOKEN_LIFETIME)
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}

/// mTLS with `identity`'s SVID, or plaintext without one; dials bounded by
/// [`vwire::transport::DIAL_TIMEOUT`].
pub fn transport_for(
    identity: Option<&std::sync::Arc<vwire::security::Identity>>,
) -> vwire::transport::Transport {
    match identity {
        Some(id) => vwire::transport::Transport::tls(id.tls(), vwire::transport::DIAL_TIMEOUT),
        None => vwire::transport::Transport::plain(vwire::transport::DIAL_TIMEOUT),
    }
}

/// How long open client connections may delay the exit after the shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Serves `router` on `url` through `transport` (plain or mTLS) until `shutdown` resolves, then
/// lets open connections finish for at most [`SHUTDOWN_GRACE`]. A unix socket file (a stale one
/// is replaced) is removed when the server stops, however it stops.
pub async fn serve(
    router: Router,
    url: &Url,
    transport: &vwire::transport::Transport,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), TransportError> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let listener = transport.bind(url).await?;
    let server = listener.serve(router, async {
        let _ = rx.await;
    });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r,
        () = shutdown => {}
    }
    let _ = tx.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                "clients still connected {SHUTDOWN_GRACE:?} after the shutdown signal; stopping anyway"
            );
            Ok(())
        }
    }
}
