//! AF_XDP ports come and go at run time (as NSM connections will make them): each removal
//! returns every buffer the port held to the worker's pool, closes its sockets and fds, and
//! detaches its XDP program. Twenty add/remove cycles leak nothing. A port with an adaptive fill
//! target posts little while idle.

use std::process::Command;
use std::time::{Duration, Instant};

use vwire_dataplane::engine::{Engine, EngineBuilder, EngineConfig};
use vwire_dataplane::worker::PollMode;
use vwire_mechanisms::afxdp::{socket, PortOptions, RingSizes, Umem};

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A veth pair whose peer lives in its own namespace; removed on drop.
struct Veth {
    host: String,
    ns: String,
}

impl Veth {
    fn new(tag: &str) -> Self {
        let id = std::process::id() % 100_000;
        let v = Self {
            host: format!("vwd{id}{tag}"),
            ns: format!("vwd-{id}-{tag}"),
        };
        sh(&format!("ip netns add {}", v.ns));
        sh(&format!(
            "ip link add {} type veth peer name eth0 netns {}",
            v.host, v.ns
        ));
        // No IPv6 chatter: the pool counts below should move only with the ports' own rings.
        sh(&format!(
            "sysctl -qw net.ipv6.conf.{}.disable_ipv6=1",
            v.host
        ));
        sh(&format!(
            "ip netns exec {} sysctl -qw net.ipv6.conf.all.disable_ipv6=1",
            v.ns
        ));
        sh(&format!("ip link set {} up", v.host));
        sh(&format!("ip -n {} link set eth0 up", v.ns));
        v
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host])
            .status();
    }
}

/// The tests count the process's fds and the pool: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (AF_XDP, netns); CI runs it as root"
    );
}

/// An engine of one worker whose pool has `frames` frames, its UMEM, and the pool's size.
fn one_worker(frames: u32) -> (Engine, Umem, u64) {
    let b = EngineBuilder::new(&EngineConfig {
        cpus: vec![None],
        poll_mode: PollMode::Adaptive,
        pool_frames: vec![frames],
        frame_sizes: vec![],
        max_ports: 8,
    })
    .unwrap();
    let region = b.pool_region(0).unwrap();
    let total = u64::from(region.frames);
    let umem = Umem::new(region);
    (b.start().unwrap(), umem, total)
}

fn wait_pool(engine: &Engine, what: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let t0 = Instant::now();
    loop {
        let free = engine.worker_counters()[0].pool_free_buffers();
        if ok(free) {
            return free;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{what}: pool free stuck at {free}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn ports_added_and_removed_leak_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let first = Veth::new("a");
    let other = Veth::new("b");
    let (mut engine, umem, total) = one_worker(3 * vwire_mechanisms::afxdp::FRAMES_PER_QUEUE);
    // The first port registers the UMEM; its socket stays open while the UMEM lives.
    let p0 = socket::open("first", &first.host, &umem, PortOptions::default()).unwrap();
    engine.add_port(0, 0, Box::new(p0)).unwrap();
    // The first port keeps at most FILL_TARGET frames posted; the pool holds the rest.
    let floor = total - u64::from(vwire_mechanisms::afxdp::socket::FILL_TARGET);
    let baseline = wait_pool(&engine, "first port posts its fill ring", |f| f == floor);

    let fds_before = fds();
    for cycle in 0..20 {
        let p = socket::open("other", &other.host, &umem, PortOptions::default()).unwrap();
        engine.add_port(0, 1, Box::new(p)).unwrap();
        wait_pool(&engine, "the new port posts buffers", |f| f < baseline);
        assert!(sh(&format!("ip -d link show dev {}", other.host)).contains("prog/xdp"));
        let port = engine
            .remove_port(0, 1)
            .unwrap()
            .expect("the worker had the port");
        drop(port);
        // A leak would be the removed port's rings: thousands of frames.
        wait_pool(
            &engine,
            &format!("cycle {cycle}: every buffer comes back"),
            |f| f >= floor,
        );
        assert!(
            !sh(&format!("ip -d link show dev {}", other.host)).contains("prog/xdp"),
            "cycle {cycle}: the XDP program is detached"
        );
    }
    assert_eq!(fds(), fds_before, "no fd leaked over 20 cycles");
    assert!(engine.stop().is_empty());
}

/// A port with an adaptive fill target (NSM connections' ports) posts only its idle target until
/// traffic comes, then takes more from the pool: idle ports leave the pool to busy ones.
#[test]
fn an_adaptive_port_posts_little_until_traffic_comes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let v = Veth::new("f");
    let (mut engine, umem, total) = one_worker(8192);
    let opts = PortOptions {
        fill_target: 1024,
        fill_idle: 32,
        rings: RingSizes::SMALL,
        ..PortOptions::default()
    };
    let p = socket::open("adaptive", &v.host, &umem, opts).unwrap();
    engine.add_port(0, 0, Box::new(p)).unwrap();
    // Idle: 32 frames posted, the rest in the pool (and it stays so).
    wait_pool(&engine, "the idle port posts 32 frames", |f| {
        f == total - 32
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(engine.worker_counters()[0].pool_free_buffers(), total - 32);
    // A burst from the peer: ping's preload sends 1000 echo requests back to back to a static
    // neighbour (the port drops them: it has no cross-connect).
    sh(&format!(
        "ip -n {ns} addr add 10.99.0.1/24 dev eth0 && ip -n {ns} neigh add 10.99.0.2 lladdr 02:00:00:00:00:02 dev eth0",
        ns = v.ns
    ));
    // The target grows when a receive call finds the ring drained below half, which needs a
    // burst faster than the worker's polling: send bursts until one is (at most ten).
    let drained = |f: u64| f < total - 32;
    for _ in 0..10 {
        let _ = Command::new("ip")
            .args(["netns", "exec", &v.ns])
            .args(["ping", "-q", "-f", "-l", "1000", "-c", "3000", "-w", "3"])
            .arg("10.99.0.2")
            .output()
            .expect("ping");
        std::thread::sleep(Duration::from_millis(50));
        if drained(engine.worker_counters()[0].pool_free_buffers()) {
            break;
        }
    }
    let free = wait_pool(&engine, "the busy port posts more", drained);
    assert!(
        free >= total - 1024,
        "never more than the fill target posted: {free} free of {total}"
    );
    let port = engine.remove_port(0, 0).unwrap().expect("the port");
    drop(port);
    wait_pool(&engine, "every buffer comes back", |f| f == total);
    assert!(engine.stop().is_empty());
}
