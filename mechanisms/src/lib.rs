//! vwire's mechanisms: the ways packets enter and leave the dataplane.
//!
//! Each mechanism is a pure core (ring arithmetic, header layouts, parsers: testable with no
//! devices) plus a driver that owns the sockets and memory maps and implements
//! [`vwire_dataplane::Port`].
//!
//! - [`afxdp`]: AF_XDP sockets on a network interface, with vwire's own XDP program.
//! - [`memif`]: memif shared-memory interfaces, both roles.
//! - [`kernel`]: the KERNEL mechanism's netlink side: veth pairs into namespaces, IP context.

pub mod afxdp;
pub mod kernel;
pub mod memif;
