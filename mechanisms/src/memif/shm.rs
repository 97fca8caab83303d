//! Shared memory of a memif connection: regions, ring headers and descriptors.
//!
//! Layout (spec §5.3, 64-byte cache line, as every x86 build of VPP, libmemif and DPDK):
//! a ring header is 128 bytes (`cookie` u32 at 0, `flags` u16 at 4, `head` u16 at 6, `tail` u16
//! at 64), followed by `2^log2` descriptors of 16 bytes (`flags` u16 at 0, `region` u16 at 2,
//! `length` u32 at 4, `offset` u32 at 8, `metadata` u32 at 12).
//!
//! Threat model: the peer is another pod and may write anything into the shared memory at any
//! time. So nothing here forms a Rust reference to shared bytes: indices are atomics, descriptors
//! are read with volatile loads into local copies, and every (region, offset, length) a peer
//! could have written is checked by [`Regions::resolve`] before any copy. A region can only grow
//! from the owner's view: the client seals its memfd against shrinking, and the server maps the
//! size announced in ADD_REGION and checks it against the file's size, so no access can fault.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};

use super::MemifError;

/// Ring header size with a 64-byte cache line.
pub const RING_HEADER: usize = 128;
/// Offset of `flags` in the ring header.
pub const RING_FLAGS: usize = 4;
/// Offset of `head` in the ring header.
pub const RING_HEAD: usize = 6;
/// Offset of `tail` in the ring header.
pub const RING_TAIL: usize = 64;
/// Descriptor size.
pub const DESC_SIZE: usize = 16;
/// `flags` bit of a ring: its packet consumer polls and wants no interrupts.
pub const RING_FLAG_MASK_INT: u16 = 1;
/// `flags` bit of a descriptor: more segments of the packet follow.
pub const DESC_FLAG_NEXT: u16 = 1;
/// Largest log2 ring size (spec §10).
pub const MAX_LOG2_RING: u8 = 14;

/// Bytes of one ring with `2^log2` descriptors.
pub fn ring_bytes(log2: u8) -> usize {
    RING_HEADER + (DESC_SIZE << log2)
}

/// A descriptor, copied out of shared memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    /// `DESC_FLAG_NEXT` or 0.
    pub flags: u16,
    /// Region index.
    pub region: u16,
    /// Capacity posted, or bytes of data.
    pub length: u32,
    /// Offset of the data from the region base.
    pub offset: u32,
}

/// One memory-mapped region.
#[derive(Debug)]
pub struct Region {
    base: *mut u8,
    len: usize,
    /// The memfd, kept so that the client can send it and both sides close it at teardown.
    fd: OwnedFd,
}

// SAFETY: a Region owns its mapping; the raw pointer is only dereferenced through the checked
// accessors below, from whichever single thread uses the session at a time (module docs of
// `port`), or from the control thread before the session is published.
unsafe impl Send for Region {}
// SAFETY: see Send; shared access never creates references into the mapping.
unsafe impl Sync for Region {}

impl Region {
    /// Creates a sealed memfd region of `len` bytes and maps it (the client's side).
    pub fn create(name: &str, len: usize) -> Result<Self, MemifError> {
        let cname = std::ffi::CString::new(name).unwrap_or_default();
        // SAFETY: memfd_create with a valid C string; the result is checked and owned.
        let raw = unsafe {
            libc::memfd_create(cname.as_ptr(), libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC)
        };
        if raw < 0 {
            return Err(MemifError::io("memfd_create"));
        }
        // SAFETY: raw is a fresh fd owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let size = libc::off_t::try_from(len)
            .map_err(|_| MemifError::Protocol("region too large".into()))?;
        // SAFETY: plain syscalls on our own fd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
            return Err(MemifError::io("ftruncate of the region memfd"));
        }
        // SAFETY: as above. Sealed after sizing: the server can then trust the size.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) } != 0 {
            return Err(MemifError::io("sealing the region memfd"));
        }
        Self::map(fd, len)
    }

    /// Maps `len` bytes of `fd` (the server's side, with the size from ADD_REGION). Refuses a
    /// file shorter than `len`, which would fault on access.
    pub fn map(fd: OwnedFd, len: usize) -> Result<Self, MemifError> {
        if len == 0 {
            return Err(MemifError::Protocol("empty region".into()));
        }
        // SAFETY: fstat into a zeroed, live stat struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(MemifError::io("fstat of a region fd"));
        }
        if usize::try_from(st.st_size).unwrap_or(0) < len {
            return Err(MemifError::Protocol(format!(
                "region fd holds {} bytes, fewer than the {len} announced",
                st.st_size
            )));
        }
        // SAFETY: a fresh shared mapping of the region file; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(MemifError::io("mmap of a region"));
        }
        Ok(Self {
            base: ptr.cast(),
            len,
            fd,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if empty (never, once mapped).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The region's fd.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Start address.
    pub fn base(&self) -> *mut u8 {
        self.base
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `map`; the session owning this region is dropped
        // only after every worker has passed a quiescent point (see `port`).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// The regions of a connection, indexed as in ADD_REGION.
#[derive(Debug, Default)]
pub struct Regions(pub Vec<Region>);

impl Regions {
    /// The address of `len` bytes at `offset` in region `region`, if all of it lies inside the
    /// region. This is the descriptor check: it runs before every copy from or to a buffer
    /// the peer described.
    #[inline]
    pub fn resolve(&self, region: u16, offset: u32, len: u32) -> Option<*mut u8> {
        let r = self.0.get(usize::from(region))?;
        let end = u64::from(offset) + u64::from(len);
        if end > r.len as u64 {
            return None;
        }
        // SAFETY: offset + len <= region length (checked above), so the pointer stays inside
        // (or one past the end of) the mapping.
        Some(unsafe { r.base.add(offset as usize) })
    }
}

/// A ring inside a mapped region. Holds a raw pointer: valid while the owning session lives.
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    base: *mut u8,
    log2: u8,
}

// SAFETY: see `Region`: a Ring points into a region owned by the same session.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// The ring at `offset` of `region`, if the whole ring fits and is aligned for its atomics.
    pub fn locate(
        regions: &Regions,
        region: u16,
        offset: u32,
        log2: u8,
    ) -> Result<Self, MemifError> {
        if log2 > MAX_LOG2_RING {
            return Err(MemifError::Protocol(format!(
                "ring size 2^{log2} is above 2^{MAX_LOG2_RING}"
            )));
        }
        if offset % 8 != 0 {
            return Err(MemifError::Protocol(format!(
                "ring offset {offset} is not 8-byte aligned"
            )));
        }
        let len = u32::try_from(ring_bytes(log2)).unwrap_or(u32::MAX);
        let base = regions.resolve(region, offset, len).ok_or_else(|| {
            MemifError::Protocol(format!(
                "ring at region {region} offset {offset} does not fit the region"
            ))
        })?;
        Ok(Self { base, log2 })
    }

    /// Number of descriptors.
    #[inline]
    pub fn size(&self) -> u16 {
        // log2 <= 14, so this fits.
        1u16 << self.log2
    }

    #[inline]
    fn word(&self, at: usize) -> &AtomicU16 {
        // SAFETY: `at` is a 2-byte aligned offset inside the 128-byte header of a ring that
        // `locate` checked to lie in the mapping, with an 8-byte aligned start.
        unsafe { &*(self.base.add(at).cast::<AtomicU16>()) }
    }

    /// The `head` index (written by the client).
    #[inline]
    pub fn head(&self) -> &AtomicU16 {
        self.word(RING_HEAD)
    }

    /// The `tail` index (written by the server).
    #[inline]
    pub fn tail(&self) -> &AtomicU16 {
        self.word(RING_TAIL)
    }

    /// The `flags` word (written by the ring's packet consumer).
    #[inline]
    pub fn flags(&self) -> &AtomicU16 {
        self.word(RING_FLAGS)
    }

    /// Reads the cookie.
    pub fn cookie(&self) -> u32 {
        // SAFETY: the cookie is the first 4 bytes of a checked ring header, 8-byte aligned.
        unsafe { self.base.cast::<u32>().read_volatile() }
    }

    /// Initialises the header (client side, before the peer sees the ring).
    pub fn init(&self, cookie: u32) {
        // SAFETY: as in `cookie`.
        unsafe { self.base.cast::<u32>().write_volatile(cookie) };
        self.flags().store(0, Ordering::Relaxed);
        self.head().store(0, Ordering::Relaxed);
        self.tail().store(0, Ordering::Relaxed);
    }

    #[inline]
    fn desc_ptr(&self, idx: u16) -> *mut u8 {
        let slot = usize::from(idx & (self.size() - 1));
        // SAFETY: slot < size, so the descriptor lies inside the checked ring.
        unsafe { self.base.add(RING_HEADER + slot * DESC_SIZE) }
    }

    /// Reads descriptor `idx` (masked to the ring).
    #[inline]
    pub fn read_desc(&self, idx: u16) -> Desc {
        let p = self.desc_ptr(idx);
        // SAFETY: 16 bytes inside the ring; volatile reads copy what the peer wrote without
        // forming references to shared memory. Fields are naturally aligned.
        unsafe {
            Desc {
                flags: p.cast::<u16>().read_volatile(),
                region: p.add(2).cast::<u16>().read_volatile(),
                length: p.add(4).cast::<u32>().read_volatile(),
                offset: p.add(8).cast::<u32>().read_volatile(),
            }
        }
    }

    /// Writes descriptor `idx` (masked to the ring); metadata is written as 0.
    #[inline]
    pub fn write_desc(&self, idx: u16, d: Desc) {
        let p = self.desc_ptr(idx);
        // SAFETY: as in read_desc.
        unsafe {
            p.cast::<u16>().write_volatile(d.flags);
            p.add(2).cast::<u16>().write_volatile(d.region);
            p.add(4).cast::<u32>().write_volatile(d.length);
            p.add(8).cast::<u32>().write_volatile(d.offset);
            p.add(12).cast::<u32>().write_volatile(0);
        }
    }

    /// Writes only the `flags` and `length` of descriptor `idx`, as a server does.
    #[inline]
    pub fn write_len(&self, idx: u16, flags: u16, length: u32) {
        let p = self.desc_ptr(idx);
        // SAFETY: as in read_desc.
        unsafe {
            p.cast::<u16>().write_volatile(flags);
            p.add(4).cast::<u32>().write_volatile(length);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_geometry_matches_the_spec_example() {
        // Spec §5.2: 1+1 rings, log2 10, 64-byte cache line: 16 512 bytes a ring.
        assert_eq!(ring_bytes(10), 16_512);
    }

    #[test]
    fn resolve_checks_every_bound() {
        let regions = Regions(vec![Region::create("t", 4096).unwrap()]);
        assert!(regions.resolve(0, 0, 4096).is_some());
        assert!(regions.resolve(0, 4095, 1).is_some());
        assert!(regions.resolve(0, 4095, 2).is_none());
        assert!(regions.resolve(0, u32::MAX, u32::MAX).is_none());
        assert!(regions.resolve(1, 0, 1).is_none());
    }

    #[test]
    fn ring_layout_offsets_are_the_spec_ones() {
        let regions = Regions(vec![Region::create("t", ring_bytes(2)).unwrap()]);
        let ring = Ring::locate(&regions, 0, 0, 2).unwrap();
        ring.init(0x03E3_1F20);
        ring.head().store(0x1234, Ordering::Relaxed);
        ring.tail().store(0x5678, Ordering::Relaxed);
        ring.flags().store(1, Ordering::Relaxed);
        ring.write_desc(
            5,
            Desc {
                flags: 1,
                region: 2,
                length: 3,
                offset: 4,
            },
        );
        let base = regions.0[0].base();
        // SAFETY: reading back inside our own private test mapping.
        let bytes = unsafe { std::slice::from_raw_parts(base, ring_bytes(2)) };
        assert_eq!(&bytes[0..4], &0x03E3_1F20u32.to_le_bytes());
        assert_eq!(&bytes[4..6], &[1, 0]);
        assert_eq!(&bytes[6..8], &[0x34, 0x12]);
        assert_eq!(&bytes[64..66], &[0x78, 0x56]);
        // descriptor 5 & 3 = slot 1, at 128 + 16
        assert_eq!(
            &bytes[144..160],
            &[1, 0, 2, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            ring.read_desc(1),
            Desc {
                flags: 1,
                region: 2,
                length: 3,
                offset: 4
            }
        );
    }

    #[test]
    fn rings_that_do_not_fit_or_are_misaligned_are_refused() {
        let regions = Regions(vec![Region::create("t", ring_bytes(4)).unwrap()]);
        assert!(Ring::locate(&regions, 0, 0, 4).is_ok());
        assert!(Ring::locate(&regions, 0, 8, 4).is_err());
        assert!(Ring::locate(&regions, 0, 0, 5).is_err());
        assert!(Ring::locate(&regions, 0, 4, 1).is_err());
        assert!(Ring::locate(&regions, 1, 0, 1).is_err());
        assert!(Ring::locate(&regions, 0, 0, 15).is_err());
    }

    #[test]
    fn a_short_file_is_refused() {
        let r = Region::create("t", 4096).unwrap();
        let fd = r.fd().try_clone().unwrap();
        assert!(Region::map(fd, 8192).is_err());
    }
}
