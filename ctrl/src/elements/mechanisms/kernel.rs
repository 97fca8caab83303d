//! The KERNEL mechanism's element: a kernel interface in the client's network namespace.
//!
//! Parameters (nsm-api.md §4): `name`, the interface name, at most 15 bytes with no `/` or
//! whitespace (InvalidArgument otherwise; when absent, xconnect picks `nsm-<tag>`), and
//! `inodeURL`, the client's namespace. Nothing is allocated on the way down: the veth pair is
//! built by xconnect once the endpoint has answered.

use tonic::Status;
use vwire_proto::connection::Mechanism;
use vwire_proto::mechanism::MechanismType;

use super::{invalid_param, MechanismElement};

/// The KERNEL element.
pub struct Kernel;

/// Checks a client's KERNEL parameters.
pub fn check(m: &Mechanism) -> Result<(), Status> {
    m.kernel().name().map(|_| ()).map_err(invalid_param)
}

impl MechanismElement for Kernel {
    fn mechanism_type(&self) -> MechanismType {
        MechanismType::Kernel
    }

    fn check(&self, m: &Mechanism) -> Result<(), Status> {
        check(m)
    }
}
