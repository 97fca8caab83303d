//! AF_XDP ports.
//!
//! An AF_XDP port serves one queue of one network interface. vwire loads its own XDP program on
//! the interface ([`bpf`]), which steers that queue's frames to the port's socket and passes all
//! else to the kernel, and attaches it through a bpf_link so that it disappears with the process.
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
//! core), [`bpf`] (program, map, link), [`steer`] (the uplink's steering program: pure builder),
//! [`socket`] (socket setup, cold path), [`port`] (the [`vwire_dataplane::Port`] driver, hot
//! path).

pub mod abi;
pub mod bpf;
pub mod port;
pub mod ring;
pub mod socket;
pub mod steer;

pub use bpf::{XdpMode, XdpProgram};
pub use port::AfXdpPort;
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
