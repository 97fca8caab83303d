//! The NSM `updatepath` rules for a server hop (nsm-api.md §6): find or add the hop's own path
//! segment, switch `connection.id` to the hop's own id, and restore the caller's view on return.

use tonic::Status;
use vwire_proto::connection::{Connection, Path, PathSegment};

/// The caller's path index, to restore with [`restore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallerIndex(pub u32);

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Applies updatepath for hop `name` to `conn`: afterwards `conn.path.index` points at this hop's
/// segment and `conn.id` is this hop's id. Returns the caller's index.
pub fn update_path(conn: &mut Connection, name: &str) -> Result<CallerIndex, Status> {
    let path = conn.path.get_or_insert_with(Path::default);
    if path.path_segments.is_empty() {
        if conn.id.is_empty() {
            conn.id = new_id();
        }
        path.index = 0;
        path.path_segments.push(PathSegment {
            name: name.to_string(),
            id: conn.id.clone(),
            ..Default::default()
        });
        return Ok(CallerIndex(0));
    }
    let index = path.index as usize;
    let Some(cur) = path.path_segments.get(index) else {
        return Err(Status::invalid_argument(format!(
            "connection.path.index {} is out of range ({} path segments)",
            path.index,
            path.path_segments.len()
        )));
    };
    if cur.name == name {
        // A refresh or heal of our own segment.
        conn.id = cur.id.clone();
        return Ok(CallerIndex(path.index));
    }
    if cur.id != conn.id {
        return Err(Status::invalid_argument(format!(
            "connection.id {:?} differs from connection.path.path_segments[{index}].id {:?}",
            conn.id, cur.id
        )));
    }
    let caller = CallerIndex(path.index);
    let next = index + 1;
    match path.path_segments.get_mut(next) {
        Some(seg) if seg.name == name => {}
        Some(seg) => {
            *seg = PathSegment {
                name: name.to_string(),
                id: new_id(),
                ..Default::default()
            };
        }
        None => path.path_segments.push(PathSegment {
            name: name.to_string(),
            id: new_id(),
            ..Default::default()
        }),
    }
    path.index += 1;
    conn.id = path.path_segments[next].id.clone();
    Ok(caller)
}

/// Restores the caller's index and id on a connection that [`update_path`] changed.
pub fn restore(conn: &mut Connection, caller: CallerIndex) {
    if let Some(path) = conn.path.as_mut() {
        path.index = caller.0;
        if let Some(seg) = path.path_segments.get(caller.0 as usize) {
            conn.id = seg.id.clone();
        }
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
    fn appends_then_reuses_own_segment() {
        let mut c = conn("c1", 0, vec![seg("nsc", "c1")]);
        let caller = update_path(&mut c, "nse").unwrap();
        let p = c.path.clone().unwrap();
        assert_eq!(p.index, 1);
        assert_eq!(p.path_segments.len(), 2);
        assert_eq!(p.path_segments[1].name, "nse");
        let own = c.id.clone();
        assert_eq!(own, p.path_segments[1].id);
        restore(&mut c, caller);
        assert_eq!((c.id.as_str(), c.path.as_ref().unwrap().index), ("c1", 0));

        // The refresh carries the whole path back: our id is kept.
        let caller = update_path(&mut c, "nse").unwrap();
        assert_eq!(c.id, own);
        restore(&mut c, caller);
        assert_eq!(c.id, "c1");
    }

    #[test]
    fn empty_path_foreign_segment_and_errors() {
        let mut c = Connection::default();
        update_path(&mut c, "nse").unwrap();
        assert!(!c.id.is_empty());
        assert_eq!(c.path.as_ref().unwrap().path_segments[0].name, "nse");

        let mut c = conn("c1", 0, vec![seg("nsc", "c1"), seg("other", "o")]);
        update_path(&mut c, "nse").unwrap();
        let p = c.path.as_ref().unwrap();
        assert_eq!(p.path_segments[1].name, "nse");
        assert_ne!(p.path_segments[1].id, "o");

        let mut c = conn("wrong", 0, vec![seg("nsc", "c1")]);
        assert_eq!(
            update_path(&mut c, "nse").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let mut c = conn("c1", 3, vec![seg("nsc", "c1")]);
        assert!(update_path(&mut c, "nse").is_err());
    }
}
