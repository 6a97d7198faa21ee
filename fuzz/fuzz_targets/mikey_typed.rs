//! Typed layer: the LTKM, STKM and verification decoders, and opening with fixed keys.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keycast_mikey::fuzzing::typed(data));
