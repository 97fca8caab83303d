//! metadata: per-connection state for the other elements, kept from the first request to the
//! close.
//!
//! Values are typed: an element stores its own type (for example the interfaces it created) and
//! reads it back on refresh and close. The entry of a connection is created on its first request,
//! dropped when that request fails, and dropped after a close. Place it after begin, so that the
//! id is this hop's and access is serialised per connection.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::Status;
use vwire_proto::connection::Connection;
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::{connection_of, BoxFut, Element, Next};

type Values = HashMap<TypeId, Box<dyn Any + Send>>;

/// Per-connection typed values, shared by the elements that need them.
#[derive(Default)]
pub struct Metadata {
    conns: Mutex<HashMap<String, Values>>,
}

impl Metadata {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Stores `value` for connection `id` (replacing the previous value of that type).
    pub fn set<T: Any + Send>(&self, id: &str, value: T) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns
            .entry(id.to_string())
            .or_default()
            .insert(TypeId::of::<T>(), Box::new(value));
    }

    /// A copy of the value of type `T` for connection `id`.
    pub fn get<T: Any + Send + Clone>(&self, id: &str) -> Option<T> {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns
            .get(id)?
            .get(&TypeId::of::<T>())?
            .downcast_ref::<T>()
            .cloned()
    }

    /// Removes and returns the value of type `T` for connection `id`.
    pub fn take<T: Any + Send>(&self, id: &str) -> Option<T> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let v = conns.get_mut(id)?.remove(&TypeId::of::<T>())?;
        v.downcast::<T>().ok().map(|b| *b)
    }

    /// True if connection `id` has an entry.
    pub fn contains(&self, id: &str) -> bool {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    /// Number of connections with an entry.
    pub fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True if no connection has an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn ensure(&self, id: &str) -> bool {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if conns.contains_key(id) {
            return false;
        }
        conns.insert(id.to_string(), Values::new());
        true
    }

    fn remove(&self, id: &str) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// The metadata element: creates and drops the entries of [`Metadata`].
pub struct MetadataElement {
    store: Arc<Metadata>,
}

impl MetadataElement {
    /// An element over `store`.
    pub fn new(store: Arc<Metadata>) -> Self {
        Self { store }
    }
}

impl Element for MetadataElement {
    fn name(&self) -> &'static str {
        "metadata"
    }

    fn request<'a>(
        &'a self,
        req: NetworkServiceRequest,
        next: Next<'a>,
    ) -> BoxFut<'a, Result<Connection, Status>> {
        Box::pin(async move {
            let id = connection_of(&req)?.id.clone();
            let created = self.store.ensure(&id);
            let result = next.request(req).await;
            if result.is_err() && created {
                self.store.remove(&id);
            }
            result
        })
    }

    fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
        Box::pin(async move {
            let id = conn.id.clone();
            let result = next.close(conn).await;
            self.store.remove(&id);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed_per_connection() {
        let m = Metadata::new();
        m.set("a", 5u32);
        m.set("a", String::from("x"));
        m.set("b", 7u32);
        assert_eq!(m.get::<u32>("a"), Some(5));
        assert_eq!(m.get::<String>("a").as_deref(), Some("x"));
        assert_eq!(m.take::<u32>("b"), Some(7));
        assert_eq!(m.get::<u32>("b"), None);
        assert_eq!(m.get::<u64>("a"), None);
    }
}
