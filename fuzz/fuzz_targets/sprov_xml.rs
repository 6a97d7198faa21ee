//! The OMA BCAST service-provisioning XML decoder (profile P-8), as the BSM reads a terminal's
//! request and a terminal reads the BSM's response: never panics, and whatever decodes encodes
//! and decodes again to the same message.
#![no_main]

use keycast_provisioning::sprov::SprovMessage;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(message) = SprovMessage::from_xml(data) {
        let xml = message.to_xml().expect("a decoded message encodes");
        assert_eq!(SprovMessage::from_xml(xml.as_bytes()).expect("our encoding decodes"), message);
    }
});
