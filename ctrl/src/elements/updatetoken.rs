//! updatetoken: the path tokens of a Request or Close, server side (`nsm-api.md` §6).
//!
//! - The previous segment (the caller's) gets the token the caller sent in its metadata
//!   (`nsm-client-token`), with its expiry (`nsm-client-token-expires`; the token's `exp` when
//!   that header is absent or unreadable). A caller that sent none keeps what its segment
//!   holds: the authorisation that follows judges it.
//! - This hop's segment gets a fresh token ([`Identity::sign`]): `sub` this hop, `aud` the
//!   TLS peer, expiring at the earliest of now + NSM_MAX_TOKEN_LIFETIME and both certificates'
//!   NotAfter. Every refresh signs anew. (When vwire forwards the request, connect re-signs it
//!   for the next hop.)
//!
//! Place it after updatepath (which selects this hop's segment) and begin, before authorize
//! (which checks what this element wrote). Only in a run with SPIFFE: without it no hop signs.
//! A close is treated as a request.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tonic::Status;
use vwire_proto::connection::Connection;
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::{caller, BoxFut, Element, Next};
use crate::security::{token, Identity};

/// The updatetoken element.
pub struct UpdateToken {
    identity: Arc<Identity>,
}

impl UpdateToken {
    /// Signs with `identity`.
    pub fn new(identity: Arc<Identity>) -> Self {
        Self { identity }
    }

    /// Writes the caller's and this hop's tokens into `conn`'s path.
    fn update(&self, conn: &mut Connection) -> Result<(), Status> {
        let caller = caller().unwrap_or_default();
        let Some(path) = conn.path.as_mut() else {
            return Err(Status::invalid_argument("connection.path: missing"));
        };
        let index = usize::try_from(path.index).unwrap_or(usize::MAX);
        if index >= path.path_segments.len() {
            return Err(Status::invalid_argument(format!(
                "connection.path.index: {index} is beyond the {} path segments",
                path.path_segments.len()
            )));
        }
        if let (Some(prev), Some((tok, expires))) = (
            index.checked_sub(1).map(|i| &mut path.path_segments[i]),
            caller.token,
        ) {
            let expires = expires.or_else(|| {
                token::claims(&tok)
                    .ok()
                    .map(|c| SystemTime::UNIX_EPOCH + Duration::from_secs(c.exp))
            });
            prev.token = tok;
            prev.expires = expires.map(prost_types::Timestamp::from);
        }
        let (tok, expires) = self
            .identity
            .sign(caller.certificate.as_ref())
            .map_err(|e| Status::internal(format!("signing this hop's path token: {e}")))?;
        let own = &mut path.path_segments[index];
        own.token = tok;
        own.expires = Some(prost_types::Timestamp::from(expires));
        Ok(())
    }
}

impl Element for UpdateToken {
    fn name(&self) -> &'static str {
        "updatetoken"
    }

    fn request<'a>(
        &'a self,
        mut req: NetworkServiceRequest,
        next: Next<'a>,
    ) -> BoxFut<'a, Result<Connection, Status>> {
        Box::pin(async move {
            let Some(conn) = req.connection.as_mut() else {
                return Err(Status::invalid_argument("request.connection: missing"));
            };
            self.update(conn)?;
            next.request(req).await
        })
    }

    fn close<'a>(&'a self, mut conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
        Box::pin(async move {
            // A close the chain starts itself (a timeout) has no caller and is not re-signed.
            if caller().is_some() {
                self.update(&mut conn)?;
            }
            next.close(conn).await
        })
    }
}
