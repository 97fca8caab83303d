//! The NSM gRPC API over real sockets (tcp:// and unix://) with clients generated from vwire's
//! proto files: health, MonitorConnections' initial state, Close of an unknown id, and a table of
//! bad requests, each answered with the right status code and a message naming the field; a
//! failed request leaves no connection behind.

mod common;

use std::path::PathBuf;

use common::*;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use vwire::transport::{dial, Url, DIAL_TIMEOUT};
use vwire_proto::connection::monitor_connection_client::MonitorConnectionClient;
use vwire_proto::connection::{Connection, ConnectionEventType, Mechanism, MonitorScopeSelector};
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;
use vwire_proto::networkservice::NetworkServiceRequest;

fn start(listen: &str) -> Vwire {
    Vwire::start(&format!(
        "[nsm]\nname = \"vwire-test\"\nlisten_on = \"{listen}\"\ninsecure = true\ntunnel_ip = \"none\"\n"
    ))
}

fn kernel(params: &[(&str, &str)]) -> Mechanism {
    Mechanism {
        cls: "LOCAL".into(),
        r#type: "KERNEL".into(),
        parameters: params
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
    }
}

fn request(conn: Option<Connection>, prefs: Vec<Mechanism>) -> NetworkServiceRequest {
    NetworkServiceRequest {
        connection: conn,
        mechanism_preferences: prefs,
    }
}

fn conn(id: &str) -> Connection {
    Connection {
        id: id.into(),
        network_service: "svc".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn health_monitor_and_bad_requests_over_tcp() {
    let port = free_port();
    let vw = start(&format!("tcp://127.0.0.1:{port}"));
    let url = format!("http://127.0.0.1:{port}");
    let channel = tonic::transport::Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    for service in [
        "",
        "networkservice.NetworkService",
        "connection.MonitorConnection",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health");
        assert_eq!(
            r.into_inner().status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }

    let mut ns = NetworkServiceClient::connect(url.clone()).await.unwrap();
    let table: Vec<(&str, NetworkServiceRequest, Code, &str)> = vec![
        (
            "missing connection",
            request(None, vec![kernel(&[])]),
            Code::InvalidArgument,
            "request.connection",
        ),
        (
            "unknown mechanism type",
            request(
                Some(conn("a")),
                vec![Mechanism {
                    r#type: "CARRIER_PIGEON".into(),
                    ..Default::default()
                }],
            ),
            Code::InvalidArgument,
            "mechanism_preferences",
        ),
        (
            "a namespace that does not exist",
            request(
                Some(conn("b")),
                vec![kernel(&[(
                    "inodeURL",
                    "file:///var/run/netns/vwire-no-such-ns",
                )])],
            ),
            Code::NotFound,
            "connection.mechanism.parameters[inodeURL]",
        ),
        (
            "an interface name over 15 characters",
            request(
                Some(conn("c")),
                vec![kernel(&[("name", "sixteen-chars-xx")])],
            ),
            Code::InvalidArgument,
            "connection.mechanism.parameters[name]",
        ),
        (
            "an unknown payload",
            request(
                Some(Connection {
                    payload: "SMOKE".into(),
                    ..conn("d")
                }),
                vec![kernel(&[])],
            ),
            Code::InvalidArgument,
            "connection.payload",
        ),
    ];
    for (what, req, code, field) in table {
        let e = ns.request(req).await.expect_err(what);
        assert_eq!(e.code(), code, "{what}: {e:?}");
        assert!(
            e.message().starts_with(field),
            "{what}: the message names {field}: {}",
            e.message()
        );
    }
    // Close of an unknown id succeeds.
    ns.close(conn("never-requested"))
        .await
        .expect("close of an unknown id");

    // No failed request left a connection behind.
    let mut mon = MonitorConnectionClient::connect(url).await.unwrap();
    let mut stream = mon
        .monitor_connections(MonitorScopeSelector::default())
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().expect("an initial event");
    assert_eq!(first.r#type(), ConnectionEventType::InitialStateTransfer);
    assert!(
        first.connections.is_empty(),
        "connections left behind: {:?}",
        first.connections.keys()
    );
    drop(vw);
}

#[tokio::test(flavor = "current_thread")]
async fn the_api_is_served_on_a_unix_socket() {
    let path: PathBuf = temp_file("x", "").with_file_name("nsm.sock");
    let vw = start(&format!("unix://{}", path.display()));
    let channel = dial(&Url::Unix(path.clone()), DIAL_TIMEOUT)
        .await
        .expect("connect over the unix socket");
    let mut health = HealthClient::new(channel.clone());
    let r = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(r.into_inner().status(), ServingStatus::Serving);
    let mut ns = NetworkServiceClient::new(channel);
    ns.close(conn("x")).await.expect("close over unix");
    let mut vw = vw;
    let (status, _) = vw.terminate(std::time::Duration::from_secs(2));
    assert!(status.success());
    assert!(!path.exists(), "the socket file is removed at shutdown");
}
