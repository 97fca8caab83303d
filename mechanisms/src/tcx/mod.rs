//! tcx: the in-kernel cross-connect of a KERNEL↔KERNEL connection.
//!
//! Through vwire's workers, a connection between two kernel interfaces moves every frame through
//! AF_XDP copy mode, one MTU-sized frame at a time: the pods lose TSO/GSO and a TCP stream runs
//! at a sixth of a Linux bridge (`perf/reports/afxdp_xconnect.md`). When both sides are kernel
//! interfaces there is nothing for userspace to do, so vwire joins the two host veths inside the
//! kernel instead: one small TC program ([`program`]), attached to the TCX ingress of both host
//! veths, hands each packet to the other pod with `bpf_redirect_peer` — super-packets, checksum
//! offload and all — and counts it in a map entry per interface, which gives the connection's
//! PathSegment metrics.
//!
//! # Contract
//!
//! - One [`Redirector`] (the loaded program and its peers map) serves every connection of a
//!   process. [`Redirector::connect`] puts two host veths' entries in the map and attaches the
//!   program to both (Linux ≥ 6.6: TCX; an older kernel refuses the attach and the caller falls
//!   back to AF_XDP, see [`TcxError::unsupported`]); [`Redirector::disconnect`] removes the
//!   entries, after which packets of the veths go to the host stack (`TCX_NEXT`), which has no
//!   address on them. The attachments go with the veths, which the caller deletes.
//! - The attachments are made with `BPF_PROG_ATTACH`, not a bpf_link: they do not belong to the
//!   process, so **traffic keeps flowing while vwire is killed and restarted**. A restarted vwire
//!   finds the program on a recorded connection's veth ([`Redirector::adopt`], by its
//!   [`NAME`]), takes its map back, and carries on with the counters where they were. Nothing
//!   outlives the veths: deleting an interface detaches what is attached to it, and the
//!   program and map are freed with their last attachment and descriptor.
//! - The ifindexes are those of the calling thread's network namespace (vwire's own, where the
//!   host veths live).

mod program;

use std::os::fd::{AsRawFd, OwnedFd};

use crate::afxdp::abi::*;
use crate::afxdp::sys::maps::Map;
use crate::afxdp::sys::{bpf, bpf_mut, fd_by_id, ifindex, prog_info, prog_load_as};
use crate::afxdp::AfXdpError;

use program::Peer;
pub use program::NAME;

/// Room in the peers map: two entries per connection.
pub const MAX_INTERFACES: u32 = 8192;

/// Errors of the in-kernel cross-connect.
#[derive(Debug, thiserror::Error)]
pub enum TcxError {
    /// loading the program or creating its map failed
    #[error("loading the in-kernel cross-connect: {0}")]
    Load(#[from] AfXdpError),
    /// the interface does not exist
    #[error("no network interface named {0:?}")]
    NoSuchInterface(String),
    /// a bpf(2) step on an interface failed
    #[error("{ifname}: {what}: {source}")]
    Bpf {
        /// the interface
        ifname: String,
        /// the step
        what: &'static str,
        /// the system error
        source: std::io::Error,
    },
}

impl TcxError {
    /// Whether the kernel lacks what the in-kernel cross-connect needs (TCX, `bpf_redirect_peer`
    /// for TC programs), as opposed to a failure of this connection.
    pub fn unsupported(&self) -> bool {
        match self {
            TcxError::Load(AfXdpError::Verifier { .. }) => true,
            TcxError::Bpf { source, .. } => matches!(
                source.raw_os_error(),
                // EINVAL: an attach type this kernel does not know; 524: ENOTSUPP.
                Some(libc::EINVAL | libc::EOPNOTSUPP | 524)
            ),
            _ => false,
        }
    }
}

/// What the program counted for packets arriving on one host veth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets redirected to the other side, in segments (a super-packet of n segments counts n).
    pub packets: u64,
    /// Bytes redirected (a super-packet's headers count once).
    pub bytes: u64,
    /// Super-packets among them.
    pub gso_packets: u64,
    /// Packets whose redirect the kernel refused.
    pub drops: u64,
}

/// The loaded cross-connect program and its peers map.
#[derive(Debug)]
pub struct Redirector {
    prog: OwnedFd,
    prog_id: u32,
    peers: Map<u32, Peer>,
}

impl Redirector {
    /// Loads the program with a new, empty peers map.
    pub fn load() -> Result<Self, TcxError> {
        let peers = Map::<u32, Peer>::create(
            "tcx",
            BPF_MAP_TYPE_HASH,
            MAX_INTERFACES,
            0,
            "vwire_tcx_peers",
            "creating the cross-connect's map",
        )?;
        let insns = program::program(peers.fd())?;
        let prog = prog_load_as(
            "tcx",
            &insns,
            NAME,
            BPF_PROG_TYPE_SCHED_CLS,
            BPF_TCX_INGRESS,
        )?;
        let prog_id = prog_info(&prog)
            .map_err(|source| TcxError::Bpf {
                ifname: "tcx".into(),
                what: "reading the loaded program's id",
                source,
            })?
            .0
            .id;
        Ok(Self {
            prog,
            prog_id,
            peers,
        })
    }

    /// The program attached to `ifname`'s TCX ingress by an earlier run of vwire (found by its
    /// name), with its map; `None` if the interface has no such program.
    pub fn adopt(ifname: &str) -> Result<Option<Self>, TcxError> {
        let index = index_of(ifname)?;
        let bpf_err = |what| {
            move |source| TcxError::Bpf {
                ifname: ifname.to_string(),
                what,
                source,
            }
        };
        for id in attached(ifname, index)? {
            let prog = match fd_by_id(BPF_PROG_GET_FD_BY_ID, id) {
                Ok(fd) => fd,
                // Detached since the query.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(bpf_err("opening an attached program")(e)),
            };
            let (info, maps) = prog_info(&prog).map_err(bpf_err("reading a program's info"))?;
            if !is_ours(&info) {
                continue;
            }
            let Some(&map_id) = maps.first() else {
                continue;
            };
            let fd = fd_by_id(BPF_MAP_GET_FD_BY_ID, map_id)
                .map_err(bpf_err("opening the cross-connect's map"))?;
            let Some(peers) = Map::from_fd(fd, BPF_MAP_TYPE_HASH)
                .map_err(bpf_err("reading the cross-connect map's info"))?
            else {
                continue;
            };
            return Ok(Some(Self {
                prog,
                prog_id: info.id,
                peers,
            }));
        }
        Ok(None)
    }

    /// The program's id in the kernel (`bpftool prog show id N`).
    pub fn prog_id(&self) -> u32 {
        self.prog_id
    }

    /// Cross-connects host veths `a` and `b`: what arrives on one goes to the other's peer.
    /// Returns their indexes. On failure nothing of the connection is left in the map; an
    /// attachment made before the failure goes with the veths.
    pub fn connect(&self, a: &str, b: &str) -> Result<[u32; 2], TcxError> {
        let (ia, ib) = (index_of(a)?, index_of(b)?);
        let result = self.insert(a, ia, ib).and_then(|()| {
            self.insert(b, ib, ia)?;
            self.attach(a, ia)?;
            self.attach(b, ib)
        });
        match result {
            Ok(()) => Ok([ia, ib]),
            Err(e) => {
                self.disconnect([ia, ib]);
                Err(e)
            }
        }
    }

    /// Removes the entries of the host veths with indexes `ends`: their packets go to the host
    /// stack from now on. The attachments are left to the veths' deletion (detaching would take
    /// the RTNL lock once more per interface).
    pub fn disconnect(&self, ends: [u32; 2]) {
        for i in ends {
            let _ = self.peers.delete(&i);
        }
    }

    /// Whether `a` and `b` are cross-connected by this program: both entries point at each
    /// other and the program is attached to both.
    pub fn connected(&self, a: &str, b: &str) -> Result<bool, TcxError> {
        let (ia, ib) = (index_of(a)?, index_of(b)?);
        for (name, from, to) in [(a, ia, ib), (b, ib, ia)] {
            let entry = self.peers.lookup(&from).map_err(|source| TcxError::Bpf {
                ifname: name.to_string(),
                what: "reading the cross-connect's entry",
                source,
            })?;
            if entry.map(|p| p.target) != Some(to) || !attached(name, from)?.contains(&self.prog_id)
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// What arrived on the host veth with index `ifindex` and was redirected; `None` if it is
    /// not cross-connected.
    pub fn counters(&self, ifindex: u32) -> Option<Counters> {
        let p = self.peers.lookup(&ifindex).ok().flatten()?;
        Some(Counters {
            packets: p.packets,
            bytes: p.bytes,
            gso_packets: p.gso_packets,
            drops: p.drops,
        })
    }

    fn insert(&self, ifname: &str, from: u32, to: u32) -> Result<(), TcxError> {
        let entry = Peer {
            target: to,
            ..Default::default()
        };
        self.peers
            .update(&from, &entry)
            .map_err(|source| TcxError::Bpf {
                ifname: ifname.to_string(),
                what: "adding the cross-connect's entry",
                source,
            })
    }

    fn attach(&self, ifname: &str, index: u32) -> Result<(), TcxError> {
        let a = ProgAttachAttr {
            target_ifindex: index,
            attach_bpf_fd: u32::try_from(self.prog.as_raw_fd()).unwrap_or(u32::MAX),
            attach_type: BPF_TCX_INGRESS,
            ..Default::default()
        };
        // SAFETY: `a` is a live ProgAttachAttr, which holds no pointers.
        unsafe { bpf(BPF_PROG_ATTACH, &a) }
            .map(|_| ())
            .map_err(|source| TcxError::Bpf {
                ifname: ifname.to_string(),
                what: "attaching the cross-connect to TCX ingress",
                source,
            })
    }
}

fn index_of(ifname: &str) -> Result<u32, TcxError> {
    ifindex(ifname).ok_or_else(|| TcxError::NoSuchInterface(ifname.to_string()))
}

/// Whether a program is vwire's cross-connect (a TC program of [`NAME`]).
fn is_ours(info: &ProgInfo) -> bool {
    let end = info.name.iter().position(|&b| b == 0).unwrap_or(16);
    info.prog_type == BPF_PROG_TYPE_SCHED_CLS && info.name.get(..end) == Some(NAME.as_bytes())
}

/// The ids of the programs attached to the TCX ingress of `ifname` (index `index`).
pub fn attached(ifname: &str, index: u32) -> Result<Vec<u32>, TcxError> {
    let mut ids = [0u32; 64];
    let mut a = ProgQueryAttr {
        target_ifindex: index,
        attach_type: BPF_TCX_INGRESS,
        prog_ids: ids.as_mut_ptr() as u64,
        count: u32::try_from(ids.len()).unwrap_or(0),
        ..Default::default()
    };
    // SAFETY: `a` is live; `prog_ids` points to `ids`, live and writable for `count` entries,
    // the most the kernel writes. The kernel writes the number found back into `a.count`, hence
    // the exclusive borrow.
    let rc = unsafe { bpf_mut(BPF_PROG_QUERY, &mut a) };
    match rc {
        Ok(_) => {}
        // ENOSPC: more programs than room; the first `ids.len()` were written.
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {}
        Err(source) => {
            return Err(TcxError::Bpf {
                ifname: ifname.to_string(),
                what: "listing the programs on TCX ingress",
                source,
            })
        }
    }
    let n = usize::try_from(a.count).unwrap_or(0).min(ids.len());
    Ok(ids[..n].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bpf_err(errno: i32) -> TcxError {
        TcxError::Bpf {
            ifname: "x".into(),
            what: "attaching",
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    #[test]
    fn only_a_kernel_without_the_hook_or_helper_is_unsupported() {
        // An attach type the kernel does not know (Linux < 6.6), or no such operation.
        assert!(bpf_err(libc::EINVAL).unsupported());
        assert!(bpf_err(libc::EOPNOTSUPP).unsupported());
        assert!(bpf_err(524).unsupported());
        // A refusal by the verifier (no bpf_redirect_peer for TC programs).
        assert!(TcxError::Load(AfXdpError::Verifier {
            ifname: "tcx".into(),
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
            log: String::new(),
        })
        .unsupported());
        // Failures of one connection, not of the kernel.
        assert!(!bpf_err(libc::ENODEV).unsupported());
        assert!(!bpf_err(libc::EEXIST).unsupported());
        assert!(!bpf_err(libc::EPERM).unsupported());
        assert!(!TcxError::NoSuchInterface("vwc1".into()).unsupported());
    }
}
