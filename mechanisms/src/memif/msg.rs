//! memif control messages (being written).
