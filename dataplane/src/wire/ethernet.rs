//! Ethernet II (IEEE 802.3) headers, 802.1Q / 802.1ad VLAN tags, and the L2 walk every parser
//! shares ([`walk`]). The VLAN rule is in the module docs of [`super`].

use super::{check_fixed, read_array, read_u16, write_u16, Error, Field, Rest};

/// Ethernet header without a tag: destination, source, EtherType.
pub const HEADER_LEN: usize = 14;
/// One VLAN tag: TPID (its EtherType) and TCI.
pub const VLAN_TAG_LEN: usize = 4;
/// Tags [`walk`] skips at most.
pub const MAX_VLAN_TAGS: usize = 2;
/// The broadcast address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

mod field {
    use super::{Field, Rest};
    pub(super) const DESTINATION: Field = 0..6;
    pub(super) const SOURCE: Field = 6..12;
    pub(super) const ETHERTYPE: Field = 12..14;
    pub(super) const PAYLOAD: Rest = 14..;
    /// Inside a VLAN tag: the EtherType of what follows the tag.
    pub(super) const TAG_ETHERTYPE: Field = 2..4;
}

/// EtherTypes vwire knows (IEEE registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EtherType {
    /// 0x0800
    Ipv4,
    /// 0x0806
    Arp,
    /// 0x86dd
    Ipv6,
    /// 0x8100: an 802.1Q VLAN tag follows.
    Vlan,
    /// 0x88a8: an 802.1ad (QinQ service) tag follows.
    QinQ,
    /// Any other value.
    Unknown(u16),
}

impl EtherType {
    /// The type of a raw EtherType value.
    #[inline(always)]
    #[must_use]
    pub const fn from_raw(v: u16) -> Self {
        match v {
            0x0800 => Self::Ipv4,
            0x0806 => Self::Arp,
            0x86dd => Self::Ipv6,
            0x8100 => Self::Vlan,
            0x88a8 => Self::QinQ,
            v => Self::Unknown(v),
        }
    }

    /// The raw value, as it is on the wire (big-endian there).
    #[inline(always)]
    #[must_use]
    pub const fn raw(self) -> u16 {
        match self {
            Self::Ipv4 => 0x0800,
            Self::Arp => 0x0806,
            Self::Ipv6 => 0x86dd,
            Self::Vlan => 0x8100,
            Self::QinQ => 0x88a8,
            Self::Unknown(v) => v,
        }
    }

    /// Whether a VLAN tag (802.1Q or 802.1ad) follows.
    #[inline(always)]
    #[must_use]
    pub const fn is_vlan_tag(self) -> bool {
        matches!(self, Self::Vlan | Self::QinQ)
    }

    /// The EtherType of an IP packet of version `v` (the first nibble), if it is 4 or 6.
    #[inline(always)]
    #[must_use]
    pub const fn of_ip_version(v: u8) -> Option<Self> {
        match v {
            4 => Some(Self::Ipv4),
            6 => Some(Self::Ipv6),
            _ => None,
        }
    }
}

impl From<u16> for EtherType {
    #[inline(always)]
    fn from(v: u16) -> Self {
        Self::from_raw(v)
    }
}

impl From<EtherType> for u16 {
    #[inline(always)]
    fn from(t: EtherType) -> Self {
        t.raw()
    }
}

view! {
    /// A read/write view of an Ethernet frame.
    EthernetFrame
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Checks that the header fits.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer is shorter than [`HEADER_LEN`].
    #[inline(always)]
    pub fn check_len(&self) -> Result<(), Error> {
        check_fixed(self.buffer.as_ref(), HEADER_LEN)
    }

    /// Destination MAC address.
    #[inline(always)]
    pub fn dst_addr(&self) -> [u8; 6] {
        read_array(self.buffer.as_ref(), field::DESTINATION)
    }

    /// Source MAC address.
    #[inline(always)]
    pub fn src_addr(&self) -> [u8; 6] {
        read_array(self.buffer.as_ref(), field::SOURCE)
    }

    /// The EtherType field (a VLAN TPID for a tagged frame).
    #[inline(always)]
    pub fn ethertype(&self) -> EtherType {
        EtherType::from_raw(read_u16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// What follows the 14-byte header (tags included).
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address.
    #[inline(always)]
    pub fn set_dst_addr(&mut self, a: [u8; 6]) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&a);
    }

    /// Sets the source MAC address.
    #[inline(always)]
    pub fn set_src_addr(&mut self, a: [u8; 6]) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&a);
    }

    /// Sets the EtherType.
    #[inline(always)]
    pub fn set_ethertype(&mut self, t: EtherType) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE, t.raw());
    }

    /// Writes the whole header.
    #[inline(always)]
    pub fn write_header(&mut self, dst: [u8; 6], src: [u8; 6], t: EtherType) {
        self.set_dst_addr(dst);
        self.set_src_addr(src);
        self.set_ethertype(t);
    }

    /// What follows the 14-byte header, writable.
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// Where the L3 header of a frame starts and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L3 {
    /// Offset of the L3 header from the start of the frame: 14, 18 or 22.
    pub offset: usize,
    /// The EtherType after the tags. [`EtherType::Vlan`] / [`EtherType::QinQ`] if there were more
    /// than [`MAX_VLAN_TAGS`] tags.
    pub ethertype: EtherType,
}

/// Skips the Ethernet header and up to two VLAN tags (802.1Q or 802.1ad, in any order; the VLAN
/// IDs are ignored) and says where L3 starts. The one L2 walk of vwire's parsers.
///
/// # Errors
/// [`Error::Truncated`] if the frame ends inside the header or a tag.
#[inline(always)]
pub fn walk(frame: &[u8]) -> Result<L3, Error> {
    let eth = EthernetFrame::new_checked(frame)?;
    walk_from(frame, eth.ethertype())
}

/// [`walk`] for a caller that already read the outer EtherType (`ethertype`) of `frame`.
///
/// # Errors
/// As [`walk`].
#[inline(always)]
pub fn walk_from(frame: &[u8], mut ethertype: EtherType) -> Result<L3, Error> {
    let mut offset = HEADER_LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if !ethertype.is_vlan_tag() {
            break;
        }
        let tag = frame
            .get(offset..)
            .and_then(<[u8]>::first_chunk::<VLAN_TAG_LEN>)
            .ok_or(Error::Truncated)?;
        ethertype = EtherType::from_raw(read_u16(tag, field::TAG_ETHERTYPE));
        offset += VLAN_TAG_LEN;
    }
    Ok(L3 { offset, ethertype })
}

/// Whether a MAC address is multicast (or broadcast): the I/G bit.
#[inline(always)]
#[must_use]
pub const fn is_multicast(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 1
}
