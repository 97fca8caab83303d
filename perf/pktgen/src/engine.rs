//! The generator engine: workers pinned to cores, each owning a buffer pool and some ports, and
//! trials run on them.
//!
//! A [`Engine`] opens its ports once; [`Engine::trial`] then runs any number of trials on them
//! (an RFC 2544 search runs dozens). Each trial starts one scoped thread per worker, pinned to
//! its core, which loops until told to stop:
//!
//! 1. a quiescent point (memif sessions may be unmapped only between two of them);
//! 2. the clock, once per loop (`CLOCK_MONOTONIC` through the vDSO: every frame of a burst
//!    carries the burst's time, and the receiver's time is also read once per burst);
//! 3. for each transmitting port: the pacer says how many frames are due (at most
//!    [`TX_PER_LOOP`]); take buffers, copy the next templates in, stamp sequence number and time,
//!    hand them to the port; buffers the port did not take go back to the pool and their
//!    sequence numbers are used again next loop, so sequence numbers have no gaps;
//! 4. for each receiving port: a burst, each frame accounted ([`RxAccount`]) and freed;
//! 5. every port's flush (the AF_XDP TX kick, completions, fill ring).
//!
//! The loop allocates nothing, takes no lock, logs nothing; its only system calls are the ports'
//! own per-burst kicks. Live counters are plain per-port atomics written by the one worker.
//!
//! At the end of a trial, transmission stops first; reception continues for the drain time so
//! frames still in flight (in vwire's rings, in the kernel) are counted, then the workers stop.
//! Frames carry the trial number, so one that arrives during the next trial is counted as stale,
//! never as a duplicate or reordered frame.
//!
//! The pacer is a token bucket without a bucket: frames due = elapsed × rate − frames sent. If
//! the worker falls more than [`MAX_BACKLOG_NS`] behind (preempted on a busy VM), it forgets the
//! backlog instead of bursting it out, so the offered load stays steady; the achieved rate is
//! what the results report.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vwire_dataplane::buffer::{BufIdx, BufferPool, HEADROOM};
use vwire_dataplane::counters::{PortCounters, PortTotals};
use vwire_dataplane::port::{Burst, Port, BURST};
use vwire_dataplane::rcu::Reader;

use crate::ports::{self, MemifControl, PortError, PortSpec};
use crate::rx::{Histogram, RxAccount, STREAMS};
use crate::stream::{self, StreamError, StreamSpec, Template, FCS, MAX_TEMPLATE_BYTES};

/// Most frames one transmitting port sends per loop: four bursts, so a paced port catches up
/// within a loop after a short stall, and the per-loop costs (clock, quiescent point, flush)
/// spread over more frames at line rate (the port still gets them 32 at a time, and AF_XDP
/// kicks once per burst it was given).
pub const TX_PER_LOOP: usize = 4 * BURST;
/// No template in `WorkerSet::tx_pool`'s record.
const NONE: u32 = u32::MAX;
/// The pacer forgets a backlog older than this (1 ms: longer than any loop, shorter than a
/// preemption on this class of VM).
pub const MAX_BACKLOG_NS: u64 = 1_000_000;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// a port problem
    #[error(transparent)]
    Port(#[from] PortError),
    /// a stream problem
    #[error("port {port}: {source}")]
    Stream {
        /// the transmitting port
        port: String,
        /// why
        source: StreamError,
    },
    /// --tx or --rx names no port
    #[error("--{what} {name}: no --port of that name")]
    UnknownPort {
        /// tx or rx
        what: &'static str,
        /// the name
        name: String,
    },
    /// a port name given twice
    #[error("--port {0}: the name is used twice")]
    DuplicatePort(String),
    /// too many transmitting ports
    #[error("at most {STREAMS} transmitting ports")]
    TooManyStreams,
    /// pinning failed
    #[error("cannot pin a worker to CPU {cpu}: {source}")]
    Pin {
        /// the CPU
        cpu: usize,
        /// why
        source: std::io::Error,
    },
}

/// The clock of the stamps: CLOCK_MONOTONIC in ns.
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a live local; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What a transmitting port sends in the current trial.
struct TxState {
    /// Stream number (the tag's low nibble).
    stream: u8,
    /// Templates, `size_index * flows + flow`.
    templates: Vec<Template>,
    flows: usize,
    /// Size indices in sending order (one entry for a fixed size; the IMIX pattern).
    pattern: Vec<usize>,
    flow_i: usize,
    pattern_i: usize,
    /// Next sequence number.
    seq: u64,
    bytes: u64,
    // pacer
    rate: Option<f64>,
    pace_start: u64,
    pace_sent: u64,
    backlog_resets: u64,
    /// Frames to send in all, if limited.
    limit: u64,
    /// Buffers built and not yet taken by the port (the first `npending`), and their templates.
    pbufs: [BufIdx; BURST],
    ptmpl: [u32; BURST],
    npending: usize,
}

impl TxState {
    /// The port took the first `taken` pending frames: account them and move the rest down.
    #[inline]
    fn sent(&mut self, ctr: &PortCounters, taken: usize) {
        let mut bytes = 0u64;
        // The port owns the taken buffers now; their lengths were recorded when built.
        for k in 0..taken {
            bytes += self.plen(k);
        }
        self.seq += taken as u64;
        self.bytes += bytes;
        self.pace_sent += taken as u64;
        ctr.tx(taken as u64, bytes);
        let n = self.npending;
        self.pbufs.copy_within(taken..n, 0);
        self.ptmpl.copy_within(taken..n, 0);
        self.npending = n - taken;
    }

    #[inline]
    fn plen(&self, k: usize) -> u64 {
        self.templates[self.ptmpl[k] as usize].bytes.len() as u64
    }

    #[inline]
    fn next_template(&mut self) -> usize {
        let t = self.pattern[self.pattern_i] * self.flows + self.flow_i;
        self.flow_i += 1;
        if self.flow_i == self.flows {
            self.flow_i = 0;
        }
        self.pattern_i += 1;
        if self.pattern_i == self.pattern.len() {
            self.pattern_i = 0;
        }
        t
    }

    /// Frames due now (at most [`TX_PER_LOOP`], so the casts to usize cannot truncate; the
    /// float-to-integer cast saturates, and rates are below 2^53).
    #[inline]
    #[allow(clippy::cast_possible_truncation)]
    fn due(&mut self, now: u64) -> usize {
        let left = self.limit.saturating_sub(self.seq + self.npending as u64);
        let Some(rate) = self.rate else {
            return left.min(TX_PER_LOOP as u64) as usize;
        };
        let elapsed = now.saturating_sub(self.pace_start);
        let target = (elapsed as f64 * rate / 1e9) as u64;
        let owed = target.saturating_sub(self.pace_sent);
        if owed as f64 > rate * MAX_BACKLOG_NS as f64 / 1e9 + TX_PER_LOOP as f64 {
            // Fell behind: restart the schedule from now instead of bursting.
            self.pace_start = now;
            self.pace_sent = 0;
            self.backlog_resets += 1;
            return 0;
        }
        owed.min(TX_PER_LOOP as u64).min(left) as usize
    }
}

/// One port on a worker.
struct Slot {
    // hot: accessed by the worker every loop
    port: Box<dyn Port>,
    ctr: Arc<PortCounters>,
    tx: Option<TxState>,
    rx: Option<RxAccount>,
    // cold
    index: usize,
    max_packet: usize,
}

/// One worker: a core, a pool, its ports.
struct WorkerSet {
    cpu: Option<usize>,
    pool: BufferPool,
    /// memif-only workers: the pool frames are built in, which nothing but pktgen writes (memif
    /// ports copy out of it; receiving uses `pool`). So a frame taken from it still holds the
    /// template it was last built from, recorded in `held`, and is only stamped again: one copy
    /// per frame (the port's) instead of two.
    tx_pool: Option<(BufferPool, Vec<u32>)>,
    slots: Vec<Slot>,
    reader: Option<Reader>,
}

/// The traffic of a trial.
#[derive(Clone, Debug)]
pub struct Traffic {
    /// The stream (same for every transmitting port but for the stream number).
    pub spec: StreamSpec,
    /// Frame sizes in sending order (FCS included): one for a fixed size, the IMIX pattern.
    pub sizes: Vec<usize>,
    /// Per transmitting port: frames/s, or `None` for as fast as the port takes them.
    pub rate: Option<f64>,
}

/// How a trial runs.
#[derive(Clone, Debug)]
pub struct TrialOptions {
    /// Transmit time.
    pub duration: Duration,
    /// Receive time after transmission stops.
    pub drain: Duration,
    /// Print rates every second to stderr.
    pub progress: bool,
    /// Send exactly this many frames per transmitting port (the trial lasts until they are
    /// sent, or three times the duration plus 2 s).
    pub limit: Option<u64>,
}

/// Per-stream results of a trial.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StreamResult {
    /// The transmitting port.
    pub tx_port: String,
    /// Frames sent.
    pub sent: u64,
    /// Bytes sent (buffer bytes; FCS not included).
    pub sent_bytes: u64,
    /// Unique frames received, on any port.
    pub received: u64,
    /// sent − received.
    pub lost: u64,
    /// lost / sent.
    pub loss_ratio: f64,
    /// Late arrivals.
    pub reordered: u64,
    /// Frames received more than once.
    pub duplicates: u64,
    /// Late beyond the duplicate window.
    pub late_untracked: u64,
    /// Achieved transmit rate, frames/s.
    pub tx_pps: f64,
    /// The pacer's target, frames/s (none: as fast as possible).
    pub target_pps: Option<f64>,
    /// Times the pacer fell more than 1 ms behind and restarted.
    pub pacer_resets: u64,
}

/// Latency summary, ns.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Non-empty buckets: (lower bound ns, count).
    pub histogram: Vec<(u64, u64)>,
}

impl Latency {
    /// The summary of `h`.
    pub fn of(h: &Histogram) -> Self {
        if h.count == 0 {
            return Self::default();
        }
        Self {
            count: h.count,
            min: h.min,
            mean: h.sum as f64 / h.count as f64,
            p50: h.quantile(0.5),
            p99: h.quantile(0.99),
            p999: h.quantile(0.999),
            max: h.max,
            histogram: h.buckets(),
        }
    }
}

/// Per-receive-port results of a trial.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RxResult {
    /// The port.
    pub port: String,
    /// Frames received, any kind.
    pub packets: u64,
    /// Bytes received (buffer bytes).
    pub bytes: u64,
    /// Received frames/s over the transmit time.
    pub pps: f64,
    /// Frames without pktgen's signature.
    pub foreign: u64,
    /// Frames of an earlier trial.
    pub stale: u64,
    /// Latency of this trial's frames.
    pub latency: Latency,
}

/// The results of one trial.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrialResult {
    /// Frame sizes sent (FCS included).
    pub sizes: Vec<usize>,
    /// Transmit time, s.
    pub duration_s: f64,
    /// Per stream.
    pub streams: Vec<StreamResult>,
    /// Per receiving port.
    pub rx: Vec<RxResult>,
    /// Frames sent, all streams.
    pub sent: u64,
    /// Frames lost, all streams.
    pub lost: u64,
    /// lost / sent.
    pub loss_ratio: f64,
    /// Sent frames/s, all streams.
    pub tx_pps: f64,
    /// Unique received frames/s, all streams.
    pub rx_pps: f64,
    /// Latency over all receiving ports.
    pub latency: Latency,
}

/// The generator: ports opened on workers.
pub struct Engine {
    workers: Vec<WorkerSet>,
    ctl: Option<MemifControl>,
    names: Vec<String>,
    /// Global index of each transmitting port, by stream number.
    tx_ports: Vec<usize>,
    trials: u8,
}

impl Engine {
    /// Opens `ports` on one worker per CPU in `cpus` (or one unpinned worker if empty), port
    /// `i` on worker `i % workers`; `tx` and `rx` name the transmitting and receiving ports.
    /// Waits up to `connect` for memif peers.
    pub fn open(
        specs: &[PortSpec],
        tx: &[String],
        rx: &[String],
        cpus: &[usize],
        connect: Duration,
    ) -> Result<Self, EngineError> {
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(EngineError::DuplicatePort(n.clone()));
            }
        }
        let find = |what: &'static str, n: &String| {
            names
                .iter()
                .position(|m| m == n)
                .ok_or_else(|| EngineError::UnknownPort {
                    what,
                    name: n.clone(),
                })
        };
        let tx_ports = tx
            .iter()
            .map(|n| find("tx", n))
            .collect::<Result<Vec<_>, _>>()?;
        let rx_ports = rx
            .iter()
            .map(|n| find("rx", n))
            .collect::<Result<Vec<_>, _>>()?;
        if tx_ports.len() > STREAMS {
            return Err(EngineError::TooManyStreams);
        }
        let ctl = if specs.iter().any(|s| !s.is_afxdp()) {
            Some(MemifControl::start()?)
        } else {
            None
        };
        let nworkers = cpus.len().max(1);
        let mut workers = Vec::with_capacity(nworkers);
        let mut links = Vec::new();
        for w in 0..nworkers {
            let mine: Vec<(usize, &PortSpec)> = specs
                .iter()
                .enumerate()
                .filter(|(i, _)| i % nworkers == w)
                .collect();
            let pool = ports::pool_for(&mine.iter().map(|(_, s)| *s).collect::<Vec<_>>())?;
            let mut slots = Vec::new();
            let mut has_memif = false;
            let has_afxdp = mine.iter().any(|(_, s)| s.is_afxdp());
            for (i, spec) in mine {
                let opened = ports::open(spec, &pool, ctl.as_ref())?;
                has_memif |= opened.link.is_some();
                links.push((spec, opened.link.clone()));
                let mut port = opened.port;
                port.attach(&pool);
                slots.push(Slot {
                    port,
                    ctr: Arc::new(PortCounters::default()),
                    tx: None,
                    rx: rx_ports.contains(&i).then(|| RxAccount::new(0)),
                    index: i,
                    max_packet: opened.max_packet,
                });
            }
            let reader = match (&ctl, has_memif) {
                (Some(c), true) => Some(c.qsbr.register_named(format!("pktgen worker {w}"))),
                _ => None,
            };
            let tx_pool = if !has_afxdp {
                let p = ports::pool_for(&[])?;
                let n = p.capacity() as usize;
                Some((p, vec![NONE; n]))
            } else {
                None
            };
            workers.push(WorkerSet {
                cpu: cpus.get(w).copied(),
                pool,
                tx_pool,
                slots,
                reader,
            });
        }
        ports::wait_connected(&links, connect)?;
        Ok(Self {
            workers,
            ctl,
            names,
            tx_ports,
            trials: 0,
        })
    }

    /// The largest frame (FCS included) every transmitting port can send.
    pub fn max_frame(&self) -> usize {
        self.workers
            .iter()
            .flat_map(|w| &w.slots)
            .filter(|s| self.tx_ports.contains(&s.index))
            .map(|s| s.max_packet + FCS)
            .min()
            .unwrap_or(0)
    }

    /// Checks `traffic` against the stream rules and every transmitting port.
    pub fn check(&self, traffic: &Traffic) -> Result<(), EngineError> {
        let name = |i: usize| self.names[i].clone();
        for &i in &self.tx_ports {
            traffic
                .spec
                .validate()
                .map_err(|source| EngineError::Stream {
                    port: name(i),
                    source,
                })?;
            let slot = self
                .workers
                .iter()
                .flat_map(|w| &w.slots)
                .find(|s| s.index == i);
            for &size in &traffic.sizes {
                traffic
                    .spec
                    .check_size(size, slot.map_or(0, |s| s.max_packet))
                    .map_err(|source| EngineError::Stream {
                        port: name(i),
                        source,
                    })?;
            }
            let mut distinct = traffic.sizes.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let bytes = traffic.spec.flows * distinct.iter().sum::<usize>();
            if bytes > MAX_TEMPLATE_BYTES {
                return Err(EngineError::Stream {
                    port: name(i),
                    source: StreamError::TooManyTemplates {
                        flows: traffic.spec.flows,
                        sizes: distinct.len(),
                        bytes,
                    },
                });
            }
        }
        Ok(())
    }

    /// Runs one trial. `traffic` must have passed [`Engine::check`].
    pub fn trial(
        &mut self,
        traffic: &Traffic,
        opts: &TrialOptions,
    ) -> Result<TrialResult, EngineError> {
        self.check(traffic)?;
        self.trials = self.trials.wrapping_add(1);
        let trial = self.trials & 0x0f;
        // Cold: build the templates of every transmitting port.
        let mut distinct = traffic.sizes.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let pattern: Vec<usize> = traffic
            .sizes
            .iter()
            .map(|s| distinct.iter().position(|d| d == s).unwrap_or(0))
            .collect();
        let flows = traffic.spec.flows;
        let templates: Vec<Template> = distinct
            .iter()
            .flat_map(|&size| (0..flows).map(move |f| (size, u32::try_from(f).unwrap_or(0))))
            .map(|(size, f)| stream::build(&traffic.spec, f, size))
            .collect();
        for w in &mut self.workers {
            // New templates: no frame holds one yet.
            if let Some((_, held)) = &mut w.tx_pool {
                held.fill(NONE);
            }
            for s in &mut w.slots {
                s.tx = self
                    .tx_ports
                    .iter()
                    .position(|&i| i == s.index)
                    .map(|n| TxState {
                        stream: u8::try_from(n).unwrap_or(0),
                        templates: templates.clone(),
                        flows,
                        pattern: pattern.clone(),
                        flow_i: 0,
                        pattern_i: 0,
                        seq: 0,
                        bytes: 0,
                        rate: traffic.rate,
                        pace_start: 0,
                        pace_sent: 0,
                        backlog_resets: 0,
                        limit: opts.limit.unwrap_or(u64::MAX),
                        pbufs: [0; BURST],
                        ptmpl: [0; BURST],
                        npending: 0,
                    });
                if s.rx.is_some() {
                    s.rx = Some(RxAccount::new(trial));
                }
                s.ctr = Arc::new(PortCounters::default());
            }
        }
        let stop_tx = AtomicBool::new(false);
        let stop = AtomicBool::new(false);
        let live: Vec<(String, Arc<PortCounters>)> = self
            .workers
            .iter()
            .flat_map(|w| &w.slots)
            .map(|s| (self.names[s.index].clone(), s.ctr.clone()))
            .collect();
        let tx_names: Vec<String> = self
            .tx_ports
            .iter()
            .map(|&i| self.names[i].clone())
            .collect();
        let mut tx_time = Duration::ZERO;
        let mut failure: Option<EngineError> = None;
        std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .workers
                .iter_mut()
                .map(|w| {
                    let (stop_tx, stop) = (&stop_tx, &stop);
                    scope.spawn(move || run_worker(w, trial, stop_tx, stop))
                })
                .collect();
            let start = Instant::now();
            let mut last = (start, totals(&live));
            let tx_live: Vec<usize> = live
                .iter()
                .enumerate()
                .filter(|(_, (n, _))| tx_names.contains(n))
                .map(|(i, _)| i)
                .collect();
            let hard = opts.duration * 3 + Duration::from_secs(2);
            let more = |elapsed: Duration| match opts.limit {
                None => elapsed < opts.duration,
                Some(n) => {
                    let t = totals(&live);
                    elapsed < hard && tx_live.iter().any(|&i| t[i].tx_packets < n)
                }
            };
            while more(start.elapsed()) && !handles.iter().any(|h| h.is_finished()) {
                let left = opts.duration.saturating_sub(start.elapsed());
                let left = if opts.limit.is_some() {
                    Duration::from_millis(10)
                } else {
                    left
                };
                std::thread::sleep(left.min(Duration::from_millis(100)));
                if opts.progress && last.0.elapsed() >= Duration::from_secs(1) {
                    let now = (Instant::now(), totals(&live));
                    print_progress(start, &live, &last, &now);
                    last = now;
                }
            }
            stop_tx.store(true, Relaxed);
            tx_time = start.elapsed();
            std::thread::sleep(opts.drain);
            stop.store(true, Relaxed);
            for h in handles {
                match h.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => failure = Some(e),
                    Err(p) => std::panic::resume_unwind(p),
                }
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(self.collect(traffic, tx_time))
    }

    fn collect(&self, traffic: &Traffic, tx_time: Duration) -> TrialResult {
        let secs = tx_time.as_secs_f64().max(1e-9);
        let slots: Vec<&Slot> = self.workers.iter().flat_map(|w| &w.slots).collect();
        let mut streams = Vec::new();
        for (n, &i) in self.tx_ports.iter().enumerate() {
            let Some(tx) = slots
                .iter()
                .find(|s| s.index == i)
                .and_then(|s| s.tx.as_ref())
            else {
                continue;
            };
            let (mut received, mut reordered, mut duplicates, mut late) = (0, 0, 0, 0);
            for s in &slots {
                if let Some(rx) = &s.rx {
                    let t = &rx.streams[n];
                    received += t.unique;
                    reordered += t.reordered;
                    duplicates += t.duplicates;
                    late += t.late_untracked;
                }
            }
            let lost = tx.seq.saturating_sub(received);
            streams.push(StreamResult {
                tx_port: self.names[i].clone(),
                sent: tx.seq,
                sent_bytes: tx.bytes,
                received,
                lost,
                loss_ratio: if tx.seq > 0 {
                    lost as f64 / tx.seq as f64
                } else {
                    0.0
                },
                reordered,
                duplicates,
                late_untracked: late,
                tx_pps: tx.seq as f64 / secs,
                target_pps: tx.rate,
                pacer_resets: tx.backlog_resets,
            });
        }
        let mut all = Histogram::new();
        let mut rx = Vec::new();
        for s in &slots {
            if let Some(a) = &s.rx {
                all.merge(&a.latency);
                rx.push(RxResult {
                    port: self.names[s.index].clone(),
                    packets: a.packets,
                    bytes: a.bytes,
                    pps: a.packets as f64 / secs,
                    foreign: a.foreign,
                    stale: a.stale,
                    latency: Latency::of(&a.latency),
                });
            }
        }
        let sent: u64 = streams.iter().map(|s| s.sent).sum();
        let lost: u64 = streams.iter().map(|s| s.lost).sum();
        let received: u64 = streams.iter().map(|s| s.received).sum();
        TrialResult {
            sizes: traffic.sizes.clone(),
            duration_s: secs,
            streams,
            rx,
            sent,
            lost,
            loss_ratio: if sent > 0 {
                lost as f64 / sent as f64
            } else {
                0.0
            },
            tx_pps: sent as f64 / secs,
            rx_pps: received as f64 / secs,
            latency: Latency::of(&all),
        }
    }

    /// Closes the ports: memif sessions first (the workers are stopped), then AF_XDP sockets.
    pub fn close(mut self) {
        if let Some(mut c) = self.ctl.take() {
            for w in &mut self.workers {
                if let Some(r) = &mut w.reader {
                    r.offline();
                }
            }
            c.stop();
        }
        for w in &mut self.workers {
            for s in &mut w.slots {
                s.port.release(&mut w.pool);
                let back = s.port.shutdown();
                w.pool.free_burst(&back);
            }
        }
    }
}

fn totals(live: &[(String, Arc<PortCounters>)]) -> Vec<PortTotals> {
    live.iter()
        .map(|(_, c)| {
            let mut t = PortTotals::default();
            c.add_to(&mut t);
            t
        })
        .collect()
}

fn print_progress(
    start: Instant,
    live: &[(String, Arc<PortCounters>)],
    a: &(Instant, Vec<PortTotals>),
    b: &(Instant, Vec<PortTotals>),
) {
    let dt = b.0.duration_since(a.0).as_secs_f64().max(1e-9);
    let mut line = format!("{:5.1}s", start.elapsed().as_secs_f64());
    for ((x, y), (name, _)) in a.1.iter().zip(&b.1).zip(live) {
        let tx = (y.tx_packets - x.tx_packets) as f64 / dt;
        let rx = (y.rx_packets - x.rx_packets) as f64 / dt;
        let txb = (y.tx_bytes - x.tx_bytes) as f64 * 8.0 / dt;
        let rxb = (y.rx_bytes - x.rx_bytes) as f64 * 8.0 / dt;
        line += &format!(
            " | {name}: tx {:.3} Mpps {:.2} Gbit/s, rx {:.3} Mpps {:.2} Gbit/s",
            tx / 1e6,
            txb / 1e9,
            rx / 1e6,
            rxb / 1e9
        );
    }
    eprintln!("{line}");
}

/// The worker loop of one trial. See the module docs.
fn run_worker(
    w: &mut WorkerSet,
    trial: u8,
    stop_tx: &AtomicBool,
    stop: &AtomicBool,
) -> Result<(), EngineError> {
    if let Some(cpu) = w.cpu {
        vwire_dataplane::cpu::pin_current_thread(&[cpu])
            .map_err(|source| EngineError::Pin { cpu, source })?;
    }
    let start = now_ns();
    for s in &mut w.slots {
        if let Some(tx) = &mut s.tx {
            tx.pace_start = start;
        }
    }
    let mut burst = Burst::with_capacity(BURST);
    loop {
        if stop.load(Relaxed) {
            break;
        }
        if let Some(r) = &mut w.reader {
            r.quiescent();
        }
        let sending = !stop_tx.load(Relaxed);
        let now = now_ns();
        for s in &mut w.slots {
            if let (Some(tx), true) = (&mut s.tx, sending) {
                match &mut w.tx_pool {
                    Some((p, held)) => {
                        transmit(p, Some(held), s.port.as_mut(), &s.ctr, tx, trial, now)
                    }
                    None => transmit(&mut w.pool, None, s.port.as_mut(), &s.ctr, tx, trial, now),
                }
            }
            if let Some(acct) = &mut s.rx {
                burst.clear();
                let n = s.port.rx_burst(&mut w.pool, &mut burst, &s.ctr);
                if n > 0 {
                    let t = now_ns();
                    let mut bytes = 0u64;
                    for &b in burst.as_slice() {
                        let p = w.pool.packet(b);
                        bytes += p.len() as u64;
                        acct.on_frame(p, t);
                    }
                    s.ctr.rx(n as u64, bytes);
                    w.pool.free_burst(burst.as_slice());
                }
            }
        }
        for s in &mut w.slots {
            s.port.flush(&mut w.pool, &s.ctr);
        }
    }
    // Frames built and never taken go back to the pool.
    for s in &mut w.slots {
        if let Some(tx) = &mut s.tx {
            match &mut w.tx_pool {
                Some((p, _)) => p.free_burst(&tx.pbufs[..tx.npending]),
                None => w.pool.free_burst(&tx.pbufs[..tx.npending]),
            }
            tx.npending = 0;
        }
    }
    if let Some(r) = &mut w.reader {
        r.offline();
    }
    Ok(())
}

/// Sends the frames due on one port: first those the port did not take last time (their
/// sequence numbers kept, their time stamped again, no copy), then new ones.
#[inline]
fn transmit(
    pool: &mut BufferPool,
    mut held: Option<&mut Vec<u32>>,
    port: &mut dyn Port,
    ctr: &PortCounters,
    tx: &mut TxState,
    trial: u8,
    now: u64,
) {
    let mut due = tx.due(now);
    let tag = (trial << 4) | tx.stream;
    if tx.npending > 0 {
        let n = tx.npending;
        for k in 0..n {
            let t = &tx.templates[tx.ptmpl[k] as usize];
            t.stamp(pool.packet_mut(tx.pbufs[k]), tag, tx.seq + k as u64, now);
        }
        let taken = port.tx_burst(pool, &tx.pbufs[..n], ctr);
        tx.sent(ctr, taken);
        if taken < n {
            return; // the port is still full
        }
        due = due.saturating_sub(n);
    }
    while due > 0 {
        let want = due.min(BURST);
        let n = pool.alloc_burst(&mut tx.pbufs[..want]);
        if n == 0 {
            return;
        }
        for k in 0..n {
            let ti = tx.next_template();
            let t = &tx.templates[ti];
            let b = tx.pbufs[k];
            let id = u32::try_from(ti).unwrap_or(NONE);
            pool.set_meta(b, HEADROOM, t.bytes.len());
            let frame = pool.packet_mut(b);
            match held.as_deref_mut().and_then(|h| h.get_mut(b as usize)) {
                Some(h) if *h == id => {} // still the same template: only the stamp changes
                Some(h) => {
                    frame.copy_from_slice(&t.bytes);
                    *h = id;
                }
                None => frame.copy_from_slice(&t.bytes),
            }
            t.stamp(frame, tag, tx.seq + k as u64, now);
            tx.ptmpl[k] = id;
        }
        tx.npending = n;
        let taken = port.tx_burst(pool, &tx.pbufs[..n], ctr);
        tx.sent(ctr, taken);
        if taken < n {
            return; // the port is full: the rest stays pending
        }
        due -= n;
    }
}
