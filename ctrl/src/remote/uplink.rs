//! The uplink: the interface the tunnels of the REMOTE mechanisms leave through, found once at
//! startup from the configuration (NSM_TUNNEL_IP), else from the default route, with the
//! attributes the tunnels need (index, MAC, MTU, the SRv6 source address).
//!
//! Contract: discovery reads the interfaces (getifaddrs(3), `/proc/net/*route`, sysfs) and
//! changes nothing. No configured tunnel IP and no default route is not an error: remote
//! mechanisms are then off (`Ok(None)`); a configured address no interface has is.

use std::net::{IpAddr, Ipv6Addr};

use vwire_mechanisms::kernel::parse_mac;

use crate::config::RemoteConfig;

/// Errors finding the uplink.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// no interface has the configured tunnel IP
    #[error("nsm.tunnel_ip: no interface has the address {0}")]
    NoSuchAddress(IpAddr),
    /// reading the interfaces failed
    #[error("listing the network interfaces: {0}")]
    Interfaces(std::io::Error),
    /// a sysfs attribute of the uplink could not be read
    #[error("reading {what} of the uplink {ifname}: {problem}")]
    Attribute {
        /// the interface
        ifname: String,
        /// the attribute
        what: &'static str,
        /// why
        problem: String,
    },
    /// SRv6 needs an IPv6 source address
    #[error("[srv6]: the uplink {0} has no global IPv6 address; set srv6.host_ip")]
    NoIpv6(String),
}

/// The interface tunnels leave through, as found at startup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uplink {
    /// Its name.
    pub ifname: String,
    /// Its index.
    pub ifindex: u32,
    /// NSM_TUNNEL_IP: the VXLAN source address.
    pub tunnel_ip: IpAddr,
    /// The SRv6 encapsulation source, when SRv6 is configured.
    pub srv6_host_ip: Option<Ipv6Addr>,
    /// Its MAC.
    pub mac: [u8; 6],
    /// Its MTU.
    pub mtu: u32,
}

/// One address of one interface.
struct IfAddr {
    ifname: String,
    addr: IpAddr,
}

/// Every address of every interface of this namespace (getifaddrs(3)).
fn if_addrs() -> Result<Vec<IfAddr>, RemoteError> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `head` on success; we free it below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(RemoteError::Interfaces(std::io::Error::last_os_error()));
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: `ifa_name` is a NUL-terminated string owned by the list.
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: `ifa_addr` is non-null and points to a sockaddr whose family says which
        // sockaddr_* it is; each arm reads only that type.
        let addr = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::from(sin6.sin6_addr.s6_addr)
                }
                _ => continue,
            }
        };
        out.push(IfAddr { ifname, addr });
    }
    // SAFETY: `head` came from getifaddrs and is freed once; no reference into it survives.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The interface of the IPv4 default route (`/proc/net/route`), else of the IPv6 one.
fn default_route_interface() -> Option<String> {
    let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    for line in v4.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        if f.len() > 7 && f[1] == "00000000" && f[7] == "00000000" {
            return Some(f[0].to_string());
        }
    }
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    for line in v6.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // dst dst_len src src_len next_hop metric refcnt use flags iface
        if f.len() > 9 && f[0].bytes().all(|b| b == b'0') && f[1] == "00" && f[9] != "lo" {
            return Some(f[9].to_string());
        }
    }
    None
}

fn is_global_v6(a: &Ipv6Addr) -> bool {
    let s = a.segments()[0];
    !a.is_loopback() && !a.is_unspecified() && (s & 0xffc0) != 0xfe80 && (s & 0xff00) != 0xff00
}

fn sysfs(ifname: &str, what: &'static str) -> Result<String, RemoteError> {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/{what}"))
        .map(|s| s.trim().to_string())
        .map_err(|e| RemoteError::Attribute {
            ifname: ifname.to_string(),
            what,
            problem: e.to_string(),
        })
}

impl Uplink {
    /// Finds the uplink: the interface that owns `cfg.tunnel_ip`, or else the default route's
    /// interface and its first address (IPv4 preferred). `Ok(None)`: no tunnel IP is configured
    /// and there is no default route (remote mechanisms are then unavailable).
    /// `tunnel_ip = "none"` also gives `Ok(None)`.
    pub fn discover(cfg: &RemoteConfig) -> Result<Option<Uplink>, RemoteError> {
        if cfg.off {
            return Ok(None);
        }
        let addrs = if_addrs()?;
        let (ifname, tunnel_ip) = match cfg.tunnel_ip {
            Some(ip) => match addrs.iter().find(|a| a.addr == ip) {
                Some(a) => (a.ifname.clone(), ip),
                None => return Err(RemoteError::NoSuchAddress(ip)),
            },
            None => {
                let Some(ifname) = default_route_interface() else {
                    return Ok(None);
                };
                let mine = addrs.iter().filter(|a| a.ifname == ifname);
                let first = mine.clone().find(|a| a.addr.is_ipv4()).or_else(|| {
                    mine.clone()
                        .find(|a| matches!(a.addr, IpAddr::V6(v) if is_global_v6(&v)))
                });
                match first {
                    Some(a) => (ifname, a.addr),
                    None => return Ok(None),
                }
            }
        };
        let srv6_host_ip = match (cfg.srv6_locator, cfg.srv6_host_ip) {
            (None, _) => None,
            (Some(_), Some(ip)) => Some(ip),
            (Some(_), None) => Some(
                addrs
                    .iter()
                    .filter(|a| a.ifname == ifname)
                    .find_map(|a| match a.addr {
                        IpAddr::V6(v) if is_global_v6(&v) => Some(v),
                        _ => None,
                    })
                    .ok_or_else(|| RemoteError::NoIpv6(ifname.clone()))?,
            ),
        };
        let mac = parse_mac(&sysfs(&ifname, "address")?).map_err(|e| RemoteError::Attribute {
            ifname: ifname.clone(),
            what: "address",
            problem: e.to_string(),
        })?;
        let num = |what| -> Result<u32, RemoteError> {
            sysfs(&ifname, what)?
                .parse()
                .map_err(|e: std::num::ParseIntError| RemoteError::Attribute {
                    ifname: ifname.clone(),
                    what,
                    problem: e.to_string(),
                })
        };
        Ok(Some(Uplink {
            ifindex: num("ifindex")?,
            mtu: num("mtu")?,
            ifname,
            tunnel_ip,
            srv6_host_ip,
            mac,
        }))
    }
}
