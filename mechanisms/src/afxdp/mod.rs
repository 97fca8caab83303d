//! AF_XDP ports.
//!
//! An AF_XDP port serves the receive queues of one network interface, one socket per queue.
//! vwire attaches its own XDP program to the interface, which steers each served queue's frames
//! to the port's socket and passes all else to the kernel, through a bpf_link the port owns, so
//! that the program leaves the interface with the port, or with the process.
//!
//! By default ([`XdpProgram::SharedRedirect`], [`shared`]) every port of a network namespace
//! attaches the **same** loaded program, which finds the interface's sockets through two maps
//! (interface index → its slots; slot → socket): attaching a program that is already attached
//! elsewhere costs the kernel no RCU grace period, where a fresh program per port cost 12–35 ms
//! each and serialised concurrent NSM Requests. A port takes slots and its interface's entry
//! when it opens and gives them back when it is dropped. A long-lived process whose ports all
//! come and go (vwire with NSM) keeps the program attached to an interface of a private
//! namespace ([`SharedProgram::keep_attached`]), so that not even its first port, or the close
//! of its last, waits. [`XdpProgram::QueueRedirect`] keeps the former per-interface program and
//! XSKMAP ([`bpf`]).
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
//! steering program instead ([`steer`], chosen by [`PortOptions::program`]): only vwire's VXLAN
//! and SRv6 traffic goes to the sockets, everything else to the kernel.
//!
//! Layout: [`abi`] (kernel structures), [`ring`] (ring arithmetic and mapped rings: the pure
//! core), `asm` (eBPF encoding and the label-resolving assembler: pure), [`bpf`] (loading,
//! maps, links; the per-interface program), [`shared`] (the shared program: pure builder, slot
//! allocation, the per-namespace instance), `anchor` (a private interface that keeps the shared
//! program attached), [`steer`] (the uplink's steering program: pure builder), [`socket`]
//! (socket setup, cold path), [`port`] (the [`vwire_dataplane::Port`] driver, hot path).

pub mod abi;
mod anchor;
mod asm;
pub mod bpf;
pub mod port;
pub mod ring;
pub mod shared;
pub mod socket;
pub mod steer;

pub use bpf::{XdpMode, XdpProgram};
pub use port::AfXdpPort;
pub use shared::{SharedProgram, SlotRange};
pub use socket::{rx_queue_count, PortOptions, Umem, FRAMES_PER_QUEUE};
pub use steer::Steering;

/// Errors of the AF_XDP mechanism.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    /// the interface does not exist
    #[error("no network interface named {0:?}")]
    NoSuchInterface(String),
    /// the worker's pool does not use AF_XDP's chunk size
    #[error("the worker's packet pool has {0}-byte frames; AF_XDP needs 4096")]
    FrameSize(usize),
    /// the interface already has an XDP program
    #[error("interface {0:?} already has an XDP program attached; vwire does not replace it")]
    Busy(String),
    /// a bpf(2) step failed
    #[error("{ifname}: {what}: {source}")]
    Bpf {
        /// the interface
        ifname: String,
        /// the step
        what: &'static str,
        /// the system error
        source: std::io::Error,
    },
    /// the verifier refused the program
    #[error("{ifname}: the kernel refused vwire's XDP program: {source}\n{log}")]
    Verifier {
        /// the interface
        ifname: String,
        /// the system error
        source: std::io::Error,
        /// the verifier log
        log: String,
    },
    /// the shared program's maps have no room for the interface
    #[error("{ifname}: no room in the shared XDP maps for {queues} queues")]
    NoSlots {
        /// the interface
        ifname: String,
        /// its receive queues
        queues: u32,
    },
    /// the steering configuration is invalid
    #[error("invalid uplink steering: {0}")]
    BadSteering(&'static str),
    /// vwire's XDP program could not be assembled (a bug in the program builder)
    #[error("assembling vwire's XDP program: instruction {at}: {what}")]
    Assemble {
        /// the instruction where the problem was found
        at: usize,
        /// what is wrong
        what: &'static str,
    },
    /// an AF_XDP socket step failed
    #[error("{ifname}: {what}: {source}")]
    Socket {
        /// the interface
        ifname: String,
        /// the step
        what: &'static str,
        /// the system error
        source: std::io::Error,
    },
}
