//! Compiles `switchyard/v1/*.proto` with protox (a pure-Rust protobuf
//! compiler: no `protoc` to install), generates tonic code from the
//! descriptor set, and keeps the encoded set for gRPC server reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["switchyard/v1/telemetry.proto", "switchyard/v1/batch.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("switchyard_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
