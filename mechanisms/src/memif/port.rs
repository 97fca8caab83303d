//! The memif data path: a [`vwire_dataplane::Port`] over a connected session, both roles, copy
//! mode, chained buffers.
//!
//! Who writes what (spec §6): on every ring the client writes `head` and the server `tail`.
//! - server RX, S2M ring: packets are `[last_head, head)`; after copying them out, `tail =
//!   last_head` returns the buffers.
//! - server TX, M2S ring: the client posted empty buffers up to `head`; the server fills
//!   `[tail, head)` and moves `tail`.
//! - client TX, S2M ring: fills `[head, tail + size)` with its own buffers and moves `head`.
//! - client RX, M2S ring: packets are `[last_tail, tail)`; after copying them out it refills
//!   (posts empty buffers) up to `last_tail + size` and moves `head`. It refills on every receive
//!   poll, so the server can always send.
//!
//! Indices are published with `Release` after the descriptors and data are written, and read with
//! `Acquire` before the descriptors are read: each pair is the producer/consumer hand-off of the
//! spec's §6. Our own index is read back `Relaxed` from a local copy.
//!
//! Hostile peers: a peer can publish any index and any descriptor. Counts are clamped to the ring
//! size; every (region, offset, length) the peer wrote is checked with [`Regions::resolve`]
//! before a copy (as a client, buffer addresses come from our own layout and only the length is
//! taken from the ring, clamped to the buffer size); a chain longer than a pool frame is dropped.
//! Each such packet is dropped and counted (`bad_desc`, `too_long`, `bad_index`).
//!
//! Connect and disconnect: the control thread publishes a [`Session`] through a [`Link`], and
//! takes it back with [`Link::detach`], which waits until every worker has passed a quiescent
//! point before the session (and its memory maps) can be dropped. The port notices a new session
//! by its generation and resets its cursors.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;

use vwire_dataplane::buffer::{BufIdx, BufferPool, HEADROOM};
use vwire_dataplane::counters::{DropReason, PortCounters};
use vwire_dataplane::port::{Burst, Port};
use vwire_dataplane::rcu::Qsbr;

use super::shm::{Regions, Ring, DESC_FLAG_NEXT, RING_FLAG_MASK_INT};

/// Which end of the protocol we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Master: listens, maps what the client gives, writes `tail`.
    Server,
    /// Slave: connects, allocates the memory, writes `head`.
    Client,
}

/// One ring of a session with its interrupt eventfd.
#[derive(Debug)]
pub struct SessionRing {
    /// The ring.
    pub ring: Ring,
    /// Its eventfd (created by the client).
    pub eventfd: OwnedFd,
    /// Client only: index of this ring's first buffer slot in the buffer area.
    pub first_slot: u32,
}

/// A connected memif interface: everything the data path needs, immutable once published.
#[derive(Debug)]
pub struct Session {
    /// Generation, unique per connection of a link.
    pub generation: u64,
    /// Our role.
    pub role: Role,
    /// The mapped regions.
    pub regions: Regions,
    /// Client → server rings, by queue.
    pub s2m: Vec<SessionRing>,
    /// Server → client rings, by queue.
    pub m2s: Vec<SessionRing>,
    /// Client only: the buffer size and where buffers start in region 0.
    pub buffer_size: u32,
    /// Client only: offset of buffer slot 0 in region 0.
    pub buffer_offset: u32,
}

impl Session {
    /// Client only: where buffer `slot` is.
    #[inline]
    fn client_buffer(&self, ring: &SessionRing, idx: u16) -> (u32, u32) {
        let slot = ring.first_slot + u32::from(idx & (ring.ring.size() - 1));
        (
            self.buffer_offset + slot * self.buffer_size,
            self.buffer_size,
        )
    }

    /// The rings we receive on (we are their packet consumer and own their flags).
    pub fn rx_rings(&self) -> &[SessionRing] {
        match self.role {
            Role::Server => &self.s2m,
            Role::Client => &self.m2s,
        }
    }

    /// Sets MASK_INT on the rings we consume: this port polls.
    pub fn mask_rx_interrupts(&self) {
        for r in self.rx_rings() {
            r.ring.flags().store(RING_FLAG_MASK_INT, Ordering::Relaxed);
        }
    }
}

/// The connection state shared by the control driver (writer) and the port (reader).
#[derive(Debug)]
pub struct Link {
    session: AtomicPtr<Session>,
    qsbr: Arc<Qsbr>,
    generation: AtomicU64,
    /// Connections made so far (for metrics and tests).
    pub connects: AtomicU64,
}

// The raw pointer is either null or from Box::into_raw, owned by the link (see `attach`).
impl Link {
    /// A link with no session, whose sessions are reclaimed under `qsbr` (the engine's).
    pub fn new(qsbr: Arc<Qsbr>) -> Arc<Self> {
        Arc::new(Self {
            session: AtomicPtr::new(std::ptr::null_mut()),
            qsbr,
            generation: AtomicU64::new(0),
            connects: AtomicU64::new(0),
        })
    }

    /// The next session generation.
    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Publishes a connected session. Any previous one is detached first.
    pub fn attach(&self, s: Session) {
        drop(self.detach());
        s.mask_rx_interrupts();
        // Release: the session's contents (mappings, initialised rings) are visible to a worker
        // that acquires the pointer.
        self.session
            .store(Box::into_raw(Box::new(s)), Ordering::Release);
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the session back once no worker can still be using it; the caller drops it, which
    /// unmaps the memory and closes the fds.
    pub fn detach(&self) -> Option<Box<Session>> {
        let p = self.session.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if p.is_null() {
            return None;
        }
        self.qsbr.synchronize();
        // SAFETY: `p` came from Box::into_raw in `attach`, is no longer reachable through the
        // link, and after synchronize no worker holds a reference to it (module docs).
        Some(unsafe { Box::from_raw(p) })
    }

    /// True while a session is attached.
    pub fn is_up(&self) -> bool {
        !self.session.load(Ordering::Relaxed).is_null()
    }

    /// The current session, for the worker that owns the port. Valid until the worker's next
    /// quiescent point, which cannot happen inside a port call.
    #[inline]
    fn current(&self) -> Option<&Session> {
        let p = self.session.load(Ordering::Acquire);
        // SAFETY: non-null pointers come from `attach` and are freed only by `detach` after
        // every worker passed a quiescent point; port methods run inside `Worker::poll_once`,
        // between two quiescent points of the owning worker, so the session outlives this use.
        unsafe { p.as_ref() }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let p = *self.session.get_mut();
        if !p.is_null() {
            // SAFETY: `&mut self`: no worker can hold the link (it holds an Arc), so none can
            // be using the session.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

/// Per-queue cursors of the port (our local copies of the indices we own or have consumed).
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    /// Server: last_head of S2M. Client: last_tail of M2S.
    rx: u16,
    /// Server: our tail of M2S. Client: our head of S2M.
    tx: u16,
    /// Client: our head of M2S (refilled up to here).
    refill: u16,
}

/// Most queue pairs a port handles (the config refuses more).
pub const MAX_QUEUES: usize = 64;

/// A memif port: the worker side of a [`Link`].
pub struct MemifPort {
    // hot: accessed by the worker every burst
    link: Arc<Link>,
    generation: u64,
    cursors: Vec<Cursor>,
    next_rx_queue: usize,
    tx_drop: DropReason,
    // cold
    name: String,
}

impl MemifPort {
    /// A port over `link`.
    pub fn new(name: &str, link: Arc<Link>) -> Self {
        Self {
            link,
            generation: 0,
            cursors: Vec::with_capacity(MAX_QUEUES),
            next_rx_queue: 0,
            tx_drop: DropReason::LinkDown,
            name: name.to_string(),
        }
    }
}

/// Resets a port's cursors when a new session appears (once per connection, not per packet:
/// `cursors` was sized when the port was created, so this does not allocate up to 64 queues).
#[inline]
fn sync(generation: &mut u64, cursors: &mut Vec<Cursor>, s: &Session) {
    if s.generation == *generation {
        return;
    }
    *generation = s.generation;
    cursors.clear();
    {
        for q in 0..s.s2m.len().max(s.m2s.len()) {
            let c = match s.role {
                Role::Server => Cursor {
                    rx: s
                        .s2m
                        .get(q)
                        .map_or(0, |r| r.ring.tail().load(Ordering::Acquire)),
                    tx: s
                        .m2s
                        .get(q)
                        .map_or(0, |r| r.ring.tail().load(Ordering::Acquire)),
                    refill: 0,
                },
                Role::Client => Cursor::default(),
            };
            cursors.push(c);
        }
    }
}

fn notify(r: &SessionRing) {
    // SeqCst fence: our index store is ordered before this flag load, pairing with the consumer
    // clearing the flag before re-checking the index (`prepare_sleep`).
    std::sync::atomic::fence(Ordering::SeqCst);
    if r.ring.flags().load(Ordering::Relaxed) & RING_FLAG_MASK_INT == 0 {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to the ring's eventfd; EAGAIN (counter full)
        // means the peer is due to wake anyway.
        unsafe { libc::write(r.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// Receives from one ring into `out`. Returns packets added.
#[inline]
fn receive(
    s: &Session,
    r: &SessionRing,
    cur: &mut Cursor,
    pool: &mut BufferPool,
    out: &mut Burst,
    ctr: &PortCounters,
) -> usize {
    let ring = &r.ring;
    let size = ring.size();
    // Acquire: pairs with the peer's release of the index it produces (module docs).
    let published = match s.role {
        Role::Server => ring.head().load(Ordering::Acquire),
        Role::Client => ring.tail().load(Ordering::Acquire),
    };
    let mut avail = published.wrapping_sub(cur.rx);
    if avail > size {
        // A peer publishing more than a ring's worth (VPP fix 76d102d1ad2 clamps the same way).
        ctr.drop(DropReason::BadIndex, 1);
        avail = size;
    }
    let mut consumed: u16 = 0;
    let mut added = 0;
    while consumed < avail && out.room() > 0 {
        let Some(b) = pool.alloc() else { break };
        let mut len = 0usize;
        let mut n: u16 = 0;
        let mut bad: Option<DropReason> = None;
        let mut complete = false;
        while consumed + n < avail {
            let idx = cur.rx.wrapping_add(consumed + n);
            let d = ring.read_desc(idx);
            n += 1;
            let src = match s.role {
                Role::Server => s
                    .regions
                    .resolve(d.region, d.offset, d.length)
                    .map(|p| (p, d.length)),
                Role::Client => {
                    let (off, cap) = s.client_buffer(r, idx);
                    let dlen = d.length.min(cap);
                    s.regions.resolve(0, off, dlen).map(|p| (p, dlen))
                }
            };
            match src {
                Some(_) if bad.is_some() => {}
                Some((p, dlen)) => {
                    let dlen = dlen as usize;
                    if len + dlen > pool.max_packet() {
                        bad = Some(DropReason::TooLong);
                    } else {
                        let dst = &mut pool.frame_mut(b)[HEADROOM + len..HEADROOM + len + dlen];
                        // SAFETY: `p` points at `dlen` bytes inside a mapped region (checked by
                        // resolve) and `dst` is our own frame. The peer may write the source
                        // concurrently: the bytes are treated as untrusted data only.
                        unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dlen) };
                        len += dlen;
                    }
                }
                None => bad = Some(DropReason::BadDesc),
            }
            if d.flags & DESC_FLAG_NEXT == 0 {
                complete = true;
                break;
            }
        }
        if !complete {
            // The rest of the chain is not published yet: take it next time.
            pool.free(b);
            break;
        }
        consumed += n;
        if bad.is_some() || len == 0 {
            pool.free(b);
            ctr.drop(bad.unwrap_or(DropReason::BadDesc), 1);
            continue;
        }
        pool.set_meta(b, HEADROOM, len);
        out.push(b);
        added += 1;
    }
    cur.rx = cur.rx.wrapping_add(consumed);
    match s.role {
        // Release: our copies out of these buffers are done before the client reuses them.
        Role::Server => {
            if consumed > 0 {
                ring.tail().store(cur.rx, Ordering::Release)
            }
        }
        Role::Client => refill(s, r, cur),
    }
    added
}

/// Client: posts empty buffers on an M2S ring up to `last_tail + size`.
#[inline]
fn refill(s: &Session, r: &SessionRing, cur: &mut Cursor) {
    let ring = &r.ring;
    let room = ring.size().wrapping_sub(cur.refill.wrapping_sub(cur.rx));
    if room == 0 {
        return;
    }
    for k in 0..room {
        let idx = cur.refill.wrapping_add(k);
        let (offset, cap) = s.client_buffer(r, idx);
        ring.write_desc(
            idx,
            super::shm::Desc {
                flags: 0,
                region: 0,
                length: cap,
                offset,
            },
        );
    }
    cur.refill = cur.refill.wrapping_add(room);
    // Release: the descriptors are written before the server sees the new head.
    ring.head().store(cur.refill, Ordering::Release);
}

/// Why a transmit stopped early.
enum TxStop {
    Full,
    Bad,
}

/// Transmits `pkts` on one ring. Returns packets sent (copied; the caller frees them).
#[inline]
fn transmit(
    s: &Session,
    r: &SessionRing,
    cur: &mut Cursor,
    pool: &BufferPool,
    pkts: &[BufIdx],
) -> (usize, Option<TxStop>) {
    let ring = &r.ring;
    let size = ring.size();
    let free = match s.role {
        // The client posted buffers up to head.
        Role::Server => {
            let f = ring.head().load(Ordering::Acquire).wrapping_sub(cur.tx);
            if f > size {
                return (0, Some(TxStop::Bad));
            }
            f
        }
        // The server returned buffers up to tail.
        Role::Client => {
            let in_flight = cur.tx.wrapping_sub(ring.tail().load(Ordering::Acquire));
            if in_flight > size {
                return (0, Some(TxStop::Bad));
            }
            size - in_flight
        }
    };
    let mut used: u16 = 0;
    let mut sent = 0;
    let mut stop = None;
    'packets: for &b in pkts {
        let data = pool.packet(b);
        let mut off = 0usize;
        let mut n: u16 = 0;
        loop {
            if used + n >= free {
                stop = Some(TxStop::Full); // roll back: this packet's descriptors are not published
                break 'packets;
            }
            let idx = cur.tx.wrapping_add(used + n);
            let (region, offset, cap) = match s.role {
                Role::Server => {
                    let d = ring.read_desc(idx);
                    (d.region, d.offset, d.length)
                }
                Role::Client => {
                    let (o, c) = s.client_buffer(r, idx);
                    (0, o, c)
                }
            };
            let chunk = (data.len() - off).min(cap as usize);
            #[allow(clippy::cast_possible_truncation)] // chunk <= cap, a u32
            let chunk32 = chunk as u32;
            let Some(dst) = s
                .regions
                .resolve(region, offset, chunk32)
                .filter(|_| cap > 0)
            else {
                stop = Some(TxStop::Bad);
                break 'packets;
            };
            // SAFETY: `dst` has room for `chunk` bytes inside a mapped region (resolve); the
            // source is our own frame.
            unsafe { std::ptr::copy_nonoverlapping(data[off..].as_ptr(), dst, chunk) };
            off += chunk;
            n += 1;
            let flags = if off < data.len() { DESC_FLAG_NEXT } else { 0 };
            match s.role {
                Role::Server => ring.write_len(idx, flags, chunk32),
                Role::Client => ring.write_desc(
                    idx,
                    super::shm::Desc {
                        flags,
                        region,
                        length: chunk32,
                        offset,
                    },
                ),
            }
            if off == data.len() {
                break;
            }
        }
        used += n;
        sent += 1;
    }
    if used > 0 {
        cur.tx = cur.tx.wrapping_add(used);
        // Release: descriptors and data are written before the peer sees the index.
        match s.role {
            Role::Server => ring.tail().store(cur.tx, Ordering::Release),
            Role::Client => ring.head().store(cur.tx, Ordering::Release),
        }
        notify(r);
    }
    (sent, stop)
}

impl Port for MemifPort {
    fn name(&self) -> &str {
        &self.name
    }

    #[inline]
    fn rx_burst(&mut self, pool: &mut BufferPool, out: &mut Burst, ctr: &PortCounters) -> usize {
        let Some(s) = self.link.current() else {
            return 0;
        };
        sync(&mut self.generation, &mut self.cursors, s);
        let rings = match s.role {
            Role::Server => &s.s2m,
            Role::Client => &s.m2s,
        };
        let nq = rings.len().min(self.cursors.len());
        let mut added = 0;
        for k in 0..nq {
            let q = (self.next_rx_queue + k) % nq;
            added += receive(s, &rings[q], &mut self.cursors[q], pool, out, ctr);
        }
        self.next_rx_queue = (self.next_rx_queue + 1) % nq.max(1);
        added
    }

    #[inline]
    fn tx_burst(&mut self, pool: &mut BufferPool, pkts: &[BufIdx], _ctr: &PortCounters) -> usize {
        let Some(s) = self.link.current() else {
            self.tx_drop = DropReason::LinkDown;
            return 0;
        };
        sync(&mut self.generation, &mut self.cursors, s);
        let rings = match s.role {
            Role::Server => &s.m2s,
            Role::Client => &s.s2m,
        };
        // One TX queue per worker would spread load; with one worker per port, queue 0 carries
        // all transmits, as in the AF_XDP port.
        let (Some(r), Some(cur)) = (rings.first(), self.cursors.first_mut()) else {
            self.tx_drop = DropReason::LinkDown;
            return 0;
        };
        let (sent, stop) = transmit(s, r, cur, pool, pkts);
        self.tx_drop = match stop {
            Some(TxStop::Bad) => DropReason::BadDesc,
            _ => DropReason::TxRingFull,
        };
        pool.free_burst(&pkts[..sent]);
        sent
    }

    fn tx_drop_reason(&self) -> DropReason {
        self.tx_drop
    }

    fn wait_fds(&self, out: &mut Vec<std::os::fd::RawFd>) {
        if let Some(s) = self.link.current() {
            out.extend(s.rx_rings().iter().map(|r| r.eventfd.as_raw_fd()));
        }
    }

    /// Interrupt mode while the worker sleeps: clear MASK_INT on our receive rings so that the
    /// peer signals their eventfds, then re-check the rings (a packet published before the flag
    /// was cleared sent no signal).
    fn prepare_sleep(&mut self) -> bool {
        let Some(s) = self.link.current() else {
            return false;
        };
        sync(&mut self.generation, &mut self.cursors, s);
        for r in s.rx_rings() {
            r.ring.flags().store(0, Ordering::Relaxed);
        }
        // SeqCst fence: the flag store is ordered before the index loads below, pairing with
        // the peer publishing its index before reading the flag; one side always sees the other.
        std::sync::atomic::fence(Ordering::SeqCst);
        s.rx_rings().iter().zip(&self.cursors).any(|(r, c)| {
            let published = match s.role {
                Role::Server => r.ring.head().load(Ordering::Acquire),
                Role::Client => r.ring.tail().load(Ordering::Acquire),
            };
            published != c.rx
        })
    }

    /// Back to polling: set MASK_INT again and clear the eventfds.
    fn after_sleep(&mut self) {
        let Some(s) = self.link.current() else { return };
        s.mask_rx_interrupts();
        for r in s.rx_rings() {
            let mut v: u64 = 0;
            // SAFETY: reads 8 bytes into a live u64 from the ring's non-blocking eventfd;
            // EAGAIN (nothing signalled) is expected and ignored.
            unsafe { libc::read(r.eventfd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        }
    }

    #[inline]
    fn flush(&mut self, _pool: &mut BufferPool, _ctr: &PortCounters) {}
}
