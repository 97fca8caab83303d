//! The socket layer: creating the AF_XDP socket of one interface queue (UMEM registration or
//! sharing, ring sizing and mapping, bind), the ring sizes, and the sockets' kernel statistics.
//! Cold path: runs on the control thread when a port is created. It knows nothing of XDP
//! programs: the port layer above steers the queue to the socket once it is bound.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Weak};

use vwire_dataplane::buffer::{PoolRegion, FRAME_SIZE};
use vwire_dataplane::port::PortStats;

use super::abi::*;
use super::error::AfXdpError;
use super::ring::MmapRing;
use super::sys::ifindex;

/// Fill ring entries. Twice [`FILL_TARGET`]: the kernel publishes its consumer index lazily, so
/// a ring only as large as what we post would often look full.
pub const FILL_RING: u32 = 8192;
/// Frames kept posted in each queue's fill ring. On this VM class 8192 gave no drops under load
/// where 2048 dropped (testbed.md); 4096 per queue showed no fill-ring-empty drops in the iperf3
/// test here and halves the memory of a port.
pub const FILL_TARGET: u32 = 4096;
/// Completion ring entries: at least the TX ring, so completions never back up.
pub const COMP_RING: u32 = 4096;
/// RX ring entries.
pub const RX_RING: u32 = 2048;
/// TX ring entries.
pub const TX_RING: u32 = 2048;
/// Frames to add to a worker's pool for each AF_XDP queue it serves: the fill target plus full RX
/// and TX rings (32 MiB of 4 KiB frames).
pub const FRAMES_PER_QUEUE: u32 = 8192;

/// The entries of a socket's four rings (each a power of two, as the kernel requires). Ring
/// memory is mapped into the process: about 160 KiB a socket at [`RingSizes::DEFAULT`], 56 KiB
/// at [`RingSizes::SMALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSizes {
    /// Fill ring.
    pub fill: u32,
    /// Completion ring.
    pub comp: u32,
    /// RX ring.
    pub rx: u32,
    /// TX ring.
    pub tx: u32,
}

impl RingSizes {
    /// For a port that must absorb line-rate bursts alone ([`FILL_TARGET`] posted).
    pub const DEFAULT: Self = Self {
        fill: FILL_RING,
        comp: COMP_RING,
        rx: RX_RING,
        tx: TX_RING,
    };
    /// For one of many ports (NSM connections), with a fill target of at most 1024.
    pub const SMALL: Self = Self {
        fill: 2048,
        comp: 1024,
        rx: 1024,
        tx: 1024,
    };
}

impl Default for RingSizes {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How long [`Umem::shared`] waits for the loopback queue its holder binds.
const HOLDER_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

const _: () = assert!(FILL_TARGET + RX_RING + TX_RING <= FRAMES_PER_QUEUE);

/// A worker's UMEM: its pool region, at the same offsets for every AF_XDP socket of the worker,
/// so a frame address means the same frame to every socket and frames move between ports
/// without a copy. Two ways to get there:
/// - [`Umem::new`]: each socket registers the region itself (and may bind zero-copy where its
///   driver can);
/// - [`Umem::shared`]: a holder socket on the loopback interface registers it once and every
///   port's sockets share it (copy mode), so opening a port does not pin the pool again.
///
/// Neither ties the UMEM to a port's socket: sharing with a port's own first socket would keep
/// that socket bound after its port is gone, or break when its interface goes, and ports come
/// and go with NSM connections.
#[derive(Debug)]
pub struct Umem {
    region: PoolRegion,
    /// A socket on the loopback interface that registered the region once, for ports that
    /// share it ([`Umem::shared`]).
    holder: Option<OwnedFd>,
}

impl Umem {
    /// A UMEM over `region` (a worker's pool): each socket registers the region itself, and
    /// binds in zero-copy mode where its driver can.
    pub fn new(region: PoolRegion) -> Self {
        Self {
            region,
            holder: None,
        }
    }

    /// A UMEM over `region` registered once, on a socket bound to the loopback interface (which
    /// never goes away), that every port's sockets share with `XDP_SHARED_UMEM`. Opening a port
    /// then skips pinning the whole pool again, which is most of the cost of a port that comes
    /// and goes with an NSM connection; sharing sockets inherit the holder's copy mode. Falls
    /// back to [`Umem::new`] if the holder cannot be set up.
    ///
    /// Only one socket can be bound to a queue: a holder that finds the loopback queue taken
    /// (EBUSY: the socket of a process that just died, which the kernel releases after its
    /// exit) tries again for up to [`HOLDER_WAIT`].
    pub fn shared(region: PoolRegion) -> Self {
        let until = std::time::Instant::now() + HOLDER_WAIT;
        let mut held = Self::holder(&region);
        while matches!(&held, Err(e) if e.raw_os_error() == Some(libc::EBUSY))
            && std::time::Instant::now() < until
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
            held = Self::holder(&region);
        }
        match held {
            Ok(fd) => Self {
                region,
                holder: Some(fd),
            },
            Err(e) => {
                tracing::warn!(
                    "no shared UMEM holder ({e}); every AF_XDP socket registers its own"
                );
                Self::new(region)
            }
        }
    }

    fn holder(region: &PoolRegion) -> std::io::Result<OwnedFd> {
        // SAFETY: plain socket(2); the result is checked and then owned.
        let raw = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        register(fd.as_raw_fd(), region)?;
        // The holder's own rings are never used, but the kernel wants them: the smallest size.
        setsockopt(fd.as_raw_fd(), XDP_UMEM_FILL_RING, &64u32)?;
        setsockopt(fd.as_raw_fd(), XDP_UMEM_COMPLETION_RING, &64u32)?;
        setsockopt(fd.as_raw_fd(), XDP_RX_RING, &64u32)?;
        let lo = ifindex("lo").ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENODEV))?;
        let sa = SockaddrXdp {
            family: AF_XDP_FAMILY,
            flags: XDP_COPY | XDP_USE_NEED_WAKEUP,
            ifindex: lo,
            queue_id: 0,
            shared_umem_fd: 0,
        };
        // SAFETY: `sa` is a live sockaddr_xdp of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const SockaddrXdp).cast(),
                socklen::<SockaddrXdp>(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// Registers `region` as the UMEM of socket `fd`.
fn register(fd: i32, region: &PoolRegion) -> std::io::Result<()> {
    let reg = UmemReg {
        addr: region.base as u64,
        len: region.len as u64,
        chunk_size: u32::try_from(FRAME_SIZE).unwrap_or(0),
        headroom: 0,
        flags: 0,
        tx_metadata_len: 0,
    };
    setsockopt(fd, XDP_UMEM_REG, &reg)
}

/// The size of `T` as a `socklen_t`; the kernel structures passed here are tens of bytes.
fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

fn setsockopt<T>(fd: i32, name: i32, v: &T) -> std::io::Result<()> {
    // SAFETY: passes a pointer to a live `T` with its exact size.
    let rc = unsafe { libc::setsockopt(fd, SOL_XDP, name, (v as *const T).cast(), socklen::<T>()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn getsockopt<T: Default>(fd: i32, name: i32) -> std::io::Result<T> {
    let mut v = T::default();
    let mut len = socklen::<T>();
    // SAFETY: the kernel writes at most `len` bytes into the live `v`.
    let rc = unsafe { libc::getsockopt(fd, SOL_XDP, name, (&mut v as *mut T).cast(), &mut len) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(v)
}

/// The kernel's XDP statistics of a port's sockets, summed; readable from any thread. It holds
/// the sockets weakly: once the port is closed, it reads nothing instead of keeping them open.
#[derive(Debug)]
pub struct XskStats {
    pub(crate) fds: Vec<Weak<OwnedFd>>,
}

impl XskStats {
    /// Reads XDP_STATISTICS of every socket and sums them.
    pub fn read(&self) -> std::io::Result<XdpStatistics> {
        let mut t = XdpStatistics::default();
        for fd in self.fds.iter().filter_map(Weak::upgrade) {
            let s: XdpStatistics = getsockopt(fd.as_raw_fd(), XDP_STATISTICS)?;
            t.rx_dropped += s.rx_dropped;
            t.rx_invalid_descs += s.rx_invalid_descs;
            t.tx_invalid_descs += s.tx_invalid_descs;
            t.rx_ring_full += s.rx_ring_full;
            t.rx_fill_ring_empty_descs += s.rx_fill_ring_empty_descs;
            t.tx_ring_empty_descs += s.tx_ring_empty_descs;
        }
        Ok(t)
    }
}

impl PortStats for XskStats {
    fn counters(&self, out: &mut Vec<(&'static str, u64)>) {
        if let Ok(s) = self.read() {
            out.extend([
                ("rx_dropped", s.rx_dropped),
                ("rx_invalid_descs", s.rx_invalid_descs),
                ("tx_invalid_descs", s.tx_invalid_descs),
                ("rx_ring_full", s.rx_ring_full),
                ("rx_fill_ring_empty_descs", s.rx_fill_ring_empty_descs),
                ("tx_ring_empty_descs", s.tx_ring_empty_descs),
            ]);
        }
    }
}

/// What one queue's socket is, once bound: the port layer's `XskQueue` is built from it.
pub(crate) struct QueueParts {
    pub(crate) queue: u32,
    pub(crate) rx: MmapRing<XdpDesc>,
    pub(crate) tx: MmapRing<XdpDesc>,
    pub(crate) fill: MmapRing<u64>,
    pub(crate) comp: MmapRing<u64>,
    pub(crate) socket: Arc<OwnedFd>,
    pub(crate) zero_copy: bool,
}

/// Opens and binds the socket of queue `queue` of interface `ifindex` (named `ifname`), sharing
/// or registering `umem`; in zero-copy mode if `try_zero_copy` (the program runs in the driver),
/// the UMEM is not shared, and the driver accepts it, in copy mode otherwise.
pub(crate) fn open_queue(
    ifname: &str,
    ifindex: u32,
    queue: u32,
    umem: &Umem,
    try_zero_copy: bool,
    rings: RingSizes,
) -> Result<QueueParts, AfXdpError> {
    let err = |what: &'static str| {
        move |source| AfXdpError::Socket {
            ifname: format!("{ifname} queue {queue}"),
            what,
            source,
        }
    };
    // SAFETY: plain socket(2); the result is checked and then owned.
    let raw = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(err("creating the AF_XDP socket")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let socket = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
    let fd = socket.as_raw_fd();

    if umem.holder.is_none() {
        register(fd, &umem.region).map_err(err("registering the UMEM"))?;
    }
    setsockopt(fd, XDP_UMEM_FILL_RING, &rings.fill).map_err(err("sizing the fill ring"))?;
    setsockopt(fd, XDP_UMEM_COMPLETION_RING, &rings.comp)
        .map_err(err("sizing the completion ring"))?;
    setsockopt(fd, XDP_RX_RING, &rings.rx).map_err(err("sizing the RX ring"))?;
    setsockopt(fd, XDP_TX_RING, &rings.tx).map_err(err("sizing the TX ring"))?;
    let off: MmapOffsets = getsockopt(fd, XDP_MMAP_OFFSETS).map_err(err("reading ring offsets"))?;

    // SAFETY: `fd` is an AF_XDP socket whose rings were just sized as passed, and `off` holds
    // the kernel's offsets for them (the same holds for the three maps below).
    let rx = unsafe { MmapRing::<XdpDesc>::map(fd, XDP_PGOFF_RX_RING, rings.rx, &off.rx) }
        .map_err(err("mapping the RX ring"))?;
    // SAFETY: as above.
    let tx = unsafe { MmapRing::<XdpDesc>::map(fd, XDP_PGOFF_TX_RING, rings.tx, &off.tx) }
        .map_err(err("mapping the TX ring"))?;
    // SAFETY: as above.
    let fill = unsafe { MmapRing::<u64>::map(fd, XDP_UMEM_PGOFF_FILL_RING, rings.fill, &off.fr) }
        .map_err(err("mapping the fill ring"))?;
    // SAFETY: as above.
    let comp =
        unsafe { MmapRing::<u64>::map(fd, XDP_UMEM_PGOFF_COMPLETION_RING, rings.comp, &off.cr) }
            .map_err(err("mapping the completion ring"))?;

    let bind = |flags: u16, shared_fd: u32| {
        let sa = SockaddrXdp {
            family: AF_XDP_FAMILY,
            flags,
            ifindex,
            queue_id: queue,
            shared_umem_fd: shared_fd,
        };
        // The kernel frees a closed socket's hold on a queue from a work queue, so a queue that
        // a just-removed port used can look busy for a moment: retry EBUSY for up to a second.
        for _ in 0..100 {
            // SAFETY: `sa` is a live sockaddr_xdp of the size passed.
            let rc = unsafe {
                libc::bind(
                    fd,
                    (&sa as *const SockaddrXdp).cast(),
                    socklen::<SockaddrXdp>(),
                )
            };
            if rc == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EBUSY) {
                return Err(e);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err(std::io::Error::from_raw_os_error(libc::EBUSY))
    };
    let zero_copy = match &umem.holder {
        // A sharing socket inherits the holder's flags (copy mode, need-wakeup); the kernel
        // refuses any flag but XDP_SHARED_UMEM here.
        Some(h) => {
            let holder = u32::try_from(h.as_raw_fd()).unwrap_or(u32::MAX);
            bind(XDP_SHARED_UMEM, holder).map_err(err("binding (shared UMEM)"))?;
            false
        }
        None => {
            let zc = try_zero_copy && bind(XDP_ZEROCOPY | XDP_USE_NEED_WAKEUP, 0).is_ok();
            if !zc {
                bind(XDP_COPY | XDP_USE_NEED_WAKEUP, 0).map_err(err("binding"))?;
            }
            zc
        }
    };
    // Larger copy-mode TX batches (kernel ≥ 6.17); older kernels refuse the option and keep 32.
    let _ = setsockopt(fd, XDP_MAX_TX_SKB_BUDGET, &256u32);
    Ok(QueueParts {
        queue,
        rx,
        tx,
        fill,
        comp,
        socket,
        zero_copy,
    })
}
