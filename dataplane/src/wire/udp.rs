//! UDP headers (RFC 768).

use super::{check_fixed, read_u16, write_u16, Error, Field};

/// The header.
pub const HEADER_LEN: usize = 8;

mod field {
    use super::Field;
    pub(super) const SRC_PORT: Field = 0..2;
    pub(super) const DST_PORT: Field = 2..4;
    pub(super) const LENGTH: Field = 4..6;
    pub(super) const CHECKSUM: Field = 6..8;
}

view! {
    /// A read/write view of a UDP datagram.
    UdpPacket
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Checks, in this order: 8 bytes present ([`Error::Truncated`]), 8 ≤ length field ≤
    /// buffer length ([`Error::BadLength`]).
    ///
    /// # Errors
    /// The first check that failed.
    #[inline(always)]
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        check_fixed(self.buffer.as_ref(), HEADER_LEN)?;
        let field_len = self.len();
        if field_len < HEADER_LEN || field_len > len {
            return Err(Error::BadLength);
        }
        Ok(())
    }

    /// Source port.
    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The length field: header plus payload.
    #[inline(always)]
    #[allow(clippy::len_without_is_empty)] // a header field, not a container
    pub fn len(&self) -> usize {
        usize::from(read_u16(self.buffer.as_ref(), field::LENGTH))
    }

    /// The checksum field, raw (in memory order, as one's complement sums see it).
    #[inline(always)]
    pub fn checksum_bytes(&self) -> [u8; 2] {
        super::read_array(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload, up to the length field (empty if the length field is inconsistent).
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        let end = self.len();
        self.buffer
            .as_ref()
            .get(HEADER_LEN..end)
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    #[inline(always)]
    pub fn set_src_port(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    /// Sets the destination port.
    #[inline(always)]
    pub fn set_dst_port(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    /// Sets the length field.
    #[inline(always)]
    pub fn set_len(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the checksum field from memory-order bytes (see [`super::checksum::finish`]).
    #[inline(always)]
    pub fn set_checksum_bytes(&mut self, v: [u8; 2]) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v);
    }
}
