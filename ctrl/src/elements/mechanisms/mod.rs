//! mechanisms: selects the mechanism of the client-facing link, checks its parameters, and hands
//! the request to the element of its type.
//!
//! If the connection already names a mechanism (a refresh), its type must be supported. Otherwise
//! the first preference whose type vwire supports wins (nsm-forwarder.md "Mechanism selection":
//! the forwarder decides toward the NSC). As in the NSM sdk's `common/mechanisms`, each type has
//! its own element, and this one is a map from [`MechanismType`] to them: [`kernel`] and
//! [`memif`] always, and, when vwire has an uplink, [`vxlan`] and [`srv6`] from a remote
//! forwarder: those fill in this side's parameters, pick the VNI or allocate the SID, and lower
//! the connection's MTU to what the tunnel allows (see [`crate::remote`]). What a connection
//! allocated is released here on Close, and when a later element fails the first Request.
//!
//! Checks, with the field named in the error:
//! - an unknown or unsupported mechanism type, or no supported preference: InvalidArgument;
//! - the checks of the selected type's element ([`kernel::check`], [`memif::check`]);
//! - an `inodeURL` (of any type) naming a namespace file that does not exist: NotFound;
//! - `payload` other than "", "ETHERNET" or "IP": InvalidArgument.
//!
//! Place it before the elements that build interfaces.

pub mod kernel;
pub mod memif;
pub mod srv6;
pub mod vxlan;

use std::sync::Arc;

use tonic::Status;
use vwire_mechanisms::kernel::netns_url_path;
use vwire_proto::connection::{Connection, Mechanism};
use vwire_proto::mechanism::{keys, MechanismType, Payload};
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::chain::{connection_of, BoxFut, Element, Next};
use crate::remote::Remote;

/// The element of one mechanism type. [`Mechanisms`] runs it on the requests of connections
/// of that type: `check` when it selects the mechanism, then `accept` on the request (with the
/// connection's mechanism set) before passing it to `next`. An element allocates only through
/// [`Remote`], and [`Mechanisms`] releases what it allocated, so it needs no work on the way
/// back up nor on Close.
pub trait MechanismElement: Send + Sync {
    /// The type it serves.
    fn mechanism_type(&self) -> MechanismType;

    /// Checks the parameters a client sent, when the mechanism is selected (before any element
    /// acts on it).
    fn check(&self, _m: &Mechanism) -> Result<(), Status> {
        Ok(())
    }

    /// Completes the request's mechanism with this side's parameters, on the way down.
    fn accept(&self, _req: &mut NetworkServiceRequest) -> Result<(), Status> {
        Ok(())
    }
}

/// The mechanisms element.
pub struct Mechanisms {
    remote: Option<Arc<Remote>>,
    /// The elements of the served types, in the order of [`MechanismType`].
    elements: Vec<Box<dyn MechanismElement>>,
}

impl Default for Mechanisms {
    /// Serving the LOCAL mechanisms only.
    fn default() -> Self {
        Self::with_remote(None)
    }
}

impl Mechanisms {
    /// Serving the REMOTE mechanisms of `remote` too.
    pub fn with_remote(remote: Option<Arc<Remote>>) -> Self {
        let mut elements: Vec<Box<dyn MechanismElement>> =
            vec![Box::new(kernel::Kernel), Box::new(memif::Memif)];
        if let Some(r) = &remote {
            if r.supports(MechanismType::Vxlan) {
                elements.push(Box::new(vxlan::Vxlan::new(r.clone())));
            }
            if r.supports(MechanismType::Srv6) {
                elements.push(Box::new(srv6::Srv6::new(r.clone())));
            }
        }
        Self { remote, elements }
    }

    /// The element of the type named `t`, if vwire serves it.
    fn element(&self, t: &str) -> Option<&dyn MechanismElement> {
        let t: MechanismType = t.parse().ok()?;
        self.elements
            .iter()
            .find(|e| e.mechanism_type() == t)
            .map(|e| &**e)
    }

    fn served(&self) -> Vec<&'static str> {
        self.elements
            .iter()
            .map(|e| e.mechanism_type().as_str())
            .collect()
    }

    /// Picks the mechanism for `conn` from the request.
    pub fn select(&self, conn: &Connection, prefs: &[Mechanism]) -> Result<Mechanism, Status> {
        self.pick(conn, prefs).map(|(_, m)| m.clone())
    }

    /// The mechanism for `conn` and its element, its parameters checked.
    fn pick<'m>(
        &self,
        conn: &'m Connection,
        prefs: &'m [Mechanism],
    ) -> Result<(&dyn MechanismElement, &'m Mechanism), Status> {
        let served = self.served();
        let (e, m) = if let Some(m) = conn.mechanism.as_ref().filter(|m| !m.r#type.is_empty()) {
            let e = self.element(&m.r#type).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "connection.mechanism.type: {:?} is not supported (vwire serves {served:?})",
                    m.r#type
                ))
            })?;
            (e, m)
        } else {
            prefs
                .iter()
                .find_map(|m| self.element(&m.r#type).map(|e| (e, m)))
                .ok_or_else(|| {
                    let offered: Vec<&str> = prefs.iter().map(|m| m.r#type.as_str()).collect();
                    Status::invalid_argument(format!(
                        "mechanism_preferences: none of {offered:?} is supported (vwire serves {served:?})"
                    ))
                })?
        };
        e.check(m)?;
        check_netns(m)?;
        Ok((e, m))
    }
}

/// An `inodeURL` that names a namespace file must name one that exists (`inode://` URLs name
/// a namespace by device and inode, and are resolved when it is opened).
fn check_netns(m: &Mechanism) -> Result<(), Status> {
    match m.parameters.get(keys::INODE_URL).filter(|u| !u.is_empty()) {
        Some(url) if !url.starts_with("inode://") => match netns_url_path(url) {
            Ok(path) if std::path::Path::new(path).exists() => Ok(()),
            Ok(_) => Err(Status::not_found(format!(
                "connection.mechanism.parameters[inodeURL]: namespace {url:?} does not exist"
            ))),
            Err(e) => Err(Status::invalid_argument(format!(
                "connection.mechanism.parameters[inodeURL]: {e}"
            ))),
        },
        _ => Ok(()),
    }
}

/// Picks the mechanism for `conn` from the request, among the local ones.
pub fn select(conn: &Connection, prefs: &[Mechanism]) -> Result<Mechanism, Status> {
    Mechanisms::default().select(conn, prefs)
}

impl Element for Mechanisms {
    fn name(&self) -> &'static str {
        "mechanisms"
    }

    fn request<'a>(
        &'a self,
        mut req: NetworkServiceRequest,
        next: Next<'a>,
    ) -> BoxFut<'a, Result<Connection, Status>> {
        Box::pin(async move {
            let conn = connection_of(&req)?;
            if conn.payload_type().is_err() {
                return Err(Status::invalid_argument(format!(
                    "connection.payload: {:?} is neither {:?} nor {:?}",
                    conn.payload,
                    Payload::Ethernet.as_str(),
                    Payload::Ip.as_str(),
                )));
            }
            let (element, chosen) = self.pick(conn, &req.mechanism_preferences)?;
            let chosen = chosen.clone();
            let id = conn.id.clone();
            // A connection that held nothing before this Request (not a refresh) gives back
            // whatever the Request allocated (in the mechanism's element, in connect or in
            // xconnect) if it fails.
            let new = self.remote.as_ref().filter(|r| !r.holds(&id));
            if let Some(c) = req.connection.as_mut() {
                c.mechanism = Some(chosen);
            }
            let result = match element.accept(&mut req) {
                Ok(()) => next.request(req).await,
                Err(e) => Err(e),
            };
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

/// [`MechanismElement::accept`] of the REMOTE mechanisms, VXLAN and SRV6: `remote` checks the
/// client's half of the request's mechanism and fills in this side's, and lowers the
/// connection's MTU to what the tunnel allows.
fn accept_remote(remote: &Remote, req: &mut NetworkServiceRequest) -> Result<(), Status> {
    let Some(c) = req.connection.as_mut() else {
        return Err(Status::invalid_argument("request.connection: missing"));
    };
    let payload_ip = c.is_ip_payload();
    let Connection {
        id,
        mechanism,
        context,
        ..
    } = c;
    let m = mechanism
        .as_mut()
        .ok_or_else(|| Status::internal("no mechanism selected"))?;
    let ctx = context.get_or_insert_with(Default::default);
    remote.accept(id, m, payload_ip, &mut ctx.mtu).map(|_| ())
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
        for url in ["http://x/ns", "file://relative/ns"] {
            let e = select(&c, &[mech("KERNEL", &[("inodeURL", url)])]).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{url}");
            assert!(
                e.message().starts_with(
                    "connection.mechanism.parameters[inodeURL]: invalid network namespace URL"
                ),
                "{url}: {}",
                e.message()
            );
        }
        let c = Connection {
            mechanism: Some(mech("WIREGUARD", &[])),
            ..Default::default()
        };
        assert!(select(&c, &[])
            .unwrap_err()
            .message()
            .starts_with("connection.mechanism.type"));
    }

    fn remote(srv6: bool) -> Arc<Remote> {
        let cfg = crate::config::RemoteConfig {
            tunnel_ip: Some("10.97.0.2".parse().unwrap()),
            off: false,
            vxlan_port: 4789,
            priority: Vec::new(),
            srv6_locator: srv6.then(|| ("fc00:b::".parse().unwrap(), 48)),
            srv6_host_ip: Some("fd97::2".parse().unwrap()),
        };
        let uplink = crate::remote::Uplink {
            ifname: "up0".into(),
            ifindex: 2,
            tunnel_ip: cfg.tunnel_ip.unwrap(),
            srv6_host_ip: cfg.srv6_host_ip,
            mac: [2, 0, 0, 0, 0, 2],
            mtu: 1500,
        };
        Arc::new(Remote::new(uplink, &cfg))
    }

    #[test]
    fn each_served_type_has_its_element_and_remote_ones_fill_in_their_half() {
        let served = |m: &Mechanisms| m.served().join(",");
        assert_eq!(served(&Mechanisms::default()), "KERNEL,MEMIF");
        assert_eq!(
            served(&Mechanisms::with_remote(Some(remote(false)))),
            "KERNEL,MEMIF,VXLAN"
        );
        let r = remote(true);
        let ms = Mechanisms::with_remote(Some(r.clone()));
        assert_eq!(served(&ms), "KERNEL,MEMIF,VXLAN,SRV6");

        let mut offer = MechanismType::Vxlan.mechanism();
        offer.parameters.insert("src_ip".into(), "10.97.0.1".into());
        let conn = Connection {
            id: "c1".into(),
            ..Default::default()
        };
        let prefs = [mech("VFIO", &[]), offer];
        let (element, chosen) = ms.pick(&conn, &prefs).expect("VXLAN is served");
        assert_eq!(element.mechanism_type(), MechanismType::Vxlan);
        let mut req = NetworkServiceRequest {
            connection: Some(Connection {
                mechanism: Some(chosen.clone()),
                ..conn.clone()
            }),
            ..Default::default()
        };
        element.accept(&mut req).unwrap();
        let c = req.connection.unwrap();
        let m = c.mechanism.unwrap();
        assert_eq!(
            m.vxlan().ip(vwire_proto::mechanism::End::Dst),
            Ok("10.97.0.2".parse().unwrap())
        );
        assert!(m.vxlan().vni().is_ok());
        assert_eq!(c.context.unwrap().mtu, 1446);
        assert!(r.holds("c1"));

        // A malformed client half is InvalidArgument naming the key, from the element.
        let mut bad = MechanismType::Srv6.mechanism();
        bad.parameters
            .insert("src_host_ip".into(), "10.0.0.1".into());
        let (element, chosen) = ms.pick(&conn, std::slice::from_ref(&bad)).unwrap();
        let mut req = NetworkServiceRequest {
            connection: Some(Connection {
                mechanism: Some(chosen.clone()),
                ..conn.clone()
            }),
            ..Default::default()
        };
        let e = element.accept(&mut req).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message()
                .starts_with("connection.mechanism.parameters[src_host_ip]"),
            "{e}"
        );
    }
}
