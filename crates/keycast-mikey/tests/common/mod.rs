//! Sample messages shared by the integration tests.
#![allow(dead_code)]

use keycast_crypto::keys::{SekPek, Smk, Tek, TekSalt};
use keycast_mikey::*;

pub fn smk() -> Smk {
    // Ks_int_NAF of the GBA worked example (vectors.md §2).
    Smk::from_slice(&hex::decode("5ecf80629e0becb2def8d9b3cb80ae3f99ab18f9c50f49fd5da0e6cfb6d0ee5f").unwrap()).unwrap()
}

pub fn sek() -> SekPek {
    SekPek::from_bytes(*b"sixteen byte sek")
}

pub const RAND: [u8; 16] =
    [0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf];

pub fn key_domain() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

/// A streaming LTKM with SP and an OMA BCAST extension (TS window).
pub fn ltkm_streaming() -> LtkmContent {
    LtkmContent {
        csb_id: 0x01020304,
        verification_requested: true,
        srtp_cs: Some(SrtpCs { policy_no: 0, ssrc: 0, roc: 0 }),
        key_domain_id: key_domain(),
        sek_pek_id: SekPekId { key_group: 1, key_number: 1 },
        ts: 7,
        rand: RAND,
        idi: "bmsc.example.org".into(),
        idr: "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org".into(),
        srtp_policy: Some(SrtpPolicy::keycast(Some(1))),
        ext: Some(LtkmExt {
            security_policy: Some(SecurityPolicyExt {
                policy: SecurityPolicy::PayPerTimeWithPlayBack,
                play_back_counter: 3,
                view_counter: 0,
            }),
            tbk_id: None,
            consumption_reporting: false,
        }),
        key: Some(sek()),
        validity: KeyValidity::TsWindow { ts_low: 3_900_000_000, ts_high: 3_900_086_400 },
    }
}

/// A download LTKM without extension (MBMS TEK ID window).
pub fn ltkm_download() -> LtkmContent {
    LtkmContent {
        verification_requested: false,
        srtp_cs: None,
        srtp_policy: None,
        ext: None,
        sek_pek_id: SekPekId { key_group: 2, key_number: 5 },
        validity: KeyValidity::TekIdWindow { seq_l: 0, seq_u: 1000 },
        ..ltkm_streaming()
    }
}

pub fn stkm() -> StkmContent {
    StkmContent {
        csb_id: 0x0a0b0c0d,
        key_domain_id: key_domain(),
        sek_pek_id: SekPekId { key_group: 1, key_number: 1 },
        tek_id: 1,
        ts: 3_900_000_001,
        ext: Some(StkmExt {
            protection_after_reception: ProtectionAfterReception::ServiceProtectionOnly,
            traffic_protection_protocol: TrafficProtectionProtocol::Srtp,
            traffic_authentication: true,
            tbk_id: None,
            access_criteria: None,
        }),
        tek: TekField::Clear(Tek::from_bytes([0x11; 16])),
        salt: Some(TekSalt::from_bytes([0x22; 14])),
    }
}
