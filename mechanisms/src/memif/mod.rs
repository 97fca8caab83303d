//! memif: shared-memory packet interfaces, wire-compatible with VPP, libmemif and DPDK.
//!
//! Layout: [`msg`] (the 128-byte control messages: pure core).

pub mod msg;
