//! The NSM server vwire runs: which chain elements, in which order, and the gRPC services over
//! them.
//!
//! The chain, in order (each element's module says why it sits where it does):
//!
//! updatepath → begin → metadata → timeout → nsmonitor → monitor → monitor_downstream →
//! mechanisms → xconnect → connect
//!
//! - nsmonitor sits next to timeout: both close a connection themselves through the whole chain
//!   (a client namespace that is gone), so both come after begin, which serialises that close
//!   with the requests of the same id, and before monitor, so the close is reported (DELETE).
//! - monitor_downstream sits right after monitor, which it reports the next hop's events
//!   through, and before connect: it follows the next hop connect stored, and stops following
//!   before connect closes it.
//!
//! KERNEL and MEMIF are cross-connected on this node; VXLAN and SRV6 through the uplink when
//! there is one ([`crate::remote`]).

use std::sync::Arc;

use tokio::sync::broadcast;
use vwire_proto::connection::{Connection, ConnectionEvent, MonitorScopeSelector};

use crate::chain::Chain;
use crate::config::EndpointConfig;
use crate::dataplane::SharedDataplane;
use crate::elements::begin::Begin;
use crate::elements::connect::Connect;
use crate::elements::mechanisms::Mechanisms;
use crate::elements::metadata::{Metadata, MetadataElement};
use crate::elements::monitor::{self, Monitor};
use crate::elements::monitor_downstream::MonitorDownstream;
use crate::elements::nsmonitor::NsMonitor;
use crate::elements::timeout::Timeout;
use crate::elements::updatepath::UpdatePath;
use crate::elements::xconnect::Xconnect;
use crate::grpc::{ConnectionEvents, NsmService};
use crate::remote::Remote;

/// The assembled server.
pub struct NsmServer {
    chain: Arc<Chain>,
    monitor: Arc<Monitor>,
    service: Arc<NsmService>,
    /// Per-connection metadata (exposed for tests and metrics).
    pub metadata: Arc<Metadata>,
}

impl ConnectionEvents for Monitor {
    fn subscribe(
        &self,
        sel: &MonitorScopeSelector,
    ) -> (ConnectionEvent, broadcast::Receiver<ConnectionEvent>) {
        Monitor::subscribe(self, sel)
    }

    fn matches(&self, sel: &MonitorScopeSelector, conn: &Connection) -> bool {
        monitor::matches(sel, conn)
    }
}

impl NsmServer {
    /// Builds the chain for a hop named `name` that forwards to `endpoints` and programs
    /// `dataplane`, with the REMOTE mechanisms of `remote` when there is an uplink.
    pub fn new(
        name: &str,
        endpoints: Vec<EndpointConfig>,
        dataplane: SharedDataplane,
        remote: Option<Arc<Remote>>,
    ) -> Arc<Self> {
        let monitor = Monitor::new();
        let metadata = Metadata::new();
        let timeout = Timeout::new();
        let nsmonitor = NsMonitor::new();
        let chain = Arc::new(Chain::new(vec![
            Arc::new(UpdatePath::new(name)),
            Arc::new(Begin::new()),
            Arc::new(MetadataElement::new(metadata.clone())),
            Arc::new(timeout.clone()),
            Arc::new(nsmonitor.clone()),
            Arc::new(monitor.clone()),
            Arc::new(MonitorDownstream::new(monitor.clone(), metadata.clone())),
            Arc::new(Mechanisms::with_remote(remote.clone())),
            Arc::new(Xconnect::new(metadata.clone(), dataplane, remote.clone())),
            Arc::new(Connect::new(endpoints, metadata.clone(), remote)),
        ]));
        timeout.attach(&chain);
        nsmonitor.attach(&chain);
        let service = NsmService::new(chain.clone(), monitor.clone());
        Arc::new(Self {
            chain,
            monitor,
            service,
            metadata,
        })
    }

    /// The gRPC services over this server's chain, for [`crate::grpc::serve`].
    pub fn service(&self) -> Arc<NsmService> {
        self.service.clone()
    }

    /// Closes every established connection through the chain (at shutdown: nothing is left
    /// behind in any namespace).
    pub async fn close_all(&self) {
        for c in self.monitor.connections() {
            if let Err(e) = self.chain.close(c).await {
                tracing::warn!("closing a connection at shutdown: {e}");
            }
        }
    }
}
