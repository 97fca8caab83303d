//! A hostile memif client: it completes the handshake, then publishes descriptors outside its
//! memory and an absurd ring index, and finally sends a malformed control message. vwire drops
//! and counts the garbage, never crashes, closes only that interface, and keeps forwarding on
//! its other ports throughout.

mod common;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use vwire_mechanisms::memif::msg::{AddRing, Init, Mode, Msg, COOKIE, MSG_SIZE, VERSION};
use vwire_mechanisms::memif::shm::{ring_bytes, Desc, Region, Regions, Ring, DESC_FLAG_NEXT};
use vwire_mechanisms::memif::sock::{self, Received};

fn send(fd: &OwnedFd, m: &Msg, pass: Option<RawFd>) {
    let t0 = Instant::now();
    while !sock::send(fd, &m.encode(), pass).expect("send") {
        assert!(t0.elapsed() < Duration::from_secs(5), "send timed out");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn recv(fd: &OwnedFd) -> Msg {
    let t0 = Instant::now();
    loop {
        match sock::recv(fd).expect("recv") {
            Received::Msg { buf, len, .. } => {
                assert_eq!(len, MSG_SIZE);
                return Msg::decode(&buf).expect("a valid message from vwire");
            }
            Received::Closed => panic!("vwire closed the connection during the handshake"),
            Received::WouldBlock => {
                assert!(t0.elapsed() < Duration::from_secs(5), "recv timed out");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

fn eventfd() -> OwnedFd {
    // SAFETY: plain eventfd(2), owned at once.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(libc::eventfd(0, libc::EFD_NONBLOCK)) }
}

/// Connects to vwire's memif server and completes the handshake with one ring each way of 16
/// descriptors. Returns the control socket and the rings (whose memory it keeps).
fn hostile_connect(socket: &str) -> (OwnedFd, Regions, Ring, Ring, [OwnedFd; 2]) {
    let fd = sock::socket().unwrap();
    sock::connect(&fd, socket).expect("connect to vwire's memif socket");
    assert!(matches!(recv(&fd), Msg::Hello(_)));
    let log2 = 4;
    let rb = ring_bytes(log2);
    let region = Region::create("hostile", 2 * rb + 32 * 2048).unwrap();
    let regions = Regions(vec![region]);
    let s2m = Ring::locate(&regions, 0, 0, log2).unwrap();
    let m2s = Ring::locate(&regions, 0, u32::try_from(rb).unwrap(), log2).unwrap();
    s2m.init(COOKIE);
    m2s.init(COOKIE);
    let init = Init {
        version: VERSION,
        id: 0,
        mode: Mode::Ethernet,
        secret: String::new(),
        name: "hostile".into(),
    };
    send(&fd, &Msg::Init(init), None);
    assert_eq!(recv(&fd), Msg::Ack);
    let size = u64::try_from(regions.0[0].len()).unwrap();
    send(
        &fd,
        &Msg::AddRegion { index: 0, size },
        Some(regions.0[0].fd().as_raw_fd()),
    );
    assert_eq!(recv(&fd), Msg::Ack);
    let efds = [eventfd(), eventfd()];
    for (i, s2m_dir) in [true, false].into_iter().enumerate() {
        let offset = if s2m_dir {
            0
        } else {
            u32::try_from(rb).unwrap()
        };
        let r = AddRing {
            s2m: s2m_dir,
            index: 0,
            region: 0,
            offset,
            log2_ring_size: log2,
            private_hdr_size: 0,
        };
        send(&fd, &Msg::AddRing(r), Some(efds[i].as_raw_fd()));
        assert_eq!(recv(&fd), Msg::Ack);
    }
    send(
        &fd,
        &Msg::Connect {
            if_name: "hostile".into(),
        },
        None,
    );
    assert!(matches!(recv(&fd), Msg::Connected { .. }));
    (fd, regions, s2m, m2s, efds)
}

#[test]
fn a_hostile_client_is_contained() {
    require(&["ip", "ping", "sysctl"]);
    let a = Host::new("10.212.0.1", 1);
    let c = Host::new("10.213.0.1", 1);
    let d = Host::new("10.213.0.2", 1);
    let socket = temp_file("x", "")
        .with_file_name("h.sock")
        .display()
        .to_string();
    let cfg = format!(
        "[dataplane]\nworkers = [1]\n\
         [[port]]\nname = \"a\"\ntype = \"afxdp\"\ninterface = \"{}\"\n\
         [[port]]\nname = \"m\"\ntype = \"memif\"\nsocket = \"{socket}\"\nrole = \"server\"\n\
         [[port]]\nname = \"c\"\ntype = \"afxdp\"\ninterface = \"{}\"\n\
         [[port]]\nname = \"d\"\ntype = \"afxdp\"\ninterface = \"{}\"\n\
         [[xconnect]]\na = \"a\"\nb = \"m\"\n\
         [[xconnect]]\na = \"c\"\nb = \"d\"\n",
        a.port_if, c.port_if, d.port_if
    );
    let vw = Vwire::start(&cfg);
    let (ctl, regions, s2m, m2s, _efds) = hostile_connect(&socket);
    assert!(c.ping(&d.ip, 2, 56), "c↔d before the attack");

    // 1. Descriptors outside the region: a huge offset, a region that does not exist, a length
    //    past the end, and an endless NEXT chain; then publish them.
    let bad = [
        Desc {
            flags: 0,
            region: 0,
            length: 64,
            offset: u32::MAX - 10,
        },
        Desc {
            flags: 0,
            region: 9,
            length: 64,
            offset: 0,
        },
        Desc {
            flags: 0,
            region: 0,
            length: u32::MAX,
            offset: 0,
        },
        Desc {
            flags: DESC_FLAG_NEXT,
            region: 0,
            length: 0,
            offset: 0,
        },
    ];
    for (i, d) in bad.iter().enumerate() {
        s2m.write_desc(u16::try_from(i).unwrap(), *d);
    }
    s2m.head().store(3, Ordering::Release); // three bad packets; the chain is not published
                                            // 2. An absurd head on the M2S ring: "refilled" far more than the ring holds.
    m2s.head().store(40_000, Ordering::Release);
    // Traffic from a toward the memif port makes vwire try to transmit to the hostile peer.
    let _ = a.ping("10.212.0.9", 3, 56);
    std::thread::sleep(Duration::from_millis(200));
    // 3. An absurd head on the S2M ring.
    s2m.head().store(3 + 30_000, Ordering::Release);
    std::thread::sleep(Duration::from_millis(200));

    let m = vw.scrape();
    let drops = |r: &str| {
        m.count(&format!(
            "vwire_port_drops_total{{port=\"m\",reason=\"{r}\"}}"
        ))
    };
    assert!(
        drops("bad_desc") >= 3,
        "bad descriptors counted: {}",
        drops("bad_desc")
    );
    assert!(
        drops("bad_index") >= 1,
        "an absurd index is counted: {}",
        drops("bad_index")
    );
    assert_eq!(
        m.port("rx_packets", "m"),
        0,
        "nothing from the garbage was forwarded"
    );
    assert!(
        c.ping(&d.ip, 3, 56),
        "c↔d keeps forwarding during the attack"
    );

    // 4. A malformed control message: vwire drops this interface's connection only.
    let t0 = Instant::now();
    while !sock::send(&ctl, &[0u8; MSG_SIZE], None).unwrap() {
        assert!(t0.elapsed() < Duration::from_secs(2));
    }
    let t0 = Instant::now();
    loop {
        match sock::recv(&ctl).unwrap() {
            Received::Closed => break,
            Received::Msg { .. } | Received::WouldBlock => {
                assert!(
                    t0.elapsed() < Duration::from_secs(3),
                    "vwire did not close the connection"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    drop(regions);
    assert!(c.ping(&d.ip, 3, 56), "c↔d after the interface was closed");
    // The interface accepts a new client afterwards.
    let (_ctl2, _r2, _s, _m, _e) = hostile_connect(&socket);
    assert!(vw.scrape().port("rx_packets", "c") > 0);
}
