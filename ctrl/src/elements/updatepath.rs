//! updatepath: adds or selects this hop's path segment (nsm-api.md §6).
//!
//! With this hop named `N`, on a request:
//! 1. An empty path: index 0; an empty connection id gets a new UUID; append `{N, id}`.
//! 2. `segments[index].name == N`: a refresh of our own segment; the connection id becomes its id.
//! 3. Otherwise the caller's segment must carry the connection id (else InvalidArgument), and the
//!    index moves to the next segment: reused if it is named `N`, renamed with a new id if it is
//!    named otherwise, appended if absent. The connection id becomes that segment's id.
//!
//! On the way back up the caller's index and id are restored; the path keeps our segment. Close
//! runs the same selection, so later elements see this hop's id. Place it first.

use tonic::Status;
use vwire_proto::connection::{Connection, Path, PathSegment};
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::{connection_of, BoxFut, Element, Next};

/// The updatepath element.
pub struct UpdatePath {
    name: String,
}

impl UpdatePath {
    /// This hop is called `name` (NSM_NAME).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
        }
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Applies the rules to `conn`; returns the caller's (index, id) to restore with [`restore`].
pub fn select(name: &str, conn: &mut Connection) -> Result<(u32, String), Status> {
    let path = conn.path.get_or_insert_with(Path::default);
    let caller = (path.index, conn.id.clone());
    if path.path_segments.is_empty() {
        path.index = 0;
        if conn.id.is_empty() {
            conn.id = new_id();
        }
        path.path_segments.push(PathSegment {
            name: name.to_string(),
            id: conn.id.clone(),
            ..Default::default()
        });
        return Ok(caller);
    }
    let index = usize::try_from(path.index).unwrap_or(usize::MAX);
    let Some(current) = path.path_segments.get(index) else {
        return Err(Status::invalid_argument(format!(
            "connection.path.index: {index} is beyond the {} path segments",
            path.path_segments.len()
        )));
    };
    if current.name == name {
        conn.id = current.id.clone();
        return Ok(caller);
    }
    if current.id != conn.id {
        return Err(Status::invalid_argument(format!(
            "connection.id: {:?} does not match the id {:?} of path segment {index} ({:?})",
            conn.id, current.id, current.name
        )));
    }
    let next = index + 1;
    match path.path_segments.get_mut(next) {
        Some(seg) if seg.name == name => {}
        Some(seg) => {
            seg.name = name.to_string();
            seg.id = new_id();
        }
        None => path.path_segments.push(PathSegment {
            name: name.to_string(),
            id: new_id(),
            ..Default::default()
        }),
    }
    path.index =
        u32::try_from(next).map_err(|_| Status::invalid_argument("connection.path: too long"))?;
    conn.id = path.path_segments[next].id.clone();
    Ok(caller)
}

/// Puts back the caller's index and id that [`select`] returned.
pub fn restore(conn: &mut Connection, (index, id): (u32, String)) {
    if let Some(p) = conn.path.as_mut() {
        p.index = index;
    }
    conn.id = id;
}

impl Element for UpdatePath {
    fn name(&self) -> &'static str {
        "updatepath"
    }

    fn request<'a>(
        &'a self,
        mut req: NetworkServiceRequest,
        next: Next<'a>,
    ) -> BoxFut<'a, Result<Connection, Status>> {
        Box::pin(async move {
            connection_of(&req)?;
            let conn = req.connection.get_or_insert_with(Connection::default);
            let caller = select(&self.name, conn)?;
            let mut out = next.request(req).await?;
            restore(&mut out, caller);
            Ok(out)
        })
    }

    fn close<'a>(&'a self, mut conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
        Box::pin(async move {
            select(&self.name, &mut conn)?;
            next.close(conn).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn an_empty_path_gets_our_segment() {
        let mut c = Connection::default();
        select("fwd", &mut c).unwrap();
        let p = c.path.unwrap();
        assert_eq!(p.path_segments.len(), 1);
        assert_eq!(p.path_segments[0].name, "fwd");
        assert_eq!(p.path_segments[0].id, c.id);
        assert_eq!(c.id.len(), 36, "a UUID");
    }

    #[test]
    fn the_next_segment_is_appended_renamed_or_reused() {
        let mut c = conn("nsc-id", 0, vec![seg("nsc", "nsc-id")]);
        let caller = select("fwd", &mut c).unwrap();
        assert_eq!(caller, (0, "nsc-id".to_string()));
        let p = c.path.as_ref().unwrap();
        assert_eq!((p.index, p.path_segments.len()), (1, 2));
        assert_eq!(c.id, p.path_segments[1].id);

        let mut renamed = conn("nsc-id", 0, vec![seg("nsc", "nsc-id"), seg("other", "old")]);
        select("fwd", &mut renamed).unwrap();
        let s = &renamed.path.as_ref().unwrap().path_segments[1];
        assert_eq!(s.name, "fwd");
        assert_ne!(s.id, "old");

        let mut reused = conn("nsc-id", 0, vec![seg("nsc", "nsc-id"), seg("fwd", "mine")]);
        select("fwd", &mut reused).unwrap();
        assert_eq!(reused.id, "mine");
    }

    #[test]
    fn a_refresh_selects_our_own_segment() {
        let mut c = conn("whatever", 1, vec![seg("nsc", "a"), seg("fwd", "mine")]);
        select("fwd", &mut c).unwrap();
        assert_eq!(c.id, "mine");
        assert_eq!(c.path.unwrap().index, 1);
    }

    #[test]
    fn a_mismatched_id_or_index_is_refused() {
        let mut c = conn("wrong", 0, vec![seg("nsc", "a")]);
        let e = select("fwd", &mut c).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("connection.id"));
        let mut c = conn("a", 5, vec![seg("nsc", "a")]);
        assert!(select("fwd", &mut c)
            .unwrap_err()
            .message()
            .starts_with("connection.path.index"));
    }
}
