//! The state file of each wired connection, so that a restarted vwire takes its connections
//! back instead of tearing them down (issue 14: a restart keeps the datapath).
//!
//! One small JSON file per connection, `<dir>/<tag>.json` (`tag`: the connection's
//! [`super::short_tag`]), written atomically (a temporary file renamed over it) when the
//! connection is wired or refreshed, and removed before it is torn down. A crash at any point
//! leaves either no file (its veths are then garbage: `gc`) or a whole one.
//!
//! What a record holds is what the kernel cannot tell: the connection as this hop returned it
//! (its id, path and expiry, for the refresh and the close that follow), and the names of the
//! two sides' veths. Everything else is read back from the kernel at start (`restore`): a record
//! whose veths are gone, or that is not a KERNEL↔KERNEL cross-connect (a memif session and a
//! tunnel's state do not survive the process), is dropped and its connection rebuilt by its next
//! refresh.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use vwire_proto::connection::Connection;
use vwire_proto::prost::Message as _;

/// The format of the records this version writes.
const VERSION: u32 = 1;

/// Why a record could not be written or read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is not a record of this version.
    #[error("{path}: not a vwire connection record: {why}")]
    Bad { path: PathBuf, why: String },
}

/// A KERNEL side of a recorded connection: the host end (AF_XDP) and the end inside the
/// namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KernelSide {
    pub(crate) host: String,
    pub(crate) iface: String,
}

/// What is recorded of one connection.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Record {
    /// The connection as this hop returned it.
    pub(crate) connection: Connection,
    /// The client's side, then the endpoint's.
    pub(crate) sides: [KernelSide; 2],
}

/// The file's layout.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    id: String,
    /// The protobuf encoding of the connection, base64.
    connection: String,
    sides: [KernelSide; 2],
}

/// Where this instance's records are kept; `None`: nowhere (restarts drop connections).
#[derive(Clone, Debug)]
pub(crate) struct Store {
    dir: Option<PathBuf>,
}

impl Store {
    /// A store in `dir`, created if missing. A directory that cannot be created is logged and
    /// the store keeps nothing: vwire serves, but a restart will not keep its connections.
    pub(crate) fn open(dir: Option<PathBuf>) -> Self {
        let dir = dir.filter(|d| match std::fs::create_dir_all(d) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(dir = %d.display(), "cannot keep connection state ({e}): connections will not survive a restart of vwire");
                false
            }
        });
        Self { dir }
    }

    fn path(dir: &Path, tag: &str) -> PathBuf {
        dir.join(format!("{tag}.json"))
    }

    /// Writes `record` under `tag`, replacing the previous one atomically.
    pub(crate) fn save(&self, tag: &str, record: &Record) -> Result<(), StateError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let file = File {
            version: VERSION,
            id: record.connection.id.clone(),
            connection: base64::engine::general_purpose::STANDARD
                .encode(record.connection.encode_to_vec()),
            sides: record.sides.clone(),
        };
        let text = serde_json::to_vec(&file).map_err(|e| StateError::Bad {
            path: Self::path(dir, tag),
            why: e.to_string(),
        })?;
        let tmp = dir.join(format!(".{tag}.json.tmp"));
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { what, path, source }
        };
        let mut f = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(&text).map_err(io("writing", &tmp))?;
        drop(f);
        let path = Self::path(dir, tag);
        std::fs::rename(&tmp, &path).map_err(io("renaming over", &path))
    }

    /// Removes the record under `tag`, if there is one.
    pub(crate) fn remove(&self, tag: &str) -> Result<(), StateError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let path = Self::path(dir, tag);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::Io {
                what: "removing",
                path,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Every record in the store, each with its tag; a file that cannot be read is removed and
    /// reported as an error (leftover temporary files are removed silently).
    pub(crate) fn load(&self) -> Vec<Result<(String, Record), StateError>> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                return vec![Err(StateError::Io {
                    what: "listing",
                    path: dir.clone(),
                    source: e,
                })]
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(tag) = name.strip_suffix(".json") else {
                continue;
            };
            let read = read(&path).map(|r| (tag.to_string(), r));
            if read.is_err() {
                let _ = std::fs::remove_file(&path);
            }
            out.push(read);
        }
        out
    }

    /// Removes the directory, and its parent, if nothing is left in them (a clean shutdown).
    pub(crate) fn remove_if_empty(&self) {
        if let Some(dir) = &self.dir {
            if std::fs::remove_dir(dir).is_ok() {
                if let Some(parent) = dir.parent() {
                    let _ = std::fs::remove_dir(parent);
                }
            }
        }
    }
}

fn read(path: &Path) -> Result<Record, StateError> {
    let bad = |why: String| StateError::Bad {
        path: path.to_path_buf(),
        why,
    };
    let text = std::fs::read(path).map_err(|source| StateError::Io {
        what: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    let file: File = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    if file.version != VERSION {
        return Err(bad(format!(
            "version {} (this vwire reads {VERSION})",
            file.version
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&file.connection)
        .map_err(|e| bad(format!("connection: {e}")))?;
    let connection =
        Connection::decode(bytes.as_slice()).map_err(|e| bad(format!("connection: {e}")))?;
    if connection.id != file.id {
        return Err(bad(format!(
            "id {:?} differs from the connection's {:?}",
            file.id, connection.id
        )));
    }
    Ok(Record {
        connection,
        sides: file.sides,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record {
            connection: Connection {
                id: id.into(),
                network_service: "svc".into(),
                ..Default::default()
            },
            sides: [
                KernelSide {
                    host: "vwc0".into(),
                    iface: "nsm-1".into(),
                },
                KernelSide {
                    host: "vwe0".into(),
                    iface: "nse-1".into(),
                },
            ],
        }
    }

    fn temp_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "vwire-state-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_saved_record_loads_back_and_goes_when_removed() {
        let dir = temp_dir();
        let store = Store::open(Some(dir.clone()));
        store.save("0000abcd", &record("a")).unwrap();
        store.save("0000abcd", &record("a")).unwrap(); // a refresh replaces it
        let loaded: Vec<_> = store.load().into_iter().map(Result::unwrap).collect();
        assert_eq!(loaded, vec![("0000abcd".to_string(), record("a"))]);
        store.remove("0000abcd").unwrap();
        store.remove("0000abcd").unwrap(); // gone already: fine
        assert!(store.load().is_empty());
        store.remove_if_empty();
        assert!(!dir.exists());
    }

    #[test]
    fn a_bad_file_is_reported_and_removed_and_temporaries_are_swept() {
        let dir = temp_dir();
        let store = Store::open(Some(dir.clone()));
        std::fs::write(dir.join("bad.json"), b"{\"version\": 1}").unwrap();
        std::fs::write(dir.join(".x.json.tmp"), b"half").unwrap();
        let mut wrong = record("a");
        wrong.connection.id = "b".into();
        store.save("1", &wrong).unwrap();
        let text = std::fs::read_to_string(dir.join("1.json")).unwrap();
        std::fs::write(
            dir.join("1.json"),
            text.replace("\"id\":\"b\"", "\"id\":\"c\""),
        )
        .unwrap();
        let loaded = store.load();
        assert_eq!(loaded.len(), 2);
        for r in &loaded {
            let e = r.as_ref().unwrap_err().to_string();
            assert!(e.contains("not a vwire connection record"), "{e}");
        }
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        store.remove_if_empty();
    }

    #[test]
    fn without_a_directory_nothing_is_kept() {
        let store = Store::open(None);
        store.save("1", &record("a")).unwrap();
        assert!(store.load().is_empty());
    }
}
