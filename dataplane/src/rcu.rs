//! Quiescent-state-based reclamation (QSBR) for data the control thread publishes to workers.
//!
//! The control thread publishes a new value with [`RcuCell::publish`], which swaps a pointer and
//! then waits until every registered worker has passed a quiescent point before it frees the old
//! value. Workers read with [`RcuCell::load`], which costs one atomic load and takes no lock.
//!
//! A worker holds a [`Reader`], registered with the same [`Qsbr`] as the cells it reads. To read,
//! it goes online with [`Reader::online`], which announces a quiescent point and returns an
//! [`Online`] guard; only a guard can [`load`](RcuCell::load). The guard borrows the reader
//! mutably and a loaded reference borrows the guard, so the borrow checker proves that
//! - no reference survives a quiescent point ([`Reader::quiescent`] needs `&mut Reader`),
//! - no reference is taken while the reader is offline (an offline reader has no guard, and
//!   [`Reader::offline`] cannot be called while a guard or a reference lives).
//!
//! A worker about to sleep goes [`Reader::offline`]; the writer does not wait for offline
//! workers. The usage order per worker loop is therefore: `online()` → `load` → … → drop the
//! references (end of the loop body) → `online()` again, or `offline()` before sleeping.
//!
//! ```
//! use vwire_dataplane::rcu::{Qsbr, RcuCell};
//! let qsbr = Qsbr::new();
//! let cell = RcuCell::new(1u32, qsbr.clone());
//! let mut reader = qsbr.register_named("worker 0");
//! let online = reader.online();
//! assert_eq!(*cell.load(&online), 1);
//! drop(online);
//! reader.offline(); // about to sleep: writers stop waiting for this reader
//! ```
//!
//! A reference cannot outlive the reader going offline:
//!
//! ```compile_fail,E0499
//! use vwire_dataplane::rcu::{Qsbr, RcuCell};
//! let qsbr = Qsbr::new();
//! let cell = RcuCell::new(1u32, qsbr.clone());
//! let mut reader = qsbr.register();
//! let online = reader.online();
//! let v = cell.load(&online);
//! reader.offline(); // error: `reader` is still borrowed by `online` and `v`
//! assert_eq!(*v, 1);
//! ```
//!
//! An offline reader cannot load at all (`load` wants an [`Online`] guard, not a reader):
//!
//! ```compile_fail,E0308
//! use vwire_dataplane::rcu::{Qsbr, RcuCell};
//! let qsbr = Qsbr::new();
//! let cell = RcuCell::new(1u32, qsbr.clone());
//! let mut reader = qsbr.register();
//! reader.offline();
//! assert_eq!(*cell.load(&reader), 1); // error: expected `&Online<'_>`, found `&Reader`
//! ```
//!
//! Nor can a reference outlive a quiescent point:
//!
//! ```compile_fail,E0499
//! use vwire_dataplane::rcu::{Qsbr, RcuCell};
//! let qsbr = Qsbr::new();
//! let cell = RcuCell::new(1u32, qsbr.clone());
//! let mut reader = qsbr.register();
//! let online = reader.online();
//! let v = cell.load(&online);
//! reader.quiescent(); // error: `reader` is still borrowed
//! assert_eq!(*v, 1);
//! ```
//!
//! A reader of another [`Qsbr`] would not be waited for by this cell's writer; the types do not
//! tell the registries apart, so `load` checks it: one pointer compare per `load`, which the
//! worker makes once per loop, not per packet (a lifetime brand would prove it at compile time
//! but would put a brand parameter on every type that holds a cell or a reader). A mismatch is
//! a bug in the caller and panics.
//!
//! A stuck worker: [`Qsbr::synchronize`] cannot return before every online reader has passed a
//! quiescent point, because freeing earlier would be a use-after-free, and giving up with an
//! error would leave the caller holding a value it can neither free nor reuse. So it keeps
//! waiting, but it does not wait silently: after [`STALL_WARN_AFTER`] it logs a warning naming
//! the reader it waits for, again after twice as long, and so on, and counts the warning in
//! [`Qsbr::stalls`]. [`Qsbr::synchronize_with`] takes the threshold and the action.
//!
//! Orderings: the writer's pointer swap and the readers' epoch stores are `SeqCst`, so a reader
//! that announced a quiescent point after the swap is guaranteed to load the new pointer; the
//! writer's epoch loads are `SeqCst` for the same reason.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long [`Qsbr::synchronize`] waits for one reader before it warns. Online workers pass a
/// quiescent point at least every millisecond, so a thousand times that is no scheduling hiccup
/// (a preempted thread on a busy 2-vCPU VM loses milliseconds) but a stuck or stopped thread.
pub const STALL_WARN_AFTER: Duration = Duration::from_secs(1);

/// Per-reader epoch. Even values: online, changing at every quiescent point. Odd: offline.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Epoch(AtomicU64);

/// What the registry knows of one reader: its epoch (hot, on its own cache line) and its name.
#[derive(Debug)]
struct Slot {
    epoch: Epoch,
    // cold: read only by a writer that waits too long
    name: String,
}

/// A writer waiting too long for one reader (see [`Qsbr::synchronize_with`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    /// The reader's name (given at [`Qsbr::register_named`]).
    pub reader: String,
    /// How long the writer has waited for it so far.
    pub waited: Duration,
}

/// The registry of readers shared by the cells of one dataplane.
#[derive(Debug, Default)]
pub struct Qsbr {
    readers: Mutex<Vec<Arc<Slot>>>,
    /// Readers registered with [`Qsbr::register`] so far, for their default names.
    registered: AtomicU64,
    /// Stall warnings issued so far.
    stalls: AtomicU64,
}

impl Qsbr {
    /// A registry with no readers.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a reader named `reader <n>`. It starts offline, so a writer never waits for a
    /// worker that has not started yet.
    pub fn register(self: &Arc<Self>) -> Reader {
        let n = self.registered.fetch_add(1, Relaxed);
        self.register_named(format!("reader {n}"))
    }

    /// Registers a reader under `name`, which a stalled writer reports. It starts offline.
    pub fn register_named(self: &Arc<Self>, name: impl Into<String>) -> Reader {
        let slot = Arc::new(Slot {
            epoch: Epoch(AtomicU64::new(1)),
            name: name.into(),
        });
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(slot.clone());
        Reader {
            slot,
            qsbr: self.clone(),
        }
    }

    /// Waits until every online reader has passed a quiescent point. Readers poll at least every
    /// millisecond (the worker's longest sleep is spent offline), so this returns within about a
    /// millisecond unless a worker is stuck; then it logs a warning naming the reader after
    /// [`STALL_WARN_AFTER`], and again each time the wait doubles, and keeps waiting (module
    /// docs).
    pub fn synchronize(&self) {
        self.synchronize_with(STALL_WARN_AFTER, |s| {
            tracing::warn!(
                reader = %s.reader,
                waited_ms = s.waited.as_millis(),
                "QSBR writer still waiting for a reader to pass a quiescent point (stuck worker?)"
            );
        });
    }

    /// [`Qsbr::synchronize`] with the stall threshold and action given: `on_stall` is called
    /// after `warn_after` of waiting for one reader, then after twice that, four times, and so
    /// on. Every call is counted in [`Qsbr::stalls`].
    pub fn synchronize_with(&self, warn_after: Duration, mut on_stall: impl FnMut(&Stall)) {
        let readers: Vec<Arc<Slot>> = self
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for r in readers {
            let seen = r.epoch.0.load(SeqCst);
            if seen & 1 == 1 {
                continue;
            }
            let mut spins = 0u32;
            let mut start = None;
            let mut next_warn = warn_after;
            while r.epoch.0.load(SeqCst) == seen {
                spins += 1;
                if spins < 100 {
                    std::hint::spin_loop();
                    continue;
                }
                std::thread::sleep(Duration::from_micros(20));
                // The clock is read only once spinning did not suffice, i.e. on the slow path.
                let waited = start.get_or_insert_with(Instant::now).elapsed();
                if waited >= next_warn {
                    self.stalls.fetch_add(1, Relaxed);
                    on_stall(&Stall {
                        reader: r.name.clone(),
                        waited,
                    });
                    next_warn = next_warn.saturating_mul(2);
                }
            }
        }
    }

    /// Stall warnings issued so far by writers of this registry (see [`Qsbr::synchronize`]).
    pub fn stalls(&self) -> u64 {
        self.stalls.load(Relaxed)
    }
}

/// A worker's handle on the registry. See the module docs.
#[derive(Debug)]
pub struct Reader {
    slot: Arc<Slot>,
    qsbr: Arc<Qsbr>,
}

impl Reader {
    /// Announces a quiescent point (this reader holds no reference into any cell), brings an
    /// offline reader back online, and returns the guard through which cells are read. The
    /// reader stays online when the guard is dropped.
    #[inline]
    pub fn online(&mut self) -> Online<'_> {
        self.quiescent();
        Online { reader: self }
    }

    /// Announces that this reader holds no reference into any cell. Also brings an offline reader
    /// back online.
    #[inline]
    pub fn quiescent(&mut self) {
        let e = self.slot.epoch.0.load(Relaxed);
        // Next even value: from even e it is e + 2, from odd (offline) e it is e + 1.
        self.slot.epoch.0.store((e | 1) + 1, SeqCst);
    }

    /// Marks this reader offline (about to sleep): writers stop waiting for it. The next
    /// [`Reader::online`] brings it back.
    #[inline]
    pub fn offline(&mut self) {
        let e = self.slot.epoch.0.load(Relaxed);
        self.slot.epoch.0.store(e | 1, SeqCst);
    }

    /// The name a stalled writer reports.
    pub fn name(&self) -> &str {
        &self.slot.name
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.offline();
        let mut readers = self.qsbr.readers.lock().unwrap_or_else(|e| e.into_inner());
        readers.retain(|r| !Arc::ptr_eq(r, &self.slot));
    }
}

/// Proof that a reader is online: the only way to [`RcuCell::load`]. See the module docs.
#[derive(Debug)]
pub struct Online<'r> {
    reader: &'r mut Reader,
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

    /// True if readers of `qsbr` may load this cell.
    pub fn guarded_by(&self, qsbr: &Arc<Qsbr>) -> bool {
        Arc::ptr_eq(&self.qsbr, qsbr)
    }

    /// The current value. The reference lives until the reader's next quiescent point.
    ///
    /// # Panics
    /// If the reader belongs to another [`Qsbr`] than the cell (whose writer would not wait for
    /// it).
    #[inline]
    pub fn load<'g>(&'g self, online: &'g Online<'_>) -> &'g T {
        // One pointer compare, cold-branch panic; a worker loads once per loop, not per packet.
        assert!(
            Arc::ptr_eq(&self.qsbr, &online.reader.qsbr),
            "RcuCell::load by reader `{}` of another Qsbr than the cell's",
            online.reader.slot.name
        );
        // SAFETY: the pointer always comes from Box::into_raw and is freed only by `publish`
        // after `synchronize` on this cell's Qsbr, which the reader is registered with (checked
        // above). The reader is online (an `Online` exists, so it went online and cannot go
        // offline while the guard lives), so synchronize waits for its next quiescent point,
        // which needs `&mut Reader` and so ends the borrows of the guard and of this reference.
        unsafe { &*self.ptr.load(SeqCst) }
    }

    /// The current value, for the writer side (control thread). Serialised with `publish`.
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: only `publish` frees values, and it holds the writer lock that we hold now.
        f(unsafe { &*self.ptr.load(SeqCst) })
    }

    /// Replaces the value, waits for every online reader to pass a quiescent point, then drops
    /// the old value. Blocks for up to about a millisecond (longer only if a worker is stuck,
    /// which [`Qsbr::synchronize`] reports); never call it from a worker.
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
                    // A quiescent point, then a read.
                    let online = reader.online();
                    let v = cell.load(&online);
                    // The value read is never freed under us: its id only grows.
                    assert!(v.1 >= max);
                    max = v.1;
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
        assert_eq!(*cell.load(&reader.online()), 2);
        drop(reader);
        cell.publish(3);
        assert_eq!(cell.read(|v| *v), 3);
    }

    #[test]
    #[should_panic(expected = "RcuCell::load by reader `stranger` of another Qsbr than the cell's")]
    fn a_reader_of_another_qsbr_cannot_load() {
        let cell = RcuCell::new(1u32, Qsbr::new());
        let other = Qsbr::new();
        assert!(!cell.guarded_by(&other));
        let mut stranger = other.register_named("stranger");
        // The cell's writer would never wait for `stranger`: the load must not hand out a
        // reference.
        let _ = cell.load(&stranger.online());
    }

    #[test]
    fn a_stuck_reader_is_named_and_waited_for() {
        let qsbr = Qsbr::new();
        let mut stuck = qsbr.register_named("worker 7");
        assert_eq!(stuck.name(), "worker 7");
        let _idle = qsbr.register(); // offline: never waited for, never reported
        stuck.quiescent(); // online, and then it does not pass another quiescent point
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = {
            let qsbr = qsbr.clone();
            std::thread::spawn(move || {
                qsbr.synchronize_with(Duration::from_millis(20), |s| {
                    let _ = tx.send(s.clone());
                });
            })
        };
        // The first report names the stuck reader after the threshold, and the writer goes on
        // waiting: it reports again after twice the threshold.
        let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(first.reader, "worker 7");
        assert!(first.waited >= Duration::from_millis(20));
        let second = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(second.reader, "worker 7");
        assert!(second.waited >= Duration::from_millis(40));
        assert!(
            !writer.is_finished(),
            "synchronize returned before the reader moved"
        );
        stuck.quiescent();
        writer.join().unwrap();
        assert!(qsbr.stalls() >= 2);
    }

    #[test]
    fn default_reader_names_count_up() {
        let qsbr = Qsbr::new();
        let (a, b) = (qsbr.register(), qsbr.register());
        assert_eq!((a.name(), b.name()), ("reader 0", "reader 1"));
    }
}
