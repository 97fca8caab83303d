//! The four AF_XDP rings (fill, completion, RX, TX) as seen from user space.
//!
//! The pure part is the index arithmetic ([`ProdCursor`], [`ConsCursor`]): free-running `u32`
//! indices that wrap, with a cached copy of the peer's index refreshed only when the cached value
//! says there is not enough room (fill, TX) or data (RX, completion). [`MmapRing`] applies it to a
//! ring mapped from the socket.
//!
//! Memory ordering (the kernel's side is documented in `net/xdp/xsk_queue.h`):
//! - Producer: write descriptors, then `Release`-store the producer index, which pairs with the
//!   kernel's acquire-load of it, so the kernel never reads a descriptor before it is written.
//!   Reading the consumer index uses `Acquire`, pairing with the kernel's release after it has
//!   finished reading the slots we are about to overwrite.
//! - Consumer: `Acquire`-load the producer index, pairing with the kernel's release after it
//!   wrote the descriptors; read descriptors; then `Release`-store the consumer index so the
//!   kernel reuses the slots only after our reads.

use std::sync::atomic::{AtomicU32, Ordering};

/// Index arithmetic of a ring we produce into (fill, TX).
#[derive(Clone, Copy, Debug)]
pub struct ProdCursor {
    /// Our producer index (next slot to write).
    pub prod: u32,
    /// Last consumer index read from the kernel.
    pub cached_cons: u32,
    /// Ring size (a power of two).
    pub size: u32,
}

impl ProdCursor {
    /// Free slots according to the cached consumer index.
    #[inline]
    pub fn free(&self) -> u32 {
        self.size - self.prod.wrapping_sub(self.cached_cons)
    }
}

/// Index arithmetic of a ring we consume from (RX, completion).
#[derive(Clone, Copy, Debug)]
pub struct ConsCursor {
    /// Our consumer index (next slot to read).
    pub cons: u32,
    /// Last producer index read from the kernel.
    pub cached_prod: u32,
}

impl ConsCursor {
    /// Entries available according to the cached producer index.
    #[inline]
    pub fn available(&self) -> u32 {
        self.cached_prod.wrapping_sub(self.cons)
    }
}

/// A ring mapped from an AF_XDP socket. `T` is `u64` (fill, completion) or
/// [`super::abi::XdpDesc`] (RX, TX).
pub struct MmapRing<T: Copy> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    mask: u32,
    map: *mut libc::c_void,
    map_len: usize,
    /// Producer rings use `p`; consumer rings use `c`.
    p: ProdCursor,
    c: ConsCursor,
}

// SAFETY: the ring memory is owned by this value (unmapped on drop) and is only touched through
// `&mut self` on the thread that currently owns it; the kernel side synchronises through the
// atomics as documented above.
unsafe impl<T: Copy> Send for MmapRing<T> {}

impl<T: Copy> MmapRing<T> {
    /// Maps ring `pgoff` of socket `fd` with `size` entries, using the kernel's offsets.
    ///
    /// # Safety
    /// `fd` must be an AF_XDP socket whose ring at `pgoff` was sized to `size` entries of `T`,
    /// and `off` must be that ring's offsets as returned by XDP_MMAP_OFFSETS.
    pub unsafe fn map(
        fd: i32,
        pgoff: i64,
        size: u32,
        off: &super::abi::RingOffset,
    ) -> std::io::Result<Self> {
        let map_len = usize::try_from(off.desc)
            .unwrap_or(usize::MAX)
            .saturating_add(size as usize * std::mem::size_of::<T>());
        // SAFETY: a fresh shared mapping of the socket's ring, as the AF_XDP ABI prescribes.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = map.cast::<u8>();
        let at = |o: u64| {
            // SAFETY: the kernel's offsets lie inside the mapping it just gave us.
            unsafe { base.add(usize::try_from(o).unwrap_or(0)) }
        };
        let producer = at(off.producer).cast::<AtomicU32>();
        let consumer = at(off.consumer).cast::<AtomicU32>();
        // SAFETY: both index words are live, aligned u32s inside the mapping.
        let (prod, cons) = unsafe {
            (
                (*producer).load(Ordering::Relaxed),
                (*consumer).load(Ordering::Relaxed),
            )
        };
        Ok(Self {
            producer,
            consumer,
            flags: at(off.flags).cast::<AtomicU32>(),
            descs: at(off.desc).cast::<T>(),
            mask: size - 1,
            map,
            map_len,
            p: ProdCursor {
                prod,
                cached_cons: cons,
                size,
            },
            c: ConsCursor {
                cons,
                cached_prod: prod,
            },
        })
    }

    #[inline]
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping (see `map`).
        unsafe { &*self.producer }
    }

    #[inline]
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping (see `map`).
        unsafe { &*self.consumer }
    }

    /// True if the kernel asks for a wakeup syscall (XDP_USE_NEED_WAKEUP).
    #[inline]
    pub fn needs_wakeup(&self) -> bool {
        // SAFETY: points into our live mapping (see `map`).
        let flags = unsafe { &*self.flags }.load(Ordering::Relaxed);
        flags & super::abi::XDP_RING_NEED_WAKEUP != 0
    }

    // ---- producer side (fill, TX) ----

    /// Up to `want` free slots, refreshing the consumer index only if the cache says too few.
    #[inline]
    pub fn reserve(&mut self, want: u32) -> u32 {
        if self.p.free() < want {
            // Acquire: pairs with the kernel's release of its consumer index (module docs).
            self.p.cached_cons = self.consumer().load(Ordering::Acquire);
        }
        want.min(self.p.free())
    }

    /// Writes slot `i` of the reserved range.
    #[inline]
    pub fn write(&mut self, i: u32, v: T) {
        let idx = (self.p.prod.wrapping_add(i) & self.mask) as usize;
        // SAFETY: idx <= mask < size, so the slot is inside the descriptor array.
        unsafe { self.descs.add(idx).write_volatile(v) };
    }

    /// Publishes `n` written slots to the kernel.
    #[inline]
    pub fn submit(&mut self, n: u32) {
        self.p.prod = self.p.prod.wrapping_add(n);
        // Release: the descriptors written above are visible before the index (module docs).
        self.producer().store(self.p.prod, Ordering::Release);
    }

    /// Slots produced but not yet consumed by the kernel (fresh read).
    #[inline]
    pub fn unconsumed(&mut self) -> u32 {
        self.p.cached_cons = self.consumer().load(Ordering::Acquire);
        self.p.prod.wrapping_sub(self.p.cached_cons)
    }

    // ---- consumer side (RX, completion) ----

    /// Up to `want` filled entries, refreshing the producer index only if the cache says too few.
    #[inline]
    pub fn peek(&mut self, want: u32) -> u32 {
        if self.c.available() < want {
            // Acquire: pairs with the kernel's release of its producer index (module docs).
            self.c.cached_prod = self.producer().load(Ordering::Acquire);
        }
        want.min(self.c.available())
    }

    /// Reads entry `i` of the peeked range.
    #[inline]
    pub fn read(&self, i: u32) -> T {
        let idx = (self.c.cons.wrapping_add(i) & self.mask) as usize;
        // SAFETY: idx <= mask < size, so the slot is inside the descriptor array.
        unsafe { self.descs.add(idx).read_volatile() }
    }

    /// Gives `n` read entries back to the kernel.
    #[inline]
    pub fn release(&mut self, n: u32) {
        self.c.cons = self.c.cons.wrapping_add(n);
        // Release: our reads of the slots happen before the kernel may reuse them.
        self.consumer().store(self.c.cons, Ordering::Release);
    }
}

impl<T: Copy> Drop for MmapRing<T> {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping created in `map`, no longer referenced.
        unsafe { libc::munmap(self.map, self.map_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A producer and a consumer cursor over one simulated ring, starting anywhere in the u32
        /// space (so they wrap): the producer never overwrites unconsumed slots, the consumer
        /// never reads beyond what was produced, and nothing is lost or duplicated.
        #[test]
        fn cursors_never_overrun(start in any::<u32>(), size_log in 1u32..8, ops in proptest::collection::vec((any::<bool>(), 0u32..300), 1..200)) {
            let size = 1u32 << size_log;
            let mut p = ProdCursor { prod: start, cached_cons: start, size };
            let mut c = ConsCursor { cons: start, cached_prod: start };
            let (mut kernel_prod, mut kernel_cons) = (start, start);
            let mut model = std::collections::VecDeque::new();
            let mut next_val = 0u64;
            for (produce, n) in ops {
                if produce {
                    if p.free() < n { p.cached_cons = kernel_cons; }
                    let k = n.min(p.free());
                    prop_assert!(model.len() + k as usize <= size as usize);
                    for _ in 0..k { model.push_back(next_val); next_val += 1; }
                    p.prod = p.prod.wrapping_add(k);
                    kernel_prod = p.prod;
                } else {
                    if c.available() < n { c.cached_prod = kernel_prod; }
                    let k = n.min(c.available());
                    prop_assert!(k as usize <= model.len());
                    for _ in 0..k { model.pop_front(); }
                    c.cons = c.cons.wrapping_add(k);
                    kernel_cons = c.cons;
                }
                prop_assert_eq!(kernel_prod.wrapping_sub(kernel_cons) as usize, model.len());
            }
        }
    }
}
