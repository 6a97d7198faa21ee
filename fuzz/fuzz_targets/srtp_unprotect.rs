//! SRTP and SRTCP unprotect on length-prefixed packet sessions: never a panic; what unprotects
//! must protect and unprotect back to the same RTP packet.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keycast_traffic::fuzzing::srtp_unprotect(data));
