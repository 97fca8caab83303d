//! `vwire-nse`: an NSM icmp-responder endpoint for the KERNEL mechanism. See `--help`.

use std::process::ExitCode;

use clap::Parser;
use vwire_examples::nse::{run, Nse, NseArgs};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = NseArgs::parse();
    vwire_examples::init_logging();
    let nse = match Nse::new(&args.name, &args.service, &args.cidr) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("vwire-nse: --cidr: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = vwire_examples::shutdown_signal();
    tracing::info!(
        "{} serving {:?} on {} (pool {}, netns {})",
        args.name,
        args.service,
        args.listen,
        args.cidr,
        vwire_examples::own_netns_url()
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
