//! IPv6 fixed headers (RFC 8200).

use std::net::Ipv6Addr;

use super::{check_fixed, read_array, read_u16, write_u16, Error, Field, IpProtocol, Rest};

/// The fixed header.
pub const HEADER_LEN: usize = 40;

mod field {
    use super::{Field, Rest};
    pub(super) const VER_TC_FLOW: Field = 0..4;
    pub(super) const LENGTH: Field = 4..6;
    pub(super) const NXT_HDR: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC_ADDR: Field = 8..24;
    pub(super) const DST_ADDR: Field = 24..40;
    pub(super) const PAYLOAD: Rest = 40..;
}

view! {
    /// A read/write view of an IPv6 packet.
    Ipv6Packet
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Checks, in this order: 40 bytes present ([`Error::Truncated`]), version 6
    /// ([`Error::BadVersion`]), 40 + payload length ≤ buffer length ([`Error::BadLength`]).
    ///
    /// # Errors
    /// The first check that failed.
    #[inline(always)]
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        check_fixed(self.buffer.as_ref(), HEADER_LEN)?;
        if self.version() != 6 {
            return Err(Error::BadVersion);
        }
        if self.total_len() > len {
            return Err(Error::BadLength);
        }
        Ok(())
    }

    /// The version nibble.
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    /// Traffic class.
    #[inline(always)]
    pub fn traffic_class(&self) -> u8 {
        let d = &self.buffer.as_ref()[field::VER_TC_FLOW];
        (d[0] << 4) | (d[1] >> 4)
    }

    /// Flow label (20 bits).
    #[inline(always)]
    pub fn flow_label(&self) -> u32 {
        u32::from_be_bytes(read_array(self.buffer.as_ref(), field::VER_TC_FLOW)) & 0x000f_ffff
    }

    /// Payload length.
    #[inline(always)]
    pub fn payload_len(&self) -> usize {
        usize::from(read_u16(self.buffer.as_ref(), field::LENGTH))
    }

    /// Header plus payload length.
    #[inline(always)]
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// Next header, raw.
    #[inline(always)]
    pub fn next_header_raw(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Next header.
    #[inline(always)]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from_raw(self.next_header_raw())
    }

    /// Hop limit.
    #[inline(always)]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address bytes.
    #[inline(always)]
    pub fn src_bytes(&self) -> [u8; 16] {
        read_array(self.buffer.as_ref(), field::SRC_ADDR)
    }

    /// Destination address bytes.
    #[inline(always)]
    pub fn dst_bytes(&self) -> [u8; 16] {
        read_array(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// Source address.
    #[inline(always)]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_bytes())
    }

    /// Destination address.
    #[inline(always)]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_bytes())
    }

    /// The payload: the payload-length bytes after the fixed header (empty if a setter made the
    /// length exceed the buffer).
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        let end = self.total_len();
        self.buffer
            .as_ref()
            .get(HEADER_LEN..end)
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6, the traffic class and the flow label (its low 20 bits).
    #[inline(always)]
    pub fn set_ver_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let w = (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&w.to_be_bytes());
    }

    /// Sets the payload length.
    #[inline(always)]
    pub fn set_payload_len(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the next header.
    #[inline(always)]
    pub fn set_next_header(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = p.raw();
    }

    /// Sets the hop limit.
    #[inline(always)]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    #[inline(always)]
    pub fn set_src_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a);
    }

    /// Sets the destination address.
    #[inline(always)]
    pub fn set_dst_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a);
    }

    /// The payload, writable; see [`Ipv6Packet::payload`].
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..end)
            .unwrap_or_default()
    }

    /// Everything after the fixed header, up to the buffer's end, writable.
    #[inline(always)]
    pub fn rest_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}
