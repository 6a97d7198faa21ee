//! Key data sub-payloads as found in a decrypted KEMAC.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keycast_mikey::fuzzing::key_data(data));
