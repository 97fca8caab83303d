//! vwire's configuration: a TOML file (or, with none, [`from_env`]'s defaults), then
//! environment overrides, then validation.
//!
//! Each section of the file is a struct declared with `section!` in its own module, and each
//! key is a field of it, documented there (and shown in the README):
//! `[dataplane]` (`dataplane.rs`), `[metrics]` (`metrics.rs`), `[log]` (`log.rs`), `[nsm]`
//! (`nsm.rs`), `[srv6]` (`srv6.rs`), `[[port]]` (`port.rs`), `[[xconnect]]` (`xconnect.rs`) and
//! `[[endpoint]]` (`endpoint.rs`).
//!
//! Order of work: the text is parsed into a TOML value; the environment overlay (`env.rs`:
//! `NSM_*`, `VWIRE_<SECTION>_<KEY>`, `VWIRE_<ARRAY>_<i>_<KEY>`) sets keys in that value; serde
//! deserialises it into the section structs (`de.rs`: unknown keys, missing keys and value types
//! are errors there); then each section validates itself into the [`Config`] the rest of vwire
//! uses, checking what serde cannot (ranges, addresses, CPUs and interfaces of the [`Host`],
//! references between sections).
//!
//! Every error names the file, the key and the problem, and the environment variable when one
//! set the key (see [`ConfigError`]).
//!
//! A run without a file ([`from_env`], `vwire run` with no `--config`: a pod has environment,
//! not files) differs only in two defaults, forwarder-vpp's: `nsm.listen_on` is
//! `unix:///listen.on.socket` and `nsm.connect_to` is `unix:///connect.to.socket` (with a file
//! both default to empty: no API, no registration). Its errors name the file as
//! [`NO_FILE`].
//!
//! `NSM_*` variables that name no key (forwarder-vpp's VPP, SR-IOV and OPA settings, which a
//! pod spec carries over) are not errors: they are listed in [`Config::ignored_variables`], for
//! one warning at start ([`Config::ignored_variables_warning`]). An unknown `VWIRE_*` variable
//! is an error.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Table, Value};
use vwire_mechanisms::memif::driver::MemifConfig;

mod dataplane;
mod de;
pub mod duration;
mod endpoint;
mod env;
mod log;
mod metrics;
mod nsm;
mod port;
mod srv6;
mod xconnect;

use dataplane::DataplaneSection;
use de::Entries;
use endpoint::EndpointSection;
pub use log::LogFormat;
use log::LogSection;
use metrics::MetricsSection;
use nsm::NsmSection;
use srv6::Srv6Section;
use xconnect::XconnectSection;

/// A configuration error: which file, which key (and the variable that set it), what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{}: key `-`: cannot read the file: {reason}", .file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The system's error.
        reason: String,
    },
    /// The file is not TOML.
    #[error("{}: key `-`: not valid TOML{}: {message}", .file.display(), at_line(*.line))]
    Syntax {
        /// The file.
        file: PathBuf,
        /// Where the parser stopped, if it says.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// A `VWIRE_*` variable names no key.
    #[error("{}: key `{var}` (from ${var}): unknown VWIRE_* variable: it matches no configuration key", .file.display())]
    UnknownVariable {
        /// The file.
        file: PathBuf,
        /// The variable.
        var: String,
    },
    /// A key is unknown, missing, of the wrong type, or its value is wrong.
    #[error("{}: key `{key}`{}: {problem}", .file.display(), env_note(.env.as_deref()))]
    Key {
        /// The file.
        file: PathBuf,
        /// The key, e.g. `port[1].interface`.
        key: String,
        /// The environment variable that set the key, if one did.
        env: Option<String>,
        /// The problem.
        problem: String,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

fn env_note(var: Option<&str>) -> String {
    var.map(|v| format!(" (from ${v})")).unwrap_or_default()
}

/// Idle policy of the workers.
pub use vwire_dataplane::worker::PollMode;

/// A port definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// Unique name, used by cross-connects and metrics.
    pub name: String,
    /// The mechanism.
    pub kind: PortKind,
}

/// A Network Service Endpoint that requests are forwarded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// Its name (`network_service_endpoint_name` in requests).
    pub name: String,
    /// Where it listens.
    pub url: crate::transport::Url,
    /// The network service it serves, for requests that name no endpoint.
    pub service: Option<String>,
}

/// The mechanism of a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortKind {
    /// AF_XDP on a network interface.
    AfXdp {
        /// The interface.
        interface: String,
    },
    /// A memif interface.
    Memif(MemifConfig),
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Worker CPUs.
    pub workers: Vec<usize>,
    /// Idle policy.
    pub poll: PollMode,
    /// With NSM: frames each worker's pool adds for connections' AF_XDP ports.
    pub connection_frames: u32,
    /// Where /metrics is served.
    pub metrics_listen: SocketAddr,
    /// Log filter (tracing syntax: `info`, `debug`, `vwire=trace`).
    pub log_level: String,
    /// The format of log lines (`[log] format`, VWIRE_LOG_FORMAT).
    pub log_format: LogFormat,
    /// Where spans are exported over OTLP/gRPC (`http://host:port`); `None`: no export. See
    /// [`otlp_endpoint`] for when it is set.
    pub otlp_endpoint: Option<String>,
    /// This hop's name in NSM paths (NSM_NAME).
    pub nsm_name: String,
    /// Where the NSM gRPC API is served (NSM_LISTEN_ON); none: not served.
    pub nsm_listen_on: Option<crate::transport::Url>,
    /// Where connections are recorded so that a restart keeps them (`nsm.state_dir`); each
    /// instance uses a subdirectory of its own. `None`: a restart drops them.
    pub state_dir: Option<std::path::PathBuf>,
    /// How KERNEL↔KERNEL connections are cross-connected (`nsm.kernel_xconnect`).
    pub kernel_xconnect: KernelXconnect,
    /// The REMOTE mechanisms' settings.
    pub remote: RemoteConfig,
    /// Ports, in file order; a port's index is its port id.
    pub ports: Vec<PortConfig>,
    /// Cross-connects, as port indices.
    pub xconnects: Vec<(usize, usize)>,
    /// Network Service Endpoints the NSM server may connect to (a static map until registry
    /// discovery exists).
    pub endpoints: Vec<EndpointConfig>,
    /// CPUs left for the control thread.
    pub control_cpus: Vec<usize>,
    /// Registration with the registry through nsmgr, and the other NSM settings of the sdk.
    pub registration: RegistrationConfig,
    /// mTLS, tokens and policies, or none.
    pub security: SecurityConfig,
    /// `NSM_*` variables of the environment that vwire does not use, sorted.
    pub ignored_variables: Vec<String>,
}

impl Config {
    /// The one warning about [`Config::ignored_variables`], if there are any.
    pub fn ignored_variables_warning(&self) -> Option<String> {
        (!self.ignored_variables.is_empty()).then(|| {
            format!(
                "ignoring NSM_* variables vwire does not use: {}",
                self.ignored_variables.join(", ")
            )
        })
    }
}

/// How a connection between two kernel interfaces is cross-connected (`nsm.kernel_xconnect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelXconnect {
    /// In the kernel: a TCX program redirects between the two host veths
    /// (`vwire_mechanisms::tcx`); AF_XDP where the kernel cannot.
    #[default]
    Tcx,
    /// Through vwire's workers, over AF_XDP.
    Afxdp,
}

/// How the NSM API and vwire's NSM clients are secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityConfig {
    /// NSM_INSECURE (or no NSM API at all): plaintext gRPC, no tokens, no policies.
    Insecure,
    /// mTLS with an X.509-SVID of the SPIFFE Workload API, path tokens, policies.
    Spiffe {
        /// SPIFFE_ENDPOINT_SOCKET.
        endpoint: String,
        /// NSM_AUTHORIZE_POLICIES; empty: vwire's defaults.
        authorize_policies: Vec<std::path::PathBuf>,
        /// NSM_MONITOR_POLICIES; empty: vwire's defaults.
        monitor_policies: Vec<std::path::PathBuf>,
    },
}

/// How vwire registers itself with the registry, through nsmgr, and the sdk's other settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationConfig {
    /// NSM_CONNECT_TO: nsmgr; `None`: no registration, next hops from `[[endpoint]]`.
    pub connect_to: Option<crate::transport::Url>,
    /// NSM_NSNAME: the network service registered under (`forwarder`).
    pub service_name: String,
    /// NSM_LABELS: the labels registered for that service (`p2p:true`).
    pub labels: BTreeMap<String, String>,
    /// NSM_DIAL_TIMEOUT: the bound of every dial, to nsmgr and to next hops (750 ms).
    pub dial_timeout: std::time::Duration,
    /// NSM_MAX_TOKEN_LIFETIME: the longest lifetime of signed path tokens (10 min).
    pub max_token_lifetime: std::time::Duration,
    /// NSM_OPEN_TELEMETRY_ENDPOINT: the collector, as configured (see [`otlp_endpoint`]).
    pub open_telemetry_endpoint: String,
}

/// Settings of the REMOTE mechanisms (VXLAN, SRV6) and of the uplink they use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    /// NSM_TUNNEL_IP: the uplink's tunnel address; `None`: the default route's interface.
    pub tunnel_ip: Option<std::net::IpAddr>,
    /// `tunnel_ip = "none"`: no uplink and no remote mechanisms.
    pub off: bool,
    /// NSM_VXLAN_PORT.
    pub vxlan_port: u16,
    /// NSM_MECHANISM_PRIORITY: mechanism types, most preferred first (upper case).
    pub priority: Vec<String>,
    /// `[srv6] locator`: the prefix SIDs are allocated from; `None`: no SRV6.
    pub srv6_locator: Option<(std::net::Ipv6Addr, u8)>,
    /// `[srv6] host_ip`: the encapsulation's IPv6 source.
    pub srv6_host_ip: Option<std::net::Ipv6Addr>,
}

/// Default metrics address.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9100";

/// What the validation needs to know about the machine.
pub trait Host {
    /// CPUs this process may run on.
    fn cpus(&self) -> Vec<usize>;
    /// True if the network interface exists.
    fn has_interface(&self, name: &str) -> bool;
}

/// The real machine.
#[derive(Debug, Default)]
pub struct RealHost;

impl Host for RealHost {
    fn cpus(&self) -> Vec<usize> {
        allowed_cpus()
    }
    fn has_interface(&self, name: &str) -> bool {
        vwire_mechanisms::afxdp::socket::ifindex(name).is_some()
    }
}

/// The CPUs in this process's affinity mask (none if the kernel does not say).
pub fn allowed_cpus() -> Vec<usize> {
    vwire_dataplane::cpu::allowed_cpus().unwrap_or_default()
}

/// What errors need to name: the file, and which variable set which key.
struct Ctx<'a> {
    file: &'a Path,
    /// Key path → the env variable that set it.
    from_env: HashMap<String, String>,
}

impl Ctx<'_> {
    fn err(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::Key {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            env: self.from_env.get(key).cloned(),
            problem: problem.into(),
        }
    }

    /// Deserializes `value`, the key `at` (`""`: the whole file); an error names the file, the
    /// key inside `value` and the variable that set that key.
    fn deserialize<T: serde::de::DeserializeOwned>(
        &self,
        at: &str,
        value: Value,
    ) -> Result<T, ConfigError> {
        de::from_value(value).map_err(|e| match e.within(at) {
            ConfigError::Key { key, problem, .. } => self.err(&key, problem),
            other => other,
        })
    }
}

/// `n`, the value of `key`, if it is in `range` (which fits in `T`).
fn in_range<T: TryFrom<i64>>(
    ctx: &Ctx,
    key: &str,
    n: i64,
    range: RangeInclusive<i64>,
) -> Result<T, ConfigError> {
    let out_of_range = || {
        ctx.err(
            key,
            format!("{n} is out of range ({} to {})", range.start(), range.end()),
        )
    };
    if !range.contains(&n) {
        return Err(out_of_range());
    }
    T::try_from(n).map_err(|_| out_of_range())
}

/// What errors name as the file in a run without one.
pub const NO_FILE: &str = "(no config file)";

/// The text a run without a file starts from: forwarder-vpp's defaults of the keys whose
/// default is empty when there is a file (see the module doc).
const NO_FILE_DEFAULTS: &str = r#"
[nsm]
listen_on = "unix:///listen.on.socket"
connect_to = "unix:///connect.to.socket"
"#;

/// The configuration of a run without a file: [`NO_FILE_DEFAULTS`] with `env` applied,
/// validated.
pub fn from_env(env: &BTreeMap<String, String>, host: &dyn Host) -> Result<Config, ConfigError> {
    parse(Path::new(NO_FILE), NO_FILE_DEFAULTS, env, host)
}

/// Reads, overrides and validates the configuration.
pub fn load(
    path: &Path,
    env: &BTreeMap<String, String>,
    host: &dyn Host,
) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        file: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    parse(path, &text, env, host)
}

/// Parses `text` (the contents of `path`), applies `env` and validates.
pub fn parse(
    path: &Path,
    text: &str,
    env: &BTreeMap<String, String>,
    host: &dyn Host,
) -> Result<Config, ConfigError> {
    let mut root: Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            file: path.to_path_buf(),
            line: e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1),
            message: e.message().to_string(),
        })?;
    let mut ctx = Ctx {
        file: path,
        from_env: HashMap::new(),
    };
    env::overlay(&mut ctx, &mut root, env)?;
    let file: ConfigFile = ctx.deserialize("", Value::Table(root))?;
    let mut cfg = file.validate(&ctx, host)?;
    cfg.ignored_variables = env::ignored(env);
    cfg.otlp_endpoint = otlp_endpoint(&cfg.registration.open_telemetry_endpoint, env);
    Ok(cfg)
}

/// forwarder-vpp's default of NSM_OPEN_TELEMETRY_ENDPOINT (the in-cluster collector).
pub const DEFAULT_OPEN_TELEMETRY_ENDPOINT: &str =
    "otel-collector.observability.svc.cluster.local:4317";

/// Where spans go, from `[nsm] open_telemetry_endpoint` (NSM_OPEN_TELEMETRY_ENDPOINT) and the
/// environment: the sdk exports when `TELEMETRY=true`; vwire also exports when the endpoint was
/// changed from its default (setting a collector is asking for traces). An empty endpoint
/// never exports. `host:port` (the sdk's form) becomes `http://host:port`; an `http://` or
/// `https://` URL is kept.
pub fn otlp_endpoint(endpoint: &str, env: &BTreeMap<String, String>) -> Option<String> {
    let endpoint = endpoint.trim();
    let wanted = env
        .get("TELEMETRY")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || endpoint != DEFAULT_OPEN_TELEMETRY_ENDPOINT;
    if endpoint.is_empty() || !wanted {
        return None;
    }
    Some(
        if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
            endpoint.to_string()
        } else {
            format!("http://{endpoint}")
        },
    )
}

/// The file: its fields are the sections, each a struct that validates itself.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ConfigFile {
    dataplane: DataplaneSection,
    metrics: MetricsSection,
    log: LogSection,
    nsm: NsmSection,
    srv6: Srv6Section,
    /// Tables whose `type` says which section struct they are (see `port.rs`).
    port: Entries<Table>,
    xconnect: Entries<XconnectSection>,
    endpoint: Entries<EndpointSection>,
}

impl ConfigFile {
    fn validate(self, ctx: &Ctx, host: &dyn Host) -> Result<Config, ConfigError> {
        let srv6 = self.srv6.validate(ctx)?;
        let nsm = self.nsm.validate(ctx, srv6)?;
        let dataplane = self.dataplane.validate(ctx, host)?;
        let metrics_listen = self.metrics.validate(ctx)?;
        let (log_level, log_format) = self.log.validate(ctx)?;
        let ports = port::Ports::validate(ctx, host, self.port.0)?;
        let endpoints = endpoint::validate(ctx, self.endpoint.0)?;
        let xconnects = xconnect::validate(ctx, self.xconnect.0, &ports.by_name)?;
        Ok(Config {
            workers: dataplane.workers,
            poll: dataplane.poll,
            connection_frames: dataplane.connection_frames,
            metrics_listen,
            log_level,
            log_format,
            otlp_endpoint: None,
            nsm_name: nsm.name,
            nsm_listen_on: nsm.listen_on,
            state_dir: nsm.state_dir,
            kernel_xconnect: nsm.kernel_xconnect,
            remote: nsm.remote,
            ports: ports.ports,
            xconnects,
            endpoints,
            control_cpus: dataplane.control_cpus,
            registration: nsm.registration,
            security: nsm.security,
            ignored_variables: Vec::new(),
        })
    }
}

/// Which worker each port goes to: both ends of a cross-connect share a worker (a port is owned
/// by one worker, which also transmits on it), and the pairs are spread round-robin.
pub fn assign_workers(cfg: &Config) -> Vec<usize> {
    let mut assignment = vec![usize::MAX; cfg.ports.len()];
    let mut next = 0;
    for &(a, b) in &cfg.xconnects {
        assignment[a] = next % cfg.workers.len();
        assignment[b] = next % cfg.workers.len();
        next += 1;
    }
    for w in assignment.iter_mut().filter(|w| **w == usize::MAX) {
        *w = next % cfg.workers.len();
        next += 1;
    }
    assignment
}

#[cfg(test)]
mod tests;
