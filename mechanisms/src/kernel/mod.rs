//! The KERNEL mechanism's netlink side: veth pairs into other network namespaces, and the IP
//! context NSM puts on them.
//!
//! NSM's KERNEL mechanism hands a client (or endpoint) a kernel interface named by its `name`
//! parameter (≤ 15 bytes, e.g. `nsm-1`) inside the namespace named by its `inodeURL`. vwire does
//! what forwarder-vpp's `kernelvethpair` and `connectioncontextkernel` do, with netlink only:
//!
//! 1. [`Netns::open`] the target namespace (`file:///proc/<pid>/ns/net`, `file:///proc/<pid>/fd/<n>`
//!    after NSM's fd passing, `file:///var/run/netns/<name>`, or a plain path), and [`Netns::current`]
//!    for the forwarder's own;
//! 2. [`NetlinkIn::new`] a netlink handle in each;
//! 3. [`create_veth_into`] the pair: the host end stays with vwire (which attaches AF_XDP to it,
//!    see [`crate::afxdp`]), the peer is created straight in the target namespace under its final
//!    name, both up, with the connection's MTU (NSM's `Connection.context.MTU`);
//! 4. [`apply_context`] on the peer: MTU, addresses, static neighbours, routes;
//! 5. on Close, [`remove_context`] (optional when the veth goes anyway) and [`delete_veth`].
//!
//! For the REMOTE mechanisms (VXLAN, SRv6), whose outer Ethernet header vwire writes itself,
//! [`neigh`] gives the kernel's next hop toward a remote tunnel endpoint ([`route_to`]), that
//! next hop's MAC ([`resolve`], letting the kernel's ARP or neighbour discovery do the
//! resolving) and the neighbour table's later changes ([`NeighWatcher`]).
//!
//! Every step is idempotent, because NSM refreshes a connection by repeating the whole Request:
//! repeating it changes nothing in the kernel and never flaps the link. Every step is async on
//! tokio and meant for the control thread; none blocks it.
//!
//! Threads and namespaces: `setns(2)` applies to one OS thread. The control thread never changes
//! namespace; whatever must happen inside another namespace (creating a netlink socket, writing
//! a `/proc/sys/net` sysctl) runs on a fresh thread that enters it and exits after. A netlink
//! socket keeps acting on the namespace it was created in, so once made it is driven from the
//! control thread like any socket. See [`netns`] and [`netlink`].
//!
//! Input is never trusted to be well-formed: names, addresses and MACs are checked and bad
//! input is an error naming the culprit, never a panic.
//!
//! Layout: [`netns`] (namespaces and namespace threads), [`netlink`] (the per-namespace handle),
//! [`link`] (veth pairs), [`context`] (addresses, routes, neighbours, MTU), [`neigh`] (next
//! hops of tunnels and their MACs).

pub mod context;
pub mod link;
pub mod neigh;
pub mod netlink;
pub mod netns;

pub use context::{apply_context, remove_context, IpContextSpec, Neighbor, RouteSpec};
pub use ipnet::IpNet;
pub use link::{
    create_veth_into, delete_veth, delete_veths, fnv1a, owned_group, VethPair, VethSpec,
    DELETE_GROUP,
};
pub use neigh::{resolve, route_to, NeighError, NeighEvent, NeighWatcher, NextHop};
pub use netlink::{LinkState, NetlinkIn};
pub use netns::{url_to_path as netns_url_path, Netns};

/// Linux's interface name limit: `IFNAMSIZ` (16) less the terminating NUL.
pub const IFNAME_MAX: usize = 15;

/// Errors of the kernel mechanism.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// an interface name the kernel would refuse
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName {
        /// the name
        name: String,
        /// what is wrong with it
        reason: &'static str,
    },
    /// a MAC address that cannot be used
    #[error("invalid MAC address {mac:?}: {reason}")]
    InvalidMac {
        /// the address as given
        mac: String,
        /// what is wrong with it
        reason: &'static str,
    },
    /// a namespace URL vwire cannot open
    #[error("invalid network namespace URL {url:?}: {reason}")]
    InvalidNetnsUrl {
        /// the URL
        url: String,
        /// what is wrong with it
        reason: &'static str,
    },
    /// opening a namespace file failed
    #[error("cannot open network namespace {path:?}: {source}")]
    OpenNetns {
        /// the path
        path: String,
        /// the system error
        source: std::io::Error,
    },
    /// the file is not a network namespace
    #[error("{path:?} is not a network namespace")]
    NotNetns {
        /// the path
        path: String,
    },
    /// a namespace thread could not enter the namespace (needs CAP_SYS_ADMIN)
    #[error("cannot enter network namespace {netns}: {source}")]
    EnterNetns {
        /// the namespace
        netns: String,
        /// the system error
        source: std::io::Error,
    },
    /// a step run inside a namespace failed
    #[error("{what} in network namespace {netns}: {source}")]
    InNetns {
        /// the step
        what: &'static str,
        /// the namespace
        netns: String,
        /// the system error
        source: std::io::Error,
    },
    /// a namespace thread could not be started, or died
    #[error("network namespace thread for {netns}: {source}")]
    Thread {
        /// the namespace
        netns: String,
        /// the system error
        source: std::io::Error,
    },
    /// called outside a tokio runtime
    #[error("the kernel mechanism must run inside a tokio runtime with IO enabled")]
    NoRuntime,
    /// a netlink request failed
    #[error("{what} in network namespace {netns}: {source}")]
    Netlink {
        /// the step, with its arguments
        what: String,
        /// the namespace
        netns: String,
        /// the kernel's error
        source: std::io::Error,
    },
    /// the interface does not exist
    #[error("no interface {name:?} in network namespace {netns}")]
    NoSuchInterface {
        /// the interface name
        name: String,
        /// the namespace
        netns: String,
    },
    /// a name vwire wants is taken by a link vwire did not make
    #[error("interface {name:?} in network namespace {netns} is a {found}, expected it to be {expected}; not touching it")]
    NameTaken {
        /// the interface name
        name: String,
        /// the namespace
        netns: String,
        /// the kind of link found
        found: String,
        /// what vwire expected there
        expected: &'static str,
    },
    /// an IP context that cannot be applied as given
    #[error("invalid {what}: {reason}")]
    InvalidSpec {
        /// the offending item
        what: String,
        /// what is wrong with it
        reason: &'static str,
    },
    /// reading or writing a `/proc/sys` setting failed
    #[error("{path} in network namespace {netns}: {source}")]
    Sysctl {
        /// the sysctl file
        path: String,
        /// the namespace
        netns: String,
        /// the system error
        source: std::io::Error,
    },
}

/// Checks a Linux interface name: 1 to 15 bytes, no `/`, no whitespace, no NUL or `:`, not `.`
/// or `..` (the kernel's `dev_valid_name`, plus `:` which it reserves for aliases).
pub fn validate_ifname(name: &str) -> Result<(), KernelError> {
    let invalid = |reason| {
        Err(KernelError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > IFNAME_MAX {
        return invalid("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not interface names");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return invalid("contains '/', ':', NUL or whitespace");
    }
    Ok(())
}

/// Parses a MAC address written as six two-digit hex bytes separated by `:` or `-`
/// (`02:fe:00:00:00:01`, NSM's `hardware_address`).
pub fn parse_mac(text: &str) -> Result<[u8; 6], KernelError> {
    let invalid = |reason| KernelError::InvalidMac {
        mac: text.to_string(),
        reason,
    };
    let mut mac = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for byte in &mut mac {
        let part = parts.next().ok_or_else(|| invalid("fewer than 6 bytes"))?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("each byte must be two hex digits"));
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| invalid("not hexadecimal"))?;
    }
    if parts.next().is_some() {
        return Err(invalid("more than 6 bytes"));
    }
    Ok(mac)
}

/// Formats a MAC address the way `ip` prints it.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// A MAC usable as an interface address: not all zeros, not multicast (the kernel refuses both).
fn validate_unicast_mac(mac: &[u8; 6]) -> Result<(), KernelError> {
    let invalid = |reason| {
        Err(KernelError::InvalidMac {
            mac: format_mac(mac),
            reason,
        })
    };
    if mac.iter().all(|&b| b == 0) {
        return invalid("all zeros");
    }
    if mac[0] & 1 != 0 {
        return invalid("multicast (the low bit of the first byte is set)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifnames() {
        for good in ["nsm-1", "a", "veth0123456789a", "x.y"] {
            assert!(validate_ifname(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "veth0123456789ab",
            "a/b",
            "a b",
            "a\tb",
            "a:1",
            ".",
            "..",
            "a\0",
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
        // 15 bytes, but more than 15 chars would not fit either: bytes count
        assert!(validate_ifname("ééééééé€").is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:fe:00:0a:0B:ff").ok(),
            Some([2, 0xfe, 0, 0x0a, 0x0b, 0xff])
        );
        assert_eq!(
            parse_mac("02-fe-00-0a-0b-ff").ok(),
            Some([2, 0xfe, 0, 0x0a, 0x0b, 0xff])
        );
        for bad in [
            "",
            "02:fe:00:0a:0b",
            "02:fe:00:0a:0b:ff:00",
            "2:fe:00:0a:0b:ff",
            "zz:fe:00:0a:0b:ff",
            "+2:fe:00:0a:0b:ff",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            format_mac(&[2, 0xfe, 0, 0x0a, 0x0b, 0xff]),
            "02:fe:00:0a:0b:ff"
        );
        assert!(validate_unicast_mac(&[0; 6]).is_err());
        assert!(validate_unicast_mac(&[1, 0, 0, 0, 0, 1]).is_err());
        assert!(validate_unicast_mac(&[2, 0, 0, 0, 0, 1]).is_ok());
    }

    #[test]
    fn specs() {
        let net = |s: &str| s.parse::<IpNet>().expect("test prefix");
        let ok = IpContextSpec {
            addrs: vec![net("172.16.1.100/31"), net("fd00::1/64")],
            routes: vec![RouteSpec {
                dst: net("10.0.0.0/8"),
                gateway: Some("172.16.1.101".parse().expect("ip")),
            }],
            neighbors: vec![Neighbor {
                ip: "172.16.1.101".parse().expect("ip"),
                mac: [2, 0, 0, 0, 0, 1],
            }],
            mtu: Some(1400),
        };
        assert!(ok.validate().is_ok());
        let mut bad = ok.clone();
        bad.routes[0].gateway = Some("fd00::2".parse().expect("ip"));
        assert!(matches!(
            bad.validate(),
            Err(KernelError::InvalidSpec { .. })
        ));
        let mut bad = ok.clone();
        bad.addrs.push(net("224.0.0.1/32"));
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.addrs.push(net("0.0.0.0/0"));
        assert!(bad.validate().is_err());
        let mut bad = ok;
        bad.mtu = Some(0);
        assert!(bad.validate().is_err());
    }
}
