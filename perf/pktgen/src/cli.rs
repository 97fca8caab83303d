//! The command line: options, their checks (bad options exit with code 2 and a message naming
//! the option), and the `run` command. `rfc2544` and `plot` live in their own modules.

use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::engine::{Engine, EngineError, Traffic, TrialOptions, TrialResult};
use crate::ports::{PortError, PortSpec};
use crate::stream::{Encap, Outer, StreamSpec, Vary, IMIX};

/// Errors of the command line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// an option's value is unusable
    #[error("{option}: {why}")]
    Option {
        /// the option
        option: &'static str,
        /// what is wrong
        why: String,
    },
    /// the engine refused or failed
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// writing results failed
    #[error("{path}: {source}")]
    Write {
        /// the file
        path: String,
        /// why
        source: std::io::Error,
    },
    /// reading results failed
    #[error("{path}: {why}")]
    Read {
        /// the file
        path: String,
        /// why
        why: String,
    },
    /// drawing failed
    #[error("plot: {0}")]
    Plot(String),
}

impl CliError {
    /// 2 for bad options, 1 for run-time failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Option { .. } => 2,
            CliError::Engine(e) => match e {
                EngineError::Stream { .. }
                | EngineError::UnknownPort { .. }
                | EngineError::DuplicatePort(_)
                | EngineError::TooManyStreams
                | EngineError::Port(PortError::Syntax { .. }) => 2,
                EngineError::Port(PortError::AfXdp {
                    source: vwire_mechanisms::afxdp::AfXdpError::NoSuchInterface(_),
                    ..
                }) => 2,
                _ => 1,
            },
            _ => 1,
        }
    }
}

fn bad(option: &'static str, why: impl Into<String>) -> CliError {
    CliError::Option {
        option,
        why: why.into(),
    }
}

/// vwire-pktgen: packet generator and receiver on vwire's AF_XDP and memif ports.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send and receive for a time (one trial per frame size of a sweep); JSON results.
    Run(RunArgs),
    /// RFC 2544 throughput (binary search for the highest rate within the loss ratio) and
    /// latency at that rate, per frame size.
    Rfc2544(crate::rfc2544::Rfc2544Args),
    /// SVG charts from rfc2544 results.
    Plot(crate::plot::PlotArgs),
}

/// Ports, cores and the stream: shared by `run` and `rfc2544`.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// A port: NAME=afxdp:IFNAME[@NETNS], or NAME=memif:client|server:SOCKET[,id=N][,ring=SLOTS][,buffer=BYTES]. Repeat for more.
    #[arg(long = "port", required = true)]
    pub ports: Vec<String>,
    /// Ports that transmit (comma-separated names); each sends its own stream.
    #[arg(long, value_delimiter = ',')]
    pub tx: Vec<String>,
    /// Ports that receive and account (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub rx: Vec<String>,
    /// CPUs to pin workers to, one worker each (port i goes to worker i mod N); none: one
    /// unpinned worker.
    #[arg(long, value_delimiter = ',')]
    pub cores: Vec<usize>,
    /// Source MAC (of the inner frame when encapsulated).
    #[arg(long, default_value = "02:00:00:00:00:01")]
    pub src_mac: String,
    /// Destination MAC.
    #[arg(long, default_value = "02:00:00:00:00:02")]
    pub dst_mac: String,
    /// Source address (IPv4 or IPv6).
    #[arg(long, default_value = "198.18.0.1")]
    pub src_ip: String,
    /// Destination address (same family as --src-ip).
    #[arg(long, default_value = "198.19.0.1")]
    pub dst_ip: String,
    /// UDP source port.
    #[arg(long, default_value_t = 1024)]
    pub src_port: u16,
    /// UDP destination port.
    #[arg(long, default_value_t = 1024)]
    pub dst_port: u16,
    /// Number of flows; the fields in --vary take base + flow number.
    #[arg(long, default_value_t = 1)]
    pub flows: usize,
    /// What varies per flow: any of sport, dport, src-ip, dst-ip (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "sport")]
    pub vary: Vec<String>,
    /// Encapsulation: none, vxlan:VNI, or srv6:SEG[,SEG...] (H.Encaps.L2).
    #[arg(long, default_value = "none")]
    pub encap: String,
    /// Outer source MAC of an encapsulated stream.
    #[arg(long, default_value = "02:00:00:00:01:01")]
    pub outer_src_mac: String,
    /// Outer destination MAC.
    #[arg(long, default_value = "02:00:00:00:01:02")]
    pub outer_dst_mac: String,
    /// Outer source address (VXLAN: v4 or v6; SRv6: v6).
    #[arg(long, default_value = "fd97::1")]
    pub outer_src_ip: String,
    /// Outer destination address (VXLAN's remote VTEP).
    #[arg(long, default_value = "fd97::2")]
    pub outer_dst_ip: String,
    /// Seconds to wait for memif peers to connect.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Milliseconds to keep receiving after transmission stops.
    #[arg(long, default_value_t = 300)]
    pub drain_ms: u64,
    /// No live rates on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Write the JSON results here (default: stdout).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A label for the results (e.g. "vwire", "bridge"): the series name in plots.
    #[arg(long, default_value = "")]
    pub label: String,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Frame size with FCS: N, imix (64/594/1518 at 7:4:1), or a sweep N,N,... (one trial each).
    #[arg(long, default_value = "64")]
    size: String,
    /// Per transmitting port: line (as fast as the port takes frames) or frames/s (k, M suffixes).
    #[arg(long, default_value = "line")]
    rate: String,
    /// Seconds per trial.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Send exactly this many frames per port (at --rate, which must then be given), then drain.
    #[arg(long)]
    count: Option<u64>,
}

/// Parses a MAC address.
pub fn mac(option: &'static str, s: &str) -> Result<[u8; 6], CliError> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut m = [0u8; 6];
    if parts.len() != 6 {
        return Err(bad(
            option,
            format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"),
        ));
    }
    for (o, p) in m.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16).map_err(|_| {
            bad(
                option,
                format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"),
            )
        })?;
    }
    Ok(m)
}

fn ip(option: &'static str, s: &str) -> Result<IpAddr, CliError> {
    s.parse()
        .map_err(|_| bad(option, format!("{s:?} is not an IPv4 or IPv6 address")))
}

/// Parses a rate: `line` or frames/s with an optional k/M/G suffix.
pub fn rate(option: &'static str, s: &str) -> Result<Option<f64>, CliError> {
    if s == "line" {
        return Ok(None);
    }
    let (num, mult) = match s.chars().last() {
        Some('k') | Some('K') => (&s[..s.len() - 1], 1e3),
        Some('M') | Some('m') => (&s[..s.len() - 1], 1e6),
        Some('G') | Some('g') => (&s[..s.len() - 1], 1e9),
        _ => (s, 1.0),
    };
    let v: f64 = num.parse().map_err(|_| {
        bad(
            option,
            format!("{s:?} is not `line` or a rate like 500k, 1.5M"),
        )
    })?;
    if !(v.is_finite() && v > 0.0) {
        return Err(bad(option, format!("{s:?}: the rate must be positive")));
    }
    Ok(Some(v * mult))
}

/// Parses frame sizes: a number, `imix`, or a comma-separated sweep. Returns the trials'
/// size patterns.
pub fn sizes(option: &'static str, s: &str) -> Result<Vec<Vec<usize>>, CliError> {
    if s == "imix" {
        return Ok(vec![IMIX.to_vec()]);
    }
    s.split(',')
        .map(|p| {
            let n: usize = p.trim().parse().map_err(|_| {
                bad(
                    option,
                    format!("{p:?} is not a frame size, `imix`, or a list"),
                )
            })?;
            if !(64..=9018).contains(&n) {
                return Err(bad(
                    option,
                    format!("{n}: frame sizes are 64 to 9018 bytes"),
                ));
            }
            Ok(vec![n])
        })
        .collect()
}

impl Common {
    /// The stream this command describes.
    pub fn stream(&self) -> Result<StreamSpec, CliError> {
        let mut vary = Vary::default();
        for v in &self.vary {
            match v.as_str() {
                "sport" => vary.src_port = true,
                "dport" => vary.dst_port = true,
                "src-ip" => vary.src_ip = true,
                "dst-ip" => vary.dst_ip = true,
                "none" => {}
                _ => {
                    return Err(bad(
                        "--vary",
                        format!("{v:?}: choose from sport, dport, src-ip, dst-ip, none"),
                    ))
                }
            }
        }
        let encap = match self.encap.as_str() {
            "none" => Encap::None,
            e if e.starts_with("vxlan:") => {
                let vni: u32 = e[6..]
                    .parse()
                    .ok()
                    .filter(|v| *v < 1 << 24)
                    .ok_or_else(|| bad("--encap", format!("{e:?}: the VNI is 0 to 16777215")))?;
                Encap::Vxlan { vni }
            }
            e if e.starts_with("srv6:") => {
                let segments = e[5..]
                    .split(',')
                    .map(|s| {
                        s.parse::<Ipv6Addr>()
                            .map_err(|_| bad("--encap", format!("{s:?} is not an IPv6 segment")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Encap::Srv6 { segments }
            }
            e => {
                return Err(bad(
                    "--encap",
                    format!("{e:?}: choose none, vxlan:VNI or srv6:SEG[,SEG...]"),
                ))
            }
        };
        let spec = StreamSpec {
            src_mac: mac("--src-mac", &self.src_mac)?,
            dst_mac: mac("--dst-mac", &self.dst_mac)?,
            src_ip: ip("--src-ip", &self.src_ip)?,
            dst_ip: ip("--dst-ip", &self.dst_ip)?,
            src_port: self.src_port,
            dst_port: self.dst_port,
            flows: self.flows,
            vary,
            encap,
            outer: Outer {
                src_mac: mac("--outer-src-mac", &self.outer_src_mac)?,
                dst_mac: mac("--outer-dst-mac", &self.outer_dst_mac)?,
                src_ip: ip("--outer-src-ip", &self.outer_src_ip)?,
                dst_ip: ip("--outer-dst-ip", &self.outer_dst_ip)?,
            },
        };
        spec.validate().map_err(|e| bad("stream", e.to_string()))?;
        Ok(spec)
    }

    /// The parsed ports.
    pub fn port_specs(&self) -> Result<Vec<PortSpec>, CliError> {
        self.ports
            .iter()
            .map(|p| PortSpec::parse(p).map_err(|e| bad("--port", e.to_string())))
            .collect()
    }

    /// Checks everything that needs no device, then opens the engine.
    pub fn open(&self) -> Result<(Engine, StreamSpec, Vec<PortSpec>), CliError> {
        let specs = self.port_specs()?;
        let stream = self.stream()?;
        if self.tx.is_empty() && self.rx.is_empty() {
            return Err(bad(
                "--tx/--rx",
                "name at least one port to send or receive on",
            ));
        }
        for n in self.tx.iter().chain(&self.rx) {
            if !specs.iter().any(|s| &s.name == n) {
                return Err(bad(
                    "--tx/--rx",
                    format!("{n:?} is not the name of a --port"),
                ));
            }
        }
        let allowed = vwire_dataplane::cpu::allowed_cpus().unwrap_or_default();
        for c in &self.cores {
            if !allowed.contains(c) {
                return Err(bad(
                    "--cores",
                    format!("CPU {c} is not one this process may use ({allowed:?})"),
                ));
            }
        }
        let engine = Engine::open(
            &specs,
            &self.tx,
            &self.rx,
            &self.cores,
            Duration::from_secs(self.connect_timeout),
        )?;
        Ok((engine, stream, specs))
    }

    /// Writes `value` as JSON to --json or stdout.
    pub fn write_json(&self, value: &serde_json::Value) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value).unwrap_or_default();
        match &self.json {
            Some(p) => std::fs::write(p, text + "\n").map_err(|source| CliError::Write {
                path: p.display().to_string(),
                source,
            }),
            None => {
                println!("{text}");
                Ok(())
            }
        }
    }
}

/// Seconds since the epoch as RFC 3339 UTC.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil from days (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The running kernel's release.
pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The header every results file starts with.
pub fn header(
    command: &str,
    c: &Common,
    stream: &StreamSpec,
    ports: &[PortSpec],
) -> serde_json::Value {
    serde_json::json!({
        "tool": "vwire-pktgen",
        "version": env!("CARGO_PKG_VERSION"),
        "command": command,
        "label": c.label,
        "date": utc_now(),
        "kernel": kernel(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "ports": ports,
        "tx": c.tx,
        "rx": c.rx,
        "cores": c.cores,
        "stream": stream,
    })
}

/// Dispatches a command.
pub fn main(cli: Cli) -> Result<(), CliError> {
    match cli.cmd {
        Command::Run(a) => run(a),
        Command::Rfc2544(a) => crate::rfc2544::run(a),
        Command::Plot(a) => crate::plot::run(a),
    }
}

fn run(a: RunArgs) -> Result<(), CliError> {
    let patterns = sizes("--size", &a.size)?;
    let mut rate = rate("--rate", &a.rate)?;
    let mut duration = a.duration;
    if let Some(n) = a.count {
        let Some(r) = rate else {
            return Err(bad("--count", "needs a paced --rate (not line)"));
        };
        if n == 0 {
            return Err(bad("--count", "must be at least 1"));
        }
        // The pacer sends n frames in n / rate seconds; stop a little after the last is due.
        duration = n as f64 / r;
        rate = Some(r);
    }
    // What can be checked without devices fails before any port opens.
    let stream = a.common.stream()?;
    for &size in patterns.iter().flatten() {
        stream
            .check_size(size, usize::MAX)
            .map_err(|e| bad("--size", e.to_string()))?;
    }
    if !(duration.is_finite() && duration > 0.0 && duration <= 86400.0) {
        return Err(bad("--duration", "seconds, more than 0 and at most 86400"));
    }
    let (mut engine, stream, specs) = a.common.open()?;
    let mut trials: Vec<TrialResult> = Vec::new();
    let opts = TrialOptions {
        duration: Duration::from_secs_f64(duration),
        drain: Duration::from_millis(a.common.drain_ms),
        progress: !a.common.quiet,
        limit: a.count,
    };
    let result = (|| {
        for sizes in patterns {
            let traffic = Traffic {
                spec: stream.clone(),
                sizes,
                rate,
            };
            engine.check(&traffic)?;
            trials.push(engine.trial(&traffic, &opts)?);
        }
        Ok::<(), EngineError>(())
    })();
    engine.close();
    result?;
    let mut out = header("run", &a.common, &stream, &specs);
    out["rate"] = serde_json::json!(a.rate);
    out["duration_s"] = serde_json::json!(duration);
    out["trials"] = serde_json::to_value(&trials).unwrap_or_default();
    a.common.write_json(&out)
}
