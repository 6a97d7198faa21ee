//! The GBA_ME key store decoder: hostile files are refused; what decodes re-encodes to the same
//! store.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keycast_card::fuzzing::gba_me_file(data));
