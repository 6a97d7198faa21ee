//! ESP unprotect on length-prefixed packet sessions against two SAs: never a panic; what opens
//! must seal and open back to the same payload (and the same bytes with minimal padding).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keycast_traffic::esp::fuzzing::esp_open(data));
