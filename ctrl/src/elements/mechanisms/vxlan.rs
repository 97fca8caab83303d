//! The VXLAN mechanism's element, server side: a VXLAN tunnel to the client-side forwarder on
//! another node, through the uplink.
//!
//! On the way down it checks the client's half (`src_ip`, of the uplink's address family;
//! `src_port`), picks the VNI by the NSM parity rule, or keeps the one it picked before on a
//! refresh, fills in this side's half (`dst_ip`, `dst_port`, `vni`, `MTU`) and lowers the
//! connection's MTU to what the tunnel allows ([`Remote::accept`]). The VNI is released by
//! [`super::Mechanisms`] on Close or when the first Request fails; xconnect builds the tunnel.
//! Served only when vwire has an uplink.

use std::sync::Arc;

use tonic::Status;
use vwire_proto::connection::Mechanism;
use vwire_proto::mechanism::{keys, MechanismType};
use vwire_proto::networkservice::NetworkServiceRequest;

use super::{accept_remote, MechanismElement};
use crate::remote::Remote;

/// The VXLAN element.
pub struct Vxlan {
    remote: Arc<Remote>,
}

impl Vxlan {
    /// VXLAN over the uplink of `remote`.
    pub fn new(remote: Arc<Remote>) -> Self {
        Self { remote }
    }
}

/// `VXLAN/vni=<vni>`: a VXLAN tunnel, for logs and metrics.
pub fn describe(m: &Mechanism) -> String {
    let vni = m.parameters.get(keys::VNI).map_or("", String::as_str);
    format!("{}/vni={vni}", MechanismType::Vxlan)
}

impl MechanismElement for Vxlan {
    fn mechanism_type(&self) -> MechanismType {
        MechanismType::Vxlan
    }

    /// Checks the client's half and fills in this side's (the parameters are checked here,
    /// not in `check`).
    fn accept(&self, req: &mut NetworkServiceRequest) -> Result<(), Status> {
        accept_remote(&self.remote, req)
    }
}
