//! vwire's configuration: a TOML file, then environment overrides, then validation.
//!
//! Keys (a contract: later features and the tests use these names):
//!
//! ```toml
//! [dataplane]
//! workers = [1]            # CPU ids: one pinned poll-mode worker each
//! poll = "adaptive"        # or "busy"
//! [metrics]
//! listen = "127.0.0.1:9100"   # Prometheus text format at /metrics
//! [log]
//! level = "info"
//! [nsm]
//! name = "forwarder"                 # this hop's path segment name
//! listen_on = "unix:///listen.on.sock" # or tcp://host:port; unset: no NSM API
//! tunnel_ip = "10.97.0.1"            # the uplink is the interface that owns it; unset: the
//!                                    # default route's interface and its first address;
//!                                    # "none": no uplink, no remote mechanisms
//! vxlan_port = 4789                  # UDP port of VXLAN tunnels
//! mechanism_priority = "VXLAN,SRV6"  # REMOTE mechanisms offered toward a tcp:// next hop, in order
//! [srv6]
//! locator = "fc00:1::/48"            # SIDs come from it; unset: no SRV6
//! host_ip = "fd00::1"                # IPv6 source of the encapsulation; unset: the uplink's first
//!                                    # global IPv6 address
//! [[port]]
//! name = "left"
//! type = "afxdp"
//! interface = "veth0"
//! [[port]]
//! name = "m0"
//! type = "memif"
//! socket = "/run/vwire/a.sock"   # or "@name" for an abstract socket
//! role = "server"                # or "client"
//! id = 0
//! mode = "ethernet"              # or "ip"
//! queues = 1
//! ring_size = 1024
//! buffer_size = 2048
//! secret = ""                    # optional
//! netns = "/var/run/netns/x"     # optional: where an abstract socket lives
//! [[xconnect]]
//! a = "left"
//! b = "right"              # L2 cross-connect, both directions
//! [[endpoint]]
//! name = "nse-1"
//! url = "unix:///run/nse-1.sock"  # or tcp://host:port
//! service = "icmp-responder"      # used when a request names no endpoint
//! ```
//!
//! Environment overrides: the `NSM_*` name where forwarder-vpp has one
//! (`NSM_PROMETHEUS_LISTEN_ON` for `metrics.listen`, `NSM_LOG_LEVEL` for `log.level`,
//! `NSM_NAME` for `nsm.name`, `NSM_LISTEN_ON` for `nsm.listen_on`, `NSM_TUNNEL_IP`,
//! `NSM_VXLAN_PORT` and `NSM_MECHANISM_PRIORITY` for the `nsm` keys of the same names), and
//! `VWIRE_<SECTION>_<KEY>` otherwise: `VWIRE_DATAPLANE_WORKERS=1,2`, `VWIRE_DATAPLANE_POLL=busy`.
//! Entries of `[[port]]` and `[[xconnect]]` are addressed by position:
//! `VWIRE_PORT_0_INTERFACE=eth1`, `VWIRE_XCONNECT_0_B=right`; an index one past the end adds an
//! entry. An unknown `VWIRE_*` variable is an error, not silently ignored.
//!
//! Every error names the file, the key and the problem (see [`ConfigError`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::{Table, Value};
use vwire_mechanisms::memif::driver::MemifConfig;
use vwire_mechanisms::memif::msg::Mode;
use vwire_mechanisms::memif::port::Role;

/// A configuration error: where, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (the env variable is named in `key` when it came from there).
    pub file: PathBuf,
    /// The key, e.g. `port[1].interface`.
    pub key: String,
    /// The environment variable that set the key, if one did.
    pub env: Option<String>,
    /// The problem.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: key `{}`", self.file.display(), self.key)?;
        if let Some(var) = &self.env {
            write!(f, " (from ${var})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for ConfigError {}

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
    pub url: crate::grpc::ListenOn,
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
    /// Where /metrics is served.
    pub metrics_listen: SocketAddr,
    /// Log filter (tracing syntax: `info`, `debug`, `vwire=trace`).
    pub log_level: String,
    /// This hop's name in NSM paths (NSM_NAME).
    pub nsm_name: String,
    /// Where the NSM gRPC API is served (NSM_LISTEN_ON); none: not served.
    pub nsm_listen_on: Option<crate::grpc::ListenOn>,
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

/// The CPUs in this process's affinity mask.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; `set` is a live cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: i is below CPU_SETSIZE, inside `set`.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect()
}

struct Ctx<'a> {
    file: &'a Path,
    /// Key path → the env variable that set it, to name it in errors.
    from_env: HashMap<String, String>,
}

impl Ctx<'_> {
    fn err(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            env: self.from_env.get(key).cloned(),
            problem: problem.into(),
        }
    }
}

/// Reads, overrides and validates the configuration.
pub fn load(
    path: &Path,
    env: &BTreeMap<String, String>,
    host: &dyn Host,
) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        key: "-".into(),
        env: None,
        problem: format!("cannot read the file: {e}"),
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
    let mut ctx = Ctx {
        file: path,
        from_env: HashMap::new(),
    };
    let mut root: Table = text.parse().map_err(|e: toml::de::Error| {
        let msg = e.message().to_string();
        let loc = e
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        ConfigError {
            file: path.to_path_buf(),
            key: "-".into(),
            env: None,
            problem: format!("not valid TOML{loc}: {msg}"),
        }
    })?;
    apply_env(&mut ctx, &mut root, env)?;
    build(&ctx, &root, host)
}

/// Kinds of values a key holds, for converting env strings.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    CpuList,
}

const SECTION_KEYS: &[(&str, &[(&str, Kind)])] = &[
    (
        "dataplane",
        &[("workers", Kind::CpuList), ("poll", Kind::Str)],
    ),
    ("metrics", &[("listen", Kind::Str)]),
    ("log", &[("level", Kind::Str)]),
    (
        "nsm",
        &[
            ("name", Kind::Str),
            ("listen_on", Kind::Str),
            ("tunnel_ip", Kind::Str),
            ("vxlan_port", Kind::Int),
            ("mechanism_priority", Kind::Str),
        ],
    ),
    ("srv6", &[("locator", Kind::Str), ("host_ip", Kind::Str)]),
];
/// Keys of an AF_XDP port.
const AFXDP_KEYS: &[&str] = &["name", "type", "interface"];
/// Keys of a memif port.
const MEMIF_KEYS: &[&str] = &[
    "name",
    "type",
    "socket",
    "role",
    "id",
    "mode",
    "queues",
    "ring_size",
    "buffer_size",
    "secret",
    "netns",
];
/// Port keys that hold integers.
const PORT_INT_KEYS: &[&str] = &["id", "queues", "ring_size", "buffer_size"];
const XCONNECT_KEYS: &[&str] = &["a", "b"];
const ENDPOINT_KEYS: &[&str] = &["name", "url", "service"];
/// forwarder-vpp's names for keys vwire shares with it.
const NSM_ENV: &[(&str, &str, &str)] = &[
    ("NSM_PROMETHEUS_LISTEN_ON", "metrics", "listen"),
    ("NSM_LOG_LEVEL", "log", "level"),
    ("NSM_NAME", "nsm", "name"),
    ("NSM_LISTEN_ON", "nsm", "listen_on"),
    ("NSM_TUNNEL_IP", "nsm", "tunnel_ip"),
    ("NSM_VXLAN_PORT", "nsm", "vxlan_port"),
    ("NSM_MECHANISM_PRIORITY", "nsm", "mechanism_priority"),
];

fn env_value(ctx: &Ctx, key: &str, kind: Kind, raw: &str) -> Result<Value, ConfigError> {
    match kind {
        Kind::Str => Ok(Value::String(raw.to_string())),
        Kind::Int => raw
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| ctx.err(key, format!("{raw:?} is not an integer"))),
        Kind::CpuList => {
            let inner = raw.trim().trim_start_matches('[').trim_end_matches(']');
            inner
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<i64>()
                        .map(Value::Integer)
                        .map_err(|_| ctx.err(key, format!("{s:?} is not a CPU id")))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
    }
}

fn section_mut<'a>(
    ctx: &Ctx,
    root: &'a mut Table,
    section: &str,
) -> Result<&'a mut Table, ConfigError> {
    root.entry(section.to_string())
        .or_insert_with(|| Value::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| ctx.err(section, "must be a table"))
}

fn apply_env(
    ctx: &mut Ctx,
    root: &mut Table,
    env: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (var, section, key) in NSM_ENV {
        if let Some(v) = env.get(*var) {
            let path = format!("{section}.{key}");
            ctx.from_env.insert(path.clone(), var.to_string());
            let kind = SECTION_KEYS
                .iter()
                .find(|(s, _)| s == section)
                .and_then(|(_, keys)| keys.iter().find(|(k, _)| k == key))
                .map_or(Kind::Str, |(_, kind)| *kind);
            let value = env_value(ctx, &path, kind, v)?;
            section_mut(ctx, root, section)?.insert(key.to_string(), value);
        }
    }
    for (var, v) in env.iter().filter(|(k, _)| k.starts_with("VWIRE_")) {
        let rest = var["VWIRE_".len()..].to_ascii_lowercase();
        let unknown = || ConfigError {
            file: ctx.file.to_path_buf(),
            key: var.clone(),
            env: Some(var.clone()),
            problem: "unknown VWIRE_* variable: it matches no configuration key".into(),
        };
        let (section, tail) = rest.split_once('_').ok_or_else(unknown)?;
        if let Some((_, keys)) = SECTION_KEYS.iter().find(|(s, _)| *s == section) {
            let (key, kind) = keys.iter().find(|(k, _)| *k == tail).ok_or_else(unknown)?;
            let path = format!("{section}.{key}");
            ctx.from_env.insert(path.clone(), var.clone());
            let value = env_value(ctx, &path, *kind, v)?;
            section_mut(ctx, root, section)?.insert(key.to_string(), value);
            continue;
        }
        // A port may carry the keys of any port type; its `type` decides which are valid.
        let keys: &[&[&str]] = match section {
            "port" => &[AFXDP_KEYS, MEMIF_KEYS],
            "xconnect" => &[XCONNECT_KEYS],
            "endpoint" => &[ENDPOINT_KEYS],
            _ => return Err(unknown()),
        };
        let (idx, key) = tail.split_once('_').ok_or_else(unknown)?;
        let idx: usize = idx.parse().map_err(|_| unknown())?;
        if !keys.iter().any(|k| k.contains(&key)) {
            return Err(unknown());
        }
        let path = format!("{section}[{idx}].{key}");
        ctx.from_env.insert(path.clone(), var.clone());
        let array = root
            .entry(section.to_string())
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
            .ok_or_else(|| ctx.err(section, "must be an array of tables ([[...]])"))?;
        if idx == array.len() {
            array.push(Value::Table(Table::new()));
        }
        let entry = array
            .get_mut(idx)
            .and_then(Value::as_table_mut)
            .ok_or_else(|| {
                ctx.err(
                    &path,
                    format!(
                        "there is no {section} entry {idx} to override, and it is not the next one"
                    ),
                )
            })?;
        let value = match v.parse::<i64>() {
            Ok(n) if PORT_INT_KEYS.contains(&key) => Value::Integer(n),
            _ => Value::String(v.clone()),
        };
        entry.insert(key.to_string(), value);
    }
    Ok(())
}

fn check_keys(ctx: &Ctx, t: &Table, path: &str, allowed: &[&str]) -> Result<(), ConfigError> {
    for k in t.keys() {
        if !allowed.contains(&k.as_str()) {
            let key = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            return Err(ctx.err(
                &key,
                format!("unknown key (expected one of: {})", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

fn get_table<'a>(ctx: &Ctx, root: &'a Table, key: &str) -> Result<Option<&'a Table>, ConfigError> {
    match root.get(key) {
        None => Ok(None),
        Some(Value::Table(t)) => Ok(Some(t)),
        Some(_) => Err(ctx.err(key, "must be a table ([...])")),
    }
}

fn get_str<'a>(
    ctx: &Ctx,
    t: &'a Table,
    path: &str,
    key: &str,
) -> Result<Option<&'a str>, ConfigError> {
    match t.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(ctx.err(
            &format!("{path}.{key}"),
            format!("must be a string, not {}", v.type_str()),
        )),
    }
}

fn require_str<'a>(ctx: &Ctx, t: &'a Table, path: &str, key: &str) -> Result<&'a str, ConfigError> {
    get_str(ctx, t, path, key)?.ok_or_else(|| ctx.err(&format!("{path}.{key}"), "is required"))
}

fn array_of_tables<'a>(
    ctx: &Ctx,
    root: &'a Table,
    key: &str,
) -> Result<Vec<&'a Table>, ConfigError> {
    match root.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_table()
                    .ok_or_else(|| ctx.err(&format!("{key}[{i}]"), "must be a table ([[...]])"))
            })
            .collect(),
        Some(_) => Err(ctx.err(key, "must be an array of tables ([[...]])")),
    }
}

fn get_int(
    ctx: &Ctx,
    t: &Table,
    path: &str,
    key: &str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ConfigError> {
    match t.get(key) {
        None => Ok(default),
        Some(Value::Integer(n)) if range.contains(n) => Ok(*n),
        Some(Value::Integer(n)) => Err(ctx.err(
            &format!("{path}.{key}"),
            format!("{n} is out of range ({} to {})", range.start(), range.end()),
        )),
        Some(v) => Err(ctx.err(
            &format!("{path}.{key}"),
            format!("must be an integer, not {}", v.type_str()),
        )),
    }
}

/// The REMOTE mechanisms' keys of `[nsm]` and `[srv6]`.
fn remote_config(ctx: &Ctx, nsm: &Table, srv6: &Table) -> Result<RemoteConfig, ConfigError> {
    let (tunnel_ip, off) = match get_str(ctx, nsm, "nsm", "tunnel_ip")? {
        None | Some("") => (None, false),
        Some("none") => (None, true),
        Some(s) => {
            let ip = s.parse().map_err(|_| {
                ctx.err(
                    "nsm.tunnel_ip",
                    format!("{s:?} is not an IP address (or \"none\")"),
                )
            })?;
            (Some(ip), false)
        }
    };
    let vxlan_port = get_int(ctx, nsm, "nsm", "vxlan_port", 4789, 1..=65535)?;
    let mut priority = Vec::new();
    for t in get_str(ctx, nsm, "nsm", "mechanism_priority")?
        .unwrap_or("")
        .split(',')
        .map(|t| t.trim().to_ascii_uppercase())
        .filter(|t| !t.is_empty())
    {
        if !["VXLAN", "SRV6", "MEMIF", "KERNEL"].contains(&t.as_str()) {
            return Err(ctx.err(
                "nsm.mechanism_priority",
                format!("{t:?} is not a mechanism vwire offers (VXLAN, SRV6, MEMIF, KERNEL)"),
            ));
        }
        priority.push(t);
    }
    let srv6_locator = match get_str(ctx, srv6, "srv6", "locator")? {
        None | Some("") => None,
        Some(s) => {
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
    let srv6_host_ip = match get_str(ctx, srv6, "srv6", "host_ip")? {
        None | Some("") => None,
        Some(s) => Some(
            s.parse()
                .map_err(|_| ctx.err("srv6.host_ip", format!("{s:?} is not an IPv6 address")))?,
        ),
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // range-checked above
    Ok(RemoteConfig {
        tunnel_ip,
        off,
        vxlan_port: vxlan_port as u16,
        priority,
        srv6_locator,
        srv6_host_ip,
    })
}

/// The keys of a `type = "memif"` port.
fn memif_port(ctx: &Ctx, t: &Table, path: &str, name: &str) -> Result<MemifConfig, ConfigError> {
    let key = |k: &str| format!("{path}.{k}");
    let socket = require_str(ctx, t, path, "socket")?.to_string();
    if let Err(e) = vwire_mechanisms::memif::sock::sockaddr(&socket) {
        return Err(ctx.err(&key("socket"), e.to_string()));
    }
    let role = match get_str(ctx, t, path, "role")?.unwrap_or("server") {
        "server" | "master" => Role::Server,
        "client" | "slave" => Role::Client,
        other => {
            return Err(ctx.err(
                &key("role"),
                format!("{other:?} is not a role (\"server\" or \"client\")"),
            ))
        }
    };
    let mode = match get_str(ctx, t, path, "mode")?.unwrap_or("ethernet") {
        "ethernet" => Mode::Ethernet,
        "ip" => Mode::Ip,
        other => {
            return Err(ctx.err(
                &key("mode"),
                format!("{other:?} is not a mode (\"ethernet\" or \"ip\")"),
            ))
        }
    };
    let id = get_int(ctx, t, path, "id", 0, 0..=i64::from(u32::MAX))?;
    let queues = get_int(ctx, t, path, "queues", 1, 1..=64)?;
    let ring_size = get_int(ctx, t, path, "ring_size", 1024, 2..=16384)?;
    if ring_size.count_ones() != 1 {
        return Err(ctx.err(
            &key("ring_size"),
            format!("{ring_size} is not a power of two"),
        ));
    }
    let buffer_size = get_int(ctx, t, path, "buffer_size", 2048, 128..=65535)?;
    let secret = get_str(ctx, t, path, "secret")?.unwrap_or("").to_string();
    if secret.len() > 23 {
        return Err(ctx.err(&key("secret"), "is longer than 23 bytes"));
    }
    let netns = get_str(ctx, t, path, "netns")?.map(PathBuf::from);
    if let Some(n) = &netns {
        if !socket.starts_with('@') {
            return Err(ctx.err(
                &key("netns"),
                "only applies to an abstract socket (\"@name\")",
            ));
        }
        if !n.exists() {
            return Err(ctx.err(&key("netns"), format!("{} does not exist", n.display())));
        }
    }
    #[allow(clippy::cast_possible_truncation)] // all checked against their ranges above
    Ok(MemifConfig {
        name: name.to_string(),
        socket,
        role,
        id: id as u32,
        mode,
        queues: queues as u16,
        log2_ring_size: ring_size.trailing_zeros() as u8,
        buffer_size: buffer_size as u32,
        secret,
        netns,
    })
}

/// Parses `host:port`, or `:port` (forwarder-vpp's form, meaning all addresses).
fn parse_listen(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse().ok()
}

fn build(ctx: &Ctx, root: &Table, host: &dyn Host) -> Result<Config, ConfigError> {
    check_keys(
        ctx,
        root,
        "",
        &[
            "dataplane",
            "metrics",
            "log",
            "nsm",
            "srv6",
            "port",
            "xconnect",
            "endpoint",
        ],
    )?;
    let empty = Table::new();
    let dp = get_table(ctx, root, "dataplane")?.unwrap_or(&empty);
    check_keys(ctx, dp, "dataplane", &["workers", "poll"])?;
    let metrics = get_table(ctx, root, "metrics")?.unwrap_or(&empty);
    check_keys(ctx, metrics, "metrics", &["listen"])?;
    let log = get_table(ctx, root, "log")?.unwrap_or(&empty);
    check_keys(ctx, log, "log", &["level"])?;
    let nsm = get_table(ctx, root, "nsm")?.unwrap_or(&empty);
    check_keys(
        ctx,
        nsm,
        "nsm",
        &[
            "name",
            "listen_on",
            "tunnel_ip",
            "vxlan_port",
            "mechanism_priority",
        ],
    )?;
    let srv6 = get_table(ctx, root, "srv6")?.unwrap_or(&empty);
    check_keys(ctx, srv6, "srv6", &["locator", "host_ip"])?;
    let remote = remote_config(ctx, nsm, srv6)?;
    let nsm_name = get_str(ctx, nsm, "nsm", "name")?
        .unwrap_or("forwarder")
        .to_string();
    let nsm_listen_on = match get_str(ctx, nsm, "nsm", "listen_on")? {
        None | Some("") => None,
        Some(url) => Some(
            crate::grpc::ListenOn::parse(url)
                .map_err(|e| ctx.err("nsm.listen_on", e.to_string()))?,
        ),
    };

    let cpus = host.cpus();
    let workers: Vec<usize> = match dp.get("workers") {
        // Default: one worker on the highest CPU, leaving the lower ones to the control thread.
        None => cpus
            .iter()
            .copied()
            .filter(|&c| c != 0)
            .max()
            .into_iter()
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::Integer(i) if *i >= 0 => usize::try_from(*i)
                    .map_err(|_| ctx.err("dataplane.workers", "CPU id out of range")),
                other => Err(ctx.err(
                    "dataplane.workers",
                    format!("must list CPU ids (non-negative integers), found {other}"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(ctx.err(
                "dataplane.workers",
                format!("must be an array of CPU ids, not {}", v.type_str()),
            ))
        }
    };
    if workers.is_empty() {
        return Err(ctx.err("dataplane.workers", "needs at least one CPU (and the machine must have a second one for the control thread)"));
    }
    let mut seen = HashSet::new();
    for &w in &workers {
        if !cpus.contains(&w) {
            return Err(ctx.err(
                "dataplane.workers",
                format!(
                    "CPU {w} does not exist or is not available to vwire (available: {cpus:?})"
                ),
            ));
        }
        if !seen.insert(w) {
            return Err(ctx.err("dataplane.workers", format!("CPU {w} is listed twice")));
        }
    }
    let control_cpus: Vec<usize> = cpus
        .iter()
        .copied()
        .filter(|c| !workers.contains(c))
        .collect();
    if control_cpus.is_empty() {
        return Err(ctx.err(
            "dataplane.workers",
            format!("uses every available CPU {cpus:?}; leave one for the control thread"),
        ));
    }
    let poll = match get_str(ctx, dp, "dataplane", "poll")?.unwrap_or("adaptive") {
        "adaptive" => PollMode::Adaptive,
        "busy" => PollMode::Busy,
        other => {
            return Err(ctx.err(
                "dataplane.poll",
                format!("{other:?} is not a poll mode (expected \"adaptive\" or \"busy\")"),
            ))
        }
    };
    let listen_s = get_str(ctx, metrics, "metrics", "listen")?.unwrap_or(DEFAULT_METRICS_LISTEN);
    let metrics_listen = parse_listen(listen_s).ok_or_else(|| {
        ctx.err(
            "metrics.listen",
            format!("{listen_s:?} is not an address:port"),
        )
    })?;
    let log_level = get_str(ctx, log, "log", "level")?
        .unwrap_or("info")
        .to_ascii_lowercase();

    let mut ports = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut interfaces: HashMap<String, usize> = HashMap::new();
    let mut memifs = HashMap::new();
    for (i, t) in array_of_tables(ctx, root, "port")?.into_iter().enumerate() {
        let path = format!("port[{i}]");
        let name = require_str(ctx, t, &path, "name")?;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ctx.err(
                &format!("{path}.name"),
                format!("{name:?} is not a valid name (1-64 of A-Z a-z 0-9 - _ .)"),
            ));
        }
        if let Some(j) = names.insert(name.to_string(), i) {
            return Err(ctx.err(
                &format!("{path}.name"),
                format!("duplicate port name {name:?} (also port[{j}])"),
            ));
        }
        let kind = match require_str(ctx, t, &path, "type")? {
            "afxdp" => {
                check_keys(ctx, t, &path, AFXDP_KEYS)?;
                let interface = require_str(ctx, t, &path, "interface")?;
                if !host.has_interface(interface) {
                    return Err(ctx.err(
                        &format!("{path}.interface"),
                        format!("unknown interface {interface:?}"),
                    ));
                }
                if let Some(j) = interfaces.insert(interface.to_string(), i) {
                    return Err(ctx.err(
                        &format!("{path}.interface"),
                        format!("interface {interface:?} is already used by port[{j}]"),
                    ));
                }
                PortKind::AfXdp {
                    interface: interface.to_string(),
                }
            }
            "memif" => {
                check_keys(ctx, t, &path, MEMIF_KEYS)?;
                let m = memif_port(ctx, t, &path, name)?;
                let key = (m.socket.clone(), m.netns.clone(), m.id, m.role);
                if let Some(j) = memifs.insert(key, i) {
                    return Err(ctx.err(
                        &format!("{path}.id"),
                        format!(
                            "port[{j}] already uses id {} on socket {:?} in this role",
                            m.id, m.socket
                        ),
                    ));
                }
                PortKind::Memif(m)
            }
            other => {
                return Err(ctx.err(
                    &format!("{path}.type"),
                    format!(
                        "{other:?} is not a supported port type (supported: \"afxdp\", \"memif\")"
                    ),
                ))
            }
        };
        ports.push(PortConfig {
            name: name.to_string(),
            kind,
        });
    }

    let mut endpoints: Vec<EndpointConfig> = Vec::new();
    for (i, t) in array_of_tables(ctx, root, "endpoint")?
        .into_iter()
        .enumerate()
    {
        let path = format!("endpoint[{i}]");
        check_keys(ctx, t, &path, ENDPOINT_KEYS)?;
        let name = require_str(ctx, t, &path, "name")?.to_string();
        if endpoints.iter().any(|e| e.name == name) {
            return Err(ctx.err(
                &format!("{path}.name"),
                format!("duplicate endpoint name {name:?}"),
            ));
        }
        let url_s = require_str(ctx, t, &path, "url")?;
        let url = crate::grpc::ListenOn::parse(url_s)
            .map_err(|e| ctx.err(&format!("{path}.url"), e.to_string()))?;
        let service = get_str(ctx, t, &path, "service")?.map(str::to_string);
        endpoints.push(EndpointConfig { name, url, service });
    }

    let mut xconnects = Vec::new();
    let mut connected: HashMap<usize, usize> = HashMap::new();
    for (i, t) in array_of_tables(ctx, root, "xconnect")?
        .into_iter()
        .enumerate()
    {
        let path = format!("xconnect[{i}]");
        check_keys(ctx, t, &path, XCONNECT_KEYS)?;
        let mut ends = [0usize; 2];
        for (end, key) in ends.iter_mut().zip(["a", "b"]) {
            let name = require_str(ctx, t, &path, key)?;
            *end = *names.get(name).ok_or_else(|| {
                ctx.err(
                    &format!("{path}.{key}"),
                    format!("no port is named {name:?}"),
                )
            })?;
            if let Some(j) = connected.get(end) {
                return Err(ctx.err(
                    &format!("{path}.{key}"),
                    format!("port {name:?} is already cross-connected by xconnect[{j}]"),
                ));
            }
        }
        if ends[0] == ends[1] {
            return Err(ctx.err(
                &format!("{path}.b"),
                "a port cannot be cross-connected to itself",
            ));
        }
        connected.insert(ends[0], i);
        connected.insert(ends[1], i);
        xconnects.push((ends[0], ends[1]));
    }

    Ok(Config {
        workers,
        poll,
        metrics_listen,
        log_level,
        nsm_name,
        nsm_listen_on,
        remote,
        ports,
        xconnects,
        endpoints,
        control_cpus,
    })
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
