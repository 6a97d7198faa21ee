//! The card-file decoder: hostile files are refused; what decodes re-encodes to the same card.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keycast_card::fuzzing::card_file(data));
