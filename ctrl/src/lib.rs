//! The control side of vwire: configuration and metrics, used by the `vwire` binary
//! (`src/main.rs`). Later: the NSM gRPC server and its chain elements.

pub mod config;
pub mod metrics;
