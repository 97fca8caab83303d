//! IPv4 fragmentation and reassembly (RFC 791 §2.3 and §3.2) for the memif example hosts.
//!
//! It is sans-IO: bytes go in and bytes come out, and the caller passes the time in. The
//! `memif_app` packet loop runs it on a memif port.
//!
//! - [`Fragments`] splits a datagram too large for a link MTU into fragments, the way a kernel
//!   splits the datagrams it sends:
//!   - every fragment except the last carries a multiple of 8 data bytes;
//!   - all of them carry the datagram's identification, MF is set on all but the last, and the
//!     fragment offset counts 8-byte units;
//!   - each fragment gets its own total length and header checksum.
//!
//!   The first fragment keeps all IP options; later fragments keep only the options whose
//!   "copied" flag is set (RFC 791 §3.1), padded to 4 bytes. DF is cleared. The caller is the
//!   datagram's originator, so it may fragment, as Linux does for a datagram that exceeds the
//!   route MTU (ICMP replies are sent with `IP_PMTUDISC_DONT`, and ping uses `IP_PMTUDISC_WANT`).
//! - [`Reassembler`] puts fragments back together. Fragments belong to the same datagram when
//!   source, destination, protocol and identification match (RFC 791's "bufid"). The result is a
//!   whole datagram: the first fragment's header with MF and the offset cleared, and a new total
//!   length and checksum.
//!
//! Bounds. Threat: a peer, or garbage on the link, must not be able to grow memory or hold
//! reassembly state forever.
//! - At most `slots` datagrams are reassembled at once (see [`Reassembler::new`]). A fragment of
//!   one more datagram evicts the one that started first.
//! - A datagram may be at most `max_datagram` bytes, header included. A fragment that reaches
//!   beyond that drops its datagram.
//! - A datagram that is still incomplete `timeout` after its first fragment arrived is dropped.
//! - All memory is allocated by [`Reassembler::new`]: a slot's buffer and an 8-byte-block bitmap
//!   of what it received. Nothing is allocated per fragment.
//!
//! Which fragments are refused (each has a [`FragDrop`] reason, and nothing is ever
//! overwritten):
//! - A header that is not valid IPv4 (version, lengths, checksum), and a non-last fragment whose
//!   data is empty or not a multiple of 8 bytes. The fragment is dropped; its datagram goes on.
//! - A fragment whose data was all received before, byte for byte (a duplicate). It is ignored.
//! - A fragment that overlaps data already received only in part, or with different bytes. It
//!   and its datagram are dropped: which copy is right cannot be known (RFC 5722 makes the same
//!   rule for IPv6, and Linux follows it for IPv4).
//! - A fragment that contradicts the datagram's end: a second last fragment with another end, or
//!   data beyond the end. It and its datagram are dropped.
//!
//! Panic freedom: every index into a packet or a slot goes through `get`/`get_mut`, and the
//! offset arithmetic works on values that 16-bit header fields bound. Input of any length or
//! content gives a [`FragDrop`] or an error, never a panic (property tests check this).

use std::time::{Duration, Instant};

use vwire_dataplane::wire::checksum::checksum;
use vwire_dataplane::wire::ipv4::{
    FLAG_MF, HEADER_LEN as MIN_HLEN, MAX_HEADER_LEN as MAX_HLEN, OFFSET_MASK,
};
use vwire_dataplane::wire::Ipv4Packet;

/// The smallest IPv4 MTU: a 60-byte header and 8 data bytes. RFC 791: "Every internet module
/// must be able to forward a datagram of 68 octets without further fragmentation." A smaller
/// MTU is taken as this one.
pub const MIN_MTU: usize = 68;

/// Datagrams a memif host reassembles at once. Two are enough on a point-to-point link: the
/// peer's echo request and its reply to ours, both in flight. Twice that leaves room for a
/// datagram or two that lost a fragment and wait for their timeout. Four slots of 10 KB cost
/// 40 KB.
pub const REASSEMBLY_SLOTS: usize = 4;

/// How long a datagram may wait for its missing fragments. This is RFC 791's recommended
/// initial timer of 15 s (Linux uses 30 s). Since a new datagram evicts the oldest one when
/// every slot is taken, a long timeout never blocks reassembly. It only keeps a stale datagram
/// in memory that is already allocated.
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(15);

/// The largest IPv4 datagram (the total length field is 16 bits).
const MAX_DATAGRAM: usize = 65535;
/// IP option types: end of list, no-operation, and the "copied" flag (RFC 791 §3.1).
const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_COPIED: u8 = 0x80;

/// Why a datagram cannot be split into fragments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// The bytes are not an IPv4 datagram with a consistent header: version, header length,
    /// total length, or options.
    #[error("not an IPv4 datagram with a consistent header")]
    Malformed,
    /// The datagram is itself a fragment (MF set or a non-zero offset).
    #[error("the datagram is already a fragment")]
    AlreadyFragment,
    /// The MTU cannot carry the header plus 8 data bytes.
    #[error("the MTU cannot carry the header and 8 bytes of data")]
    MtuTooSmall,
}

/// Copies `v` big-endian to `p[at..at + 2]`, if it is in bounds.
fn put16(p: &mut [u8], at: usize, v: u16) {
    if let Some(d) = p.get_mut(at..at.saturating_add(2)) {
        d.copy_from_slice(&v.to_be_bytes());
    }
}

/// Sets the header checksum of the IPv4 header `h`.
fn set_checksum(h: &mut [u8]) {
    put16(h, 10, 0);
    let c = checksum(h);
    put16(h, 10, c);
}

/// The fixed header fields [`Fragments`] and [`Reassembler`] need, read from a datagram whose
/// version, header length and total length are consistent with its length.
#[derive(Clone, Copy, Debug)]
struct Header {
    hlen: usize,
    total: usize,
    /// Fragment offset in bytes.
    offset: usize,
    more: bool,
    key: Key,
}

impl Header {
    fn parse(p: &[u8]) -> Option<Self> {
        let h = Ipv4Packet::new_checked(p).ok()?;
        Some(Self {
            hlen: h.header_len(),
            total: h.total_len(),
            offset: h.frag_offset(),
            more: h.more_frags(),
            key: Key {
                src: h.src_bytes(),
                dst: h.dst_bytes(),
                proto: h.protocol_raw(),
                id: h.ident(),
            },
        })
    }
}

/// The fragments of one datagram for one MTU (module docs). [`Fragments::write`] writes them
/// one by one. Nothing is allocated, and the datagram is only read.
#[derive(Clone, Debug)]
pub struct Fragments<'a> {
    /// The datagram, cut at its total length.
    dgram: &'a [u8],
    hlen: usize,
    /// The options later fragments repeat (those with the copied flag), padded with EOL.
    copied: [u8; MAX_HLEN - MIN_HLEN],
    /// Header length of every fragment after the first.
    rest_hlen: usize,
    /// Data bytes in the first fragment, and in each later one but the last.
    first_data: usize,
    rest_data: usize,
    count: usize,
}

impl<'a> Fragments<'a> {
    /// Plans the fragments of the IPv4 datagram at the start of `packet` (bytes after its total
    /// length are ignored) for a link of `mtu` bytes (at least [`MIN_MTU`]). A datagram that
    /// fits is one "fragment": itself, unchanged. The header checksum is not checked, because
    /// every fragment gets a new one.
    pub fn new(packet: &'a [u8], mtu: usize) -> Result<Self, FragmentError> {
        let h = Header::parse(packet).ok_or(FragmentError::Malformed)?;
        if h.more || h.offset != 0 {
            return Err(FragmentError::AlreadyFragment);
        }
        let dgram = packet.get(..h.total).ok_or(FragmentError::Malformed)?;
        let opts = dgram
            .get(MIN_HLEN..h.hlen)
            .ok_or(FragmentError::Malformed)?;
        let mut copied = [0u8; MAX_HLEN - MIN_HLEN];
        let mut n = 0;
        let mut i = 0;
        while let Some(&kind) = opts.get(i) {
            match kind {
                OPT_EOL => break,
                OPT_NOP => i += 1,
                _ => {
                    let len = usize::from(*opts.get(i + 1).ok_or(FragmentError::Malformed)?);
                    let opt = opts
                        .get(i..i + len)
                        .filter(|_| len >= 2)
                        .ok_or(FragmentError::Malformed)?;
                    if kind & OPT_COPIED != 0 {
                        copied
                            .get_mut(n..n + len)
                            .ok_or(FragmentError::Malformed)?
                            .copy_from_slice(opt);
                        n += len;
                    }
                    i += len;
                }
            }
        }
        let rest_hlen = MIN_HLEN + n.div_ceil(4) * 4;
        let data = h.total - h.hlen;
        let mut f = Self {
            dgram,
            hlen: h.hlen,
            copied,
            rest_hlen,
            first_data: data,
            rest_data: data,
            count: 1,
        };
        let mtu = mtu.clamp(MIN_MTU, MAX_DATAGRAM);
        if h.total <= mtu {
            return Ok(f);
        }
        // rest_hlen <= hlen, so an MTU that fits the first fragment fits the others.
        if mtu < h.hlen + 8 {
            return Err(FragmentError::MtuTooSmall);
        }
        // RFC 791 §3.1: the fragment offset counts 8-octet units, so every fragment but the last
        // carries a multiple of 8 data octets.
        f.first_data = (mtu - h.hlen) & !7;
        f.rest_data = (mtu - rest_hlen) & !7;
        // data > first_data: the datagram did not fit.
        f.count = 1 + (data - f.first_data).div_ceil(f.rest_data);
        Ok(f)
    }

    /// How many fragments there are (1 if the datagram fits the MTU).
    pub fn count(&self) -> usize {
        self.count
    }

    /// Writes fragment `i` (from 0) to the start of `out` and returns its length. Returns `None`
    /// if `i` is not below [`Fragments::count`] or the fragment does not fit in `out`.
    pub fn write(&self, i: usize, out: &mut [u8]) -> Option<usize> {
        if i >= self.count {
            return None;
        }
        if self.count == 1 {
            out.get_mut(..self.dgram.len())?.copy_from_slice(self.dgram);
            return Some(self.dgram.len());
        }
        let data = self.dgram.len() - self.hlen;
        let (hlen, at) = match i {
            0 => (self.hlen, 0),
            _ => (
                self.rest_hlen,
                self.first_data
                    .checked_add((i - 1).checked_mul(self.rest_data)?)?,
            ),
        };
        let more = i + 1 < self.count;
        let len = if i == 0 {
            self.first_data
        } else {
            self.rest_data.min(data.checked_sub(at)?)
        };
        let flen = hlen + len;
        let frag = out.get_mut(..flen)?;
        if i == 0 {
            frag[..hlen].copy_from_slice(self.dgram.get(..hlen)?);
        } else {
            frag[..MIN_HLEN].copy_from_slice(self.dgram.get(..MIN_HLEN)?);
            frag[MIN_HLEN..hlen].copy_from_slice(self.copied.get(..hlen - MIN_HLEN)?);
        }
        // hlen ≥ 20: the header of a parsed datagram, or 20 + copied options.
        let mut ip = Ipv4Packet::new_unchecked(&mut frag[..hlen]);
        if i != 0 {
            ip.set_version_and_header_len(hlen);
        }
        ip.set_total_len(u16::try_from(flen).ok()?);
        // DF and the reserved bit cleared (module docs); offset in 8-byte units.
        let units = u16::try_from(at / 8).ok().filter(|&u| u <= OFFSET_MASK)?;
        ip.set_flags_and_offset(units | if more { FLAG_MF } else { 0 });
        set_checksum(&mut frag[..hlen]);
        let src = self.hlen.checked_add(at)?;
        frag[hlen..].copy_from_slice(self.dgram.get(src..src.checked_add(len)?)?);
        Some(flen)
    }
}

/// What identifies the fragments of one datagram (RFC 791 §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    id: u16,
}

/// Why [`Reassembler::push`] did not keep a fragment. The module docs give the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragDrop {
    /// Not an IPv4 packet with a valid header (version, lengths, header checksum).
    Malformed,
    /// A whole datagram (MF clear, offset 0), not a fragment.
    NotFragment,
    /// MF set with data that is empty or not a multiple of 8 bytes.
    BadLength,
    /// Data beyond the size bound. Its datagram is dropped too.
    TooBig,
    /// All its data was received before, with the same bytes. It is ignored, and its datagram
    /// goes on.
    Duplicate,
    /// It overlaps data already received only in part, or with different bytes. Its datagram
    /// is dropped too.
    Overlap,
    /// It contradicts the datagram's end (another last fragment with another end, or data
    /// beyond the end). Its datagram is dropped too.
    Inconsistent,
}

/// What happened to a fragment given to [`Reassembler::push`].
#[derive(Debug, PartialEq, Eq)]
pub enum Reassembly<'a> {
    /// It completed its datagram, which is here whole (module docs). The slice is valid until
    /// the next call.
    Complete(&'a [u8]),
    /// It was kept. Its datagram still misses fragments.
    Pending,
    /// It was not kept.
    Dropped(FragDrop),
}

/// What a [`Reassembler`] did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Datagrams completed.
    pub completed: u64,
    /// Datagrams dropped because they were not complete within the timeout.
    pub timed_out: u64,
    /// Datagrams dropped to make room for a new one.
    pub evicted: u64,
    /// Datagrams dropped because of one of their fragments ([`FragDrop::TooBig`],
    /// [`FragDrop::Overlap`], [`FragDrop::Inconsistent`]).
    pub failed: u64,
    /// Fragments not kept, for any [`FragDrop`] reason.
    pub dropped_fragments: u64,
}

/// One datagram being reassembled.
#[derive(Debug)]
struct Slot {
    /// Whose fragments it holds and when the first one came; `None` for a free slot.
    owner: Option<(Key, Instant)>,
    /// The first fragment's header length, 0 until the first fragment arrived. The header sits
    /// just before the data: at `buf[MAX_HLEN - hlen..MAX_HLEN]`.
    hlen: usize,
    /// Data length, once the last fragment arrived.
    total: Option<usize>,
    /// Data bytes received. The received ranges never overlap, so the datagram is complete
    /// when this equals `total`.
    received: usize,
    /// The end of the furthest data received.
    end: usize,
    /// One bit per 8-byte block of data received.
    blocks: Box<[u64]>,
    /// The header room, then the data.
    buf: Box<[u8]>,
}

impl Slot {
    /// Counts the blocks of `first..last` that are set.
    fn set_blocks(&self, first: usize, last: usize) -> usize {
        (first..last)
            .filter(|b| {
                self.blocks
                    .get(b / 64)
                    .is_some_and(|w| w & (1u64 << (b % 64)) != 0)
            })
            .count()
    }

    fn mark_blocks(&mut self, first: usize, last: usize) {
        for b in first..last {
            if let Some(w) = self.blocks.get_mut(b / 64) {
                *w |= 1u64 << (b % 64);
            }
        }
    }
}

/// Reassembles IPv4 fragments within fixed bounds; see the module docs.
#[derive(Debug)]
pub struct Reassembler {
    slots: Box<[Slot]>,
    max_datagram: usize,
    timeout: Duration,
    stats: ReassemblyStats,
}

impl Reassembler {
    /// A reassembler of at most `slots` datagrams at once (at least 1), each at most
    /// `max_datagram` bytes (header included; from [`MIN_MTU`] to 65535). A datagram is dropped
    /// if it is still incomplete `timeout` after its first fragment. All memory is allocated
    /// here, about `slots × max_datagram` bytes.
    pub fn new(slots: usize, max_datagram: usize, timeout: Duration) -> Self {
        let max_datagram = max_datagram.clamp(MIN_MTU, MAX_DATAGRAM);
        let max_data = max_datagram - MIN_HLEN;
        let words = max_data.div_ceil(8).div_ceil(64);
        let slots = (0..slots.max(1))
            .map(|_| Slot {
                owner: None,
                hlen: 0,
                total: None,
                received: 0,
                end: 0,
                blocks: vec![0u64; words].into_boxed_slice(),
                buf: vec![0u8; MAX_HLEN + max_data].into_boxed_slice(),
            })
            .collect();
        Self {
            slots,
            max_datagram,
            timeout,
            stats: ReassemblyStats::default(),
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// How many datagrams are being reassembled.
    pub fn pending(&self) -> usize {
        self.slots.iter().filter(|s| s.owner.is_some()).count()
    }

    /// Drops the datagrams whose first fragment came `timeout` or more before `now`.
    /// [`Reassembler::push`] calls this first.
    pub fn expire(&mut self, now: Instant) {
        for s in self.slots.iter_mut() {
            if let Some((_, t)) = s.owner {
                if now.saturating_duration_since(t) >= self.timeout {
                    s.owner = None;
                    self.stats.timed_out += 1;
                }
            }
        }
    }

    /// Takes the IPv4 fragment at the start of `packet` (bytes after its total length are
    /// ignored) received at `now`.
    pub fn push(&mut self, packet: &[u8], now: Instant) -> Reassembly<'_> {
        self.expire(now);
        match self.accept(packet, now) {
            Ok(None) => Reassembly::Pending,
            Ok(Some(i)) => self.complete(i),
            Err(d) => {
                self.stats.dropped_fragments += 1;
                Reassembly::Dropped(d)
            }
        }
    }

    /// Drops the datagram in slot `i` because of a bad fragment, and returns why.
    fn fail(&mut self, i: usize, why: FragDrop) -> FragDrop {
        if let Some(s) = self.slots.get_mut(i) {
            s.owner = None;
            self.stats.failed += 1;
        }
        why
    }

    /// A free slot for `key`: a free one, or else the one whose datagram started first.
    fn claim(&mut self, key: Key, now: Instant) -> usize {
        let i = match self.slots.iter().position(|s| s.owner.is_none()) {
            Some(i) => i,
            None => {
                self.stats.evicted += 1;
                self.slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.owner.map(|(_, t)| t))
                    .map_or(0, |(i, _)| i)
            }
        };
        if let Some(s) = self.slots.get_mut(i) {
            s.owner = Some((key, now));
            s.hlen = 0;
            s.total = None;
            s.received = 0;
            s.end = 0;
            s.blocks.fill(0);
        }
        i
    }

    /// Stores the fragment. Returns the slot if it completed its datagram.
    fn accept(&mut self, p: &[u8], now: Instant) -> Result<Option<usize>, FragDrop> {
        let h = Header::parse(p).ok_or(FragDrop::Malformed)?;
        let header = p.get(..h.hlen).ok_or(FragDrop::Malformed)?;
        if checksum(header) != 0 {
            return Err(FragDrop::Malformed);
        }
        if !h.more && h.offset == 0 {
            return Err(FragDrop::NotFragment);
        }
        let data = p.get(h.hlen..h.total).ok_or(FragDrop::Malformed)?;
        // RFC 791: a fragment with MF set carries a multiple of 8 data octets, because its end
        // is the next fragment's offset.
        if h.more && (data.is_empty() || data.len() % 8 != 0) {
            return Err(FragDrop::BadLength);
        }
        // Both at most 65535 + 8191 × 8: no overflow.
        let end = h.offset + data.len();
        let found = self
            .slots
            .iter()
            .position(|s| s.owner.is_some_and(|(k, _)| k == h.key));
        if end + MIN_HLEN > self.max_datagram {
            return Err(match found {
                Some(i) => self.fail(i, FragDrop::TooBig),
                None => FragDrop::TooBig,
            });
        }
        let i = match found {
            Some(i) => i,
            None => self.claim(h.key, now),
        };
        let Some(s) = self.slots.get_mut(i) else {
            return Err(FragDrop::Malformed);
        };
        let contradicts = match s.total {
            Some(t) => end > t || (!h.more && end != t),
            None => !h.more && end < s.end,
        };
        if contradicts {
            return Err(self.fail(i, FragDrop::Inconsistent));
        }
        let (first, last) = (h.offset / 8, end.div_ceil(8));
        let stored = MAX_HLEN + h.offset..MAX_HLEN + end;
        match s.set_blocks(first, last) {
            0 => {}
            n if n == last - first && s.buf.get(stored.clone()) == Some(data) => {
                return Err(FragDrop::Duplicate);
            }
            _ => return Err(self.fail(i, FragDrop::Overlap)),
        }
        let Some(dst) = s.buf.get_mut(stored) else {
            return Err(self.fail(i, FragDrop::TooBig));
        };
        dst.copy_from_slice(data);
        s.mark_blocks(first, last);
        s.received += data.len();
        s.end = s.end.max(end);
        if h.offset == 0 {
            let Some(room) = s.buf.get_mut(MAX_HLEN - h.hlen..MAX_HLEN) else {
                return Err(self.fail(i, FragDrop::Malformed));
            };
            room.copy_from_slice(header);
            s.hlen = h.hlen;
        }
        if !h.more {
            s.total = Some(end);
        }
        match s.total {
            Some(t) if s.hlen > 0 && s.received == t => {
                if s.hlen + t > self.max_datagram {
                    return Err(self.fail(i, FragDrop::TooBig));
                }
                Ok(Some(i))
            }
            _ => Ok(None),
        }
    }

    /// Finishes the complete datagram in slot `i`: header fields, then the slot is free again.
    fn complete(&mut self, i: usize) -> Reassembly<'_> {
        let Some(s) = self.slots.get_mut(i) else {
            return Reassembly::Dropped(FragDrop::Malformed);
        };
        s.owner = None;
        let (hlen, data) = (s.hlen, s.total.unwrap_or(0));
        let Ok(total) = u16::try_from(hlen + data) else {
            return Reassembly::Dropped(FragDrop::TooBig);
        };
        let Some(dgram) = s.buf.get_mut(MAX_HLEN - hlen..MAX_HLEN + data) else {
            return Reassembly::Dropped(FragDrop::Malformed);
        };
        // hlen ≥ 20: it is the header of the first fragment, parsed by `accept`.
        if let Some(h) = dgram.get_mut(..hlen).filter(|h| h.len() >= MIN_HLEN) {
            let mut ip = Ipv4Packet::new_unchecked(&mut *h);
            ip.set_total_len(total);
            ip.set_flags_and_offset(0); // MF, the offset (and DF, meaningless now) cleared
            set_checksum(h);
        }
        self.stats.completed += 1;
        Reassembly::Complete(dgram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpNumber, Ipv4Header, Ipv4Options};
    use proptest::prelude::*;

    const MTU: usize = 1446;

    /// A datagram with `data` bytes of a pattern after a header with `options`, identification
    /// `id`, fragment field 0 and a valid checksum.
    fn datagram(data: usize, id: u16, options: &[u8]) -> Vec<u8> {
        let payload: Vec<u8> = (0..data)
            .map(|i| u8::try_from(i * 13 % 256).unwrap())
            .collect();
        let mut h = Ipv4Header::new(
            u16::try_from(data).unwrap(),
            64,
            IpNumber::ICMP,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
        )
        .unwrap();
        h.identification = id;
        h.dont_fragment = false;
        h.options = Ipv4Options::try_from(options).unwrap();
        h.set_payload_len(data).unwrap();
        h.header_checksum = h.calc_header_checksum();
        let mut p = h.to_bytes().to_vec();
        p.extend_from_slice(&payload);
        p
    }

    fn fragments(d: &[u8], mtu: usize) -> Vec<Vec<u8>> {
        let f = Fragments::new(d, mtu).unwrap();
        (0..f.count())
            .map(|i| {
                let mut out = vec![0xa5; mtu + 100];
                let n = f.write(i, &mut out).unwrap();
                out.truncate(n);
                out
            })
            .collect()
    }

    fn reassembler() -> Reassembler {
        Reassembler::new(REASSEMBLY_SLOTS, 9970, REASSEMBLY_TIMEOUT)
    }

    /// Pushes `frags` in order; returns the datagram the last one completed.
    fn feed(r: &mut Reassembler, frags: &[&Vec<u8>], now: Instant) -> Option<Vec<u8>> {
        let mut done = None;
        for (k, f) in frags.iter().enumerate() {
            match r.push(f, now) {
                Reassembly::Complete(d) => {
                    assert_eq!(k, frags.len() - 1, "completed early");
                    done = Some(d.to_vec());
                }
                Reassembly::Pending => assert!(k < frags.len() - 1, "not completed"),
                Reassembly::Dropped(why) => panic!("fragment {k} dropped: {why:?}"),
            }
        }
        done
    }

    /// Checks the RFC 791 rules on `frags` of a datagram with `data` bytes: sizes, offsets,
    /// flags, identification, checksums.
    fn check(frags: &[Vec<u8>], mtu: usize, data: usize, id: u16) {
        let mut next = 0;
        for (k, f) in frags.iter().enumerate() {
            assert!(f.len() <= mtu, "fragment {k}: {} > {mtu}", f.len());
            let (h, rest) = Ipv4Header::from_slice(f).unwrap();
            assert_eq!(h.header_checksum, h.calc_header_checksum(), "fragment {k}");
            assert_eq!(h.identification, id);
            assert!(!h.dont_fragment);
            let last = k == frags.len() - 1;
            assert_eq!(h.more_fragments, !last, "fragment {k}");
            assert_eq!(usize::from(h.fragment_offset.value()) * 8, next);
            assert_eq!(usize::from(h.total_len), f.len());
            if !last {
                assert_eq!(rest.len() % 8, 0, "fragment {k}");
                assert!(!rest.is_empty());
            }
            next += rest.len();
        }
        assert_eq!(next, data);
    }

    #[test]
    fn round_trips_at_the_boundaries() {
        let t0 = Instant::now();
        for mtu in [MIN_MTU, 576, MTU, 1500] {
            let per = (mtu - 20) & !7;
            let mut sizes = vec![0, 1, 7, 8, 9, mtu - 21, mtu - 20, mtu - 19];
            for k in 1..4 {
                sizes.extend([k * per - 1, k * per, k * per + 1, k * per + 8]);
            }
            sizes.push(9950);
            for data in sizes {
                let d = datagram(data, 0x1234, &[]);
                let frags = fragments(&d, mtu);
                let want = if d.len() <= mtu {
                    1
                } else {
                    1 + (data - per).div_ceil(per)
                };
                assert_eq!(frags.len(), want, "mtu {mtu} data {data}");
                if frags.len() == 1 {
                    assert_eq!(frags[0], d, "a datagram that fits is unchanged");
                    continue;
                }
                check(&frags, mtu, data, 0x1234);
                let refs: Vec<&Vec<u8>> = frags.iter().collect();
                let mut r = reassembler();
                assert_eq!(feed(&mut r, &refs, t0), Some(d.clone()), "mtu {mtu} {data}");
                // Reversed, too.
                let rev: Vec<&Vec<u8>> = frags.iter().rev().collect();
                assert_eq!(feed(&mut r, &rev, t0), Some(d), "reversed");
                assert_eq!(r.pending(), 0);
            }
        }
    }

    #[test]
    fn only_copied_options_are_repeated() {
        // Security (type 130, copied, 11 bytes), record route (7, not copied, 7 bytes), NOP,
        // EOL padding: 20 bytes of options.
        let mut opts = vec![130, 11, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        opts.extend([7, 7, 4, 0, 0, 0, 0]);
        opts.extend([1, 0]);
        let d = datagram(3000, 7, &opts);
        let frags = fragments(&d, 1000);
        let (h0, _) = Ipv4Header::from_slice(&frags[0]).unwrap();
        assert_eq!(h0.options.as_slice(), &opts[..]);
        for f in &frags[1..] {
            let (h, _) = Ipv4Header::from_slice(f).unwrap();
            // The 11-byte security option, padded to 12.
            assert_eq!(
                h.options.as_slice(),
                &[130, 11, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
            );
        }
        let data = 3000;
        let mut next = 0;
        for f in &frags {
            let (h, rest) = Ipv4Header::from_slice(f).unwrap();
            assert_eq!(h.header_checksum, h.calc_header_checksum());
            assert_eq!(usize::from(h.fragment_offset.value()) * 8, next);
            next += rest.len();
        }
        assert_eq!(next, data);
        let refs: Vec<&Vec<u8>> = frags.iter().collect();
        assert_eq!(feed(&mut reassembler(), &refs, Instant::now()), Some(d));
    }

    #[test]
    fn fragmenting_refuses_what_it_cannot_do() {
        let d = datagram(100, 1, &[]);
        assert_eq!(
            Fragments::new(&d[..10], MTU).unwrap_err(),
            FragmentError::Malformed
        );
        // A timestamp option whose length runs past the header.
        let bad_opt = datagram(100, 1, &[68, 9, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            Fragments::new(&bad_opt, MIN_MTU).unwrap_err(),
            FragmentError::Malformed
        );
        let frags = fragments(&datagram(200, 1, &[]), MIN_MTU);
        assert_eq!(
            Fragments::new(&frags[0], MIN_MTU).unwrap_err(),
            FragmentError::AlreadyFragment
        );
        // A 60-byte header of a copied option leaves 8 bytes per fragment at the minimum MTU;
        // a smaller MTU is raised to the minimum.
        let mut opt = [0u8; 40];
        opt[..2].copy_from_slice(&[130, 40]);
        let big = datagram(100, 1, &opt);
        assert_eq!(fragments(&big, 10).len(), 13);
        let f = Fragments::new(&big, 10).unwrap();
        assert_eq!(f.write(13, &mut [0; 100]), None);
        assert_eq!(f.write(0, &mut [0; 10]), None, "too small a buffer");
    }

    #[test]
    fn a_3000_byte_echo_in_1446_bytes_is_three_fragments() {
        let d = datagram(3008, 99, &[]);
        let frags = fragments(&d, MTU);
        assert_eq!(
            frags.iter().map(Vec::len).collect::<Vec<_>>(),
            [1444, 1444, 180]
        );
        let offsets: Vec<(u16, bool)> = frags
            .iter()
            .map(|f| {
                let h = Ipv4Header::from_slice(f).unwrap().0;
                (h.fragment_offset.value(), h.more_fragments)
            })
            .collect();
        assert_eq!(offsets, [(0, true), (178, true), (356, false)]);
        check(&frags, MTU, 3008, 99);
    }

    #[test]
    fn any_order_and_duplicates() {
        let t0 = Instant::now();
        let d = datagram(4000, 5, &[]);
        let frags = fragments(&d, MTU);
        assert_eq!(frags.len(), 3);
        let orders = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        let mut r = reassembler();
        for o in orders {
            let refs: Vec<&Vec<u8>> = o.iter().map(|&k| &frags[k]).collect();
            assert_eq!(feed(&mut r, &refs, t0), Some(d.clone()), "{o:?}");
        }
        // A duplicate is ignored; the datagram still completes.
        for dup in 0..2 {
            for (k, f) in frags.iter().take(2).enumerate() {
                assert_eq!(r.push(f, t0), Reassembly::Pending);
                if k == dup {
                    assert_eq!(r.push(f, t0), Reassembly::Dropped(FragDrop::Duplicate));
                }
            }
            assert_eq!(r.push(&frags[2], t0), Reassembly::Complete(&d[..]));
        }
        // A duplicate of the last one, too.
        assert_eq!(r.push(&frags[2], t0), Reassembly::Pending);
        assert_eq!(
            r.push(&frags[2], t0),
            Reassembly::Dropped(FragDrop::Duplicate)
        );
        assert_eq!(r.push(&frags[1], t0), Reassembly::Pending);
        assert_eq!(r.push(&frags[0], t0), Reassembly::Complete(&d[..]));
        let s = r.stats();
        assert_eq!((s.completed, s.dropped_fragments, s.failed), (9, 3, 0));
    }

    #[test]
    fn a_missing_fragment_times_out() {
        let t0 = Instant::now();
        let d = datagram(4000, 5, &[]);
        let frags = fragments(&d, MTU);
        let mut r = reassembler();
        assert_eq!(r.push(&frags[0], t0), Reassembly::Pending);
        assert_eq!(r.push(&frags[1], t0), Reassembly::Pending);
        r.expire(t0 + REASSEMBLY_TIMEOUT - Duration::from_millis(1));
        assert_eq!(r.pending(), 1);
        // The last fragment, too late: it starts a new datagram that lacks the others.
        let late = t0 + REASSEMBLY_TIMEOUT;
        assert_eq!(r.push(&frags[2], late), Reassembly::Pending);
        assert_eq!(r.stats().timed_out, 1);
        assert_eq!(r.pending(), 1);
        r.expire(late + REASSEMBLY_TIMEOUT);
        assert_eq!(r.pending(), 0);
        assert_eq!(r.stats().timed_out, 2);
        assert_eq!(r.stats().completed, 0);
    }

    #[test]
    fn too_many_pending_datagrams_evict_the_oldest() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let all: Vec<(Vec<u8>, Vec<Vec<u8>>)> = (0..=u16::try_from(REASSEMBLY_SLOTS).unwrap())
            .map(|id| {
                let d = datagram(3000, 100 + id, &[]);
                let f = fragments(&d, MTU);
                (d, f)
            })
            .collect();
        let mut r = reassembler();
        // The first fragment of each, the oldest first; the last one evicts datagram 0.
        for (k, (_, f)) in all.iter().enumerate() {
            assert_eq!(r.push(&f[0], t0 + ms(k as u64)), Reassembly::Pending);
        }
        assert_eq!(r.pending(), REASSEMBLY_SLOTS);
        assert_eq!(r.stats().evicted, 1);
        for (k, (d, f)) in all.iter().enumerate().skip(1) {
            let t = t0 + ms(10);
            assert_eq!(r.push(&f[1], t), Reassembly::Pending);
            assert_eq!(r.push(&f[2], t), Reassembly::Complete(&d[..]), "{k}");
        }
        // Datagram 0 lost its first fragment: the rest no longer completes it.
        let (_, f) = &all[0];
        assert_eq!(r.push(&f[1], t0 + ms(20)), Reassembly::Pending);
        assert_eq!(r.push(&f[2], t0 + ms(20)), Reassembly::Pending);
        assert_eq!(r.stats().completed, REASSEMBLY_SLOTS as u64);
    }

    /// `f` with its fragment field set to `offset` bytes and `more`, and a valid checksum.
    fn refrag(f: &[u8], offset: usize, more: bool) -> Vec<u8> {
        let mut f = f.to_vec();
        let v = u16::try_from(offset / 8).unwrap() | if more { FLAG_MF } else { 0 };
        put16(&mut f, 6, v);
        set_checksum(&mut f[..20]);
        f
    }

    /// A fragment with `data` bytes of `fill` at `offset`.
    fn frag_of(id: u16, offset: usize, data: usize, more: bool, fill: u8) -> Vec<u8> {
        let mut d = datagram(data, id, &[]);
        d[20..].fill(fill);
        refrag(&d, offset, more)
    }

    #[test]
    fn bogus_fragments_are_refused() {
        let t0 = Instant::now();
        let mut r = reassembler();
        let whole = datagram(100, 1, &[]);
        assert_eq!(
            r.push(&whole, t0),
            Reassembly::Dropped(FragDrop::NotFragment)
        );
        let mut bad = frag_of(1, 0, 16, true, 1);
        bad[8] ^= 1;
        assert_eq!(r.push(&bad, t0), Reassembly::Dropped(FragDrop::Malformed));
        assert_eq!(
            r.push(&bad[..19], t0),
            Reassembly::Dropped(FragDrop::Malformed)
        );
        assert_eq!(
            r.push(&frag_of(1, 0, 12, true, 1), t0),
            Reassembly::Dropped(FragDrop::BadLength)
        );
        assert_eq!(
            r.push(&frag_of(1, 0, 0, true, 1), t0),
            Reassembly::Dropped(FragDrop::BadLength)
        );
        assert_eq!(r.pending(), 0, "refused before taking a slot");

        // Beyond the size bound: the datagram goes too.
        assert_eq!(r.push(&frag_of(2, 0, 16, true, 1), t0), Reassembly::Pending);
        assert_eq!(
            r.push(&frag_of(2, 9952, 16, false, 1), t0),
            Reassembly::Dropped(FragDrop::TooBig)
        );
        assert_eq!(r.pending(), 0);
        assert_eq!(
            r.push(&frag_of(2, 65528, 8, false, 1), t0),
            Reassembly::Dropped(FragDrop::TooBig)
        );

        // A partial overlap drops the datagram; so does the same range with other bytes.
        for (off, len, fill) in [(8, 16, 1), (0, 16, 2), (0, 8, 1)] {
            assert_eq!(r.push(&frag_of(3, 0, 16, true, 1), t0), Reassembly::Pending);
            assert_eq!(
                r.push(&frag_of(3, off, len, true, fill), t0),
                if (off, len, fill) == (0, 8, 1) {
                    Reassembly::Dropped(FragDrop::Duplicate)
                } else {
                    Reassembly::Dropped(FragDrop::Overlap)
                },
                "{off} {len} {fill}"
            );
            if r.pending() > 0 {
                // Contained and equal: kept. Finish it.
                assert!(matches!(
                    r.push(&frag_of(3, 16, 4, false, 1), t0),
                    Reassembly::Complete(d) if d.len() == 40
                ));
            }
        }

        // Two different ends, or data past the end.
        assert_eq!(
            r.push(&frag_of(4, 16, 4, false, 1), t0),
            Reassembly::Pending
        );
        assert_eq!(
            r.push(&frag_of(4, 16, 8, false, 1), t0),
            Reassembly::Dropped(FragDrop::Inconsistent)
        );
        assert_eq!(
            r.push(&frag_of(4, 16, 4, false, 1), t0),
            Reassembly::Pending
        );
        assert_eq!(
            r.push(&frag_of(4, 16, 8, true, 1), t0),
            Reassembly::Dropped(FragDrop::Inconsistent)
        );
        assert_eq!(r.push(&frag_of(4, 32, 8, true, 1), t0), Reassembly::Pending);
        assert_eq!(
            r.push(&frag_of(4, 16, 4, false, 1), t0),
            Reassembly::Dropped(FragDrop::Inconsistent)
        );
        assert_eq!(r.pending(), 0);
        let s = r.stats();
        assert_eq!(s.failed, 6);
        assert_eq!(s.completed, 1);
    }

    #[test]
    fn the_reassembled_header_is_the_first_fragments() {
        let d = datagram(2000, 0xbeef, &[1, 1, 1, 0]);
        let frags = fragments(&d, 600);
        let refs: Vec<&Vec<u8>> = frags.iter().rev().collect();
        let got = feed(&mut reassembler(), &refs, Instant::now()).unwrap();
        assert_eq!(got, d);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any datagram, any MTU, fragments in any order with duplicates: the original again.
        #[test]
        fn shuffled_fragments_reassemble(
            data in 0usize..9950,
            mtu in 0usize..3000,
            seed in any::<u64>(),
            dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let d = datagram(data, 42, &[]);
            let frags = fragments(&d, mtu);
            if frags.len() == 1 {
                prop_assert!(d.len() <= mtu.max(MIN_MTU));
                return Ok(());
            }
            check(&frags, mtu.max(MIN_MTU), data, 42);
            // A Fisher-Yates shuffle driven by a small LCG.
            let mut order: Vec<usize> = (0..frags.len()).collect();
            let mut x = seed;
            for i in (1..order.len()).rev() {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, usize::try_from(x >> 33).unwrap() % (i + 1));
            }
            let mut r = reassembler();
            let t0 = Instant::now();
            let mut done = None;
            for (n, &k) in order.iter().enumerate() {
                if let Reassembly::Complete(got) = r.push(&frags[k], t0) {
                    done = Some(got.to_vec());
                }
                // A duplicate of one pushed so far (before the datagram is complete).
                if let Some(dup) = dups.get(n).filter(|_| n + 1 < order.len()) {
                    let j = order[dup.index(n + 1)];
                    prop_assert_eq!(
                        r.push(&frags[j], t0),
                        Reassembly::Dropped(FragDrop::Duplicate)
                    );
                }
            }
            prop_assert_eq!(done, Some(d));
        }

        /// Garbage and mutated fragments never panic, and a completed datagram is never more
        /// than the bound.
        #[test]
        fn garbage_never_panics(
            packets in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..120), any::<u16>(), 0usize..40, any::<u8>()),
                1..20,
            ),
        ) {
            let mut r = Reassembler::new(2, 200, Duration::from_millis(5));
            let t0 = Instant::now();
            let base = frag_of(9, 0, 64, true, 3);
            for (k, (bytes, frag, at, flip)) in packets.into_iter().enumerate() {
                // Half garbage, half a valid fragment with a changed fragment field and byte.
                let p = if k % 2 == 0 {
                    bytes
                } else {
                    let mut p = base.clone();
                    put16(&mut p, 6, frag);
                    set_checksum(&mut p[..20]);
                    if let Some(b) = p.get_mut(20 + at) { *b ^= flip; }
                    p
                };
                let now = t0 + Duration::from_millis(k as u64);
                if let Reassembly::Complete(d) = r.push(&p, now) {
                    prop_assert!(d.len() <= 200);
                }
                let _ = Fragments::new(&p, at * 10).map(|f| {
                    let mut out = [0u8; 200];
                    (0..f.count()).for_each(|i| { let _ = f.write(i, &mut out); });
                });
            }
        }
    }
}
