//! Logs and traces: the tracing subscriber of the `vwire` binary, the run-time log level
//! (SIGUSR1 / SIGUSR2), and the OTLP export of the chain's spans.
//!
//! Layers of the subscriber:
//! - the log lines (text or JSON, on stderr), filtered by NSM_LOG_LEVEL through a reloadable
//!   filter: [`raise_to_trace`] (SIGUSR1, as forwarder-vpp does) and [`restore_level`]
//!   (SIGUSR2) swap it at run time;
//! - with an OTLP endpoint ([`crate::config::otlp_endpoint`]), the OpenTelemetry layer, which
//!   sees only the chain's `element` spans ([`crate::chain`], target `vwire::chain`, level
//!   TRACE; not the events in them) and exports them in batches over OTLP/gRPC with `service.name` = NSM_NAME.
//!
//! The element spans are at TRACE so that, with export off and a log level above TRACE, no
//! layer wants them: tracing caches that per call site, and creating one costs a relaxed load
//! (measured in `chain::tests`). At TRACE they give the log lines of the elements their
//! context (`element{element=connect op=request connection_id=...}`), as the sdk traces every
//! element in TRACE mode.
//!
//! Export threads: the sdk's batch span processor runs on its own thread and calls the tonic
//! exporter from there; the exporter's channel lives on a small current-thread runtime on
//! another thread, `vwire-otel`, which outlives the control runtime so that [`Observability::
//! shutdown`] can still flush after the control loop has stopped. Both threads start after the
//! control thread is pinned, so they inherit its CPUs.

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::info;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, Layer, Registry};

use crate::config::LogFormat;

/// The target of the chain's element spans (the module that creates them).
pub const CHAIN_TARGET: &str = "vwire::chain";

/// The reloadable log filter and the filter it was configured with.
struct Level {
    handle: reload::Handle<EnvFilter, Registry>,
    configured: String,
}

static LEVEL: OnceLock<Level> = OnceLock::new();

/// Errors of starting the export.
#[derive(Debug, thiserror::Error)]
pub enum ObservabilityError {
    /// the OTLP exporter could not be built
    #[error("OTLP exporter for {endpoint}: {reason}")]
    Exporter {
        /// the collector
        endpoint: String,
        /// why
        reason: String,
    },
    /// the exporter's runtime or thread could not start
    #[error("OTLP exporter runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// a global subscriber was already set
    #[error("a tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// What must live as long as logging and export do; [`Observability::shutdown`] flushes.
#[must_use = "dropping it without shutdown loses the spans not yet exported"]
pub struct Observability {
    export: Option<Export>,
}

struct Export {
    provider: SdkTracerProvider,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// The log filter of `level`, or `info` for one tracing cannot parse.
fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber: log lines of `format` filtered by `level` on stderr, and,
/// with `otlp_endpoint` (`http://host:port`), the export of the chain's spans as service
/// `service_name`.
pub fn init(
    level: &str,
    format: LogFormat,
    service_name: &str,
    otlp_endpoint: Option<&str>,
) -> Result<Observability, ObservabilityError> {
    let (reloadable, handle) = reload::Layer::new(filter(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(reloadable)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(reloadable)
            .boxed(),
    };
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![logs];
    let export = match otlp_endpoint {
        Some(endpoint) => {
            let (export, layer) = start_export(endpoint, service_name)?;
            layers.push(layer);
            Some(export)
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|_| ObservabilityError::AlreadyInstalled)?;
    let _ = LEVEL.set(Level {
        handle,
        configured: level.to_string(),
    });
    if let Some(endpoint) = otlp_endpoint {
        info!(%endpoint, service = %service_name, "exporting the chain's spans over OTLP");
    }
    Ok(Observability { export })
}

/// The exporter, its batch processor and the tracing layer that feeds it.
fn start_export(
    endpoint: &str,
    service_name: &str,
) -> Result<(Export, Box<dyn Layer<Registry> + Send + Sync>), ObservabilityError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The channel's worker task is spawned here, on `rt`, which the thread below drives.
    let exporter = {
        let _context = rt.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| ObservabilityError::Exporter {
                endpoint: endpoint.to_string(),
                reason: e.to_string(),
            })?
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("vwire-otel".into())
        .spawn(move || {
            let _ = rt.block_on(stopped);
        })?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name.to_string())
                .build(),
        )
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("vwire"))
        .with_location(false)
        .with_threads(false)
        .with_filter(filter_fn(|m| m.is_span() && m.target() == CHAIN_TARGET))
        .boxed();
    Ok((
        Export {
            provider,
            stop,
            thread,
        },
        layer,
    ))
}

impl Observability {
    /// Exports the spans not yet exported and stops the export threads (at vwire's shutdown).
    pub fn shutdown(self) {
        if let Some(e) = self.export {
            if let Err(err) = e.provider.shutdown() {
                tracing::warn!("flushing the spans: {err}");
            }
            let _ = e.stop.send(());
            let _ = e.thread.join();
        }
    }
}

/// SIGUSR1: logs everything (TRACE), whatever NSM_LOG_LEVEL says, until [`restore_level`].
pub fn raise_to_trace() {
    set_level("trace", "SIGUSR1");
}

/// SIGUSR2: back to the configured NSM_LOG_LEVEL.
pub fn restore_level() {
    if let Some(l) = LEVEL.get() {
        set_level(&l.configured, "SIGUSR2");
    }
}

fn set_level(level: &str, why: &str) {
    let Some(l) = LEVEL.get() else { return };
    // Logged at WARN, before lowering and after raising, so that the line shows at any level.
    let line = || tracing::warn!(level, configured = %l.configured, "{why}: log level changed");
    let raising = level == "trace";
    if !raising {
        line();
    }
    if let Err(e) = l.handle.reload(filter(level)) {
        tracing::warn!("{why}: the log level could not change: {e}");
        return;
    }
    if raising {
        line();
    }
}
