//! Compiles the vendored containerd API protos (`proto/`) with `protox` (pure Rust, no
//! `protoc`) and generates the tonic server (snapshots) and clients (all of them).

use std::path::PathBuf;

use prost::Message as _;

const PROTOS: &[&str] = &[
    "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.proto",
    "github.com/containerd/containerd/api/services/content/v1/content.proto",
    "github.com/containerd/containerd/api/services/images/v1/images.proto",
    "github.com/containerd/containerd/api/services/diff/v1/diff.proto",
    "github.com/containerd/containerd/api/services/leases/v1/leases.proto",
    "github.com/containerd/containerd/api/services/version/v1/version.proto",
];

/// The protos' comments have indented text blocks that rustdoc would run as doctests: no
/// comments in the generated code (the protos in `proto/` are the documentation).
fn prost_config() -> prost_build::Config {
    let mut config = prost_build::Config::new();
    config.disable_comments(["."]);
    config
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["proto"])?;
    let fds_path = out.join("containerd.fds");
    std::fs::write(&fds_path, fds.encode_to_vec())?;
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .skip_protoc_run()
        .file_descriptor_set_path(&fds_path)
        .compile_protos_with_config(prost_config(), PROTOS, &["proto"])?;
    Ok(())
}
