//! The `vwire-pktgen` binary: see the library's docs (`src/lib.rs`).

use std::process::ExitCode;

use clap::Parser;
use vwire_pktgen::cli;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vwire-pktgen: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
