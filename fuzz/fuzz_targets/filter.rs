//! Fuzz target: the RFC 4515 filter parser, its rendering and evaluation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Ok(text) = std::str::from_utf8(input) {
        tether_protocol::properties::filter(text);
    }
});
