//! A gRPC server of a test (a registry or nsmgr stand-in) on a unix socket, on its own thread
//! and tokio runtime. Dropping it drops the runtime, which ends every connection at once, as a
//! process that dies does, and removes the socket file.

use std::future::Future;
use std::path::{Path, PathBuf};

use tonic::transport::server::Router;

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
                let serve = router
                    .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener));
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
