//! `[log]`: the log filter and the format of log lines.

use super::de::section;
use super::{ConfigError, Ctx};

section! {
    /// `[log]`.
    pub(super) struct LogSection {
        /// NSM_LOG_LEVEL: a tracing filter: `info`, `debug`, `vwire=trace`; case does not
        /// matter.
        level: String = "info".into(),
        /// VWIRE_LOG_FORMAT: `text` (one human-readable line per event) or `json` (one JSON
        /// object per line, for log collectors).
        format: String = "text".into(),
    }
}

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// tracing-subscriber's human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's `json` format).
    Json,
}

impl LogSection {
    /// The filter (any string is a filter; one tracing cannot parse falls back to `info` when
    /// logging starts) and the format.
    pub(super) fn validate(self, ctx: &Ctx) -> Result<(String, LogFormat), ConfigError> {
        let format = match self.format.to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ctx.err(
                    "log.format",
                    format!("{other:?} is not a log format (text or json)"),
                ))
            }
        };
        Ok((self.level.to_ascii_lowercase(), format))
    }
}
