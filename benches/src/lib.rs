//! Holder crate for the criterion benches in `benches/`; see `benches/engine.rs`.
