//! `[[xconnect]]`: L2 cross-connects between two ports, both directions.

use std::collections::HashMap;

use super::de::section;
use super::{ConfigError, Ctx};

section! {
    /// `[[xconnect]]`.
    pub(super) struct XconnectSection {
        /// One port's name.
        a: String,
        /// The other port's name.
        b: String,
    }
}

/// Validates the `[[xconnect]]` entries against the ports' indices `by_name`: each port is in
/// at most one cross-connect, and never with itself.
pub(super) fn validate(
    ctx: &Ctx,
    entries: Vec<XconnectSection>,
    by_name: &HashMap<String, usize>,
) -> Result<Vec<(usize, usize)>, ConfigError> {
    let mut xconnects = Vec::new();
    // Port → the cross-connect that uses it.
    let mut connected: HashMap<usize, usize> = HashMap::new();
    for (i, x) in entries.into_iter().enumerate() {
        let path = format!("xconnect[{i}]");
        let mut ends = [0usize; 2];
        for (end, (key, name)) in ends.iter_mut().zip([("a", &x.a), ("b", &x.b)]) {
            *end = *by_name.get(name).ok_or_else(|| {
                ctx.err(
                    &format!("{path}.{key}"),
                    format!("no port is named {name:?}"),
                )
            })?;
            if let Some(j) = connected.get(end) {
                return Err(ctx.err(
                    &format!("{path}.{key}"),
                    format!("port {name:?} is already cross-connected by xconnect[{j}]"),
                ));
            }
        }
        if ends[0] == ends[1] {
            return Err(ctx.err(
                &format!("{path}.b"),
                "a port cannot be cross-connected to itself",
            ));
        }
        connected.insert(ends[0], i);
        connected.insert(ends[1], i);
        xconnects.push((ends[0], ends[1]));
    }
    Ok(xconnects)
}
