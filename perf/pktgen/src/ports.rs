//! Ports: parsing `--port` specifications and opening them with vwire's own drivers (cold).
//!
//! - `afxdp:IFNAME[@NETNS]` opens an AF_XDP port on IFNAME with
//!   `vwire_mechanisms::afxdp::socket::open` (every receive queue, XDP program attached,
//!   detached when the port is dropped), from a thread inside NETNS (`/var/run/netns/NETNS`)
//!   if given, so one process can serve interfaces of several namespaces.
//! - `memif:client:SOCKET[,id=N][,ring=SLOTS][,buffer=BYTES]` and `memif:server:…` open a
//!   memif port with `vwire_mechanisms::memif` (a [`MemifPort`] whose session the memif
//!   [`Driver`] publishes). The driver runs on a control thread with its own single-threaded
//!   tokio runtime ([`MemifControl`]); the worker that owns the port passes a quiescent point
//!   every loop, so that a disconnect can unmap the session safely.
//!
//! Each worker has its own [`BufferPool`]; an AF_XDP port registers that pool as its UMEM, so
//! a worker with AF_XDP ports uses 4 KiB frames (packets up to 3840 bytes) and a worker with
//! only memif ports jumbo frames (9000-byte frames fit).

use std::sync::Arc;
use std::time::{Duration, Instant};

use vwire_dataplane::buffer::{BufferPool, FRAME_SIZE, JUMBO_FRAME_SIZE};
use vwire_dataplane::port::Port;
use vwire_dataplane::rcu::Qsbr;
use vwire_mechanisms::afxdp::socket::{self as xsk, PortOptions, Umem};
use vwire_mechanisms::memif::driver::{Driver, MemifConfig};
use vwire_mechanisms::memif::msg::Mode;
use vwire_mechanisms::memif::port::{Link, MemifPort, Role};

/// Frames per worker pool with AF_XDP ports: AF_XDP wants ≥ 16 Ki frames per queue (testbed.md:
/// 8192 posted to the fill ring gave zero drops under load), plus TX in flight.
pub const POOL_FRAMES: u32 = 32 * 1024;
/// Frames per pool of a memif-only worker: memif copies in and out, so a frame is held only
/// between a receive and its accounting, or between building and the port's copy (a burst).
pub const MEMIF_POOL_FRAMES: u32 = 2048;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// the `--port` text does not parse
    #[error("--port {spec:?}: {why}; expected NAME=afxdp:IFNAME[@NETNS] or NAME=memif:client|server:SOCKET[,id=N][,ring=SLOTS][,buffer=BYTES]")]
    Syntax {
        /// the text
        spec: String,
        /// what is wrong
        why: String,
    },
    /// the buffer pool could not be made
    #[error("packet pool: {0}")]
    Pool(#[from] vwire_dataplane::buffer::BufferError),
    /// the AF_XDP port could not be opened
    #[error("port {name}: {source}")]
    AfXdp {
        /// the port
        name: String,
        /// why
        source: vwire_mechanisms::afxdp::AfXdpError,
    },
    /// the memif port could not be set up
    #[error("port {name}: {source}")]
    Memif {
        /// the port
        name: String,
        /// why
        source: vwire_mechanisms::memif::MemifError,
    },
    /// the memif peer did not connect in time
    #[error("port {name}: memif {socket} not connected after {secs} s (is the peer running, and the other role?)")]
    NotConnected {
        /// the port
        name: String,
        /// the socket
        socket: String,
        /// how long it waited
        secs: u64,
    },
    /// the memif control thread failed
    #[error("memif control thread: {0}")]
    Control(String),
}

/// A parsed `--port NAME=SPEC`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PortSpec {
    /// The port's name (used by --tx/--rx and in the results).
    pub name: String,
    /// What to open.
    pub kind: PortKind,
}

/// The kind of port.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum PortKind {
    /// AF_XDP on an interface.
    Afxdp {
        /// the interface
        ifname: String,
        /// the network namespace it is in (a name under /var/run/netns); none: pktgen's own
        netns: Option<String>,
    },
    /// memif.
    Memif {
        /// client or server
        client: bool,
        /// the socket path, or @name for an abstract one
        socket: String,
        /// the interface id
        id: u32,
        /// ring slots (a power of two)
        ring: u32,
        /// client: bytes per buffer
        buffer: u32,
    },
}

impl PortSpec {
    /// Parses `NAME=afxdp:IFNAME` or `NAME=memif:ROLE:SOCKET[,k=v…]`.
    pub fn parse(text: &str) -> Result<Self, PortError> {
        let err = |why: &str| PortError::Syntax {
            spec: text.to_string(),
            why: why.to_string(),
        };
        let (name, rest) = text.split_once('=').ok_or_else(|| err("no NAME="))?;
        if name.is_empty() || name.len() > 32 {
            return Err(err("the name must be 1 to 32 characters"));
        }
        let kind = if let Some(target) = rest.strip_prefix("afxdp:") {
            let (ifname, netns) = match target.split_once('@') {
                Some((i, n)) if !n.is_empty() && !n.contains('/') => (i, Some(n.to_string())),
                Some(_) => return Err(err("a namespace is a name under /var/run/netns")),
                None => (target, None),
            };
            if ifname.is_empty() || ifname.len() > 15 {
                return Err(err("an interface name is 1 to 15 characters"));
            }
            PortKind::Afxdp {
                ifname: ifname.to_string(),
                netns,
            }
        } else if let Some(m) = rest.strip_prefix("memif:") {
            let (role, rest) = m
                .split_once(':')
                .ok_or_else(|| err("memif needs a role and a socket"))?;
            let client = match role {
                "client" => true,
                "server" => false,
                _ => return Err(err("the memif role is client or server")),
            };
            let mut parts = rest.split(',');
            let socket = parts.next().unwrap_or_default().to_string();
            if socket.is_empty() {
                return Err(err("no memif socket"));
            }
            let (mut id, mut ring, mut buffer) = (0u32, 1024u32, 2048u32);
            for kv in parts {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| err("options are key=value"))?;
                let v: u32 = v.parse().map_err(|_| err("option values are numbers"))?;
                match k {
                    "id" => id = v,
                    "ring" => ring = v,
                    "buffer" => buffer = v,
                    _ => return Err(err(&format!("unknown memif option {k:?}"))),
                }
            }
            if !ring.is_power_of_two() || !(2..=16384).contains(&ring) {
                return Err(err("ring is a power of two from 2 to 16384"));
            }
            if !(128..=65535).contains(&buffer) {
                return Err(err("buffer is 128 to 65535 bytes"));
            }
            PortKind::Memif {
                client,
                socket,
                id,
                ring,
                buffer,
            }
        } else {
            return Err(err("the kind is afxdp: or memif:"));
        };
        Ok(Self {
            name: name.to_string(),
            kind,
        })
    }

    /// True for AF_XDP.
    pub fn is_afxdp(&self) -> bool {
        matches!(self.kind, PortKind::Afxdp { .. })
    }
}

/// The pool of a worker serving `specs`: 4 KiB frames if any is AF_XDP, else jumbo frames (a
/// memif-only worker gets a second such pool for transmitting).
pub fn pool_for(specs: &[&PortSpec]) -> Result<BufferPool, PortError> {
    if specs.iter().any(|s| s.is_afxdp()) {
        Ok(BufferPool::with_frame_size(POOL_FRAMES, FRAME_SIZE)?)
    } else {
        Ok(BufferPool::with_frame_size(
            MEMIF_POOL_FRAMES,
            JUMBO_FRAME_SIZE,
        )?)
    }
}

/// The memif control side: the driver on its own thread and runtime.
pub struct MemifControl {
    /// The registry of the workers that own memif ports.
    pub qsbr: Arc<Qsbr>,
    add: std::sync::mpsc::Sender<Request>,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum Request {
    Add(
        MemifConfig,
        Arc<Link>,
        std::sync::mpsc::Sender<Result<(), vwire_mechanisms::memif::MemifError>>,
    ),
}

impl MemifControl {
    /// Starts the control thread.
    pub fn start() -> Result<Self, PortError> {
        let qsbr = Qsbr::new();
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PortError::Control(e.to_string()))?;
        let thread = std::thread::Builder::new()
            .name("memif-ctl".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut driver = Driver::new();
                    // Requests arrive on a std channel: poll it between runtime turns (the
                    // driver's tasks run while this sleeps).
                    loop {
                        match rx.try_recv() {
                            Ok(Request::Add(cfg, link, reply)) => {
                                let _ = reply.send(driver.add(cfg, link).map(|_| ()));
                            }
                            Err(std::sync::mpsc::TryRecvError::Empty) => {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                        }
                    }
                    driver.shutdown();
                });
            })
            .map_err(|e| PortError::Control(e.to_string()))?;
        Ok(Self {
            qsbr,
            add: tx,
            thread: Some(thread),
        })
    }

    fn add(&self, cfg: MemifConfig, link: Arc<Link>) -> Result<(), PortError> {
        let name = cfg.name.clone();
        let (rtx, rrx) = std::sync::mpsc::channel();
        self.add
            .send(Request::Add(cfg, link, rtx))
            .map_err(|_| PortError::Control("stopped".into()))?;
        rrx.recv()
            .map_err(|_| PortError::Control("stopped".into()))?
            .map_err(|source| PortError::Memif { name, source })
    }

    /// Stops the driver (disconnecting and unmapping every session). The workers must be
    /// stopped or offline first.
    pub fn stop(&mut self) {
        let (tx, _) = std::sync::mpsc::channel();
        self.add = tx; // drops the sender the thread listens on
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MemifControl {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An opened port and what it needs to be waited for.
pub struct Opened {
    /// The port.
    pub port: Box<dyn Port>,
    /// memif: the link, to wait for the connection.
    pub link: Option<Arc<Link>>,
    /// The largest packet (buffer bytes) it can send.
    pub max_packet: usize,
}

/// Opens `spec` for a worker whose pool is `pool`. memif ports need `ctl`.
pub fn open(
    spec: &PortSpec,
    pool: &BufferPool,
    ctl: Option<&MemifControl>,
) -> Result<Opened, PortError> {
    match &spec.kind {
        PortKind::Afxdp { ifname, netns } => {
            let region = pool.region();
            let name = spec.name.clone();
            let open = move || {
                let umem = Umem::new(region);
                let opts = PortOptions {
                    // pktgen checks its own checksums end to end: leave frames as received.
                    complete_checksums: false,
                    ..PortOptions::default()
                };
                // The UMEM registration lives with the sockets; `umem` only describes it.
                xsk::open(&name, ifname, &umem, opts)
            };
            let opened = match netns {
                None => open(),
                // The interface, its XDP program and the socket's bind are looked up in the
                // calling thread's namespace: open from a thread that entered it (setns is per
                // thread). The socket keeps working from any thread afterwards.
                Some(ns) => std::thread::scope(|s| {
                    s.spawn(|| {
                        enter_netns(ns).map_err(|source| {
                            vwire_mechanisms::afxdp::AfXdpError::Socket {
                                ifname: format!("{ifname}@{ns}"),
                                what: "entering the network namespace",
                                source,
                            }
                        })?;
                        open()
                    })
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
                }),
            };
            let port = opened.map_err(|source| PortError::AfXdp {
                name: spec.name.clone(),
                source,
            })?;
            Ok(Opened {
                port: Box::new(port),
                link: None,
                max_packet: pool.max_packet(),
            })
        }
        PortKind::Memif {
            client,
            socket,
            id,
            ring,
            buffer,
        } => {
            let ctl = ctl.ok_or_else(|| PortError::Control("no memif control".into()))?;
            let link = Link::new(ctl.qsbr.clone());
            let cfg = MemifConfig {
                name: spec.name.clone(),
                socket: socket.clone(),
                role: if *client { Role::Client } else { Role::Server },
                id: *id,
                mode: Mode::Ethernet,
                queues: 1,
                log2_ring_size: u8::try_from(ring.trailing_zeros()).unwrap_or(10),
                buffer_size: *buffer,
                secret: String::new(),
                netns: None,
            };
            vwire_mechanisms::memif::driver::validate(&cfg).map_err(|source| PortError::Memif {
                name: spec.name.clone(),
                source,
            })?;
            ctl.add(cfg, link.clone())?;
            Ok(Opened {
                port: Box::new(MemifPort::new(&spec.name, link.clone())),
                link: Some(link),
                max_packet: pool.max_packet(),
            })
        }
    }
}

/// Moves the calling thread into the network namespace `/var/run/netns/<name>`.
fn enter_netns(name: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/var/run/netns/{name}"))?;
    // SAFETY: setns on an open namespace file; it changes only this thread's namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until every memif link in `opened` is connected.
pub fn wait_connected(
    specs: &[(&PortSpec, Option<Arc<Link>>)],
    timeout: Duration,
) -> Result<(), PortError> {
    let deadline = Instant::now() + timeout;
    for (spec, link) in specs {
        let Some(link) = link else { continue };
        while !link.is_up() {
            if Instant::now() > deadline {
                let socket = match &spec.kind {
                    PortKind::Memif { socket, .. } => socket.clone(),
                    PortKind::Afxdp { .. } => String::new(),
                };
                return Err(PortError::NotConnected {
                    name: spec.name.clone(),
                    socket,
                    secs: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_parse() {
        assert_eq!(
            PortSpec::parse("a=afxdp:veth0").unwrap().kind,
            PortKind::Afxdp {
                ifname: "veth0".into(),
                netns: None,
            }
        );
        assert_eq!(
            PortSpec::parse("m=memif:client:/run/x.sock,id=3,ring=2048")
                .unwrap()
                .kind,
            PortKind::Memif {
                client: true,
                socket: "/run/x.sock".into(),
                id: 3,
                ring: 2048,
                buffer: 2048
            }
        );
        for bad in [
            "afxdp:veth0",
            "a=tap:x",
            "a=afxdp:",
            "a=afxdp:averyveryverylongname",
            "a=memif:peer:/x",
            "a=memif:client:",
            "a=memif:client:/x,ring=1000",
            "a=memif:client:/x,colour=3",
            "a=memif:client:/x,id=x",
            "a=afxdp:eth0@",
            "a=afxdp:eth0@../x",
        ] {
            let e = PortSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
