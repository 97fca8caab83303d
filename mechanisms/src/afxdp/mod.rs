//! AF_XDP ports.
//!
//! An AF_XDP port serves the receive queues of one network interface, one socket per queue.
//! vwire attaches its own XDP program to the interface, which steers each served queue's frames
//! to the port's socket and passes all else to the kernel, through a bpf_link the port owns, so
//! that the program leaves the interface with the port, or with the process.
//!
//! By default ([`XdpProgram::SharedRedirect`], [`programs::shared`]) every port of a network
//! namespace attaches the **same** loaded program, which finds the interface's sockets through two maps
//! (interface index → its slots; slot → socket): attaching a program that is already attached
//! elsewhere costs the kernel no RCU grace period, where a fresh program per port cost 12–35 ms
//! each and serialised concurrent NSM Requests. A port takes slots and its interface's entry
//! when it opens and gives them back when it is dropped. A long-lived process whose ports all
//! come and go (vwire with NSM) keeps the program attached to an interface of a private
//! namespace ([`SharedProgram::keep_attached`]), so that not even its first port, or the close
//! of its last, waits. [`XdpProgram::QueueRedirect`] keeps the former per-interface program and
//! XSKMAP ([`programs::queue`]).
//!
//! All AF_XDP ports of one worker use the same memory as UMEM: the worker's
//! [`vwire_dataplane::BufferPool`] region ([`Umem`]), registered by each socket at the same
//! offsets. So a frame received on one port is transmitted on another by moving a descriptor,
//! with no copy in user space.
//!
//! Modes: native XDP where the driver has it, generic XDP otherwise; zero-copy where the driver
//! has it, copy mode otherwise (veth has native XDP but no zero-copy).
//!
//! On an interface shared with the host stack (the node's uplink), the port is opened with the
//! steering program instead ([`programs::steer`], chosen by [`PortOptions::program`]): only
//! vwire's VXLAN and SRv6 traffic goes to the sockets, everything else to the kernel.
//!
//! # Layers
//!
//! From the bottom up; a module uses only modules of its own layer or below, never one above,
//! so the graph has no cycle:
//!
//! | layer | module | what | uses |
//! |---|---|---|---|
//! | 0 | `error` | [`AfXdpError`], the error of every layer | — |
//! | 0 | [`abi`] | kernel structures and constants | — |
//! | 1 | [`ring`] | ring arithmetic and mapped rings (pure core) | abi |
//! | 1 | `sys` | bpf(2), program load with verifier log, bpf_link, interface lookups; `sys::maps`: typed maps | abi, error |
//! | 2 | [`programs`] | the per-interface program ([`programs::queue`]), the shared one ([`programs::shared`]), the steering one ([`programs::steer`]), the anchor, the assembler (`programs::asm`), and [`XdpAttachment`], which loads and attaches one | sys, abi, error |
//! | 2 | `xsk` | one queue's socket: UMEM, ring sizes, mapping, bind; socket statistics | sys, ring, abi, error |
//! | 3 | [`port`] | [`socket::open`] and the [`vwire_dataplane::Port`] driver (hot path) | xsk, programs, sys, ring, abi, error |
//!
//! Inside `programs`, the children use each other (`shared` → `asm`, `queue`, `anchor`;
//! `steer` → `asm`; `queue` → `asm`) and never the items of `programs` itself, which picks
//! among them. The programs and the sockets do not know each other: the port opens both and
//! puts each queue's socket into the program's map.
//!
//! This module only re-exports. [`socket`] keeps the names callers have always opened ports
//! with, across the socket and port layers.

mod error;
pub(crate) mod sys;
mod xsk;

pub mod abi;
pub mod port;
pub mod programs;
pub mod ring;

pub use error::AfXdpError;
pub use port::{AfXdpPort, PortOptions};
pub use programs::{SharedProgram, SlotRange, Steering, XdpAttachment, XdpProgram};
pub use sys::{rx_queue_count, XdpMode};
pub use xsk::{RingSizes, Umem, FRAMES_PER_QUEUE};

/// Opening ports: [`port::open`] and [`PortOptions`] (port layer), the UMEM, ring sizes and socket
/// statistics (socket layer), and the interface lookups (system layer).
pub mod socket {
    pub use super::port::{open, PortOptions};
    pub use super::sys::{ifindex, rx_queue_count};
    pub use super::xsk::{
        Umem, XskStats, COMP_RING, FILL_RING, FILL_TARGET, FRAMES_PER_QUEUE, RX_RING, TX_RING,
    };
}
