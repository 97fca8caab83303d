//! `vwire-pktgen`: a packet generator and receiver on vwire's own AF_XDP and memif ports.
//!
//! - `run`: send streams on some ports and receive on others for a time, at line rate or a
//!   paced rate, with one trial per frame size of a sweep; live rates on stderr, JSON results.
//! - `rfc2544`: per frame size, the highest rate with no loss (or loss below a ratio) by
//!   binary search, then the latency at that rate (RFC 2544 §26.1 and §26.2).
//! - `plot`: SVG charts from `rfc2544` results (rate against frame size, one series per file;
//!   latency percentiles; latency histograms).
//!
//! Exit codes: 0 success, 1 a run-time failure (a port that cannot open, a peer that does not
//! connect), 2 bad options, with a message that names the option.

pub mod cli;
pub mod engine;
pub mod plot;
pub mod ports;
pub mod rfc2544;
pub mod rx;
pub mod stream;
