//! Fuzz target: the LDIF reader, and the writer on every record it reads.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| tether_protocol::properties::ldif(input));
