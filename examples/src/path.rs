//! The NSM `updatepath` rules for a server hop (nsm-api.md §6), as vwire's own chain applies
//! them (`vwire::elements::updatepath`): find or add the hop's own path segment, switch
//! `connection.id` to the hop's own id, and restore the caller's view on return.

use tonic::Status;
use vwire_proto::connection::Connection;

/// The caller's path index and connection id, to restore with [`restore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerIndex(pub u32, pub String);

/// Applies updatepath for hop `name` to `conn`: afterwards `conn.path.index` points at this hop's
/// segment and `conn.id` is this hop's id. Returns the caller's index and id.
pub fn update_path(conn: &mut Connection, name: &str) -> Result<CallerIndex, Status> {
    let (index, id) = vwire::elements::updatepath::select(name, conn)?;
    Ok(CallerIndex(index, id))
}

/// Restores the caller's index and id on a connection that [`update_path`] changed.
pub fn restore(conn: &mut Connection, caller: CallerIndex) {
    vwire::elements::updatepath::restore(conn, (caller.0, caller.1));
}

#[cfg(test)]
mod tests {
    use super::*;
    use vwire_proto::connection::{Path, PathSegment};

    #[test]
    fn the_endpoint_appends_its_segment_and_restores_the_callers_view() {
        let mut c = Connection {
            id: "c1".into(),
            path: Some(Path {
                index: 0,
                path_segments: vec![PathSegment {
                    name: "nsc".into(),
                    id: "c1".into(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        };
        let caller = update_path(&mut c, "nse").unwrap();
        assert_eq!(c.path.as_ref().unwrap().index, 1);
        assert_ne!(c.id, "c1");
        restore(&mut c, caller);
        assert_eq!((c.path.as_ref().unwrap().index, c.id.as_str()), (0, "c1"));
    }
}
