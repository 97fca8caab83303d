//! The error of every AF_XDP layer. A leaf: it uses nothing of the mechanism, so each layer can
//! report through it without depending on another.

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
