//! The client behind `vwire-nsc`: its command line, the request it sends, its refresh timing, and
//! (with `--mechanism memif`) the memif interface it runs on the socket the forwarder returns.
//! That interface keeps to the MTU in the returned connection's context, as a kernel interface
//! would (see [`crate::memif_app`]). A refresh that returns another MTU changes it in place.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use clap::{Parser, ValueEnum};
use vwire_proto::connection::{Connection, Mechanism, Path, PathSegment};
use vwire_proto::mechanism::MechanismType;
use vwire_proto::networkservice::NetworkServiceRequest;

use crate::memif_app::{
    first_ip, mac_from_seed, mode_from_payload, AppConfig, MemifAppError, PingArgs,
};
use crate::MechanismKind;
use vwire::transport::Url;
use vwire_mechanisms::memif::port::Role;

/// `Connection.payload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Payload {
    /// Ethernet frames
    #[value(name = "ETHERNET")]
    Ethernet,
    /// IP packets
    #[value(name = "IP")]
    Ip,
}

impl Payload {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        use vwire_proto::mechanism::Payload as Wire;
        match self {
            Self::Ethernet => Wire::Ethernet.as_str(),
            Self::Ip => Wire::Ip.as_str(),
        }
    }
}

/// `vwire-nsc` command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "vwire-nsc",
    about = "NSM client: requests one KERNEL or MEMIF connection, prints `connected <id> <src ip> \
             <dst ip>`, refreshes it, and closes it on SIGTERM/SIGINT",
    long_about = "NSM client: requests one KERNEL or MEMIF connection, prints `connected <id> <src ip> \
                  <dst ip>`, refreshes it, and closes it on SIGTERM/SIGINT.\n\n\
                  With --mechanism memif it offers {LOCAL, MEMIF, {inodeURL: file:///proc/<pid>/ns/net}} \
                  and becomes the memif client (id 0, one queue pair, no secret; ethernet or IP mode \
                  from the connection's payload) of the abstract socket returned in \
                  mechanism.parameters.socketfile, in its own network namespace. Behind it, this \
                  process answers ARP and ICMP echo for its address (src_ip_addrs[0]) and can ping \
                  the endpoint (dst_ip_addrs[0]) with --ping-count. It keeps to the connection's \
                  MTU (context.MTU) like a kernel: larger IPv4 datagrams leave as fragments, and \
                  fragments are reassembled. The `connected` line is printed \
                  right after the Request succeeds, before the memif link is up; the \
                  `ping <peer ip> <received>/<sent>` line once the pings are done."
)]
pub struct NscArgs {
    /// The forwarder's (or NSE's) NSM API: unix:///path or tcp://host:port.
    #[arg(long)]
    pub connect: Url,
    /// The network service to request.
    #[arg(long, default_value = "icmp-responder")]
    pub service: String,
    /// This client's name (its path segment name and the `podName` label).
    #[arg(long, default_value = "nsc-1")]
    pub name: String,
    /// The KERNEL interface name in this client's network namespace (at most 15 characters).
    #[arg(long, default_value = "nsm-1", value_parser = parse_iface)]
    pub iface: String,
    /// Connection payload.
    #[arg(long, value_enum, ignore_case = true, default_value = "ETHERNET")]
    pub payload: Payload,
    /// Token lifetime: `<n>s`, `<n>m`, `<n>h`, `<n>ms` or plain seconds.
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    pub token_lifetime: Duration,
    /// Refresh period (same syntax; plain seconds); default 20% of the token lifetime.
    #[arg(long, value_parser = parse_duration)]
    pub refresh: Option<Duration>,
    /// Deadline of each Request and Close (same syntax).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// The mechanism to request: kernel (an interface named --iface) or memif (this process
    /// is the memif client and answers ARP and ICMP echo itself; --iface names the memif).
    #[arg(long, value_enum, ignore_case = true, default_value = "kernel")]
    pub mechanism: MechanismKind,
    /// Pinging over MEMIF.
    #[command(flatten)]
    pub ping: PingArgs,
    /// mTLS and path tokens with an SVID of the SPIFFE Workload API at SPIFFE_ENDPOINT_SOCKET.
    #[arg(long)]
    pub spiffe: bool,
}

/// Parses `<n>ms`, `<n>s`, `<n>m`, `<n>h` or a plain number of seconds (`n` may have a fraction).
/// Zero and negative durations are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number followed by ms, s, m or h"))?;
    let d = Duration::try_from_secs_f64(n * scale).map_err(|e| format!("{s:?}: {e}"))?;
    if d.is_zero() {
        return Err(format!("{s:?}: the duration must be positive"));
    }
    Ok(d)
}

fn parse_iface(s: &str) -> Result<String, String> {
    vwire_mechanisms::kernel::validate_ifname(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

impl NscArgs {
    /// How often to refresh: `--refresh`, else 20% of the token lifetime.
    pub fn refresh_period(&self) -> Duration {
        self.refresh.unwrap_or(self.token_lifetime / 5)
    }

    /// The mechanism preference for this client's namespace: KERNEL with `inodeURL` and
    /// `name`, or MEMIF with `inodeURL` only.
    pub fn mechanism_preferences(&self) -> Vec<Mechanism> {
        let mut m = self.mechanism.mechanism_type().mechanism();
        let url = crate::own_netns_url();
        match self.mechanism {
            MechanismKind::Kernel => {
                m.kernel_mut().set_inode_url(&url).set_name(&self.iface);
            }
            MechanismKind::Memif => {
                m.memif_mut().set_inode_url(&url);
            }
        }
        vec![m]
    }

    /// The memif interface for connection `conn` as the forwarder returned it: the client of
    /// `mechanism.parameters.socketfile` in this namespace, mode from `payload` (this client's
    /// `--payload` if the connection has none), own address `src_ip_addrs[0]`, peer
    /// `dst_ip_addrs[0]`, MTU `context.MTU` (0 if unset: no limit).
    pub fn memif_app_config(&self, conn: &Connection) -> Result<AppConfig, MemifAppError> {
        let m = conn.mechanism.as_ref();
        let ty = m.map_or("", |m| m.r#type.as_str());
        if ty.parse() != Ok(MechanismType::Memif) {
            return Err(MemifAppError::NotMemif(ty.to_string()));
        }
        let socket = m
            .and_then(|m| m.memif().socketfile())
            .ok_or(MemifAppError::NoSocket)?;
        let payload = if conn.payload.is_empty() {
            self.payload.as_str()
        } else {
            conn.payload.as_str()
        };
        let ip = conn
            .context
            .as_ref()
            .and_then(|c| c.ip_context.clone())
            .unwrap_or_default();
        let mtu = conn.context.as_ref().map_or(0, |c| c.mtu);
        let own = first_ip(
            &ip.src_ip_addrs,
            "connection.context.ip_context.src_ip_addrs",
        )?;
        let peer = first_ip(
            &ip.dst_ip_addrs,
            "connection.context.ip_context.dst_ip_addrs",
        )?;
        Ok(AppConfig {
            name: self.iface.clone(),
            socket: socket.to_string(),
            role: Role::Client,
            mode: mode_from_payload(payload)?,
            own,
            peer,
            mac: mac_from_seed(&format!("nsc/{}/{own}", conn.id)),
            ping: self.ping.spec(),
            mtu,
        })
    }

    /// The first Request for a connection with id `id`, its token expiring at `now + lifetime`.
    pub fn initial_request(&self, id: &str, now: SystemTime) -> NetworkServiceRequest {
        NetworkServiceRequest {
            connection: Some(Connection {
                id: id.to_string(),
                network_service: self.service.clone(),
                payload: self.payload.as_str().to_string(),
                labels: HashMap::from([("podName".to_string(), self.name.clone())]),
                path: Some(Path {
                    index: 0,
                    path_segments: vec![PathSegment {
                        name: self.name.clone(),
                        id: id.to_string(),
                        expires: Some((now + self.token_lifetime).into()),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            mechanism_preferences: self.mechanism_preferences(),
        }
    }

    /// A refresh of `conn` (as last returned): the same connection with this client's segment
    /// expiring at `now + lifetime`.
    pub fn refresh_request(&self, conn: &Connection, now: SystemTime) -> NetworkServiceRequest {
        let mut conn = conn.clone();
        if let Some(path) = conn.path.as_mut() {
            let i = path.index as usize;
            let own = match path.path_segments.get(i) {
                Some(s) if s.name == self.name => Some(i),
                _ => path.path_segments.iter().position(|s| s.name == self.name),
            };
            if let Some(seg) = own.and_then(|i| path.path_segments.get_mut(i)) {
                seg.expires = Some((now + self.token_lifetime).into());
            }
        }
        NetworkServiceRequest {
            connection: Some(conn),
            mechanism_preferences: self.mechanism_preferences(),
        }
    }
}

/// The address part of `a.b.c.d/len` (the string itself if it has no `/`).
fn addr_only(s: &str) -> &str {
    s.split_once('/').map_or(s, |(a, _)| a)
}

/// The line printed once connected: `connected <connection id> <src ip> <dst ip>`, the IPs without
/// their prefix length (the first of `src_ip_addrs` / `dst_ip_addrs`; `-` if there is none).
pub fn connected_line(conn: &Connection) -> String {
    let ip = conn.context.as_ref().and_then(|c| c.ip_context.as_ref());
    let first = |v: Option<&Vec<String>>| {
        v.and_then(|v| v.first())
            .map_or("-".to_string(), |s| addr_only(s).to_string())
    };
    format!(
        "connected {} {} {}",
        conn.id,
        first(ip.map(|i| &i.src_ip_addrs)),
        first(ip.map(|i| &i.dst_ip_addrs))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vwire_proto::connectioncontext::{ConnectionContext, IpContext};

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("600s"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "0s", "m", "10x", "-1s", "1.2.3s", "10 m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn args_defaults_and_overrides() {
        let a = NscArgs::try_parse_from(["vwire-nsc", "--connect", "unix:///tmp/f.sock"]).unwrap();
        assert_eq!(a.connect, Url::Unix("/tmp/f.sock".into()));
        assert_eq!(
            (a.service.as_str(), a.name.as_str(), a.iface.as_str()),
            ("icmp-responder", "nsc-1", "nsm-1")
        );
        assert_eq!(a.payload, Payload::Ethernet);
        assert_eq!(a.token_lifetime, Duration::from_secs(600));
        assert_eq!(a.refresh_period(), Duration::from_secs(120));

        let a = NscArgs::try_parse_from([
            "vwire-nsc",
            "--connect",
            "tcp://127.0.0.1:5001",
            "--payload",
            "IP",
            "--token-lifetime",
            "10s",
            "--iface",
            "nsm-2",
            "--name",
            "nsc-2",
        ])
        .unwrap();
        assert_eq!(a.payload, Payload::Ip);
        assert_eq!(a.refresh_period(), Duration::from_secs(2));
        let a = NscArgs::try_parse_from([
            "vwire-nsc",
            "--connect",
            "unix:///x",
            "--refresh",
            "3",
            "--payload",
            "ip",
        ])
        .unwrap();
        assert_eq!(a.refresh_period(), Duration::from_secs(3));

        for bad in [
            &["vwire-nsc"][..],
            &["vwire-nsc", "--connect", "/tmp/x.sock"],
            &["vwire-nsc", "--connect", "unix:///x", "--payload", "MPLS"],
            &[
                "vwire-nsc",
                "--connect",
                "unix:///x",
                "--iface",
                "sixteen-chars-xx",
            ],
            &[
                "vwire-nsc",
                "--connect",
                "unix:///x",
                "--token-lifetime",
                "0s",
            ],
        ] {
            assert!(NscArgs::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn memif_preference_and_interface() {
        let a = NscArgs::try_parse_from([
            "vwire-nsc",
            "--connect",
            "unix:///x",
            "--mechanism",
            "memif",
            "--payload",
            "IP",
            "--ping-count",
            "3",
            "--ping-size",
            "3000",
        ])
        .unwrap();
        let m = &a
            .initial_request("c1", SystemTime::now())
            .mechanism_preferences[0];
        assert_eq!((m.cls.as_str(), m.r#type.as_str()), ("LOCAL", "MEMIF"));
        assert_eq!(
            m.parameters,
            HashMap::from([("inodeURL".to_string(), crate::own_netns_url())])
        );

        let mut reply = Connection {
            id: "c1".into(),
            payload: "IP".into(),
            mechanism: Some(Mechanism {
                cls: "LOCAL".into(),
                r#type: "MEMIF".into(),
                parameters: HashMap::from([(
                    "socketfile".to_string(),
                    "@/tmp/memif/f1/memif.socket".to_string(),
                )]),
            }),
            context: Some(ConnectionContext {
                ip_context: Some(IpContext {
                    src_ip_addrs: vec!["172.16.1.101/32".into()],
                    dst_ip_addrs: vec!["172.16.1.100/32".into()],
                    ..Default::default()
                }),
                mtu: 1446,
                ..Default::default()
            }),
            ..Default::default()
        };
        let cfg = a.memif_app_config(&reply).unwrap();
        assert_eq!(cfg.mtu, 1446, "from context.MTU");
        assert_eq!(cfg.socket, "@/tmp/memif/f1/memif.socket");
        assert_eq!(cfg.role, Role::Client);
        assert_eq!(cfg.mode, vwire_mechanisms::memif::msg::Mode::Ip);
        assert_eq!(cfg.own.to_string(), "172.16.1.101");
        assert_eq!(cfg.peer.to_string(), "172.16.1.100");
        assert_eq!(cfg.name, "nsm-1");
        assert_eq!(
            cfg.ping,
            Some(crate::pinger::PingSpec {
                count: 3,
                size: 3000
            })
        );
        assert_eq!(&cfg.mac[..2], &[0x02, 0xfe]);
        assert_eq!(
            a.memif_app_config(&reply).unwrap(),
            cfg,
            "stable for a refresh"
        );
        // Another MTU on a refresh: the same interface, which takes the new MTU in place.
        let mut lower = reply.clone();
        lower.context.as_mut().unwrap().mtu = 1400;
        let other = a.memif_app_config(&lower).unwrap();
        assert_eq!(other.mtu, 1400);
        assert!(cfg.same_but_mtu(&other) && other != cfg);
        lower.context.as_mut().unwrap().mtu = 0;
        assert_eq!(
            a.memif_app_config(&lower).unwrap().mtu,
            0,
            "unset: no limit"
        );

        reply.payload = "ETHERNET".into();
        assert_eq!(
            a.memif_app_config(&reply).unwrap().mode,
            vwire_mechanisms::memif::msg::Mode::Ethernet
        );
        let mut no_socket = reply.clone();
        no_socket.mechanism.as_mut().unwrap().parameters.clear();
        assert!(matches!(
            a.memif_app_config(&no_socket),
            Err(MemifAppError::NoSocket)
        ));
        let mut kernel = reply.clone();
        kernel.mechanism.as_mut().unwrap().r#type = "KERNEL".into();
        assert!(matches!(
            a.memif_app_config(&kernel),
            Err(MemifAppError::NotMemif(_))
        ));
        let mut no_ip = reply;
        no_ip.context = None;
        let e = a.memif_app_config(&no_ip).unwrap_err();
        assert!(e.to_string().contains("src_ip_addrs"), "{e}");

        for bad in [
            &["vwire-nsc", "--connect", "unix:///x", "--mechanism", "vfio"][..],
            &[
                "vwire-nsc",
                "--connect",
                "unix:///x",
                "--ping-size",
                "10000",
            ],
            &["vwire-nsc", "--connect", "unix:///x", "--ping-count", "-1"],
        ] {
            assert!(NscArgs::try_parse_from(bad).is_err(), "{bad:?}");
        }
        let d = NscArgs::try_parse_from(["vwire-nsc", "--connect", "unix:///x"]).unwrap();
        assert_eq!(d.mechanism, MechanismKind::Kernel);
        assert_eq!(d.ping.spec(), None);
        assert_eq!(d.ping.ping_size, 56);
    }

    #[test]
    fn request_refresh_and_line() {
        let a = NscArgs::try_parse_from(["vwire-nsc", "--connect", "unix:///x"]).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let r = a.initial_request("c1", now);
        let c = r.connection.clone().unwrap();
        assert_eq!(c.id, "c1");
        assert_eq!(c.payload, "ETHERNET");
        assert_eq!(c.labels["podName"], "nsc-1");
        let p = c.path.clone().unwrap();
        assert_eq!(p.index, 0);
        assert_eq!(p.path_segments[0].name, "nsc-1");
        assert_eq!(p.path_segments[0].expires.unwrap().seconds, 1600);
        let m = &r.mechanism_preferences[0];
        assert_eq!((m.cls.as_str(), m.r#type.as_str()), ("LOCAL", "KERNEL"));
        assert_eq!(m.parameters["name"], "nsm-1");
        assert_eq!(
            m.parameters["inodeURL"],
            format!("file:///proc/{}/ns/net", std::process::id())
        );

        let mut returned = c;
        returned
            .path
            .as_mut()
            .unwrap()
            .path_segments
            .push(PathSegment {
                name: "fwd".into(),
                id: "f1".into(),
                ..Default::default()
            });
        returned.context = Some(ConnectionContext {
            ip_context: Some(IpContext {
                src_ip_addrs: vec!["172.16.1.101/32".into()],
                dst_ip_addrs: vec!["172.16.1.100/32".into()],
                ..Default::default()
            }),
            ..Default::default()
        });
        let later = now + Duration::from_secs(120);
        let rr = a.refresh_request(&returned, later);
        let p = rr.connection.as_ref().unwrap().path.clone().unwrap();
        assert_eq!(p.path_segments.len(), 2);
        assert_eq!(p.path_segments[0].expires.unwrap().seconds, 1720);
        assert_eq!(
            connected_line(&returned),
            "connected c1 172.16.1.101 172.16.1.100"
        );
        assert_eq!(
            connected_line(&Connection {
                id: "x".into(),
                ..Default::default()
            }),
            "connected x - -"
        );
    }
}
