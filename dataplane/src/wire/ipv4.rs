//! IPv4 headers (RFC 791).

use std::net::Ipv4Addr;

use super::checksum;
use super::{check_fixed, read_array, read_u16, write_u16, Error, Field, IpProtocol};

/// Header without options.
pub const HEADER_LEN: usize = 20;
/// Longest header: IHL 15.
pub const MAX_HEADER_LEN: usize = 60;
/// Flags and fragment offset field: don't fragment.
pub const FLAG_DF: u16 = 0x4000;
/// Flags and fragment offset field: more fragments.
pub const FLAG_MF: u16 = 0x2000;
/// Flags and fragment offset field: the offset, in 8-byte units.
pub const OFFSET_MASK: u16 = 0x1fff;

mod field {
    use super::Field;
    pub(super) const VER_IHL: usize = 0;
    pub(super) const LENGTH: Field = 2..4;
    pub(super) const IDENT: Field = 4..6;
    pub(super) const FLG_OFF: Field = 6..8;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: Field = 10..12;
    pub(super) const SRC_ADDR: Field = 12..16;
    pub(super) const DST_ADDR: Field = 16..20;
}

view! {
    /// A read/write view of an IPv4 packet.
    Ipv4Packet
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks, in this order: 20 bytes present ([`Error::Truncated`]), version 4
    /// ([`Error::BadVersion`]), IHL ≥ 5 ([`Error::BadHeaderLen`]), header length ≤ total length
    /// ≤ buffer length ([`Error::BadLength`]). The header checksum is not checked
    /// ([`Ipv4Packet::verify_checksum`]).
    ///
    /// # Errors
    /// The first check that failed.
    #[inline(always)]
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        check_fixed(self.buffer.as_ref(), HEADER_LEN)?;
        if self.version() != 4 {
            return Err(Error::BadVersion);
        }
        let hlen = self.header_len();
        if hlen < HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        let total = self.total_len();
        if total < hlen || total > len {
            return Err(Error::BadLength);
        }
        Ok(())
    }

    /// The version nibble.
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Total length in bytes, header included.
    #[inline(always)]
    pub fn total_len(&self) -> usize {
        usize::from(read_u16(self.buffer.as_ref(), field::LENGTH))
    }

    /// Identification.
    #[inline(always)]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// The flags and fragment offset field, raw ([`FLAG_DF`], [`FLAG_MF`], [`OFFSET_MASK`]).
    #[inline(always)]
    pub fn flags_and_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLG_OFF)
    }

    /// More fragments follow.
    #[inline(always)]
    pub fn more_frags(&self) -> bool {
        self.flags_and_offset() & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    #[inline(always)]
    pub fn frag_offset(&self) -> usize {
        usize::from(self.flags_and_offset() & OFFSET_MASK) * 8
    }

    /// Whether this is a fragment: MF set or a non-zero offset.
    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        self.flags_and_offset() & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to live.
    #[inline(always)]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol, raw.
    #[inline(always)]
    pub fn protocol_raw(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The protocol.
    #[inline(always)]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from_raw(self.protocol_raw())
    }

    /// The header checksum field.
    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address bytes.
    #[inline(always)]
    pub fn src_bytes(&self) -> [u8; 4] {
        read_array(self.buffer.as_ref(), field::SRC_ADDR)
    }

    /// Destination address bytes.
    #[inline(always)]
    pub fn dst_bytes(&self) -> [u8; 4] {
        read_array(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// Source address.
    #[inline(always)]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_bytes())
    }

    /// Destination address.
    #[inline(always)]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_bytes())
    }

    /// The header, options included (empty if a setter made the IHL exceed the buffer).
    #[inline(always)]
    pub fn header(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(..self.header_len())
            .unwrap_or_default()
    }

    /// Whether the header checksum is right: the header sums to 0xffff. The common 20-byte
    /// header takes an unrolled sum.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        //= rfc791: "The checksum field is the 16 bit one's complement of the one's
        //= complement sum of all 16 bit words in the header."
        let d = self.buffer.as_ref();
        let hlen = self.header_len();
        match d.first_chunk::<HEADER_LEN>() {
            Some(h) if hlen == HEADER_LEN => checksum::sum_array(h) == 0xffff,
            _ => d.get(..hlen).is_some_and(|h| checksum::sum(h) == 0xffff),
        }
    }

    /// The payload: from the end of the header to the total length (empty if a setter made
    /// the lengths inconsistent).
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        let (h, t) = (self.header_len(), self.total_len());
        self.buffer.as_ref().get(h..t).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and the header length (a multiple of 4 from 20 to 60).
    #[inline(always)]
    pub fn set_version_and_header_len(&mut self, hlen: usize) {
        let ihl = u8::try_from(hlen / 4).unwrap_or(0x0f) & 0x0f;
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ihl;
    }

    /// Sets the total length.
    #[inline(always)]
    pub fn set_total_len(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the identification.
    #[inline(always)]
    pub fn set_ident(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Sets the flags and fragment offset field, raw.
    #[inline(always)]
    pub fn set_flags_and_offset(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::FLG_OFF, v);
    }

    /// Sets the time to live.
    #[inline(always)]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    /// Sets the protocol.
    #[inline(always)]
    pub fn set_protocol(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = p.raw();
    }

    /// Sets the checksum field (a number, stored big-endian).
    #[inline(always)]
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the checksum field from memory-order bytes (a complemented native-order sum).
    #[inline(always)]
    pub fn set_checksum_bytes(&mut self, v: [u8; 2]) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v);
    }

    /// Sets the source address.
    #[inline(always)]
    pub fn set_src_addr(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a);
    }

    /// Sets the destination address.
    #[inline(always)]
    pub fn set_dst_addr(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a);
    }

    /// Computes and stores the header checksum over [`Ipv4Packet::header_len`] bytes (clamped
    /// to the buffer).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hlen = self.header_len();
        let d = self.buffer.as_ref();
        let c = checksum::checksum(d.get(..hlen).unwrap_or(d));
        self.set_checksum(c);
    }

    /// The payload, writable; see [`Ipv4Packet::payload`].
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), self.total_len());
        self.buffer.as_mut().get_mut(h..t).unwrap_or_default()
    }
}
