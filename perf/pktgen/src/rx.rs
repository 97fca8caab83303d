//! The receiver's accounting: finding the signature in a frame, per-stream sequence tracking
//! (loss, reordering, duplicates) and the latency histogram. Pure: no devices, no clock (times
//! are passed in), no allocation after construction, so it is tested on crafted inputs.
//!
//! Sequence tracking per stream keeps the highest sequence number seen and a bitmap of the last
//! [`WINDOW`] numbers below it:
//! - a number above the highest is new (the numbers skipped are missing, for now);
//! - a number inside the window is a duplicate if its bit is set, else a late (reordered)
//!   arrival that fills a gap;
//! - a number older than the window is counted as late and unique (`late_untracked`): it cannot
//!   be checked for duplication. The window is 64 Ki numbers, far more than any port's rings
//!   hold in flight, so this stays zero unless a device holds packets for long.
//!
//! Loss is what was sent minus the unique numbers received (the sender's count is known at the
//! end of a run); reordered is the number of late arrivals (RFC 4737's "reordered packets").
//!
//! Frames are trusted for nothing: every header walk is bounds-checked, and a frame without a
//! well-formed signature is counted as foreign.

use crate::stream::{MAGIC, SIG_LEN, VXLAN_PORT};

/// Sequence numbers remembered below the highest one seen, for duplicate detection.
pub const WINDOW: u64 = 1 << 16;
const WORDS: usize = (WINDOW / 64) as usize;

/// What a frame's signature says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The tag: trial in the high nibble, sending stream in the low one.
    pub tag: u8,
    /// The sequence number.
    pub seq: u64,
    /// The transmit time, ns.
    pub ns: u64,
}

/// How deep encapsulations are followed (VXLAN in SRv6 is two).
const MAX_DEPTH: usize = 3;

/// Finds pktgen's signature behind the innermost UDP header of `frame` (an Ethernet frame,
/// possibly carrying VXLAN or SRv6 with an Ethernet, IPv4 or IPv6 payload).
pub fn parse(frame: &[u8]) -> Option<Signature> {
    let mut f = frame;
    // Start: an Ethernet frame.
    let mut next = Next::Eth;
    for _ in 0..=MAX_DEPTH {
        let (ip_ver, rest) = match next {
            Next::Eth => {
                let et = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
                let rest = f.get(14..)?;
                match et {
                    0x0800 => (4, rest),
                    0x86dd => (6, rest),
                    _ => return None,
                }
            }
            Next::Ip4 => (4, f),
            Next::Ip6 => (6, f),
        };
        let (proto, payload) = if ip_ver == 4 {
            let ihl = usize::from(rest.first()? & 0x0f) * 4;
            if rest.first()? >> 4 != 4 || ihl < 20 {
                return None;
            }
            (*rest.get(9)?, rest.get(ihl..)?)
        } else {
            if rest.first()? >> 4 != 6 {
                return None;
            }
            (*rest.get(6)?, rest.get(40..)?)
        };
        match proto {
            17 => {
                let dport = u16::from_be_bytes([*payload.get(2)?, *payload.get(3)?]);
                let data = payload.get(8..)?;
                if dport == VXLAN_PORT && data.first()? & 0x08 != 0 && data.len() >= 8 + 14 {
                    f = data.get(8..)?;
                    next = Next::Eth;
                    continue;
                }
                return signature(data);
            }
            43 => {
                // Routing header (the SRH): next header, hdr ext len in 8-byte units.
                let nh = *payload.first()?;
                let len = 8 + usize::from(*payload.get(1)?) * 8;
                f = payload.get(len..)?;
                next = match nh {
                    143 => Next::Eth,
                    4 => Next::Ip4,
                    41 => Next::Ip6,
                    _ => return None,
                };
            }
            4 => {
                f = payload;
                next = Next::Ip4;
            }
            41 => {
                f = payload;
                next = Next::Ip6;
            }
            _ => return None,
        }
    }
    None
}

#[derive(Clone, Copy)]
enum Next {
    Eth,
    Ip4,
    Ip6,
}

fn signature(data: &[u8]) -> Option<Signature> {
    let s = data.get(..SIG_LEN)?;
    if s[0] != MAGIC {
        return None;
    }
    let mut seq = [0u8; 8];
    let mut ns = [0u8; 8];
    seq.copy_from_slice(&s[2..10]);
    ns.copy_from_slice(&s[10..18]);
    Some(Signature {
        tag: s[1],
        seq: u64::from_be_bytes(seq),
        ns: u64::from_be_bytes(ns),
    })
}

/// Sequence accounting of one stream. See the module docs.
#[derive(Clone, Debug)]
pub struct SeqTracker {
    started: bool,
    max: u64,
    bits: Box<[u64; WORDS]>,
    /// Unique sequence numbers received.
    pub unique: u64,
    /// Received again.
    pub duplicates: u64,
    /// Arrived after a higher number.
    pub reordered: u64,
    /// Arrived more than [`WINDOW`] numbers late (counted in `unique` and `reordered`).
    pub late_untracked: u64,
}

impl Default for SeqTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl SeqTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> Self {
        Self {
            started: false,
            max: 0,
            bits: Box::new([0; WORDS]),
            unique: 0,
            duplicates: 0,
            reordered: 0,
            late_untracked: 0,
        }
    }

    #[inline]
    fn bit(&mut self, seq: u64) -> (&mut u64, u64) {
        let i = seq % WINDOW;
        (&mut self.bits[(i / 64) as usize], 1 << (i % 64))
    }

    /// Accounts one received sequence number.
    #[inline]
    pub fn on(&mut self, seq: u64) {
        if !self.started || seq > self.max {
            let from = if self.started { self.max + 1 } else { seq };
            if seq - from >= WINDOW {
                self.bits.fill(0);
            } else {
                // Clear the bits of the numbers skipped (they leave the window's past).
                let mut s = from;
                while s < seq {
                    if s % 64 == 0 && seq - s >= 64 {
                        self.bits[((s % WINDOW) / 64) as usize] = 0;
                        s += 64;
                    } else {
                        let (w, m) = self.bit(s);
                        *w &= !m;
                        s += 1;
                    }
                }
            }
            self.started = true;
            self.max = seq;
            let (w, m) = self.bit(seq);
            *w |= m;
            self.unique += 1;
            return;
        }
        if self.max - seq >= WINDOW {
            self.late_untracked += 1;
            self.reordered += 1;
            self.unique += 1;
            return;
        }
        let (w, m) = self.bit(seq);
        if *w & m != 0 {
            self.duplicates += 1;
        } else {
            *w |= m;
            self.reordered += 1;
            self.unique += 1;
        }
    }

    /// Sent minus received (zero if more arrived than were sent, which duplicates do not cause).
    pub fn lost(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.unique)
    }
}

/// Sub-buckets per power of two: 32 gives at most 1/32 ≈ 3 % relative error, plenty for
/// latencies that vary by far more between runs on this class of machine.
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// Values below this are counted exactly.
const LINEAR: u64 = 2 * SUB as u64;
/// Buckets: exact below 64, then 32 per power of two up to 2^64.
pub const BUCKETS: usize = 2 * SUB + (64 - SUB_BITS as usize - 1) * SUB;

/// A latency histogram in nanoseconds: log-linear buckets (HDR-style), fixed size, no allocation
/// after [`Histogram::new`].
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Box<[u64]>,
    /// Samples.
    pub count: u64,
    /// Sum of the samples (for the mean).
    pub sum: u128,
    /// Smallest sample.
    pub min: u64,
    /// Largest sample.
    pub max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// The bucket of `v`.
    #[inline]
    pub fn index(v: u64) -> usize {
        if v < LINEAR {
            return usize::try_from(v).unwrap_or(0); // below 64
        }
        let p = 63 - v.leading_zeros(); // ≥ SUB_BITS + 1
        let shift = p - SUB_BITS;
        let m = usize::try_from(v >> shift).unwrap_or(SUB) - SUB; // v >> shift is SUB..2 SUB
        2 * SUB + (p - SUB_BITS - 1) as usize * SUB + m
    }

    /// The smallest value of bucket `i`.
    pub fn lower(i: usize) -> u64 {
        if i < 2 * SUB {
            return i as u64;
        }
        let k = i - 2 * SUB;
        let p = u32::try_from(k / SUB).unwrap_or(0) + SUB_BITS + 1; // below 64
        let m = (k % SUB + SUB) as u64;
        m << (p - SUB_BITS)
    }

    /// The largest value of bucket `i`.
    pub fn upper(i: usize) -> u64 {
        if i + 1 >= BUCKETS {
            u64::MAX
        } else {
            Self::lower(i + 1) - 1
        }
    }

    /// Records one sample.
    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.count += 1;
        self.sum += u128::from(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a += b;
        }
        self.count += o.count;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }

    /// The value at quantile `q` (0..=1): the upper bound of the bucket holding it, capped at
    /// the largest sample. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        #[allow(clippy::cast_possible_truncation)] // saturating float cast, clamped next
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i).min(self.max).max(self.min);
            }
        }
        self.max
    }

    /// The non-empty buckets as (lower bound ns, count).
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| (Self::lower(i), c))
            .collect()
    }
}

/// Streams a receiver tells apart: the tag's low nibble.
pub const STREAMS: usize = 16;

/// Everything one receive port counts during one trial.
#[derive(Debug)]
pub struct RxAccount {
    /// The trial whose frames count (the tag's high nibble).
    pub trial: u8,
    /// Per sending stream.
    pub streams: Vec<SeqTracker>,
    /// Latency of counted frames.
    pub latency: Histogram,
    /// Frames with a signature of another trial (late frames of an earlier one).
    pub stale: u64,
    /// Frames without a signature.
    pub foreign: u64,
    /// Frames received, any kind.
    pub packets: u64,
    /// Bytes received, any kind (buffer bytes, no FCS).
    pub bytes: u64,
}

impl RxAccount {
    /// Counters for trial `trial` (0..16).
    pub fn new(trial: u8) -> Self {
        Self {
            trial: trial & 0x0f,
            streams: (0..STREAMS).map(|_| SeqTracker::new()).collect(),
            latency: Histogram::new(),
            stale: 0,
            foreign: 0,
            packets: 0,
            bytes: 0,
        }
    }

    /// Accounts one received frame at time `now` (ns, the clock of the stamps).
    #[inline]
    pub fn on_frame(&mut self, frame: &[u8], now: u64) {
        self.packets += 1;
        self.bytes += frame.len() as u64;
        match parse(frame) {
            Some(s) if s.tag >> 4 == self.trial => {
                self.streams[usize::from(s.tag & 0x0f)].on(s.seq);
                self.latency.record(now.saturating_sub(s.ns));
            }
            Some(_) => self.stale += 1,
            None => self.foreign += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(seqs: &[u64]) -> SeqTracker {
        let mut t = SeqTracker::new();
        for &s in seqs {
            t.on(s);
        }
        t
    }

    #[test]
    fn in_order_counts_everything_once() {
        let t = track(&(0..1000).collect::<Vec<_>>());
        assert_eq!((t.unique, t.duplicates, t.reordered), (1000, 0, 0));
        assert_eq!(t.lost(1000), 0);
    }

    #[test]
    fn gaps_are_loss() {
        let t = track(&[0, 1, 2, 5, 6, 9]);
        assert_eq!(t.unique, 6);
        assert_eq!(t.lost(10), 4, "3, 4, 7, 8 missing");
        assert_eq!((t.duplicates, t.reordered), (0, 0));
    }

    #[test]
    fn late_arrivals_fill_gaps_and_count_as_reordered() {
        let t = track(&[0, 2, 1, 3, 6, 4, 5]);
        assert_eq!((t.unique, t.reordered, t.duplicates), (7, 3, 0));
        assert_eq!(t.lost(7), 0);
    }

    #[test]
    fn duplicates_are_counted_not_received_twice() {
        let t = track(&[0, 1, 1, 2, 0, 2, 2]);
        assert_eq!((t.unique, t.duplicates, t.reordered), (3, 4, 0));
        // A duplicate of a late one, and of the newest.
        let t = track(&[0, 3, 1, 1, 3]);
        assert_eq!((t.unique, t.duplicates, t.reordered), (3, 2, 1));
        assert_eq!(t.lost(4), 1);
    }

    #[test]
    fn a_stream_may_start_anywhere() {
        let t = track(&[100, 101, 99]);
        assert_eq!((t.unique, t.reordered), (3, 1));
    }

    #[test]
    fn the_window_slides_and_forgets_cleanly() {
        // A jump beyond the window clears it: old numbers become untracked, not duplicates.
        let t = track(&[0, 1, WINDOW * 3, 1, WINDOW * 3]);
        assert_eq!(t.unique, 4);
        assert_eq!(t.late_untracked, 1);
        assert_eq!(t.duplicates, 1);
        // Sliding by less than the window keeps the recent bits and clears the skipped ones:
        // a number skipped then arriving late is not a duplicate even where its slot was used
        // one window earlier.
        let mut t = SeqTracker::new();
        for s in 0..WINDOW {
            t.on(s);
        }
        t.on(WINDOW + 10); // skips WINDOW..WINDOW+10, whose slots held 0..10
        t.on(WINDOW + 3);
        assert_eq!((t.duplicates, t.reordered), (0, 1));
        t.on(WINDOW - 1); // still inside the window, seen: duplicate
        assert_eq!(t.duplicates, 1);
    }

    #[test]
    fn histogram_buckets_are_contiguous_and_bound_the_error() {
        for i in 0..BUCKETS - 1 {
            assert_eq!(
                Histogram::upper(i) + 1,
                Histogram::lower(i + 1),
                "bucket {i}"
            );
            assert_eq!(Histogram::index(Histogram::lower(i)), i);
        }
        for v in [0u64, 1, 63, 64, 65, 100, 1000, 12_345, 1 << 40, u64::MAX] {
            let i = Histogram::index(v);
            assert!(Histogram::lower(i) <= v && v <= Histogram::upper(i), "{v}");
            if v >= 64 {
                let width = Histogram::upper(i) - Histogram::lower(i) + 1;
                assert!(width <= v / 32 + 1, "{v}: width {width}");
            }
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000); // 1 µs .. 1 ms
        }
        let close = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.04;
        assert!(close(h.quantile(0.5), 500_000), "{}", h.quantile(0.5));
        assert!(close(h.quantile(0.99), 990_000), "{}", h.quantile(0.99));
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!((h.min, h.max, h.count), (1000, 1_000_000, 1000));
        let mut g = Histogram::new();
        g.merge(&h);
        g.merge(&h);
        assert_eq!(g.count, 2000);
        assert_eq!(g.quantile(0.5), h.quantile(0.5));
        assert_eq!(Histogram::new().quantile(0.5), 0);
    }
}
