//! The NSM server vwire runs: which chain elements, in which order, and the gRPC services over
//! them.
//!
//! The chain, in order (each element's module says why it sits where it does):
//!
//! updatepath → begin → updatetoken → authorize → metadata → timeout → monitor → recvfd →
//! nsmonitor → monitor_downstream → mechanisms → xconnect → connect
//!
//! - updatetoken and authorize (with SPIFFE only) come right after begin, as in the NSM sdk:
//!   nothing below them runs for a request the policies refuse, and timeout sees the caller's
//!   token expiry that updatetoken wrote.
//! - recvfd comes after monitor, which must see the client's own `inode://` URLs, and before
//!   every element that opens the client's namespace by path.
//! - nsmonitor closes a connection itself through the whole chain when the client's namespace
//!   is gone, as timeout does when a token expires; it comes after recvfd, whose
//!   `/proc/<pid>/fd/<n>` paths it watches (by scanning /proc, since vwire's own fd keeps the
//!   path alive), and after begin, which serialises that close with the requests of the same id.
//! - monitor_downstream comes after monitor, which it reports the next hop's events through,
//!   and before connect: it follows the next hop connect stored, and stops following before
//!   connect closes it.
//!
//! KERNEL and MEMIF are cross-connected on this node; VXLAN and SRV6 through the uplink when
//! there is one ([`crate::remote`]).

use std::sync::Arc;

use tokio::sync::broadcast;
use vwire_proto::connection::{Connection, ConnectionEvent, MonitorScopeSelector};

use crate::chain::{Chain, Element};
use crate::config::EndpointConfig;
use crate::dataplane::SharedDataplane;
use crate::elements::authorize::Authorize;
use crate::elements::begin::Begin;
use crate::elements::connect::Connect;
use crate::elements::mechanisms::Mechanisms;
use crate::elements::metadata::{Metadata, MetadataElement};
use crate::elements::monitor::{self, Monitor};
use crate::elements::monitor_downstream::MonitorDownstream;
use crate::elements::nsmonitor::NsMonitor;
use crate::elements::recvfd::RecvFd;
use crate::elements::timeout::Timeout;
use crate::elements::updatepath::UpdatePath;
use crate::elements::updatetoken::UpdateToken;
use crate::elements::xconnect::Xconnect;
use crate::grpc::{ConnectionEvents, NsmService};
use crate::remote::Remote;
use crate::security::Trust;
use crate::transport::{Transport, TransportError, Url};

/// What the chain programs connections into.
pub struct Forwarding {
    /// The dataplane.
    pub dataplane: SharedDataplane,
    /// The REMOTE mechanisms, when there is an uplink.
    pub remote: Option<Arc<Remote>>,
    /// The link group of the veths this instance makes (`kernel::owned_group`), by which its
    /// leftovers are found (`elements::xconnect`'s garbage collection).
    pub veth_group: u32,
    /// Where connections are recorded so that a restarted vwire takes them back (see
    /// `elements::xconnect`); `None`: a restart drops them.
    pub state_dir: Option<std::path::PathBuf>,
    /// How KERNEL↔KERNEL connections are cross-connected.
    pub kernel_xconnect: crate::config::KernelXconnect,
}

/// How long a connection taken back after a restart waits for its refresh at least, even when
/// its recorded expiry passed while vwire was down.
const RESTORE_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// The assembled server.
pub struct NsmServer {
    chain: Arc<Chain>,
    monitor: Arc<Monitor>,
    service: Arc<NsmService>,
    begin: Arc<Begin>,
    timeout: Arc<Timeout>,
    xconnect: Arc<Xconnect>,
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
    /// Builds the chain for a hop named `name` that forwards to the endpoints the registry
    /// lists through nsmgr at `connect_to`, or without it to `endpoints`, dialling through
    /// `transport`, and programs `dataplane`, with the REMOTE mechanisms of `remote` when
    /// there is an uplink. A file descriptor a client names (`inode://`) must arrive within
    /// the dial timeout too. With `trust` (SPIFFE), tokens are signed and checked and the
    /// policies applied. Connections are wired into `forwarding`. Must run inside a tokio
    /// runtime.
    pub fn new(
        name: &str,
        endpoints: Vec<EndpointConfig>,
        connect_to: Option<&Url>,
        transport: Transport,
        trust: Option<Trust>,
        forwarding: Forwarding,
    ) -> Result<Arc<Self>, TransportError> {
        let Forwarding {
            dataplane,
            remote,
            veth_group,
            state_dir,
            kernel_xconnect,
        } = forwarding;
        let dial_timeout = transport.dial_timeout();
        let monitor = Monitor::new();
        let metadata = Metadata::new();
        let timeout = Timeout::new();
        let nsmonitor = NsMonitor::new();
        let identity = trust.as_ref().map(|t| t.identity.clone());
        let authorize = trust.map(|t| Arc::new(Authorize::new(t.requests, t.monitors)));
        let begin = Arc::new(Begin::new());
        let xconnect = Arc::new(Xconnect::new(
            metadata.clone(),
            dataplane,
            remote.clone(),
            veth_group,
            state_dir,
            kernel_xconnect,
        ));
        let mut elements: Vec<Arc<dyn Element>> =
            vec![Arc::new(UpdatePath::new(name)), begin.clone()];
        if let (Some(identity), Some(authorize)) = (&identity, &authorize) {
            elements.push(Arc::new(UpdateToken::new(identity.clone())));
            elements.push(authorize.clone());
        }
        elements.extend([
            Arc::new(MetadataElement::new(metadata.clone())) as Arc<dyn Element>,
            Arc::new(timeout.clone()),
            Arc::new(monitor.clone()),
            Arc::new(RecvFd::new(metadata.clone(), dial_timeout)),
            Arc::new(nsmonitor.clone()),
            Arc::new(MonitorDownstream::new(monitor.clone(), metadata.clone())),
            Arc::new(Mechanisms::with_remote(remote.clone())),
            xconnect.clone(),
            Arc::new(Connect::new(
                endpoints,
                connect_to,
                transport.clone(),
                identity,
                metadata.clone(),
                remote,
            )?),
        ]);
        let chain = Arc::new(Chain::new(elements));
        timeout.attach(&chain);
        nsmonitor.attach(&chain);
        let service = NsmService::new(chain.clone(), monitor.clone(), authorize, transport);
        Ok(Arc::new(Self {
            chain,
            monitor,
            service,
            begin,
            timeout,
            xconnect,
            metadata,
        }))
    }

    /// Takes back the connections a previous run recorded whose interfaces are still there
    /// (their traffic flows again when this returns): established for begin (a Close goes
    /// through), reported by the monitor, and closed by timeout if no refresh comes by their
    /// expiry (at least [`RESTORE_GRACE`] from now). Then starts the garbage collection. Call
    /// once, before serving.
    pub async fn start(&self) {
        for c in self.xconnect.start().await {
            self.timeout.recover(&c, RESTORE_GRACE);
            self.monitor.recover(c.clone());
            self.begin.recover(c);
        }
    }

    /// The gRPC services over this server's chain, for [`crate::grpc::serve`].
    pub fn service(&self) -> Arc<NsmService> {
        self.service.clone()
    }

    /// Closes every established connection through the chain, all at once so that their
    /// teardowns share kernel rounds (at shutdown: nothing is left behind in any namespace).
    pub async fn close_all(&self) {
        let mut closes = tokio::task::JoinSet::new();
        for c in self.monitor.connections() {
            let chain = self.chain.clone();
            closes.spawn(async move { chain.close(c).await });
        }
        while let Some(r) = closes.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("closing a connection at shutdown: {e}"),
                Err(e) => tracing::warn!("closing a connection at shutdown: {e}"),
            }
        }
        self.xconnect.forget_state();
    }
}
