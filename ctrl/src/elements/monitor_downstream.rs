//! monitor_downstream: passthrough monitoring of the next hop (the sdk `monitor` client).
//!
//! For each established connection, after its Request succeeded, vwire subscribes to the next
//! hop's `MonitorConnections` over the channel [`crate::elements::connect`] used
//! ([`NextHop`]), with the selector `[{name, id}]` of the next hop's own path segment in the
//! connection it returned ([`Downstream`]): exactly that hop's connection (its id keys the
//! events). The next hop's events for it are relayed upstream through [`Monitor`]:
//!
//! - UPDATE (a context change, a DOWN or REFRESH_REQUESTED state set by the endpoint): the state,
//!   the context and the path segments after this hop's are put into vwire's own view of the
//!   connection (its id, its path index, its segments up to its own, its upstream mechanism stay)
//!   and broadcast as an UPDATE. The INITIAL_STATE_TRANSFER is relayed the same way only if it
//!   holds the connection in a state other than UP (otherwise it says nothing new).
//! - DELETE, or the stream failing or ending (the next hop is gone): vwire's connection goes
//!   DOWN ([`Monitor::down`]), an UPDATE with state DOWN, as soon as the stream reports it (for a
//!   process that dies, its socket closes at once, well within 1 s). The subscription then ends;
//!   the next successful refresh starts a new one.
//! - A next hop that does not serve `connection.MonitorConnection` (Unimplemented) is logged
//!   once for the connection, and nothing is relayed: its connection is not marked DOWN for it.
//!
//! One subscription per connection, not one per next-hop channel multiplexed: every stream is one
//! HTTP/2 stream on the shared channel anyway (no socket or connection per subscription), the
//! next hop filters by the selector so only this connection's events cross, and a failure of the
//! stream maps to exactly one connection without any bookkeeping. A refresh keeps the running
//! subscription if the next hop (name and its segment id) is unchanged and the stream is still
//! up, and replaces it otherwise. Close ends it *before* the close goes down (so the next hop's
//! own DELETE for it is not relayed as a DOWN); the task holds no strong reference to the
//! element, and aborting it at close (or at shutdown, where every connection is closed) is the
//! only way it ends besides the stream ending.
//!
//! Place it after monitor (it reports through it) and before connect (it starts after connect
//! stored [`NextHop`] and [`Downstream`], and it must stop before connect closes the next hop).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tonic::{Code, Status};
use vwire_proto::connection::monitor_connection_client::MonitorConnectionClient;
use vwire_proto::connection::{
    Connection, ConnectionEvent, ConnectionEventType, MonitorScopeSelector, PathSegment, State,
};
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::{BoxFut, Element, Next};
use crate::elements::connect::{Downstream, NextHop};
use crate::elements::metadata::Metadata;
use crate::elements::monitor::Monitor;

/// One running subscription.
struct Follow {
    /// The next hop's name and its segment id: a refresh with another one replaces the task.
    key: (String, String),
    task: JoinHandle<()>,
}

/// The monitor_downstream element.
pub struct MonitorDownstream {
    monitor: Arc<Monitor>,
    metadata: Arc<Metadata>,
    follows: Mutex<HashMap<String, Follow>>,
}

/// What an event of the next hop means for the followed connection.
#[derive(Debug, PartialEq)]
enum Action<'e> {
    /// Nothing for us (another connection, or an initial state with it UP).
    Ignore,
    /// Put the next hop's connection into ours and broadcast it.
    Reflect(&'e Connection),
    /// The next hop closed it.
    Deleted,
}

/// Classifies `ev` for the next hop's connection `theirs` (its id at the next hop).
fn classify<'e>(ev: &'e ConnectionEvent, theirs: &str) -> Action<'e> {
    let Some(c) = ev.connections.get(theirs) else {
        return Action::Ignore;
    };
    match ev.r#type() {
        ConnectionEventType::Delete => Action::Deleted,
        ConnectionEventType::Update => Action::Reflect(c),
        ConnectionEventType::InitialStateTransfer if c.state() != State::Up => Action::Reflect(c),
        ConnectionEventType::InitialStateTransfer => Action::Ignore,
    }
}

/// Puts the next hop's view `theirs` into ours: state, context, and the path segments after
/// ours; our id, index, segments up to ours, and mechanism are kept.
fn reflect(mine: &mut Connection, theirs: &Connection) {
    mine.state = theirs.state;
    if theirs.context.is_some() {
        mine.context = theirs.context.clone();
    }
    if let (Some(my_path), Some(their_path)) = (mine.path.as_mut(), theirs.path.as_ref()) {
        let keep = usize::try_from(my_path.index).unwrap_or(usize::MAX);
        if keep < my_path.path_segments.len() && keep < their_path.path_segments.len() {
            my_path.path_segments.truncate(keep + 1);
            my_path
                .path_segments
                .extend_from_slice(&their_path.path_segments[keep + 1..]);
        }
    }
}

/// The next hop's own segment in the connection it returned: the one after ours (its index is
/// ours, as the next hop restored it). Without one, our own segment (the sdk's choice; it is in
/// the next hop's path too).
fn their_segment(down: &Connection) -> Option<PathSegment> {
    let path = down.path.as_ref()?;
    let ours = usize::try_from(path.index).ok()?;
    let seg = path
        .path_segments
        .get(ours + 1)
        .or(path.path_segments.get(ours))?;
    Some(PathSegment {
        name: seg.name.clone(),
        id: seg.id.clone(),
        ..Default::default()
    })
}

/// Follows the next hop's events for our connection `id` until the stream ends, then marks it
/// DOWN.
async fn follow(monitor: Arc<Monitor>, id: String, hop: NextHop, seg: PathSegment) {
    let sel = MonitorScopeSelector {
        path_segments: vec![seg.clone()],
        ..Default::default()
    };
    let mut client = MonitorConnectionClient::new(hop.channel.clone());
    let subscribed = match hop.call(sel) {
        Ok(call) => client.monitor_connections(call).await,
        Err(s) => Err(s),
    };
    let why = match subscribed {
        Err(s) if s.code() == Code::Unimplemented => {
            tracing::info!(%id, next_hop = %hop.name,
                "the next hop does not serve MonitorConnections: its events are not relayed");
            return;
        }
        Err(s) => format!(
            "cannot subscribe to its MonitorConnections: {}",
            s.message()
        ),
        Ok(r) => {
            let mut stream = r.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(ev)) => match classify(&ev, &seg.id) {
                        Action::Ignore => {}
                        Action::Reflect(theirs) => {
                            tracing::debug!(%id, next_hop = %hop.name, state = ?theirs.state(),
                                "relaying the next hop's update");
                            monitor.relay(&id, |mine| reflect(mine, theirs));
                        }
                        Action::Deleted => break "it deleted the connection".to_string(),
                    },
                    Ok(None) => break "its monitor stream ended".to_string(),
                    Err(s) => break format!("its monitor stream failed: {}", s.message()),
                }
            }
        }
    };
    tracing::warn!(%id, next_hop = %hop.name, "next hop: {why}; the connection is DOWN");
    monitor.down(&id);
}

impl MonitorDownstream {
    /// An element that relays through `monitor` the next hops found in `metadata`.
    pub fn new(monitor: Arc<Monitor>, metadata: Arc<Metadata>) -> Self {
        Self {
            monitor,
            metadata,
            follows: Mutex::new(HashMap::new()),
        }
    }

    /// Connections with a running subscription.
    pub fn following(&self) -> usize {
        self.follows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|f| !f.task.is_finished())
            .count()
    }

    /// Starts (or keeps, or replaces) the subscription of connection `id`.
    fn start(&self, id: &str) {
        let hop = self.metadata.get::<NextHop>(id);
        let seg = self
            .metadata
            .get::<Downstream>(id)
            .and_then(|d| their_segment(&d.0));
        let (Some(hop), Some(seg)) = (hop, seg) else {
            self.stop(id); // no next hop to follow (any more)
            return;
        };
        let key = (hop.name.clone(), seg.id.clone());
        let mut follows = self.follows.lock().unwrap_or_else(|e| e.into_inner());
        if follows
            .get(id)
            .is_some_and(|f| f.key == key && !f.task.is_finished())
        {
            return;
        }
        let task = tokio::spawn(follow(self.monitor.clone(), id.to_string(), hop, seg));
        if let Some(old) = follows.insert(id.to_string(), Follow { key, task }) {
            old.task.abort();
        }
    }

    fn stop(&self, id: &str) {
        if let Some(f) = self
            .follows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
        {
            f.task.abort();
        }
    }
}

impl Drop for MonitorDownstream {
    fn drop(&mut self) {
        for f in self
            .follows
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            f.task.abort();
        }
    }
}

impl Element for MonitorDownstream {
    fn name(&self) -> &'static str {
        "monitor_downstream"
    }

    fn request<'a>(
        &'a self,
        req: NetworkServiceRequest,
        next: Next<'a>,
    ) -> BoxFut<'a, Result<Connection, Status>> {
        Box::pin(async move {
            let c = next.request(req).await?;
            self.start(&c.id);
            Ok(c)
        })
    }

    fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
        Box::pin(async move {
            self.stop(&conn.id);
            next.close(conn).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vwire_proto::connection::Path;
    use vwire_proto::connectioncontext::ConnectionContext;

    fn seg(name: &str, id: &str) -> PathSegment {
        PathSegment {
            name: name.into(),
            id: id.into(),
            ..Default::default()
        }
    }

    fn conn(id: &str, index: u32, segs: Vec<PathSegment>) -> Connection {
        Connection {
            id: id.into(),
            path: Some(Path {
                index,
                path_segments: segs,
            }),
            ..Default::default()
        }
    }

    fn ev(kind: ConnectionEventType, c: Connection) -> ConnectionEvent {
        let mut e = ConnectionEvent {
            connections: [(c.id.clone(), c)].into(),
            ..Default::default()
        };
        e.set_type(kind);
        e
    }

    #[test]
    fn events_of_the_next_hops_connection_are_classified() {
        let mut theirs = conn(
            "e",
            2,
            vec![seg("nsc", "c"), seg("fwd", "f"), seg("nse", "e")],
        );
        assert_eq!(
            classify(
                &ev(ConnectionEventType::InitialStateTransfer, theirs.clone()),
                "e"
            ),
            Action::Ignore,
            "an initial UP state says nothing new"
        );
        assert_eq!(
            classify(&ev(ConnectionEventType::Update, theirs.clone()), "other"),
            Action::Ignore
        );
        assert_eq!(
            classify(&ev(ConnectionEventType::Delete, theirs.clone()), "e"),
            Action::Deleted
        );
        theirs.set_state(State::RefreshRequested);
        assert_eq!(
            classify(
                &ev(ConnectionEventType::InitialStateTransfer, theirs.clone()),
                "e"
            ),
            Action::Reflect(&theirs)
        );
        assert_eq!(
            classify(&ev(ConnectionEventType::Update, theirs.clone()), "e"),
            Action::Reflect(&theirs)
        );
    }

    #[test]
    fn a_relayed_update_keeps_our_view() {
        let mut up_seg = seg("fwd", "f");
        up_seg
            .metrics
            .insert("server_interface".into(), "KERNEL/x".into());
        let mut mine = conn("f", 1, vec![seg("nsc", "c"), up_seg.clone()]);
        mine.mechanism = Some(Default::default());
        let mut theirs = conn(
            "e",
            2,
            vec![seg("nsc", "c"), seg("fwd", "f"), seg("nse", "e2")],
        );
        theirs.set_state(State::Down);
        theirs.context = Some(ConnectionContext {
            mtu: 1400,
            ..Default::default()
        });
        reflect(&mut mine, &theirs);
        assert_eq!(mine.id, "f");
        assert_eq!(mine.state(), State::Down);
        assert_eq!(mine.context.as_ref().map(|c| c.mtu), Some(1400));
        assert!(mine.mechanism.is_some());
        let path = mine.path.unwrap();
        assert_eq!(path.index, 1);
        assert_eq!(
            path.path_segments,
            vec![seg("nsc", "c"), up_seg, seg("nse", "e2")]
        );
    }

    #[test]
    fn the_selector_is_the_next_hops_segment() {
        let down = conn(
            "f",
            1,
            vec![seg("nsc", "c"), seg("fwd", "f"), seg("nse", "e")],
        );
        assert_eq!(their_segment(&down), Some(seg("nse", "e")));
        let short = conn("f", 1, vec![seg("nsc", "c"), seg("fwd", "f")]);
        assert_eq!(their_segment(&short), Some(seg("fwd", "f")));
        assert_eq!(their_segment(&Connection::default()), None);
    }
}
