//! `[srv6]`: the SRv6 locator and encapsulation source of the SRV6 remote mechanism.

use std::net::Ipv6Addr;

use super::de::section;
use super::{ConfigError, Ctx};

section! {
    /// `[srv6]`.
    pub(super) struct Srv6Section {
        /// The prefix per-connection SIDs come from, like `fc00:1::/48`; empty: no SRV6.
        locator: String = String::new(),
        /// The encapsulation's IPv6 source; empty: the uplink's first global IPv6 address.
        host_ip: String = String::new(),
    }
}

/// The validated `[srv6]`.
pub(super) struct Srv6 {
    pub(super) locator: Option<(Ipv6Addr, u8)>,
    pub(super) host_ip: Option<Ipv6Addr>,
}

impl Srv6Section {
    pub(super) fn validate(self, ctx: &Ctx) -> Result<Srv6, ConfigError> {
        let locator = match self.locator.as_str() {
            "" => None,
            s => {
                let net: ipnet::Ipv6Net = s.parse().map_err(|_| {
                    ctx.err(
                        "srv6.locator",
                        format!("{s:?} is not an IPv6 prefix (like fc00:1::/48)"),
                    )
                })?;
                if net.prefix_len() > 112 {
                    return Err(ctx.err(
                        "srv6.locator",
                        format!(
                            "/{} leaves too few bits for SIDs (at most /112)",
                            net.prefix_len()
                        ),
                    ));
                }
                Some((net.network(), net.prefix_len()))
            }
        };
        let host_ip =
            match self.host_ip.as_str() {
                "" => None,
                s => Some(s.parse().map_err(|_| {
                    ctx.err("srv6.host_ip", format!("{s:?} is not an IPv6 address"))
                })?),
            };
        Ok(Srv6 { locator, host_ip })
    }
}
