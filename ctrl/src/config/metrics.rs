//! `[metrics]`: where the Prometheus endpoint listens.

use std::net::SocketAddr;

use super::de::section;
use super::{ConfigError, Ctx, DEFAULT_METRICS_LISTEN};

section! {
    /// `[metrics]`.
    pub(super) struct MetricsSection {
        /// `host:port`, or `:port` (forwarder-vpp's form: all addresses) of `/metrics`, in
        /// Prometheus text format.
        listen: String = DEFAULT_METRICS_LISTEN.into(),
    }
}

impl MetricsSection {
    pub(super) fn validate(self, ctx: &Ctx) -> Result<SocketAddr, ConfigError> {
        let s = self.listen.trim();
        let full = if s.starts_with(':') {
            format!("0.0.0.0{s}")
        } else {
            s.to_string()
        };
        full.parse().map_err(|_| {
            ctx.err(
                "metrics.listen",
                format!("{:?} is not an address:port", self.listen),
            )
        })
    }
}
