//! mechanisms: selects the mechanism of the client-facing link and checks its parameters.
//!
//! If the connection already names a mechanism (a refresh), its type must be supported. Otherwise
//! the first preference whose type vwire supports wins (nsm-forwarder.md "Mechanism selection":
//! the forwarder decides toward the NSC). vwire supports KERNEL and MEMIF locally, and, when it
//! has an uplink, VXLAN and SRV6 from a remote forwarder: for those it fills in this side's
//! parameters, picks the VNI or allocates the SID, and lowers the connection's MTU to what the
//! tunnel allows (see [`crate::remote`]). What it allocated is released on Close, and when a
//! later element fails the first Request.
//!
//! Checks, with the field named in the error:
//! - an unknown or unsupported mechanism type, or no supported preference: InvalidArgument;
//! - KERNEL `name` longer than 15 bytes or with `/` or whitespace: InvalidArgument;
//! - KERNEL/MEMIF `inodeURL` naming a namespace file that does not exist: NotFound;
//! - MEMIF without `inodeURL`: InvalidArgument;
//! - `payload` other than "", "ETHERNET" or "IP": InvalidArgument.
//!
//! Place it before the elements that build interfaces.

use std::sync::Arc;

use tonic::Status;
use vwire_proto::connection::{Connection, Mechanism};
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::{connection_of, BoxFut, Element, Next};
use crate::remote::Remote;

/// Mechanism types vwire can serve toward a client on this node.
pub const SUPPORTED: &[&str] = &["KERNEL", "MEMIF"];

/// The mechanisms element.
#[derive(Default)]
pub struct Mechanisms {
    remote: Option<Arc<Remote>>,
}

impl Mechanisms {
    /// Serving the REMOTE mechanisms of `remote` too.
    pub fn with_remote(remote: Option<Arc<Remote>>) -> Self {
        Self { remote }
    }

    fn supported(&self, t: &str) -> bool {
        SUPPORTED.contains(&t) || self.remote.as_ref().is_some_and(|r| r.supports(t))
    }

    fn served(&self) -> Vec<&'static str> {
        let mut v = SUPPORTED.to_vec();
        for t in ["VXLAN", "SRV6"] {
            if self.supported(t) {
                v.push(t);
            }
        }
        v
    }
}

/// The namespace file an `inodeURL` names: `file:///proc/<pid>/ns/net`, `file:///var/run/netns/x`,
/// or a plain path.
pub fn netns_path(url: &str) -> &str {
    url.strip_prefix("file://").unwrap_or(url)
}

/// Checks the parameters of a supported mechanism.
pub fn check(m: &Mechanism) -> Result<(), Status> {
    let param = |k: &str| m.parameters.get(k).map(String::as_str).unwrap_or("");
    if m.r#type == "KERNEL" {
        let name = param("name");
        if name.len() > 15 || name.contains('/') || name.chars().any(char::is_whitespace) {
            return Err(Status::invalid_argument(format!(
                "connection.mechanism.parameters[name]: {name:?} is not a valid interface name (at most 15 bytes, no '/' or spaces)"
            )));
        }
    }
    let url = param("inodeURL");
    if m.r#type == "MEMIF" && url.is_empty() {
        return Err(Status::invalid_argument(
            "connection.mechanism.parameters[inodeURL]: MEMIF needs the client's network namespace (its memif socket is created there)",
        ));
    }
    if !url.is_empty()
        && !url.starts_with("inode://")
        && !std::path::Path::new(netns_path(url)).exists()
    {
        return Err(Status::not_found(format!(
            "connection.mechanism.parameters[inodeURL]: namespace {url:?} does not exist"
        )));
    }
    Ok(())
}

/// Picks the mechanism for `conn` from the request, among the local ones.
pub fn select(conn: &Connection, prefs: &[Mechanism]) -> Result<Mechanism, Status> {
    Mechanisms::default().select(conn, prefs)
}

impl Mechanisms {
    /// Picks the mechanism for `conn` from the request.
    pub fn select(&self, conn: &Connection, prefs: &[Mechanism]) -> Result<Mechanism, Status> {
        let served = self.served();
        if let Some(m) = conn.mechanism.as_ref().filter(|m| !m.r#type.is_empty()) {
            if !self.supported(&m.r#type) {
                return Err(Status::invalid_argument(format!(
                    "connection.mechanism.type: {:?} is not supported (vwire serves {served:?})",
                    m.r#type
                )));
            }
            check(m)?;
            return Ok(m.clone());
        }
        let Some(m) = prefs.iter().find(|m| self.supported(&m.r#type)) else {
            let offered: Vec<&str> = prefs.iter().map(|m| m.r#type.as_str()).collect();
            return Err(Status::invalid_argument(format!(
                "mechanism_preferences: none of {offered:?} is supported (vwire serves {served:?})"
            )));
        };
        check(m)?;
        Ok(m.clone())
    }
}

impl Element for Mechanisms {
    fn request<'a>(
        &'a self,
        mut req: NetworkServiceRequest,
        next: Next<'a>,
    ) -> BoxFut<'a, Result<Connection, Status>> {
        Box::pin(async move {
            let conn = connection_of(&req)?;
            if !matches!(conn.payload.as_str(), "" | "ETHERNET" | "IP") {
                return Err(Status::invalid_argument(format!(
                    "connection.payload: {:?} is neither \"ETHERNET\" nor \"IP\"",
                    conn.payload
                )));
            }
            let mut chosen = self.select(conn, &req.mechanism_preferences)?;
            let id = conn.id.clone();
            let payload_ip = conn.payload == "IP";
            let remote = match (&self.remote, chosen.r#type.as_str()) {
                (Some(r), "VXLAN" | "SRV6") => Some(r),
                _ => None,
            };
            // A connection that held nothing before this Request (not a refresh) gives back
            // whatever the Request allocated (here, in connect or in xconnect) if it fails.
            let new = self.remote.as_ref().filter(|r| !r.holds(&id));
            if let Some(c) = req.connection.as_mut() {
                if let Some(r) = remote {
                    let ctx = c.context.get_or_insert_with(Default::default);
                    if let Err(e) = r.accept(&id, &mut chosen, payload_ip, &mut ctx.mtu) {
                        if let Some(r) = new {
                            r.release(&id);
                        }
                        return Err(e);
                    }
                }
                c.mechanism = Some(chosen);
            }
            let result = next.request(req).await;
            if let (Err(_), Some(r)) = (&result, new) {
                r.release(&id);
            }
            result
        })
    }

    fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
        Box::pin(async move {
            let id = conn.id.clone();
            let result = next.close(conn).await;
            if let Some(r) = &self.remote {
                r.release(&id);
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mech(t: &str, params: &[(&str, &str)]) -> Mechanism {
        Mechanism {
            cls: "LOCAL".into(),
            r#type: t.into(),
            parameters: params
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    #[test]
    fn the_first_supported_preference_wins() {
        let c = Connection::default();
        let m = select(
            &c,
            &[
                mech("VFIO", &[]),
                mech("MEMIF", &[("inodeURL", "file:///proc/self/ns/net")]),
                mech("KERNEL", &[]),
            ],
        )
        .unwrap();
        assert_eq!(m.r#type, "MEMIF");
        let e = select(&c, &[mech("MEMIF", &[])]).unwrap_err();
        assert!(e
            .message()
            .starts_with("connection.mechanism.parameters[inodeURL]"));
        let e = select(&c, &[mech("VFIO", &[])]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("mechanism_preferences"));
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let c = Connection::default();
        let e = select(&c, &[mech("KERNEL", &[("name", "a-very-long-interface")])]).unwrap_err();
        assert!(e
            .message()
            .starts_with("connection.mechanism.parameters[name]"));
        let e = select(
            &c,
            &[mech(
                "KERNEL",
                &[("inodeURL", "file:///proc/999999999/ns/net")],
            )],
        )
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        let c = Connection {
            mechanism: Some(mech("WIREGUARD", &[])),
            ..Default::default()
        };
        assert!(select(&c, &[])
            .unwrap_err()
            .message()
            .starts_with("connection.mechanism.type"));
    }
}
