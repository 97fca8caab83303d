//! begin: serialises work per connection id and keeps the last connection that succeeded.
//!
//! - A request with an empty connection id is refused (InvalidArgument).
//! - Requests and closes of one id run one at a time, in arrival order; different ids run
//!   concurrently.
//! - A request with state RESELECT_REQUESTED on an established connection first closes the old one
//!   downstream, then requests anew.
//! - A successful request returns state UP.
//! - Close of an unknown id succeeds without going further; otherwise the *last successfully
//!   returned* connection goes down the chain, not what the caller sent.
//! - A close refused with PermissionDenied (authorize, before anything was torn down) leaves
//!   the connection established; any other outcome of a close forgets it.
//!
//! Place it right after updatepath, so that the id it serialises on is this hop's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::Status;
use vwire_proto::connection::{Connection, State};
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::{connection_of, BoxFut, Element, Next};

type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

/// The begin element.
#[derive(Default)]
pub struct Begin {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Begin {
    /// A begin element with no connections.
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&self, id: &str, create: bool) -> Option<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if create {
            Some(slots.entry(id.to_string()).or_default().clone())
        } else {
            slots.get(id).cloned()
        }
    }

    fn is_current(&self, id: &str, slot: &Slot) -> bool {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.get(id).is_some_and(|s| Arc::ptr_eq(s, slot))
    }

    fn forget(&self, id: &str, slot: &Slot) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.get(id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(id);
        }
    }

    /// Takes `conn` as established, as if it had just been returned: a connection a restarted
    /// vwire took back from its state (`xconnect`'s records), so that its close goes down the
    /// chain. Nothing happens if the id is already known.
    pub fn recover(&self, conn: Connection) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry(conn.id.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Some(conn))));
    }

    /// Number of established connections.
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True if no connection is established.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Element for Begin {
    fn name(&self) -> &'static str {
        "begin"
    }

    fn request<'a>(
        &'a self,
        mut req: NetworkServiceRequest,
        next: Next<'a>,
    ) -> BoxFut<'a, Result<Connection, Status>> {
        Box::pin(async move {
            let id = connection_of(&req)?.id.clone();
            if id.is_empty() {
                return Err(Status::invalid_argument("connection.id: empty"));
            }
            // Take the id's slot; a close may retire the slot while we wait for it, then retry.
            let (slot, mut last) = loop {
                let slot = self.slot(&id, true).unwrap_or_default();
                let guard = slot.clone().lock_owned().await;
                if self.is_current(&id, &slot) {
                    break (slot, guard);
                }
            };
            let reselect = connection_of(&req)?.state() == State::ReselectRequested;
            if reselect {
                if let Some(old) = last.take() {
                    if let Err(e) = next.close(old).await {
                        tracing::warn!(%id, "closing the old path before a reselect: {e}");
                    }
                }
                if let Some(c) = req.connection.as_mut() {
                    c.set_state(State::Up);
                }
            }
            match next.request(req).await {
                Ok(mut c) => {
                    c.set_state(State::Up);
                    *last = Some(c.clone());
                    Ok(c)
                }
                Err(e) => {
                    if last.is_none() {
                        drop(last);
                        self.forget(&id, &slot);
                    }
                    Err(e)
                }
            }
        })
    }

    fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
        Box::pin(async move {
            let Some(slot) = self.slot(&conn.id, false) else {
                return Ok(()); // unknown id: nothing to do
            };
            let mut last = slot.clone().lock_owned().await;
            let result = match last.take() {
                Some(c) => {
                    let r = next.close(c.clone()).await;
                    if matches!(&r, Err(s) if s.code() == tonic::Code::PermissionDenied) {
                        *last = Some(c); // refused: nothing was torn down
                        return r;
                    }
                    r
                }
                None => Ok(()),
            };
            drop(last);
            self.forget(&conn.id, &slot);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::tests::Recorder;
    use crate::chain::Chain;

    fn req(id: &str, state: State) -> NetworkServiceRequest {
        let mut c = Connection {
            id: id.into(),
            ..Default::default()
        };
        c.set_state(state);
        NetworkServiceRequest {
            connection: Some(c),
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn begin_keeps_ids_states_and_the_last_connection() {
        let rec = Arc::new(Recorder::default());
        let begin = Arc::new(Begin::new());
        let chain = Chain::new(vec![begin.clone(), rec.clone()]);
        assert_eq!(
            chain.request(req("", State::Up)).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let c = chain.request(req("a", State::Down)).await.unwrap();
        assert_eq!(c.state(), State::Up, "a successful request returns UP");
        assert_eq!(begin.len(), 1);
        // Close of an unknown id succeeds and goes nowhere.
        chain
            .close(Connection {
                id: "zzz".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(rec.closes.lock().unwrap().is_empty());
        // Reselect closes the old connection first.
        chain
            .request(req("a", State::ReselectRequested))
            .await
            .unwrap();
        assert_eq!(rec.closes.lock().unwrap().len(), 1);
        assert_eq!(
            rec.requests
                .lock()
                .unwrap()
                .last()
                .unwrap()
                .connection
                .as_ref()
                .unwrap()
                .state(),
            State::Up
        );
        // Close sends the last successful connection, whatever the caller passes.
        chain
            .close(Connection {
                id: "a".into(),
                network_service: "junk".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            rec.closes.lock().unwrap().last().unwrap().network_service,
            ""
        );
        assert!(begin.is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_first_request_leaves_no_state() {
        let rec = Arc::new(Recorder::default());
        *rec.fail.lock().unwrap() = Some(Status::unavailable("no"));
        let begin = Arc::new(Begin::new());
        let chain = Chain::new(vec![begin.clone(), rec]);
        assert!(chain.request(req("b", State::Up)).await.is_err());
        assert!(begin.is_empty());
    }

    /// Refuses closes (PermissionDenied) while `refuse` is set, as authorize does.
    #[derive(Default)]
    struct Refuser {
        refuse: std::sync::atomic::AtomicBool,
        closes: std::sync::atomic::AtomicUsize,
    }

    impl Element for Refuser {
        fn name(&self) -> &'static str {
            "refuser"
        }

        fn request<'a>(
            &'a self,
            req: NetworkServiceRequest,
            next: Next<'a>,
        ) -> BoxFut<'a, Result<Connection, Status>> {
            next.request(req)
        }
        fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
            Box::pin(async move {
                if self.refuse.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(Status::permission_denied("refused by policy x"));
                }
                self.closes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                next.close(conn).await
            })
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_close_leaves_the_connection_established() {
        let refuser = Arc::new(Refuser::default());
        let begin = Arc::new(Begin::new());
        let chain = Chain::new(vec![begin.clone(), refuser.clone()]);
        let up = chain.request(req("c", State::Up)).await.unwrap();
        refuser
            .refuse
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let e = chain.close(up.clone()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(!begin.is_empty(), "a refused close forgot the connection");
        refuser
            .refuse
            .store(false, std::sync::atomic::Ordering::Relaxed);
        chain.close(up).await.unwrap();
        assert_eq!(refuser.closes.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(begin.is_empty());
    }
}
