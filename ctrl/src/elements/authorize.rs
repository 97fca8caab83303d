//! authorize: every Request and Close is checked by the authorisation policies, and
//! MonitorConnections subscriptions by the monitor policies ([`crate::security::policy`]).
//!
//! - Request and Close: the policies see the left side of the path (`path_segments[0..=index]`,
//!   this hop's segment last, with the tokens updatetoken wrote) and the caller's TLS
//!   certificate. vwire's defaults are NSM's: every token is a JWT, the previous one is signed
//!   by the TLS peer, each token's `aud` holds the next one's `sub`, none has expired. A refusal
//!   is PermissionDenied naming the policy that failed; the request goes no further.
//! - After a successful Request, the SPIFFE IDs of the connection (the TLS peer's and the
//!   `sub` of every token up to this hop) are recorded with the ids of all its path segments;
//!   the record goes with the connection's Close. A MonitorConnections subscription is checked
//!   against that map ([`Authorize::check_monitor`]): vwire's default lets a caller follow only
//!   connections whose path its SPIFFE ID is on, and refuses an empty selector.
//! - Work the chain starts itself (a timeout's Close) has no caller and is not checked.
//!
//! Place it right after updatetoken. Only in a run with SPIFFE.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use rustls::pki_types::CertificateDer;
use tonic::Status;
use vwire_proto::connection::{Connection, MonitorScopeSelector};
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::{caller, BoxFut, Element, Next};
use crate::security::policy::{self, Policies, PolicyError, SegmentView};
use crate::security::{token, CertFacts};

/// What a connection's record holds for the monitor policies.
struct Record {
    /// The SPIFFE IDs on its path.
    spiffe_ids: BTreeSet<String>,
    /// The ids of its path segments.
    segment_ids: Vec<String>,
}

/// The authorize element.
pub struct Authorize {
    requests: Policies,
    monitors: Policies,
    /// By connection id (this hop's segment id).
    records: Mutex<HashMap<String, Record>>,
}

impl Authorize {
    /// Checks Requests and Closes with `requests`, and subscriptions with `monitors`.
    pub fn new(requests: Policies, monitors: Policies) -> Self {
        Self {
            requests,
            monitors,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// How many connections are recorded (for tests and leak checks).
    pub fn recorded(&self) -> usize {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Checks `conn` (after updatetoken) against the request policies for a caller with
    /// `certificate`.
    fn check(
        &self,
        conn: &Connection,
        certificate: Option<&CertificateDer<'_>>,
    ) -> Result<(), Status> {
        let segments = conn.path.as_ref().map_or(&[][..], |p| &p.path_segments[..]);
        let index = conn
            .path
            .as_ref()
            .and_then(|p| usize::try_from(p.index).ok())
            .filter(|i| *i < segments.len())
            .ok_or_else(|| Status::invalid_argument("connection.path.index: beyond the path"))?;
        let views: Vec<SegmentView<'_>> = segments
            .iter()
            .map(|s| SegmentView {
                name: &s.name,
                id: &s.id,
                token: &s.token,
                expires: s
                    .expires
                    .and_then(|t| std::time::SystemTime::try_from(t).ok()),
            })
            .collect();
        let pem = certificate.map(|c| token::cert_pem(c)).unwrap_or_default();
        let input = policy::path_input(&views, index, &pem);
        self.requests.check(&input).map_err(denied)
    }

    /// Records who is on `conn`'s path (see the module doc).
    fn record(&self, conn: &Connection, certificate: Option<&CertificateDer<'_>>) {
        let Some(path) = &conn.path else { return };
        let index = usize::try_from(path.index).unwrap_or(usize::MAX);
        let mut spiffe_ids: BTreeSet<String> = path
            .path_segments
            .iter()
            .take(index.saturating_add(1))
            .filter_map(|s| token::claims(&s.token).ok())
            .map(|c| c.sub)
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(facts) = certificate.and_then(|c| CertFacts::of(c).ok()) {
            spiffe_ids.insert(facts.spiffe_id);
        }
        let segment_ids = path.path_segments.iter().map(|s| s.id.clone()).collect();
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                conn.id.clone(),
                Record {
                    spiffe_ids,
                    segment_ids,
                },
            );
    }

    /// Checks a MonitorConnections subscription with `sel` by the caller with `certificate`
    /// against the monitor policies. PermissionDenied names the policy that refused.
    pub fn check_monitor(
        &self,
        certificate: Option<&CertificateDer<'_>>,
        sel: &MonitorScopeSelector,
    ) -> Result<(), Status> {
        let caller_id = match certificate.map(|c| CertFacts::of(c)) {
            Some(Ok(f)) => f.spiffe_id,
            Some(Err(e)) => {
                return Err(Status::permission_denied(format!(
                    "caller certificate: {e}"
                )))
            }
            None => String::new(),
        };
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in self
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            for id in &r.spiffe_ids {
                map.entry(id.clone())
                    .or_default()
                    .extend(r.segment_ids.iter().cloned());
            }
        }
        let selector_ids: Vec<&str> = sel
            .path_segments
            .iter()
            .map(|s| s.id.as_str())
            .filter(|id| !id.is_empty())
            .collect();
        let input = policy::monitor_input(
            map.iter()
                .map(|(id, conns)| (id.as_str(), conns.iter().map(String::as_str))),
            &selector_ids,
            &caller_id,
        );
        self.monitors.check(&input).map_err(denied)
    }
}

/// A policy's refusal as the gRPC status the caller gets.
fn denied(e: PolicyError) -> Status {
    match e {
        PolicyError::Denied { policy } => {
            Status::permission_denied(format!("refused by policy {policy}"))
        }
        // A policy that fails to evaluate refuses too.
        other => Status::permission_denied(format!("authorisation failed: {other}")),
    }
}

impl Element for Authorize {
    fn name(&self) -> &'static str {
        "authorize"
    }

    fn request<'a>(
        &'a self,
        req: NetworkServiceRequest,
        next: Next<'a>,
    ) -> BoxFut<'a, Result<Connection, Status>> {
        Box::pin(async move {
            let Some(caller) = caller() else {
                return next.request(req).await;
            };
            let conn = req
                .connection
                .as_ref()
                .ok_or_else(|| Status::invalid_argument("request.connection: missing"))?;
            self.check(conn, caller.certificate.as_ref())?;
            // A failed refresh leaves the record of the established connection as it was.
            let r = next.request(req).await;
            if let Ok(c) = &r {
                self.record(c, caller.certificate.as_ref());
            }
            r
        })
    }

    fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
        Box::pin(async move {
            if let Some(caller) = caller() {
                self.check(&conn, caller.certificate.as_ref())?;
            }
            let id = conn.id.clone();
            let r = next.close(conn).await;
            self.records
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            r
        })
    }
}
