//! memif: shared-memory packet interfaces, wire-compatible with VPP, libmemif and DPDK
//! (`../shared/spec/memif.md`).
//!
//! Layout:
//! - [`msg`]: the 128-byte control messages (pure core).
//! - [`shm`]: regions, rings and descriptors in shared memory, and the descriptor check.
//! - [`sock`]: the SOCK_SEQPACKET control socket with fd passing.
//! - [`port`]: the data path, a `Port` over a connected session (hot path).
//! - [`driver`]: the handshakes, connect and disconnect, on the control thread.

pub mod driver;
pub mod msg;
pub mod port;
pub mod shm;
pub mod sock;

/// Errors of the memif mechanism.
#[derive(Debug, thiserror::Error)]
pub enum MemifError {
    /// a system call failed
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// the peer broke the protocol
    #[error("protocol: {0}")]
    Protocol(String),
    /// a configuration value is unusable
    #[error("config: {0}")]
    Config(String),
}

impl MemifError {
    /// The last OS error, with what was being done.
    pub(crate) fn io(what: &str) -> Self {
        Self::Io(what.to_string(), std::io::Error::last_os_error())
    }

    /// The last OS error, with a formatted context.
    pub(crate) fn io_ctx(what: String) -> Self {
        Self::Io(what, std::io::Error::last_os_error())
    }
}
