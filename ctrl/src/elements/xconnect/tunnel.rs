//! The tunnel of a REMOTE side (VXLAN or SRV6) through the uplink: its parameters from the
//! mechanism (`Remote::tunnel_of`), the next hop toward the peer forwarder and its MAC from
//! the kernel, and the encapsulation, demultiplexing key and framing on each way.
//!
//! Contract: the peer must be routed through the uplink, and its next hop must resolve within
//! `NEIGHBOUR_TIMEOUT` (Unavailable otherwise); the next hop is then followed, so that a MAC
//! change reaches the tunnel. Joining two tunnels is Unimplemented. On the client side of a
//! VXLAN tunnel the (peer, VNI) the server picked is recorded for the connection.

use std::net::IpAddr;

use tonic::Status;
use vwire_mechanisms::kernel::{neigh, IpNet, NetlinkIn};
use vwire_mechanisms::srv6::{Behavior, EncapParams};
use vwire_mechanisms::tunnel::{EgressFraming, Framing};
use vwire_mechanisms::vxlan::{TunnelParams, Underlay, Vni};

use super::plan::{virtual_mac, Building, Plan};
use super::Xconnect;
use crate::remote::TunnelPlan;

/// How long the kernel may take to resolve a tunnel's next hop.
const NEIGHBOUR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl Xconnect {
    /// The tunnel of side `t` (the other side is the local port): its parameters, the next
    /// hop's MAC from the kernel, and the framing on each way.
    pub(super) async fn tunnel_spec(
        &self,
        id: &str,
        tag: &str,
        ip_payload: bool,
        host: &NetlinkIn,
        sides: &[Building],
        t: usize,
    ) -> Result<crate::dataplane::TunnelSpec, Status> {
        let remote = self.remote.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "remote mechanisms need an uplink (NSM_TUNNEL_IP or a default route)",
            )
        })?;
        let (
            Some(Building {
                plan: Plan::Tunnel { mechanism, server },
                ..
            }),
            Some(local),
        ) = (sides.get(t), sides.get(1 - t))
        else {
            return Err(Status::internal("a tunnel side expected"));
        };
        if matches!(local.plan, Plan::Tunnel { .. }) {
            return Err(Status::unimplemented(
                "joining two remote mechanisms (a tunnel to a tunnel) is not implemented",
            ));
        }
        let plan = remote.tunnel_of(mechanism, *server)?;
        if !*server {
            remote.record_vni(id, &plan);
        }
        let uplink = remote.uplink();
        let peer = plan.remote_underlay();
        let hop = neigh::route_to(host, peer).await.map_err(|e| {
            Status::failed_precondition(format!("the route to the peer forwarder {peer}: {e}"))
        })?;
        if hop.ifindex != uplink.ifindex {
            return Err(Status::failed_precondition(format!(
                "the peer forwarder {peer} is routed through {}, not through the uplink {}",
                hop.ifname, uplink.ifname
            )));
        }
        remote.follow(hop.ifindex, hop.neighbour());
        let mac = neigh::resolve(host, &hop, NEIGHBOUR_TIMEOUT)
            .await
            .map_err(|e| Status::unavailable(format!("the next hop toward {peer}: {e}")))?;
        let all_v6 = sides
            .iter()
            .flat_map(|b| &b.ctx.addrs)
            .all(|a| matches!(a, IpNet::V6(_)));
        let (encap, decap) = match plan {
            TunnelPlan::Vxlan {
                local,
                remote: peer_ip,
                port,
                vni,
            } => {
                let underlay = match (local, peer_ip) {
                    (IpAddr::V4(local), IpAddr::V4(remote)) => Underlay::V4 { local, remote },
                    (IpAddr::V6(local), IpAddr::V6(remote)) => Underlay::V6 { local, remote },
                    _ => return Err(Status::failed_precondition("VXLAN: mixed address families")),
                };
                let vni = Vni::new(vni).ok_or_else(|| {
                    Status::invalid_argument(format!("VXLAN: {vni} is not a VNI"))
                })?;
                (
                    crate::dataplane::EncapSpec::Vxlan(TunnelParams {
                        underlay,
                        local_mac: uplink.mac,
                        next_hop_mac: mac,
                        dst_port: port,
                        vni,
                        ttl: 64,
                        udp_checksum_v4: false,
                    }),
                    crate::dataplane::DecapKey::Vxlan {
                        remote: peer_ip,
                        vni,
                    },
                )
            }
            TunnelPlan::Srv6 {
                local_host,
                local_sid,
                remote_sid,
                ..
            } => (
                crate::dataplane::EncapSpec::Srv6(EncapParams {
                    src: local_host,
                    sid: remote_sid,
                    local_mac: uplink.mac,
                    next_hop_mac: mac,
                    hop_limit: 64,
                }),
                crate::dataplane::DecapKey::Sid {
                    sid: local_sid,
                    behavior: match (ip_payload, all_v6) {
                        (false, _) => Behavior::EndDx2,
                        (true, false) => Behavior::EndDx4,
                        (true, true) => Behavior::EndDx6,
                    },
                },
            ),
        };
        let (framing, egress) = match (&local.plan, local.inner_mac, ip_payload) {
            (_, _, false) => (Framing::Ethernet, EgressFraming::Ethernet),
            (Plan::Kernel { .. }, Some(dst), true) => (
                Framing::EthernetIp,
                EgressFraming::EthernetIp {
                    dst,
                    src: virtual_mac(tag),
                },
            ),
            _ => (Framing::Ip, EgressFraming::Ip),
        };
        Ok(crate::dataplane::TunnelSpec {
            encap,
            framing,
            egress,
            decap,
            neighbour: hop.neighbour(),
            side: t,
        })
    }
}
