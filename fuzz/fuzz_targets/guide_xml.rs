//! The Service Guide fragment, MBMS USD and SDP decoders of keycast-guide, as a terminal reads
//! what the broadcast or the network gives it: never panic, and whatever decodes encodes and
//! decodes again to the same value.
#![no_main]

use keycast_guide::Fragment;
use keycast_guide::sdp::Sdp;
use keycast_guide::usd::UserServiceBundle;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(f) = Fragment::from_xml(text) {
        assert_eq!(Fragment::from_xml(&f.to_xml()).expect("our encoding decodes"), f);
    }
    if let Ok(b) = UserServiceBundle::from_xml(text) {
        assert_eq!(UserServiceBundle::from_xml(&b.to_xml()).expect("our encoding decodes"), b);
    }
    if let Ok(s) = Sdp::parse(text) {
        assert_eq!(Sdp::parse(&s.to_sdp()).expect("our encoding parses"), s);
    }
});
