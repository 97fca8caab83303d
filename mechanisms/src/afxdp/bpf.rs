//! vwire's XDP programs, their XSKMAP, and the bpf_link that attaches them.
//!
//! Two programs exist ([`XdpProgram`]): the default one below, for interfaces vwire owns, and
//! the uplink's steering program ([`super::steer`]), for an interface shared with the host. Both
//! are loaded, and their verifier errors reported, by the same code here.
//!
//! The default program is six instructions, assembled here so that vwire needs neither clang
//! nor libbpf:
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
//! program, nothing is taken from queues vwire does not serve.
//!
//! The program is attached with BPF_LINK_CREATE, not the legacy netlink attach: the link is an fd
//! of this process, so when vwire exits or crashes the kernel detaches the program by itself.
//! Attaching fails with EBUSY if the interface already has an XDP program: vwire never replaces
//! somebody else's.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::abi::*;
use super::steer::Steering;
use super::AfXdpError;

/// `usize` → `u32` for lengths of fixed, small arrays handed to the kernel.
fn len32<T>(v: &[T]) -> u32 {
    u32::try_from(v.len()).unwrap_or(u32::MAX)
}

/// Maximum queues per interface the map can serve.
const MAX_QUEUES: u32 = 64;

const BPF_PSEUDO_MAP_FD: u8 = 1;
const XDP_PASS: i32 = 2;
const FN_REDIRECT_MAP: i32 = 51;

fn bpf(cmd: i64, attr: *const u8, size: usize) -> std::io::Result<i32> {
    // SAFETY: `attr` points to a live, zero-padded bpf_attr prefix of `size` bytes; the kernel
    // reads only `size` bytes and checks that fields it does not know are zero.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    i32::try_from(rc).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn name16(s: &str) -> [u8; 16] {
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

/// Which XDP program a port's interface gets. Both redirect through the same XSKMAP, keyed by
/// receive queue, and pass frames of queues with no socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpProgram {
    /// Every frame of a served queue goes to its socket ([`program`]): for an interface vwire
    /// owns, such as the host side of an NSM veth.
    #[default]
    QueueRedirect,
    /// Only vwire's tunnel traffic goes to the sockets, everything else to the kernel
    /// ([`super::steer`]): for the node's uplink, shared with the host stack.
    Steer(Steering),
}

impl XdpProgram {
    /// The program's instructions with the XSKMAP `map_fd` patched in.
    pub fn instructions(&self, map_fd: i32) -> Result<Vec<BpfInsn>, AfXdpError> {
        match self {
            Self::QueueRedirect => Ok(program(map_fd).to_vec()),
            Self::Steer(s) => s.program(map_fd),
        }
    }

    /// The program's name in the kernel (`bpftool prog`, `ip link`).
    fn name(&self) -> &'static str {
        match self {
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
fn load(ifname: &str, insns: &[BpfInsn], name: &str) -> Result<OwnedFd, AfXdpError> {
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
        bpf(
            BPF_PROG_LOAD,
            (&attr as *const ProgLoadAttr).cast(),
            std::mem::size_of_val(&attr),
        )
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

/// A loaded program and its XSKMAP, attached to one interface while this value lives.
#[derive(Debug)]
pub struct XdpAttachment {
    // Field order is drop order: the link goes first, detaching the program.
    link: OwnedFd,
    _prog: OwnedFd,
    map: OwnedFd,
    mode: XdpMode,
}

impl XdpAttachment {
    /// Loads the default program ([`XdpProgram::QueueRedirect`]) and attaches it to `ifindex`:
    /// native mode if the driver supports it (and `allow_native`), otherwise generic mode.
    pub fn attach(ifname: &str, ifindex: u32, allow_native: bool) -> Result<Self, AfXdpError> {
        Self::attach_program(ifname, ifindex, allow_native, &XdpProgram::QueueRedirect)
    }

    /// Loads `program` and attaches it to `ifindex`, as [`XdpAttachment::attach`] does.
    pub fn attach_program(
        ifname: &str,
        ifindex: u32,
        allow_native: bool,
        program: &XdpProgram,
    ) -> Result<Self, AfXdpError> {
        let err = |what: &'static str| {
            move |source| AfXdpError::Bpf {
                ifname: ifname.to_string(),
                what,
                source,
            }
        };
        let map_attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_XSKMAP,
            key_size: 4,
            value_size: 4,
            max_entries: MAX_QUEUES,
            map_name: name16("vwire_xsks"),
            ..Default::default()
        };
        let map = owned(
            bpf(
                BPF_MAP_CREATE,
                (&map_attr as *const MapCreateAttr).cast(),
                std::mem::size_of_val(&map_attr),
            )
            .map_err(err("creating the XSKMAP"))?,
        );
        let insns = program.instructions(map.as_raw_fd())?;
        let prog = load(ifname, &insns, program.name())?;
        let link = |flags: u32| {
            let a = LinkCreateAttr {
                prog_fd: prog.as_raw_fd() as u32,
                target_ifindex: ifindex,
                attach_type: BPF_XDP,
                flags,
            };
            bpf(
                BPF_LINK_CREATE,
                (&a as *const LinkCreateAttr).cast(),
                std::mem::size_of_val(&a),
            )
        };
        let (link, mode) = match allow_native.then(|| link(XDP_FLAGS_DRV_MODE)) {
            Some(Ok(fd)) => (owned(fd), XdpMode::Native),
            Some(Err(e)) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(AfXdpError::Busy(ifname.to_string()))
            }
            _ => match link(XDP_FLAGS_SKB_MODE) {
                Ok(fd) => (owned(fd), XdpMode::Generic),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    return Err(AfXdpError::Busy(ifname.to_string()))
                }
                Err(e) => return Err(err("attaching the XDP program (bpf_link)")(e)),
            },
        };
        Ok(Self {
            link,
            _prog: prog,
            map,
            mode,
        })
    }

    /// The mode the program runs in.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Steers queue `queue` of the interface to the AF_XDP socket `xsk_fd`.
    pub fn insert(&self, queue: u32, xsk_fd: i32) -> std::io::Result<()> {
        let key = queue;
        let value = xsk_fd as u32;
        let a = MapElemAttr {
            map_fd: self.map.as_raw_fd() as u32,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            ..Default::default()
        };
        bpf(
            BPF_MAP_UPDATE_ELEM,
            (&a as *const MapElemAttr).cast(),
            std::mem::size_of_val(&a),
        )
        .map(|_| ())
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
