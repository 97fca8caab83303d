//! `[nsm]`: this hop's NSM identity, its API, and the REMOTE mechanisms' settings.

use super::de::section;
use super::srv6::Srv6;
use super::{ConfigError, Ctx, RemoteConfig};
use crate::transport::Url;

section! {
    /// `[nsm]`; each key also has forwarder-vpp's `NSM_*` variable.
    pub(super) struct NsmSection {
        /// NSM_NAME: this hop's path segment name.
        name: String = "forwarder".into(),
        /// NSM_LISTEN_ON: `unix:///path` or `tcp://host:port` of the NSM API; empty: not served.
        listen_on: String = String::new(),
        /// NSM_TUNNEL_IP: the uplink is the interface that owns it; empty: the default route's
        /// interface and its first address; `"none"`: no uplink, no remote mechanisms.
        tunnel_ip: String = String::new(),
        /// NSM_VXLAN_PORT: the UDP port of VXLAN tunnels.
        vxlan_port: i64 = 4789,
        /// NSM_MECHANISM_PRIORITY: REMOTE mechanisms offered toward a `tcp://` next hop, most
        /// preferred first, comma-separated (`"VXLAN,SRV6"`).
        mechanism_priority: String = String::new(),
    }
}

/// The validated `[nsm]`.
pub(super) struct Nsm {
    pub(super) name: String,
    pub(super) listen_on: Option<Url>,
    pub(super) remote: RemoteConfig,
}

/// The mechanisms vwire offers, as `mechanism_priority` names them.
const MECHANISMS: [&str; 4] = ["VXLAN", "SRV6", "MEMIF", "KERNEL"];

impl NsmSection {
    /// Validates `[nsm]`; the validated `[srv6]` completes the REMOTE settings.
    pub(super) fn validate(self, ctx: &Ctx, srv6: Srv6) -> Result<Nsm, ConfigError> {
        let (tunnel_ip, off) = match self.tunnel_ip.as_str() {
            "" => (None, false),
            "none" => (None, true),
            s => {
                let ip = s.parse().map_err(|_| {
                    ctx.err(
                        "nsm.tunnel_ip",
                        format!("{s:?} is not an IP address (or \"none\")"),
                    )
                })?;
                (Some(ip), false)
            }
        };
        let vxlan_port = super::in_range(ctx, "nsm.vxlan_port", self.vxlan_port, 1..=65535)?;
        let mut priority = Vec::new();
        for t in self
            .mechanism_priority
            .split(',')
            .map(|t| t.trim().to_ascii_uppercase())
            .filter(|t| !t.is_empty())
        {
            if !MECHANISMS.contains(&t.as_str()) {
                return Err(ctx.err(
                    "nsm.mechanism_priority",
                    format!("{t:?} is not a mechanism vwire offers (VXLAN, SRV6, MEMIF, KERNEL)"),
                ));
            }
            priority.push(t);
        }
        let listen_on = match self.listen_on.as_str() {
            "" => None,
            url => Some(Url::parse(url).map_err(|e| ctx.err("nsm.listen_on", e.to_string()))?),
        };
        let remote = RemoteConfig {
            tunnel_ip,
            off,
            vxlan_port,
            priority,
            srv6_locator: srv6.locator,
            srv6_host_ip: srv6.host_ip,
        };
        Ok(Nsm {
            name: self.name,
            listen_on,
            remote,
        })
    }
}
