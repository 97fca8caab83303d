//! CPU use of a worker: an idle vwire with `poll = "adaptive"` uses under 5% of one core over
//! 10 s; with `poll = "busy"` its worker spins. The worker is pinned to its CPU and every other
//! thread is kept off it. Both are measured from the process's own CPU
//! time, in one test so that the two never overlap.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn cpu_share(vw: &Vwire, window: Duration) -> f64 {
    let (c0, t0) = (cpu_time(vw.pid()), Instant::now());
    std::thread::sleep(window);
    let (c1, t1) = (cpu_time(vw.pid()), Instant::now());
    (c1 - c0).as_secs_f64() / (t1 - t0).as_secs_f64()
}

/// The worker thread runs only on its CPU, and no other thread (control, tokio, metrics) may
/// run there.
fn check_pinning(vw: &Vwire) {
    let worker_cpu = std::thread::available_parallelism().unwrap().get() - 1;
    let tasks = std::fs::read_dir(format!("/proc/{}/task", vw.pid())).expect("task list");
    let mut saw_worker = false;
    for t in tasks.map(|t| t.unwrap().path()) {
        let name = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(t.join("status")).unwrap_or_default();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(str::trim)
            .unwrap_or_default()
            .to_string();
        if name.trim() == "vwire-worker-0" {
            saw_worker = true;
            assert_eq!(allowed, worker_cpu.to_string(), "worker pinned to its CPU");
        } else {
            let cpus = expand(&allowed);
            assert!(
                !cpus.contains(&worker_cpu),
                "thread {name:?} may run on the worker's CPU {worker_cpu}: {allowed}"
            );
            assert!(!cpus.is_empty(), "thread {name:?} has no CPU");
        }
    }
    assert!(saw_worker, "no vwire-worker-0 thread");
}

/// "0-2,4" → [0, 1, 2, 4].
fn expand(list: &str) -> Vec<usize> {
    list.split(',')
        .filter(|p| !p.is_empty())
        .flat_map(|p| match p.split_once('-') {
            Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect::<Vec<usize>>(),
            None => vec![p.parse().unwrap()],
        })
        .collect()
}

#[test]
fn adaptive_idles_below_five_percent_and_busy_spins() {
    require(&["ip", "sysctl"]);
    let a = Host::new("10.203.0.1", 1);
    let b = Host::new("10.203.0.2", 1);

    let mut vw = Vwire::start(&xconnect_config(&a.port_if, &b.port_if, "adaptive"));
    check_pinning(&vw);
    std::thread::sleep(Duration::from_millis(500)); // let the fill rings fill
    let idle = cpu_share(&vw, Duration::from_secs(10));
    println!("adaptive, idle: {:.2}% of one core", idle * 100.0);
    assert!(
        idle < 0.05,
        "an idle adaptive vwire used {:.1}% of a core",
        idle * 100.0
    );
    // It still forwards promptly after idling.
    assert!(
        a.ping(&b.ip, 3, 56),
        "ping after idling failed:\n{}",
        vw.logs()
    );
    let (status, _) = vw.terminate(Duration::from_secs(2));
    assert!(status.success());

    let mut vw = Vwire::start(&xconnect_config(&a.port_if, &b.port_if, "busy"));
    let busy = cpu_share(&vw, Duration::from_secs(3));
    println!("busy: {:.2}% of one core", busy * 100.0);
    assert!(
        busy > 0.8,
        "a busy-polling worker used only {:.1}% of a core",
        busy * 100.0
    );
    let (status, _) = vw.terminate(Duration::from_secs(2));
    assert!(status.success());
}
