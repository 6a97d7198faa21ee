//! The 3GPP MBMS key-management XML decoders (TS 26.346 §11: register, deregister, MSK request
//! and their responses, and the security description): never panic, and what decodes survives
//! an encode/decode round trip.
#![no_main]

use keycast_provisioning::mbms::{
    DeregisterRequest, MskRequest, MskResponse, RegisterRequest, RegisterResponse, SecurityDescription,
};

macro_rules! round_trip {
    ($ty:ty, $data:expr) => {
        if let Ok(m) = <$ty>::from_xml($data) {
            let xml = m.to_xml().expect("a decoded message encodes");
            assert_eq!(<$ty>::from_xml(xml.as_bytes()).expect("our encoding decodes"), m);
        }
    };
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    round_trip!(RegisterRequest, data);
    round_trip!(DeregisterRequest, data);
    round_trip!(MskRequest, data);
    round_trip!(RegisterResponse, data);
    round_trip!(MskResponse, data);
    round_trip!(SecurityDescription, data);
});
