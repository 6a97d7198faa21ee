//! The capture reader behind `keycast inspect --pcap`: classic pcap and pcapng, any link type.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = keycast::pcap::read_udp(data);
});
