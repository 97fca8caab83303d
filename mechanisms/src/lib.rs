//! vwire's mechanisms: the ways packets enter and leave the dataplane.
//!
//! Each mechanism is a pure core (ring arithmetic, header layouts, parsers: testable with no
//! devices) plus a driver that owns the sockets and memory maps and implements
//! [`vwire_dataplane::Port`].
//!
//! - [`afxdp`]: AF_XDP sockets on a network interface, with vwire's own XDP program.
//! - [`memif`]: memif shared-memory interfaces, both roles.
//! - [`kernel`]: the KERNEL mechanism's netlink side: veth pairs into namespaces, IP context.
//! - [`tcx`]: the in-kernel cross-connect of two kernel interfaces (a TCX program), for
//!   KERNEL↔KERNEL connections.
//! - [`vxlan`]: the VXLAN (REMOTE) packet core: per-tunnel outer header, encap and decap.
//! - [`srv6`]: the SRv6 (REMOTE) packet core: H.Encaps(.L2) and End.DX2/DX4/DX6 decap.
//! - [`tunnel`]: the VXLAN and SRv6 drivers as dataplane tunnel stages: per-tunnel
//!   encapsulation and the per-uplink decapsulation and demultiplexing.

pub mod afxdp;
pub mod kernel;
pub mod memif;
pub mod srv6;
pub mod tcx;
pub mod tunnel;
pub mod vxlan;
