//! The names NSM puts in strings, as types: mechanism classes ([`Class`]), mechanism types
//! ([`MechanismType`]), connection payloads ([`Payload`]), the parameter keys ([`keys`]), and
//! typed views over a [`Mechanism`]'s `parameters` map, one per mechanism type vwire serves.
//!
//! The strings are those of `shared/spec/nsm-api.md` §4 (`mechanisms/common` and each
//! mechanism's constants in the NSM api repo); this module is their one home for the forwarder
//! and the example workloads alike.
//!
//! Views and writers:
//! - a view ([`KernelParams`], [`MemifParams`], [`VxlanParams`], [`Srv6Params`]) borrows the map
//!   and parses on each call. An absent key and an empty value are the same (NSM's Go code reads
//!   a missing map entry as `""`). A getter of a parameter that must be there returns
//!   [`ParamError::Missing`] or [`ParamError::Malformed`]; a getter of an optional one returns
//!   `Ok(None)` when it is absent. A view does not check the mechanism's type: pick the view
//!   after matching [`Mechanism::mechanism_type`].
//! - a writer (`*ParamsMut`) sets parameters in the canonical text form (IP addresses as
//!   `Display` writes them, numbers in decimal, MACs as `aa:bb:cc:dd:ee:ff`), so that what a
//!   writer sets its view reads back unchanged.
//!
//! The REMOTE mechanisms have two halves of parameters, `src_*` set by the client-side
//! forwarder and `dst_*` by the server side; [`End`] names the half.
//!
//! Errors carry no gRPC code: which code a bad parameter deserves depends on who sent it (a
//! client's request is InvalidArgument, an endpoint's answer FailedPrecondition), so the caller
//! maps them. Their `Display` starts with `parameters[<key>]`, for the caller to prefix with the
//! field path (`connection.mechanism.`).
//!
//! Files: this module holds the names and the errors; `params` the parsing the views share and
//! the accessors on [`Mechanism`]; `local` the KERNEL and MEMIF views; `remote` the VXLAN and
//! SRV6 ones.

mod local;
mod params;
mod remote;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::connection::{Connection, Mechanism};

pub use local::{KernelParams, KernelParamsMut, MemifParams, MemifParamsMut};
pub use remote::{Srv6Params, Srv6ParamsMut, VxlanParams, VxlanParamsMut};

/// Parameter keys (nsm-api.md §4), exact strings.
pub mod keys {
    /// KERNEL: the interface name inside the namespace (at most 15 bytes).
    pub const NAME: &str = "name";
    /// KERNEL, MEMIF: the network namespace, `file:///proc/<pid>/ns/net` or `inode://dev/ino`.
    pub const INODE_URL: &str = "inodeURL";
    /// MEMIF: the memif control socket (`@` starts an abstract name).
    pub const SOCKETFILE: &str = "socketfile";
    /// REMOTE mechanisms: the MTU the tunnel allows, decimal.
    pub const MTU: &str = "MTU";
    /// VXLAN: the client side's tunnel IP.
    pub const SRC_IP: &str = "src_ip";
    /// VXLAN: the server side's tunnel IP.
    pub const DST_IP: &str = "dst_ip";
    /// VXLAN: the client side's UDP port.
    pub const SRC_PORT: &str = "src_port";
    /// VXLAN: the server side's UDP port.
    pub const DST_PORT: &str = "dst_port";
    /// VXLAN: the client's address before NAT, preferred by the VNI parity rule.
    pub const ORIG_SRC_IP: &str = "orig_src_ip";
    /// VXLAN: the server's address before NAT, preferred by the VNI parity rule.
    pub const ORIG_DST_IP: &str = "orig_dst_ip";
    /// VXLAN: the 24-bit VNI, decimal.
    pub const VNI: &str = "vni";
    /// SRV6: the client side's encapsulation source.
    pub const SRC_HOST_IP: &str = "src_host_ip";
    /// SRV6: the server side's encapsulation source.
    pub const DST_HOST_IP: &str = "dst_host_ip";
    /// SRV6: the client side's binding SID.
    pub const SRC_BSID: &str = "src_bsid";
    /// SRV6: the server side's binding SID.
    pub const DST_BSID: &str = "dst_bsid";
    /// SRV6: the client side's SID for the connection.
    pub const SRC_LOCALSID: &str = "src_localsid";
    /// SRV6: the server side's SID for the connection.
    pub const DST_LOCALSID: &str = "dst_localsid";
    /// SRV6: the client side's host SID (in the API; vwire does not use it).
    pub const SRC_HOST_LOCALSID: &str = "src_host_localsid";
    /// SRV6: the server side's host SID (in the API; vwire does not use it).
    pub const DST_HOST_LOCALSID: &str = "dst_host_localsid";
    /// SRV6: the client side's uplink MAC.
    pub const SRC_HW_ADDR: &str = "src_hw_addr";
    /// SRV6: the server side's uplink MAC.
    pub const DST_HW_ADDR: &str = "dst_hw_addr";
}

/// A string that names none of the values of a closed set (a mechanism type, class or payload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownName {
    /// What was parsed: `mechanism type`, `mechanism class` or `payload`.
    pub what: &'static str,
    /// The string as received.
    pub name: String,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a known {}", self.name, self.what)
    }
}

impl std::error::Error for UnknownName {}

/// Implements `as_str`, `FromStr` and `Display` for a closed set of wire strings.
macro_rules! wire_names {
    ($ty:ident, $what:literal, { $($variant:ident => $s:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The wire string.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $s),+
                }
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;

            /// Exact, case-sensitive match of the wire string.
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($s => Ok($ty::$variant),)+
                    _ => Err(UnknownName { what: $what, name: s.to_string() }),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// `Mechanism.cls`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Both ends on this node (`LOCAL`).
    Local,
    /// The other end is a forwarder on another node (`REMOTE`).
    Remote,
}

wire_names!(Class, "mechanism class", { Local => "LOCAL", Remote => "REMOTE" });

/// `Mechanism.type`, for the mechanisms vwire knows. Other types (VFIO, WIREGUARD, …) do not
/// parse: to vwire they are unsupported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MechanismType {
    /// A kernel interface (`KERNEL`): [`KernelParams`].
    Kernel,
    /// A memif interface (`MEMIF`): [`MemifParams`].
    Memif,
    /// A VXLAN tunnel to a forwarder on another node (`VXLAN`): [`VxlanParams`].
    Vxlan,
    /// An SRv6 tunnel to a forwarder on another node (`SRV6`): [`Srv6Params`].
    Srv6,
}

wire_names!(MechanismType, "mechanism type", {
    Kernel => "KERNEL",
    Memif => "MEMIF",
    Vxlan => "VXLAN",
    Srv6 => "SRV6",
});

impl MechanismType {
    /// The class NSM gives this type.
    pub const fn class(self) -> Class {
        match self {
            MechanismType::Kernel | MechanismType::Memif => Class::Local,
            MechanismType::Vxlan | MechanismType::Srv6 => Class::Remote,
        }
    }

    /// A mechanism of this type and its class, with no parameters.
    pub fn mechanism(self) -> Mechanism {
        Mechanism {
            cls: self.class().as_str().to_string(),
            r#type: self.as_str().to_string(),
            parameters: HashMap::new(),
        }
    }
}

/// `Connection.payload`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Payload {
    /// Ethernet frames (`ETHERNET`); also what an empty payload means.
    #[default]
    Ethernet,
    /// IP packets (`IP`).
    Ip,
}

wire_names!(Payload, "payload", { Ethernet => "ETHERNET", Ip => "IP" });

impl Payload {
    /// The payload a connection's `payload` field means: `""` is [`Payload::Ethernet`] (NSM's
    /// default), anything else must be a wire string.
    pub fn of_field(s: &str) -> Result<Payload, UnknownName> {
        if s.is_empty() {
            Ok(Payload::Ethernet)
        } else {
            s.parse()
        }
    }
}

impl Connection {
    /// This connection's payload ([`Payload::of_field`]).
    pub fn payload_type(&self) -> Result<Payload, UnknownName> {
        Payload::of_field(&self.payload)
    }

    /// Whether the payload is `IP` (an empty or unknown one is not).
    pub fn is_ip_payload(&self) -> bool {
        self.payload == Payload::Ip.as_str()
    }
}

impl Mechanism {
    /// The type, if vwire knows it.
    pub fn mechanism_type(&self) -> Result<MechanismType, UnknownName> {
        self.r#type.parse()
    }
}

/// Which half of a REMOTE mechanism's parameters: `src_*` (the client side's) or `dst_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum End {
    /// `src_*`: the client side, which offered the mechanism.
    Src,
    /// `dst_*`: the server side, which accepted it.
    Dst,
}

impl End {
    /// The other half.
    pub const fn other(self) -> End {
        match self {
            End::Src => End::Dst,
            End::Dst => End::Src,
        }
    }

    /// The key of this half: `src` or `dst`.
    pub(crate) const fn pick(self, src: &'static str, dst: &'static str) -> &'static str {
        match self {
            End::Src => src,
            End::Dst => dst,
        }
    }
}

/// A parameter that is missing or does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamError {
    /// The parameter is absent or empty.
    Missing {
        /// Its key.
        key: &'static str,
        /// What it should hold, with its article: `an IP address`.
        expected: &'static str,
    },
    /// The parameter does not hold what it should.
    Malformed {
        /// Its key.
        key: &'static str,
        /// Its value as received.
        value: String,
        /// What it should hold, with its article: `an IP address`.
        expected: &'static str,
    },
}

impl ParamError {
    /// The key of the parameter.
    pub fn key(&self) -> &'static str {
        match self {
            ParamError::Missing { key, .. } | ParamError::Malformed { key, .. } => key,
        }
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamError::Missing { key, expected } => {
                write!(f, "parameters[{key}]: missing (expected {expected})")
            }
            ParamError::Malformed {
                key,
                value,
                expected,
            } => write!(f, "parameters[{key}]: {value:?} is not {expected}"),
        }
    }
}

impl std::error::Error for ParamError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_errors() {
        for t in MechanismType::ALL {
            assert_eq!(t.as_str().parse::<MechanismType>(), Ok(*t));
            let m = t.mechanism();
            assert_eq!(m.mechanism_type(), Ok(*t));
            assert_eq!(m.cls.parse::<Class>(), Ok(t.class()));
        }
        assert_eq!(MechanismType::Srv6.class(), Class::Remote);
        assert_eq!(MechanismType::Memif.mechanism().cls, "LOCAL");
        for p in Payload::ALL {
            assert_eq!(p.as_str().parse::<Payload>(), Ok(*p));
        }
        let e = "kernel".parse::<MechanismType>().unwrap_err();
        assert_eq!(e.to_string(), "\"kernel\" is not a known mechanism type");
        assert!("VFIO".parse::<MechanismType>().is_err());
        assert_eq!(Payload::of_field(""), Ok(Payload::Ethernet));
        assert_eq!(Payload::of_field("IP"), Ok(Payload::Ip));
        assert!(Payload::of_field("SMOKE").is_err());
        let c = Connection {
            payload: "IP".into(),
            ..Default::default()
        };
        assert!(c.is_ip_payload());
        assert_eq!(c.payload_type(), Ok(Payload::Ip));
        assert!(!Connection::default().is_ip_payload());
    }
}
