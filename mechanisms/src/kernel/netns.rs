//! Network namespaces: opening them the NSM way, and running a closure inside one.
//!
//! `setns(2)` changes the namespace of the calling OS *thread* only. vwire's control thread runs a
//! tokio runtime and must stay in the forwarder's own namespace, so every excursion into another
//! namespace happens on a fresh, short-lived `std::thread` that enters the namespace, does its
//! work and exits. Never a tokio blocking-pool thread: the pool reuses its threads, and the next
//! task to land on one would silently run in the wrong namespace.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use super::KernelError;

/// `NS_GET_NSTYPE` from `<linux/nsfs.h>`: `_IO(0xb7, 0x3)`. Returns the `CLONE_NEW*` type of a
/// namespace file descriptor, so a file that is not a namespace (or another kind of namespace)
/// is refused before any thread tries to `setns` into it.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// The namespace of the calling thread: `thread-self`, not `self`, because `setns` is per thread.
const CURRENT_NETNS: &str = "/proc/thread-self/ns/net";

/// An open network namespace.
///
/// Holds a file descriptor, so the namespace stays alive (and the same one) as long as the value
/// does, even if its pod's processes exit or its `/var/run/netns` name is removed.
///
/// Accepted forms, as NSM's KERNEL mechanism carries them in `inodeURL`:
/// - `file:///proc/<pid>/ns/net`, `file:///proc/<pid>/fd/<n>` (what `recvfd` makes of a passed
///   fd), `file:///var/run/netns/<name>`: a `file://` URL with an absolute path;
/// - a plain path, with the same meaning.
///
/// `inode://<dev>/<ino>` is refused: it names a namespace whose fd travels beside the gRPC message
/// (NSM's grpcfd), and must be turned into a `file://` URL by receiving that fd first.
pub struct Netns {
    fd: OwnedFd,
    /// what the caller gave, for error messages
    label: String,
    /// nsfs device and inode: the namespace's identity
    dev: u64,
    ino: u64,
}

impl Netns {
    /// Opens the network namespace named by `url` (a `file://` URL or a plain path).
    pub fn open(url: &str) -> Result<Netns, KernelError> {
        let path = url_to_path(url)?;
        Self::open_path(path, url.to_string())
    }

    /// Opens the network namespace of the calling thread.
    pub fn current() -> Result<Netns, KernelError> {
        Self::open_path(CURRENT_NETNS, CURRENT_NETNS.to_string())
    }

    fn open_path(path: &str, label: String) -> Result<Netns, KernelError> {
        let open_err = |source| KernelError::OpenNetns {
            path: path.to_string(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        // SAFETY: `file` is an open descriptor for the whole call; NS_GET_NSTYPE takes no argument
        // and writes no memory, it only returns the namespace type (or fails with ENOTTY).
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
        if kind != libc::CLONE_NEWNET {
            return Err(KernelError::NotNetns {
                path: path.to_string(),
            });
        }
        let meta = file.metadata().map_err(open_err)?;
        Ok(Netns {
            dev: meta.dev(),
            ino: meta.ino(),
            fd: file.into(),
            label,
        })
    }

    /// A second handle on the same namespace (a duplicated fd).
    pub fn try_clone(&self) -> Result<Netns, KernelError> {
        Ok(Netns {
            fd: self
                .fd
                .try_clone()
                .map_err(|source| KernelError::OpenNetns {
                    path: self.label.clone(),
                    source,
                })?,
            label: self.label.clone(),
            dev: self.dev,
            ino: self.ino,
        })
    }

    /// The namespace's identity: the device and inode of its nsfs file. Two `Netns` with the same
    /// id are the same namespace, whatever path opened them.
    pub fn id(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// The URL or path this namespace was opened from.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Runs `f` on a new OS thread that has entered this namespace, and returns its result.
    ///
    /// The thread exits when `f` returns, so nothing else ever runs in the namespace by accident.
    /// Awaiting does not block the runtime; `f` itself should be short (it runs on its own
    /// thread, but the caller waits for it).
    pub(crate) async fn run<T, F>(&self, what: &'static str, f: F) -> Result<T, KernelError>
    where
        T: Send + 'static,
        F: FnOnce() -> io::Result<T> + Send + 'static,
    {
        let fd = self.fd.try_clone().map_err(|source| KernelError::Thread {
            netns: self.label.clone(),
            source,
        })?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("vwire-netns".into())
            .spawn(move || {
                let result = enter(fd.as_fd())
                    .map_err(Entered::No)
                    .and_then(|()| f().map_err(Entered::Yes));
                // The receiver is gone only if the caller was cancelled; nothing to report then.
                let _ = tx.send(result);
            })
            .map_err(|source| KernelError::Thread {
                netns: self.label.clone(),
                source,
            })?;
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(Entered::No(source))) => Err(KernelError::EnterNetns {
                netns: self.label.clone(),
                source,
            }),
            Ok(Err(Entered::Yes(source))) => Err(KernelError::InNetns {
                what,
                netns: self.label.clone(),
                source,
            }),
            Err(_) => Err(KernelError::Thread {
                netns: self.label.clone(),
                source: io::Error::other("the namespace thread panicked"),
            }),
        }
    }
}

/// Where a namespace thread failed: entering the namespace, or in the work done inside it.
enum Entered {
    No(io::Error),
    Yes(io::Error),
}

/// Moves the calling thread into the network namespace `fd`.
fn enter(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is a valid open descriptor (borrowed for the call) checked to be a network
    // namespace when it was opened; setns only reads it, and affects the calling thread only.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Turns an NSM `inodeURL` (or a plain path) into the path of the namespace file: the one parser
/// of namespace URLs, for [`Netns::open`] and for the NSM elements that check a URL before
/// using it.
pub fn url_to_path(url: &str) -> Result<&str, KernelError> {
    let invalid = |reason| KernelError::InvalidNetnsUrl {
        url: url.to_string(),
        reason,
    };
    if url.is_empty() {
        return Err(invalid("empty"));
    }
    if url.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(invalid(
                "a file:// URL needs an absolute path (file:///...)",
            ));
        }
        return Ok(path);
    }
    if url.starts_with("inode://") {
        return Err(invalid(
            "inode:// names a namespace whose fd is passed beside the message; \
             receive the fd and use file:///proc/<pid>/fd/<n>",
        ));
    }
    if url.contains("://") {
        return Err(invalid("unsupported scheme (only file:// or a plain path)"));
    }
    Ok(url)
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netns")
            .field("label", &self.label)
            .field("fd", &self.fd.as_raw_fd())
            .field("dev", &self.dev)
            .field("ino", &self.ino)
            .finish()
    }
}

impl PartialEq for Netns {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Netns {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            url_to_path("file:///proc/1/ns/net").ok(),
            Some("/proc/1/ns/net")
        );
        assert_eq!(
            url_to_path("/var/run/netns/x").ok(),
            Some("/var/run/netns/x")
        );
        assert!(url_to_path("file://proc/1/ns/net").is_err());
        assert!(url_to_path("inode://4/4026531840").is_err());
        assert!(url_to_path("http://x").is_err());
        assert!(url_to_path("").is_err());
        assert!(url_to_path("/a\0b").is_err());
    }

    #[test]
    fn not_a_netns() {
        assert!(matches!(
            Netns::open("/proc/self/ns/mnt"),
            Err(KernelError::NotNetns { .. }) | Err(KernelError::OpenNetns { .. })
        ));
        assert!(matches!(
            Netns::open("/etc/hostname"),
            Err(KernelError::NotNetns { .. }) | Err(KernelError::OpenNetns { .. })
        ));
    }

    #[test]
    fn current_is_self() {
        // The test thread is in the process's namespace, so both paths name the same one.
        let a = Netns::current().expect("open /proc/thread-self/ns/net");
        let b = Netns::open("/proc/self/ns/net").expect("open /proc/self/ns/net");
        assert_eq!(a, b);
    }
}
