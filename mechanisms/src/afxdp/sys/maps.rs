//! Typed BPF maps: a [`Map<K, V>`] is created with the sizes of `K` and `V`, so its element
//! operations are safe to call; the only promise left to the caller is [`Plain`] (every bit
//! pattern the kernel may write is a valid value), made once per type.

use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd};

use super::{bpf, name16, owned};
use crate::afxdp::abi::*;
use crate::afxdp::error::AfXdpError;

/// A key or value type of a BPF map: plain data the kernel reads and writes as bytes.
///
/// # Safety
///
/// The type has no padding and no invalid bit patterns (integers, and `#[repr(C)]` structs of
/// them), so any bytes the kernel writes into it make a valid value.
pub(crate) unsafe trait Plain: Copy + Default {}

// SAFETY: an integer: no padding, every bit pattern valid.
unsafe impl Plain for u32 {}
// SAFETY: `#[repr(C)]` structs of u32/u64 and byte arrays, laid out without padding (their
// sizes and offsets are asserted in `abi`): every bit pattern valid.
unsafe impl Plain for ProgInfo {}
// SAFETY: as above.
unsafe impl Plain for MapInfo {}

/// `usize` → `u32` for the sizes of map keys and values (a few bytes each).
fn size32<T>() -> u32 {
    u32::try_from(std::mem::size_of::<T>()).unwrap_or(u32::MAX)
}

/// A BPF map whose keys are `K` and values `V`.
#[derive(Debug)]
pub(crate) struct Map<K: Plain, V: Plain> {
    fd: OwnedFd,
    _kv: PhantomData<fn(K) -> V>,
}

impl<K: Plain, V: Plain> Map<K, V> {
    /// Creates a map of `map_type` (`BPF_MAP_TYPE_*`) with `max_entries`, `map_flags` and
    /// `name`, keyed by `K` and holding `V`; `ifname` and `what` name the step in errors.
    pub(crate) fn create(
        ifname: &str,
        map_type: u32,
        max_entries: u32,
        map_flags: u32,
        name: &str,
        what: &'static str,
    ) -> Result<Self, AfXdpError> {
        let attr = MapCreateAttr {
            map_type,
            key_size: size32::<K>(),
            value_size: size32::<V>(),
            max_entries,
            map_flags,
            map_name: name16(name),
            ..Default::default()
        };
        // SAFETY: `attr` is a live MapCreateAttr, which holds no pointers.
        unsafe { bpf(BPF_MAP_CREATE, &attr) }
            .map(|fd| Self {
                fd: owned(fd),
                _kv: PhantomData,
            })
            .map_err(|source| AfXdpError::Bpf {
                ifname: ifname.to_string(),
                what,
                source,
            })
    }

    /// The map behind `fd` (a map of an earlier run of vwire, found through its program), if
    /// it is a `map_type` map keyed by `K` and holding `V`; `None` if it is not.
    pub(crate) fn from_fd(fd: OwnedFd, map_type: u32) -> std::io::Result<Option<Self>> {
        let info: MapInfo = super::obj_info(&fd)?;
        let fits = info.map_type == map_type
            && info.key_size == size32::<K>()
            && info.value_size == size32::<V>();
        Ok(fits.then_some(Self {
            fd,
            _kv: PhantomData,
        }))
    }

    /// The map's fd, to patch into a program.
    pub(crate) fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// `cmd` (lookup, update, delete, next key) on element `key`; `value` is the value read or
    /// written, or the next key, and may be null for a delete.
    ///
    /// # Safety
    ///
    /// `key` (null only for the first next key) and `value` point to live memory of the map's
    /// key and value sizes (the key size for a next key), writable where the command writes.
    unsafe fn elem(&self, cmd: i64, key: *const u8, value: *mut u8) -> std::io::Result<()> {
        let a = MapElemAttr {
            map_fd: u32::try_from(self.fd.as_raw_fd()).unwrap_or(u32::MAX),
            key: key as u64,
            value: value as u64,
            ..Default::default()
        };
        // SAFETY: `a` is a live MapElemAttr; the caller guarantees what its pointers point to.
        unsafe { bpf(cmd, &a) }.map(|_| ())
    }

    /// Sets element `key` to `value` (creating it if needed).
    pub(crate) fn update(&self, key: &K, value: &V) -> std::io::Result<()> {
        // SAFETY: key and value are live and of the map's sizes (it was created with the sizes
        // of K and V); BPF_MAP_UPDATE_ELEM only reads through `value`.
        unsafe {
            self.elem(
                BPF_MAP_UPDATE_ELEM,
                (key as *const K).cast(),
                (value as *const V).cast_mut().cast(),
            )
        }
    }

    /// Removes element `key` (ENOENT if there is none).
    pub(crate) fn delete(&self, key: &K) -> std::io::Result<()> {
        // SAFETY: the key is live and of the map's key size; a delete reads no value.
        unsafe {
            self.elem(
                BPF_MAP_DELETE_ELEM,
                (key as *const K).cast(),
                std::ptr::null_mut(),
            )
        }
    }

    /// The value of element `key`, `None` if there is none.
    pub(crate) fn lookup(&self, key: &K) -> std::io::Result<Option<V>> {
        let mut v = V::default();
        // SAFETY: key and value are live and of the map's sizes; the kernel writes the value's
        // bytes into `v`, any of which make a valid `V` (`Plain`).
        let rc = unsafe {
            self.elem(
                BPF_MAP_LOOKUP_ELEM,
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

    /// The key after `key` (the first key for `None`), `None` at the end.
    pub(crate) fn next_key(&self, key: Option<&K>) -> std::io::Result<Option<K>> {
        let mut next = K::default();
        let key = key.map_or(std::ptr::null(), |k| (k as *const K).cast());
        // SAFETY: `key` is null (asking for the first key) or a live key of the map's size, and
        // the kernel writes one key into `next`, any bytes of which make a valid `K` (`Plain`).
        let rc = unsafe { self.elem(BPF_MAP_GET_NEXT_KEY, key, (&mut next as *mut K).cast()) };
        match rc {
            Ok(()) => Ok(Some(next)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
