//! `vwire health`: a gRPC health probe of an NSM API, for Kubernetes probes, in place of
//! upstream's `grpc-health-probe -spiffe`. It asks `grpc.health.v1.Health/Check` at a
//! `unix://` or `tcp://` URL, plain or over mTLS with an SVID of the SPIFFE Workload API at
//! `SPIFFE_ENDPOINT_SOCKET`, and succeeds only for SERVING. The whole probe (SVID, dial,
//! handshake, call) is bounded by one timeout.

use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::security::{Identity, SecurityError};
use crate::transport::{Transport, TransportError, Url};

/// Errors of a probe.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// no SVID for mTLS
    #[error("{0}")]
    Security(#[from] SecurityError),
    /// the server cannot be reached
    #[error("{}", crate::transport::error_chain(.0))]
    Dial(#[from] TransportError),
    /// the call failed
    #[error("health check: {}: {}", .0.code(), .0.message())]
    Call(#[from] tonic::Status),
    /// the service is not SERVING
    #[error("the service is {0:?}")]
    NotServing(ServingStatus),
    /// the probe took longer than allowed
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Probes `service` ("" for the server as a whole) at `addr` within `timeout`; over mTLS with
/// an SVID of the Workload API at `spiffe` when given.
pub async fn probe(
    addr: &Url,
    spiffe: Option<&str>,
    service: &str,
    timeout: Duration,
) -> Result<(), HealthError> {
    let work = async {
        let identity = match spiffe {
            Some(endpoint) => Some(Identity::start(endpoint, Duration::from_secs(60)).await?),
            None => None,
        };
        let transport = match &identity {
            Some(id) => Transport::tls(id.tls(), timeout),
            None => Transport::plain(timeout),
        };
        let checked = async {
            let d = transport.dial(addr).await?;
            let r = HealthClient::new(d.channel)
                .check(HealthCheckRequest {
                    service: service.to_string(),
                })
                .await?;
            match r.into_inner().status() {
                ServingStatus::Serving => Ok(()),
                other => Err(HealthError::NotServing(other)),
            }
        }
        .await;
        if let Some(id) = identity {
            id.shutdown().await;
        }
        checked
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| HealthError::Timeout(timeout))?
}
