//! `[log]`: the log filter.

use super::de::section;

section! {
    /// `[log]`.
    pub(super) struct LogSection {
        /// A tracing filter: `info`, `debug`, `vwire=trace`; case does not matter.
        level: String = "info".into(),
    }
}

impl LogSection {
    /// Any string is a filter; one tracing cannot parse falls back to `info` when logging starts.
    pub(super) fn validate(self) -> String {
        self.level.to_ascii_lowercase()
    }
}
