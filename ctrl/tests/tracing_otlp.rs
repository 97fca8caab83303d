//! The chain's spans over OTLP: an OTLP/gRPC trace receiver written here collects what vwire
//! exports to `NSM_OPEN_TELEMETRY_ENDPOINT`. A Request that passes every element and fails in
//! `connect` (no endpoint: NotFound) gives one span per element, nested in chain order, with
//! the connection id, `service.name` = NSM_NAME and the error on `connect`'s span; a Close
//! gives a span per element too. The spans still batched when SIGTERM comes are flushed
//! before vwire exits.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use tonic::Code;
use vwire::transport::{dial, Url, DIAL_TIMEOUT};
use vwire_proto::connection::{Connection, Mechanism};
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;
use vwire_proto::networkservice::NetworkServiceRequest;

/// One span as received, with what the assertions need.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    trace_id: Vec<u8>,
    attrs: HashMap<String, String>,
    error: bool,
}

/// The OTLP trace receiver: keeps every span of every Export.
#[derive(Default, Clone)]
struct Collector(Arc<Mutex<Vec<Got>>>);

fn text(kv: &[KeyValue]) -> HashMap<String, String> {
    kv.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(v) => format!("{v:?}"),
                None => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let resource = text(&rs.resource.map(|r| r.attributes).unwrap_or_default());
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    got.push(Got {
                        service: service.clone(),
                        name: s.name.clone(),
                        span_id: s.span_id.clone(),
                        parent: s.parent_span_id.clone(),
                        trace_id: s.trace_id.clone(),
                        attrs: text(&s.attributes),
                        error: s
                            .status
                            .as_ref()
                            .is_some_and(|st| st.code == StatusCode::Error as i32),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The elements of an insecure chain, in order (updatetoken and authorize come with SPIFFE).
const ELEMENTS: [&str; 11] = [
    "updatepath",
    "begin",
    "metadata",
    "timeout",
    "monitor",
    "recvfd",
    "nsmonitor",
    "monitor_downstream",
    "mechanisms",
    "xconnect",
    "connect",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_element_exports_a_span_over_otlp() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let sock = temp_file("x", "").with_file_name("nsm.sock");
    let mut vw = Vwire::start(&format!(
        "[nsm]\nname = \"fwd-otel\"\nlisten_on = \"unix://{}\"\ninsecure = true\n\
         tunnel_ip = \"none\"\nopen_telemetry_endpoint = \"{otlp}\"\n",
        sock.display()
    ));
    let channel = dial(&Url::Unix(sock.clone()), DIAL_TIMEOUT)
        .await
        .expect("dial vwire");
    let mut ns = NetworkServiceClient::new(channel);
    let conn = Connection {
        id: "otel-1".into(),
        network_service: "no-such-service".into(),
        ..Default::default()
    };
    let e = ns
        .request(NetworkServiceRequest {
            connection: Some(conn.clone()),
            mechanism_preferences: vec![Mechanism {
                cls: "LOCAL".into(),
                r#type: "KERNEL".into(),
                ..Default::default()
            }],
        })
        .await
        .expect_err("no endpoint for the service");
    assert_eq!(e.code(), Code::NotFound, "{e:?}\n{}", vw.logs());
    ns.close(conn).await.expect("close of an unknown id");

    // The batch is still waiting for its 5 s schedule: SIGTERM must flush it.
    let (status, took) = vw.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}\n{}", vw.logs());
    let spans = collector.0.lock().unwrap().clone();
    assert!(
        !spans.is_empty(),
        "no span reached the receiver (in {took:?}):\n{}",
        vw.logs()
    );

    for op in ["request", "close"] {
        let chain: Vec<&Got> = spans.iter().filter(|s| s.attrs["op"] == op).collect();
        let names: Vec<&str> = chain.iter().map(|s| s.name.as_str()).collect();
        // A close of an unknown id ends in begin or passes through; a request passes all.
        let want: &[&str] = if op == "request" { &ELEMENTS } else { &names };
        let mut sorted = names.clone();
        sorted.sort();
        let mut want_sorted = want.to_vec();
        want_sorted.sort();
        assert_eq!(
            sorted, want_sorted,
            "{op}: one span per element: {chain:#?}"
        );
        // Nesting: each element's span is a child of the previous element's, in chain order.
        let by_name: HashMap<&str, &Got> = chain.iter().map(|s| (s.name.as_str(), *s)).collect();
        let order: Vec<&str> = ELEMENTS
            .iter()
            .copied()
            .filter(|n| by_name.contains_key(n))
            .collect();
        assert!(!order.is_empty(), "{op}: no element spans");
        assert_eq!(
            order[0], "updatepath",
            "{op}: the chain starts at updatepath"
        );
        assert!(by_name["updatepath"].parent.is_empty(), "{op}: a root span");
        for w in order.windows(2) {
            let (parent, child) = (by_name[w[0]], by_name[w[1]]);
            assert_eq!(
                child.parent, parent.span_id,
                "{op}: {} under {}",
                w[1], w[0]
            );
            assert_eq!(child.trace_id, parent.trace_id, "{op}: one trace");
        }
        for s in &chain {
            assert_eq!(s.service, "fwd-otel", "service.name = NSM_NAME");
            assert_eq!(s.attrs["element"], s.name);
            assert!(!s.attrs["connection_id"].is_empty(), "{s:?}");
        }
        // updatepath sees the client's id; the elements below it this hop's.
        assert_eq!(by_name["updatepath"].attrs["connection_id"], "otel-1");
        let below: Vec<&str> = order[1..]
            .iter()
            .map(|n| by_name[n].attrs["connection_id"].as_str())
            .collect();
        assert!(below.windows(2).all(|w| w[0] == w[1]), "{op}: {below:?}");
    }
    // The request's failure is on connect's span and, as it unwinds, on every span above.
    let connect = spans
        .iter()
        .find(|s| s.name == "connect" && s.attrs["op"] == "request")
        .unwrap();
    assert!(
        connect.error,
        "connect's span has status ERROR: {connect:?}"
    );
    assert!(
        connect
            .attrs
            .get("error")
            .is_some_and(|e| e.contains("NotFound")),
        "{connect:?}"
    );
}
