//! Compiles the crate's own copy of the API's protos (`proto/`, kept equal to the
//! repository's `proto/` by `scripts/sync-protos.sh --check` in `make test`) with protox:
//! pure Rust, so a downstream build needs neither `protoc` nor the repository.
//! `google.rpc` types come from `tonic-types`, so that its `StatusExt` decodes them.

use std::path::PathBuf;

use prost::Message;

const FILES: &[&str] = &[
    "esaas/v1/catalog.proto",
    "esaas/v1/cluster.proto",
    "esaas/v1/operation.proto",
    "esaas/v1/admin.proto",
    "esaas/v1/worker.proto",
    // Not used by the API messages directly, but in the descriptor set so that a
    // server's reflection lets grpcurl print the details of an error.
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());

    let fds = protox::compile(FILES, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("esaas_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        // Servers too: the control plane implements them, and a downstream service can
        // implement a fake esaas in its own tests.
        .build_server(true)
        // `WorkerService.Connect` would collide with the generated `connect`
        // constructor; clients are built with `new(channel)`.
        .build_transport(false)
        .extern_path(".google.rpc", "::tonic_types::pb")
        .compile_fds(fds)?;
    Ok(())
}
