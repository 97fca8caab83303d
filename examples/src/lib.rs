//! Example NSM workloads used by vwire's tests and demos.
//!
//! * `vwire-nse`: an icmp-responder network service endpoint. It hands out point-to-point IPv4
//!   addresses from a CIDR pool and answers the KERNEL mechanism with an interface name and its own
//!   network namespace, and (with `--mechanism memif`) the MEMIF mechanism with a memif server of
//!   its own per connection (see [`nse`], [`ipam`], [`path`]).
//! * `vwire-nsc`: a client that requests one KERNEL or MEMIF connection, prints it, refreshes it
//!   and closes it on SIGTERM/SIGINT (see [`nsc`]).
//!
//! With MEMIF, both run a [`memif_app`]: vwire's own memif driver and port, with a small host
//! behind it ([`responder`]: ARP, neighbour discovery, ICMP echo) that can ping its peer
//! ([`pinger`]). Like a kernel, that host keeps to the MTU of the connection: it fragments
//! larger IPv4 datagrams and reassembles the fragments it receives ([`ipv4frag`]).
//!
//! Both speak the NSM `networkservice` API from `vwire-proto` over `unix://` or `tcp://`
//! ([`vwire::transport`]; [`transport`] adds what only the examples need).

pub mod ipam;
pub mod ipv4frag;
pub mod memif_app;
pub mod nsc;
pub mod nse;
pub mod path;
pub mod pinger;
pub mod responder;
pub mod transport;

/// Installs a `tracing` subscriber writing to stderr (level from `RUST_LOG`, default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A future that resolves when the process receives SIGTERM or SIGINT. The handlers are installed
/// when this is called (inside a tokio runtime), not when the future is first polled.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let recv = |s: std::io::Result<tokio::signal::unix::Signal>, what: &'static str| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                    tracing::info!("{what} received");
                }
                Err(e) => {
                    tracing::warn!("cannot watch {what}: {e}");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = recv(term, "SIGTERM") => {}
            _ = recv(int, "SIGINT") => {}
        }
    }
}

/// This process's network namespace as a KERNEL `inodeURL` parameter: `file:///proc/<pid>/ns/net`.
pub fn own_netns_url() -> String {
    format!("file:///proc/{}/ns/net", std::process::id())
}

/// The mechanism a workload uses or offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum MechanismKind {
    /// A kernel interface (veth) in this process's network namespace.
    Kernel,
    /// A memif interface answered by this process ([`memif_app`]).
    Memif,
}

impl MechanismKind {
    /// The NSM mechanism type.
    pub fn mechanism_type(self) -> vwire_proto::mechanism::MechanismType {
        use vwire_proto::mechanism::MechanismType;
        match self {
            Self::Kernel => MechanismType::Kernel,
            Self::Memif => MechanismType::Memif,
        }
    }

    /// The NSM mechanism type string.
    pub fn as_str(self) -> &'static str {
        self.mechanism_type().as_str()
    }
}

/// Writes `line` and a newline to stdout and flushes, in one piece even when several threads
/// print.
pub fn print_line(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
