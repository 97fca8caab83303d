//! The NSM chain: a connection request travels through a list of small elements, each with one
//! concern, the way the NSM sdk builds its endpoints.
//!
//! An [`Element`] receives the request and the rest of the chain as [`Next`]. It may change the
//! request on the way down, call `next`, and act on the result on the way back up. It must undo
//! its own work when `next` fails after it acted, and on `close`. Elements that pass a request
//! through untouched (a mechanism element seeing another mechanism) just call `next`.
//!
//! The chain ends after its last element: a request then returns the connection as it is, and a
//! close succeeds.
//!
//! Every call of an element runs in a tracing span `element` (target `vwire::chain`, level
//! TRACE) with the fields `element` (its [`Element::name`]), `op` (`request` or `close`),
//! `connection_id` (the id of the connection as it enters the element) and, when the call
//! fails, `error` (the status code) with OpenTelemetry's `otel.status_code = "ERROR"` and
//! `otel.status_message`; a TRACE event in the span logs the outcome (`done` or `failed`). The
//! span of the next element is a child of the current one's, so a
//! trace shows the chain's order and nesting. No subscriber wants these spans unless the log
//! level is TRACE or the spans are exported ([`crate::observability`]); then creating one is a
//! check of the call site's cached interest and the element's future is not wrapped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tonic::Status;
use vwire_proto::connection::Connection;
use vwire_proto::networkservice::NetworkServiceRequest;

use rustls::pki_types::CertificateDer;

use crate::transport::FdConn;

/// What the chain knows of the caller of a Request or Close: the gRPC connection it arrived
/// on and the call's metadata. This is the chain's one piece of per-call context, as Go's
/// `context.Context` carries the peer, grpcfd's transceiver and the per-RPC token in the NSM
/// sdk.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The connection's file descriptors: `Some` over a unix socket (grpcfd), `None` over TCP.
    pub fds: Option<FdConn>,
    /// The caller's TLS certificate (mTLS only).
    pub certificate: Option<CertificateDer<'static>>,
    /// The caller's path token (`nsm-client-token`) and its expiry
    /// (`nsm-client-token-expires`, when given and valid).
    pub token: Option<(String, Option<std::time::SystemTime>)>,
}

tokio::task_local! {
    /// The caller of the Request or Close the chain runs.
    static CALLER: Caller;
}

/// Runs `work` (a Request or Close through the chain) for `caller`. Elements read it with
/// [`caller`].
pub async fn with_caller<F: Future>(caller: Caller, work: F) -> F::Output {
    CALLER.scope(caller, work).await
}

/// The caller of the work running; `None` for work the chain starts itself (a timeout's
/// Close).
pub fn caller() -> Option<Caller> {
    CALLER.try_with(Clone::clone).ok()
}

/// Runs `work` for a caller of which only the file descriptors are known (see
/// [`with_caller`]).
pub async fn with_peer_fds<F: Future>(fds: Option<FdConn>, work: F) -> F::Output {
    with_caller(
        Caller {
            fds,
            ..Caller::default()
        },
        work,
    )
    .await
}

/// The file descriptors of the calling gRPC connection; `None` over TCP and for work the chain
/// starts itself.
pub fn peer_fds() -> Option<FdConn> {
    caller().and_then(|c| c.fds)
}

/// A boxed future, as elements return (trait objects cannot use `async fn`).
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One element of the chain.
pub trait Element: Send + Sync {
    /// The element's name in spans and logs: its module's name (`updatepath`, `connect`).
    fn name(&self) -> &'static str;

    /// Handles a Request (or refresh): work before and/or after `next.request(...)`.
    fn request<'a>(
        &'a self,
        req: NetworkServiceRequest,
        next: Next<'a>,
    ) -> BoxFut<'a, Result<Connection, Status>>;

    /// Handles a Close: undo this element's work and call `next.close(...)`.
    fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>>;
}

/// The rest of the chain after the current element.
#[derive(Clone, Copy)]
pub struct Next<'a> {
    rest: &'a [Arc<dyn Element>],
}

/// The span of one call of element `name` (see the module doc).
fn element_span(name: &'static str, op: &'static str, connection_id: &str) -> tracing::Span {
    tracing::trace_span!(
        target: "vwire::chain",
        "element",
        otel.name = name,
        element = name,
        op,
        connection_id,
        error = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
    )
}

/// `fut` inside `span`, recording a failure on it; `fut` itself when no subscriber wants the
/// span (no extra allocation on the untraced path).
fn traced<'a, T: 'a>(
    span: tracing::Span,
    fut: BoxFut<'a, Result<T, Status>>,
) -> BoxFut<'a, Result<T, Status>> {
    use tracing::Instrument;
    if span.is_disabled() {
        return fut;
    }
    let recorder = span.clone();
    Box::pin(
        async move {
            let r = fut.await;
            match &r {
                // The sdk's TRACE log of every element's outcome, in the element's span.
                Ok(_) => tracing::trace!(target: "vwire::chain", "done"),
                Err(status) => {
                    recorder.record("error", tracing::field::debug(status.code()));
                    recorder.record("otel.status_code", "ERROR");
                    recorder.record("otel.status_message", status.message());
                    tracing::trace!(target: "vwire::chain", code = ?status.code(), message = status.message(), "failed");
                }
            }
            r
        }
        .instrument(span),
    )
}

impl<'a> Next<'a> {
    /// Passes a request down.
    pub fn request(self, req: NetworkServiceRequest) -> BoxFut<'a, Result<Connection, Status>> {
        match self.rest.split_first() {
            Some((e, rest)) => {
                let id = req.connection.as_ref().map_or("", |c| c.id.as_str());
                let span = element_span(e.name(), "request", id);
                let fut = span.in_scope(|| e.request(req, Next { rest }));
                traced(span, fut)
            }
            None => Box::pin(async move { Ok(req.connection.unwrap_or_default()) }),
        }
    }

    /// Passes a close down.
    pub fn close(self, conn: Connection) -> BoxFut<'a, Result<(), Status>> {
        match self.rest.split_first() {
            Some((e, rest)) => {
                let span = element_span(e.name(), "close", &conn.id);
                let fut = span.in_scope(|| e.close(conn, Next { rest }));
                traced(span, fut)
            }
            None => Box::pin(async move { Ok(()) }),
        }
    }
}

/// An assembled chain.
#[derive(Clone)]
pub struct Chain {
    elements: Arc<[Arc<dyn Element>]>,
}

impl Chain {
    /// A chain of `elements`, in order.
    pub fn new(elements: Vec<Arc<dyn Element>>) -> Self {
        Self {
            elements: elements.into(),
        }
    }

    /// Runs a request through the chain.
    pub async fn request(&self, req: NetworkServiceRequest) -> Result<Connection, Status> {
        Next {
            rest: &self.elements,
        }
        .request(req)
        .await
    }

    /// Runs a close through the chain.
    pub async fn close(&self, conn: Connection) -> Result<(), Status> {
        Next {
            rest: &self.elements,
        }
        .close(conn)
        .await
    }
}

/// The connection of a request, or InvalidArgument naming the field.
pub fn connection_of(req: &NetworkServiceRequest) -> Result<&Connection, Status> {
    req.connection
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("request.connection: missing"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what passes through it, for element tests.
    #[derive(Default)]
    pub(crate) struct Recorder {
        pub(crate) requests: Mutex<Vec<NetworkServiceRequest>>,
        pub(crate) closes: Mutex<Vec<Connection>>,
        pub(crate) fail: Mutex<Option<Status>>,
    }

    impl Element for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }

        fn request<'a>(
            &'a self,
            req: NetworkServiceRequest,
            next: Next<'a>,
        ) -> BoxFut<'a, Result<Connection, Status>> {
            Box::pin(async move {
                self.requests.lock().unwrap().push(req.clone());
                if let Some(s) = self.fail.lock().unwrap().clone() {
                    return Err(s);
                }
                next.request(req).await
            })
        }
        fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
            Box::pin(async move {
                self.closes.lock().unwrap().push(conn.clone());
                next.close(conn).await
            })
        }
    }

    /// Passes everything through.
    struct Pass;

    impl Element for Pass {
        fn name(&self) -> &'static str {
            "pass"
        }
        fn request<'a>(
            &'a self,
            req: NetworkServiceRequest,
            next: Next<'a>,
        ) -> BoxFut<'a, Result<Connection, Status>> {
            Box::pin(async move { next.request(req).await })
        }
        fn close<'a>(&'a self, conn: Connection, next: Next<'a>) -> BoxFut<'a, Result<(), Status>> {
            Box::pin(async move { next.close(conn).await })
        }
    }

    /// An element span as recorded: (element, parent element, connection id, error).
    type SpanRow = (String, Option<String>, String, String);

    /// Records the element spans.
    #[derive(Clone, Default)]
    struct Spans(Arc<Mutex<Vec<SpanRow>>>);

    #[derive(Default)]
    struct Fields(Vec<(String, String)>);

    impl tracing::field::Visit for Fields {
        fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
            self.0.push((f.name().to_string(), format!("{v:?}")));
        }
        fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
            self.0.push((f.name().to_string(), v.to_string()));
        }
    }

    impl<S> tracing_subscriber::Layer<S> for Spans
    where
        S: tracing::Subscriber + for<'l> tracing_subscriber::registry::LookupSpan<'l>,
    {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            id: &tracing::span::Id,
            ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut f = Fields::default();
            attrs.record(&mut f);
            let get = |f: &Fields, k: &str| {
                f.0.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let span = ctx.span(id).expect("a new span");
            let parent = span
                .parent()
                .and_then(|p| p.extensions().get::<String>().cloned());
            span.extensions_mut().insert(get(&f, "element"));
            let mut v = self.0.lock().unwrap();
            v.push((
                get(&f, "element"),
                parent,
                get(&f, "connection_id"),
                String::new(),
            ));
        }
        fn on_record(
            &self,
            id: &tracing::span::Id,
            values: &tracing::span::Record<'_>,
            ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut f = Fields::default();
            values.record(&mut f);
            let name = ctx
                .span(id)
                .and_then(|s| s.extensions().get::<String>().cloned());
            let mut v = self.0.lock().unwrap();
            if let (Some(name), Some((_, e))) = (name, f.0.into_iter().find(|(n, _)| n == "error"))
            {
                if let Some(row) = v.iter_mut().rev().find(|r| r.0 == name) {
                    row.3 = e;
                }
            }
        }
    }

    #[test]
    fn each_element_runs_in_a_span_under_the_previous_one() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let spans = Spans::default();
        let subscriber = tracing_subscriber::registry().with(spans.clone());
        let failing = Arc::new(Recorder::default());
        *failing.fail.lock().unwrap() = Some(Status::not_found("none"));
        let chain = Chain::new(vec![Arc::new(Pass), failing]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let req = NetworkServiceRequest {
                connection: Some(Connection {
                    id: "c1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let e = rt.block_on(chain.request(req)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::NotFound);
        });
        let got = spans.0.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                ("pass".into(), None, "c1".into(), "NotFound".into()),
                (
                    "recorder".into(),
                    Some("pass".into()),
                    "c1".into(),
                    "NotFound".into()
                ),
            ]
        );
    }

    /// What the element spans cost: 13 pass-through elements (vwire's chain length), with a
    /// log layer at INFO (vwire with export off: no layer wants the spans) and at TRACE (the
    /// spans are created and their events formatted, into a sink).
    #[test]
    #[ignore = "a measurement: cargo test --release -p vwire --lib chain::tests::cost -- --ignored --nocapture"]
    fn cost_of_element_spans() {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::Layer as _;
        const ROUNDS: u32 = 200_000;
        let chain = Chain::new(
            (0..13)
                .map(|_| Arc::new(Pass) as Arc<dyn Element>)
                .collect(),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let req = NetworkServiceRequest {
            connection: Some(Connection {
                id: "c1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        for level in [
            tracing_subscriber::filter::LevelFilter::INFO,
            tracing_subscriber::filter::LevelFilter::TRACE,
        ] {
            let logs = tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(level);
            let subscriber = tracing_subscriber::registry().with(logs);
            tracing::subscriber::with_default(subscriber, || {
                rt.block_on(async {
                    for _ in 0..ROUNDS / 10 {
                        chain.request(req.clone()).await.unwrap();
                    }
                    let t0 = std::time::Instant::now();
                    for _ in 0..ROUNDS {
                        chain.request(req.clone()).await.unwrap();
                    }
                    let ns = t0.elapsed().as_nanos() as f64 / f64::from(ROUNDS);
                    println!(
                        "log level {level}: {ns:.0} ns per request through 13 elements ({:.1} ns per element)",
                        ns / 13.0
                    );
                })
            });
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_empty_chain_returns_the_connection() {
        let c = Chain::new(vec![]);
        let conn = Connection {
            id: "x".into(),
            ..Default::default()
        };
        let req = NetworkServiceRequest {
            connection: Some(conn.clone()),
            ..Default::default()
        };
        assert_eq!(c.request(req).await.unwrap(), conn);
        assert!(c.close(conn).await.is_ok());
    }
}
