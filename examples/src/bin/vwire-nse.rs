//! `vwire-nse`: an NSM icmp-responder endpoint for the KERNEL and MEMIF mechanisms. See `--help`.

use std::process::ExitCode;

use clap::Parser;
use vwire_examples::nse::{run, Nse, NseArgs};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = NseArgs::parse();
    vwire_examples::init_logging();
    let nse = match Nse::from_args(&args) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("vwire-nse: --cidr: {e}");
            return ExitCode::from(2);
        }
    };
    let identity = match vwire_examples::transport::identity(args.spiffe).await {
        Ok(id) => id,
        Err(e) => {
            eprintln!("vwire-nse: {e}");
            return ExitCode::FAILURE;
        }
    };
    let transport = vwire_examples::transport::transport_for(identity.as_ref());
    let nse = match identity.clone() {
        Some(id) => nse.secured(id),
        None => nse,
    };
    let shutdown = vwire_examples::shutdown_signal();
    tracing::info!(
        "{} serving {:?} on {} (pool {}, netns {}, mechanisms {:?})",
        args.name,
        args.service,
        args.listen,
        args.cidr,
        vwire_examples::own_netns_url(),
        args.mechanisms
    );
    let served = run(nse, &args.listen, &transport, shutdown).await;
    if let Some(id) = identity {
        id.shutdown().await;
    }
    match served {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vwire-nse: {}", vwire_examples::transport::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
