//! RFC 2544 throughput and latency (§26.1, §26.2), per frame size.
//!
//! For each size: one trial as fast as the transmitting ports take frames. If its loss is within
//! the allowed ratio, the throughput is that rate and the result says `generator_limited` (the
//! device kept up with everything pktgen could send). Otherwise a binary search on the offered
//! rate between 0 and that trial's transmit rate, starting at the rate the device delivered,
//! until the bracket is narrower than `resolution` × the upper bound or `max_iterations` steps
//! were run (a failing step is repeated up to `retries` times and passes if any run passes); the throughput is the highest rate that passed (its achieved transmit rate). Then
//! a latency trial at that rate: the histogram and its percentiles.
//!
//! Sizes the stream or a port cannot carry (9000 on an AF_XDP port with 4 KiB frames; a frame
//! too small for an encapsulated stream) are reported as skipped, with the reason.

use std::time::Duration;

use clap::Args;

use crate::cli::{self, CliError, Common};
use crate::engine::{Latency, Traffic, TrialOptions, TrialResult};

/// Options of `rfc2544`.
#[derive(Args, Debug)]
pub struct Rfc2544Args {
    #[command(flatten)]
    common: Common,
    /// Frame sizes with FCS, comma-separated.
    #[arg(long, default_value = "64,128,256,512,1024,1280,1518,9000")]
    sizes: String,
    /// Seconds per search trial (RFC 2544 asks 60 s; on a shared VM short trials, repeated,
    /// say more).
    #[arg(long, default_value_t = 2.0)]
    trial: f64,
    /// Allowed loss ratio (0: none, as RFC 2544 defines throughput).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Stop when the bracket is narrower than this fraction of the upper bound.
    #[arg(long, default_value_t = 0.02)]
    resolution: f64,
    /// Most search steps per size.
    #[arg(long, default_value_t = 10)]
    max_iterations: u32,
    /// Run a failing search step again up to this many times; it passes if any run passes. On
    /// a shared VM a forwarder preempted for milliseconds loses frames at any rate; one retry
    /// keeps a single preemption from deciding the search (0: RFC 2544's one trial per rate).
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Seconds of the latency trial at the throughput rate (0: none).
    #[arg(long, default_value_t = 3.0)]
    latency_trial: f64,
    /// Upper bound of the offered rate per transmitting port (frames/s, k/M suffix; line: none).
    #[arg(long, default_value = "line")]
    max_rate: String,
}

/// One search trial, summarised.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Step {
    /// Offered rate per transmitting port (none: line).
    pub offered_pps: Option<f64>,
    /// Achieved transmit rate, all streams.
    pub tx_pps: f64,
    /// Received rate (unique frames), all streams.
    pub rx_pps: f64,
    /// Loss ratio.
    pub loss_ratio: f64,
    /// Within the allowed loss.
    pub pass: bool,
}

impl Step {
    fn of(offered: Option<f64>, r: &TrialResult, loss: f64) -> Self {
        Self {
            offered_pps: offered,
            tx_pps: r.tx_pps,
            rx_pps: r.rx_pps,
            loss_ratio: r.loss_ratio,
            pass: r.loss_ratio <= loss && r.sent > 0,
        }
    }
}

/// The result for one frame size.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SizeResult {
    /// Frame size with FCS.
    pub size: usize,
    /// Why the size was not measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Highest rate within the loss ratio, frames/s (all streams).
    pub throughput_pps: f64,
    /// The same in bit/s of frames (size × 8 × pps).
    pub throughput_bps: f64,
    /// The device lost nothing even at the generator's full rate.
    pub generator_limited: bool,
    /// The trials of the search, in order.
    pub steps: Vec<Step>,
    /// Latency at the throughput rate.
    pub latency: Option<Latency>,
    /// The latency trial's loss ratio.
    pub latency_loss_ratio: Option<f64>,
}

/// Runs `rfc2544`.
pub fn run(a: Rfc2544Args) -> Result<(), CliError> {
    let bad = |option: &'static str, why: &str| CliError::Option {
        option,
        why: why.to_string(),
    };
    let sizes: Vec<usize> = cli::sizes("--sizes", &a.sizes)?
        .into_iter()
        .flatten()
        .collect();
    if !(a.trial > 0.0 && a.trial <= 3600.0) {
        return Err(bad("--trial", "seconds, more than 0 and at most 3600"));
    }
    if !(0.0..1.0).contains(&a.loss) {
        return Err(bad("--loss", "a ratio from 0 up to (not including) 1"));
    }
    if !(a.resolution > 0.0 && a.resolution < 1.0) {
        return Err(bad("--resolution", "a fraction between 0 and 1"));
    }
    if !(0.0..=3600.0).contains(&a.latency_trial) {
        return Err(bad("--latency-trial", "seconds, 0 to 3600"));
    }
    let max_rate = cli::rate("--max-rate", &a.max_rate)?;
    let _ = a.common.stream()?; // stream errors before any port opens
    if a.common.tx.is_empty() || a.common.rx.is_empty() {
        return Err(bad(
            "--tx/--rx",
            "an RFC 2544 run needs ports that send and ports that receive",
        ));
    }
    let (mut engine, stream, specs) = a.common.open()?;
    let opts = |secs: f64| TrialOptions {
        duration: Duration::from_secs_f64(secs),
        drain: Duration::from_millis(a.common.drain_ms),
        progress: !a.common.quiet,
        limit: None,
    };
    let ntx = a.common.tx.len() as f64;
    let mut results = Vec::new();
    let outcome = (|| {
        for &size in &sizes {
            let traffic = |rate: Option<f64>| Traffic {
                spec: stream.clone(),
                sizes: vec![size],
                rate,
            };
            if let Err(e) = engine.check(&traffic(None)) {
                eprintln!("{size} bytes: skipped: {e}");
                results.push(SizeResult {
                    size,
                    skipped: Some(e.to_string()),
                    throughput_pps: 0.0,
                    throughput_bps: 0.0,
                    generator_limited: false,
                    steps: vec![],
                    latency: None,
                    latency_loss_ratio: None,
                });
                continue;
            }
            let mut steps = Vec::new();
            let first = engine.trial(&traffic(max_rate), &opts(a.trial))?;
            let s = Step::of(max_rate, &first, a.loss);
            eprintln!(
                "{size} bytes: full rate {:.3} Mpps sent, {:.3} Mpps received, loss {:.2e}",
                s.tx_pps / 1e6,
                s.rx_pps / 1e6,
                s.loss_ratio
            );
            steps.push(s.clone());
            // Rates below are per transmitting port, as the pacer takes them.
            let (best, limited) = if s.pass {
                (Some((s.tx_pps / ntx, s.tx_pps)), true)
            } else {
                let mut hi = s.tx_pps / ntx;
                let mut lo = 0.0;
                let mut best: Option<(f64, f64)> = None;
                let mut next = (s.rx_pps / ntx).clamp(hi * 0.05, hi * 0.99);
                for _ in 0..a.max_iterations {
                    let mut r = engine.trial(&traffic(Some(next)), &opts(a.trial))?;
                    let mut st = Step::of(Some(next * ntx), &r, a.loss);
                    for _ in 0..a.retries {
                        if st.pass {
                            break;
                        }
                        steps.push(st);
                        r = engine.trial(&traffic(Some(next)), &opts(a.trial))?;
                        st = Step::of(Some(next * ntx), &r, a.loss);
                    }
                    eprintln!(
                        "{size} bytes: offered {:.3} Mpps: sent {:.3}, received {:.3}, loss {:.2e} {}",
                        next * ntx / 1e6,
                        st.tx_pps / 1e6,
                        st.rx_pps / 1e6,
                        st.loss_ratio,
                        if st.pass { "pass" } else { "fail" }
                    );
                    if st.pass {
                        lo = next;
                        best = Some((next, st.tx_pps));
                    } else {
                        hi = next;
                    }
                    steps.push(st);
                    if hi - lo <= a.resolution * hi {
                        break;
                    }
                    next = (lo + hi) / 2.0;
                }
                (best, false)
            };
            let (mut latency, mut latency_loss) = (None, None);
            if let (Some((rate, _)), true) = (best, a.latency_trial > 0.0) {
                let r = engine.trial(&traffic(Some(rate)), &opts(a.latency_trial))?;
                eprintln!(
                    "{size} bytes: latency at {:.3} Mpps: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
                    rate * ntx / 1e6,
                    r.latency.p50,
                    r.latency.p99,
                    r.latency.p999,
                    r.latency.max
                );
                latency_loss = Some(r.loss_ratio);
                latency = Some(r.latency);
            }
            let pps = best.map_or(0.0, |b| b.1);
            results.push(SizeResult {
                size,
                skipped: None,
                throughput_pps: pps,
                throughput_bps: pps * size as f64 * 8.0,
                generator_limited: limited,
                steps,
                latency,
                latency_loss_ratio: latency_loss,
            });
        }
        Ok::<(), CliError>(())
    })();
    engine.close();
    outcome?;
    let mut out = cli::header("rfc2544", &a.common, &stream, &specs);
    out["rfc2544"] = serde_json::json!({
        "trial_s": a.trial,
        "loss_ratio_allowed": a.loss,
        "resolution": a.resolution,
        "max_iterations": a.max_iterations,
        "retries": a.retries,
        "latency_trial_s": a.latency_trial,
        "max_rate": a.max_rate,
    });
    out["results"] = serde_json::to_value(&results).unwrap_or_default();
    a.common.write_json(&out)
}
