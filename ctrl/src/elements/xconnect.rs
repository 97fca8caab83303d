//! xconnect: builds the dataplane of a connection once the endpoint has answered.
//!
//! KERNEL on both sides (this version): a veth pair into the NSC's namespace (named by the
//! mechanism's `inodeURL`, interface `name`), another into the NSE's namespace (from the
//! endpoint's answer), the connection context applied in each (NSC: `src_ip_addrs` and
//! `src_routes`; NSE: `dst_ip_addrs` and `dst_routes`; MTU), and an L2 cross-connect between the
//! two host ends over AF_XDP. An IP payload also crosses it as Ethernet: ARP between the two
//! kernel interfaces resolves across the cross-connect.
//!
//! A refresh finds the connection already wired and changes nothing (no link flap). A failure
//! undoes what this element built and closes the endpoint side. Close removes the cross-connect,
//! then the veth pairs. Place it just before connect.

use std::sync::Arc;

use tonic::Status;
use vwire_mechanisms::kernel::{self, IpContextSpec, IpNet, NetlinkIn, Netns, RouteSpec, VethSpec};
use vwire_proto::connection::{Connection, Mechanism};
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::{connection_of, BoxFut, Element, Next};
use crate::dataplane::SharedDataplane;
use crate::elements::connect::Downstream;
use crate::elements::metadata::Metadata;

/// What xconnect built for one connection.
#[derive(Clone, Debug)]
struct Wired {
    nsc_host: String,
    nse_host: String,
    /// The interface names inside the NSC's and the NSE's namespaces.
    nsc_if: String,
    nse_if: String,
}

/// The xconnect element.
pub struct Xconnect {
    metadata: Arc<Metadata>,
    dataplane: SharedDataplane,
}

impl Xconnect {
    /// An xconnect element programming `dataplane`.
    pub fn new(metadata: Arc<Metadata>, dataplane: SharedDataplane) -> Self {
        Self {
            metadata,
            dataplane,
        }
    }
}

/// Eight hex digits derived from a connection id (FNV-1a), for interface names: deterministic,
/// always valid in a name, and distinct for distinct ids whatever characters the ids use.
fn short_tag(id: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

fn kernel_params<'m>(m: Option<&'m Mechanism>, side: &str) -> Result<(&'m str, &'m str), Status> {
    let m = m.ok_or_else(|| Status::internal(format!("{side}: no mechanism")))?;
    if m.r#type != "KERNEL" {
        return Err(Status::unimplemented(format!(
            "{side}: cross-connecting a {} mechanism is not implemented yet (KERNEL is)",
            m.r#type
        )));
    }
    let p = |k: &str| m.parameters.get(k).map(String::as_str).unwrap_or("");
    Ok((p("inodeURL"), p("name")))
}

fn nets(field: &str, v: &[String]) -> Result<Vec<IpNet>, Status> {
    v.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    Status::invalid_argument(format!(
                        "{field}[{i}]: {s:?} is not an IP address or CIDR"
                    ))
                })
        })
        .collect()
}

fn routes(
    field: &str,
    v: &[vwire_proto::connectioncontext::Route],
) -> Result<Vec<RouteSpec>, Status> {
    v.iter()
        .enumerate()
        .map(|(i, r)| {
            let dst = nets(
                &format!("{field}[{i}].prefix"),
                std::slice::from_ref(&r.prefix),
            )?
            .remove(0);
            let gateway = match r.next_hop.as_str() {
                "" => None,
                g => Some(g.parse().map_err(|_| {
                    Status::invalid_argument(format!(
                        "{field}[{i}].nextHop: {g:?} is not an IP address"
                    ))
                })?),
            };
            Ok(RouteSpec { dst, gateway })
        })
        .collect()
}

fn kerr(what: &str) -> impl Fn(kernel::KernelError) -> Status + '_ {
    move |e| match e {
        kernel::KernelError::OpenNetns { .. } | kernel::KernelError::NotNetns { .. } => {
            Status::not_found(format!("{what}: {e}"))
        }
        kernel::KernelError::InvalidName { .. } | kernel::KernelError::InvalidNetnsUrl { .. } => {
            Status::invalid_argument(format!("{what}: {e}"))
        }
        _ => Status::failed_precondition(format!("{what}: {e}")),
    }
}

impl Xconnect {
    async fn wire(&self, id: &str, up: &Connection) -> Result<Wired, Status> {
        let down = self
            .metadata
            .get::<Downstream>(id)
            .ok_or_else(|| Status::internal("no endpoint connection recorded"))?
            .0;
        let (nsc_url, nsc_name) = kernel_params(up.mechanism.as_ref(), "client side")?;
        let (nse_url, nse_name) = kernel_params(down.mechanism.as_ref(), "endpoint side")?;
        let short = short_tag(id);
        let nsc_name = if nsc_name.is_empty() {
            format!("nsm-{}", &short[..4])
        } else {
            nsc_name.to_string()
        };
        let ip = up
            .context
            .as_ref()
            .and_then(|c| c.ip_context.clone())
            .unwrap_or_default();
        let mtu = up.context.as_ref().map(|c| c.mtu).filter(|&m| m > 0);
        let nsc_ctx = IpContextSpec {
            addrs: nets(
                "connection.context.ip_context.src_ip_addrs",
                &ip.src_ip_addrs,
            )?,
            routes: routes("connection.context.ip_context.src_routes", &ip.src_routes)?,
            neighbors: Vec::new(),
            mtu,
        };
        let nse_ctx = IpContextSpec {
            addrs: nets(
                "connection.context.ip_context.dst_ip_addrs",
                &ip.dst_ip_addrs,
            )?,
            routes: routes("connection.context.ip_context.dst_routes", &ip.dst_routes)?,
            neighbors: Vec::new(),
            mtu,
        };
        let host = NetlinkIn::new(&Netns::current().map_err(kerr("this namespace"))?)
            .await
            .map_err(kerr("netlink"))?;
        let nsc_ns =
            Netns::open(nsc_url).map_err(kerr("connection.mechanism.parameters[inodeURL]"))?;
        let nse_ns = Netns::open(nse_url).map_err(kerr("the endpoint's inodeURL"))?;
        let nsc_nl = NetlinkIn::new(&nsc_ns)
            .await
            .map_err(kerr("netlink in the client's namespace"))?;
        let nse_nl = NetlinkIn::new(&nse_ns)
            .await
            .map_err(kerr("netlink in the endpoint's namespace"))?;
        let wired = Wired {
            nsc_host: format!("vwc{short}"),
            nse_host: format!("vwe{short}"),
            nsc_if: nsc_name.clone(),
            nse_if: nse_name.to_string(),
        };
        let result = async {
            for (nl, host_name, peer_name, ctx) in [
                (&nsc_nl, &wired.nsc_host, nsc_name.as_str(), &nsc_ctx),
                (&nse_nl, &wired.nse_host, nse_name, &nse_ctx),
            ] {
                let spec = VethSpec {
                    host_name: host_name.clone(),
                    peer_name: peer_name.to_string(),
                    mtu,
                    peer_mac: None,
                };
                kernel::create_veth_into(&host, nl, &spec)
                    .await
                    .map_err(kerr("creating a veth"))?;
                // No IPv6 chatter on the host end: it belongs to the dataplane.
                let _ = std::fs::write(
                    format!("/proc/sys/net/ipv6/conf/{host_name}/disable_ipv6"),
                    "1",
                );
                kernel::apply_context(nl, peer_name, ctx)
                    .await
                    .map_err(kerr("applying the connection context"))?;
            }
            // Opening AF_XDP sockets blocks (registration, binding): off the runtime thread.
            let (dp, key, a, b) = (
                self.dataplane.clone(),
                id.to_string(),
                wired.nsc_host.clone(),
                wired.nse_host.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let mut dp = dp.lock().unwrap_or_else(|e| e.into_inner());
                let core = dp
                    .as_mut()
                    .ok_or_else(|| Status::unavailable("the dataplane is stopping"))?;
                core.add_xconnect(&key, &a, &b)
                    .map_err(|e| Status::failed_precondition(format!("cross-connecting: {e}")))
            })
            .await
            .map_err(|e| Status::internal(format!("cross-connect task: {e}")))?
        }
        .await;
        if let Err(e) = result {
            let _ = kernel::delete_veth(&host, &wired.nsc_host).await;
            let _ = kernel::delete_veth(&host, &wired.nse_host).await;
            return Err(e);
        }
        Ok(wired)
    }

    async fn unwire(&self, id: &str, w: &Wired) {
        let t0 = std::time::Instant::now();
        // Closing AF_XDP sockets blocks (an RCU grace period each): off the runtime thread.
        let (dp, key) = (self.dataplane.clone(), id.to_string());
        let removed = tokio::task::spawn_blocking(move || {
            if let Some(core) = dp.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                core.remove_xconnect(&key);
            }
        })
        .await;
        if let Err(e) = removed {
            tracing::warn!("cross-connect removal task: {e}");
        }
        tracing::debug!(%id, ms = t0.elapsed().as_millis(), "cross-connect removed");
        match Netns::current().map(|ns| async move { NetlinkIn::new(&ns).await }) {
            Ok(f) => match f.await {
                Ok(host) => {
                    for h in [&w.nsc_host, &w.nse_host] {
                        if let Err(e) = kernel::delete_veth(&host, h).await {
                            tracing::warn!("deleting {h}: {e}");
                        }
                    }
                    tracing::debug!(%id, ms = t0.elapsed().as_millis(), "veths deleted");
                }
                Err(e) => tracing::warn!("netlink: {e}"),
            },
            Err(e) => tracing::warn!("netns: {e}"),
        }
    }
}

impl Xconnect {
    /// Writes this hop's PathSegment.metrics the way forwarder-vpp does: `server_*` for the
    /// client-facing (server-side) interface, `client_*` for the endpoint-facing one.
    fn annotate(&self, id: &str, w: &Wired, c: &mut Connection) {
        let totals = self
            .dataplane
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|core| core.totals(id));
        let Some(path) = c.path.as_mut() else { return };
        let Some(seg) = usize::try_from(path.index)
            .ok()
            .and_then(|i| path.path_segments.get_mut(i))
        else {
            return;
        };
        seg.metrics
            .insert("server_interface".into(), format!("KERNEL/{}", w.nsc_if));
        seg.metrics
            .insert("client_interface".into(), format!("KERNEL/{}", w.nse_if));
        if let Some([server, client]) = totals {
            for (side, t) in [("server", server), ("client", client)] {
                seg.metrics
                    .insert(format!("{side}_rx_bytes"), t.rx_bytes.to_string());
                seg.metrics
                    .insert(format!("{side}_tx_bytes"), t.tx_bytes.to_string());
                seg.metrics
                    .insert(format!("{side}_rx_packets"), t.rx_packets.to_string());
                seg.metrics
                    .insert(format!("{side}_tx_packets"), t.tx_packets.to_string());
                seg.metrics.insert(
                    format!("{side}_drops"),
                    t.drops.iter().sum::<u64>().to_string(),
                );
            }
        }
    }
}

impl Element for Xconnect {
    fn request<'a>(
        &'a self,
        req: NetworkServiceRequest,
        next: Next<'a>,
    ) -> BoxFut<'a, Result<Connection, Status>> {
        Box::pin(async move {
            let id = connection_of(&req)?.id.clone();
            let mut c = next.request(req).await?;
            if let Some(w) = self.metadata.get::<Wired>(&id) {
                // A refresh: already wired, nothing to redo; report the counters.
                self.annotate(&id, &w, &mut c);
                return Ok(c);
            }
            match self.wire(&id, &c).await {
                Ok(w) => {
                    tracing::info!(%id, nsc = %w.nsc_host, nse = %w.nse_host, "connection wired");
                    self.annotate(&id, &w, &mut c);
                    self.metadata.set(&id, w);
                    Ok(c)
                }
                Err(e) => {
                    if let Err(ce) = next.close(c).await {
                        tracing::warn!("closing the endpoint side after a failure: {ce}");
                    }
                    Err(e)
                }
            }
        })
    }

    fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
        Box::pin(async move {
            if let Some(w) = self.metadata.take::<Wired>(&conn.id) {
                self.unwire(&conn.id, &w).await;
            }
            next.close(conn).await
        })
    }
}
