//! Adapted PDCF reader, strict and interrupted: never a panic; a finished file also reads as
//! interrupted with the same samples, and play-back order covers every sample.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keycast_traffic::pdcf::fuzzing::read(data));
