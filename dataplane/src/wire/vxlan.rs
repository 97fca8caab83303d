//! VXLAN headers (RFC 7348 §5).

use super::{check_fixed, read_array, Error, Field};

/// The header.
pub const HEADER_LEN: usize = 8;
/// The IANA VXLAN port (RFC 7348 §5).
pub const PORT: u16 = 4789;
/// The I flag: the VNI is valid.
pub const FLAG_I: u8 = 0x08;

mod field {
    use super::Field;
    pub(super) const FLAGS: usize = 0;
    pub(super) const RESERVED1: Field = 1..4;
    pub(super) const VNI: Field = 4..7;
    pub(super) const RESERVED2: usize = 7;
}

view! {
    /// A read/write view of a VXLAN header.
    VxlanHeader
}

impl<T: AsRef<[u8]>> VxlanHeader<T> {
    /// Checks that the header fits.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer is shorter than [`HEADER_LEN`].
    #[inline(always)]
    pub fn check_len(&self) -> Result<(), Error> {
        check_fixed(self.buffer.as_ref(), HEADER_LEN)
    }

    /// The flags byte.
    #[inline(always)]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Whether the I flag is set.
    #[inline(always)]
    pub fn has_vni(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    /// The VNI's three bytes, network order.
    #[inline(always)]
    pub fn vni_bytes(&self) -> [u8; 3] {
        read_array(self.buffer.as_ref(), field::VNI)
    }

    /// The 24-bit VNI.
    #[inline(always)]
    pub fn vni(&self) -> u32 {
        let [a, b, c] = self.vni_bytes();
        u32::from_be_bytes([0, a, b, c])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanHeader<T> {
    /// Writes the header: the I flag, the VNI's three bytes, reserved fields zero.
    #[inline(always)]
    pub fn write(&mut self, vni: [u8; 3]) {
        let d = self.buffer.as_mut();
        d[field::FLAGS] = FLAG_I;
        d[field::RESERVED1].fill(0);
        d[field::VNI].copy_from_slice(&vni);
        d[field::RESERVED2] = 0;
    }
}
