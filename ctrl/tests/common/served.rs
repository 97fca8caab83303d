//! A gRPC server of a test (a registry or nsmgr stand-in) on a unix socket, on its own thread
//! and tokio runtime. Dropping it drops the runtime, which ends every connection at once, as a
//! process that dies does, and removes the socket file. Its connections read as a Go gRPC
//! server's do ([`PlainIo`]).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::StreamExt;
use tonic::transport::server::Router;

/// A plain unix stream (fds a peer attaches are discarded by the kernel: this server does not
/// take them) that reads as a Go gRPC server's connection does, `read(2)` until `EAGAIN`.
///
/// Not tokio's `UnixStream::poll_read`: that takes a short read for a drained socket and waits
/// for the next readiness event (tokio-rs/tokio#5866), but a unix stream read ends after every
/// byte that carries fds, with the bytes behind it still queued. grpcfd sends each fd on a
/// byte of its own ahead of the message naming it, so when both are queued before the read,
/// that reader takes the one byte and then waits for an event that only the peer's next write
/// brings, while the peer waits for the answer.
pub struct PlainIo(pub tokio::net::UnixStream);

impl AsyncRead for PlainIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            // try_read clears the readiness on EAGAIN only.
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for PlainIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for PlainIo {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

/// A running server; stops when dropped.
pub struct Served {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

impl Served {
    /// Binds `path` (the socket exists when this returns), then serves the router `make` builds
    /// inside the server's runtime.
    pub fn start<F, Fut>(path: &Path, make: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Router>,
    {
        let _ = std::fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path).expect("bind the test server");
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let router = make().await;
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener)
                    .map(|s| s.map(PlainIo));
                let serve = router.serve_with_incoming(incoming);
                tokio::select! {
                    r = serve => r.expect("the test server failed"),
                    _ = stopped => {}
                }
            });
            // Dropping the runtime here ends every connection task.
        });
        Self {
            stop: Some(stop),
            thread: Some(thread),
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
