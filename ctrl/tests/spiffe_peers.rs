//! The SPIFFE test peers (common/spiffe.rs) checked against third-party code only, before any
//! vwire test relies on them: the `spiffe` crate reads the test Workload API and sees rotations;
//! the mTLS client and server talk grpc.health.v1 over unix and TCP and refuse clients without a
//! certificate from the CA; tokens minted by hand verify. Needs no root.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::peerfd::{Attach, PeerFds};
use common::spiffe::pb::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use common::spiffe::{
    dial_mtls, dial_mtls_fds, dial_tls_no_client_cert, mint_token, pb, peer_fds, peer_id,
    token_claims, token_header, verify_token, MtlsServed, TestCa, WorkloadApi, SECURITY_HEADER,
};
use tonic::service::interceptor::InterceptedService;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const HOUR: Duration = Duration::from_secs(3600);
/// Generous for a loaded 2-core CI machine; every wait ends early on success.
const WAIT: Duration = Duration::from_secs(10);

/// A fresh directory for sockets, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(common::unique("vwire-spiffe-"));
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn spiffe_crate_reads_the_workload_api_and_sees_rotation() {
    let dir = TempDir::new();
    let sock = dir.0.join("agent.sock");
    let ca = TestCa::new("example.org");
    let first = ca.svid("/ns/default/sa/vwire", HOUR);
    let api = WorkloadApi::start(&sock, first.clone(), ca.der.clone());
    assert_eq!(api.endpoint(), format!("unix://{}", sock.display()));

    let source = tokio::time::timeout(
        WAIT,
        spiffe::X509SourceBuilder::new()
            .endpoint(api.endpoint())
            .build(),
    )
    .await
    .expect("the X509Source did not sync in time")
    .expect("the X509Source failed");
    let svid = source.svid().expect("an SVID");
    assert_eq!(svid.spiffe_id().to_string(), first.id);
    assert_eq!(svid.leaf().as_bytes(), &first.cert_der[..]);
    let td = spiffe::TrustDomain::new("example.org").unwrap();
    let bundle = source.bundle_set().unwrap().get(&td).expect("own bundle");
    assert_eq!(bundle.authorities()[0].as_bytes(), &ca.der[..]);
    assert!(api.fetches() >= 1);

    let mut updates = source.updated();
    let second = ca.svid("/ns/default/sa/vwire", 2 * HOUR);
    api.rotate(second.clone());
    tokio::time::timeout(WAIT, updates.changed())
        .await
        .expect("no update within the wait")
        .expect("the source closed");
    let svid = source.svid().unwrap();
    assert_eq!(svid.leaf().as_bytes(), &second.cert_der[..]);

    // A federated bundle reaches the source too.
    let other = TestCa::new("other.org");
    api.federate("other.org", other.der.clone());
    let other_td = spiffe::TrustDomain::new("other.org").unwrap();
    tokio::time::timeout(WAIT, async {
        while source.bundle_set().unwrap().get(&other_td).is_none() {
            updates.changed().await.expect("the source closed");
        }
    })
    .await
    .expect("the federated bundle did not arrive");
    source.shutdown().await;
}

/// A plain gRPC client of the Workload API socket.
async fn workload_client(sock: PathBuf) -> SpiffeWorkloadApiClient<tonic::transport::Channel> {
    let ch = tonic::transport::Endpoint::from_static("http://[::]:0")
        .connect_with_connector(tower::service_fn(move |_| {
            let sock = sock.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(sock).await?,
                ))
            }
        }))
        .await
        .expect("connect to the Workload API");
    SpiffeWorkloadApiClient::new(ch)
}

#[tokio::test]
async fn workload_api_requires_the_security_header() {
    let dir = TempDir::new();
    let sock = dir.0.join("agent.sock");
    let ca = TestCa::new("example.org");
    let svid = ca.svid("/nsc", HOUR);
    let api = WorkloadApi::start(&sock, svid.clone(), ca.der.clone());
    let mut client = workload_client(sock.clone()).await;

    let err = client
        .fetch_x509svid(pb::X509svidRequest {})
        .await
        .expect_err("a call without the header must fail");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = client
        .fetch_x509_bundles(pb::X509BundlesRequest {})
        .await
        .expect_err("a call without the header must fail");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(api.fetches(), 0);

    let mut req = tonic::Request::new(pb::X509svidRequest {});
    req.metadata_mut()
        .insert(SECURITY_HEADER, "true".parse().unwrap());
    let mut stream = client.fetch_x509svid(req).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().expect("a first response");
    assert_eq!(first.svids.len(), 1);
    assert_eq!(first.svids[0].spiffe_id, svid.id);
    assert_eq!(first.svids[0].x509_svid, svid.cert_der);
    assert_eq!(first.svids[0].x509_svid_key, svid.key_pkcs8_der);
    assert_eq!(first.svids[0].bundle, ca.der);
    assert_eq!(api.fetches(), 1);
    let rotated = ca.svid("/nsc", 2 * HOUR);
    api.rotate(rotated.clone());
    let next = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("no rotation pushed")
        .unwrap()
        .expect("the stream ended");
    assert_eq!(next.svids[0].x509_svid, rotated.cert_der);

    let mut req = tonic::Request::new(pb::X509BundlesRequest {});
    req.metadata_mut()
        .insert(SECURITY_HEADER, "true".parse().unwrap());
    let bundles = client
        .fetch_x509_bundles(req)
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .expect("a bundles response");
    assert_eq!(bundles.bundles["spiffe://example.org"], ca.der);
}

/// An agent with no identity for the caller answers PermissionDenied; the spiffe crate keeps
/// retrying and syncs once an SVID is issued; revoking ends the open stream.
#[tokio::test]
async fn workload_api_denies_without_an_identity() {
    let dir = TempDir::new();
    let sock = dir.0.join("agent.sock");
    let ca = TestCa::new("example.org");
    let api = WorkloadApi::start(&sock, ca.svid("/nsc", HOUR), ca.der.clone());
    api.revoke();
    let mut client = workload_client(sock.clone()).await;
    let with_header = || {
        let mut req = tonic::Request::new(pb::X509svidRequest {});
        req.metadata_mut()
            .insert(SECURITY_HEADER, "true".parse().unwrap());
        req
    };
    let err = client
        .fetch_x509svid(with_header())
        .await
        .expect_err("denied");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(api.fetches(), 0);

    let build = tokio::spawn({
        let endpoint = api.endpoint();
        async move {
            spiffe::X509SourceBuilder::new()
                .endpoint(endpoint)
                .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(200))
                .build()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !build.is_finished(),
        "the source synced without an identity"
    );
    let svid = ca.svid("/nsc", 2 * HOUR);
    api.rotate(svid.clone());
    let source = tokio::time::timeout(WAIT, build)
        .await
        .expect("the source did not sync after the SVID was issued")
        .unwrap()
        .expect("the X509Source failed");
    assert_eq!(source.svid().unwrap().leaf().as_bytes(), &svid.cert_der[..]);
    source.shutdown().await;

    let mut stream = client
        .fetch_x509svid(with_header())
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    api.revoke();
    let end = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("revoke did not reach the open stream");
    assert_eq!(
        end.expect_err("denied").code(),
        tonic::Code::PermissionDenied
    );
}

#[test]
fn workload_api_removes_its_socket() {
    let dir = TempDir::new();
    let sock = dir.0.join("agent.sock");
    let ca = TestCa::new("example.org");
    let api = WorkloadApi::start(&sock, ca.svid("/x", HOUR), ca.der.clone());
    assert!(sock.exists());
    drop(api);
    assert!(!sock.exists());
}

/// True if a health check over this channel succeeds within the wait.
async fn healthy(ch: tonic::transport::Channel) -> bool {
    let mut client = HealthClient::new(ch);
    let check = client.check(HealthCheckRequest {
        service: String::new(),
    });
    matches!(
        tokio::time::timeout(WAIT, check).await,
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32
    )
}

/// The mTLS pair over `url`: a good client is served and recorded, clients without a
/// certificate, with one from another CA, or with an expired one are refused.
async fn mtls_pair(url: &str) {
    let ca = TestCa::new("example.org");
    let other = TestCa::new("other.org");
    let server_svid = ca.svid("/nse", HOUR);
    let client_svid = ca.svid("/forwarder", HOUR);
    let (router, calls) = recording_health_router();
    let server = MtlsServed::start(url, &server_svid, &ca.der, router);

    let (ch, cert) = dial_mtls(server.url(), &client_svid, &ca.der)
        .await
        .expect("dial");
    assert_eq!(cert.id.as_deref(), Some(server_svid.id.as_str()));
    assert_eq!(cert.der, server_svid.cert_der);
    assert!(healthy(ch).await, "the health check over mTLS failed");
    assert_eq!(server.peer_ids(), vec![client_svid.id.clone()]);
    assert_eq!(server.rejected(), 0);
    let call = calls.lock().unwrap()[0].clone();
    assert_eq!(call.0.as_deref(), Some(client_svid.id.as_str()));
    assert!(call.1.is_none(), "fd state on a server that keeps no fds");

    // Refused at the server: under TLS 1.3 the client's side of the handshake ends before the
    // server checks the certificate, so the refusal may show only at the first call.
    let refused = |r: Result<(tonic::transport::Channel, _), _>| async move {
        match r {
            Err(_) => true,
            Ok((ch, _)) => !healthy(ch).await,
        }
    };
    let foreign = other.svid("/intruder", HOUR);
    let rogue = TestCa::new("example.org").svid("/forwarder", HOUR);
    let expired = ca.expired_svid("/forwarder");
    assert!(refused(dial_tls_no_client_cert(server.url(), &ca.der).await).await);
    assert!(refused(dial_mtls(server.url(), &foreign, &ca.der).await).await);
    assert!(refused(dial_mtls(server.url(), &rogue, &ca.der).await).await);
    assert!(refused(dial_mtls(server.url(), &expired, &ca.der).await).await);
    // The server counts a refusal after its alert is out, so the client may see it first; a
    // channel whose connection was refused may reconnect, and be refused, more than once.
    let deadline = std::time::Instant::now() + WAIT;
    while server.rejected() < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        server.rejected() >= 4,
        "refused handshakes: {}",
        server.rejected()
    );
    assert_eq!(server.peer_ids(), vec![client_svid.id.clone()]);

    // Refused at the client: the server's certificate does not chain to the CA it trusts.
    assert!(dial_mtls(server.url(), &client_svid, &other.der)
        .await
        .is_err());
}

#[tokio::test]
async fn mtls_over_unix() {
    let dir = TempDir::new();
    let sock = dir.0.join("nse.sock");
    mtls_pair(&format!("unix://{}", sock.display())).await;
    assert!(!sock.exists(), "the server left its socket behind");
}

#[tokio::test]
async fn mtls_over_tcp() {
    mtls_pair("tcp://127.0.0.1:0").await;
}

/// A health router whose interceptor records, per call, the caller's SPIFFE ID and its
/// connection's fd state as the handlers see them.
type Calls = Arc<Mutex<Vec<(Option<String>, Option<Arc<PeerFds>>)>>>;

fn recording_health_router() -> (tonic::transport::server::Router, Calls) {
    let calls = Calls::default();
    let seen = calls.clone();
    let (_reporter, service) = tonic_health::server::health_reporter();
    let service = InterceptedService::new(service, move |req: tonic::Request<()>| {
        seen.lock().unwrap().push((peer_id(&req), peer_fds(&req)));
        Ok(req)
    });
    (
        tonic::transport::Server::builder().add_service(service),
        calls,
    )
}

/// grpcfd beneath TLS, as vwire speaks it on unix sockets: the client sends fds one per byte
/// ahead of the TLS records. A server that keeps fds finds them by inode; one that does not
/// still answers (it reads until EAGAIN, so a read cut short at an fd byte does not stall it).
#[tokio::test]
async fn fds_pass_beneath_tls() {
    let dir = TempDir::new();
    let ca = TestCa::new("example.org");
    let server_svid = ca.svid("/nse", HOUR);
    let client_svid = ca.svid("/forwarder", HOUR);
    let file = std::fs::File::create(dir.0.join("netns")).unwrap();

    for keep in [true, false] {
        let sock = dir.0.join(format!("nse-{keep}.sock"));
        let url = format!("unix://{}", sock.display());
        let (router, calls) = recording_health_router();
        let server = if keep {
            MtlsServed::start_with_fds(&url, &server_svid, &ca.der, router)
        } else {
            MtlsServed::start(&url, &server_svid, &ca.der, router)
        };
        let fds = PeerFds::new(Attach::PerByte);
        let (ch, _) = dial_mtls_fds(&sock, &client_svid, &ca.der, fds.clone())
            .await
            .expect("dial");
        let mut urls = Vec::new();
        for _ in 0..3 {
            for _ in 0..3 {
                urls.push(fds.queue(&file));
            }
            assert!(healthy(ch.clone()).await, "a call carrying fds stalled");
        }
        assert!(fds.outbox.lock().unwrap().is_empty(), "fds left unsent");
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 3);
        for (id, server_fds) in &calls {
            assert_eq!(id.as_deref(), Some(client_svid.id.as_str()));
            assert_eq!(server_fds.is_some(), keep);
        }
        if keep {
            let server_fds = calls[0].1.clone().unwrap();
            assert!(server_fds.find(&urls[0]).await.is_some());
            assert_eq!(server_fds.inbox.lock().unwrap().len(), urls.len());
            assert!(server_fds
                .per_message
                .lock()
                .unwrap()
                .iter()
                .all(|&n| n == 1));
        }
        drop(server);
        assert!(!sock.exists());
    }
}

#[test]
fn svids_follow_the_x509_svid_profile() {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let ca = TestCa::new("example.org");
    let svid = ca.svid("/ns/a/sa/b", HOUR);
    assert_eq!(svid.id, "spiffe://example.org/ns/a/sa/b");
    assert_eq!(svid.ca_der, ca.der);
    // The spiffe crate accepts it as an X509-SVID.
    let parsed = spiffe::X509Svid::parse_from_der(&svid.cert_der, &svid.key_pkcs8_der)
        .expect("the spiffe crate rejects the SVID");
    assert_eq!(parsed.spiffe_id().to_string(), svid.id);
    let (_, cert) = X509Certificate::from_der(&svid.cert_der).unwrap();
    let not_after =
        std::time::UNIX_EPOCH + Duration::from_secs(cert.validity().not_after.timestamp() as u64);
    assert_eq!(not_after, svid.not_after);
    assert!(!cert.is_ca());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(cert.key_usage().unwrap().unwrap().value.digital_signature());
    assert!(ca.expired_svid("/x").not_after < SystemTime::now());
}

#[test]
fn tokens_round_trip() {
    let ca = TestCa::new("example.org");
    let nsc = ca.svid("/nsc", HOUR);
    let fwd = ca.svid("/forwarder", HOUR);
    let exp = SystemTime::now() + Duration::from_secs(600);
    let tok = mint_token(&nsc, &[&fwd.id], exp);

    assert_eq!(token_header(&tok)["alg"], "ES256");
    let claims = token_claims(&tok);
    assert_eq!(claims["sub"], nsc.id);
    assert_eq!(claims["aud"], serde_json::json!([fwd.id]));
    let exp_s = exp.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(claims["exp"], exp_s);

    assert!(verify_token(&tok, &nsc.cert_der));
    assert!(
        !verify_token(&tok, &fwd.cert_der),
        "verified with the wrong key"
    );
    // A changed payload breaks the signature.
    let parts: Vec<&str> = tok.split('.').collect();
    let forged = mint_token(&fwd, &[&fwd.id], exp);
    let forged_payload = forged.split('.').nth(1).unwrap();
    let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert!(!verify_token(&tampered, &nsc.cert_der));
    assert!(!verify_token("not a token", &nsc.cert_der));
    assert_eq!(token_claims("not a token"), serde_json::Value::Null);
}
