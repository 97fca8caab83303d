//! mechanisms: selects the mechanism of the client-facing link and checks its parameters.
//!
//! If the connection already names a mechanism (a refresh), its type must be supported. Otherwise
//! the first preference whose type vwire supports wins (nsm-forwarder.md "Mechanism selection":
//! the forwarder decides toward the NSC). vwire supports KERNEL and MEMIF locally.
//!
//! Checks, with the field named in the error:
//! - an unknown or unsupported mechanism type, or no supported preference: InvalidArgument;
//! - KERNEL `name` longer than 15 bytes or with `/` or whitespace: InvalidArgument;
//! - KERNEL/MEMIF `inodeURL` naming a namespace file that does not exist: NotFound;
//! - MEMIF without `inodeURL`: InvalidArgument;
//! - `payload` other than "", "ETHERNET" or "IP": InvalidArgument.
//!
//! Place it before the elements that build interfaces.

use tonic::Status;
use vwire_proto::connection::{Connection, Mechanism};
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::{connection_of, BoxFut, Element, Next};

/// Mechanism types vwire can serve toward a client on this node.
pub const SUPPORTED: &[&str] = &["KERNEL", "MEMIF"];

/// The mechanisms element.
#[derive(Default)]
pub struct Mechanisms;

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

/// Picks the mechanism for `conn` from the request.
pub fn select(conn: &Connection, prefs: &[Mechanism]) -> Result<Mechanism, Status> {
    if let Some(m) = conn.mechanism.as_ref().filter(|m| !m.r#type.is_empty()) {
        if !SUPPORTED.contains(&m.r#type.as_str()) {
            return Err(Status::invalid_argument(format!(
                "connection.mechanism.type: {:?} is not supported (vwire serves {SUPPORTED:?})",
                m.r#type
            )));
        }
        check(m)?;
        return Ok(m.clone());
    }
    let Some(m) = prefs
        .iter()
        .find(|m| SUPPORTED.contains(&m.r#type.as_str()))
    else {
        let offered: Vec<&str> = prefs.iter().map(|m| m.r#type.as_str()).collect();
        return Err(Status::invalid_argument(format!(
            "mechanism_preferences: none of {offered:?} is supported (vwire serves {SUPPORTED:?})"
        )));
    };
    check(m)?;
    Ok(m.clone())
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
            let chosen = select(conn, &req.mechanism_preferences)?;
            if let Some(c) = req.connection.as_mut() {
                c.mechanism = Some(chosen);
            }
            next.request(req).await
        })
    }

    fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
        next.close(conn)
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
