//! Build script: compiles the SPIFFE Workload API (`tests/proto/workload.proto`, written for the
//! tests' own Workload API server) with protox, so no `protoc` is needed, into tonic clients and
//! servers in `OUT_DIR`. The proto has no package, so the generated file is `_.rs`; tests include
//! it with `include!(concat!(env!("OUT_DIR"), "/_.rs"))`. vwire's library does not use it.

use std::process::ExitCode;

/// The proto and its include root (`google/protobuf/struct.proto` is built into protox).
const PROTO: &str = "tests/proto/workload.proto";
const INCLUDE: &str = "tests/proto";

fn main() -> ExitCode {
    println!("cargo:rerun-if-changed={PROTO}");
    let fds = match protox::compile([PROTO], [INCLUDE]) {
        Ok(fds) => fds,
        Err(e) => {
            eprintln!("protox failed to compile {PROTO}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
    {
        eprintln!("tonic-prost-build failed to generate the Workload API code: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
