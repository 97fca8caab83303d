//! The Internet checksum (RFC 1071), the one implementation in vwire.
//!
//! Sums are one's complement sums in **native byte order** (RFC 1071 §2(B): the sum is byte-order
//! independent), so no byte is swapped until a value is compared with a number or stored:
//! [`sum`] and [`add`] give native-order values, [`ne16`] turns a network-order field value into
//! the word a sum over memory sees, and a complemented sum is stored with `to_ne_bytes`.
//! [`checksum`] is the one exception: it returns the checksum as a number, for code that stores
//! it with `to_be_bytes`.
//!
//! [`sum`] adds 32-bit words into 64-bit accumulators (RFC 1071 §2(C), deferred carries): no
//! carry handling inside the loop, four independent accumulators over 32-byte blocks, which the
//! compiler vectorises. Measured on the testbed VM (criterion, `benches/benches/tunnel.rs`),
//! against a carry-propagating 64-bit loop: `vxlan/encap_v6/1500` went from about 150 to 70
//! ns/packet and `vxlan/decap_v4/64` from about 21 to 12 ns/packet (with [`sum_array`] for the
//! fixed 20-byte header). Overflow is impossible below 2^34 bytes (each accumulator gains less
//! than 2^32 per block).
//!
//! A folded sum is 0 only for all-zero input; otherwise it is in `1..=0xffff` (one's complement
//! "negative zero" is 0xffff). So a valid header or segment, checksum included, sums to 0xffff.

/// Folds a 64-bit accumulator of native-order words to 16 bits (not complemented).
#[inline]
#[must_use]
pub const fn fold(acc: u64) -> u16 {
    let mut s = (acc & 0xffff_ffff) + (acc >> 32); // < 2^33
    s = (s & 0xffff) + (s >> 16); // < 2^16 + 2^17
    s = (s & 0xffff) + (s >> 16); // ≤ 2^16 + 1
    s = (s & 0xffff) + (s >> 16); // ≤ 0xffff
    #[allow(clippy::cast_possible_truncation)] // folded to 16 bits above
    {
        s as u16
    }
}

#[inline]
fn word(c: &[u8]) -> u64 {
    match c.first_chunk::<4>() {
        Some(w) => u64::from(u32::from_ne_bytes(*w)),
        None => 0,
    }
}

/// The sum of `data`'s 4-byte words in a 64-bit accumulator, a short tail zero-padded (this
/// keeps 16-bit alignment as long as `data` starts at an even offset of the summed bytes).
#[inline]
fn words(data: &[u8]) -> u64 {
    let mut s = 0u64;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        s += word(w);
    }
    // Zero padding to a whole word; a slice pattern, not a copy loop, which costs more than
    // the words themselves at header sizes (measured: 14 bytes in 8 ns with a loop, 3 without).
    let rest = words.remainder();
    if rest.is_empty() {
        return s;
    }
    let tail = match *rest {
        [a, b, c] => [a, b, c, 0],
        [a, b] => [a, b, 0, 0],
        [a] => [a, 0, 0, 0],
        _ => [0; 4], // unreachable: the remainder of 4-byte chunks
    };
    s + u64::from(u32::from_ne_bytes(tail))
}

/// Adds `data` to a 64-bit accumulator: four independent accumulators over 32-byte blocks, then
/// the remaining words.
#[inline]
fn accumulate(data: &[u8]) -> u64 {
    let mut acc = [0u64; 4];
    let mut blocks = data.chunks_exact(32);
    for b in &mut blocks {
        for (i, w) in b.chunks_exact(4).enumerate() {
            acc[i % 4] += word(w);
        }
    }
    // The remainder starts at a multiple of 32: 16-bit alignment is kept.
    acc[0] + acc[1] + acc[2] + acc[3] + words(blocks.remainder())
}

/// The one's complement sum of `data` as a native-order 16-bit value (not complemented). An odd
/// trailing byte is padded with zero, as RFC 768 and RFC 8200 ask.
#[inline]
#[must_use]
pub fn sum(data: &[u8]) -> u16 {
    fold(accumulate(data))
}

/// [`sum`] of a fixed-size block (a 20-byte IPv4 header, an address): fully unrolled.
#[inline]
#[must_use]
pub fn sum_array<const N: usize>(data: &[u8; N]) -> u16 {
    fold(words(data))
}

/// Adds two native-order 16-bit one's complement values (end-around carry).
#[inline]
#[must_use]
pub const fn add(a: u16, b: u16) -> u16 {
    let (s, carry) = a.overflowing_add(b);
    // With a carry, s ≤ 0xfffe, so adding it back cannot overflow.
    s + carry as u16
}

/// A network-order 16-bit field value as the native-order word a one's complement sum over
/// memory sees (RFC 1071 §2(B)).
#[inline]
#[must_use]
pub const fn ne16(v: u16) -> u16 {
    u16::from_ne_bytes(v.to_be_bytes())
}

/// The Internet checksum of `data` as a number: the complement of its sum, to be stored
/// big-endian (`to_be_bytes`). A header whose checksum field is correct gives 0.
#[inline]
#[must_use]
pub fn checksum(data: &[u8]) -> u16 {
    !u16::from_be_bytes(sum(data).to_ne_bytes())
}

/// The sum (native order, not complemented) of the IPv4 pseudo-header of RFC 768 / RFC 793:
/// source, destination, zero, protocol, L4 length.
#[inline]
#[must_use]
pub fn pseudo_v4(src: &[u8; 4], dst: &[u8; 4], protocol: u8, len: u16) -> u16 {
    let [lh, ll] = len.to_be_bytes();
    let s = u64::from(u32::from_ne_bytes(*src))
        + u64::from(u32::from_ne_bytes(*dst))
        + u64::from(u32::from_ne_bytes([0, protocol, lh, ll]));
    fold(s)
}

/// The sum (native order, not complemented) of the IPv6 pseudo-header of RFC 8200 §8.1:
/// source, destination, 32-bit upper-layer length, three zero bytes, next header.
#[inline]
#[must_use]
pub fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, len: u32) -> u16 {
    let s = u64::from(sum_array(src))
        + u64::from(sum_array(dst))
        + u64::from(u32::from_ne_bytes(len.to_be_bytes()))
        + u64::from(u32::from_ne_bytes([0, 0, 0, next_header]));
    fold(s)
}

/// Finishes an L4 checksum from a native-order sum: the complement in memory order, ready to
/// store. `udp` applies RFC 768's rule that a computed zero is sent as all ones.
#[inline]
#[must_use]
pub const fn finish(sum: u16, udp: bool) -> [u8; 2] {
    let c = !sum;
    //= rfc768: "If the computed checksum is zero, it is transmitted as all ones"
    if udp && c == 0 { 0xffff_u16 } else { c }.to_ne_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 over big-endian 16-bit words, the slow way.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u64 = 0;
        for c in data.chunks(2) {
            s += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        u16::try_from(s).unwrap()
    }

    fn be(v: u16) -> u16 {
        u16::from_be_bytes(v.to_ne_bytes())
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (before complement).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(be(sum(&data)), 0xddf2);
        assert_eq!(be(sum_array(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
        assert_eq!(be(sum(&[0x00, 0x01, 0xf2])), 0xf201);
    }

    #[test]
    fn known_ipv4_header() {
        // A classic example header (Wikipedia, "IPv4 header checksum"): checksum b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(checksum(&h), 0);
        assert_eq!(sum_array(&h), 0xffff);
    }

    #[test]
    fn all_ones_zero_and_edges() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(sum(&[0; 100]), 0);
        assert_eq!(sum(&[0xff; 4000]), 0xffff);
        assert_eq!(be(sum(&[0x12])), 0x1200);
        assert_eq!(checksum(&[0xff]), !0xff00);
        assert_eq!(add(0xffff, 0), 0xffff);
        assert_eq!(add(0xffff, 1), 1);
        assert_eq!(add(0, 0), 0);
        assert_eq!(finish(0xffff, true), [0xff, 0xff]);
        assert_eq!(finish(0xffff, false), [0, 0]);
    }

    #[test]
    fn pseudo_headers_match_their_bytes() {
        let (s4, d4) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let bytes = [&s4[..], &d4, &[0, 17], &1234u16.to_be_bytes()].concat();
        assert_eq!(pseudo_v4(&s4, &d4, 17, 1234), sum(&bytes));
        let (s6, d6) = ([0xfd; 16], [0xfe; 16]);
        let bytes = [&s6[..], &d6, &70_000u32.to_be_bytes(), &[0, 0, 0, 58]].concat();
        assert_eq!(pseudo_v6(&s6, &d6, 58, 70_000), sum(&bytes));
    }

    proptest! {
        #[test]
        fn matches_the_reference(data in proptest::collection::vec(any::<u8>(), 0..3000), skip in 0usize..8) {
            let d = data.get(skip..).unwrap_or(&[]);
            let got = be(sum(d));
            // A folded sum is 0 only for all-zero input, as the reference's.
            prop_assert_eq!(got, reference(d));
            prop_assert_eq!(checksum(d), !reference(d));
            let split = (d.len() / 2) & !1;
            prop_assert_eq!(add(sum(&d[..split]), sum(&d[split..])), sum(d));
        }

        #[test]
        fn sum_array_matches_sum(a in any::<[u8; 20]>(), b in any::<[u8; 16]>(), c in any::<[u8; 7]>()) {
            prop_assert_eq!(sum_array(&a), sum(&a));
            prop_assert_eq!(sum_array(&b), sum(&b));
            prop_assert_eq!(sum_array(&c), sum(&c));
        }
    }
}
