//! monitor: the source of `MonitorConnections`.
//!
//! It keeps every established connection (as this hop returned it) and broadcasts an UPDATE
//! after each successful request, a DELETE after each close, and an UPDATE with state DOWN when
//! a refresh fails or when [`Monitor::down`] reports a dataplane failure. A subscriber first gets
//! INITIAL_STATE_TRANSFER with the matching connections (possibly none), then the matching events
//! (see [`matches()`] for the selector rules of nsm-api.md).
//!
//! Place it after metadata and before the elements that do dataplane work, so that it reports
//! their outcome.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use tonic::Status;
use vwire_proto::connection::{
    Connection, ConnectionEvent, ConnectionEventType, MonitorScopeSelector, PathSegment, State,
};
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::{BoxFut, Element, Next};

/// Events a slow subscriber may lag behind before it is dropped.
const EVENT_BACKLOG: usize = 1024;

/// The monitor element and its state.
pub struct Monitor {
    conns: Mutex<BTreeMap<String, Connection>>,
    events: broadcast::Sender<ConnectionEvent>,
}

fn event(
    kind: ConnectionEventType,
    conns: impl IntoIterator<Item = Connection>,
) -> ConnectionEvent {
    let mut e = ConnectionEvent {
        connections: conns
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect::<HashMap<_, _>>(),
        ..Default::default()
    };
    e.set_type(kind);
    e
}

fn segment_matches(want: &PathSegment, have: &PathSegment) -> bool {
    (want.name.is_empty() || want.name == have.name)
        && (want.id.is_empty() || want.id == have.id)
        && (want.token.is_empty() || want.token == have.token)
}

/// True if `conn` matches `sel`: the selector's segments are a contiguous run of the
/// connection's path (empty name/id/token are wildcards; an empty list matches all), and the
/// connection's network service is listed (an empty list matches all).
pub fn matches(sel: &MonitorScopeSelector, conn: &Connection) -> bool {
    if !sel.network_services.is_empty() && !sel.network_services.contains(&conn.network_service) {
        return false;
    }
    let want = &sel.path_segments;
    if want.is_empty() {
        return true;
    }
    let have = conn
        .path
        .as_ref()
        .map(|p| &p.path_segments[..])
        .unwrap_or(&[]);
    have.windows(want.len())
        .any(|w| w.iter().zip(want).all(|(h, s)| segment_matches(s, h)))
}

impl Monitor {
    /// A monitor with no connections.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            conns: Mutex::new(BTreeMap::new()),
            events: broadcast::channel(EVENT_BACKLOG).0,
        })
    }

    /// Subscribes: the initial state (connections matching `sel`) and the stream of later events.
    /// Subscribing before taking the snapshot means no event falls in between.
    pub fn subscribe(
        &self,
        sel: &MonitorScopeSelector,
    ) -> (ConnectionEvent, broadcast::Receiver<ConnectionEvent>) {
        let rx = self.events.subscribe();
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let initial = event(
            ConnectionEventType::InitialStateTransfer,
            conns.values().filter(|c| matches(sel, c)).cloned(),
        );
        (initial, rx)
    }

    /// Reports that the dataplane side of connection `id` failed: an UPDATE with state DOWN.
    pub fn down(&self, id: &str) {
        let conn = {
            let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            let Some(c) = conns.get_mut(id) else { return };
            c.set_state(State::Down);
            c.clone()
        };
        let _ = self.events.send(event(ConnectionEventType::Update, [conn]));
    }

    /// Applies `change` to the established connection `id` (a change its next hop reported, see
    /// [`crate::elements::monitor_downstream`]) and broadcasts it as an UPDATE. Nothing happens
    /// if `id` is not established (closed meanwhile).
    pub fn relay(&self, id: &str, change: impl FnOnce(&mut Connection)) {
        let conn = {
            let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            let Some(c) = conns.get_mut(id) else { return };
            change(c);
            c.clone()
        };
        let _ = self.events.send(event(ConnectionEventType::Update, [conn]));
    }

    /// Takes `conn` as established (a connection a restarted vwire took back from its state)
    /// and broadcasts it as an UPDATE.
    pub fn recover(&self, conn: Connection) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(conn.id.clone(), conn.clone());
        let _ = self.events.send(event(ConnectionEventType::Update, [conn]));
    }

    /// The established connection `id`.
    pub fn connection(&self, id: &str) -> Option<Connection> {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Established connections.
    pub fn connections(&self) -> Vec<Connection> {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

impl Element for Arc<Monitor> {
    fn name(&self) -> &'static str {
        "monitor"
    }

    fn request<'a>(
        &'a self,
        req: NetworkServiceRequest,
        next: Next<'a>,
    ) -> BoxFut<'a, Result<Connection, Status>> {
        Box::pin(async move {
            let id = req
                .connection
                .as_ref()
                .map(|c| c.id.clone())
                .unwrap_or_default();
            match next.request(req).await {
                Ok(c) => {
                    self.conns
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(c.id.clone(), c.clone());
                    let _ = self
                        .events
                        .send(event(ConnectionEventType::Update, [c.clone()]));
                    Ok(c)
                }
                Err(e) => {
                    self.down(&id); // a failed refresh of an established connection
                    Err(e)
                }
            }
        })
    }

    fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
        Box::pin(async move {
            let id = conn.id.clone();
            let result = next.close(conn).await;
            let removed = self
                .conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            if let Some(mut c) = removed {
                c.set_state(State::Down);
                let _ = self.events.send(event(ConnectionEventType::Delete, [c]));
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vwire_proto::connection::Path;

    fn conn(id: &str, service: &str, segs: &[(&str, &str)]) -> Connection {
        Connection {
            id: id.into(),
            network_service: service.into(),
            path: Some(Path {
                index: 0,
                path_segments: segs
                    .iter()
                    .map(|(n, i)| PathSegment {
                        name: (*n).into(),
                        id: (*i).into(),
                        ..Default::default()
                    })
                    .collect(),
            }),
            ..Default::default()
        }
    }

    fn sel(segs: &[(&str, &str)], services: &[&str]) -> MonitorScopeSelector {
        MonitorScopeSelector {
            path_segments: segs
                .iter()
                .map(|(n, i)| PathSegment {
                    name: (*n).into(),
                    id: (*i).into(),
                    ..Default::default()
                })
                .collect(),
            network_services: services.iter().map(|s| (*s).to_string()).collect(),
        }
    }

    #[test]
    fn selectors_match_contiguous_runs_with_wildcards() {
        let c = conn("x", "svc", &[("nsc", "1"), ("fwd", "2"), ("nse", "3")]);
        assert!(matches(&sel(&[], &[]), &c));
        assert!(matches(&sel(&[("fwd", "2")], &[]), &c));
        assert!(matches(&sel(&[("fwd", ""), ("nse", "3")], &[]), &c));
        assert!(matches(&sel(&[("", "1")], &["svc"]), &c));
        assert!(
            !matches(&sel(&[("nsc", "1"), ("nse", "3")], &[]), &c),
            "not contiguous"
        );
        assert!(!matches(&sel(&[("fwd", "9")], &[]), &c));
        assert!(!matches(&sel(&[], &["other"]), &c));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn subscribers_see_initial_state_then_updates_and_deletes() {
        let m = Monitor::new();
        let chain = crate::chain::Chain::new(vec![Arc::new(m.clone())]);
        let req = |c: Connection| NetworkServiceRequest {
            connection: Some(c),
            ..Default::default()
        };
        chain
            .request(req(conn("a", "svc", &[("fwd", "a")])))
            .await
            .unwrap();
        let (initial, mut rx) = m.subscribe(&sel(&[("fwd", "")], &[]));
        assert_eq!(initial.r#type(), ConnectionEventType::InitialStateTransfer);
        assert_eq!(initial.connections.len(), 1);
        chain
            .request(req(conn("b", "svc", &[("fwd", "b")])))
            .await
            .unwrap();
        let e = rx.recv().await.unwrap();
        assert_eq!(
            (e.r#type(), e.connections.contains_key("b")),
            (ConnectionEventType::Update, true)
        );
        chain
            .close(conn("a", "svc", &[("fwd", "a")]))
            .await
            .unwrap();
        let e = rx.recv().await.unwrap();
        assert_eq!(e.r#type(), ConnectionEventType::Delete);
        assert_eq!(e.connections["a"].state(), State::Down);
        m.down("b");
        let e = rx.recv().await.unwrap();
        assert_eq!(
            (e.r#type(), e.connections["b"].state()),
            (ConnectionEventType::Update, State::Down)
        );
    }
}
