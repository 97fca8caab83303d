//! The control side of vwire, used by the `vwire` binary (`src/main.rs`): configuration,
//! metrics, and the NSM gRPC server ([`grpc`]) with its chain ([`chain`], [`elements`]).

pub mod chain;
pub mod config;
pub mod dataplane;
pub mod elements;
pub mod grpc;
pub mod metrics;
pub mod remote;
