//! The encapsulation stage shared by the tunnel formats: a per-tunnel outer-header template plus
//! the framing of the tunnel's local port, implementing [`vwire_dataplane::tunnel::Encap`]. The
//! receive side is the uplink demultiplexer, [`super::UplinkDecap`].
//!
//! Contract: built on the control thread, immutable afterwards, shared with the workers through
//! the forwarding table. Per packet it works in place in the packet's frame with the core's
//! functions, allocates nothing and never panics; it refuses a packet with a [`DropReason`]:
//! - `too_big`: the outer frame would exceed the uplink MTU + 14 (checked before any write);
//! - `not_ip`: an IP-payload tunnel got something that is not IPv4 or IPv6 (ARP from a veth,
//!   a VLAN-tagged frame, a bare packet whose version nibble is neither 4 nor 6);
//! - otherwise what the format's [`EncapFormat::DROP_REASON`] maps the core's error to.
//!
//! A format (VXLAN in [`super::vxlan`], SRv6 in [`super::srv6`]) says only what differs: how
//! much its outer headers add, how it wraps a whole frame and a bare IP packet, and how its
//! errors are counted.

use std::fmt::Debug;

use vwire_dataplane::counters::DropReason;
use vwire_dataplane::tunnel::Encap;
use vwire_dataplane::{BufIdx, BufferPool};

use super::Framing;
use crate::vxlan::{strip_inner_ethernet, ETH_HLEN};

/// A core's encapsulation function: writes the outer headers of template `H` in front of the
/// packet at `(offset, len)` of the frame and returns the outer frame's `(offset, len)`.
pub type EncapFn<H> =
    fn(&H, &mut [u8], usize, usize) -> Result<(usize, usize), <H as EncapFormat>::Error>;

/// A tunnel format's per-tunnel outer-header template, as [`TunnelEncap`] drives it: the core's
/// functions, named rather than wrapped (constant function pointers compile to direct calls,
/// inlined as before).
pub trait EncapFormat: Clone + Debug + Send + Sync + 'static {
    /// The core's error.
    type Error;

    /// Wraps a whole Ethernet frame ([`Framing::Ethernet`]).
    const ENCAP_FRAME: EncapFn<Self>;

    /// Wraps a bare IPv4 or IPv6 packet ([`Framing::EthernetIp`] after its Ethernet header,
    /// [`Framing::Ip`]).
    const ENCAP_IP: EncapFn<Self>;

    /// The dataplane drop reason a core error is counted under.
    const DROP_REASON: fn(Self::Error) -> DropReason;

    /// How many bytes the outer frame is longer than the packet as a local port with `framing`
    /// delivers it.
    fn added(&self, framing: Framing) -> usize;
}

/// One tunnel's encapsulation, for [`vwire_dataplane::table::ForwardingTable::add_tunnel`]: see
/// [`super::VxlanEncap`] and [`super::Srv6Encap`].
#[derive(Clone, Debug)]
pub struct TunnelEncap<H> {
    header: H,
    framing: Framing,
    /// Longest packet, as received on the local port, whose outer frame still fits.
    max_len: usize,
}

impl<H: EncapFormat> TunnelEncap<H> {
    /// The encapsulation of the tunnel `header` for a local port with `framing`, over an uplink
    /// of MTU `uplink_mtu` (the outer frame may be `uplink_mtu + 14` bytes long).
    #[must_use]
    pub fn new(header: H, framing: Framing, uplink_mtu: u32) -> Self {
        let max_frame = (uplink_mtu as usize).saturating_add(ETH_HLEN);
        let max_len = max_frame.saturating_sub(header.added(framing));
        Self {
            header,
            framing,
            max_len,
        }
    }

    /// The tunnel's outer header.
    #[must_use]
    pub fn header(&self) -> &H {
        &self.header
    }

    /// The local port's framing.
    #[must_use]
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The longest packet (as the local port delivers it) that is encapsulated; longer ones are
    /// dropped as `too_big`.
    #[must_use]
    pub fn max_len(&self) -> usize {
        self.max_len
    }
}

impl<H: EncapFormat> Encap for TunnelEncap<H> {
    /// Refuses the packet as `too_big` beyond `max_len`, then wraps the whole frame (`Ethernet`)
    /// or only its IP packet (`EthernetIp`: the Ethernet header checked and dropped, `not_ip`
    /// otherwise; `Ip`: the buffer as is), and sets the buffer to the outer frame.
    #[inline]
    fn encap(&self, pool: &mut BufferPool, b: BufIdx) -> Result<(), DropReason> {
        let m = pool.meta(b);
        let (offset, len) = (usize::from(m.offset), usize::from(m.len));
        if len > self.max_len {
            return Err(DropReason::TooBig);
        }
        let frame = pool.frame_mut(b);
        let done = match self.framing {
            Framing::Ethernet => H::ENCAP_FRAME(&self.header, frame, offset, len),
            Framing::EthernetIp => {
                // Only the EtherType is checked here; the core then checks the version nibble.
                let (ip_at, ip_len) =
                    strip_inner_ethernet(frame, offset, len).map_err(|_| DropReason::NotIp)?;
                H::ENCAP_IP(&self.header, frame, ip_at, ip_len)
            }
            Framing::Ip => H::ENCAP_IP(&self.header, frame, offset, len),
        };
        let (offset, len) = done.map_err(H::DROP_REASON)?;
        pool.set_meta(b, offset, len);
        Ok(())
    }
}
