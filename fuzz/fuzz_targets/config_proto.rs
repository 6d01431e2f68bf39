//! Arbitrary bytes, decoded as a protobuf `Bootstrap` (what the xDS transport will receive),
//! then converted into a snapshot.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use weft_xds::proto::Bootstrap;

fuzz_target!(|data: &[u8]| {
    if let Ok(bootstrap) = Bootstrap::decode(data) {
        weft_fuzz::build(bootstrap);
    }
});
