//! Generates the OpAMP message types from `proto/` with prost, parsing the `.proto` files
//! with protox (pure Rust): no system `protoc` is needed to build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["opamp/v1/opamp.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
