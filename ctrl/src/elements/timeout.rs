//! timeout: closes a connection that its client stopped refreshing.
//!
//! After each successful request, a timer is (re)armed for the `expires` of the previous path
//! segment (the caller's token expiry, nsm-api.md §6). If no refresh re-arms it first, the timer
//! runs a Close of the connection through the whole chain, exactly as if the client had sent it.
//! A close cancels the timer. Without an `expires`, no timer is armed.
//!
//! Place it after begin (the timer's close is serialised with requests of the same id).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tonic::Status;
use vwire_proto::connection::Connection;
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::{BoxFut, Chain, Element, Next};

/// The timeout element.
#[derive(Default)]
pub struct Timeout {
    timers: Mutex<HashMap<String, JoinHandle<()>>>,
    chain: OnceLock<Weak<Chain>>,
}

/// When the previous segment's token expires, if it has one.
fn deadline(conn: &Connection) -> Option<SystemTime> {
    let path = conn.path.as_ref()?;
    let prev = usize::try_from(path.index).ok()?.checked_sub(1)?;
    let ts = path.path_segments.get(prev)?.expires.as_ref()?;
    let secs = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

impl Timeout {
    /// A timeout element; [`Timeout::attach`] it to its chain once the chain is built.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Lets the timers close connections through `chain`.
    pub fn attach(&self, chain: &Arc<Chain>) {
        let _ = self.chain.set(Arc::downgrade(chain));
    }

    /// Connections with an armed timer.
    pub fn armed(&self) -> usize {
        self.timers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Arms the timer of a connection a restarted vwire took back from its state: at its
    /// recorded expiry, but not before `grace` from now, so that a client whose expiry passed
    /// while vwire was down still has time to refresh.
    pub fn recover(self: &Arc<Self>, conn: &Connection, grace: Duration) {
        if let Some(when) = deadline(conn) {
            self.arm_at(conn, when.max(SystemTime::now() + grace));
        }
    }

    fn arm(self: &Arc<Self>, conn: &Connection) {
        if let Some(when) = deadline(conn) {
            self.arm_at(conn, when);
        }
    }

    fn arm_at(self: &Arc<Self>, conn: &Connection, when: SystemTime) {
        let wait = when
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let chain = self.chain.get().cloned();
        let conn = conn.clone();
        let id = conn.id.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(chain) = chain.and_then(|w| w.upgrade()) {
                tracing::info!(id = %conn.id, "connection expired without a refresh: closing it");
                if let Err(e) = chain.close(conn).await {
                    tracing::warn!("closing an expired connection: {e}");
                }
            }
        });
        if let Some(old) = self
            .timers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, task)
        {
            old.abort();
        }
    }

    fn cancel(&self, id: &str) {
        if let Some(t) = self
            .timers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
        {
            // The timer's own close must not abort the task it runs in.
            if Some(t.id()) != tokio::task::try_id() {
                t.abort();
            }
        }
    }
}

impl Element for Arc<Timeout> {
    fn name(&self) -> &'static str {
        "timeout"
    }

    fn request<'a>(
        &'a self,
        req: NetworkServiceRequest,
        next: Next<'a>,
    ) -> BoxFut<'a, Result<Connection, Status>> {
        Box::pin(async move {
            let c = next.request(req).await?;
            self.arm(&c);
            Ok(c)
        })
    }

    fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
        Box::pin(async move {
            let id = conn.id.clone();
            let result = next.close(conn).await;
            self.cancel(&id);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::tests::Recorder;
    use crate::elements::begin::Begin;
    use vwire_proto::connection::{Path, PathSegment};

    fn expiring_in(ms: u64) -> NetworkServiceRequest {
        let at = SystemTime::now() + Duration::from_millis(ms);
        let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        let expires = prost_types::Timestamp {
            seconds: i64::try_from(since.as_secs()).unwrap(),
            nanos: i32::try_from(since.subsec_nanos()).unwrap(),
        };
        let conn = Connection {
            id: "mine".into(),
            path: Some(Path {
                index: 1,
                path_segments: vec![
                    PathSegment {
                        name: "nsc".into(),
                        id: "theirs".into(),
                        expires: Some(expires),
                        ..Default::default()
                    },
                    PathSegment {
                        name: "fwd".into(),
                        id: "mine".into(),
                        ..Default::default()
                    },
                ],
            }),
            ..Default::default()
        };
        NetworkServiceRequest {
            connection: Some(conn),
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_unrefreshed_connection_is_closed_and_a_refreshed_one_is_not() {
        let rec = Arc::new(Recorder::default());
        let timeout = Timeout::new();
        let begin = Arc::new(Begin::new());
        let chain = Arc::new(Chain::new(vec![
            begin.clone(),
            Arc::new(timeout.clone()),
            rec.clone(),
        ]));
        timeout.attach(&chain);

        chain.request(expiring_in(300)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        chain.request(expiring_in(300)).await.unwrap(); // a refresh re-arms the timer
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(rec.closes.lock().unwrap().is_empty(), "refreshed in time");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            rec.closes.lock().unwrap().len(),
            1,
            "closed once it expired"
        );
        assert!(begin.is_empty(), "the close went through begin");
        assert_eq!(timeout.armed(), 0);
    }
}
