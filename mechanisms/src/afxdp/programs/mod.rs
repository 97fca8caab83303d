//! vwire's XDP programs, and the attachment of one to an interface with its maps.
//!
//! Three programs exist ([`XdpProgram`]), all loaded, and their verifier errors reported, by the
//! same code here:
//!
//! - [`XdpProgram::SharedRedirect`], the default, for interfaces vwire owns (the host side of an
//!   NSM veth, a configured port): **one** program and its two maps per network namespace of the
//!   process, attached to every such interface ([`shared`]);
//! - [`XdpProgram::QueueRedirect`]: the same behaviour from a copy of its own per interface
//!   ([`queue`], with its own XSKMAP);
//! - [`XdpProgram::Steer`]: the uplink's steering program, per interface ([`steer`]).
//!
//! Why share: attaching a program that is not attached anywhere yet makes the kernel's XDP
//! dispatcher rebuild its image and wait for an RCU grace period (`bpf_dispatcher_change_prog`,
//! under the RTNL lock), and so does detaching the last attachment of a program; 12–35 ms per
//! interface here, serialising concurrent NSM Requests. Attaching a program that is already
//! attached elsewhere only takes a reference, so with one shared program only the first port of
//! the namespace (and the close of its last) pays that wait, and not even those once the
//! process keeps the program attached to a private interface
//! ([`SharedProgram::keep_attached`]).
//!
//! Layout: `asm` (eBPF encoding and the label-resolving assembler: pure), [`queue`] (the
//! per-interface program: pure), [`shared`] (the shared program: pure builder, slot allocation,
//! the per-namespace instance), [`steer`] (the uplink's steering program: pure builder),
//! `anchor` (a private interface that keeps the shared program attached), and here
//! [`XdpProgram`] and [`XdpAttachment`], which pick, load and attach one of them. The children
//! use `super::sys` and each other (`shared` → `asm`, `anchor`, `queue`; `steer` → `asm`;
//! `queue` → `asm`), never this module's items.

use std::os::fd::{AsRawFd, OwnedFd};

use super::abi::BPF_MAP_TYPE_XSKMAP;
use super::error::AfXdpError;
use super::sys::maps::Map;
use super::sys::{link_create, prog_load, XdpMode};

mod anchor;
pub(crate) mod asm;
pub mod queue;
pub mod shared;
pub mod steer;

pub use shared::{SharedProgram, SlotLease, SlotRange};
pub use steer::Steering;

/// Which XDP program a port's interface gets. All redirect each served queue of the interface to
/// its socket through an XSKMAP, and pass frames of queues with no socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpProgram {
    /// Every frame of a served queue goes to its socket, through the one program this process
    /// shares between all such interfaces of a network namespace ([`shared`]): for an
    /// interface vwire owns, such as the host side of an NSM veth. The default: attaching it to
    /// one more interface does not make the kernel wait for an RCU grace period.
    #[default]
    SharedRedirect,
    /// The same, from a program and XSKMAP of the interface's own ([`queue`]).
    QueueRedirect,
    /// Only vwire's tunnel traffic goes to the sockets, everything else to the kernel
    /// ([`steer`]): for the node's uplink, shared with the host stack. Per interface.
    Steer(Steering),
}

impl XdpProgram {
    /// The program's name in the kernel (`bpftool prog`, `ip link`).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::SharedRedirect => shared::NAME,
            Self::QueueRedirect => queue::NAME,
            Self::Steer(_) => steer::NAME,
        }
    }
}

/// What an attachment redirects through.
#[derive(Debug)]
enum Target {
    /// A program and XSKMAP of the interface's own, keyed by receive queue.
    Own { _prog: OwnedFd, map: Map<u32, u32> },
    /// The namespace's shared program: this interface's slots in its maps, removed on drop.
    Shared(SlotLease),
}

/// An XDP program attached to one interface while this value lives, and the map entries that
/// steer the interface's queues to sockets.
#[derive(Debug)]
pub struct XdpAttachment {
    // Field order is drop order: the link goes first, detaching the program; then the program
    // and map of the interface's own, or the interface's entries in the shared maps.
    link: OwnedFd,
    target: Target,
    mode: XdpMode,
}

impl XdpAttachment {
    /// Loads the per-interface program ([`XdpProgram::QueueRedirect`]) and attaches it to
    /// `ifindex`: native mode if the driver supports it (and `allow_native`), otherwise generic.
    pub fn attach(ifname: &str, ifindex: u32, allow_native: bool) -> Result<Self, AfXdpError> {
        Self::attach_program(
            ifname,
            ifindex,
            queue::MAX_QUEUES,
            allow_native,
            &XdpProgram::QueueRedirect,
        )
    }

    /// Attaches `program` to `ifindex`, in the mode [`XdpAttachment::attach`] picks, for the
    /// interface's first `queues` receive queues (at most 64). A per-interface program is loaded
    /// (with its XSKMAP) here; the shared one is loaded by the first port of the namespace, and
    /// the interface gets `queues` slots of its XSKMAP, released when this value is dropped.
    pub fn attach_program(
        ifname: &str,
        ifindex: u32,
        queues: u32,
        allow_native: bool,
        which: &XdpProgram,
    ) -> Result<Self, AfXdpError> {
        if let XdpProgram::SharedRedirect = which {
            let shared = SharedProgram::get_or_load(ifname)?;
            let (link, mode) = link_create(ifname, ifindex, shared.prog(), allow_native)?;
            // After the link: if attaching fails (EBUSY), no slot was taken.
            let lease = shared.lease(ifname, ifindex, queues)?;
            return Ok(Self {
                link,
                target: Target::Shared(lease),
                mode,
            });
        }
        // Keyed by receive queue, the value a socket fd.
        let map = Map::<u32, u32>::create(
            ifname,
            BPF_MAP_TYPE_XSKMAP,
            queue::MAX_QUEUES,
            0,
            "vwire_xsks",
            "creating the XSKMAP",
        )?;
        let insns = match which {
            XdpProgram::Steer(s) => s.program(map.fd())?,
            XdpProgram::QueueRedirect | XdpProgram::SharedRedirect => {
                queue::program(map.fd()).to_vec()
            }
        };
        let prog = prog_load(ifname, &insns, which.name())?;
        let (link, mode) = link_create(ifname, ifindex, &prog, allow_native)?;
        Ok(Self {
            link,
            target: Target::Own { _prog: prog, map },
            mode,
        })
    }

    /// The mode the program runs in.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Steers queue `queue` of the interface to the AF_XDP socket `xsk_fd`. For the shared
    /// program, `queue` must be below the `queues` given to [`XdpAttachment::attach_program`]
    /// (EINVAL otherwise).
    pub fn insert(&self, queue: u32, xsk_fd: i32) -> std::io::Result<()> {
        let fd =
            u32::try_from(xsk_fd).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
        match &self.target {
            Target::Own { map, .. } => map.update(&queue, &fd),
            Target::Shared(lease) => lease.insert(queue, fd),
        }
    }

    /// The interface's slots in the shared XSKMAP, if it uses the shared program.
    pub fn shared_slots(&self) -> Option<SlotRange> {
        match &self.target {
            Target::Shared(lease) => Some(lease.range()),
            Target::Own { .. } => None,
        }
    }

    /// The link fd (kept open for the life of the attachment).
    pub fn link_fd(&self) -> i32 {
        self.link.as_raw_fd()
    }
}
