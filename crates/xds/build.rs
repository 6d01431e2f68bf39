//! Compiles `proto/` into Rust (prost) with serde in the proto3 JSON mapping (pbjson).
//! protox parses the protos in-process: no system `protoc` is needed.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/weft/config/v1/config.proto",
    "proto/istio/v1/auth/ca.proto",
    // OTLP trace export (vendored, see proto/opentelemetry/README.md).
    "proto/opentelemetry/proto/collector/trace/v1/trace_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_bytes = descriptors.encode_to_vec();
    std::fs::write(out.join("descriptors.bin"), &descriptor_bytes)?;

    prost_build::Config::new()
        // Well-known types come from pbjson-types, which carries their JSON mapping
        // (a Duration is written "1.5s").
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .build(&[".weft.config.v1"])?;
    Ok(())
}
