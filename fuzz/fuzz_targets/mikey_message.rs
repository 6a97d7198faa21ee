//! Syntax layer: decode, re-encode and decode again; both decodes must agree.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keycast_mikey::fuzzing::message(data));
