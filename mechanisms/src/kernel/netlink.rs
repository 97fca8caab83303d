//! A netlink (rtnetlink) handle bound to one network namespace.
//!
//! A netlink socket acts on the namespace it was *created* in, for its whole life, whichever
//! thread later uses it. So [`NetlinkIn::new`] creates the socket on a short-lived thread that
//! entered the namespace (`Netns::run`), then drives it from the caller's tokio runtime like
//! any other socket. No thread of the runtime ever changes namespace.

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd};

use futures_util::StreamExt;
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{Socket, TokioSocket};

use super::{KernelError, Netns};

/// A netlink handle whose socket lives in one network namespace.
///
/// Needs a tokio runtime with IO enabled, and must be used from it (the socket is registered
/// with that runtime's reactor). Dropping it closes the socket.
pub struct NetlinkIn {
    handle: rtnetlink::Handle,
    netns: Netns,
    conn: tokio::task::JoinHandle<()>,
}

/// What vwire reads back about one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// the interface index, unique within its namespace
    pub index: u32,
    /// the interface name
    pub name: String,
    /// the `rtnl_link_ops` kind (`"veth"`, `"bridge"`…), `None` for a physical device
    pub kind: Option<String>,
    /// `IFLA_LINK`: for a veth, the ifindex of its peer (in the peer's namespace)
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: present when the peer (`link`) lives in another namespace
    pub link_netnsid: Option<i32>,
    /// the MTU
    pub mtu: Option<u32>,
    /// the MAC address, for Ethernet-like links
    pub mac: Option<[u8; 6]>,
    /// administratively up (`IFF_UP`)
    pub up: bool,
    /// how many times the carrier went up or down since the link was created
    pub carrier_changes: Option<u32>,
    /// the link group (`IFLA_GROUP`; 0 is the default group)
    pub group: u32,
}

impl LinkState {
    /// Whether this link is a veth.
    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }

    fn from_message(msg: &LinkMessage) -> LinkState {
        let mut state = LinkState {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            link: None,
            link_netnsid: None,
            mtu: None,
            mac: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            carrier_changes: None,
            group: 0,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => state.name.clone_from(name),
                LinkAttribute::Link(index) => state.link = Some(*index),
                LinkAttribute::LinkNetNsId(id) => state.link_netnsid = Some(*id),
                LinkAttribute::Mtu(mtu) => state.mtu = Some(*mtu),
                LinkAttribute::Address(mac) => state.mac = <[u8; 6]>::try_from(mac.as_slice()).ok(),
                LinkAttribute::CarrierChanges(n) => state.carrier_changes = Some(*n),
                LinkAttribute::Group(g) => state.group = *g,
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            state.kind = Some(kind_name(kind));
                        }
                    }
                }
                _ => {}
            }
        }
        state
    }
}

/// The kernel's name for a link kind (`IFLA_INFO_KIND`).
fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Veth => "veth".to_string(),
        InfoKind::Other(name) => name.clone(),
        other => format!("{other:?}").to_lowercase(),
    }
}

impl NetlinkIn {
    /// Opens a netlink socket inside `ns`.
    ///
    /// The socket is created on a short-lived thread that entered `ns`, so the calling thread's
    /// namespace never changes. Fails with [`KernelError::NoRuntime`] outside a tokio runtime.
    pub async fn new(ns: &Netns) -> Result<Self, KernelError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(KernelError::NoRuntime);
        }
        let netns = ns.try_clone()?;
        let socket = netns
            .run("create a netlink socket", || {
                let socket = Socket::new(NETLINK_ROUTE)?;
                socket.set_non_blocking(true)?;
                Ok(socket)
            })
            .await?;
        // SAFETY: the descriptor comes straight from `into_raw_fd` of an owned, open, non-blocking
        // netlink socket, so the TokioSocket becomes its only owner. `from_raw_fd` registers it with
        // the current runtime's reactor, which exists (checked above); it would panic only if that
        // registration failed (epoll out of memory or past max_user_watches).
        let socket = unsafe { TokioSocket::from_raw_fd(socket.into_raw_fd()) };
        let (conn, handle, _unsolicited) = rtnetlink::from_socket(socket);
        let conn = tokio::spawn(conn);
        Ok(NetlinkIn {
            handle,
            netns,
            conn,
        })
    }

    /// The namespace this handle acts on.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// Looks up a link by name; `Ok(None)` if there is none.
    pub async fn link(&self, name: &str) -> Result<Option<LinkState>, KernelError> {
        super::validate_ifname(name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(msg, || format!("look up interface {name:?}"))
            .await
    }

    /// Every link of the namespace.
    pub async fn links(&self) -> Result<Vec<LinkState>, KernelError> {
        let replies = self
            .request(
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                NLM_F_DUMP,
            )
            .await
            .map_err(|e| self.error("list the interfaces".to_string(), e))?;
        Ok(replies
            .iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(LinkState::from_message(link)),
                _ => None,
            })
            .collect())
    }

    /// Looks up a link by index; `Ok(None)` if there is none.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<LinkState>, KernelError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(msg, || format!("look up interface index {index}"))
            .await
    }

    async fn get_link(
        &self,
        msg: LinkMessage,
        what: impl FnOnce() -> String,
    ) -> Result<Option<LinkState>, KernelError> {
        match self.request(RouteNetlinkMessage::GetLink(msg), 0).await {
            Ok(replies) => Ok(replies.iter().find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(LinkState::from_message(link)),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(self.error(what(), e)),
        }
    }

    /// Sends one request (`NLM_F_REQUEST` plus `flags`) and collects the replies.
    ///
    /// A netlink error reply becomes the matching `io::Error` (EEXIST, ENODEV, …), so callers can
    /// accept the ones that mean "already done".
    pub(crate) async fn request(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | flags;
        let mut handle = self.handle.clone();
        let mut replies = handle
            .request(req)
            .map_err(|_| io::Error::other("the netlink connection is closed"))?;
        let mut out = Vec::new();
        while let Some(reply) = replies.next().await {
            match reply.payload {
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                NetlinkPayload::Error(err) if err.code.is_some() => return Err(err.to_io()),
                // an ACK (error code 0), the end of a dump, or nothing
                _ => {}
            }
        }
        Ok(out)
    }

    /// A change request that wants an acknowledgement.
    pub(crate) async fn change(&self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.request(msg, NLM_F_ACK | flags).await.map(drop)
    }

    /// Wraps a failed netlink step into a [`KernelError::Netlink`] naming it and this namespace.
    pub(crate) fn error(&self, what: String, source: io::Error) -> KernelError {
        KernelError::Netlink {
            what,
            netns: self.netns.label().to_string(),
            source,
        }
    }
}

impl Drop for NetlinkIn {
    fn drop(&mut self) {
        // The connection task owns the socket; stopping it closes the socket now rather than
        // whenever the last request stream happens to finish.
        self.conn.abort();
    }
}

impl std::fmt::Debug for NetlinkIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetlinkIn")
            .field("netns", &self.netns)
            .finish_non_exhaustive()
    }
}
