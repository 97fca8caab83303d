//! The SRV6 mechanism's element, server side: an SRv6 tunnel to the client-side forwarder on
//! another node, through the uplink. Served only when an `[srv6] locator` is configured.
//!
//! On the way down it checks the client's half (`src_host_ip`, `src_localsid`: IPv6
//! addresses), allocates this side's SID and binding SID from the locator, or keeps those it
//! allocated before on a refresh, fills in this side's half (`dst_host_ip`, `dst_localsid`,
//! `dst_bsid`, `dst_hw_addr`, `MTU`) and lowers the connection's MTU to what the tunnel allows
//! ([`Remote::accept`]). The SIDs are released by [`super::Mechanisms`] on Close or when the
//! first Request fails; xconnect builds the tunnel.

use std::sync::Arc;

use tonic::Status;
use vwire_proto::connection::Mechanism;
use vwire_proto::mechanism::{keys, MechanismType};
use vwire_proto::networkservice::NetworkServiceRequest;

use super::{accept_remote, MechanismElement};
use crate::remote::Remote;

/// The SRV6 element.
pub struct Srv6 {
    remote: Arc<Remote>,
}

impl Srv6 {
    /// SRv6 over the uplink and the locator of `remote`.
    pub fn new(remote: Arc<Remote>) -> Self {
        Self { remote }
    }
}

/// `SRV6/<src_localsid>-<dst_localsid>`: an SRv6 tunnel, for logs and metrics.
pub fn describe(m: &Mechanism) -> String {
    let p = |k: &str| m.parameters.get(k).map_or("", String::as_str);
    format!(
        "{}/{}-{}",
        MechanismType::Srv6,
        p(keys::SRC_LOCALSID),
        p(keys::DST_LOCALSID)
    )
}

impl MechanismElement for Srv6 {
    fn mechanism_type(&self) -> MechanismType {
        MechanismType::Srv6
    }

    /// Checks the client's half and fills in this side's (the parameters are checked here,
    /// not in `check`).
    fn accept(&self, req: &mut NetworkServiceRequest) -> Result<(), Status> {
        accept_remote(&self.remote, req)
    }
}
