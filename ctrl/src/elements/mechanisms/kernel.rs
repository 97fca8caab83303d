//! The KERNEL mechanism's element: a kernel interface in the client's network namespace.
//!
//! Parameters (nsm-api.md §4): `name`, the interface name, a valid Linux one
//! ([`validate_ifname`]: 1 to 15 bytes, no `/`, `:`, NUL or whitespace, not `.` or `..`;
//! InvalidArgument otherwise; when absent, xconnect picks `nsm-<tag>`), and
//! `inodeURL`, the client's namespace. Nothing is allocated on the way down: the veth pair is
//! built by xconnect once the endpoint has answered.

use tonic::Status;
use vwire_mechanisms::kernel::validate_ifname;
use vwire_proto::connection::Mechanism;
use vwire_proto::mechanism::{keys, MechanismType};

use super::MechanismElement;

/// The KERNEL element.
pub struct Kernel;

/// Checks a client's KERNEL parameters.
pub fn check(m: &Mechanism) -> Result<(), Status> {
    match m.kernel().name().map(validate_ifname) {
        Some(Err(e)) => Err(Status::invalid_argument(format!(
            "connection.mechanism.parameters[{}]: {e}",
            keys::NAME
        ))),
        _ => Ok(()),
    }
}

impl MechanismElement for Kernel {
    fn mechanism_type(&self) -> MechanismType {
        MechanismType::Kernel
    }

    fn check(&self, m: &Mechanism) -> Result<(), Status> {
        check(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_name(name: &str) -> Mechanism {
        let mut m = MechanismType::Kernel.mechanism();
        m.kernel_mut().set_name(name);
        m
    }

    #[test]
    fn names_the_kernel_refuses_are_invalid_arguments() {
        for bad in ["sixteen-chars-xx", "a/b", "a b", "a:1", ".."] {
            let s = check(&with_name(bad)).unwrap_err();
            assert_eq!(s.code(), tonic::Code::InvalidArgument, "{bad:?}");
            assert!(
                s.message()
                    .starts_with("connection.mechanism.parameters[name]: ")
                    && s.message().contains(&format!("{bad:?}")),
                "{bad:?}: {}",
                s.message()
            );
        }
        for good in ["nsm-1", "fifteen-chars-x"] {
            assert!(check(&with_name(good)).is_ok(), "{good:?}");
        }
        // Absent (or empty, which counts as absent): xconnect picks a name.
        assert!(check(&MechanismType::Kernel.mechanism()).is_ok());
        assert!(check(&with_name("")).is_ok());
    }
}
