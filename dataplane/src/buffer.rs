//! The packet buffer pool.
//!
//! A pool is one anonymous, page-aligned memory region cut into equal frames (4 KiB, the AF_XDP
//! chunk, unless the pool is built larger for jumbo frames between memif ports). A packet is
//! a [`BufIdx`]: the index of its frame. Per-frame metadata (where the packet starts inside the
//! frame and how long it is) lives in a side array, so the frame itself holds only packet bytes.
//! The same region is registered as the AF_XDP UMEM of every AF_XDP port of the worker that owns
//! the pool, so frames move between ports without a copy.
//!
//! Contracts:
//! - A pool belongs to one worker; `&mut BufferPool` is the proof of ownership. Nothing here
//!   locks or allocates after [`BufferPool::new`].
//! - Every frame is in exactly one place at a time: the free stack, a port's ring, or a burst in
//!   flight. [`BufferPool::free`] on a frame that is already free is a bug of the caller; debug
//!   builds catch it.
//! - A packet starts at [`HEADROOM`] or later inside its frame, so encapsulation can prepend up to
//!   [`HEADROOM`] bytes without moving it.

use std::ptr::NonNull;

/// Default size of one frame. 4096 is the largest chunk AF_XDP accepts in aligned mode and fits an
/// MTU of 3.5 KB after the headroom, which is also the most native XDP on veth accepts; a pool
/// that serves AF_XDP must use it.
pub const FRAME_SIZE: usize = 4096;

/// Frame size for workers without AF_XDP ports: room for a 9000-byte frame (plus VLAN tags) after
/// the headroom.
pub const JUMBO_FRAME_SIZE: usize = 10240;

/// Bytes kept free in front of every received packet. AF_XDP places received packets 256 bytes
/// into the frame (XDP_PACKET_HEADROOM), and 256 bytes hold outer Ethernet + IPv6 + an SRH with 12
/// segments (14 + 40 + 8 + 16 * 12 = 254), more than the VXLAN/SRv6 encapsulations need.
pub const HEADROOM: usize = 256;

/// Index of a frame in a [`BufferPool`].
pub type BufIdx = u32;

/// Where the packet sits inside its frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct BufMeta {
    /// Offset of the first packet byte from the start of the frame.
    pub offset: u16,
    /// Packet length in bytes.
    pub len: u16,
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// a pool needs between 1 and 2^20 frames
    #[error("a pool needs between 1 and {max} frames, not {0}", max = MAX_FRAMES)]
    BadSize(u32),
    /// frame sizes are multiples of 1 KiB from 2 KiB to 32 KiB
    #[error("a frame size must be a multiple of 1024 from 2048 to 32768, not {0}")]
    BadFrameSize(usize),
    /// mmap of the pool region failed
    #[error("cannot map {bytes} bytes for the packet pool: {source}")]
    Map {
        /// the size asked for
        bytes: usize,
        /// the system error
        source: std::io::Error,
    },
}

/// Largest pool: 2^20 frames of 4 KiB is 4 GiB, far beyond any per-worker need.
pub const MAX_FRAMES: u32 = 1 << 20;

/// The memory of a pool, as AF_XDP needs it for UMEM registration.
#[derive(Clone, Copy, Debug)]
pub struct PoolRegion {
    /// Start address of the region.
    pub base: usize,
    /// Length in bytes (`frames * FRAME_SIZE`).
    pub len: usize,
    /// Number of frames.
    pub frames: u32,
    /// Bytes per frame.
    pub frame_size: usize,
}

/// A per-worker pool of packet frames. See the module docs.
pub struct BufferPool {
    // hot: accessed by the worker every burst
    base: NonNull<u8>,
    meta: Box<[BufMeta]>,
    free: Vec<BufIdx>,
    frame_size: usize,
    // cold
    frames: u32,
    #[cfg(debug_assertions)]
    is_free: Vec<bool>,
}

// SAFETY: the pool exclusively owns its mapping; moving it to another thread moves that ownership.
// It is not Sync: all access goes through `&mut self` or `&self` on the owning thread.
unsafe impl Send for BufferPool {}

impl BufferPool {
    /// Maps a region of `frames` frames of [`FRAME_SIZE`], all free.
    pub fn new(frames: u32) -> Result<Self, BufferError> {
        Self::with_frame_size(frames, FRAME_SIZE)
    }

    /// Maps a region of `frames` frames of `frame_size` bytes, all free.
    pub fn with_frame_size(frames: u32, frame_size: usize) -> Result<Self, BufferError> {
        if frames == 0 || frames > MAX_FRAMES {
            return Err(BufferError::BadSize(frames));
        }
        if frame_size % 1024 != 0 || !(2048..=32768).contains(&frame_size) {
            return Err(BufferError::BadFrameSize(frame_size));
        }
        let bytes = frames as usize * frame_size;
        // SAFETY: an anonymous private mapping with no address hint touches no existing memory.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(BufferError::Map {
                bytes,
                source: std::io::Error::last_os_error(),
            });
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(BufferError::BadSize(frames))?;
        // Frames are handed out from the top of the stack: low indices first.
        let free: Vec<BufIdx> = (0..frames).rev().collect();
        Ok(Self {
            base,
            meta: vec![BufMeta::default(); frames as usize].into_boxed_slice(),
            free,
            frame_size,
            frames,
            #[cfg(debug_assertions)]
            is_free: vec![true; frames as usize],
        })
    }

    /// The region, for UMEM registration.
    pub fn region(&self) -> PoolRegion {
        PoolRegion {
            base: self.base.as_ptr() as usize,
            len: self.frames as usize * self.frame_size,
            frames: self.frames,
            frame_size: self.frame_size,
        }
    }

    /// Bytes per frame.
    #[inline]
    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// The largest packet a frame holds after the headroom.
    #[inline]
    pub fn max_packet(&self) -> usize {
        self.frame_size - HEADROOM
    }

    /// Total number of frames.
    pub fn capacity(&self) -> u32 {
        self.frames
    }

    /// Number of free frames.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Takes one free frame.
    #[inline]
    pub fn alloc(&mut self) -> Option<BufIdx> {
        let b = self.free.pop()?;
        #[cfg(debug_assertions)]
        {
            self.is_free[b as usize] = false;
        }
        Some(b)
    }

    /// Fills `out` with free frames, as many as there are; returns how many.
    #[inline]
    pub fn alloc_burst(&mut self, out: &mut [BufIdx]) -> usize {
        let n = out.len().min(self.free.len());
        let start = self.free.len() - n;
        out[..n].copy_from_slice(&self.free[start..]);
        self.free.truncate(start);
        #[cfg(debug_assertions)]
        for &b in &out[..n] {
            self.is_free[b as usize] = false;
        }
        n
    }

    /// Returns a frame to the pool.
    #[inline]
    pub fn free(&mut self, b: BufIdx) {
        #[cfg(debug_assertions)]
        {
            assert!(!self.is_free[b as usize], "double free of buffer {b}");
            self.is_free[b as usize] = true;
        }
        debug_assert!(self.free.len() < self.free.capacity());
        // Never reallocates: the stack's capacity is the number of frames, and every frame is
        // pushed at most once (checked above in debug builds).
        self.free.push(b);
    }

    /// Returns several frames to the pool.
    #[inline]
    pub fn free_burst(&mut self, bufs: &[BufIdx]) {
        for &b in bufs {
            self.free(b);
        }
    }

    /// Maps a UMEM address (frame start plus offset) back to its frame and offset. Returns `None`
    /// if the address is outside the pool.
    #[inline]
    pub fn locate(&self, addr: u64) -> Option<(BufIdx, u16)> {
        let fs = self.frame_size as u64;
        let idx = addr / fs;
        if idx >= u64::from(self.frames) {
            return None;
        }
        #[allow(clippy::cast_possible_truncation)] // below frames, and below the frame size
        Some((idx as BufIdx, (addr % fs) as u16))
    }

    /// The UMEM address of the start of frame `b`.
    #[inline]
    pub fn frame_addr(&self, b: BufIdx) -> u64 {
        u64::from(b) * self.frame_size as u64
    }

    /// Metadata of frame `b`.
    #[inline]
    pub fn meta(&self, b: BufIdx) -> BufMeta {
        self.meta[b as usize]
    }

    /// Sets where the packet of frame `b` is. The packet must fit inside the frame.
    #[inline]
    pub fn set_meta(&mut self, b: BufIdx, offset: usize, len: usize) {
        debug_assert!(offset + len <= self.frame_size);
        #[allow(clippy::cast_possible_truncation)] // both below FRAME_SIZE, checked by callers
        {
            self.meta[b as usize] = BufMeta {
                offset: offset as u16,
                len: len as u16,
            };
        }
    }

    /// The whole frame `b`.
    #[inline]
    pub fn frame(&self, b: BufIdx) -> &[u8] {
        assert!(b < self.frames);
        // SAFETY: `b` is inside the region (checked above) and the region lives as long as self;
        // shared access to self means no `&mut` to this frame exists.
        unsafe {
            std::slice::from_raw_parts(
                self.base.as_ptr().add(b as usize * self.frame_size),
                self.frame_size,
            )
        }
    }

    /// The whole frame `b`, writable.
    #[inline]
    pub fn frame_mut(&mut self, b: BufIdx) -> &mut [u8] {
        assert!(b < self.frames);
        // SAFETY: as in `frame`; `&mut self` makes this the only reference into the region.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.as_ptr().add(b as usize * self.frame_size),
                self.frame_size,
            )
        }
    }

    /// The packet bytes of frame `b`.
    #[inline]
    pub fn packet(&self, b: BufIdx) -> &[u8] {
        let m = self.meta(b);
        let start = usize::from(m.offset);
        &self.frame(b)[start..start + usize::from(m.len)]
    }

    /// The packet bytes of frame `b`, writable.
    #[inline]
    pub fn packet_mut(&mut self, b: BufIdx) -> &mut [u8] {
        let m = self.meta(b);
        let start = usize::from(m.offset);
        &mut self.frame_mut(b)[start..start + usize::from(m.len)]
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what mmap returned in `new`, and nothing borrows the region
        // once the pool is being dropped. The kernel keeps its own reference to pages that a still
        // open AF_XDP socket pinned, so this cannot pull memory from under the kernel.
        unsafe {
            libc::munmap(
                self.base.as_ptr().cast(),
                self.frames as usize * self.frame_size,
            );
        }
    }
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("frames", &self.frames)
            .field("available", &self.free.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_round_trip_keeps_every_frame() {
        let mut pool = BufferPool::new(64).unwrap();
        let mut out = [0; 40];
        assert_eq!(pool.alloc_burst(&mut out), 40);
        assert_eq!(pool.available(), 24);
        let mut seen = out.to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 40, "no frame handed out twice");
        pool.free_burst(&out);
        assert_eq!(pool.available(), 64);
    }

    #[test]
    fn alloc_burst_stops_at_empty() {
        let mut pool = BufferPool::new(4).unwrap();
        let mut out = [0; 8];
        assert_eq!(pool.alloc_burst(&mut out), 4);
        assert_eq!(pool.alloc(), None);
    }

    #[test]
    fn locate_rejects_addresses_outside_the_pool() {
        let pool = BufferPool::new(4).unwrap();
        assert_eq!(pool.locate(FRAME_SIZE as u64 + 300), Some((1, 300)));
        assert_eq!(pool.locate(4 * FRAME_SIZE as u64), None);
        assert_eq!(pool.locate(u64::MAX), None);
    }

    #[test]
    fn packet_view_follows_meta() {
        let mut pool = BufferPool::new(2).unwrap();
        let b = pool.alloc().unwrap();
        pool.set_meta(b, HEADROOM, 3);
        pool.packet_mut(b).copy_from_slice(&[1, 2, 3]);
        assert_eq!(pool.packet(b), &[1, 2, 3]);
        assert_eq!(&pool.frame(b)[HEADROOM..HEADROOM + 3], &[1, 2, 3]);
    }

    #[test]
    fn jumbo_pools_place_frames_by_their_size() {
        let pool = BufferPool::with_frame_size(4, JUMBO_FRAME_SIZE).unwrap();
        assert_eq!(pool.frame(3).len(), JUMBO_FRAME_SIZE);
        assert_eq!(pool.frame_addr(2), 2 * JUMBO_FRAME_SIZE as u64);
        assert_eq!(pool.locate(JUMBO_FRAME_SIZE as u64 + 7), Some((1, 7)));
        assert_eq!(pool.max_packet(), JUMBO_FRAME_SIZE - HEADROOM);
        assert!(BufferPool::with_frame_size(4, 3000).is_err());
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(matches!(BufferPool::new(0), Err(BufferError::BadSize(0))));
        assert!(BufferPool::new(MAX_FRAMES + 1).is_err());
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "double free")]
    fn double_free_is_caught_in_debug_builds() {
        let mut pool = BufferPool::new(2).unwrap();
        let b = pool.alloc().unwrap();
        pool.free(b);
        pool.free(b);
    }
}
