//! Control-plane latency of a forwarder: `--count` KERNEL connections, each requested and then
//! closed, `--concurrency` at a time, from one client namespace. Prints one JSON object with
//! Request and Close latency percentiles (milliseconds) and, given `--pid`, the forwarder's RSS
//! before, at the peak, and after.
//!
//! With `--hold`, the connections are all requested first and kept: each is then pinged once
//! from its interface (the kernel's `ping`, 16 at a time), the forwarder's RSS is read with all
//! of them live, and only then are they closed. The JSON adds `live`, `ping_ok` and
//! `rss_kib.live`.
//!
//! Run it inside the client's network namespace (`ip netns exec NS vwire-nsm-bench ...`): the
//! KERNEL interfaces (`bn<i>`) are created there.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use tokio::sync::Semaphore;
use vwire::transport::{dial, Url, DIAL_TIMEOUT};
use vwire_proto::connection::{Connection, Path, PathSegment};
use vwire_proto::mechanism::MechanismType;
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;
use vwire_proto::networkservice::NetworkServiceRequest;

#[derive(Parser)]
#[command(about = "NSM control-plane latency benchmark")]
struct Args {
    /// The forwarder's NSM API.
    #[arg(long)]
    connect: String,
    /// Connections to request and close.
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// Connections in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// The network service.
    #[arg(long, default_value = "icmp-responder")]
    service: String,
    /// The forwarder's pid, to report its RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// Request all connections first and keep them, ping each, then close them all.
    #[arg(long)]
    hold: bool,
}

/// The endpoint's address of `conn` (without its prefix length).
fn dst_ip(conn: &Connection) -> Option<String> {
    let a = conn
        .context
        .as_ref()?
        .ip_context
        .as_ref()?
        .dst_ip_addrs
        .first()?;
    Some(a.split('/').next()?.to_string())
}

/// Pings each address once (two tries), 16 at a time; how many answered.
fn ping_all(dsts: &[String]) -> usize {
    dsts.chunks(16)
        .map(|chunk| {
            let pings: Vec<_> = chunk
                .iter()
                .filter_map(|d| {
                    std::process::Command::new("ping")
                        .args(["-c", "2", "-i", "0.2", "-W", "1", "-q", d])
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                        .ok()
                })
                .collect();
            pings
                .into_iter()
                .filter_map(|mut p| p.wait().ok())
                .filter(|s| s.success())
                .count()
        })
        .sum()
}

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn request(i: usize, service: &str) -> NetworkServiceRequest {
    let id = uuid::Uuid::new_v4().to_string();
    let since = (SystemTime::now() + Duration::from_secs(600))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let expires = prost_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    };
    NetworkServiceRequest {
        connection: Some(Connection {
            id: id.clone(),
            network_service: service.to_string(),
            path: Some(Path {
                index: 0,
                path_segments: vec![PathSegment {
                    name: "bench".into(),
                    id,
                    expires: Some(expires),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        mechanism_preferences: vec![{
            let mut m = MechanismType::Kernel.mechanism();
            m.kernel_mut()
                .set_inode_url(&vwire_examples::own_netns_url())
                .set_name(&format!("bn{i}"));
            m
        }],
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // an index into the slice
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let url = Url::parse(&args.connect)?;
    let client = NetworkServiceClient::new(dial(&url, DIAL_TIMEOUT).await?);
    let rss_before = rss_kib(args.pid);
    let peak = Arc::new(std::sync::Mutex::new(rss_before.unwrap_or(0)));
    let sem = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.count {
        let permit = sem.clone().acquire_owned().await?;
        let mut c = client.clone();
        let service = args.service.clone();
        let (peak, pid, hold) = (peak.clone(), args.pid, args.hold);
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let t = Instant::now();
            let conn = c
                .request(request(i, &service))
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            let req_ms = t.elapsed().as_secs_f64() * 1e3;
            if let Some(r) = rss_kib(pid) {
                let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                *p = (*p).max(r);
            }
            if hold {
                return Ok::<_, String>((req_ms, None, Some(conn)));
            }
            let t = Instant::now();
            c.close(conn).await.map_err(|e| e.to_string())?;
            Ok((req_ms, Some(t.elapsed().as_secs_f64() * 1e3), None))
        }));
    }
    let (mut req, mut close, mut errors, mut held) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in tasks {
        match t.await? {
            Ok((r, c, conn)) => {
                req.push(r);
                close.extend(c);
                held.extend(conn);
            }
            Err(e) => errors.push(e),
        }
    }
    let (live, mut ping_ok, mut rss_live) = (held.len(), 0, 0);
    if args.hold {
        let dsts: Vec<String> = held.iter().filter_map(dst_ip).collect();
        ping_ok = tokio::task::spawn_blocking(move || ping_all(&dsts)).await?;
        rss_live = rss_kib(args.pid).unwrap_or(0);
        let mut closes = Vec::new();
        for conn in held {
            let permit = sem.clone().acquire_owned().await?;
            let mut c = client.clone();
            closes.push(tokio::spawn(async move {
                let _permit = permit;
                let t = Instant::now();
                c.close(conn).await.map_err(|e| e.to_string())?;
                Ok::<f64, String>(t.elapsed().as_secs_f64() * 1e3)
            }));
        }
        for t in closes {
            match t.await? {
                Ok(ms) => close.push(ms),
                Err(e) => errors.push(e),
            }
        }
    }
    let total = t0.elapsed();
    req.sort_by(f64::total_cmp);
    close.sort_by(f64::total_cmp);
    let rss_after = rss_kib(args.pid);
    let peak = *peak.lock().unwrap_or_else(|e| e.into_inner());
    println!(
        "{{\"count\": {}, \"concurrency\": {}, \"ok\": {}, \"errors\": {}, \"seconds\": {:.3}, \
         \"request_ms\": {{\"p50\": {:.2}, \"p99\": {:.2}, \"max\": {:.2}}}, \
         \"close_ms\": {{\"p50\": {:.2}, \"p99\": {:.2}, \"max\": {:.2}}}, \
         \"rss_kib\": {{\"before\": {}, \"peak\": {}, \"after\": {}, \"live\": {}}}, \"live\": {}, \"ping_ok\": {}, \"first_error\": {:?}}}",
        args.count,
        args.concurrency,
        req.len(),
        errors.len(),
        total.as_secs_f64(),
        percentile(&req, 50.0),
        percentile(&req, 99.0),
        req.last().copied().unwrap_or(0.0),
        percentile(&close, 50.0),
        percentile(&close, 99.0),
        close.last().copied().unwrap_or(0.0),
        rss_before.unwrap_or(0),
        peak,
        rss_after.unwrap_or(0),
        rss_live,
        live,
        ping_ok,
        errors.first().cloned().unwrap_or_default(),
    );
    Ok(())
}
