//! What the examples add to vwire's transport ([`vwire::transport`], which parses the
//! `unix://` and `tcp://` URLs, listens and dials, and words errors with their whole chain of
//! causes): a bounded shutdown grace for servers.

use std::time::Duration;

use tonic::transport::server::Router;
use vwire::transport::{TransportError, Url};

pub use vwire::transport::error_chain;

/// How long open client connections may delay the exit after the shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Serves `router` on `url` until `shutdown` resolves, then lets open connections finish for at
/// most [`SHUTDOWN_GRACE`]. A unix socket file (a stale one is replaced) is removed when the
/// server stops, however it stops.
pub async fn serve(
    router: Router,
    url: &Url,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), TransportError> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = vwire::transport::serve(router, url, async {
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
