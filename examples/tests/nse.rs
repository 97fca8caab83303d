//! `vwire-nse` as a process on a unix socket: KERNEL requests and refreshes, IPAM pairs and their
//! reuse after Close, a refused request, health, and a clean SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use vwire::transport::{dial, Url, DIAL_TIMEOUT};
use vwire_proto::connection::{Connection, Mechanism, Path as NsmPath, PathSegment, State};
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;
use vwire_proto::networkservice::NetworkServiceRequest;

struct Nse {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
}

impl Nse {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "vwire-nse-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("nse.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_vwire-nse"))
            .args(["--listen", &format!("unix://{}", sock.display())])
            .args(["--name", "nse-1", "--cidr", "172.16.1.100/31"])
            .args(["--service", "icmp-responder"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn vwire-nse");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "vwire-nse did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, dir, sock }
    }

    async fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "vwire-nse ignored SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Nse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn kernel() -> Mechanism {
    Mechanism {
        cls: "LOCAL".into(),
        r#type: "KERNEL".into(),
        parameters: [
            ("inodeURL".to_string(), "file:///proc/1/ns/net".to_string()),
            ("name".to_string(), "nsm-1".to_string()),
        ]
        .into(),
    }
}

fn nsc_conn(id: &str) -> Connection {
    Connection {
        id: id.into(),
        network_service: "icmp-responder".into(),
        payload: "ETHERNET".into(),
        path: Some(NsmPath {
            index: 0,
            path_segments: vec![PathSegment {
                name: "nsc-1".into(),
                id: id.into(),
                ..Default::default()
            }],
        }),
        ..Default::default()
    }
}

async fn request(
    ns: &mut NetworkServiceClient<Channel>,
    conn: Connection,
    prefs: Vec<Mechanism>,
) -> Result<Connection, tonic::Status> {
    ns.request(NetworkServiceRequest {
        connection: Some(conn),
        mechanism_preferences: prefs,
    })
    .await
    .map(tonic::Response::into_inner)
}

fn ips(c: &Connection) -> (String, String) {
    let ip = c.context.as_ref().unwrap().ip_context.as_ref().unwrap();
    assert_eq!(ip.src_ip_addrs.len(), 1);
    assert_eq!(ip.dst_ip_addrs.len(), 1);
    (ip.src_ip_addrs[0].clone(), ip.dst_ip_addrs[0].clone())
}

fn iface(c: &Connection) -> String {
    c.mechanism.as_ref().unwrap().parameters["name"].clone()
}

fn check_reply(c: &Connection, nsc_id: &str, src: &str, dst: &str, pid: u32) {
    assert_eq!(c.id, nsc_id, "the caller's id is restored");
    let p = c.path.as_ref().unwrap();
    assert_eq!(p.index, 0, "the caller's index is restored");
    assert_eq!(p.path_segments.len(), 2);
    assert_eq!(p.path_segments[1].name, "nse-1");
    assert_ne!(p.path_segments[1].id, nsc_id);
    assert_eq!(c.state(), State::Up);
    assert_eq!(c.network_service_endpoint_name, "nse-1");
    let m = c.mechanism.as_ref().unwrap();
    assert_eq!((m.cls.as_str(), m.r#type.as_str()), ("LOCAL", "KERNEL"));
    assert_eq!(
        m.parameters["inodeURL"],
        format!("file:///proc/{pid}/ns/net")
    );
    let name = iface(c);
    assert!(name.starts_with("nse-") && name.len() <= 15, "{name}");
    let ip = c.context.as_ref().unwrap().ip_context.as_ref().unwrap();
    assert_eq!(ip.src_ip_addrs, [src]);
    assert_eq!(ip.dst_ip_addrs, [dst]);
    assert_eq!(ip.src_routes.len(), 1);
    assert_eq!(ip.src_routes[0].prefix, dst);
    assert_eq!(ip.dst_routes.len(), 1);
    assert_eq!(ip.dst_routes[0].prefix, src);
}

#[tokio::test(flavor = "current_thread")]
async fn nse_requests_refreshes_ipam_health_and_sigterm() {
    let mut nse = Nse::start();
    let pid = nse.child.id();
    let channel = dial(&Url::Unix(nse.sock.clone()), DIAL_TIMEOUT)
        .await
        .unwrap();
    let mut ns = NetworkServiceClient::new(channel.clone());

    // Health.
    let r = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(r.into_inner().status(), ServingStatus::Serving);
    let r = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "networkservice.NetworkService".into(),
        })
        .await
        .unwrap();
    assert_eq!(r.into_inner().status(), ServingStatus::Serving);

    // First connection, then its refresh (the returned connection sent back).
    let a = request(&mut ns, nsc_conn("conn-a"), vec![kernel()])
        .await
        .unwrap();
    check_reply(&a, "conn-a", "172.16.1.101/32", "172.16.1.100/32", pid);
    let a2 = request(&mut ns, a.clone(), vec![kernel()]).await.unwrap();
    check_reply(&a2, "conn-a", "172.16.1.101/32", "172.16.1.100/32", pid);
    assert_eq!(iface(&a2), iface(&a));
    assert_eq!(
        a2.path.as_ref().unwrap().path_segments[1].id,
        a.path.as_ref().unwrap().path_segments[1].id
    );
    // A refresh with the mechanism already set and no preferences.
    let a3 = request(&mut ns, a2.clone(), vec![]).await.unwrap();
    assert_eq!(ips(&a3), ips(&a));
    assert_eq!(iface(&a3), iface(&a));

    // A second connection gets the next pair.
    let b = request(&mut ns, nsc_conn("conn-b"), vec![kernel()])
        .await
        .unwrap();
    check_reply(&b, "conn-b", "172.16.1.103/32", "172.16.1.102/32", pid);
    assert_ne!(iface(&b), iface(&a));

    // Close frees: a third connection reuses the first pair. Closing twice, or an unknown id, is Ok.
    ns.close(a3.clone()).await.unwrap();
    ns.close(a3).await.unwrap();
    ns.close(nsc_conn("never-seen")).await.unwrap();
    let c = request(&mut ns, nsc_conn("conn-c"), vec![kernel()])
        .await
        .unwrap();
    check_reply(&c, "conn-c", "172.16.1.101/32", "172.16.1.100/32", pid);
    let d = request(&mut ns, nsc_conn("conn-d"), vec![kernel()])
        .await
        .unwrap();
    assert_eq!(ips(&d).0, "172.16.1.105/32");

    // No KERNEL among the preferences, or no connection: InvalidArgument naming the field.
    let memif = Mechanism {
        cls: "LOCAL".into(),
        r#type: "MEMIF".into(),
        ..Default::default()
    };
    let e = request(&mut ns, nsc_conn("conn-e"), vec![memif])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("mechanism_preferences"), "{e:?}");
    let e = request(&mut ns, nsc_conn("conn-e"), vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = ns
        .request(NetworkServiceRequest {
            connection: None,
            mechanism_preferences: vec![kernel()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("request.connection"), "{e:?}");
    // The refused request took no addresses.
    let f = request(&mut ns, nsc_conn("conn-f"), vec![kernel()])
        .await
        .unwrap();
    assert_eq!(ips(&f).0, "172.16.1.107/32");

    drop(ns);
    let status = nse.sigterm().await;
    assert!(status.success(), "exit status {status:?}");
    assert!(!Path::new(&nse.sock).exists(), "the socket file is removed");
}
