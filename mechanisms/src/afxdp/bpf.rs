//! vwire's XDP programs, their maps, and the bpf_link that attaches them.
//!
//! Three programs exist ([`XdpProgram`]), all loaded, and their verifier errors reported, by the
//! same code here:
//!
//! - [`XdpProgram::SharedRedirect`], the default, for interfaces vwire owns (the host side of an
//!   NSM veth, a configured port): **one** program and its two maps per network namespace of the
//!   process, attached to every such interface ([`super::shared`]);
//! - [`XdpProgram::QueueRedirect`]: the same behaviour from a copy of its own per interface (the
//!   program below, with its own XSKMAP);
//! - [`XdpProgram::Steer`]: the uplink's steering program, per interface ([`super::steer`]).
//!
//! Why share: attaching a program that is not attached anywhere yet makes the kernel's XDP
//! dispatcher rebuild its image and wait for an RCU grace period (`bpf_dispatcher_change_prog`,
//! under the RTNL lock), and so does detaching the last attachment of a program; 12–35 ms per
//! interface here, serialising concurrent NSM Requests. Attaching a program that is already
//! attached elsewhere only takes a reference, so with one shared program only the first port of
//! the namespace (and the close of its last) pays that wait, and not even those once the
//! process keeps the program attached to a private interface
//! ([`super::SharedProgram::keep_attached`]).
//!
//! The per-interface queue-redirect program is six instructions, assembled here so that vwire
//! needs neither clang nor libbpf:
//!
//! ```text
//! r2 = *(u32 *)(r1 + 16)     ; ctx->rx_queue_index
//! r1 = xskmap ll             ; the map, by fd (BPF_PSEUDO_MAP_FD)
//! r3 = XDP_PASS              ; returned when no socket is bound to that queue
//! call bpf_redirect_map
//! exit
//! ```
//!
//! Frames of a queue with a socket in the map go to that socket; frames of other queues, and all
//! frames before the socket is inserted, pass to the kernel stack. Unlike libxdp's default
//! program, nothing is taken from queues vwire does not serve. The shared program keeps that
//! contract per interface (see its listing in [`super::shared`]).
//!
//! Every program is attached with BPF_LINK_CREATE, not the legacy netlink attach: each port owns
//! its link, an fd of this process, so the program leaves the interface when the port is dropped,
//! or when vwire exits or crashes. Attaching fails with EBUSY if the interface already has an XDP
//! program: vwire never replaces somebody else's.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::abi::*;
use super::asm::{BPF_PSEUDO_MAP_FD, FN_REDIRECT_MAP, XDP_PASS};
use super::shared::{SharedProgram, SlotLease, SlotRange};
use super::steer::Steering;
use super::AfXdpError;

/// `usize` → `u32` for lengths of fixed, small arrays handed to the kernel.
fn len32<T>(v: &[T]) -> u32 {
    u32::try_from(v.len()).unwrap_or(u32::MAX)
}

/// Maximum queues per interface the maps can serve.
pub(crate) const MAX_QUEUES: u32 = 64;

/// bpf(2) with the attribute prefix `attr` of `size` bytes.
///
/// # Safety
///
/// `attr` points to a live, zero-padded bpf_attr prefix of `size` bytes for command `cmd`, and
/// every pointer in it (instructions, license, log buffer, key, value) points to live memory of
/// the size the command reads or writes there.
pub(crate) unsafe fn bpf(cmd: i64, attr: *const u8, size: usize) -> std::io::Result<i32> {
    // SAFETY: the caller guarantees `attr` and the memory it points to (see above); the kernel
    // reads only `size` bytes of it and checks that fields it does not know are zero.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    i32::try_from(rc).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// Takes ownership of a descriptor the kernel just returned.
pub(crate) fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

pub(crate) fn name16(s: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    for (d, c) in n.iter_mut().zip(s.bytes().take(15)) {
        *d = if c.is_ascii_alphanumeric() || c == b'_' {
            c
        } else {
            b'_'
        };
    }
    n
}

/// The instructions of the program, with `map_fd` patched in.
pub fn program(map_fd: i32) -> [BpfInsn; 6] {
    [
        // r2 = *(u32 *)(r1 + 16): BPF_LDX | BPF_MEM | BPF_W
        BpfInsn {
            code: 0x61,
            regs: 2 | (1 << 4),
            off: 16,
            imm: 0,
        },
        // r1 = map (ld_imm64, two slots): BPF_LD | BPF_DW | BPF_IMM
        BpfInsn {
            code: 0x18,
            regs: 1 | (BPF_PSEUDO_MAP_FD << 4),
            off: 0,
            imm: map_fd,
        },
        BpfInsn {
            code: 0,
            regs: 0,
            off: 0,
            imm: 0,
        },
        // r3 = XDP_PASS: BPF_ALU64 | BPF_MOV | BPF_K
        BpfInsn {
            code: 0xb7,
            regs: 3,
            off: 0,
            imm: XDP_PASS,
        },
        // call bpf_redirect_map: BPF_JMP | BPF_CALL
        BpfInsn {
            code: 0x85,
            regs: 0,
            off: 0,
            imm: FN_REDIRECT_MAP,
        },
        // exit: BPF_JMP | BPF_EXIT
        BpfInsn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ]
}

/// Which XDP program a port's interface gets. All redirect each served queue of the interface to
/// its socket through an XSKMAP, and pass frames of queues with no socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpProgram {
    /// Every frame of a served queue goes to its socket, through the one program this process
    /// shares between all such interfaces of a network namespace ([`super::shared`]): for an
    /// interface vwire owns, such as the host side of an NSM veth. The default: attaching it to
    /// one more interface does not make the kernel wait for an RCU grace period.
    #[default]
    SharedRedirect,
    /// The same, from a program and XSKMAP of the interface's own ([`program`]).
    QueueRedirect,
    /// Only vwire's tunnel traffic goes to the sockets, everything else to the kernel
    /// ([`super::steer`]): for the node's uplink, shared with the host stack. Per interface.
    Steer(Steering),
}

impl XdpProgram {
    /// The program's name in the kernel (`bpftool prog`, `ip link`).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::SharedRedirect => "vwire_shared",
            Self::QueueRedirect => "vwire_xsk",
            Self::Steer(_) => "vwire_steer",
        }
    }
}

/// Size of the verifier log fetched when a load fails. The log of a refused load lists the
/// instructions of the paths explored up to the fault: 2.8 KiB for the steering program with its
/// UDP bounds check removed (kernel 6.18); a whole-program log of its 65 instructions and dozen
/// paths stays far below this.
const VERIFIER_LOG: usize = 256 * 1024;

/// Loads `insns` as an XDP program. The first attempt runs without a verifier log: with a log
/// requested, the kernel fails even a valid program with ENOSPC when the log outgrows the buffer
/// (seen on 6.18 with a 64-byte buffer; the steering program's success log is about 100 bytes).
/// If the load fails, a second attempt fetches the log, returned in [`AfXdpError::Verifier`].
pub(crate) fn load(ifname: &str, insns: &[BpfInsn], name: &str) -> Result<OwnedFd, AfXdpError> {
    let license = CString::new("GPL").unwrap_or_default();
    let attempt = |log: &mut [u8]| {
        let attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: len32(insns),
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: len32(log),
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            prog_name: name16(name),
            expected_attach_type: BPF_XDP,
            ..Default::default()
        };
        // SAFETY: `attr` is a live ProgLoadAttr; `insns`, `license` and `log` are live for the
        // call with the lengths given in it (the kernel writes at most `log_size` log bytes).
        unsafe {
            bpf(
                BPF_PROG_LOAD,
                (&attr as *const ProgLoadAttr).cast(),
                std::mem::size_of_val(&attr),
            )
        }
    };
    let source = match attempt(&mut []) {
        Ok(fd) => return Ok(owned(fd)),
        Err(e) => e,
    };
    let mut log = vec![0u8; VERIFIER_LOG];
    match attempt(&mut log) {
        // The first failure was transient (EAGAIN from a signal during verification).
        Ok(fd) => Ok(owned(fd)),
        Err(_) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(AfXdpError::Verifier {
                ifname: ifname.to_string(),
                source,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
    }
}

/// How the program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (native XDP).
    Native,
    /// In the generic skb path.
    Generic,
}

/// Creates a map; `what` names the step in errors.
pub(crate) fn map_create(
    ifname: &str,
    attr: &MapCreateAttr,
    what: &'static str,
) -> Result<OwnedFd, AfXdpError> {
    // SAFETY: `attr` is a live MapCreateAttr, which holds no pointers.
    unsafe {
        bpf(
            BPF_MAP_CREATE,
            (attr as *const MapCreateAttr).cast(),
            std::mem::size_of_val(attr),
        )
    }
    .map(owned)
    .map_err(|source| AfXdpError::Bpf {
        ifname: ifname.to_string(),
        what,
        source,
    })
}

/// `cmd` (lookup, update, delete, next key) on element `key` of map `map`; `value` is the value
/// read or written, or the next key, and may be null for a delete.
///
/// # Safety
///
/// `key` (null only for the first next key) and `value` point to live memory of the map's key
/// and value sizes (the key size for a next key), writable where the command writes.
unsafe fn map_elem(cmd: i64, map: &OwnedFd, key: *const u8, value: *mut u8) -> std::io::Result<()> {
    let a = MapElemAttr {
        map_fd: u32::try_from(map.as_raw_fd()).unwrap_or(u32::MAX),
        key: key as u64,
        value: value as u64,
        ..Default::default()
    };
    // SAFETY: `a` is a live MapElemAttr; the caller guarantees what its pointers point to.
    unsafe {
        bpf(
            cmd,
            (&a as *const MapElemAttr).cast(),
            std::mem::size_of_val(&a),
        )
    }
    .map(|_| ())
}

/// Sets element `key` of `map` to `value` (creating it if needed).
///
/// # Safety
///
/// `K` and `V` have exactly the key and value sizes `map` was created with.
pub(crate) unsafe fn map_update<K: Copy, V: Copy>(
    map: &OwnedFd,
    key: &K,
    value: &V,
) -> std::io::Result<()> {
    // SAFETY: key and value are live and of the map's sizes (the caller's promise);
    // BPF_MAP_UPDATE_ELEM only reads through `value`.
    unsafe {
        map_elem(
            BPF_MAP_UPDATE_ELEM,
            map,
            (key as *const K).cast(),
            (value as *const V).cast_mut().cast(),
        )
    }
}

/// Removes element `key` of `map` (ENOENT if there is none).
///
/// # Safety
///
/// `K` has exactly the key size `map` was created with.
pub(crate) unsafe fn map_delete<K: Copy>(map: &OwnedFd, key: &K) -> std::io::Result<()> {
    // SAFETY: the key is live and of the map's key size (the caller's promise); a delete reads
    // no value.
    unsafe {
        map_elem(
            BPF_MAP_DELETE_ELEM,
            map,
            (key as *const K).cast(),
            std::ptr::null_mut(),
        )
    }
}

/// The value of element `key` of `map`, `None` if there is none.
///
/// # Safety
///
/// `K` and `V` have exactly the key and value sizes `map` was created with, and every bit
/// pattern is a valid `V`.
pub(crate) unsafe fn map_lookup<K: Copy, V: Copy + Default>(
    map: &OwnedFd,
    key: &K,
) -> std::io::Result<Option<V>> {
    let mut v = V::default();
    // SAFETY: key and value are live and of the map's sizes (the caller's promise); the kernel
    // writes the value's bytes into `v`, any of which is a valid `V`.
    let rc = unsafe {
        map_elem(
            BPF_MAP_LOOKUP_ELEM,
            map,
            (key as *const K).cast(),
            (&mut v as *mut V).cast(),
        )
    };
    match rc {
        Ok(()) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The key after `key` in `map` (the first key for `None`), `None` at the end.
///
/// # Safety
///
/// `K` has exactly the key size `map` was created with, and every bit pattern is a valid `K`.
pub(crate) unsafe fn map_next_key<K: Copy + Default>(
    map: &OwnedFd,
    key: Option<&K>,
) -> std::io::Result<Option<K>> {
    let mut next = K::default();
    let key = key.map_or(std::ptr::null(), |k| (k as *const K).cast());
    // SAFETY: `key` is null (asking for the first key) or a live key of the map's size, and the
    // kernel writes one key into `next` (the caller's promise on `K`).
    let rc = unsafe { map_elem(BPF_MAP_GET_NEXT_KEY, map, key, (&mut next as *mut K).cast()) };
    match rc {
        Ok(()) => Ok(Some(next)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Attaches program `prog` to `ifindex` through a bpf_link: native mode if the driver supports
/// it (and `allow_native`), otherwise generic mode. EBUSY (the interface has an XDP program) is
/// [`AfXdpError::Busy`].
pub(crate) fn link_create(
    ifname: &str,
    ifindex: u32,
    prog: &OwnedFd,
    allow_native: bool,
) -> Result<(OwnedFd, XdpMode), AfXdpError> {
    let link = |flags: u32| {
        let a = LinkCreateAttr {
            prog_fd: u32::try_from(prog.as_raw_fd()).unwrap_or(u32::MAX),
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags,
        };
        // SAFETY: `a` is a live LinkCreateAttr, which holds no pointers.
        unsafe {
            bpf(
                BPF_LINK_CREATE,
                (&a as *const LinkCreateAttr).cast(),
                std::mem::size_of_val(&a),
            )
        }
    };
    let busy = |e: &std::io::Error| e.raw_os_error() == Some(libc::EBUSY);
    match allow_native.then(|| link(XDP_FLAGS_DRV_MODE)) {
        Some(Ok(fd)) => Ok((owned(fd), XdpMode::Native)),
        Some(Err(e)) if busy(&e) => Err(AfXdpError::Busy(ifname.to_string())),
        _ => match link(XDP_FLAGS_SKB_MODE) {
            Ok(fd) => Ok((owned(fd), XdpMode::Generic)),
            Err(e) if busy(&e) => Err(AfXdpError::Busy(ifname.to_string())),
            Err(source) => Err(AfXdpError::Bpf {
                ifname: ifname.to_string(),
                what: "attaching the XDP program (bpf_link)",
                source,
            }),
        },
    }
}

/// What an attachment redirects through.
#[derive(Debug)]
enum Target {
    /// A program and XSKMAP of the interface's own, keyed by receive queue.
    Own { _prog: OwnedFd, map: OwnedFd },
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
            MAX_QUEUES,
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
        let map = map_create(
            ifname,
            &MapCreateAttr {
                map_type: BPF_MAP_TYPE_XSKMAP,
                key_size: 4,
                value_size: 4,
                max_entries: MAX_QUEUES,
                map_name: name16("vwire_xsks"),
                ..Default::default()
            },
            "creating the XSKMAP",
        )?;
        let insns = match which {
            XdpProgram::Steer(s) => s.program(map.as_raw_fd())?,
            XdpProgram::QueueRedirect | XdpProgram::SharedRedirect => {
                program(map.as_raw_fd()).to_vec()
            }
        };
        let prog = load(ifname, &insns, which.name())?;
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
            // SAFETY: the XSKMAP was created with 4-byte keys and values, the sizes of u32.
            Target::Own { map, .. } => unsafe { map_update(map, &queue, &fd) },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_encodes_the_documented_instructions() {
        let p = program(7);
        assert_eq!(p.len(), 6);
        // dst r2, src r1 (ctx), offset of rx_queue_index in struct xdp_md
        assert_eq!((p[0].code, p[0].regs, p[0].off), (0x61, 0x12, 16));
        // the map fd goes in the first half of the wide load, marked as a map fd
        assert_eq!((p[1].code, p[1].regs, p[1].imm), (0x18, 0x11, 7));
        assert_eq!(p[2], BpfInsn::default());
        assert_eq!((p[3].regs, p[3].imm), (3, XDP_PASS));
        assert_eq!(p[4].imm, FN_REDIRECT_MAP);
        assert_eq!(p[5].code, 0x95);
    }

    #[test]
    fn names_are_sanitised_and_bounded() {
        assert_eq!(&name16("a-b.c")[..5], b"a_b_c");
        assert_eq!(name16("0123456789abcdefXYZ")[15], 0);
    }
}
