//! Compiles `proto/` with protox (pure Rust, no `protoc` needed) and generates
//! the tonic clients and servers. The same descriptor set, with the
//! `google.rpc` detail messages, is written to `OUT_DIR` for server reflection.

use std::path::PathBuf;

use prost::Message;

const FILES: &[&str] = &[
    "esaas/v1/cluster.proto",
    "esaas/v1/operation.proto",
    "esaas/v1/admin.proto",
    "esaas/v1/worker.proto",
    // Not used by the API messages directly, but served through reflection so
    // that grpcurl can print the details of an error.
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());

    let fds = protox::compile(FILES, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("esaas_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // `WorkerService.Connect` would collide with the generated
        // `connect` constructor; clients are built with `new(channel)`.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
