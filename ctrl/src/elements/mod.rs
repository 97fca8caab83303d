//! The chain elements of vwire's NSM server, one concern each (see [`crate::chain`]). Their order
//! is set in [`crate::server`]:
//!
//! updatepath → begin → updatetoken → authorize → metadata → timeout → monitor → recvfd →
//! nsmonitor → monitor_downstream → mechanisms → xconnect → connect
//!
//! Each module's doc states what the element guarantees and where it may be placed. `discover`
//! is no element of its own: it is connect's registry client.

pub mod authorize;
pub mod begin;
pub mod connect;
pub mod discover;
pub mod mechanisms;
pub mod metadata;
pub mod monitor;
pub mod monitor_downstream;
pub mod nsmonitor;
pub mod recvfd;
pub mod timeout;
pub mod updatepath;
pub mod updatetoken;
pub mod xconnect;
