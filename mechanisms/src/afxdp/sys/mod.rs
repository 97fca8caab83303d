//! The system layer of AF_XDP: the bpf(2) syscall and what is built directly on it (loading a
//! program with its verifier log, attaching it through a bpf_link, typed maps in [`maps`]), and
//! the interface lookups every layer above needs. No knowledge of any particular program.
//!
//! Every program is attached with BPF_LINK_CREATE, not the legacy netlink attach: the link is an
//! fd of this process, so the program leaves the interface when its owner drops the fd, or when
//! vwire exits or crashes. Attaching fails with EBUSY if the interface already has an XDP
//! program: vwire never replaces somebody else's.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::abi::*;
use super::error::AfXdpError;

pub(crate) mod maps;

/// `usize` → `u32` for lengths of fixed, small arrays handed to the kernel.
fn len32<T>(v: &[T]) -> u32 {
    u32::try_from(v.len()).unwrap_or(u32::MAX)
}

/// bpf(2) with the attribute struct `attr`, a prefix of `union bpf_attr` passed with its size.
///
/// # Safety
///
/// `A` is the zero-padded bpf_attr prefix of command `cmd`, and every pointer in `attr`
/// (instructions, license, log buffer, key, value) points to live memory of the size the
/// command reads or writes there.
pub(crate) unsafe fn bpf<A>(cmd: i64, attr: &A) -> std::io::Result<i32> {
    let (ptr, size) = ((attr as *const A).cast::<u8>(), std::mem::size_of_val(attr));
    // SAFETY: `attr` is live for the call and `size` bytes long; the caller guarantees the
    // memory it points to (see above). The kernel reads only `size` bytes of it and checks that
    // fields it does not know are zero.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, ptr, size) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    i32::try_from(rc).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// [`bpf`] for a command that writes results back into its attribute struct (BPF_PROG_QUERY).
///
/// # Safety
///
/// As for [`bpf`].
pub(crate) unsafe fn bpf_mut<A>(cmd: i64, attr: &mut A) -> std::io::Result<i32> {
    let (ptr, size) = ((attr as *mut A).cast::<u8>(), std::mem::size_of_val(attr));
    // SAFETY: `attr` is live, exclusively borrowed and `size` bytes long, so the kernel may write
    // into it; the caller guarantees the memory its pointers point to.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, ptr, size) };
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

/// A kernel object name: at most 15 bytes of `[A-Za-z0-9_]` (others become `_`), NUL-padded.
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

/// Size of the verifier log fetched when a load fails. The log of a refused load lists the
/// instructions of the paths explored up to the fault: 2.8 KiB for the steering program with its
/// UDP bounds check removed (kernel 6.18); a whole-program log of its 65 instructions and dozen
/// paths stays far below this.
const VERIFIER_LOG: usize = 256 * 1024;

/// Loads `insns` as an XDP program. The first attempt runs without a verifier log: with a log
/// requested, the kernel fails even a valid program with ENOSPC when the log outgrows the buffer
/// (seen on 6.18 with a 64-byte buffer; the steering program's success log is about 100 bytes).
/// If the load fails, a second attempt fetches the log, returned in [`AfXdpError::Verifier`].
pub(crate) fn prog_load(
    ifname: &str,
    insns: &[BpfInsn],
    name: &str,
) -> Result<OwnedFd, AfXdpError> {
    prog_load_as(ifname, insns, name, BPF_PROG_TYPE_XDP, BPF_XDP)
}

/// [`prog_load`] for a program of `prog_type` expecting `attach_type`.
pub(crate) fn prog_load_as(
    ifname: &str,
    insns: &[BpfInsn],
    name: &str,
    prog_type: u32,
    attach_type: u32,
) -> Result<OwnedFd, AfXdpError> {
    let license = CString::new("GPL").unwrap_or_default();
    let attempt = |log: &mut [u8]| {
        let attr = ProgLoadAttr {
            prog_type,
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
            expected_attach_type: attach_type,
            ..Default::default()
        };
        // SAFETY: `attr` is a live ProgLoadAttr; `insns`, `license` and `log` are live for the
        // call with the lengths given in it (the kernel writes at most `log_size` log bytes).
        unsafe { bpf(BPF_PROG_LOAD, &attr) }
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
        unsafe { bpf(BPF_LINK_CREATE, &a) }
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

/// A descriptor of the program or map with kernel id `id` (`cmd`: BPF_PROG_GET_FD_BY_ID or
/// BPF_MAP_GET_FD_BY_ID).
pub(crate) fn fd_by_id(cmd: i64, id: u32) -> std::io::Result<OwnedFd> {
    let a = GetFdByIdAttr {
        id,
        ..Default::default()
    };
    // SAFETY: `a` is a live GetFdByIdAttr, which holds no pointers.
    unsafe { bpf(cmd, &a) }.map(owned)
}

/// What the kernel tells of the program or map `fd` (`T`: `ProgInfo` or `MapInfo`, whose
/// prefix the kernel fills; fields it has no room for are left out).
pub(crate) fn obj_info<T: maps::Plain>(fd: &OwnedFd) -> std::io::Result<T> {
    let mut info = T::default();
    let a = ObjInfoAttr {
        bpf_fd: u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX),
        info_len: u32::try_from(std::mem::size_of::<T>()).unwrap_or(0),
        info: (&mut info as *mut T) as u64,
    };
    // SAFETY: `a` points to `info`, live and writable for `info_len` bytes; any bytes the
    // kernel writes make a valid `T` (`Plain`). Pointers inside `info` (map ids) are zero, so
    // the kernel writes nothing through them.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &a) }?;
    Ok(info)
}

/// The program `fd`'s information and the ids of its maps (at most 8: vwire's programs use one
/// or two).
pub(crate) fn prog_info(fd: &OwnedFd) -> std::io::Result<(ProgInfo, Vec<u32>)> {
    let mut ids = [0u32; 8];
    let mut info = ProgInfo {
        nr_map_ids: len32(&ids),
        map_ids: ids.as_mut_ptr() as u64,
        ..Default::default()
    };
    let a = ObjInfoAttr {
        bpf_fd: u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX),
        info_len: u32::try_from(std::mem::size_of::<ProgInfo>()).unwrap_or(0),
        info: (&mut info as *mut ProgInfo) as u64,
    };
    // SAFETY: `a` points to `info`, live and writable for `info_len` bytes, any bytes of which
    // make a valid ProgInfo; `info.map_ids` points to `ids`, live and writable for the
    // `nr_map_ids` entries the kernel writes at most.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &a) }?;
    let n = usize::try_from(info.nr_map_ids).unwrap_or(0).min(ids.len());
    Ok((info, ids[..n].to_vec()))
}

/// Index of a network interface by name, in the calling thread's network namespace.
pub fn ifindex(ifname: &str) -> Option<u32> {
    let c = std::ffi::CString::new(ifname).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Number of receive queues the interface uses (`/sys/class/net/<if>/queues/rx-*`), at least 1.
pub fn rx_queue_count(ifname: &str) -> u32 {
    let dir = format!("/sys/class/net/{ifname}/queues");
    let n = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(0);
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitised_and_bounded() {
        assert_eq!(&name16("a-b.c")[..5], b"a_b_c");
        assert_eq!(name16("0123456789abcdefXYZ")[15], 0);
    }
}
