//! The uplink demultiplexer: one [`Decap`] per uplink port, serving every VXLAN tunnel and SRv6
//! local SID over it.
//!
//! Contract: built on the control thread with [`UplinkDecap::add_vxlan`] and
//! [`UplinkDecap::add_sid`], then shared read-only with the workers through the forwarding table
//! (a change is a new object in a new table). Per packet, on the worker:
//! 1. classify and parse with the cores: [`vxlan::decap()`] if any VXLAN tunnel is mapped; an
//!    IPv6 packet that is not UDP (`NotUdp`, or `Ipv6ExtHeader` for a routing header) goes on to
//!    [`srv6::decap()`] if any SID is mapped. Parse errors are dropped with the core's
//!    [`crate::vxlan::VxlanError::drop_reason`] / [`crate::srv6::Srv6Error::drop_reason`].
//! 2. look the tunnel up: `(outer source, VNI)` or the outer destination SID, in a `HashMap`
//!    with a `Copy` key (no allocation), behind a one-entry cache kept for the length of a burst
//!    (the packets of a burst mostly belong to one tunnel). A miss is `tunnel_unknown`. For a
//!    SID, [`Behavior::check`] then enforces the payload type (`tunnel_malformed` otherwise).
//! 3. strip the outer headers (move the packet's start) and apply the egress framing in place:
//!    see [`EgressFraming`]. The buffer always has the old outer headers (≥ 50 bytes) in front
//!    of the payload, so an Ethernet header can be written there.
//!
//! No allocation, lock, log or panic on any packet content.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use vwire_dataplane::counters::{DropReason, DropTally};
use vwire_dataplane::table::Rewrite;
use vwire_dataplane::tunnel::{decap_each, Decap, EgressIds};
use vwire_dataplane::{BufIdx, BufferPool, Burst, PortId};

use super::{EgressFraming, TunnelError};
use crate::srv6::{self, Behavior, Payload, Srv6Error};
use crate::vxlan::{self, strip_inner_ethernet, Vni, VxlanError};

/// Where a VXLAN tunnel's packets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VxlanTarget {
    port: PortId,
    framing: EgressFraming,
}

/// Where a local SID's packets go, and what they must carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SidTarget {
    port: PortId,
    behavior: Behavior,
    framing: EgressFraming,
}

/// The lookup key of a VXLAN tunnel: the remote address as an integer (an IPv4 address in the
/// low 32 bits) and the VNI, with bit 31 set for an IPv6 remote.
///
/// Integers rather than `(IpAddr, Vni)`: that tuple is byte-aligned and was built on the stack
/// with narrow stores and read back wide, a store-forwarding stall per packet (measured on the
/// testbed VM: `decap_one` was 40% of the `engine/vxlan_loop` profile, most of it on that load).
type VxlanKey = (u128, u32);

fn vxlan_key(remote: IpAddr, vni: Vni) -> VxlanKey {
    match remote {
        IpAddr::V4(a) => (u128::from(u32::from(a)), vni.get()),
        IpAddr::V6(a) => (u128::from(a), vni.get() | 1 << 31),
    }
}

/// The last tunnel found in this burst, per kind. Targets are borrowed from the maps rather than
/// copied, for the same reason as [`VxlanKey`].
#[derive(Default)]
struct Cache<'a> {
    vxlan: Option<(VxlanKey, &'a VxlanTarget)>,
    sid: Option<(u128, &'a SidTarget)>,
}

/// `map[key]` through the one-entry cache `last` (see [`Cache`]): a hit skips the map, a key
/// found in it replaces the entry.
#[inline]
fn cached<'a, K: Copy + Eq + std::hash::Hash, T>(
    map: &'a HashMap<K, T>,
    last: &mut Option<(K, &'a T)>,
    key: K,
) -> Option<&'a T> {
    if let Some((k, t)) = *last {
        if k == key {
            return Some(t);
        }
    }
    let t = map.get(&key)?;
    *last = Some((key, t));
    Some(t)
}

/// The decapsulation of one uplink port. See the module docs.
#[derive(Clone, Debug)]
pub struct UplinkDecap {
    vxlan_port: u16,
    vxlan: HashMap<VxlanKey, VxlanTarget>,
    /// Keyed by the SID as an integer.
    sids: HashMap<u128, SidTarget>,
}

impl UplinkDecap {
    /// An uplink that serves no tunnel yet and takes VXLAN on UDP port `vxlan_port`
    /// ([`vxlan::VXLAN_PORT`] by default).
    #[must_use]
    pub fn new(vxlan_port: u16) -> Self {
        Self {
            vxlan_port,
            vxlan: HashMap::new(),
            sids: HashMap::new(),
        }
    }

    /// Sends the packets of the VXLAN tunnel from `remote` (the outer source: the peer's tunnel
    /// IP) with `vni` to port `egress`, framed as `framing`.
    ///
    /// # Errors
    /// [`TunnelError::DuplicateVxlan`] if the pair is already mapped.
    pub fn add_vxlan(
        &mut self,
        remote: IpAddr,
        vni: Vni,
        egress: PortId,
        framing: EgressFraming,
    ) -> Result<(), TunnelError> {
        match self.vxlan.entry(vxlan_key(remote, vni)) {
            std::collections::hash_map::Entry::Occupied(_) => {
                Err(TunnelError::DuplicateVxlan { remote, vni })
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(VxlanTarget {
                    port: egress,
                    framing,
                });
                Ok(())
            }
        }
    }

    /// Sends the packets addressed to the local SID `sid` to port `egress`, framed as
    /// `framing`, after checking their payload against `behavior`.
    ///
    /// # Errors
    /// [`TunnelError::DuplicateSid`] if the SID is already mapped,
    /// [`TunnelError::IpSidToEthernet`] for End.DX4/End.DX6 with [`EgressFraming::Ethernet`].
    pub fn add_sid(
        &mut self,
        sid: Ipv6Addr,
        behavior: Behavior,
        egress: PortId,
        framing: EgressFraming,
    ) -> Result<(), TunnelError> {
        if behavior != Behavior::EndDx2 && framing == EgressFraming::Ethernet {
            return Err(TunnelError::IpSidToEthernet(sid));
        }
        match self.sids.entry(u128::from(sid)) {
            std::collections::hash_map::Entry::Occupied(_) => Err(TunnelError::DuplicateSid(sid)),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(SidTarget {
                    port: egress,
                    behavior,
                    framing,
                });
                Ok(())
            }
        }
    }

    /// The UDP port VXLAN is taken on.
    #[must_use]
    pub fn vxlan_port(&self) -> u16 {
        self.vxlan_port
    }

    /// Number of VXLAN tunnels plus local SIDs served.
    #[must_use]
    pub fn len(&self) -> usize {
        self.vxlan.len() + self.sids.len()
    }

    /// True if it serves nothing (every packet is `tunnel_unknown`).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn vxlan_target<'a>(&'a self, key: VxlanKey, cache: &mut Cache<'a>) -> Option<&'a VxlanTarget> {
        cached(&self.vxlan, &mut cache.vxlan, key)
    }

    #[inline]
    fn sid_target<'a>(&'a self, sid: u128, cache: &mut Cache<'a>) -> Option<&'a SidTarget> {
        cached(&self.sids, &mut cache.sid, sid)
    }

    #[inline]
    fn decap_one<'a>(
        &'a self,
        pool: &mut BufferPool,
        b: BufIdx,
        cache: &mut Cache<'a>,
    ) -> Result<PortId, DropReason> {
        let m = pool.meta(b);
        let (offset, len) = (usize::from(m.offset), usize::from(m.len));
        let frame = pool.frame(b);
        if !self.vxlan.is_empty() {
            match vxlan::decap(frame, offset, len, self.vxlan_port) {
                Ok(d) => {
                    let t = self
                        .vxlan_target(vxlan_key(d.remote, d.vni), cache)
                        .ok_or(DropReason::TunnelUnknown)?;
                    deliver_ethernet(pool, b, d.offset, d.len, &t.framing)?;
                    return Ok(t.port);
                }
                // IPv6 carrying a routing header or a payload directly: maybe SRv6.
                Err(VxlanError::NotUdp | VxlanError::Ipv6ExtHeader) if !self.sids.is_empty() => {}
                Err(e) => return Err(e.drop_reason()),
            }
        }
        if self.sids.is_empty() {
            return Err(DropReason::TunnelUnknown);
        }
        let d = srv6::decap(frame, offset, len).map_err(Srv6Error::drop_reason)?;
        let t = self
            .sid_target(u128::from(d.sid), cache)
            .ok_or(DropReason::TunnelUnknown)?;
        t.behavior.check(&d).map_err(Srv6Error::drop_reason)?;
        match d.payload {
            Payload::Ethernet => deliver_ethernet(pool, b, d.offset, d.len, &t.framing)?,
            Payload::Ipv4 | Payload::Ipv6 => deliver_ip(pool, b, d.offset, d.len, &t.framing)?,
        }
        Ok(t.port)
    }
}

/// Hands on the inner Ethernet frame at `(offset, len)` of buffer `b`, framed as `framing`.
#[inline]
fn deliver_ethernet(
    pool: &mut BufferPool,
    b: BufIdx,
    offset: usize,
    len: usize,
    framing: &EgressFraming,
) -> Result<(), DropReason> {
    match *framing {
        EgressFraming::Ethernet => pool.set_meta(b, offset, len),
        EgressFraming::EthernetIp { dst, src } => {
            // Checks that the frame carries IP; its header is then reused with the right MACs.
            strip_inner_ethernet(pool.frame(b), offset, len).map_err(VxlanError::drop_reason)?;
            let macs = pool
                .frame_mut(b)
                .get_mut(offset..)
                .and_then(<[u8]>::first_chunk_mut::<12>)
                .ok_or(DropReason::NoHeadroom)?; // unreachable: strip checked 14 bytes
            macs[..6].copy_from_slice(&dst);
            macs[6..].copy_from_slice(&src);
            pool.set_meta(b, offset, len);
        }
        EgressFraming::Ip => {
            let (ip_at, ip_len) = strip_inner_ethernet(pool.frame(b), offset, len)
                .map_err(VxlanError::drop_reason)?;
            pool.set_meta(b, ip_at, ip_len);
        }
    }
    Ok(())
}

/// Hands on the bare IP packet at `(offset, len)` of buffer `b`, framed as `framing`.
#[inline]
fn deliver_ip(
    pool: &mut BufferPool,
    b: BufIdx,
    offset: usize,
    len: usize,
    framing: &EgressFraming,
) -> Result<(), DropReason> {
    pool.set_meta(b, offset, len);
    match *framing {
        EgressFraming::Ip => Ok(()),
        // The Ethernet header goes into the old outer headers' space; AddEth takes the
        // EtherType from the version nibble and refuses anything but 4 and 6.
        EgressFraming::EthernetIp { dst, src } => {
            if (Rewrite::AddEth { dst, src }).apply(pool, b) {
                Ok(())
            } else {
                Err(DropReason::NotIp)
            }
        }
        // Refused by add_sid: no MACs to put in front.
        EgressFraming::Ethernet => Err(DropReason::NotIp),
    }
}

impl Decap for UplinkDecap {
    #[inline]
    fn decap(&self, pool: &mut BufferPool, b: BufIdx) -> Result<PortId, DropReason> {
        self.decap_one(pool, b, &mut Cache::default())
    }

    #[inline]
    fn decap_burst(
        &self,
        pool: &mut BufferPool,
        burst: &mut Burst,
        egress: &mut EgressIds,
        drops: &mut DropTally,
    ) {
        let mut cache = Cache::default();
        decap_each(pool, burst, egress, drops, |pool, b| {
            self.decap_one(pool, b, &mut cache)
        });
    }
}
