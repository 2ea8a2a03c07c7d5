//! Fuzz target: the wire's bottom layers, frame reader then message decoder. The input's
//! first two bytes pick the frame limit, checksum repair and read chunking; the rest is
//! the byte stream (see `tether_protocol::properties::FrameCase`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_protocol::properties::{frames_and_messages, FrameCase};

fuzz_target!(|input: &[u8]| frames_and_messages(&FrameCase::from_fuzz_input(input)));
