//! Build script: compiles the NSM `.proto` files under `nsm/` with protox (a pure-Rust protobuf
//! compiler, so no `protoc` binary is needed) and generates prost messages plus tonic clients and
//! servers into `OUT_DIR`, one file per proto package (`networkservice.rs`, `connection.rs`, ...).

use std::path::PathBuf;
use std::process::ExitCode;

use protox::prost::Message as _;

/// Include root. The networkservice files import each other by bare file name
/// (`import "connection.proto"`), so their descriptor names are flat (`connection.proto`), and the
/// registry file is `registry/registry.proto`, as nsm-api.md section 1 requires.
const INCLUDE: &str = "nsm";

/// Files to compile; their imports (including the well-known `google/protobuf/*.proto`, which protox
/// carries built in) are resolved against [`INCLUDE`].
const PROTOS: &[&str] = &[
    "nsm/connectioncontext.proto",
    "nsm/connection.proto",
    "nsm/networkservice.proto",
    "nsm/registry/registry.proto",
];

/// File in `OUT_DIR` that receives the encoded `FileDescriptorSet` (ours plus the imported
/// well-known files); `src/lib.rs` embeds it.
const DESCRIPTOR_SET: &str = "nsm_descriptor_set.bin";

fn main() -> ExitCode {
    // A directory makes cargo rerun the script when any file below it changes (or one is added).
    println!("cargo:rerun-if-changed={INCLUDE}");

    let fds = match protox::compile(PROTOS, [INCLUDE]) {
        Ok(fds) => fds,
        Err(e) => {
            eprintln!("protox failed to compile the NSM protos: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Also keep the descriptor set itself (for gRPC server reflection and the descriptor tests).
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        eprintln!("OUT_DIR is not set; run this through cargo");
        return ExitCode::FAILURE;
    };
    if let Err(e) = std::fs::write(out_dir.join(DESCRIPTOR_SET), fds.encode_to_vec()) {
        eprintln!("cannot write {DESCRIPTOR_SET}: {e}");
        return ExitCode::FAILURE;
    }
    // Well-known types map to `prost_types` (Timestamp) and `()` (Empty), not to generated copies.
    if let Err(e) = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
    {
        eprintln!("tonic-prost-build failed to generate the NSM code: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
