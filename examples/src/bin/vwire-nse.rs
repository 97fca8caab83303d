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
    match run(nse, &args.listen, shutdown).await {
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
