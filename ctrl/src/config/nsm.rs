//! `[nsm]`: this hop's NSM identity, its API, its registration, and the REMOTE mechanisms'
//! settings.
//!
//! The defaults are forwarder-vpp's, except `listen_on` and `connect_to`, which are empty (no
//! API, no registration) in a run with a configuration file; a run without one
//! ([`super::from_env`]) starts from forwarder-vpp's `unix:///listen.on.socket` and
//! `unix:///connect.to.socket`, as a pod that replaces forwarder-vpp expects.

use std::collections::BTreeMap;
use std::time::Duration;

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
        /// NSM_VXLAN_PORT: the UDP port of VXLAN tunnels; 0 means 4789, as in forwarder-vpp.
        vxlan_port: i64 = 4789,
        /// NSM_MECHANISM_PRIORITY: REMOTE mechanisms offered toward a `tcp://` next hop, most
        /// preferred first, comma-separated (`"VXLAN,SRV6"`).
        mechanism_priority: String = String::new(),
        /// NSM_CONNECT_TO: `unix:///path` or `tcp://host:port` of nsmgr, where vwire registers
        /// itself (when it serves the API) and finds next hops in the registry; empty: no
        /// registration, next hops from `[[endpoint]]`.
        connect_to: String = String::new(),
        /// NSM_NSNAME: the network service vwire registers under.
        nsname: String = "forwarder".into(),
        /// NSM_LABELS: the labels registered under the service, `k1:v1,k2:v2`; nsmgr picks
        /// forwarders by them (a service's `metadata.labels`, `p2p:true` by default).
        labels: String = "p2p:true".into(),
        /// NSM_DIAL_TIMEOUT: bound of every dial (to nsmgr and to next hops), and of waiting for
        /// a passed fd, Go duration syntax (`750ms`, `2s`).
        dial_timeout: String = "750ms".into(),
        /// NSM_MAX_TOKEN_LIFETIME: the longest lifetime of the path tokens vwire signs, Go
        /// duration syntax.
        max_token_lifetime: String = "10m".into(),
        /// NSM_INSECURE: plaintext gRPC, no tokens, no authorisation (labs only; loudly
        /// logged at start).
        insecure: bool = false,
        /// SPIFFE_ENDPOINT_SOCKET: the SPIFFE Workload API (`unix:///path`), where vwire gets its
        /// X.509-SVID; required with the NSM API unless `insecure`.
        spiffe_endpoint_socket: String = String::new(),
        /// NSM_AUTHORIZE_POLICIES: Rego files or directories (of `*.rego`), comma-separated,
        /// that replace vwire's default policies for Requests and Closes; empty: the defaults.
        authorize_policies: String = String::new(),
        /// NSM_MONITOR_POLICIES: likewise for MonitorConnections subscriptions.
        monitor_policies: String = String::new(),
        /// NSM_OPEN_TELEMETRY_ENDPOINT: the OpenTelemetry collector (`host:port`, OTLP/gRPC)
        /// spans are exported to, when TELEMETRY=true or this is not the default; empty: never.
        open_telemetry_endpoint: String = super::DEFAULT_OPEN_TELEMETRY_ENDPOINT.into(),
        /// VWIRE_NSM_STATE_DIR: where each KERNEL connection is recorded (a small file), so that
        /// vwire restarted after a crash takes the connections back without the pods seeing a
        /// link change; it must outlive the process (in a pod: a hostPath). Empty: a restart
        /// drops the connections.
        state_dir: String = "/run/vwire/state".into(),
        /// VWIRE_NSM_KERNEL_XCONNECT: how a connection between two kernel interfaces is
        /// cross-connected: `tcx` (in the kernel, TCX program: kernel speed, super-packets kept,
        /// traffic survives a restart; falls back to `afxdp` on a kernel without TCX, Linux <
        /// 6.6) or `afxdp` (through vwire's workers, like every other connection).
        kernel_xconnect: String = "tcx".into(),
    }
}

/// The validated `[nsm]`.
pub(super) struct Nsm {
    pub(super) name: String,
    pub(super) listen_on: Option<Url>,
    pub(super) state_dir: Option<std::path::PathBuf>,
    pub(super) kernel_xconnect: super::KernelXconnect,
    pub(super) remote: RemoteConfig,
    pub(super) registration: super::RegistrationConfig,
    pub(super) security: super::SecurityConfig,
}

/// forwarder-vpp's VXLAN port, which `vxlan_port = 0` stands for.
const VXLAN_DEFAULT_PORT: u16 = 4789;

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
        let vxlan_port = match super::in_range(ctx, "nsm.vxlan_port", self.vxlan_port, 0..=65535)? {
            0 => VXLAN_DEFAULT_PORT,
            p => p,
        };
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
        let connect_to = match self.connect_to.as_str() {
            "" => None,
            url => Some(Url::parse(url).map_err(|e| ctx.err("nsm.connect_to", e.to_string()))?),
        };
        if self.nsname.is_empty() {
            return Err(ctx.err("nsm.nsname", "must not be empty"));
        }
        let labels =
            parse_labels(&self.labels).map_err(|problem| ctx.err("nsm.labels", problem))?;
        let duration = |key: &str, text: &str| match super::duration::parse(text)
            .map_err(|problem| ctx.err(key, problem))?
        {
            Duration::ZERO => Err(ctx.err(key, "must be more than 0")),
            d => Ok(d),
        };
        let registration = super::RegistrationConfig {
            connect_to,
            service_name: self.nsname,
            labels,
            dial_timeout: duration("nsm.dial_timeout", &self.dial_timeout)?,
            max_token_lifetime: duration("nsm.max_token_lifetime", &self.max_token_lifetime)?,
            open_telemetry_endpoint: self.open_telemetry_endpoint,
        };
        let uses_nsm = listen_on.is_some() || registration.connect_to.is_some();
        let security = match (self.insecure, self.spiffe_endpoint_socket.as_str()) {
            (true, _) => super::SecurityConfig::Insecure,
            (false, "") if uses_nsm => {
                return Err(ctx.err(
                    "nsm.spiffe_endpoint_socket",
                    "must be set to the SPIFFE Workload API (unix:///path) for the NSM API's mTLS, unless nsm.insecure = true (NSM_INSECURE) for a lab",
                ))
            }
            (false, "") => super::SecurityConfig::Insecure,
            (false, endpoint) => {
                if !endpoint.starts_with("unix://") && !endpoint.starts_with("tcp://") {
                    return Err(ctx.err(
                        "nsm.spiffe_endpoint_socket",
                        format!("{endpoint:?}: expected unix:///path (or tcp://host:port)"),
                    ));
                }
                super::SecurityConfig::Spiffe {
                    endpoint: endpoint.to_string(),
                    authorize_policies: policy_paths(ctx, "nsm.authorize_policies", &self.authorize_policies)?,
                    monitor_policies: policy_paths(ctx, "nsm.monitor_policies", &self.monitor_policies)?,
                }
            }
        };
        let remote = RemoteConfig {
            tunnel_ip,
            off,
            vxlan_port,
            priority,
            srv6_locator: srv6.locator,
            srv6_host_ip: srv6.host_ip,
        };
        let state_dir = match self.state_dir.as_str() {
            "" => None,
            d if !d.starts_with('/') => {
                return Err(ctx.err("nsm.state_dir", format!("{d:?} is not an absolute path")))
            }
            d => Some(std::path::PathBuf::from(d)),
        };
        let kernel_xconnect = match self.kernel_xconnect.as_str() {
            "tcx" => super::KernelXconnect::Tcx,
            "afxdp" => super::KernelXconnect::Afxdp,
            other => {
                return Err(ctx.err(
                    "nsm.kernel_xconnect",
                    format!("{other:?}: expected \"tcx\" or \"afxdp\""),
                ))
            }
        };
        Ok(Nsm {
            name: self.name,
            listen_on,
            state_dir,
            kernel_xconnect,
            remote,
            registration,
            security,
        })
    }
}

/// A comma-separated list of policy files or directories, each of which must exist.
fn policy_paths(ctx: &Ctx, key: &str, text: &str) -> Result<Vec<std::path::PathBuf>, ConfigError> {
    let mut paths = Vec::new();
    for p in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let path = std::path::PathBuf::from(p);
        if !path.exists() {
            return Err(ctx.err(key, format!("{p:?} does not exist")));
        }
        paths.push(path);
    }
    Ok(paths)
}

/// Labels as envconfig writes a map: `k1:v1,k2:v2` (blanks around items are ignored, a value
/// may contain `:`); empty: no labels. The error says which item is wrong and why.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((k, v)) = item.split_once(':') else {
            return Err(format!(
                "{item:?} is not key:value (labels are written k1:v1,k2:v2)"
            ));
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            return Err(format!(
                "{item:?} has an empty key (labels are written k1:v1,k2:v2)"
            ));
        }
        if labels.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("label {k:?} is given twice"));
        }
    }
    Ok(labels)
}
