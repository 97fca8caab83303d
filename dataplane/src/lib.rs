//! vwire's packet engine.
//!
//! The pieces, in the order a packet meets them:
//! - [`buffer`]: one preallocated pool of fixed-size frames per worker; a packet is a
//!   [`buffer::BufIdx`] into it, with [`buffer::HEADROOM`] bytes free in front for encapsulation.
//! - [`port`]: the [`port::Port`] trait that AF_XDP, memif and tunnel ports implement: burst
//!   receive, burst transmit, and a flush point once per worker loop.
//! - [`table`]: the forwarding table, published by the control thread with [`rcu::RcuCell`] and
//!   read by workers without locks.
//! - [`tunnel`]: the format-agnostic tunnel stages ([`tunnel::Encap`], [`tunnel::Decap`]) that
//!   the VXLAN and SRv6 drivers implement.
//! - [`worker`]: a poll-mode thread pinned to one CPU that runs its ports' receive bursts to
//!   completion (receive → look up → transmit) with adaptive idling.
//! - [`counters`]: per-port, per-worker counters written by one worker each and summed on read.
//! - [`cpu`]: CPU affinity (pinning a thread, reading the allowed CPUs).
//! - [`engine`]: builds the workers, starts them and stops them.
//! - [`checksum`]: completes the partial TCP/UDP checksums that virtual devices leave behind.
//! - [`wire`]: zero-copy views of the packet headers vwire parses and writes, their constants,
//!   the L2 walk and the Internet checksum, shared by the dataplane, the mechanisms and the
//!   examples.
//! - [`mem_port`]: an in-memory port pair, used by benches and tests with no kernel involved.
//! - [`test_utils`]: hand-driven workers over in-memory ports, for benches and tests.
//!
//! Packet-path contract: nothing reached from [`worker::Worker::poll_once`] allocates, locks,
//! logs or makes a per-packet system call. Per-burst system calls (a TX kick) are allowed.

pub mod buffer;
pub mod checksum;
pub mod counters;
pub mod cpu;
pub mod engine;
pub mod mem_port;
pub mod port;
pub mod rcu;
pub mod table;
pub mod test_utils;
pub mod tunnel;
pub mod wire;
pub mod worker;

pub use buffer::{BufIdx, BufferPool};
pub use port::{Burst, Port, PortId, BURST};
