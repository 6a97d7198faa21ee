//! Command APDU sessions against the card emulator: every command answered, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keycast_card::fuzzing::apdu_session(data));
