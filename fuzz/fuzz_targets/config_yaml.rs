//! Arbitrary text, read as a YAML bootstrap file (what `weft-proxy --config` reads), then
//! converted into a snapshot.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_xds::proto::Bootstrap;

fuzz_target!(|text: &str| {
    if let Ok(bootstrap) = yaml_serde::from_str::<Bootstrap>(text) {
        weft_fuzz::build(bootstrap);
    }
});
