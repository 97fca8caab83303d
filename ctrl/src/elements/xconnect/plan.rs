//! What each side of a connection will be, read from its mechanism and the connection
//! context before anything is built: the [`Plan`] of a side (a veth pair, a memif interface or
//! a tunnel), its addresses and routes, and the mapping of kernel errors to statuses.
//!
//! Contract: reading a plan has no side effect. A bad parameter from the client is
//! InvalidArgument naming the field; a bad one from the endpoint is FailedPrecondition; a
//! mechanism type xconnect cannot build is Unimplemented.

use tonic::Status;
use vwire_mechanisms::kernel::netns_url_path;
use vwire_mechanisms::kernel::{self, IpContextSpec, IpNet, NetlinkIn, RouteSpec};
use vwire_mechanisms::memif::port::Role;
use vwire_proto::connection::Mechanism;
use vwire_proto::mechanism::{keys, MechanismType};

use crate::elements::mechanisms::{srv6, vxlan};

/// `VXLAN/vni=N` or `SRV6/<src sid>-<dst sid>`, for logs and metrics.
pub(super) fn describe_tunnel(m: &Mechanism) -> String {
    match m.mechanism_type() {
        Ok(MechanismType::Vxlan) => vxlan::describe(m),
        _ => srv6::describe(m),
    }
}

/// What a side will be, from its mechanism.
pub(super) enum Plan {
    Kernel {
        url: String,
        name: String,
    },
    Memif {
        socket: String,
        role: Role,
        netns: Option<std::path::PathBuf>,
    },
    /// A REMOTE mechanism; `server`: this side accepted it (the client-facing side).
    Tunnel {
        mechanism: Mechanism,
        server: bool,
    },
}

pub(super) fn plan(m: Option<&Mechanism>, side: Side, tag: &str) -> Result<Plan, Status> {
    let what = side.what();
    let m = m.ok_or_else(|| Status::internal(format!("{what}: no mechanism")))?;
    let unimplemented = || {
        Status::unimplemented(format!(
            "{what}: cross-connecting a {} mechanism is not implemented (KERNEL and MEMIF are)",
            m.r#type
        ))
    };
    match (m.mechanism_type().map_err(|_| unimplemented())?, side) {
        (MechanismType::Kernel, _) => {
            // The name as it comes: the client's was checked by mechanisms, and the kernel
            // refuses an invalid one from the endpoint (InvalidArgument, see `kerr`).
            let name = m.parameters.get(keys::NAME).map_or("", String::as_str);
            Ok(Plan::Kernel {
                url: m.kernel().inode_url().unwrap_or_default().to_string(),
                name: match (name, side) {
                    ("", Side::Client) => format!("nsm-{}", &tag[..4]),
                    (n, _) => n.to_string(),
                },
            })
        }
        (MechanismType::Memif, Side::Client) => {
            let Some(url) = m.memif().inode_url() else {
                return Err(Status::invalid_argument(
                    "connection.mechanism.parameters[inodeURL]: MEMIF needs the client's network namespace",
                ));
            };
            Ok(Plan::Memif {
                socket: format!("@/run/vwire/memif/{tag}/memif.socket"),
                role: Role::Server,
                netns: Some(
                    netns_url_path(url)
                        .map_err(|e| {
                            Status::invalid_argument(format!(
                                "connection.mechanism.parameters[inodeURL]: {e}"
                            ))
                        })?
                        .into(),
                ),
            })
        }
        (MechanismType::Memif, Side::Endpoint) => {
            let p = m.memif();
            let Some(socket) = p.socketfile() else {
                return Err(Status::failed_precondition(
                    "the endpoint's MEMIF mechanism has no parameters[socketfile]",
                ));
            };
            let netns = match p.inode_url() {
                None => None,
                Some(url) => match netns_url_path(url) {
                    Ok(path) if std::path::Path::new(path).exists() => Some(path.into()),
                    Ok(_) => {
                        return Err(Status::failed_precondition(format!(
                            "the endpoint's MEMIF parameters[inodeURL]: namespace {url:?} does not exist"
                        )))
                    }
                    Err(e) => {
                        return Err(Status::failed_precondition(format!(
                            "the endpoint's MEMIF parameters[inodeURL]: {e}"
                        )))
                    }
                },
            };
            Ok(Plan::Memif {
                socket: socket.to_string(),
                role: Role::Client,
                netns,
            })
        }
        (MechanismType::Vxlan | MechanismType::Srv6, side) => Ok(Plan::Tunnel {
            mechanism: m.clone(),
            server: side == Side::Client,
        }),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Client,
    Endpoint,
}

impl Side {
    pub(super) fn what(self) -> &'static str {
        match self {
            Side::Client => "client side",
            Side::Endpoint => "endpoint side",
        }
    }

    /// Prefix of this side's host-side names.
    pub(super) fn prefix(self) -> &'static str {
        match self {
            Side::Client => "vwc",
            Side::Endpoint => "vwe",
        }
    }
}

/// A locally administered MAC that stands for a memif peer of an IP vWire, per connection.
pub(super) fn virtual_mac(tag: &str) -> [u8; 6] {
    let v = u32::from_str_radix(tag, 16).unwrap_or(0).to_be_bytes();
    [0x02, 0x76, v[0], v[1], v[2], v[3]]
}

pub(super) fn nets(field: &str, v: &[String]) -> Result<Vec<IpNet>, Status> {
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

pub(super) fn routes(
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

pub(super) fn kerr(what: &str) -> impl Fn(kernel::KernelError) -> Status + '_ {
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

/// A side being built: its plan, its context, and what exists so far.
pub(super) struct Building {
    pub(super) side: Side,
    pub(super) plan: Plan,
    pub(super) ctx: IpContextSpec,
    /// For a kernel side: its namespace's netlink handle and, once created, the MAC of the
    /// interface inside the namespace.
    pub(super) nl: Option<NetlinkIn>,
    pub(super) inner_mac: Option<[u8; 6]>,
}
