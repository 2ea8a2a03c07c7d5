//! Fuzz target: the DN parser, its rendering, normalization and tree keys. The input is
//! two DNs separated by the first newline, so pair properties (order, nesting) are hit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Ok(text) = std::str::from_utf8(input) {
        tether_protocol::properties::dn_pair(text);
    }
});
