//! Compiles `switchyard/v1/*.proto` with protox (a pure-Rust protobuf
//! compiler: no `protoc` to install) and generates tonic code from the
//! descriptor set.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["switchyard/v1/telemetry.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
