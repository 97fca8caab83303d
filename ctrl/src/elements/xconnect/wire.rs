//! Building a connection: the veth pairs of the kernel sides, the connection contexts inside
//! the namespaces (with static neighbours for an IP payload), then the dataplane ports and
//! the cross-connect (or, with a REMOTE side, the tunnel of `tunnel`).
//!
//! Contract: `Xconnect::wire` either returns what it built, or fails having deleted the
//! veths it created (the dataplane keeps nothing of a failed wiring). It does not touch the
//! endpoint: closing it after a failure is the element's job.

use tonic::Status;
use vwire_dataplane::table::Rewrite;
use vwire_mechanisms::kernel::{self, IpContextSpec, IpNet, Neighbor, NetlinkIn, Netns, VethSpec};
use vwire_mechanisms::memif::driver::MemifConfig;
use vwire_mechanisms::memif::msg::Mode;
use vwire_proto::connection::Connection;

use super::plan::{describe_tunnel, kerr, nets, plan, routes, virtual_mac, Building, Plan, Side};
use super::teardown::undo_veths;
use super::{short_tag, Built, Wired, Xconnect};
use crate::dataplane::{DataplaneError, PortSpec};
use crate::elements::connect::Downstream;

impl Xconnect {
    pub(super) async fn wire(&self, id: &str, up: &Connection) -> Result<Wired, Status> {
        let down = self
            .metadata
            .get::<Downstream>(id)
            .ok_or_else(|| Status::internal("no endpoint connection recorded"))?
            .0;
        let tag = short_tag(id);
        let ip_payload = up.is_ip_payload();
        let ip = up
            .context
            .as_ref()
            .and_then(|c| c.ip_context.clone())
            .unwrap_or_default();
        let mtu = up.context.as_ref().map(|c| c.mtu).filter(|&m| m > 0);
        let src_addrs = nets(
            "connection.context.ip_context.src_ip_addrs",
            &ip.src_ip_addrs,
        )?;
        let dst_addrs = nets(
            "connection.context.ip_context.dst_ip_addrs",
            &ip.dst_ip_addrs,
        )?;
        let mut sides = Vec::with_capacity(2);
        for (side, m, addrs, routes_of) in [
            (
                Side::Client,
                up.mechanism.as_ref(),
                &src_addrs,
                ("connection.context.ip_context.src_routes", &ip.src_routes),
            ),
            (
                Side::Endpoint,
                down.mechanism.as_ref(),
                &dst_addrs,
                ("connection.context.ip_context.dst_routes", &ip.dst_routes),
            ),
        ] {
            sides.push(Building {
                side,
                plan: plan(m, side, &tag)?,
                ctx: IpContextSpec {
                    addrs: addrs.clone(),
                    routes: routes(routes_of.0, routes_of.1)?,
                    neighbors: Vec::new(),
                    mtu,
                },
                nl: None,
                inner_mac: None,
            });
        }
        let host = NetlinkIn::new(&Netns::current().map_err(kerr("this namespace"))?)
            .await
            .map_err(kerr("netlink"))?;
        for b in &mut sides {
            if let Plan::Kernel { url, .. } = &b.plan {
                let (field, label) = match b.side {
                    Side::Client => (
                        "connection.mechanism.parameters[inodeURL]",
                        "netlink in the client's namespace",
                    ),
                    Side::Endpoint => (
                        "the endpoint's inodeURL",
                        "netlink in the endpoint's namespace",
                    ),
                };
                let ns = Netns::open(url).map_err(kerr(field))?;
                b.nl = Some(NetlinkIn::new(&ns).await.map_err(kerr(label))?);
            }
        }
        let built: Vec<Built> = sides
            .iter()
            .map(|b| match &b.plan {
                Plan::Kernel { name, .. } => Built::Kernel {
                    host: format!("{}{tag}", b.side.prefix()),
                    iface: name.clone(),
                },
                Plan::Memif { socket, .. } => Built::Memif {
                    socket: socket.clone(),
                },
                Plan::Tunnel { mechanism, .. } => Built::Tunnel {
                    what: describe_tunnel(mechanism),
                },
            })
            .collect();
        self.own(built.iter().filter_map(Built::host_veth)).await;
        let result = self
            .build(id, &tag, ip_payload, &host, &mut sides, &built)
            .await;
        if let Err(e) = result {
            undo_veths(&host, &built).await;
            self.disown(built.iter().filter_map(Built::host_veth)).await;
            return Err(e);
        }
        let [client, endpoint]: [Built; 2] = built
            .try_into()
            .map_err(|_| Status::internal("two sides expected"))?;
        Ok(Wired {
            sides: [client, endpoint],
            inkernel: None,
        })
    }

    /// Creates the veths, applies the contexts, and cross-connects through the workers (a
    /// KERNEL↔KERNEL connection moves into the kernel afterwards: `inkernel`). The caller cleans
    /// up the veths on failure.
    async fn build(
        &self,
        id: &str,
        tag: &str,
        ip_payload: bool,
        host: &NetlinkIn,
        sides: &mut [Building],
        built: &[Built],
    ) -> Result<(), Status> {
        let t0 = std::time::Instant::now();
        let mtu = sides.first().and_then(|b| b.ctx.mtu);
        for (b, out) in sides.iter_mut().zip(built) {
            let (Some(nl), Plan::Kernel { name, .. }, Some(host_name)) =
                (&b.nl, &b.plan, out.host_veth())
            else {
                continue;
            };
            let spec = VethSpec {
                host_name: host_name.to_string(),
                peer_name: name.clone(),
                mtu,
                peer_mac: None,
                host_group: Some(self.group),
            };
            let pair = kernel::create_veth_into(host, nl, &spec)
                .await
                .map_err(kerr("creating a veth"))?;
            b.inner_mac = Some(pair.peer_mac);
            // No IPv6 chatter on the host end: it belongs to the dataplane.
            let _ = std::fs::write(
                format!("/proc/sys/net/ipv6/conf/{host_name}/disable_ipv6"),
                "1",
            );
        }
        tracing::debug!(%id, ms = t0.elapsed().as_millis(), "veths created");
        // IP payload: static neighbours for the other side's addresses, and the framing change
        // between an Ethernet side and an IP-only side.
        let mut rewrites = [Rewrite::None; 2];
        if ip_payload {
            let vmac = virtual_mac(tag);
            let macs: Vec<Option<[u8; 6]>> = sides.iter().map(|b| b.inner_mac).collect();
            let addrs: Vec<Vec<IpNet>> = sides.iter().map(|b| b.ctx.addrs.clone()).collect();
            for (i, b) in sides.iter_mut().enumerate() {
                let Some(own_mac) = b.inner_mac else { continue };
                let other = 1 - i;
                let peer_mac = macs.get(other).copied().flatten().unwrap_or(vmac);
                if macs.get(other).copied().flatten().is_none() {
                    rewrites[i] = Rewrite::StripEth;
                    rewrites[other] = Rewrite::AddEth {
                        dst: own_mac,
                        src: vmac,
                    };
                }
                b.ctx.neighbors = addrs
                    .get(other)
                    .into_iter()
                    .flatten()
                    .map(|n| Neighbor {
                        ip: n.addr(),
                        mac: peer_mac,
                    })
                    .collect();
            }
        }
        for (b, out) in sides.iter().zip(built) {
            if let (Some(nl), Built::Kernel { iface, .. }) = (&b.nl, out) {
                kernel::apply_context(nl, iface, &b.ctx)
                    .await
                    .map_err(kerr("applying the connection context"))?;
            }
        }
        tracing::debug!(%id, ms = t0.elapsed().as_millis(), "interfaces and contexts ready");
        let mode = if ip_payload { Mode::Ip } else { Mode::Ethernet };
        let specs: Vec<Option<PortSpec>> = sides
            .iter()
            .zip(built)
            .map(|(b, out)| match (&b.plan, out) {
                (
                    Plan::Memif {
                        socket,
                        role,
                        netns,
                    },
                    _,
                ) => Some(PortSpec::Memif(MemifConfig {
                    name: format!("{}{tag}", b.side.prefix()),
                    socket: socket.clone(),
                    role: *role,
                    id: 0,
                    mode,
                    queues: 1,
                    log2_ring_size: 10,
                    buffer_size: 2048,
                    secret: String::new(),
                    netns: netns.clone(),
                })),
                (Plan::Kernel { .. }, out) => Some(PortSpec::Afxdp {
                    ifname: out.host_veth().unwrap_or_default().to_string(),
                }),
                (Plan::Tunnel { .. }, _) => None,
            })
            .collect();
        let wiring = match sides
            .iter()
            .position(|b| matches!(b.plan, Plan::Tunnel { .. }))
        {
            None => crate::dataplane::Wiring::Xconnect(rewrites),
            Some(t) => {
                let spec = self
                    .tunnel_spec(id, tag, ip_payload, host, sides, t)
                    .await?;
                crate::dataplane::Wiring::Tunnel(Box::new(spec))
            }
        };
        let specs: Vec<PortSpec> = specs.into_iter().flatten().collect();
        // Opening AF_XDP sockets and memif sockets blocks (registration, binding, netns
        // switches): off the runtime thread, but inside its context (memif tasks).
        let (dp, key) = (self.dataplane.clone(), id.to_string());
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&PortSpec> = specs.iter().collect();
            crate::dataplane::wire(&dp, &key, &refs, wiring).map_err(|e| match e {
                DataplaneError::Stopped => Status::unavailable("the dataplane is stopping"),
                DataplaneError::NoUplink => Status::failed_precondition(e.to_string()),
                e => Status::failed_precondition(format!("wiring the connection: {e}")),
            })
        })
        .await
        .map_err(|e| Status::internal(format!("wiring task: {e}")))?
    }
}
