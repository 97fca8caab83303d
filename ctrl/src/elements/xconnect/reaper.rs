//! Batched teardown of closed connections' veth pairs and ports.
//!
//! Deleting a network device holds the kernel's RTNL lock through RCU grace periods (about
//! 18 ms per veth pair on the testbed), and every other netlink change on the node, the veth
//! creations of new Requests included, waits behind it: with 32 clients opening and closing at
//! once, a Request waited for a queue of deletions (1 s p50). The kernel deletes all the devices
//! of a link group with one wait, so Closes hand their host veths to the reaper, a task that
//! deletes everything handed in since its last round in one [`kernel::delete_veths`] and then
//! closes those connections' ports (their sockets after their devices: see `teardown`).
//!
//! Contract: [`Reaper::reap`] returns when its veths are gone and its ports closed, so a Close
//! still answers only once nothing of the connection is left. Closes that arrive while a round
//! is in the kernel form the next round; nothing waits on a timer. Failures are logged, never
//! returned (teardown never fails). If the task is gone (the runtime is stopping), `reap` does
//! the work itself.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use vwire_mechanisms::kernel::{self, NetlinkIn, Netns};

use crate::dataplane::Retiring;

/// One Close's share of a round.
struct Job {
    veths: Vec<String>,
    retiring: Option<Retiring>,
    done: oneshot::Sender<()>,
}

/// The handle of the reaper task. Cheap to share; the task ends with the last handle.
pub(super) struct Reaper {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Reaper {
    /// Starts the reaper task on the current tokio runtime.
    pub(super) fn start() -> Arc<Self> {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx));
        Arc::new(Self { jobs })
    }

    /// Deletes the veth pairs whose host ends are `veths` (in this process's namespace), then
    /// finishes `retiring`, batched with every other Close of the same round.
    pub(super) async fn reap(&self, veths: Vec<String>, retiring: Option<Retiring>) {
        let (done, wait) = oneshot::channel();
        match self.jobs.send(Job {
            veths,
            retiring,
            done,
        }) {
            Ok(()) => {
                // A dropped sender means the task was cancelled mid-round (runtime shutdown).
                let _ = wait.await;
            }
            Err(mpsc::error::SendError(job)) => round(vec![job]).await,
        }
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while let Ok(job) = rx.try_recv() {
            jobs.push(job);
        }
        round(jobs).await;
    }
}

/// Deletes the veths of `jobs` in one go, closes their ports, and answers each job.
async fn round(jobs: Vec<Job>) {
    let t0 = std::time::Instant::now();
    let veths: Vec<String> = jobs.iter().flat_map(|j| j.veths.iter().cloned()).collect();
    if !veths.is_empty() {
        match Netns::current() {
            Ok(ns) => match NetlinkIn::new(&ns).await {
                Ok(host) => {
                    for e in kernel::delete_veths(&host, &veths).await {
                        tracing::warn!("deleting a veth: {e}");
                    }
                }
                Err(e) => tracing::warn!("netlink: {e}"),
            },
            Err(e) => tracing::warn!("netns: {e}"),
        }
    }
    let deleted_ms = t0.elapsed().as_millis();
    let mut answers = Vec::with_capacity(jobs.len());
    let mut retiring = Vec::with_capacity(jobs.len());
    for job in jobs {
        retiring.extend(job.retiring);
        answers.push(job.done);
    }
    if !retiring.is_empty() {
        let closed =
            tokio::task::spawn_blocking(move || retiring.into_iter().for_each(Retiring::finish));
        if let Err(e) = closed.await {
            tracing::warn!("closing the ports: {e}");
        }
    }
    tracing::debug!(
        connections = answers.len(),
        veths = veths.len(),
        deleted_ms,
        ms = t0.elapsed().as_millis(),
        "teardown round"
    );
    for done in answers {
        let _ = done.send(());
    }
}
