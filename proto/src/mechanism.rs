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

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use crate::connection::{Connection, Mechanism};

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

/// The namespace file an `inodeURL` names: `file:///proc/<pid>/ns/net`, `file:///var/run/netns/x`,
/// or a plain path, without the `file://`.
pub fn netns_path(url: &str) -> &str {
    url.strip_prefix("file://").unwrap_or(url)
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
    const fn pick(self, src: &'static str, dst: &'static str) -> &'static str {
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

const AN_IP: &str = "an IP address";
const AN_IPV6: &str = "an IPv6 address";
const A_PORT: &str = "a UDP port";
const A_VNI: &str = "a 24-bit VNI";
const AN_MTU: &str = "an MTU";
const A_MAC: &str = "a MAC address";
const AN_IFNAME: &str = "a valid interface name (at most 15 bytes, no '/' or spaces)";

/// The parsing the views share, over one parameters map.
#[derive(Clone, Copy)]
struct Raw<'a>(&'a HashMap<String, String>);

impl<'a> Raw<'a> {
    /// The value of `key`; an empty one counts as absent.
    fn get(self, key: &str) -> Option<&'a str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The value of `key` parsed by `parse`, `Ok(None)` when absent.
    fn opt<T>(
        self,
        key: &'static str,
        expected: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, ParamError> {
        self.get(key)
            .map(|v| {
                parse(v).ok_or_else(|| ParamError::Malformed {
                    key,
                    value: v.to_string(),
                    expected,
                })
            })
            .transpose()
    }

    /// The value of `key` parsed by `parse`; absent is [`ParamError::Missing`].
    fn req<T>(
        self,
        key: &'static str,
        expected: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, ParamError> {
        self.opt(key, expected, parse)?
            .ok_or(ParamError::Missing { key, expected })
    }

    fn ip(self, key: &'static str) -> Result<IpAddr, ParamError> {
        self.req(key, AN_IP, |v| v.parse().ok())
    }

    fn ipv6(self, key: &'static str) -> Result<Ipv6Addr, ParamError> {
        self.req(key, AN_IPV6, |v| v.parse().ok())
    }

    fn mtu(self) -> Result<Option<u32>, ParamError> {
        self.opt(keys::MTU, AN_MTU, |v| v.parse().ok())
    }
}

/// Sets parameters in their canonical text form.
struct RawMut<'a>(&'a mut HashMap<String, String>);

impl RawMut<'_> {
    fn set(&mut self, key: &str, value: impl fmt::Display) {
        self.0.insert(key.to_string(), value.to_string());
    }
}

/// Whether `name` can be a Linux interface name: at most 15 bytes, no `/`, no whitespace.
fn valid_ifname(name: &str) -> bool {
    name.len() <= 15 && !name.contains('/') && !name.chars().any(char::is_whitespace)
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next().filter(|p| p.len() == 2)?;
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

struct Mac([u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The parameters of a KERNEL mechanism.
#[derive(Clone, Copy)]
pub struct KernelParams<'a>(Raw<'a>);

impl<'a> KernelParams<'a> {
    /// The interface name, `Ok(None)` when absent (the forwarder then picks one); longer than
    /// 15 bytes or with `/` or whitespace is malformed.
    pub fn name(&self) -> Result<Option<&'a str>, ParamError> {
        match self.0.get(keys::NAME) {
            Some(n) if !valid_ifname(n) => Err(ParamError::Malformed {
                key: keys::NAME,
                value: n.to_string(),
                expected: AN_IFNAME,
            }),
            n => Ok(n),
        }
    }

    /// The network namespace URL, if any.
    pub fn inode_url(&self) -> Option<&'a str> {
        self.0.get(keys::INODE_URL)
    }
}

/// Sets the parameters of a KERNEL mechanism.
pub struct KernelParamsMut<'a>(RawMut<'a>);

impl KernelParamsMut<'_> {
    /// Sets `name`.
    pub fn set_name(&mut self, name: &str) -> &mut Self {
        self.0.set(keys::NAME, name);
        self
    }

    /// Sets `inodeURL`.
    pub fn set_inode_url(&mut self, url: &str) -> &mut Self {
        self.0.set(keys::INODE_URL, url);
        self
    }
}

/// The parameters of a MEMIF mechanism.
#[derive(Clone, Copy)]
pub struct MemifParams<'a>(Raw<'a>);

impl<'a> MemifParams<'a> {
    /// The memif control socket, if any (the server side sets it).
    pub fn socketfile(&self) -> Option<&'a str> {
        self.0.get(keys::SOCKETFILE)
    }

    /// The network namespace URL in which the socket lives, if any.
    pub fn inode_url(&self) -> Option<&'a str> {
        self.0.get(keys::INODE_URL)
    }
}

/// Sets the parameters of a MEMIF mechanism.
pub struct MemifParamsMut<'a>(RawMut<'a>);

impl MemifParamsMut<'_> {
    /// Sets `socketfile`.
    pub fn set_socketfile(&mut self, socket: &str) -> &mut Self {
        self.0.set(keys::SOCKETFILE, socket);
        self
    }

    /// Sets `inodeURL`.
    pub fn set_inode_url(&mut self, url: &str) -> &mut Self {
        self.0.set(keys::INODE_URL, url);
        self
    }
}

/// The parameters of a VXLAN mechanism.
#[derive(Clone, Copy)]
pub struct VxlanParams<'a>(Raw<'a>);

impl<'a> VxlanParams<'a> {
    /// `src_ip` or `dst_ip`: that side's tunnel IP.
    pub fn ip(&self, end: End) -> Result<IpAddr, ParamError> {
        self.0.ip(end.pick(keys::SRC_IP, keys::DST_IP))
    }

    /// `src_port` or `dst_port`, `Ok(None)` when absent (the default VXLAN port); 0 is malformed.
    pub fn port(&self, end: End) -> Result<Option<u16>, ParamError> {
        let key = end.pick(keys::SRC_PORT, keys::DST_PORT);
        self.0
            .opt(key, A_PORT, |v| v.parse().ok().filter(|&p: &u16| p != 0))
    }

    /// `orig_src_ip` or `orig_dst_ip`: that side's address before NAT, if given.
    pub fn orig_ip(&self, end: End) -> Result<Option<IpAddr>, ParamError> {
        let key = end.pick(keys::ORIG_SRC_IP, keys::ORIG_DST_IP);
        self.0.opt(key, AN_IP, |v| v.parse().ok())
    }

    /// The VNI: a decimal number below 2^24.
    pub fn vni(&self) -> Result<u32, ParamError> {
        self.0.req(keys::VNI, A_VNI, |v| {
            v.parse().ok().filter(|&v: &u32| v < (1 << 24))
        })
    }

    /// The MTU, if given.
    pub fn mtu(&self) -> Result<Option<u32>, ParamError> {
        self.0.mtu()
    }
}

/// Sets the parameters of a VXLAN mechanism.
pub struct VxlanParamsMut<'a>(RawMut<'a>);

impl VxlanParamsMut<'_> {
    /// Sets `src_ip` or `dst_ip`.
    pub fn set_ip(&mut self, end: End, ip: IpAddr) -> &mut Self {
        self.0.set(end.pick(keys::SRC_IP, keys::DST_IP), ip);
        self
    }

    /// Sets `src_port` or `dst_port`.
    pub fn set_port(&mut self, end: End, port: u16) -> &mut Self {
        self.0.set(end.pick(keys::SRC_PORT, keys::DST_PORT), port);
        self
    }

    /// Sets `vni`.
    pub fn set_vni(&mut self, vni: u32) -> &mut Self {
        self.0.set(keys::VNI, vni);
        self
    }

    /// Sets `MTU`.
    pub fn set_mtu(&mut self, mtu: u32) -> &mut Self {
        self.0.set(keys::MTU, mtu);
        self
    }
}

/// The parameters of an SRV6 mechanism.
#[derive(Clone, Copy)]
pub struct Srv6Params<'a>(Raw<'a>);

impl<'a> Srv6Params<'a> {
    /// `src_host_ip` or `dst_host_ip`: that side's encapsulation source.
    pub fn host_ip(&self, end: End) -> Result<Ipv6Addr, ParamError> {
        self.0.ipv6(end.pick(keys::SRC_HOST_IP, keys::DST_HOST_IP))
    }

    /// `src_localsid` or `dst_localsid`: that side's SID for the connection.
    pub fn localsid(&self, end: End) -> Result<Ipv6Addr, ParamError> {
        self.0
            .ipv6(end.pick(keys::SRC_LOCALSID, keys::DST_LOCALSID))
    }

    /// `src_bsid` or `dst_bsid`: that side's binding SID.
    pub fn bsid(&self, end: End) -> Result<Ipv6Addr, ParamError> {
        self.0.ipv6(end.pick(keys::SRC_BSID, keys::DST_BSID))
    }

    /// `src_hw_addr` or `dst_hw_addr`: that side's uplink MAC.
    pub fn hw_addr(&self, end: End) -> Result<[u8; 6], ParamError> {
        let key = end.pick(keys::SRC_HW_ADDR, keys::DST_HW_ADDR);
        self.0.req(key, A_MAC, parse_mac)
    }

    /// The MTU, if given.
    pub fn mtu(&self) -> Result<Option<u32>, ParamError> {
        self.0.mtu()
    }
}

/// Sets the parameters of an SRV6 mechanism.
pub struct Srv6ParamsMut<'a>(RawMut<'a>);

impl Srv6ParamsMut<'_> {
    /// Sets `src_host_ip` or `dst_host_ip`.
    pub fn set_host_ip(&mut self, end: End, ip: Ipv6Addr) -> &mut Self {
        self.0
            .set(end.pick(keys::SRC_HOST_IP, keys::DST_HOST_IP), ip);
        self
    }

    /// Sets `src_localsid` or `dst_localsid`.
    pub fn set_localsid(&mut self, end: End, sid: Ipv6Addr) -> &mut Self {
        self.0
            .set(end.pick(keys::SRC_LOCALSID, keys::DST_LOCALSID), sid);
        self
    }

    /// Sets `src_bsid` or `dst_bsid`.
    pub fn set_bsid(&mut self, end: End, sid: Ipv6Addr) -> &mut Self {
        self.0.set(end.pick(keys::SRC_BSID, keys::DST_BSID), sid);
        self
    }

    /// Sets `src_hw_addr` or `dst_hw_addr`.
    pub fn set_hw_addr(&mut self, end: End, mac: [u8; 6]) -> &mut Self {
        self.0
            .set(end.pick(keys::SRC_HW_ADDR, keys::DST_HW_ADDR), Mac(mac));
        self
    }

    /// Sets `MTU`.
    pub fn set_mtu(&mut self, mtu: u32) -> &mut Self {
        self.0.set(keys::MTU, mtu);
        self
    }
}

impl Mechanism {
    /// The type, if vwire knows it.
    pub fn mechanism_type(&self) -> Result<MechanismType, UnknownName> {
        self.r#type.parse()
    }

    /// The parameters read as KERNEL's.
    pub fn kernel(&self) -> KernelParams<'_> {
        KernelParams(Raw(&self.parameters))
    }

    /// Sets KERNEL parameters.
    pub fn kernel_mut(&mut self) -> KernelParamsMut<'_> {
        KernelParamsMut(RawMut(&mut self.parameters))
    }

    /// The parameters read as MEMIF's.
    pub fn memif(&self) -> MemifParams<'_> {
        MemifParams(Raw(&self.parameters))
    }

    /// Sets MEMIF parameters.
    pub fn memif_mut(&mut self) -> MemifParamsMut<'_> {
        MemifParamsMut(RawMut(&mut self.parameters))
    }

    /// The parameters read as VXLAN's.
    pub fn vxlan(&self) -> VxlanParams<'_> {
        VxlanParams(Raw(&self.parameters))
    }

    /// Sets VXLAN parameters.
    pub fn vxlan_mut(&mut self) -> VxlanParamsMut<'_> {
        VxlanParamsMut(RawMut(&mut self.parameters))
    }

    /// The parameters read as SRV6's.
    pub fn srv6(&self) -> Srv6Params<'_> {
        Srv6Params(Raw(&self.parameters))
    }

    /// Sets SRV6 parameters.
    pub fn srv6_mut(&mut self) -> Srv6ParamsMut<'_> {
        Srv6ParamsMut(RawMut(&mut self.parameters))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(t: MechanismType, params: &[(&str, &str)]) -> Mechanism {
        let mut m = t.mechanism();
        m.parameters = params
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        m
    }

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
        assert_eq!(netns_path("file:///proc/1/ns/net"), "/proc/1/ns/net");
        assert_eq!(netns_path("/var/run/netns/x"), "/var/run/netns/x");
    }

    #[test]
    fn kernel_and_memif_views() {
        let mut m = MechanismType::Kernel.mechanism();
        assert_eq!(m.kernel().name(), Ok(None));
        assert_eq!(m.kernel().inode_url(), None);
        m.kernel_mut()
            .set_name("nsm-1")
            .set_inode_url("file:///proc/1/ns/net");
        assert_eq!(m.kernel().name(), Ok(Some("nsm-1")));
        assert_eq!(m.kernel().inode_url(), Some("file:///proc/1/ns/net"));
        assert_eq!(m.parameters[keys::INODE_URL], "file:///proc/1/ns/net");
        for bad in ["sixteen-chars-xx", "a/b", "a b"] {
            let e = with(MechanismType::Kernel, &[("name", bad)])
                .kernel()
                .name()
                .unwrap_err();
            assert_eq!(e.key(), "name");
            assert_eq!(
                e.to_string(),
                format!("parameters[name]: {bad:?} is not a valid interface name (at most 15 bytes, no '/' or spaces)")
            );
        }
        // An empty value is an absent one.
        let m = with(
            MechanismType::Memif,
            &[("inodeURL", ""), ("socketfile", "@s")],
        );
        assert_eq!(m.memif().inode_url(), None);
        assert_eq!(m.memif().socketfile(), Some("@s"));
        let mut m = MechanismType::Memif.mechanism();
        m.memif_mut()
            .set_socketfile("@x")
            .set_inode_url("inode://4/5");
        assert_eq!(
            (m.memif().socketfile(), m.memif().inode_url()),
            (Some("@x"), Some("inode://4/5"))
        );
    }

    #[test]
    fn vxlan_view_round_trips_and_names_bad_keys() {
        let mut m = MechanismType::Vxlan.mechanism();
        let v = m.vxlan();
        assert_eq!(
            v.ip(End::Src),
            Err(ParamError::Missing {
                key: "src_ip",
                expected: "an IP address"
            })
        );
        assert_eq!(
            v.vni().unwrap_err().to_string(),
            "parameters[vni]: missing (expected a 24-bit VNI)"
        );
        assert_eq!(v.port(End::Dst), Ok(None));
        assert_eq!(v.mtu(), Ok(None));
        assert_eq!(v.orig_ip(End::Src), Ok(None));
        m.vxlan_mut()
            .set_ip(End::Src, "10.0.0.1".parse().unwrap())
            .set_ip(End::Dst, "fd00::2".parse().unwrap())
            .set_port(End::Src, 4789)
            .set_vni(0x00ff_fffe)
            .set_mtu(1446);
        let v = m.vxlan();
        assert_eq!(v.ip(End::Src), Ok("10.0.0.1".parse().unwrap()));
        assert_eq!(v.ip(End::Src.other()), Ok("fd00::2".parse().unwrap()));
        assert_eq!(v.port(End::Src), Ok(Some(4789)));
        assert_eq!(v.vni(), Ok(0x00ff_fffe));
        assert_eq!(v.mtu(), Ok(Some(1446)));
        assert_eq!(m.parameters["dst_ip"], "fd00::2");

        let bad = with(
            MechanismType::Vxlan,
            &[
                ("src_ip", "nope"),
                ("src_port", "0"),
                ("dst_port", "70000"),
                ("vni", "16777216"),
                ("MTU", "-1"),
                ("orig_dst_ip", "x"),
            ],
        );
        let v = bad.vxlan();
        assert_eq!(
            v.ip(End::Src).unwrap_err().to_string(),
            "parameters[src_ip]: \"nope\" is not an IP address"
        );
        assert_eq!(v.port(End::Src).unwrap_err().key(), "src_port");
        assert_eq!(
            v.port(End::Dst).unwrap_err().to_string(),
            "parameters[dst_port]: \"70000\" is not a UDP port"
        );
        assert_eq!(
            v.vni().unwrap_err().to_string(),
            "parameters[vni]: \"16777216\" is not a 24-bit VNI"
        );
        assert_eq!(v.mtu().unwrap_err().key(), "MTU");
        assert_eq!(v.orig_ip(End::Dst).unwrap_err().key(), "orig_dst_ip");
    }

    #[test]
    fn srv6_view_round_trips_and_names_bad_keys() {
        let mut m = MechanismType::Srv6.mechanism();
        let sid: Ipv6Addr = "fc00:a::1".parse().unwrap();
        m.srv6_mut()
            .set_host_ip(End::Dst, "fd97::1".parse().unwrap())
            .set_localsid(End::Dst, sid)
            .set_bsid(End::Dst, "fc00:a::2".parse().unwrap())
            .set_hw_addr(End::Dst, [2, 0, 0, 0, 0, 0xab])
            .set_mtu(1418);
        let s = m.srv6();
        assert_eq!(s.host_ip(End::Dst), Ok("fd97::1".parse().unwrap()));
        assert_eq!(s.localsid(End::Dst), Ok(sid));
        assert_eq!(s.bsid(End::Dst), Ok("fc00:a::2".parse().unwrap()));
        assert_eq!(s.hw_addr(End::Dst), Ok([2, 0, 0, 0, 0, 0xab]));
        assert_eq!(m.parameters["dst_hw_addr"], "02:00:00:00:00:ab");
        assert_eq!(s.mtu(), Ok(Some(1418)));
        assert_eq!(s.localsid(End::Src).unwrap_err().key(), "src_localsid");

        let bad = with(
            MechanismType::Srv6,
            &[
                ("src_host_ip", "10.0.0.1"),
                ("src_localsid", "zz"),
                ("src_hw_addr", "02:00:00:00:00"),
                ("dst_hw_addr", "02:00:00:00:00:00:00"),
            ],
        );
        let s = bad.srv6();
        assert_eq!(
            s.host_ip(End::Src).unwrap_err().to_string(),
            "parameters[src_host_ip]: \"10.0.0.1\" is not an IPv6 address"
        );
        assert_eq!(s.localsid(End::Src).unwrap_err().key(), "src_localsid");
        assert!(matches!(
            s.hw_addr(End::Src),
            Err(ParamError::Malformed {
                key: "src_hw_addr",
                ..
            })
        ));
        assert!(s.hw_addr(End::Dst).is_err());
        assert!(matches!(
            s.bsid(End::Src),
            Err(ParamError::Missing {
                key: "src_bsid",
                ..
            })
        ));
    }
}
