//! The BootstrappingInfo XML decoder (TS 24.109 Annex C), as a terminal reads the BSF's 200 OK.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(info) = keycast_provisioning::bootstrapping::BootstrappingInfo::from_xml(data) {
        let again = info.to_xml();
        assert!(keycast_provisioning::bootstrapping::BootstrappingInfo::from_xml(again.as_bytes()).is_ok());
    }
});
