//! Quiescent-state-based reclamation (QSBR) for data the control thread publishes to workers.
//!
//! The control thread publishes a new value with [`RcuCell::publish`], which swaps a pointer and
//! then waits until every registered worker has passed a quiescent point before it frees the old
//! value. Workers read with [`RcuCell::load`], which costs one atomic load and takes no lock.
//!
//! A worker holds a [`Reader`]. A reference from `load` borrows the reader, and
//! [`Reader::quiescent`] needs `&mut Reader`, so the borrow checker proves that no reference
//! survives a quiescent point. A worker about to sleep goes [`Reader::offline`]; the writer does
//! not wait for offline workers.
//!
//! Orderings: the writer's pointer swap and the readers' epoch stores are `SeqCst`, so a reader
//! that announced a quiescent point after the swap is guaranteed to load the new pointer; the
//! writer's epoch loads are `SeqCst` for the same reason.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Per-reader epoch. Even values: online, changing at every quiescent point. Odd: offline.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Epoch(AtomicU64);

/// The registry of readers shared by the cells of one dataplane.
#[derive(Debug, Default)]
pub struct Qsbr {
    readers: Mutex<Vec<Arc<Epoch>>>,
}

impl Qsbr {
    /// A registry with no readers.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a reader. It starts offline, so a writer never waits for a worker that has not
    /// started yet.
    pub fn register(self: &Arc<Self>) -> Reader {
        let epoch = Arc::new(Epoch(AtomicU64::new(1)));
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(epoch.clone());
        Reader {
            epoch,
            qsbr: self.clone(),
        }
    }

    /// Waits until every online reader has passed a quiescent point. Readers poll at least every
    /// millisecond (the worker's longest sleep is spent offline), so this returns within about a
    /// millisecond unless a worker is stuck.
    pub fn synchronize(&self) {
        let readers: Vec<Arc<Epoch>> = self
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for r in readers {
            let seen = r.0.load(SeqCst);
            if seen & 1 == 1 {
                continue;
            }
            let mut spins = 0u32;
            while r.0.load(SeqCst) == seen {
                spins += 1;
                if spins < 100 {
                    std::hint::spin_loop();
                } else {
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
        }
    }
}

/// A worker's handle on the registry. See the module docs.
#[derive(Debug)]
pub struct Reader {
    epoch: Arc<Epoch>,
    qsbr: Arc<Qsbr>,
}

impl Reader {
    /// Announces that this reader holds no reference into any cell. Also brings an offline reader
    /// back online.
    #[inline]
    pub fn quiescent(&mut self) {
        let e = self.epoch.0.load(std::sync::atomic::Ordering::Relaxed);
        // Next even value: from even e it is e + 2, from odd (offline) e it is e + 1.
        self.epoch.0.store((e | 1) + 1, SeqCst);
    }

    /// Marks this reader offline (about to sleep): writers stop waiting for it. Call
    /// [`Reader::quiescent`] before the next `load`.
    #[inline]
    pub fn offline(&mut self) {
        let e = self.epoch.0.load(std::sync::atomic::Ordering::Relaxed);
        self.epoch.0.store(e | 1, SeqCst);
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.offline();
        let mut readers = self.qsbr.readers.lock().unwrap_or_else(|e| e.into_inner());
        readers.retain(|r| !Arc::ptr_eq(r, &self.epoch));
    }
}

/// A value published by one writer and read by many workers without locks.
#[derive(Debug)]
pub struct RcuCell<T> {
    ptr: AtomicPtr<T>,
    qsbr: Arc<Qsbr>,
    writer: Mutex<()>,
}

// SAFETY: the cell hands out `&T` to readers on other threads (needs T: Sync) and moves the boxed
// value between threads on publish/drop (needs T: Send).
unsafe impl<T: Send + Sync> Sync for RcuCell<T> {}
// SAFETY: as above; the cell owns a `Box<T>`.
unsafe impl<T: Send + Sync> Send for RcuCell<T> {}

impl<T> RcuCell<T> {
    /// A cell holding `value`, guarded by `qsbr`.
    pub fn new(value: T, qsbr: Arc<Qsbr>) -> Self {
        Self {
            ptr: AtomicPtr::new(Box::into_raw(Box::new(value))),
            qsbr,
            writer: Mutex::new(()),
        }
    }

    /// The current value. The reference lives until the reader's next quiescent point.
    #[inline]
    pub fn load<'r>(&'r self, _reader: &'r Reader) -> &'r T {
        // SAFETY: the pointer always comes from Box::into_raw and is freed only by `publish`
        // after `synchronize`, i.e. after this reader passed a quiescent point, which needs
        // `&mut Reader` and so ends this borrow first.
        unsafe { &*self.ptr.load(SeqCst) }
    }

    /// The current value, for the writer side (control thread). Serialised with `publish`.
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: only `publish` frees values, and it holds the writer lock that we hold now.
        f(unsafe { &*self.ptr.load(SeqCst) })
    }

    /// Replaces the value, waits for every online reader to pass a quiescent point, then drops
    /// the old value. Blocks for up to about a millisecond; never call it from a worker.
    pub fn publish(&self, value: T) {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.ptr.swap(Box::into_raw(Box::new(value)), SeqCst);
        self.qsbr.synchronize();
        // SAFETY: `old` came from Box::into_raw, is no longer reachable through the cell, and no
        // reader still holds it after synchronize (module docs).
        drop(unsafe { Box::from_raw(old) });
    }
}

impl<T> Drop for RcuCell<T> {
    fn drop(&mut self) {
        // SAFETY: `&mut self` means no reader borrows remain (they borrow the cell).
        drop(unsafe { Box::from_raw(*self.ptr.get_mut()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Counts live values so the test can see when the old one is freed.
    struct Tracked(Arc<AtomicUsize>, u64);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn publish_waits_for_an_online_reader() {
        let qsbr = Qsbr::new();
        let live = Arc::new(AtomicUsize::new(1));
        let cell = Arc::new(RcuCell::new(Tracked(live.clone(), 1), qsbr.clone()));
        let mut reader = qsbr.register();
        reader.quiescent(); // online, holding nothing yet
        let stop = Arc::new(AtomicBool::new(false));
        let t = {
            let (cell, stop) = (cell.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut max = 0;
                while !stop.load(Ordering::Relaxed) {
                    let v = cell.load(&reader);
                    // The value read is never freed under us: its id only grows.
                    assert!(v.1 >= max);
                    max = v.1;
                    reader.quiescent();
                }
                max
            })
        };
        for i in 2..200 {
            live.fetch_add(1, Ordering::SeqCst);
            cell.publish(Tracked(live.clone(), i));
            assert_eq!(
                live.load(Ordering::SeqCst),
                1,
                "old value freed after publish"
            );
        }
        stop.store(true, Ordering::Relaxed);
        assert!(t.join().unwrap() <= 199);
    }

    #[test]
    fn offline_readers_do_not_block_writers() {
        let qsbr = Qsbr::new();
        let cell = RcuCell::new(1u32, qsbr.clone());
        let mut reader = qsbr.register();
        reader.quiescent();
        reader.offline();
        cell.publish(2); // would hang if it waited for the offline reader
        reader.quiescent();
        assert_eq!(*cell.load(&reader), 2);
        drop(reader);
        cell.publish(3);
        assert_eq!(cell.read(|v| *v), 3);
    }
}
