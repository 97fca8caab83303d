//! The control side of vwire, used by the `vwire` binary (`src/main.rs`): configuration,
//! metrics, and the NSM server ([`server`]: the chain order, [`chain`], [`elements`]) with its
//! gRPC services ([`grpc`]) on the sockets of [`transport`], and the [`registration`] of the
//! forwarder with the registry through nsmgr.

pub mod chain;
pub mod config;
pub mod dataplane;
pub mod elements;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod node;
pub mod observability;
pub mod registration;
pub mod remote;
pub mod security;
pub mod server;
pub mod transport;
