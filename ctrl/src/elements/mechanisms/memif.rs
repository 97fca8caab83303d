//! The MEMIF mechanism's element: a memif interface toward the client, vwire being its server.
//!
//! Parameters (nsm-api.md §4): `inodeURL`, the client's namespace, is required, because vwire
//! creates the abstract memif socket there (InvalidArgument without it). vwire answers with
//! `socketfile`, set by xconnect once the interface exists. There is no mode parameter: the
//! memif mode follows the connection's payload.

use tonic::Status;
use vwire_proto::connection::Mechanism;
use vwire_proto::mechanism::MechanismType;

use super::MechanismElement;

/// The MEMIF element.
pub struct Memif;

/// Checks a client's MEMIF parameters.
pub fn check(m: &Mechanism) -> Result<(), Status> {
    match m.memif().inode_url() {
        Some(_) => Ok(()),
        None => Err(Status::invalid_argument(
            "connection.mechanism.parameters[inodeURL]: MEMIF needs the client's network namespace (its memif socket is created there)",
        )),
    }
}

impl MechanismElement for Memif {
    fn mechanism_type(&self) -> MechanismType {
        MechanismType::Memif
    }

    fn check(&self, m: &Mechanism) -> Result<(), Status> {
        check(m)
    }
}
