//! Prometheus text exposition at `GET /metrics`.
//!
//! Families (all counters):
//! - `vwire_port_rx_packets_total`, `vwire_port_tx_packets_total`, `vwire_port_rx_bytes_total`,
//!   `vwire_port_tx_bytes_total`: labelled `port`. The host veths of connections cross-connected
//!   in the kernel (`nsm.kernel_xconnect = "tcx"`) are ports here too, counted by the kernel
//!   program (a super-packet of n segments counts n packets).
//! - `vwire_port_drops_total`: labelled `port` and `reason` (every reason, zeros included, so
//!   series do not appear out of nowhere).
//! - `vwire_port_xdp_stats_total`: the kernel's XDP_STATISTICS of AF_XDP ports, labelled `port`
//!   and `stat` (these overlap with each other, so they are not folded into the drops).
//! - `vwire_worker_busy_seconds_total`, `vwire_worker_idle_seconds_total`,
//!   `vwire_worker_loops_total`: labelled `worker` and `cpu`.
//! - `vwire_worker_pool_free_buffers` (gauge): free buffers in each worker's pool.
//! - `vwire_gc_removed_total`: leftovers of connections that no longer exist that vwire's
//!   garbage collection removed, labelled `kind` (`veth`).
//!
//! Counters are read relaxed from the workers' single-writer slots: a scrape is not an atomic
//! snapshot across ports, but every series is monotonic.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vwire_dataplane::counters::{port_totals, DropReason, PortTotals, WorkerCounters};
use vwire_dataplane::port::{PortId, PortStats};

/// A port as the metrics see it.
pub struct PortEntry {
    /// Its id.
    pub id: PortId,
    /// Its configured name.
    pub name: String,
    /// Counters kept outside vwire, if any.
    pub stats: Option<Arc<dyn PortStats>>,
    /// The port id's counts when this port took it (ids of NSM connections are reused).
    pub baseline: PortTotals,
}

/// The host veth of a connection cross-connected in the kernel, as the metrics see it.
pub struct KernelPortEntry {
    /// Its name.
    pub name: String,
    /// Reads its counters (from the kernel program's map).
    pub totals: Box<dyn Fn() -> PortTotals + Send + Sync>,
}

/// Everything a scrape reads.
pub struct Registry {
    /// The ports: the configured ones, and those of NSM connections while they exist.
    pub ports: std::sync::Mutex<Vec<PortEntry>>,
    /// The host veths of connections cross-connected in the kernel, while they exist.
    pub kernel_ports: std::sync::Mutex<Vec<KernelPortEntry>>,
    /// Each worker's CPU and counters.
    pub workers: Vec<(Option<usize>, Arc<WorkerCounters>)>,
    /// Leftover veths removed by the garbage collection.
    pub gc_removed_veths: AtomicU64,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Registry {
    /// Renders the exposition text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let counters: Vec<&WorkerCounters> = self.workers.iter().map(|(_, c)| &**c).collect();
        let ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let kernel_ports = self.kernel_ports.lock().unwrap_or_else(|e| e.into_inner());
        // Every port's name and totals: the workers' ports, then those in the kernel.
        let totals: Vec<(&str, PortTotals)> = ports
            .iter()
            .map(|p| {
                let t = port_totals(counters.iter().copied(), usize::from(p.id)).since(&p.baseline);
                (p.name.as_str(), t)
            })
            .chain(kernel_ports.iter().map(|k| (k.name.as_str(), (k.totals)())))
            .collect();
        type PortGet = fn(&PortTotals) -> u64;
        let families: [(&str, &str, PortGet); 4] = [
            (
                "vwire_port_rx_packets_total",
                "Packets received on the port.",
                |t| t.rx_packets,
            ),
            (
                "vwire_port_tx_packets_total",
                "Packets transmitted on the port.",
                |t| t.tx_packets,
            ),
            (
                "vwire_port_rx_bytes_total",
                "Bytes received on the port.",
                |t| t.rx_bytes,
            ),
            (
                "vwire_port_tx_bytes_total",
                "Bytes transmitted on the port.",
                |t| t.tx_bytes,
            ),
        ];
        for (name, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (port, t) in &totals {
                let _ = writeln!(out, "{name}{{port=\"{}\"}} {}", escape(port), get(t));
            }
        }
        let _ = writeln!(
            out,
            "# HELP vwire_port_drops_total Packets dropped by the dataplane, by port and reason.\n# TYPE vwire_port_drops_total counter"
        );
        for (port, t) in &totals {
            for r in DropReason::ALL {
                let _ = writeln!(
                    out,
                    "vwire_port_drops_total{{port=\"{}\",reason=\"{}\"}} {}",
                    escape(port),
                    r.name(),
                    t.drops(r)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP vwire_port_xdp_stats_total The kernel's XDP socket statistics (XDP_STATISTICS).\n# TYPE vwire_port_xdp_stats_total counter"
        );
        let mut extra = Vec::new();
        for p in ports.iter() {
            if let Some(s) = &p.stats {
                extra.clear();
                s.counters(&mut extra);
                for (stat, v) in &extra {
                    let _ = writeln!(
                        out,
                        "vwire_port_xdp_stats_total{{port=\"{}\",stat=\"{stat}\"}} {v}",
                        escape(&p.name)
                    );
                }
            }
        }
        type WorkerGet = fn((u64, u64, u64)) -> String;
        let worker_families: [(&str, &str, WorkerGet); 3] = [
            (
                "vwire_worker_busy_seconds_total",
                "Time the worker spent moving packets.",
                |t| format!("{:.6}", t.0 as f64 / 1e9),
            ),
            (
                "vwire_worker_idle_seconds_total",
                "Time the worker spent polling empty ports or sleeping.",
                |t| format!("{:.6}", t.1 as f64 / 1e9),
            ),
            ("vwire_worker_loops_total", "Poll loop iterations.", |t| {
                t.2.to_string()
            }),
        ];
        for (name, help, get) in worker_families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (i, (cpu, c)) in self.workers.iter().enumerate() {
                let cpu = cpu.map(|c| c.to_string()).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{name}{{worker=\"{i}\",cpu=\"{cpu}\"}} {}",
                    get(c.time())
                );
            }
        }
        let name = "vwire_worker_pool_free_buffers";
        let _ = writeln!(
            out,
            "# HELP {name} Free buffers in the worker's packet pool.\n# TYPE {name} gauge"
        );
        for (i, (cpu, c)) in self.workers.iter().enumerate() {
            let cpu = cpu.map(|c| c.to_string()).unwrap_or_default();
            let free = c.pool_free_buffers();
            let _ = writeln!(out, "{name}{{worker=\"{i}\",cpu=\"{cpu}\"}} {free}");
        }
        let name = "vwire_gc_removed_total";
        let _ = writeln!(
            out,
            "# HELP {name} Leftovers of connections that no longer exist, removed.\n# TYPE {name} counter\n{name}{{kind=\"veth\"}} {}",
            self.gc_removed_veths.load(Ordering::Relaxed)
        );
        out
    }
}

/// Most bytes read of a request; the request line and headers of a scrape are far smaller.
const MAX_REQUEST: usize = 8192;

async fn serve_one(mut s: TcpStream, reg: Arc<Registry>) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut n = 0;
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        let r = s.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            reg.render(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "not found; try /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await
}

/// Serves /metrics on `listener` until the task is dropped. A slow or broken client costs at most
/// one task for 5 seconds.
pub async fn serve(listener: TcpListener, reg: Arc<Registry>) {
    loop {
        let Ok((s, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let reg = reg.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), serve_one(s, reg)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_every_family_and_label() {
        let w = Arc::new(WorkerCounters::new(4));
        w.port(1).unwrap().rx(5, 500);
        w.port(2).unwrap().tx(5, 500);
        w.port(2).unwrap().drop(DropReason::TxRingFull, 2);
        w.busy(1_500_000_000);
        let reg = Registry {
            kernel_ports: std::sync::Mutex::new(vec![KernelPortEntry {
                name: "vwc1".into(),
                totals: Box::new(|| PortTotals {
                    rx_packets: 7,
                    ..Default::default()
                }),
            }]),
            ports: std::sync::Mutex::new(vec![
                PortEntry {
                    id: 1,
                    name: "left".into(),
                    stats: None,
                    baseline: PortTotals::default(),
                },
                PortEntry {
                    id: 2,
                    name: "ri\"ght".into(),
                    stats: None,
                    baseline: PortTotals::default(),
                },
            ]),
            workers: vec![(Some(1), w)],
            gc_removed_veths: AtomicU64::new(3),
        };
        let text = reg.render();
        for line in [
            "vwire_port_rx_packets_total{port=\"left\"} 5",
            "vwire_port_rx_bytes_total{port=\"left\"} 500",
            "vwire_port_tx_packets_total{port=\"ri\\\"ght\"} 5",
            "vwire_port_drops_total{port=\"ri\\\"ght\",reason=\"tx_ring_full\"} 2",
            "vwire_port_drops_total{port=\"left\",reason=\"no_route\"} 0",
            "vwire_port_rx_packets_total{port=\"vwc1\"} 7",
            "vwire_port_drops_total{port=\"vwc1\",reason=\"link_down\"} 0",
            "vwire_worker_busy_seconds_total{worker=\"0\",cpu=\"1\"} 1.500000",
            "# TYPE vwire_worker_idle_seconds_total counter",
            "vwire_worker_pool_free_buffers{worker=\"0\",cpu=\"1\"} 0",
            "# TYPE vwire_gc_removed_total counter",
            "vwire_gc_removed_total{kind=\"veth\"} 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
