//! Zero trust, end to end: vwire gets its SVID from a Workload API server of the test
//! ([`common::spiffe::WorkloadApi`], a test CA), serves the NSM API over mTLS, and forwards to an
//! NSE stand-in over mTLS. The test plays nsmgr with its own mTLS client and hand-made tokens
//! (`common::spiffe`, none of vwire's code), and checks, as upstream's endpoints would:
//!
//! - a Request and a Close with a valid token chain pass; vwire writes the caller's token into
//!   the caller's segment, signs its own (sub = vwire, aud = the NSE, verifiable with the
//!   certificate vwire presented to the NSE), and the KERNEL connection comes up and goes away;
//! - no client certificate, a certificate of another trust domain, an expired token, a broken
//!   chain, a token signed by someone else and a token that is no JWT are each refused (the
//!   handshake fails, or PermissionDenied naming the policy), and nothing is left behind;
//! - MonitorConnections is allowed to the SPIFFE IDs on the connection's path only;
//! - health answers over mTLS without a token (`grpc-health-probe -spiffe`);
//! - a namespace passed as `inode://` with its fd beneath TLS (grpcfd) is used;
//! - an SVID rotation: an open connection keeps working (with tokens that still verify against
//!   the certificate it presented), new handshakes get the new certificate.
//!
//! The latency of a Request with and without mTLS and tokens is measured by
//! `perf/security_latency.sh` (an ignored test here, run in release mode).

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::nsm::Ns;
use common::spiffe::*;
use common::*;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use vwire_proto::connection::monitor_connection_client::MonitorConnectionClient;
use vwire_proto::connection::{
    Connection, Mechanism, MonitorScopeSelector, Path as NsmPath, PathSegment,
};
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;
use vwire_proto::networkservice::network_service_server::{NetworkService, NetworkServiceServer};
use vwire_proto::networkservice::NetworkServiceRequest;

/// The identities of the test's trust domain, and a stranger's CA.
struct Pki {
    ca: TestCa,
    fwd: Svid,
    nsmgr: Svid,
    nsc: Svid,
    nse: Svid,
    /// Of the same trust domain, on no path.
    stranger: Svid,
}

impl Pki {
    fn new() -> Self {
        let ca = TestCa::new("example.org");
        let hour = Duration::from_secs(3600);
        Self {
            fwd: ca.svid("/ns/nsm-system/sa/forwarder", hour),
            nsmgr: ca.svid("/ns/nsm-system/sa/nsmgr", hour),
            nsc: ca.svid("/ns/default/sa/nsc", hour),
            nse: ca.svid("/ns/default/sa/nse", hour),
            stranger: ca.svid("/ns/default/sa/stranger", hour),
            ca,
        }
    }
}

/// What the NSE stand-in saw of one call.
#[derive(Clone, Debug)]
struct Call {
    conn: Connection,
    /// `nsm-client-token`.
    token: Option<String>,
    /// `nsm-client-token-expires`.
    expires: Option<String>,
    /// The client's (vwire's) leaf certificate of this connection's handshake.
    peer_cert: Vec<u8>,
}

/// An NSE over mTLS, as upstream's endpoints behave for what matters here: it writes the
/// caller's token into the caller's segment, appends its own segment, and answers KERNEL in its
/// namespace.
#[derive(Clone)]
struct Nse {
    ns: String,
    svid: Svid,
    requests: Arc<Mutex<Vec<Call>>>,
    closes: Arc<Mutex<Vec<Call>>>,
}

fn call_of<T>(req: &Request<T>, conn: Connection) -> Call {
    let text = |k| {
        req.metadata()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Call {
        conn,
        token: text("nsm-client-token"),
        expires: text("nsm-client-token-expires"),
        peer_cert: req
            .extensions()
            .get::<TlsPeer>()
            .and_then(|p| p.certs.first().cloned())
            .unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl NetworkService for Nse {
    async fn request(
        &self,
        req: Request<NetworkServiceRequest>,
    ) -> Result<Response<Connection>, Status> {
        let mut conn = req.get_ref().connection.clone().unwrap_or_default();
        let call = call_of(&req, conn.clone());
        self.requests.lock().unwrap().push(call.clone());
        let path = conn.path.get_or_insert_with(Default::default);
        let index = path.index as usize;
        if let Some(seg) = path.path_segments.get_mut(index) {
            seg.token = call.token.clone().unwrap_or_default();
        }
        let own = PathSegment {
            name: "nse".into(),
            id: format!("nse-{}", conn.id),
            token: mint_token(
                &self.svid,
                &[&spiffe_id(&call.peer_cert).unwrap_or_default()],
                SystemTime::now() + Duration::from_secs(600),
            ),
            ..Default::default()
        };
        path.path_segments.truncate(index + 1);
        path.path_segments.push(own);
        conn.mechanism = Some(Mechanism {
            cls: "LOCAL".into(),
            r#type: "KERNEL".into(),
            parameters: [
                (
                    "inodeURL".to_string(),
                    format!("file:///var/run/netns/{}", self.ns),
                ),
                ("name".to_string(), "nse-sec".to_string()),
            ]
            .into(),
        });
        Ok(Response::new(conn))
    }

    async fn close(&self, req: Request<Connection>) -> Result<Response<()>, Status> {
        let call = call_of(&req, req.get_ref().clone());
        self.closes.lock().unwrap().push(call);
        Ok(Response::new(()))
    }
}

/// vwire with SPIFFE, its Workload API, the NSE stand-in and the namespaces.
struct Setup {
    pki: Pki,
    dir: PathBuf,
    agent: WorkloadApi,
    nse: Nse,
    _nse_server: MtlsServed,
    nsc_ns: Ns,
    _nse_ns: Ns,
    vw: Vwire,
}

impl Setup {
    fn start() -> Self {
        require(&["ip"]);
        let pki = Pki::new();
        let dir = temp_file("x", "").with_file_name("");
        let agent =
            WorkloadApi::start(&dir.join("agent.sock"), pki.fwd.clone(), pki.ca.der.clone());
        let nsc_ns = Ns::new("sc");
        let nse_ns = Ns::new("se");
        let nse = Nse {
            ns: nse_ns.0.clone(),
            svid: pki.nse.clone(),
            requests: Arc::default(),
            closes: Arc::default(),
        };
        let nse_server = MtlsServed::start(
            &format!("unix://{}/nse.sock", dir.display()),
            &pki.nse,
            &pki.ca.der,
            tonic::transport::Server::builder().add_routes(tonic::service::Routes::new(
                NetworkServiceServer::new(nse.clone()),
            )),
        );
        let vw = Vwire::start(&format!(
            "[dataplane]\nworkers = [1]\n[nsm]\nname = \"fwd\"\nlisten_on = \"unix://{d}/fwd.sock\"\n\
             tunnel_ip = \"none\"\nspiffe_endpoint_socket = \"{agent}\"\n\
             [[endpoint]]\nname = \"nse-1\"\nurl = \"unix://{d}/nse.sock\"\nservice = \"icmp-responder\"\n",
            d = dir.display(),
            agent = agent.endpoint(),
        ));
        let t0 = Instant::now();
        while !dir.join("fwd.sock").exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "vwire did not serve the NSM API:\n{}",
                vw.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            pki,
            dir,
            agent,
            nse,
            _nse_server: nse_server,
            nsc_ns,
            _nse_ns: nse_ns,
            vw,
        }
    }

    fn url(&self) -> String {
        format!("unix://{}/fwd.sock", self.dir.display())
    }

    /// nsmgr's mTLS channel to vwire, and vwire's certificate of that handshake.
    async fn nsmgr(&self) -> (NetworkServiceClient<tonic::transport::Channel>, ServerCert) {
        let (channel, cert) = dial_mtls(&self.url(), &self.pki.nsmgr, &self.pki.ca.der)
            .await
            .unwrap_or_else(|e| panic!("nsmgr's mTLS dial: {e:?}\n{}", self.vw.logs()));
        (NetworkServiceClient::new(channel), cert)
    }

    /// The links of the client namespace.
    fn nsc_links(&self) -> String {
        self.nsc_ns.links()
    }
}

/// What a request's tokens look like, so that each refusal case changes one thing.
struct Tokens {
    /// The NSC's token in segment 0.
    nsc: String,
    /// nsmgr's token in segment 1 (vwire overwrites it with the metadata token).
    nsmgr_in_path: String,
    /// nsmgr's per-call token (metadata).
    call: String,
}

impl Tokens {
    /// A valid chain: nsc → nsmgr → vwire (`fwd` = vwire's SPIFFE ID from its certificate).
    fn valid(pki: &Pki, fwd: &str) -> Self {
        let exp = SystemTime::now() + Duration::from_secs(600);
        Self {
            nsc: mint_token(&pki.nsc, &[&pki.nsmgr.id], exp),
            nsmgr_in_path: mint_token(&pki.nsmgr, &[fwd], exp),
            call: mint_token(&pki.nsmgr, &[fwd], exp),
        }
    }
}

/// A Request as nsmgr sends it: path [nsc, nsmgr], index 1, KERNEL in the client's namespace.
fn nsmgr_request(
    s: &Setup,
    id: &str,
    iface: &str,
    tokens: &Tokens,
) -> Request<NetworkServiceRequest> {
    let exp = prost_types::Timestamp::from(SystemTime::now() + Duration::from_secs(600));
    let conn = Connection {
        id: format!("{id}-nsmgr"),
        network_service: "icmp-responder".into(),
        path: Some(NsmPath {
            index: 1,
            path_segments: vec![
                PathSegment {
                    name: "nsc".into(),
                    id: format!("{id}-nsc"),
                    token: tokens.nsc.clone(),
                    expires: Some(exp),
                    ..Default::default()
                },
                PathSegment {
                    name: "nsmgr".into(),
                    id: format!("{id}-nsmgr"),
                    token: tokens.nsmgr_in_path.clone(),
                    expires: Some(exp),
                    ..Default::default()
                },
            ],
        }),
        ..Default::default()
    };
    let mut req = Request::new(NetworkServiceRequest {
        connection: Some(conn),
        mechanism_preferences: vec![Mechanism {
            cls: "LOCAL".into(),
            r#type: "KERNEL".into(),
            parameters: [
                (
                    "inodeURL".to_string(),
                    format!("file:///var/run/netns/{}", s.nsc_ns.0),
                ),
                ("name".to_string(), iface.to_string()),
            ]
            .into(),
        }],
    });
    with_token(&mut req, &tokens.call);
    req
}

/// Adds `token` as nsm-client-token (and an expiry ten minutes out).
fn with_token<T>(req: &mut Request<T>, token: &str) {
    let md = req.metadata_mut();
    md.insert("nsm-client-token", token.parse().unwrap());
    let exp = prost_types::Timestamp::from(SystemTime::now() + Duration::from_secs(600));
    md.insert("nsm-client-token-expires", exp.to_string().parse().unwrap());
}

/// `conn` as a Close from nsmgr, with a fresh call token for vwire.
fn nsmgr_close(pki: &Pki, fwd: &str, conn: &Connection) -> Request<Connection> {
    let mut c = conn.clone();
    if let Some(p) = c.path.as_mut() {
        p.index = 1;
    }
    c.id = c.path.as_ref().unwrap().path_segments[1].id.clone();
    let mut req = Request::new(c);
    with_token(
        &mut req,
        &mint_token(
            &pki.nsmgr,
            &[fwd],
            SystemTime::now() + Duration::from_secs(600),
        ),
    );
    req
}

/// Asserts `claims` are sub → [aud].
fn assert_claims(token: &str, sub: &str, aud: &str) {
    let c = token_claims(token);
    assert_eq!(c["sub"], sub, "{c}");
    assert!(
        c["aud"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == aud)),
        "aud of {c} should hold {aud}"
    );
    let exp = c["exp"].as_u64().expect("exp");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(exp > now && exp <= now + 600, "exp {exp} (now {now})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_chain_is_served_checked_and_closed() {
    let s = Setup::start();
    let (mut client, vwire_cert) = s.nsmgr().await;
    let fwd = vwire_cert
        .id
        .clone()
        .expect("vwire's certificate has a SPIFFE ID");
    assert_eq!(
        fwd, s.pki.fwd.id,
        "vwire presents the SVID of its Workload API"
    );

    // Health answers over mTLS with no token, as grpc-health-probe -spiffe asks it.
    let (channel, _) = dial_mtls(&s.url(), &s.pki.stranger, &s.pki.ca.der)
        .await
        .unwrap();
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect("health over mTLS");
    assert_eq!(health.into_inner().status(), ServingStatus::Serving);

    let tokens = Tokens::valid(&s.pki, &fwd);
    let got = client
        .request(nsmgr_request(&s, "ok", "nsc-sec", &tokens))
        .await
        .unwrap_or_else(|e| panic!("a valid chain is refused: {e:?}\n{}", s.vw.logs()))
        .into_inner();
    assert!(s.nsc_links().contains("nsc-sec"), "{}", s.nsc_links());

    // What the NSE saw: vwire's token for it, signed with the certificate vwire presented.
    let seen = s
        .nse
        .requests
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("the NSE got the request");
    let token = seen.token.clone().expect("vwire sends nsm-client-token");
    assert_claims(&token, &fwd, &s.pki.nse.id);
    assert!(
        verify_token(&token, &seen.peer_cert),
        "vwire's token does not verify against its TLS certificate"
    );
    assert!(seen.expires.is_some(), "nsm-client-token-expires");
    let path = seen.conn.path.clone().unwrap();
    assert_eq!(path.index, 2);
    assert_eq!(
        path.path_segments[1].token, tokens.call,
        "the caller's token goes into its segment"
    );
    assert_eq!(
        path.path_segments[2].token, token,
        "vwire's segment holds the token it sent"
    );

    // What nsmgr got back: the whole chain, nsc → nsmgr → vwire → NSE.
    let back = got.path.clone().unwrap();
    assert_eq!(back.path_segments.len(), 4, "{back:?}");
    assert_eq!(back.index, 1);
    assert_eq!(back.path_segments[1].token, tokens.call);
    assert_claims(&back.path_segments[2].token, &fwd, &s.pki.nse.id);
    assert!(verify_token(&back.path_segments[2].token, &vwire_cert.der));

    // Monitor: the IDs on the path may follow the connection; a stranger may not.
    let selector = MonitorScopeSelector {
        path_segments: vec![PathSegment {
            id: back.path_segments[1].id.clone(),
            ..Default::default()
        }],
        ..Default::default()
    };
    for who in [&s.pki.nsmgr, &s.pki.nsc] {
        let (ch, _) = dial_mtls(&s.url(), who, &s.pki.ca.der).await.unwrap();
        let mut m = MonitorConnectionClient::new(ch);
        let mut stream = m
            .monitor_connections(selector.clone())
            .await
            .unwrap_or_else(|e| panic!("{} may monitor: {e:?}", who.id))
            .into_inner();
        let first = stream.message().await.unwrap().expect("initial state");
        assert_eq!(first.connections.len(), 1, "{}: {first:?}", who.id);
    }
    for (who, sel) in [
        (&s.pki.stranger, selector.clone()),
        (&s.pki.nsmgr, MonitorScopeSelector::default()),
    ] {
        let (ch, _) = dial_mtls(&s.url(), who, &s.pki.ca.der).await.unwrap();
        let e = MonitorConnectionClient::new(ch)
            .monitor_connections(sel)
            .await
            .expect_err("refused");
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("service_connection"), "{e:?}");
    }

    // A refresh on the same connection signs anew.
    let refreshed = client
        .request({
            let mut r = nsmgr_request(&s, "ok", "nsc-sec", &Tokens::valid(&s.pki, &fwd));
            r.get_mut().connection = Some(Connection {
                path: Some(NsmPath {
                    index: 1,
                    ..got.path.clone().unwrap()
                }),
                id: back.path_segments[1].id.clone(),
                ..got.clone()
            });
            r
        })
        .await
        .unwrap_or_else(|e| panic!("refresh: {e:?}\n{}", s.vw.logs()))
        .into_inner();
    assert_eq!(refreshed.path.unwrap().path_segments.len(), 4);

    client
        .close(nsmgr_close(&s.pki, &fwd, &got))
        .await
        .unwrap_or_else(|e| panic!("close: {e:?}\n{}", s.vw.logs()));
    let closed = s
        .nse
        .closes
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("the NSE got the close");
    let token = closed.token.expect("the close carries vwire's token");
    assert_claims(&token, &fwd, &s.pki.nse.id);
    assert!(verify_token(&token, &closed.peer_cert));
    assert!(!s.nsc_links().contains("nsc-sec"), "{}", s.nsc_links());
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_bad_tokens_are_refused_and_leave_nothing() {
    let s = Setup::start();
    let (mut client, vwire_cert) = s.nsmgr().await;
    let fwd = vwire_cert.id.clone().unwrap();
    let links_before = s.nsc_links();
    let exp = SystemTime::now() + Duration::from_secs(600);
    let past = SystemTime::now() - Duration::from_secs(60);

    // Each case changes one thing of a valid request.
    let mut impostor = s.pki.stranger.clone();
    impostor.id = s.pki.nsmgr.id.clone(); // the stranger's key, nsmgr's name
    let cases: Vec<(&str, Tokens, &str)> = vec![
        (
            "an expired token",
            Tokens {
                nsc: mint_token(&s.pki.nsc, &[&s.pki.nsmgr.id], past),
                ..Tokens::valid(&s.pki, &fwd)
            },
            "tokens_expired",
        ),
        (
            "a broken chain",
            Tokens {
                nsc: mint_token(&s.pki.nsc, &[&s.pki.stranger.id], exp),
                ..Tokens::valid(&s.pki, &fwd)
            },
            "tokens_chained",
        ),
        (
            "a token signed by someone else",
            Tokens {
                call: mint_token(&impostor, &[&fwd], exp),
                ..Tokens::valid(&s.pki, &fwd)
            },
            "prev_token_signed",
        ),
        (
            "a token that is no JWT",
            Tokens {
                nsc: "not-a-jwt".into(),
                ..Tokens::valid(&s.pki, &fwd)
            },
            "tokens_valid",
        ),
    ];
    for (i, (what, tokens, policy)) in cases.into_iter().enumerate() {
        let e = client
            .request(nsmgr_request(
                &s,
                &format!("bad{i}"),
                &format!("nsc-bad{i}"),
                &tokens,
            ))
            .await
            .expect_err(what);
        assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e:?}");
        assert!(
            e.message().contains(policy),
            "{what}: {e:?} should name {policy}"
        );
    }

    // A Close is checked too: one of an established connection whose NSC token is no JWT
    // is refused, and the connection stays until a valid Close.
    let got = client
        .request(nsmgr_request(
            &s,
            "close",
            "nsc-close",
            &Tokens::valid(&s.pki, &fwd),
        ))
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", s.vw.logs()))
        .into_inner();
    let mut bad = nsmgr_close(&s.pki, &fwd, &got);
    with_token(&mut bad, &mint_token(&impostor, &[&fwd], exp));
    let e = client
        .close(bad)
        .await
        .expect_err("a close with someone else's token");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("prev_token_signed"), "{e:?}");
    assert!(s.nsc_links().contains("nsc-close"), "{}", s.nsc_links());
    client
        .close(nsmgr_close(&s.pki, &fwd, &got))
        .await
        .unwrap_or_else(|e| panic!("close: {e:?}"));
    assert!(!s.nsc_links().contains("nsc-close"), "{}", s.nsc_links());
    let asked = s.nse.requests.lock().unwrap().len();
    assert_eq!(asked, 1, "only the valid request reached the NSE");

    // Bad credentials: the handshake (or the first call on it) fails.
    let other = TestCa::new("other.org");
    let foreign = other.svid("/ns/nsm-system/sa/nsmgr", Duration::from_secs(3600));
    for (what, dialled) in [
        (
            "no client certificate",
            dial_tls_no_client_cert(&s.url(), &s.pki.ca.der).await,
        ),
        (
            "another trust domain",
            dial_mtls(&s.url(), &foreign, &s.pki.ca.der).await,
        ),
        (
            "an expired certificate",
            dial_mtls(
                &s.url(),
                &s.pki.ca.expired_svid("/ns/nsm-system/sa/nsmgr"),
                &s.pki.ca.der,
            )
            .await,
        ),
    ] {
        if let Ok((ch, _)) = dialled {
            let tokens = Tokens::valid(&s.pki, &fwd);
            let r = NetworkServiceClient::new(ch)
                .request(nsmgr_request(&s, "cert", "nsc-cert", &tokens))
                .await;
            assert!(r.is_err(), "{what}: served");
        }
    }
    // Nothing else went past authorisation.
    assert_eq!(
        s.nse.requests.lock().unwrap().len(),
        1,
        "only the valid request reached the NSE"
    );
    assert_eq!(s.nsc_links(), links_before);
    let logs = s.vw.logs();
    assert!(
        logs.contains("TLS handshake"),
        "failed handshakes are logged:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_svid_rotation_keeps_open_connections_and_new_handshakes_get_the_new_certificate() {
    let s = Setup::start();
    let (mut client, before) = s.nsmgr().await;
    let fwd = before.id.clone().unwrap();
    let got = client
        .request(nsmgr_request(
            &s,
            "rot",
            "nsc-rot",
            &Tokens::valid(&s.pki, &fwd),
        ))
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", s.vw.logs()))
        .into_inner();
    let first_nse_cert = s.nse.requests.lock().unwrap()[0].peer_cert.clone();

    let rotated = s
        .pki
        .ca
        .svid("/ns/nsm-system/sa/forwarder", Duration::from_secs(7200));
    s.agent.rotate(rotated.clone());
    // New handshakes present the new certificate, once vwire has it.
    let t0 = Instant::now();
    loop {
        let (_, cert) = s.nsmgr().await;
        if cert.der == rotated.cert_der {
            break;
        }
        assert_eq!(
            cert.der, before.der,
            "neither the old nor the new certificate"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "vwire still presents the old certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The open connection (nsmgr's, and vwire's to the NSE) keeps working: a refresh passes,
    // and the token vwire sends on its open connection to the NSE verifies against the
    // certificate of that connection.
    let mut refresh = nsmgr_request(&s, "rot", "nsc-rot", &Tokens::valid(&s.pki, &fwd));
    refresh.get_mut().connection = Some(Connection {
        path: Some(NsmPath {
            index: 1,
            ..got.path.clone().unwrap()
        }),
        id: got.path.as_ref().unwrap().path_segments[1].id.clone(),
        ..got.clone()
    });
    client
        .request(refresh)
        .await
        .unwrap_or_else(|e| panic!("refresh after rotation: {e:?}\n{}", s.vw.logs()));
    let seen = s.nse.requests.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        seen.peer_cert, first_nse_cert,
        "the same connection to the NSE"
    );
    assert!(
        verify_token(seen.token.as_deref().unwrap(), &seen.peer_cert),
        "after the rotation, vwire's token on the open connection does not verify against its certificate"
    );
    client
        .close(nsmgr_close(&s.pki, &fwd, &got))
        .await
        .unwrap_or_else(|e| panic!("close after rotation: {e:?}"));
    assert!(!s.nsc_links().contains("nsc-rot"));
}

/// Request latency with and without mTLS, tokens and policies, each over one open connection,
/// the two vwires running side by side and measured in alternation, round by round (so that
/// drift on a noisy machine hits both alike): a Request for a service no endpoint serves,
/// refused (NotFound) by connect, the last element, after updatetoken and authorize ran. That
/// is what security adds to every Request, without the kernel's veth work, which dominates a
/// KERNEL Request (`perf/nsm_latency.sh`) and which two vwires on one host do not share fairly
/// (the second cannot register its UMEM on the shared loopback holder and re-pins it per
/// socket).
///
/// p50/p99 of `SECURITY_LATENCY_ROUNDS` (default 200) rounds. Run by `perf/security_latency.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: perf/security_latency.sh"]
async fn request_latency_with_and_without_security() {
    let rounds: usize = std::env::var("SECURITY_LATENCY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let s = Setup::start();
    let plain = plain_setup(&s);
    let (mut secure, cert) = s.nsmgr().await;
    let fwd = cert.id.clone().unwrap();
    let mut insecure = NetworkServiceClient::new(
        vwire::transport::dial(&plain.url, vwire::transport::DIAL_TIMEOUT)
            .await
            .unwrap(),
    );
    let mut t = Timings::default();
    for i in 0..rounds {
        // Who goes first alternates.
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let client = if k == 0 { &mut secure } else { &mut insecure };
            let mut r = nsmgr_request(
                &s,
                &format!("ch{k}-{i}"),
                "nsc-x",
                &Tokens::valid(&s.pki, &fwd),
            );
            r.get_mut().connection.as_mut().unwrap().network_service = "nowhere".into();
            let t0 = Instant::now();
            let e = client.request(r).await.expect_err("no endpoint serves it");
            t.chain[k].push(t0.elapsed());
            assert_eq!(e.code(), Code::NotFound, "{e:?}");
        }
    }
    println!("rounds {rounds}");
    {
        let (what, v) = ("chain", &t.chain);
        println!(
            "{what}: mTLS+tokens+policies p50 {:.3} ms p99 {:.3} ms | plaintext p50 {:.3} ms p99 {:.3} ms | added p50 {:+.3} ms",
            ms(pct(&v[0], 0.5)),
            ms(pct(&v[0], 0.99)),
            ms(pct(&v[1], 0.5)),
            ms(pct(&v[1], 0.99)),
            ms(pct(&v[0], 0.5)) - ms(pct(&v[1], 0.5)),
        );
    }
}

/// Latencies, `[secure, plaintext]`.
#[derive(Default)]
struct Timings {
    chain: [Vec<Duration>; 2],
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `q` quantile (0..=1) of `v`, nearest rank.
#[allow(clippy::cast_possible_truncation)] // a rank below v.len()
fn pct(v: &[Duration], q: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    let rank = ((v.len() - 1) as f64 * q).round();
    v[(rank as usize).min(v.len() - 1)]
}

/// An insecure vwire and a plaintext NSE stand-in beside `s` (same namespaces).
struct Plain {
    url: vwire::transport::Url,
    _vw: Vwire,
    _nse: common::served::Served,
}

fn plain_setup(s: &Setup) -> Plain {
    let d = s.dir.join("plain");
    std::fs::create_dir_all(&d).unwrap();
    let nse = s.nse.clone();
    let served = common::served::Served::start(&d.join("nse.sock"), move || async move {
        tonic::transport::Server::builder().add_service(NetworkServiceServer::new(nse))
    });
    let vw = Vwire::start(&format!(
        "[dataplane]\nworkers = [1]\n[nsm]\nname = \"fwd\"\nlisten_on = \"unix://{d}/fwd.sock\"\ninsecure = true\n\
         tunnel_ip = \"none\"\n[[endpoint]]\nname = \"nse-1\"\nurl = \"unix://{d}/nse.sock\"\nservice = \"icmp-responder\"\n",
        d = d.display()
    ));
    let t0 = Instant::now();
    while !d.join("fwd.sock").exists() {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    Plain {
        url: vwire::transport::Url::Unix(d.join("fwd.sock")),
        _vw: vw,
        _nse: served,
    }
}

/// grpcfd beneath TLS: nsmgr passes the client's namespace as `inode://` with its fd on the
/// raw socket under TLS, as upstream's Go components do; vwire wires the connection into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_passed_beneath_tls_is_used() {
    let s = Setup::start();
    let fds = common::peerfd::PeerFds::new(common::peerfd::Attach::PerByte);
    let (channel, cert) = dial_mtls_fds(
        &s.dir.join("fwd.sock"),
        &s.pki.nsmgr,
        &s.pki.ca.der,
        fds.clone(),
    )
    .await
    .unwrap_or_else(|e| panic!("mTLS dial with fds: {e:?}"));
    let fwd = cert.id.clone().unwrap();
    let mut client = NetworkServiceClient::new(channel);
    let ns = std::fs::File::open(format!("/var/run/netns/{}", s.nsc_ns.0)).unwrap();
    let inode = fds.queue(&ns);
    let mut req = nsmgr_request(&s, "fd", "nsc-fd", &Tokens::valid(&s.pki, &fwd));
    req.get_mut().mechanism_preferences[0]
        .parameters
        .insert("inodeURL".into(), inode.clone());
    let got = client
        .request(req)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", s.vw.logs()))
        .into_inner();
    assert!(s.nsc_links().contains("nsc-fd"), "{}", s.nsc_links());
    assert_eq!(
        got.mechanism.as_ref().unwrap().parameters["inodeURL"],
        inode,
        "the answer carries the client's own URL back"
    );
    client
        .close(nsmgr_close(&s.pki, &fwd, &got))
        .await
        .unwrap_or_else(|e| panic!("close: {e:?}"));
    assert!(!s.nsc_links().contains("nsc-fd"), "{}", s.nsc_links());
}

/// `vwire health --spiffe` (the pod's probes) answers over mTLS with an SVID of its own
/// Workload API; without mTLS, or for a service that does not exist, it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_subcommand_probes_over_mtls() {
    let s = Setup::start();
    let probe_agent = WorkloadApi::start(
        &s.dir.join("probe-agent.sock"),
        s.pki
            .ca
            .svid("/ns/nsm-system/sa/probe", Duration::from_secs(3600)),
        s.pki.ca.der.clone(),
    );
    let run = |args: &[&str]| {
        std::process::Command::new(vwire_bin())
            .arg("health")
            .args(["--addr", &s.url(), "--timeout", "3s"])
            .args(args)
            .env("SPIFFE_ENDPOINT_SOCKET", probe_agent.endpoint())
            .output()
            .expect("run vwire health")
    };
    let ok = run(&["--spiffe"]);
    assert!(
        ok.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "status: SERVING"
    );
    let svc = run(&["--spiffe", "--service", "networkservice.NetworkService"]);
    assert!(
        svc.status.success(),
        "{}",
        String::from_utf8_lossy(&svc.stderr)
    );
    let unknown = run(&["--spiffe", "--service", "no.such.Service"]);
    assert_eq!(
        unknown.status.code(),
        Some(1),
        "an unknown service is not healthy"
    );
    let plain = run(&[]);
    assert_eq!(
        plain.status.code(),
        Some(1),
        "plaintext against the mTLS server: {}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let bad = run(&["--timeout", "soon"]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// Over TCP too: vwire's NSM API on `tcp://` is mTLS only; a plaintext client gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_api_is_mtls_only() {
    let pki = Pki::new();
    let dir = temp_file("x", "").with_file_name("");
    let agent = WorkloadApi::start(&dir.join("agent.sock"), pki.fwd.clone(), pki.ca.der.clone());
    let port = free_port();
    let vw = Vwire::start(&format!(
        "[nsm]\nname = \"fwd\"\nlisten_on = \"tcp://127.0.0.1:{port}\"\ntunnel_ip = \"none\"\n\
         spiffe_endpoint_socket = \"{}\"\n",
        agent.endpoint()
    ));
    let url = format!("tcp://127.0.0.1:{port}");
    let t0 = Instant::now();
    let (channel, cert) = loop {
        match dial_mtls(&url, &pki.nsmgr, &pki.ca.der).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "{e:?}\n{}",
                    vw.logs()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(cert.id.as_deref(), Some(pki.fwd.id.as_str()));
    let r = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect("health over mTLS on tcp");
    assert_eq!(r.into_inner().status(), ServingStatus::Serving);
    let plain = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        let r = HealthClient::new(ch)
            .check(HealthCheckRequest::default())
            .await;
        assert!(r.is_err(), "a plaintext client was answered");
    }
    drop(vw);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Kernel2Kernel replay with every hop in the zero-trust mesh: `vwire-nsc --spiffe` →
/// vwire → `vwire-nse --spiffe`, each with its own SVID from its own Workload API. The NSC's
/// kernel pings the NSE's through the connection; the NSC's Close (SIGTERM) leaves nothing.
#[test]
fn the_kernel_replay_runs_with_every_hop_on_mtls_and_tokens() {
    use common::nsm::{example, Lines, Proc};
    use std::process::{Command, Stdio};
    require(&["ip", "ping"]);
    assert!(
        example("vwire-nse").exists(),
        "build the examples first: cargo build -p vwire-examples"
    );
    let pki = Pki::new();
    let dir = temp_file("x", "").with_file_name("");
    let agent = |name: &str, svid: &Svid| {
        WorkloadApi::start(
            &dir.join(format!("{name}.sock")),
            svid.clone(),
            pki.ca.der.clone(),
        )
    };
    let (fwd_agent, nse_agent, nsc_agent) = (
        agent("fwd-agent", &pki.fwd),
        agent("nse-agent", &pki.nse),
        agent("nsc-agent", &pki.nsc),
    );
    let nsc_ns = Ns::new("zc");
    let nse_ns = Ns::new("ze");
    let vw = Vwire::start(&format!(
        "[dataplane]\nworkers = [1]\n[nsm]\nname = \"fwd\"\nlisten_on = \"unix://{d}/fwd.sock\"\n\
         tunnel_ip = \"none\"\nspiffe_endpoint_socket = \"{a}\"\n\
         [[endpoint]]\nname = \"nse-1\"\nurl = \"unix://{d}/nse.sock\"\nservice = \"icmp-responder\"\n",
        d = dir.display(),
        a = fwd_agent.endpoint(),
    ));
    let mut nse = Proc(
        Command::new("ip")
            .args(["netns", "exec", &nse_ns.0])
            .arg(example("vwire-nse"))
            .args([
                "--spiffe",
                "--listen",
                &format!("unix://{}/nse.sock", dir.display()),
            ])
            .args(["--cidr", "172.16.1.100/31"])
            .env("SPIFFE_ENDPOINT_SOCKET", nse_agent.endpoint())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start vwire-nse"),
    );
    let t0 = Instant::now();
    while !dir.join("nse.sock").exists() || !dir.join("fwd.sock").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "vwire or vwire-nse did not start:\n{}",
            vw.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut nsc = Command::new("ip")
        .args(["netns", "exec", &nsc_ns.0])
        .arg(example("vwire-nsc"))
        .args([
            "--spiffe",
            "--connect",
            &format!("unix://{}/fwd.sock", dir.display()),
        ])
        .env("SPIFFE_ENDPOINT_SOCKET", nsc_agent.endpoint())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start vwire-nsc");
    let out = Lines::new(nsc.stdout.take().unwrap());
    let mut nsc = Proc(nsc);
    let line = out.wait("", Duration::from_secs(20), "vwire-nsc");
    assert!(
        line.starts_with("connected "),
        "vwire-nsc: {line:?}\n{}",
        vw.logs()
    );
    let dst = line
        .split_whitespace()
        .nth(3)
        .expect("dst")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let ping = nsc_ns.exec(&format!("ping -c 3 -i 0.2 -W 2 {dst}"));
    assert!(
        ping.status.success(),
        "ping {dst} through the secured chain:\n{}\n{}",
        String::from_utf8_lossy(&ping.stdout),
        vw.logs()
    );
    let links = nsc_ns.links();
    assert!(links.contains("nsm-1"), "{links}");
    nsc.terminate();
    let t0 = Instant::now();
    while nsc_ns.links().contains("nsm-1") {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the NSC's interface outlived its Close:\n{}",
            vw.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nse.terminate();
    drop(vw);
}
