//! How long attaching vwire's XDP program to a new veth takes, with a program of the port's own
//! (`XdpProgram::QueueRedirect`, what every port did before) and with the namespace's shared
//! program (`XdpProgram::SharedRedirect`, the default), measured with the kernel doing the work.
//!
//! Creates `PAIRS` veth pairs in a namespace of its own, then for `ROUNDS` rounds, alternating
//! which program goes first (the machine is noisy: compare within a round), for each program:
//!
//! - `attach`: attaches the program to each veth in turn (BPF_LINK_CREATE, plus the map and
//!   program creation of a per-interface program, or the slot lease of the shared one) and
//!   detaches them all, timing each attach and each detach;
//! - `open`: opens a full AF_XDP port (`socket::open`, UMEM shared through a holder socket as
//!   vwire does) on every veth at once, one thread each (as concurrent NSM Requests do), timing
//!   each open and the wall time, then closes them all.
//!
//! Then the same again with the namespace's shared program kept attached to a private anchor
//! interface (`SharedProgram::keep_attached`, as vwire does for NSM): `shared_kept`.
//!
//! Prints one JSON line per program and step, with medians over the rounds of per-round p50,
//! max and wall time in microseconds (and the same for the closes). Needs root.
//!
//! Usage: `cargo run --release -p vwire-mechanisms --example xdp_attach -- [PAIRS] [ROUNDS]`

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Instant;

use vwire_dataplane::BufferPool;
use vwire_mechanisms::afxdp::programs::XdpAttachment;
use vwire_mechanisms::afxdp::{socket, AfXdpPort, PortOptions, SharedProgram, Umem, XdpProgram};

fn sh(cmd: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The namespace and its veth pairs; removed on drop.
struct Bed {
    ns: String,
    pairs: usize,
}

impl Bed {
    fn new(pairs: usize) -> Result<Self, String> {
        let ns = format!("vxa-{}", std::process::id());
        sh(&format!("ip netns add {ns}"))?;
        let bed = Self { ns, pairs };
        let ns = &bed.ns;
        for k in 0..pairs {
            sh(&format!(
                "ip -n {ns} link add xa{k} type veth peer name xb{k} && \
                 ip -n {ns} link set xa{k} up && ip -n {ns} link set xb{k} up"
            ))?;
        }
        Ok(bed)
    }

    fn ifname(k: usize) -> String {
        format!("xa{k}")
    }

    /// Enters the namespace on the calling thread (each thread that opens ports must).
    fn enter(&self) -> Result<(), String> {
        let f = File::open(format!("/var/run/netns/{}", self.ns)).map_err(|e| e.to_string())?;
        // SAFETY: `f` is an open namespace file; setns changes only this thread's network
        // namespace, and the threads that call this exist only to work in it.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = sh(&format!("ip netns del {}", self.ns));
    }
}

fn us(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Per-round figures of one program and step.
#[derive(Default)]
struct Series {
    p50: Vec<u64>,
    max: Vec<u64>,
    wall: Vec<u64>,
    close_p50: Vec<u64>,
    close_wall: Vec<u64>,
}

impl Series {
    fn push(&mut self, mut each: Vec<u64>, wall: u64, mut close: Vec<u64>, close_wall: u64) {
        self.p50.push(median(&mut each));
        self.max.push(each.iter().copied().max().unwrap_or(0));
        self.wall.push(wall);
        self.close_p50.push(median(&mut close));
        self.close_wall.push(close_wall);
    }

    fn json(&mut self, program: &str, step: &str, pairs: usize) -> String {
        format!(
            "{{\"program\": \"{program}\", \"step\": \"{step}\", \"ports\": {pairs}, \
             \"rounds\": {}, \"us\": {{\"p50\": {}, \"max\": {}, \"wall\": {}, \
             \"close_p50\": {}, \"close_wall\": {}}}}}",
            self.p50.len(),
            median(&mut self.p50),
            median(&mut self.max),
            median(&mut self.wall),
            median(&mut self.close_p50),
            median(&mut self.close_wall),
        )
    }
}

/// Attaches `program` to every veth in turn, then detaches them in turn.
fn attach_round(bed: &Bed, program: XdpProgram, s: &mut Series) -> Result<(), String> {
    std::thread::scope(|sc| {
        sc.spawn(|| {
            bed.enter()?;
            let (mut each, mut held) = (Vec::new(), Vec::new());
            let t0 = Instant::now();
            for k in 0..bed.pairs {
                let name = Bed::ifname(k);
                let ifindex = socket::ifindex(&name).ok_or(format!("no {name}"))?;
                let t = Instant::now();
                let a = XdpAttachment::attach_program(&name, ifindex, 1, true, &program)
                    .map_err(|e| e.to_string())?;
                each.push(us(t));
                held.push(a);
            }
            let wall = us(t0);
            let mut close = Vec::new();
            let t0 = Instant::now();
            for a in held {
                let t = Instant::now();
                drop(a);
                close.push(us(t));
            }
            s.push(each, wall, close, us(t0));
            Ok(())
        })
        .join()
        .map_err(|_| "attach thread panicked".to_string())?
    })
}

/// Opens a port on every veth at once, one thread each, then closes them all at once.
fn open_round(bed: &Bed, umem: &Umem, program: XdpProgram, s: &mut Series) -> Result<(), String> {
    let opts = PortOptions {
        program,
        ..Default::default()
    };
    let t0 = Instant::now();
    let opened: Vec<Result<(AfXdpPort, u64), String>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..bed.pairs)
            .map(|k| {
                sc.spawn(move || {
                    bed.enter()?;
                    let name = Bed::ifname(k);
                    let t = Instant::now();
                    let p = socket::open(&name, &name, umem, opts).map_err(|e| e.to_string())?;
                    Ok((p, us(t)))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or(Err("open thread panicked".into())))
            .collect()
    });
    let wall = us(t0);
    let mut ports = Vec::new();
    let mut each = Vec::new();
    for r in opened {
        let (p, t) = r?;
        ports.push(p);
        each.push(t);
    }
    let t0 = Instant::now();
    let close: Vec<u64> = std::thread::scope(|sc| {
        let hs: Vec<_> = ports
            .into_iter()
            .map(|p| {
                sc.spawn(move || {
                    let t = Instant::now();
                    drop(p);
                    us(t)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0)).collect()
    });
    s.push(each, wall, close, us(t0));
    Ok(())
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let pairs: usize = args
        .next()
        .map_or(Ok(16), |a| a.parse())
        .map_err(|e| format!("{e}"))?;
    let rounds: usize = args
        .next()
        .map_or(Ok(5), |a| a.parse())
        .map_err(|e| format!("{e}"))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (network namespaces, XDP, AF_XDP)".into());
    }
    let bed = Bed::new(pairs)?;
    // Nothing is received here: the pool is only the UMEM the sockets register.
    let pool = BufferPool::new(4096).map_err(|e| e.to_string())?;
    let umem = Umem::shared(pool.region());
    let programs = [
        ("per_interface", XdpProgram::QueueRedirect),
        ("shared", XdpProgram::SharedRedirect),
        ("shared_kept", XdpProgram::SharedRedirect),
    ];
    let mut attach: [Series; 3] = Default::default();
    let mut open: [Series; 3] = Default::default();
    // Phase 1: per-interface against shared; phase 2, once the namespace's shared program is
    // kept attached to its private anchor: per-interface against shared (kept).
    for phase in [1usize, 2] {
        if phase == 2 {
            std::thread::scope(|sc| {
                sc.spawn(|| {
                    bed.enter()?;
                    SharedProgram::keep_attached().map_err(|e| e.to_string())
                })
                .join()
                .unwrap_or(Err("keep thread panicked".into()))
            })?;
        }
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                [0, phase]
            } else {
                [phase, 0]
            };
            for i in order {
                attach_round(&bed, programs[i].1, &mut attach[i])?;
            }
            for i in order {
                open_round(&bed, &umem, programs[i].1, &mut open[i])?;
            }
        }
    }
    for (i, (name, _)) in programs.iter().enumerate() {
        println!("{}", attach[i].json(name, "attach", pairs));
    }
    for (i, (name, _)) in programs.iter().enumerate() {
        println!("{}", open[i].json(name, "open", pairs));
    }
    Ok(())
}
