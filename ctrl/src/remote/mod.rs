//! The REMOTE mechanisms, VXLAN and SRV6: the uplink they share, the parameters vwire puts in
//! a mechanism on either side of a connection, and what each connection was allocated.
//!
//! Roles (nsm-api.md §4): toward a `tcp://` next hop vwire is the *client* side. It offers
//! REMOTE mechanisms ([`Remote::offers`]) carrying its own half of the parameters (`src_*`),
//! in the order of NSM_MECHANISM_PRIORITY (VXLAN, then SRV6, by default). A forwarder that
//! receives such a request is the *server* side ([`Remote::accept`]): it fills in its half
//! (`dst_*`) and, for VXLAN, picks the VNI by the NSM rule (random; even if `src_ip` ≤
//! `dst_ip` byte-wise, `orig_*` preferred, else odd), so that two forwarders that are each
//! other's clients never pick the same VNI for the same pair of addresses. Then both build the
//! same tunnel from the full parameter set ([`Remote::tunnel_of`]).
//!
//! - VXLAN: `src_ip`/`dst_ip` (the tunnel IPs), `src_port`/`dst_port`, `vni`, `MTU`. Packets
//!   are demultiplexed on the uplink by (remote tunnel IP, VNI). An IP payload travels inside an
//!   Ethernet header with fixed MACs (see `vwire_mechanisms::vxlan`).
//! - SRV6: `src_host_ip`/`dst_host_ip` (the IPv6 encapsulation sources), `src_localsid`/
//!   `dst_localsid` (each side's per-connection SID, allocated from its `[srv6] locator`, with
//!   End.DX2 for ETHERNET, End.DX4 for IP — End.DX6 when the connection's addresses are all
//!   IPv6), `src_bsid`/`dst_bsid` (a second SID per side, named for compatibility with the
//!   legacy design; vwire steers by interface, so nothing is bound to it), and
//!   `src_hw_addr`/`dst_hw_addr` (the uplink MACs). Each side encapsulates toward the other
//!   side's local SID with a one-segment SRH. The `*_host_localsid` keys are not used.
//!
//! MTU: the connection's and the mechanism's MTU are clamped to the uplink MTU minus the
//! tunnel overhead (VXLAN 54 over IPv4, 74 over IPv6; SRv6 82 for ETHERNET, 64 for IP).
//!
//! Allocations (VNIs seen from a peer, SIDs) are recorded per connection and released by
//! [`Remote::release`] on Close or failure; [`Remote::settle`] releases what an offer allocated
//! for mechanisms the peer did not pick.
//!
//! This is the state the VXLAN and SRV6 elements (`crate::elements::mechanisms`), connect and
//! xconnect share, and the uplink that [`crate::node`] finds at startup ([`Uplink::discover`], in the
//! `uplink` file); it is not a chain element itself, so it stays outside `elements`.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, OnceLock};

use vwire_mechanisms::kernel::neigh::NeighWatcher;

use tonic::Status;
use vwire_proto::connection::Mechanism;
use vwire_proto::mechanism::{End, MechanismType, ParamError};

use crate::config::RemoteConfig;

mod uplink;

pub use uplink::{RemoteError, Uplink};

/// MTU overheads (nsm-forwarder.md §5, and `vwire_mechanisms::srv6`).
const VXLAN_OVERHEAD_V4: u32 = vwire_mechanisms::vxlan::MTU_OVERHEAD_V4;
const VXLAN_OVERHEAD_V6: u32 = vwire_mechanisms::vxlan::MTU_OVERHEAD_V6;
const SRV6_OVERHEAD_ETHERNET: u32 = vwire_mechanisms::srv6::MTU_OVERHEAD_ETHERNET;
const SRV6_OVERHEAD_IP: u32 = vwire_mechanisms::srv6::MTU_OVERHEAD_IP;

/// A tunnel's parameters, from this side's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelPlan {
    /// VXLAN between `local` and `remote` (same family), sent to the peer's `port`.
    Vxlan {
        /// This side's tunnel IP.
        local: IpAddr,
        /// The peer's tunnel IP.
        remote: IpAddr,
        /// The peer's VXLAN port.
        port: u16,
        /// The VNI.
        vni: u32,
    },
    /// SRv6 from `local_host` toward the peer's `remote_sid`; the peer sends to `local_sid`.
    Srv6 {
        /// This side's encapsulation source.
        local_host: Ipv6Addr,
        /// This side's SID for the connection.
        local_sid: Ipv6Addr,
        /// The peer's encapsulation source (its underlay address).
        remote_host: Ipv6Addr,
        /// The peer's SID for the connection.
        remote_sid: Ipv6Addr,
    },
}

impl TunnelPlan {
    /// The peer's underlay address: where the outer packets go first.
    pub fn remote_underlay(&self) -> IpAddr {
        match *self {
            TunnelPlan::Vxlan { remote, .. } => remote,
            TunnelPlan::Srv6 { remote_host, .. } => IpAddr::V6(remote_host),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Alloc {
    /// A VNI this side picked, with the peer's tunnel IP.
    Vni(IpAddr, u32),
    /// A SID from the locator.
    Sid(Ipv6Addr),
}

#[derive(Default)]
struct Allocations {
    by_conn: HashMap<String, Vec<Alloc>>,
    used: HashSet<Alloc>,
    next_sid: u64,
}

/// The REMOTE mechanisms of this forwarder.
pub struct Remote {
    uplink: Uplink,
    vxlan_port: u16,
    priority: Vec<String>,
    locator: Option<(Ipv6Addr, u8)>,
    state: Mutex<Allocations>,
    watcher: OnceLock<NeighWatcher>,
}

/// A parameter's raw value, "" when absent (tests read offers with it).
/// A bad parameter in a request's REMOTE mechanism: InvalidArgument naming it
/// (`connection.mechanism.parameters[<key>]: …`).
fn invalid_param(e: ParamError) -> Status {
    Status::invalid_argument(format!("connection.mechanism.{e}"))
}

#[cfg(test)]
fn param<'a>(m: &'a Mechanism, k: &str) -> &'a str {
    m.parameters.get(k).map(String::as_str).unwrap_or("")
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// A random number from the OS (VNI choice): the NSM rule asks for a random VNI.
fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 4 {
        // Fall back on the clock: uniqueness is checked by the caller anyway.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        return t;
    }
    u32::from_ne_bytes(b)
}

impl Remote {
    /// REMOTE mechanisms over `uplink`, as configured.
    pub fn new(uplink: Uplink, cfg: &RemoteConfig) -> Self {
        Self {
            uplink,
            vxlan_port: cfg.vxlan_port,
            priority: cfg.priority.clone(),
            locator: cfg.srv6_locator,
            state: Mutex::new(Allocations::default()),
            watcher: OnceLock::new(),
        }
    }

    /// Hands over the watcher of the kernel's neighbour table that [`Remote::follow`] feeds
    /// (once; later calls are ignored).
    pub fn set_watcher(&self, w: NeighWatcher) {
        let _ = self.watcher.set(w);
    }

    /// Follows the MAC of the tunnel next hop `ip` on interface `ifindex` (a no-op without a
    /// watcher). Followed neighbours stay followed: they are few, and their events are cheap.
    pub fn follow(&self, ifindex: u32, ip: IpAddr) {
        if let Some(w) = self.watcher.get() {
            w.watch(ifindex, ip);
        }
    }

    /// The uplink.
    pub fn uplink(&self) -> &Uplink {
        &self.uplink
    }

    /// The mechanism types this side serves as a server.
    pub fn supports(&self, t: MechanismType) -> bool {
        match t {
            MechanismType::Vxlan => true,
            MechanismType::Srv6 => self.locator.is_some(),
            MechanismType::Kernel | MechanismType::Memif => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Allocations> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Allocates a SID for connection `id` (or returns the one it holds for `slot`).
    fn alloc_sid(&self, id: &str) -> Result<Ipv6Addr, Status> {
        let Some((prefix, len)) = self.locator else {
            return Err(Status::failed_precondition(
                "SRV6: no [srv6] locator is configured",
            ));
        };
        let mut st = self.lock();
        let host_bits = 128 - u32::from(len);
        let space = if host_bits >= 64 {
            u64::MAX
        } else {
            (1u64 << host_bits) - 1
        };
        for _ in 0..space.min(1 << 20) {
            st.next_sid = st.next_sid % space + 1;
            let sid = Ipv6Addr::from(u128::from(prefix) | u128::from(st.next_sid));
            if st.used.insert(Alloc::Sid(sid)) {
                st.by_conn
                    .entry(id.to_string())
                    .or_default()
                    .push(Alloc::Sid(sid));
                return Ok(sid);
            }
        }
        Err(Status::resource_exhausted(
            "SRV6: the locator has no free SID left",
        ))
    }

    /// The overhead of a tunnel of type `t`; a type other than SRV6 is held to VXLAN's.
    fn overhead(&self, t: MechanismType, payload_ip: bool) -> u32 {
        match (t, self.uplink.tunnel_ip) {
            (MechanismType::Srv6, _) if payload_ip => SRV6_OVERHEAD_IP,
            (MechanismType::Srv6, _) => SRV6_OVERHEAD_ETHERNET,
            (_, IpAddr::V4(_)) => VXLAN_OVERHEAD_V4,
            (_, IpAddr::V6(_)) => VXLAN_OVERHEAD_V6,
        }
    }

    /// The largest connection MTU a tunnel of type `t` allows over this uplink.
    pub fn max_mtu(&self, t: MechanismType, payload_ip: bool) -> u32 {
        self.uplink.mtu.saturating_sub(self.overhead(t, payload_ip))
    }

    /// Client side: the REMOTE mechanisms offered to a `tcp://` next hop for connection `id`,
    /// in priority order, each with this side's parameters (SRV6 allocates SIDs, released by
    /// [`Remote::settle`] or [`Remote::release`]).
    pub fn offers(&self, id: &str, payload_ip: bool) -> Result<Vec<Mechanism>, Status> {
        let mut types = vec![MechanismType::Vxlan];
        if self.locator.is_some() && self.uplink.srv6_host_ip.is_some() {
            types.push(MechanismType::Srv6);
        }
        // NSM_MECHANISM_PRIORITY: listed types first, in its order; the rest keep theirs.
        types.sort_by_key(|t| {
            self.priority
                .iter()
                .position(|p| p == t.as_str())
                .unwrap_or(usize::MAX)
        });
        let mut out = Vec::new();
        for t in types {
            let mut m = t.mechanism();
            let mtu = self.max_mtu(t, payload_ip);
            if t == MechanismType::Vxlan {
                m.vxlan_mut()
                    .set_mtu(mtu)
                    .set_ip(End::Src, self.uplink.tunnel_ip)
                    .set_port(End::Src, self.vxlan_port);
            } else {
                m.srv6_mut().set_mtu(mtu);
                if let Some(host) = self.uplink.srv6_host_ip {
                    let (sid, bsid) = (self.alloc_sid(id)?, self.alloc_sid(id)?);
                    m.srv6_mut()
                        .set_host_ip(End::Src, host)
                        .set_localsid(End::Src, sid)
                        .set_bsid(End::Src, bsid)
                        .set_hw_addr(End::Src, self.uplink.mac);
                }
            }
            out.push(m);
        }
        Ok(out)
    }

    /// Client side, once the next hop answered with `chosen`: releases what the offers of the
    /// other types allocated, and records the VNI the server picked (so that no other tunnel of
    /// ours takes the same (peer, VNI)).
    pub fn settle(&self, id: &str, chosen: &Mechanism) {
        let mut st = self.lock();
        let s = chosen.srv6();
        let keep: Vec<Ipv6Addr> = [s.localsid(End::Src), s.bsid(End::Src)]
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        let Allocations { by_conn, used, .. } = &mut *st;
        if let Some(list) = by_conn.get_mut(id) {
            list.retain(|a| match a {
                Alloc::Sid(s) if !keep.contains(s) => {
                    used.remove(a);
                    false
                }
                _ => true,
            });
        }
    }

    /// Server side: checks the client's half of `m` (of type VXLAN or SRV6) and fills in this
    /// side's half; `mtu` (the connection's, 0 for unset) is lowered to what the tunnel allows.
    /// A refresh (the parameters already name what this side allocated for `id`) keeps them.
    /// Returns whether anything was newly allocated.
    pub fn accept(
        &self,
        id: &str,
        m: &mut Mechanism,
        payload_ip: bool,
        mtu: &mut u32,
    ) -> Result<bool, Status> {
        let t = match m.mechanism_type() {
            Ok(t @ (MechanismType::Vxlan | MechanismType::Srv6)) => t,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "connection.mechanism.type: {:?} is not a remote mechanism vwire serves",
                    m.r#type
                )))
            }
        };
        let max = self.max_mtu(t, payload_ip);
        let asked = match t {
            MechanismType::Vxlan => m.vxlan().mtu(),
            _ => m.srv6().mtu(),
        };
        // A malformed MTU from the client counts as none.
        let asked = asked.ok().flatten().unwrap_or(0);
        let clamp = |v: u32| if v == 0 { max } else { v.min(max) };
        *mtu = clamp(*mtu);
        let mech_mtu = clamp(asked).min(*mtu);
        *mtu = mech_mtu;
        if t == MechanismType::Vxlan {
            self.accept_vxlan(id, m, mech_mtu)
        } else {
            self.accept_srv6(id, m, mech_mtu)
        }
    }

    fn accept_vxlan(&self, id: &str, m: &mut Mechanism, mtu: u32) -> Result<bool, Status> {
        let v = m.vxlan();
        let src = v.ip(End::Src).map_err(invalid_param)?;
        v.port(End::Src).map_err(invalid_param)?;
        let local = self.uplink.tunnel_ip;
        if src.is_ipv4() != local.is_ipv4() {
            return Err(Status::failed_precondition(format!(
                "connection.mechanism.parameters[src_ip]: {src} and this forwarder's tunnel IP {local} are not of the same family"
            )));
        }
        let mut fresh = false;
        let vni = match v.vni() {
            Ok(v)
                if self
                    .lock()
                    .by_conn
                    .get(id)
                    .is_some_and(|l| l.contains(&Alloc::Vni(src, v))) =>
            {
                v
            }
            _ => {
                fresh = true;
                self.pick_vni(id, m, src, local)?
            }
        };
        m.vxlan_mut()
            .set_ip(End::Dst, local)
            .set_port(End::Dst, self.vxlan_port)
            .set_vni(vni)
            .set_mtu(mtu);
        Ok(fresh)
    }

    fn accept_srv6(&self, id: &str, m: &mut Mechanism, mtu: u32) -> Result<bool, Status> {
        let mut fresh = false;
        let s = m.srv6();
        s.host_ip(End::Src).map_err(invalid_param)?;
        s.localsid(End::Src).map_err(invalid_param)?;
        let host = self.uplink.srv6_host_ip.ok_or_else(|| {
            Status::failed_precondition("SRV6: this forwarder has no IPv6 host address")
        })?;
        let mine = |v: Result<Ipv6Addr, ParamError>| -> Option<Ipv6Addr> {
            let v = v.ok()?;
            self.lock()
                .by_conn
                .get(id)
                .is_some_and(|l| l.contains(&Alloc::Sid(v)))
                .then_some(v)
        };
        let (sid, bsid) = match (mine(s.localsid(End::Dst)), mine(s.bsid(End::Dst))) {
            (Some(s), Some(b)) => (s, b),
            _ => {
                fresh = true;
                (self.alloc_sid(id)?, self.alloc_sid(id)?)
            }
        };
        m.srv6_mut()
            .set_host_ip(End::Dst, host)
            .set_localsid(End::Dst, sid)
            .set_bsid(End::Dst, bsid)
            .set_hw_addr(End::Dst, self.uplink.mac)
            .set_mtu(mtu);
        Ok(fresh)
    }

    /// The NSM rule: a random 24-bit VNI, even if the client's address ≤ the server's (byte
    /// compare, `orig_*` preferred), else odd; not in use with this peer.
    fn pick_vni(&self, id: &str, m: &Mechanism, src: IpAddr, dst: IpAddr) -> Result<u32, Status> {
        let orig = |end| m.vxlan().orig_ip(end).ok().flatten();
        let a = orig(End::Src).unwrap_or(src);
        let b = orig(End::Dst).unwrap_or(dst);
        let even = octets(a) <= octets(b);
        let mut st = self.lock();
        for _ in 0..1024 {
            let mut vni = random_u32() & 0x00ff_fffe;
            if !even {
                vni |= 1;
            }
            if vni == 0 {
                continue;
            }
            if st.used.insert(Alloc::Vni(src, vni)) {
                st.by_conn
                    .entry(id.to_string())
                    .or_default()
                    .push(Alloc::Vni(src, vni));
                return Ok(vni);
            }
        }
        Err(Status::resource_exhausted(
            "VXLAN: no free VNI for this peer",
        ))
    }

    /// Whether connection `id` holds any allocation.
    pub fn holds(&self, id: &str) -> bool {
        self.lock().by_conn.get(id).is_some_and(|l| !l.is_empty())
    }

    /// Releases everything connection `id` holds.
    pub fn release(&self, id: &str) {
        let mut st = self.lock();
        if let Some(list) = st.by_conn.remove(id) {
            for a in list {
                st.used.remove(&a);
            }
        }
    }

    /// The tunnel a complete mechanism describes. `server`: this side accepted it (its half is
    /// `dst_*`), else it offered it (its half is `src_*`).
    pub fn tunnel_of(&self, m: &Mechanism, server: bool) -> Result<TunnelPlan, Status> {
        let me = if server { End::Dst } else { End::Src };
        let peer = me.other();
        match m.mechanism_type() {
            Ok(MechanismType::Vxlan) => {
                let v = m.vxlan();
                let local = v.ip(me).map_err(invalid_param)?;
                let remote = v.ip(peer).map_err(invalid_param)?;
                if local.is_ipv4() != remote.is_ipv4() {
                    return Err(Status::failed_precondition(format!(
                        "VXLAN: tunnel IPs {local} and {remote} are not of the same family"
                    )));
                }
                let port = v
                    .port(peer)
                    .map_err(invalid_param)?
                    .unwrap_or(vwire_mechanisms::vxlan::VXLAN_PORT);
                let vni = v.vni().map_err(invalid_param)?;
                Ok(TunnelPlan::Vxlan {
                    local,
                    remote,
                    port,
                    vni,
                })
            }
            Ok(MechanismType::Srv6) => {
                let s = m.srv6();
                Ok(TunnelPlan::Srv6 {
                    local_host: s.host_ip(me).map_err(invalid_param)?,
                    local_sid: s.localsid(me).map_err(invalid_param)?,
                    remote_host: s.host_ip(peer).map_err(invalid_param)?,
                    remote_sid: s.localsid(peer).map_err(invalid_param)?,
                })
            }
            _ => Err(Status::invalid_argument(format!(
                "connection.mechanism.type: {:?} is not a remote mechanism",
                m.r#type
            ))),
        }
    }

    /// Records, on the client side, the (peer, VNI) of a tunnel the server picked.
    pub fn record_vni(&self, id: &str, plan: &TunnelPlan) {
        if let TunnelPlan::Vxlan { remote, vni, .. } = *plan {
            let mut st = self.lock();
            if st.used.insert(Alloc::Vni(remote, vni)) {
                st.by_conn
                    .entry(id.to_string())
                    .or_default()
                    .push(Alloc::Vni(remote, vni));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(tunnel_ip: &str, mtu: u32) -> Remote {
        let cfg = RemoteConfig {
            tunnel_ip: Some(tunnel_ip.parse().unwrap()),
            off: false,
            vxlan_port: 4789,
            priority: vec!["SRV6".into()],
            srv6_locator: Some(("fc00:a::".parse().unwrap(), 48)),
            srv6_host_ip: Some("fd97::1".parse().unwrap()),
        };
        let uplink = Uplink {
            ifname: "up0".into(),
            ifindex: 2,
            tunnel_ip: cfg.tunnel_ip.unwrap(),
            srv6_host_ip: cfg.srv6_host_ip,
            mac: [2, 0, 0, 0, 0, 1],
            mtu,
        };
        Remote::new(uplink, &cfg)
    }

    #[test]
    fn offers_follow_the_priority_and_carry_the_client_half() {
        let r = remote("10.97.0.1", 1500);
        let offers = r.offers("c1", false).unwrap();
        let types: Vec<&str> = offers.iter().map(|m| m.r#type.as_str()).collect();
        assert_eq!(types, ["SRV6", "VXLAN"]);
        assert_eq!(param(&offers[1], "src_ip"), "10.97.0.1");
        assert_eq!(param(&offers[1], "MTU"), "1446");
        assert_eq!(param(&offers[0], "MTU"), "1418");
        assert!(param(&offers[0], "src_localsid").starts_with("fc00:a::"));
        // The peer picked VXLAN: the SIDs go back.
        r.settle("c1", &offers[1]);
        assert!(r.lock().used.is_empty());
    }

    #[test]
    fn the_server_picks_an_even_or_odd_vni_and_the_client_builds_the_mirror_tunnel() {
        let a = remote("10.97.0.1", 1500);
        let b = remote("10.97.0.2", 1500);
        let mut m = a.offers("c1", false).unwrap().remove(1);
        let mut mtu = 0;
        b.accept("c1", &mut m, false, &mut mtu).unwrap();
        assert_eq!(mtu, 1446);
        let vni: u32 = param(&m, "vni").parse().unwrap();
        assert_eq!(vni % 2, 0, "10.97.0.1 <= 10.97.0.2: even");
        let at_b = b.tunnel_of(&m, true).unwrap();
        let at_a = a.tunnel_of(&m, false).unwrap();
        assert_eq!(
            at_b,
            TunnelPlan::Vxlan {
                local: "10.97.0.2".parse().unwrap(),
                remote: "10.97.0.1".parse().unwrap(),
                port: 4789,
                vni
            }
        );
        assert_eq!(
            at_a,
            TunnelPlan::Vxlan {
                local: "10.97.0.1".parse().unwrap(),
                remote: "10.97.0.2".parse().unwrap(),
                port: 4789,
                vni
            }
        );
        // A refresh keeps the VNI.
        b.accept("c1", &mut m, false, &mut mtu).unwrap();
        assert_eq!(param(&m, "vni"), vni.to_string());
        // The other direction gets an odd one.
        let mut back = b.offers("c2", false).unwrap().remove(1);
        a.accept("c2", &mut back, false, &mut mtu).unwrap();
        assert_eq!(param(&back, "vni").parse::<u32>().unwrap() % 2, 1);
        b.release("c1");
        assert!(b
            .lock()
            .used
            .iter()
            .all(|x| !matches!(x, Alloc::Vni(_, v) if *v == vni)));
    }

    #[test]
    fn srv6_sides_point_at_each_others_sid() {
        let a = remote("10.97.0.1", 1500);
        let b = remote("10.97.0.2", 1500);
        let mut m = a.offers("c1", true).unwrap().remove(0);
        let mut mtu = 9000;
        b.accept("c1", &mut m, true, &mut mtu).unwrap();
        assert_eq!(mtu, 1436);
        let (
            TunnelPlan::Srv6 {
                local_sid: a_sid,
                remote_sid: a_to,
                ..
            },
            TunnelPlan::Srv6 {
                local_sid: b_sid,
                remote_sid: b_to,
                ..
            },
        ) = (
            a.tunnel_of(&m, false).unwrap(),
            b.tunnel_of(&m, true).unwrap(),
        )
        else {
            panic!("SRV6 expected")
        };
        assert_eq!(a_to, b_sid);
        assert_eq!(b_to, a_sid);
    }

    #[test]
    fn bad_parameters_name_the_key() {
        let b = remote("10.97.0.2", 1500);
        let mut m = Mechanism {
            cls: "REMOTE".into(),
            r#type: "VXLAN".into(),
            ..Default::default()
        };
        m.parameters.insert("src_ip".into(), "nope".into());
        let e = b.accept("c", &mut m, false, &mut 0).unwrap_err();
        assert!(e.message().contains("parameters[src_ip]"), "{e}");
        m.parameters.insert("src_ip".into(), "fd97::1".into());
        let e = b.accept("c", &mut m, false, &mut 0).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
        let mut s = Mechanism {
            r#type: "SRV6".into(),
            ..Default::default()
        };
        let e = b.accept("c", &mut s, false, &mut 0).unwrap_err();
        assert!(e.message().contains("parameters[src_host_ip]"), "{e}");
    }
}
