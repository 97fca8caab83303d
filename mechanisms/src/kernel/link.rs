//! veth pairs: one end on the forwarder's side (where AF_XDP attaches), the other in the
//! client's or endpoint's namespace under the name NSM asked for.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::RouteNetlinkMessage;

use super::{format_mac, validate_ifname, validate_unicast_mac, KernelError, LinkState, NetlinkIn};

/// The veth pair vwire wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VethSpec {
    /// the end that stays in the host handle's namespace (vwire attaches AF_XDP to it)
    pub host_name: String,
    /// the end's final name in the peer namespace: NSM's KERNEL `name` parameter, e.g. `nsm-1`
    pub peer_name: String,
    /// the MTU of both ends; `None` leaves the kernel default (1500)
    pub mtu: Option<u32>,
    /// the peer end's MAC; `None` lets the kernel pick a random one
    pub peer_mac: Option<[u8; 6]>,
    /// the host end's link group (`IFLA_GROUP`), set when the pair is created; `None` leaves the
    /// default group. vwire marks the veths it makes with its [`owned_group`].
    pub host_group: Option<u32>,
}

/// A veth pair as it is in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VethPair {
    /// the host end's ifindex, in the host namespace
    pub host_ifindex: u32,
    /// the peer end's ifindex, in the peer namespace
    pub peer_ifindex: u32,
    /// the host end's MAC
    pub host_mac: [u8; 6],
    /// the peer end's MAC
    pub peer_mac: [u8; 6],
    /// `true` if this call created the pair, `false` if it found it already there; a caller
    /// that rolls back deletes only what it created
    pub created: bool,
}

/// Creates a veth pair: `spec.host_name` in `host`'s namespace and `spec.peer_name` directly in
/// `peer`'s namespace, both with `spec.mtu`, both up.
///
/// The pair is created in one `RTM_NEWLINK` whose peer part carries the target namespace, so the
/// peer name is never visible (nor clashes) in the host namespace. If a later step fails (bringing
/// the peer up, reading the pair back), the new pair is deleted again.
///
/// Idempotent, with no link flap: if `host_name` already is a veth whose peer is `peer_name` in
/// `peer`'s namespace, the pair is kept (MTU, peer MAC and up state are corrected in place if they
/// differ) and returned with `created: false`. A veth named `host_name` whose peer is anything
/// else is a leftover of an earlier connection and is deleted and recreated. A non-veth
/// `host_name`, or a `peer_name` already taken in the peer namespace by another link, is an
/// error ([`KernelError::NameTaken`]): vwire never deletes what it did not create.
pub async fn create_veth_into(
    host: &NetlinkIn,
    peer: &NetlinkIn,
    spec: &VethSpec,
) -> Result<VethPair, KernelError> {
    validate_ifname(&spec.host_name)?;
    validate_ifname(&spec.peer_name)?;
    if let Some(mac) = spec.peer_mac {
        validate_unicast_mac(&mac)?;
    }

    let existing_host = host.link(&spec.host_name).await?;
    let existing_peer = peer.link(&spec.peer_name).await?;
    match (&existing_host, &existing_peer) {
        (Some(h), _) if !h.is_veth() => return Err(name_taken(host, h, "a veth")),
        (Some(h), Some(p)) if is_our_peer(h, p) => {
            ensure(host, h, spec.mtu, None).await?;
            ensure(peer, p, spec.mtu, spec.peer_mac).await?;
            return read_pair(host, peer, spec, false).await;
        }
        (_, Some(p)) => return Err(name_taken(peer, p, "free")),
        (Some(_), None) => {
            tracing::info!(
                host = %spec.host_name,
                netns = %host.netns(),
                "replacing a leftover veth whose peer is not {:?} in {}",
                spec.peer_name,
                peer.netns()
            );
            delete_veth(host, &spec.host_name).await?;
        }
        (None, None) => {}
    }

    // The peer is created down and brought up afterwards through its own namespace's handle:
    // Linux 6.18 refuses `IFF_UP` in the peer part when the peer goes to another namespace
    // (ENOTCONN, also with `ip link add ... peer ... netns X up`).
    let mut peer_msg = LinkMessage::default();
    peer_msg
        .attributes
        .push(LinkAttribute::IfName(spec.peer_name.clone()));
    // The fd is borrowed from `peer`, which outlives the request below.
    peer_msg
        .attributes
        .push(LinkAttribute::NetNsFd(peer.netns().as_fd().as_raw_fd()));
    if let Some(mtu) = spec.mtu {
        peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = spec.peer_mac {
        peer_msg
            .attributes
            .push(LinkAttribute::Address(mac.to_vec()));
    }

    let mut msg = LinkMessage::default();
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg.attributes
        .push(LinkAttribute::IfName(spec.host_name.clone()));
    if let Some(mtu) = spec.mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(group) = spec.host_group {
        msg.attributes.push(LinkAttribute::Group(group));
    }
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
    ]));

    let created = host
        .change(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
        .await;
    if let Err(e) = created {
        if e.raw_os_error() == Some(libc::EEXIST) {
            // Both names were free a moment ago: someone raced us. Name the clash if we can.
            if let Some(taken) = peer.link(&spec.peer_name).await? {
                return Err(name_taken(peer, &taken, "free"));
            }
        }
        return Err(host.error(
            format!(
                "create veth {:?} with peer {:?} in {} (mtu {:?})",
                spec.host_name,
                spec.peer_name,
                peer.netns(),
                spec.mtu
            ),
            e,
        ));
    }
    match finish_new_pair(host, peer, spec).await {
        Ok(pair) => Ok(pair),
        Err(e) => {
            // Leave nothing half-made behind: the pair is ours, we just created it.
            if let Err(cleanup) = delete_veth(host, &spec.host_name).await {
                tracing::warn!(
                    host = %spec.host_name,
                    "cannot delete the veth after a failed setup: {cleanup}"
                );
            }
            Err(e)
        }
    }
}

/// Brings the new pair's peer up (from its own namespace) and reads the pair back.
async fn finish_new_pair(
    host: &NetlinkIn,
    peer: &NetlinkIn,
    spec: &VethSpec,
) -> Result<VethPair, KernelError> {
    let Some(p) = peer.link(&spec.peer_name).await? else {
        return Err(peer.error(
            format!("find the new veth end {:?}", spec.peer_name),
            io::Error::from_raw_os_error(libc::ENODEV),
        ));
    };
    ensure(peer, &p, None, None).await?;
    read_pair(host, peer, spec, true).await
}

/// Deletes the veth pair whose host end is `host_name` (the peer goes with it, wherever it is).
///
/// Idempotent: no such link is `Ok`. Refuses ([`KernelError::NameTaken`]) to delete a link
/// that is not a veth.
pub async fn delete_veth(host: &NetlinkIn, host_name: &str) -> Result<(), KernelError> {
    let Some(link) = host.link(host_name).await? else {
        return Ok(());
    };
    if !link.is_veth() {
        return Err(name_taken(host, &link, "a veth"));
    }
    let mut msg = LinkMessage::default();
    msg.header.index = link.index;
    match host.change(RouteNetlinkMessage::DelLink(msg), 0).await {
        Ok(()) => Ok(()),
        // deleted meanwhile (by its peer's namespace going away, or by someone else)
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(host.error(format!("delete veth {host_name:?}"), e)),
    }
}

/// The link group of the host ends of the veths one vwire instance makes for connections:
/// 0x75 in the top byte and 24 bits of a hash (FNV-1a) of `instance`, a name that stays the same
/// across restarts and differs between instances sharing a namespace (vwire uses its NSM listen
/// URL). It is set when the pair is created, in the same `RTM_NEWLINK` ([`VethSpec::host_group`]),
/// so that no such veth ever exists unmarked; it is how an instance finds its own leftovers after
/// a crash without touching anything it did not make, another instance's veths included.
#[must_use]
pub fn owned_group(instance: &str) -> u32 {
    0x7500_0000 | (fnv1a(instance) & 0x00ff_ffff)
}

/// The 32-bit FNV-1a hash of `s`: deterministic across runs and builds, for names and groups
/// derived from ids.
#[must_use]
pub fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The link group vwire moves the veths it is about to delete into (see [`delete_veths`]):
/// "vwde" in ASCII, a number no other tool is expected to use. A link in it is one vwire was
/// deleting; nothing else is ever put there.
pub const DELETE_GROUP: u32 = 0x7677_6465;

/// Deletes the veth pairs whose host ends are `host_names` (their peers go with them) in one
/// device unregistration.
///
/// Deleting a device waits for RCU grace periods while holding the RTNL lock (about 18 ms per
/// veth pair on the testbed), and every other netlink change on the machine waits behind it. The
/// kernel deletes all the devices of a link group in one `RTM_DELLINK` with one wait (16 pairs:
/// 29 ms instead of 290). So each host end is checked as in [`delete_veth`] (absent: nothing to
/// do; not a veth: refused and left alone), moved into [`DELETE_GROUP`], and the group is deleted.
/// If the group deletion fails, each is deleted on its own.
///
/// Returns what could not be deleted, one error each; an empty list when all are gone.
pub async fn delete_veths(host: &NetlinkIn, host_names: &[String]) -> Vec<KernelError> {
    let mut failed = Vec::new();
    let mut marked = Vec::new();
    for name in host_names {
        match mark_for_deletion(host, name).await {
            Ok(true) => marked.push(name),
            Ok(false) => {} // already gone
            Err(e) => failed.push(e),
        }
    }
    if marked.is_empty() {
        return failed;
    }
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::Group(DELETE_GROUP));
    if let Err(e) = host.change(RouteNetlinkMessage::DelLink(msg), 0).await {
        tracing::warn!(
            "deleting link group {DELETE_GROUP:#x} ({} veths): {e}; deleting them one by one",
            marked.len()
        );
        for name in marked {
            if let Err(e) = delete_veth(host, name).await {
                failed.push(e);
            }
        }
    }
    failed
}

/// Moves the veth `name` into [`DELETE_GROUP`]: `Ok(false)` if there is no such link.
async fn mark_for_deletion(host: &NetlinkIn, name: &str) -> Result<bool, KernelError> {
    let Some(link) = host.link(name).await? else {
        return Ok(false);
    };
    if !link.is_veth() {
        return Err(name_taken(host, &link, "a veth"));
    }
    let mut msg = LinkMessage::default();
    msg.header.index = link.index;
    msg.attributes.push(LinkAttribute::Group(DELETE_GROUP));
    match host.change(RouteNetlinkMessage::SetLink(msg), 0).await {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(host.error(format!("move veth {name:?} to the deletion group"), e)),
    }
}

/// Whether `peer` is the other end of the veth `host`. Each end's `IFLA_LINK` is the other's
/// ifindex (in the other's namespace), and both are veths.
/// Each end names a peer in another namespace (`IFLA_LINK_NETNSID`) exactly when the two ends
/// are in different namespaces, which rules out most ifindex coincidences between namespaces.
fn is_our_peer(host: &LinkState, peer: &LinkState) -> bool {
    peer.is_veth()
        && host.link == Some(peer.index)
        && peer.link == Some(host.index)
        && host.link_netnsid.is_some() == peer.link_netnsid.is_some()
}

/// Brings an existing link to the wanted MTU, MAC and up state, touching only what differs
/// (so a refresh changes nothing and the carrier never drops).
async fn ensure(
    nl: &NetlinkIn,
    link: &LinkState,
    mtu: Option<u32>,
    mac: Option<[u8; 6]>,
) -> Result<(), KernelError> {
    let mut msg = LinkMessage::default();
    msg.header.index = link.index;
    if let Some(mtu) = mtu.filter(|&m| link.mtu != Some(m)) {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = mac.filter(|&m| link.mac != Some(m)) {
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    if !link.up {
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
    }
    if msg.attributes.is_empty() && link.up {
        return Ok(());
    }
    nl.change(RouteNetlinkMessage::SetLink(msg), 0)
        .await
        .map_err(|e| {
            nl.error(
                format!(
                    "set {:?} (mtu {mtu:?}, mac {}, up)",
                    link.name,
                    mac.map_or_else(|| "unchanged".to_string(), |m| format_mac(&m))
                ),
                e,
            )
        })
}

/// Reads both ends back and checks that they are each other's peer.
async fn read_pair(
    host: &NetlinkIn,
    peer: &NetlinkIn,
    spec: &VethSpec,
    created: bool,
) -> Result<VethPair, KernelError> {
    let vanished = |nl: &NetlinkIn, name: &str| {
        nl.error(
            format!("read back veth end {name:?}"),
            io::Error::from_raw_os_error(libc::ENODEV),
        )
    };
    let h = host
        .link(&spec.host_name)
        .await?
        .ok_or_else(|| vanished(host, &spec.host_name))?;
    let p = peer
        .link(&spec.peer_name)
        .await?
        .ok_or_else(|| vanished(peer, &spec.peer_name))?;
    if !is_our_peer(&h, &p) {
        return Err(name_taken(peer, &p, "the peer of the veth just created"));
    }
    let no_mac = |nl: &NetlinkIn, name: &str| {
        nl.error(
            format!("read the MAC of {name:?}"),
            io::Error::from_raw_os_error(libc::EADDRNOTAVAIL),
        )
    };
    Ok(VethPair {
        host_ifindex: h.index,
        peer_ifindex: p.index,
        host_mac: h.mac.ok_or_else(|| no_mac(host, &spec.host_name))?,
        peer_mac: p.mac.ok_or_else(|| no_mac(peer, &spec.peer_name))?,
        created,
    })
}

fn name_taken(nl: &NetlinkIn, link: &LinkState, expected: &'static str) -> KernelError {
    KernelError::NameTaken {
        name: link.name.clone(),
        netns: nl.netns().label().to_string(),
        found: link.kind.clone().unwrap_or_else(|| "device".to_string()),
        expected,
    }
}
