//! ISMACryp sample header parse and decrypt with two keys: never a panic; what parses
//! re-encodes to the same bytes, and what decrypts encrypts back to the same sample.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keycast_traffic::ismacryp::fuzzing::header(data));
