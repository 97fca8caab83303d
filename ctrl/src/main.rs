//! The `vwire` binary: parses the command line, reads the configuration, starts logging, and
//! runs the node ([`vwire::node`]) until SIGTERM or SIGINT.
//!
//! `vwire run` without `--config` runs from the environment alone (a pod has environment, not
//! files), with forwarder-vpp's defaults for the NSM sockets (see [`vwire::config::from_env`]).
//!
//! Exit codes: 0 after a signal-initiated shutdown, 2 for a bad configuration, 1 for any other
//! failure (a port that cannot be opened, a worker that died).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing::{error, warn};
use vwire::config;

#[derive(Parser)]
#[command(
    name = "vwire",
    version,
    about = "vwire: a userspace dataplane for Network Service Mesh"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the dataplane.
    Run {
        /// The TOML configuration file; without one, the defaults and the environment.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and exit (0: valid, 2: invalid).
    Check {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Probe an NSM API's gRPC health (0: SERVING, 1: anything else), as Kubernetes probes
    /// do with grpc-health-probe.
    Health {
        /// `unix:///path` or `tcp://host:port`.
        #[arg(long, default_value = "unix:///listen.on.sock")]
        addr: String,
        /// mTLS with an SVID of the SPIFFE Workload API at SPIFFE_ENDPOINT_SOCKET.
        #[arg(long)]
        spiffe: bool,
        /// The service to ask about; empty: the server.
        #[arg(long, default_value = "")]
        service: String,
        /// The bound of the whole probe, Go duration syntax.
        #[arg(long, default_value = "5s")]
        timeout: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let (path, check_only) = match cli.cmd {
        Cmd::Run { config } => (config, false),
        Cmd::Check { config } => (Some(config), true),
        Cmd::Health {
            addr,
            spiffe,
            service,
            timeout,
        } => return health(&addr, spiffe, &service, &timeout, &env),
    };
    let loaded = match &path {
        Some(path) => config::load(path, &env, &config::RealHost),
        None => config::from_env(&env, &config::RealHost),
    };
    let cfg = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vwire: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        if let Some(w) = cfg.ignored_variables_warning() {
            eprintln!("vwire: warning: {w}");
        }
        let path = path
            .as_deref()
            .unwrap_or(std::path::Path::new(config::NO_FILE));
        println!("{}: configuration is valid", path.display());
        return ExitCode::SUCCESS;
    }
    // Pin first: the export threads inherit the control thread's CPUs.
    if let Err(e) = vwire::node::pin_control_thread(&cfg.control_cpus) {
        eprintln!("vwire: {e}");
        return ExitCode::from(1);
    }
    let observability = match vwire::observability::init(
        &cfg.log_level,
        cfg.log_format,
        &cfg.nsm_name,
        cfg.otlp_endpoint.as_deref(),
    ) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("vwire: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(w) = cfg.ignored_variables_warning() {
        warn!("{w}");
    }
    let code = match vwire::node::run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("vwire: {e}");
            ExitCode::from(1)
        }
    };
    observability.shutdown();
    code
}

/// `vwire health`: exit 0 for SERVING, 1 for anything else, 2 for bad arguments.
fn health(
    addr: &str,
    spiffe: bool,
    service: &str,
    timeout: &str,
    env: &BTreeMap<String, String>,
) -> ExitCode {
    let usage = |e: String| {
        eprintln!("vwire health: {e}");
        ExitCode::from(2)
    };
    let addr = match vwire::transport::Url::parse(addr) {
        Ok(a) => a,
        Err(e) => return usage(format!("--addr: {e}")),
    };
    let timeout = match config::duration::parse(timeout) {
        Ok(t) if !t.is_zero() => t,
        Ok(_) => return usage("--timeout: must be more than 0".into()),
        Err(e) => return usage(format!("--timeout: {e}")),
    };
    let endpoint = match (spiffe, env.get("SPIFFE_ENDPOINT_SOCKET")) {
        (false, _) => None,
        (true, Some(e)) if !e.is_empty() => Some(e.as_str()),
        (true, _) => return usage("--spiffe needs SPIFFE_ENDPOINT_SOCKET".into()),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vwire health: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(vwire::health::probe(&addr, endpoint, service, timeout)) {
        Ok(()) => {
            println!("status: SERVING");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vwire health: {addr}: {e}");
            ExitCode::from(1)
        }
    }
}
