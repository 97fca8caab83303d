//! The shared queue-redirect XDP program: one program, with its two maps, per network namespace
//! of the process, attached to every interface vwire owns there
//! ([`super::XdpProgram::SharedRedirect`], the default of [`crate::afxdp::PortOptions`]).
//!
//! # Why one program
//!
//! The kernel runs XDP programs through a dispatcher whose image lists the programs attached
//! anywhere. Attaching a program that is not in it yet rebuilds the image and waits for an RCU
//! grace period (`bpf_prog_change_xdp` → `bpf_dispatcher_change_prog` → `synchronize_rcu`, under
//! the RTNL lock), and so does detaching a program's last attachment: 12–35 ms per interface on
//! this VM class, serialising concurrent NSM Requests. Attaching a program that is already
//! attached elsewhere only takes a reference. So every port of a namespace attaches the same
//! program: only the first port (and the close of the last) changes the dispatcher.
//!
//! # Maps
//!
//! - `vwire_ifaces`: `BPF_MAP_TYPE_HASH` from the receiving interface's index (`u32`, as in
//!   `xdp_md.ingress_ifindex`) to its [`SlotRange`] (`base: u32, queues: u32`), at most
//!   [`MAX_IFACES`] interfaces. Created with `BPF_F_NO_PREALLOC`: a deleted element is freed
//!   after an RCU grace period, so a program still reading it never sees it reused for another
//!   interface.
//! - `vwire_xsks`: `BPF_MAP_TYPE_XSKMAP` of [`SLOTS`] entries; slot `base + q` holds the socket
//!   of queue `q` of the interface whose range starts at `base`.
//!
//! # Contract
//!
//! A frame received on interface `i`, queue `q`, is redirected to the socket in slot
//! `base(i) + q` if `i` has an entry, `q < queues(i)` and the slot holds a socket; otherwise it
//! passes to the kernel stack (`XDP_PASS`), exactly as with the per-interface program: nothing
//! is taken from queues or interfaces vwire does not serve. (The kernel itself refuses to
//! deliver a frame to a socket bound to another interface or queue, and drops it; with the
//! ranges kept disjoint, that can only happen in the instant a freed slot changes owner.)
//!
//! # Listing
//!
//! ```text
//!         r6 = r1                        ; the context, kept across the call
//!         r2 = *(u32 *)(r6 + 12)         ; ctx->ingress_ifindex
//!         *(u32 *)(r10 - 4) = r2         ; the key, on the stack
//!         r2 = r10
//!         r2 += -4
//!         r1 = ifaces ll                 ; the interface map, by fd (BPF_PSEUDO_MAP_FD)
//!         call bpf_map_lookup_elem
//!         if r0 == 0 goto pass           ; interface not served
//!         r3 = *(u32 *)(r6 + 16)         ; ctx->rx_queue_index
//!         r4 = *(u32 *)(r0 + 4)          ; queues served
//!         if r3 >= r4 goto pass          ; queue not served (unsigned)
//!         r2 = *(u32 *)(r0 + 0)          ; the interface's first slot
//!         r2 += r3                       ; the queue's slot
//!         r1 = xsks ll                   ; the XSKMAP, by fd
//!         r3 = XDP_PASS                  ; returned when the slot holds no socket
//!         call bpf_redirect_map
//!         exit
//! pass:   r0 = XDP_PASS
//!         exit
//! ```
//!
//! Bounds: the verifier requires the lookup's result to be checked against null before use, and
//! the two loads from it to lie within the 8-byte value, as above. It does not require a bound on
//! the XSKMAP key (`bpf_redirect_map` checks it against the map size at run time and returns the
//! `XDP_PASS` fallback); the queue is still checked against the interface's count, so that a
//! queue vwire does not serve never reaches a neighbour's slot. Userspace keeps every range
//! inside the map (`SlotAllocator`). Jump offsets come from the assembler of `super::asm`.
//!
//! # Sharing, slots and lifetime
//!
//! - **Scope: one [`SharedProgram`] per network namespace of the process**, because interface
//!   indexes are per namespace (and the program only sees the index). The first port opened in
//!   a namespace loads it ([`SharedProgram::get_or_load`], identified by the calling thread's
//!   namespace, as the interface name is); the ports' leases hold it, and the process-wide
//!   registry only weakly: the program and maps go with the namespace's last port. Unless the
//!   process keeps it ([`SharedProgram::keep_attached`], what vwire does for NSM): then it
//!   stays loaded, and attached to an interface of a private namespace, until the process
//!   exits, so that no port's attach or close ever changes the dispatcher.
//! - **Per port**: its own bpf_link (the shared program's fd attached to its interface), which
//!   detaches when the port is dropped or the process dies; and a [`SlotLease`]: `queues`
//!   contiguous slots (first fit) and the interface's map entry, written when the lease is
//!   taken (after the link). Dropping the lease deletes the interface's entry and its slots'
//!   sockets and frees the slots. (Closing a socket also removes it from the XSKMAP: the kernel
//!   does that.)
//! - **Stale entries**: an interface cannot be attached twice (the link attach fails with EBUSY),
//!   so an existing entry for the index of an interface being attached belongs to an interface
//!   that is gone (a deleted veth whose port is not closed yet) and whose index was reused. The
//!   new lease takes the entry over; the stale lease, when dropped, frees only its slots.
//! - **Concurrency**: a lease's map and slot changes happen under the program's mutex (bpf map
//!   updates take microseconds); attaching, the slow part, happens outside it.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use super::anchor::Anchor;
use super::asm::*;
use super::queue::MAX_QUEUES;
use crate::afxdp::abi::*;
use crate::afxdp::error::AfXdpError;
use crate::afxdp::sys::maps::{Map, Plain};
use crate::afxdp::sys::prog_load;

/// The program's name in the kernel (`bpftool prog`, `ip link`).
pub(crate) const NAME: &str = "vwire_shared";

/// Interfaces one namespace's shared program can serve (entries of `vwire_ifaces`): as many as
/// vwire's control plane has port ids (4096; NSM makes up to two AF_XDP ports per connection).
pub const MAX_IFACES: u32 = 4096;
/// XSKMAP slots shared by those interfaces: two queues per interface on average (an NSM veth
/// has one). 64 KiB of kernel memory.
pub const SLOTS: u32 = 8192;

/// Where the key of the lookup lives, in the program's stack frame.
const KEY_ON_STACK: i16 = -4;
/// Offsets of the fields of a [`SlotRange`], the interface map's value.
const VALUE_BASE: i16 = 0;
const VALUE_QUEUES: i16 = 4;

/// An interface's slots in the shared XSKMAP: `base .. base + queues`, for its receive queues
/// `0 .. queues`. Also the value of the interface map, as the program reads it (host order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SlotRange {
    /// The slot of queue 0.
    pub base: u32,
    /// The number of queues served.
    pub queues: u32,
}
const _: () = assert!(std::mem::size_of::<SlotRange>() == 8);
const _: () = assert!(std::mem::offset_of!(SlotRange, base) == VALUE_BASE as usize);
const _: () = assert!(std::mem::offset_of!(SlotRange, queues) == VALUE_QUEUES as usize);

// SAFETY: two u32s, no padding (asserted above), every bit pattern valid.
unsafe impl Plain for SlotRange {}

/// The instructions of the shared program (see the listing in the module docs), with the
/// interface map `ifaces_fd` and the XSKMAP `xsks_fd` patched in. Pure: the kernel is not
/// involved.
pub fn program(ifaces_fd: i32, xsks_fd: i32) -> Result<Vec<BpfInsn>, AfXdpError> {
    let mut a = Asm::default();
    let pass = a.label();
    a.emit(alu64_reg(BPF_MOV, R6, R1));
    a.emit(ldx(BPF_W, R2, R6, CTX_INGRESS_IFINDEX));
    a.emit(stx(BPF_W, R10, R2, KEY_ON_STACK));
    a.emit(alu64_reg(BPF_MOV, R2, R10));
    a.emit(alu64_imm(BPF_ADD, R2, i32::from(KEY_ON_STACK)));
    a.ld_map_fd(R1, ifaces_fd);
    a.emit(call(FN_MAP_LOOKUP_ELEM));
    a.jmp_imm(BPF_JEQ, R0, 0, pass);
    a.emit(ldx(BPF_W, R3, R6, CTX_RX_QUEUE));
    a.emit(ldx(BPF_W, R4, R0, VALUE_QUEUES));
    a.jmp_reg(BPF_JGE, R3, R4, pass);
    a.emit(ldx(BPF_W, R2, R0, VALUE_BASE));
    a.emit(alu64_reg(BPF_ADD, R2, R3));
    a.ld_map_fd(R1, xsks_fd);
    a.emit(alu64_imm(BPF_MOV, R3, XDP_PASS));
    a.emit(call(FN_REDIRECT_MAP));
    a.emit(exit());
    a.bind(pass);
    a.emit(alu64_imm(BPF_MOV, R0, XDP_PASS));
    a.emit(exit());
    a.finish()
}

/// Which XSKMAP slots are taken: contiguous ranges, first fit. Pure bookkeeping; cold path (a
/// scan of at most [`SLOTS`] flags per port opened).
#[derive(Debug)]
pub(crate) struct SlotAllocator {
    used: Vec<bool>,
}

impl SlotAllocator {
    /// `slots` free slots.
    pub(crate) fn new(slots: u32) -> Self {
        Self {
            used: vec![false; slots as usize],
        }
    }

    /// The lowest run of `queues` free slots, now taken; `None` if there is none (or `queues`
    /// is 0).
    pub(crate) fn alloc(&mut self, queues: u32) -> Option<SlotRange> {
        let n = queues as usize;
        if n == 0 {
            return None;
        }
        let mut run = 0usize;
        for i in 0..self.used.len() {
            run = if self.used[i] { 0 } else { run + 1 };
            if run == n {
                let start = i + 1 - n;
                let base = u32::try_from(start).ok()?;
                self.used[start..=i].iter_mut().for_each(|u| *u = true);
                return Some(SlotRange { base, queues });
            }
        }
        None
    }

    /// Gives `r` back (slots outside the map are ignored).
    pub(crate) fn free(&mut self, r: SlotRange) {
        let start = r.base as usize;
        let end = start.saturating_add(r.queues as usize).min(self.used.len());
        if let Some(s) = self.used.get_mut(start..end) {
            s.iter_mut().for_each(|u| *u = false);
        }
    }

    /// Slots taken.
    pub(crate) fn in_use(&self) -> u32 {
        u32::try_from(self.used.iter().filter(|&&u| u).count()).unwrap_or(u32::MAX)
    }
}

/// A network namespace: the nsfs device and inode of the calling thread's namespace.
type NetnsId = (u64, u64);

fn current_netns() -> std::io::Result<NetnsId> {
    // `thread-self`, not `self`: a thread may have entered another namespace (setns).
    let m = std::fs::metadata("/proc/thread-self/ns/net")?;
    Ok((m.dev(), m.ino()))
}

/// A namespace's shared program in the registry.
struct Entry {
    netns: NetnsId,
    program: Weak<SharedProgram>,
    /// Set by [`SharedProgram::keep_attached`]: the program then lives as long as the process.
    kept: Option<Arc<SharedProgram>>,
}

/// The loaded shared programs of the process, one per namespace, held weakly unless kept (see
/// the module docs); dead entries are pruned whenever it is locked.
static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn registry() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    let mut reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    reg.retain(|e| e.program.strong_count() > 0);
    reg
}

/// The slots and entries in use, changed only under the program's mutex.
#[derive(Debug)]
struct State {
    slots: SlotAllocator,
    /// The lease that wrote each interface's entry.
    owners: HashMap<u32, u64>,
    next_lease: u64,
}

/// The shared program of one network namespace and its maps (see the module docs).
#[derive(Debug)]
pub struct SharedProgram {
    // Field order is drop order: the anchor's link, the program (holding references to the
    // maps), then the maps.
    anchor: OnceLock<Anchor>,
    prog: OwnedFd,
    /// `vwire_ifaces`: interface index → its slots.
    ifaces: Map<u32, SlotRange>,
    /// `vwire_xsks`: slot → socket fd.
    xsks: Map<u32, u32>,
    state: Mutex<State>,
}

impl SharedProgram {
    /// The shared program of the calling thread's network namespace, loaded (with its maps) if
    /// no port of the namespace holds it. `ifname` is the interface it is wanted for, for error
    /// messages.
    pub fn get_or_load(ifname: &str) -> Result<Arc<Self>, AfXdpError> {
        // Held while loading, so two ports opened at once in a new namespace load it once.
        let mut reg = registry();
        Self::get_or_load_in(&mut reg, ifname)
    }

    fn get_or_load_in(reg: &mut Vec<Entry>, ifname: &str) -> Result<Arc<Self>, AfXdpError> {
        let netns = current_netns().map_err(|source| AfXdpError::Bpf {
            ifname: ifname.to_string(),
            what: "identifying the network namespace",
            source,
        })?;
        if let Some(p) = reg
            .iter()
            .find(|e| e.netns == netns)
            .and_then(|e| e.program.upgrade())
        {
            return Ok(p);
        }
        let p = Arc::new(Self::load(ifname)?);
        reg.push(Entry {
            netns,
            program: Arc::downgrade(&p),
            kept: None,
        });
        Ok(p)
    }

    /// The shared program of the calling thread's network namespace, if a port holds it (or it
    /// is kept).
    pub fn loaded() -> Option<Arc<Self>> {
        let netns = current_netns().ok()?;
        registry()
            .iter()
            .find(|e| e.netns == netns)
            .and_then(|e| e.program.upgrade())
    }

    /// Keeps the shared program of the calling thread's network namespace (loading it if
    /// needed) for the life of the process, attached to an interface of a private namespace of
    /// its own (`super::anchor`) so that it stays in the kernel's XDP dispatcher while no
    /// port has it. Then not even the first port attached, nor the last one closed, waits for
    /// an RCU grace period: for a long-lived forwarder whose ports all come and go (NSM). Call
    /// it once at startup, from the namespace the ports will be in; calling it again is a
    /// no-op. Needs CAP_SYS_ADMIN; on failure ports still work, the first one paying the wait.
    pub fn keep_attached() -> Result<Arc<Self>, AfXdpError> {
        let mut reg = registry();
        let p = Self::get_or_load_in(&mut reg, "(shared program)")?;
        if p.anchor.get().is_none() {
            let anchor = Anchor::new(&p.prog)?;
            // Under the registry lock: nobody else sets it.
            let _ = p.anchor.set(anchor);
        }
        if let Some(e) = reg
            .iter_mut()
            .find(|e| e.program.upgrade().is_some_and(|q| Arc::ptr_eq(&q, &p)))
        {
            e.kept = Some(p.clone());
        }
        Ok(p)
    }

    /// True if [`SharedProgram::keep_attached`] attached the program to its private interface.
    pub fn is_kept_attached(&self) -> bool {
        self.anchor.get().is_some()
    }

    fn load(ifname: &str) -> Result<Self, AfXdpError> {
        let ifaces = Map::create(
            ifname,
            BPF_MAP_TYPE_HASH,
            MAX_IFACES,
            BPF_F_NO_PREALLOC,
            "vwire_ifaces",
            "creating the shared interface map",
        )?;
        let xsks = Map::create(
            ifname,
            BPF_MAP_TYPE_XSKMAP,
            SLOTS,
            0,
            "vwire_xsks",
            "creating the shared XSKMAP",
        )?;
        let insns = program(ifaces.fd(), xsks.fd())?;
        let prog = prog_load(ifname, &insns, NAME)?;
        Ok(Self {
            anchor: OnceLock::new(),
            prog,
            ifaces,
            xsks,
            state: Mutex::new(State {
                slots: SlotAllocator::new(SLOTS),
                owners: HashMap::new(),
                next_lease: 0,
            }),
        })
    }

    /// The program, to attach.
    pub(crate) fn prog(&self) -> &OwnedFd {
        &self.prog
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `queues` slots for interface `ifindex` (named `ifname`) and writes its entry, so
    /// its queues are steered to whatever sockets [`SlotLease::insert`] puts in them. Call it
    /// once the program is attached to the interface (which proves no live lease serves it).
    pub(crate) fn lease(
        self: &Arc<Self>,
        ifname: &str,
        ifindex: u32,
        queues: u32,
    ) -> Result<SlotLease, AfXdpError> {
        let no_room = || AfXdpError::NoSlots {
            ifname: ifname.to_string(),
            queues,
        };
        if queues > MAX_QUEUES {
            return Err(no_room());
        }
        let mut st = self.state();
        if !st.owners.contains_key(&ifindex) && st.owners.len() >= MAX_IFACES as usize {
            return Err(no_room());
        }
        let range = st.slots.alloc(queues).ok_or_else(no_room)?;
        if let Err(source) = self.ifaces.update(&ifindex, &range) {
            st.slots.free(range);
            return Err(AfXdpError::Bpf {
                ifname: ifname.to_string(),
                what: "adding the interface to the shared XDP map",
                source,
            });
        }
        let id = st.next_lease;
        st.next_lease += 1;
        // Replaces a stale owner, if any (see the module docs).
        st.owners.insert(ifindex, id);
        Ok(SlotLease {
            program: self.clone(),
            ifindex,
            range,
            id,
        })
    }

    /// The interface map's entries as the kernel has them: (interface index, its slots).
    pub fn entries(&self) -> Result<Vec<(u32, SlotRange)>, AfXdpError> {
        let err = |source| AfXdpError::Bpf {
            ifname: String::new(),
            what: "reading the shared interface map",
            source,
        };
        let mut out = Vec::new();
        let mut key: Option<u32> = None;
        // Bounded: the map never holds more than MAX_IFACES entries. A key deleted while we
        // walk restarts the walk from the first key in the kernel, hence the bound.
        for _ in 0..=MAX_IFACES * 2 {
            let Some(k) = self.ifaces.next_key(key.as_ref()).map_err(err)? else {
                break;
            };
            if let Some(v) = self.ifaces.lookup(&k).map_err(err)? {
                if !out.iter().any(|&(i, _)| i == k) {
                    out.push((k, v));
                }
            }
            key = Some(k);
        }
        out.sort_unstable_by_key(|&(i, _)| i);
        Ok(out)
    }

    /// XSKMAP slots taken by live leases.
    pub fn slots_in_use(&self) -> u32 {
        self.state().slots.in_use()
    }
}

/// One interface's part of the shared maps: its slots and its entry, removed when dropped.
#[derive(Debug)]
pub struct SlotLease {
    program: Arc<SharedProgram>,
    ifindex: u32,
    range: SlotRange,
    id: u64,
}

impl SlotLease {
    /// The interface's slots.
    pub fn range(&self) -> SlotRange {
        self.range
    }

    /// Puts socket `xsk_fd` in the slot of queue `queue` (EINVAL beyond the lease's queues).
    pub(crate) fn insert(&self, queue: u32, xsk_fd: u32) -> std::io::Result<()> {
        if queue >= self.range.queues {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        let slot = self.range.base + queue;
        self.program.xsks.update(&slot, &xsk_fd)
    }
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        let p = &self.program;
        let mut st = p.state();
        if st.owners.get(&self.ifindex) == Some(&self.id) {
            st.owners.remove(&self.ifindex);
            match p.ifaces.delete(&self.ifindex) {
                Err(e) if e.raw_os_error() != Some(libc::ENOENT) => tracing::warn!(
                    ifindex = self.ifindex,
                    "removing the interface from the shared XDP map: {e}"
                ),
                _ => {}
            }
        }
        for slot in self.range.base..self.range.base.saturating_add(self.range.queues) {
            // Deleting an empty slot succeeds.
            if let Err(e) = p.xsks.delete(&slot) {
                tracing::warn!(slot, "emptying a shared XSKMAP slot: {e}");
            }
        }
        st.slots.free(self.range);
    }
}

#[cfg(test)]
mod tests;
