//! The IPv6 Segment Routing Header (RFC 8754 §2): a routing header (next header 43) of routing
//! type 4, whose segment list follows an 8-byte fixed part.

use std::net::Ipv6Addr;

use super::{check_fixed, read_array, Error, IpProtocol};

/// The fixed part, before the segment list.
pub const FIXED_LEN: usize = 8;
/// One segment (an IPv6 address).
pub const SID_LEN: usize = 16;
/// The routing type of an SRH.
pub const ROUTING_TYPE: u8 = 4;

mod field {
    pub(super) const NXT_HDR: usize = 0;
    pub(super) const LENGTH: usize = 1;
    pub(super) const TYPE: usize = 2;
    pub(super) const SEG_LEFT: usize = 3;
    pub(super) const LAST_ENTRY: usize = 4;
    /// The segment list starts here; segment `i` at `SEGMENTS + 16 i`.
    pub(super) const SEGMENTS: usize = 8;
}

view! {
    /// A read/write view of a routing header, read as an SRH.
    ///
    /// `new_checked` checks only the fixed part ([`SrhPacket::check_len`]), so that a non-SRH
    /// routing header can be told apart first; [`SrhPacket::check_segments`] checks the
    /// lengths. Segment getters return `None` outside the buffer, so no getter panics either
    /// way.
    SrhPacket
}

impl<T: AsRef<[u8]>> SrhPacket<T> {
    /// Checks that the fixed part fits.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer is shorter than [`FIXED_LEN`].
    #[inline(always)]
    pub fn check_len(&self) -> Result<(), Error> {
        check_fixed(self.buffer.as_ref(), FIXED_LEN)
    }

    /// Checks that the segment list (up to [`SrhPacket::last_entry`]) fits the header length,
    /// and the header fits the buffer. The rest of the header is TLVs.
    ///
    /// # Errors
    /// [`Error::BadLength`] if either does not hold.
    #[inline(always)]
    pub fn check_segments(&self) -> Result<(), Error> {
        //= rfc8754#section-2: "Last Entry: contains the index (zero based), in the Segment List,
        //= of the last element of the Segment List."
        // The segment list must fit the header (Linux: first_segment ≤ hdrlen / 2 − 1).
        let hlen = self.header_len();
        let list = FIXED_LEN + (usize::from(self.last_entry()) + 1) * SID_LEN;
        if list > hlen || hlen > self.buffer.as_ref().len() {
            return Err(Error::BadLength);
        }
        Ok(())
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

    /// Header length in bytes: (Hdr Ext Len + 1) × 8.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        (usize::from(self.buffer.as_ref()[field::LENGTH]) + 1) * 8
    }

    /// Routing type ([`ROUTING_TYPE`] for an SRH).
    #[inline(always)]
    pub fn routing_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Segments left.
    #[inline(always)]
    pub fn segments_left(&self) -> u8 {
        self.buffer.as_ref()[field::SEG_LEFT]
    }

    /// Last entry: the index of the last segment.
    #[inline(always)]
    pub fn last_entry(&self) -> u8 {
        self.buffer.as_ref()[field::LAST_ENTRY]
    }

    /// Segment `i`, if it lies inside the buffer.
    #[inline(always)]
    pub fn segment(&self, i: usize) -> Option<Ipv6Addr> {
        let at = field::SEGMENTS.checked_add(i.checked_mul(SID_LEN)?)?;
        let b = self.buffer.as_ref().get(at..at.checked_add(SID_LEN)?)?;
        Some(Ipv6Addr::from(read_array::<SID_LEN>(b, 0..SID_LEN)))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SrhPacket<T> {
    /// Sets the next header.
    #[inline(always)]
    pub fn set_next_header(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = p.raw();
    }

    /// Writes the fixed part of an SRH with `segments` segments (at least 1) and no TLVs: Hdr
    /// Ext Len 2 × `segments`, routing type 4, `segments_left`, last entry `segments` − 1,
    /// flags and tag 0.
    #[inline(always)]
    pub fn write_fixed(&mut self, next: IpProtocol, segments: u8, segments_left: u8) {
        let d = self.buffer.as_mut();
        d[field::NXT_HDR] = next.raw();
        //= rfc8754#section-2: "Hdr Ext Len: 8-bit unsigned integer. Defines the length of the
        //= SRH header in 8-octet units, not including the first 8 octets."
        d[field::LENGTH] = segments.saturating_mul(2);
        d[field::TYPE] = ROUTING_TYPE;
        d[field::SEG_LEFT] = segments_left;
        d[field::LAST_ENTRY] = segments.saturating_sub(1);
        d[field::LAST_ENTRY + 1..field::SEGMENTS].fill(0);
    }

    /// Sets segment `i`; does nothing outside the buffer.
    #[inline(always)]
    pub fn set_segment(&mut self, i: usize, sid: Ipv6Addr) {
        let Some(at) = i
            .checked_mul(SID_LEN)
            .and_then(|o| o.checked_add(field::SEGMENTS))
        else {
            return;
        };
        if let Some(d) = self
            .buffer
            .as_mut()
            .get_mut(at..)
            .and_then(<[u8]>::first_chunk_mut::<SID_LEN>)
        {
            *d = sid.octets();
        }
    }
}
