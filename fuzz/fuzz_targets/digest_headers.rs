//! The HTTP Digest header parsers (WWW-Authenticate, Authorization, Authentication-Info): what
//! parses must format and parse back to the same value.
#![no_main]

use keycast_provisioning::digest::header::{AuthenticationInfo, Challenge, Credentials};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = Challenge::parse(text) {
        if let Ok(again) = c.to_header_value() {
            assert_eq!(Challenge::parse(&again).expect("formatted challenge parses"), c);
        }
    }
    if let Ok(c) = Credentials::parse(text) {
        if let Ok(again) = c.to_header_value() {
            assert_eq!(Credentials::parse(&again).expect("formatted credentials parse"), c);
        }
    }
    let _ = AuthenticationInfo::parse(text);
});
