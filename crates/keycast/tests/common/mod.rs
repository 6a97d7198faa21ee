//! Messages built with keycast-mikey, shared by the CLI and tshark tests.

#![allow(dead_code)]

use std::net::SocketAddrV4;
use std::path::Path;

use keycast::pcap::PcapWriter;
use keycast_crypto::keys::{SekPek, Smk, Tbk, Tek, TekSalt};
use keycast_mikey::{
    AccessDescriptor, KeyDomainId, KeyValidity, Ltkm, LtkmContent, LtkmExt, ProtectionAfterReception, SecurityPolicy,
    SecurityPolicyExt, SekPekId, SolicitedPull, SrtpCs, SrtpPolicy, StkmContent, StkmExt, TekField,
    TrafficProtectionProtocol, VerificationMessage,
};

/// SMK = Ks_int_NAF of the GBA worked example (vectors.md §2).
pub const SMK_HEX: &str = "5ecf80629e0becb2def8d9b3cb80ae3f99ab18f9c50f49fd5da0e6cfb6d0ee5f";
pub const SEK_HEX: &str = "00112233445566778899aabbccddeeff";
pub const RAND_HEX: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";
pub const TEK_HEX: &str = "101112131415161718191a1b1c1d1e1f";
pub const SALT_HEX: &str = "404142434445464748494a4b4c4d";
pub const TBK_HEX: &str = "000102030405060708090a0b0c0d0e0f";
pub const B_TID: &str = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org";
pub const BSM: &str = "bmsc.example.org";

fn arr<const N: usize>(h: &str) -> [u8; N] {
    hex::decode(h).unwrap().try_into().unwrap()
}

pub fn smk() -> Smk {
    Smk::from_bytes(arr(SMK_HEX))
}

pub fn sek() -> SekPek {
    SekPek::from_bytes(arr(SEK_HEX))
}

pub fn rand() -> [u8; 16] {
    arr(RAND_HEX)
}

pub fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

/// Streaming LTKM with SP and an OMA BCAST extension (pay-per-time, TS window), V = 1.
pub fn ltkm_streaming_content() -> LtkmContent {
    LtkmContent {
        csb_id: 0x0102_0304,
        verification_requested: true,
        srtp_cs: Some(SrtpCs { policy_no: 0, ssrc: 0, roc: 0 }),
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: 1, key_number: 1 },
        ts: 7,
        rand: rand(),
        idi: BSM.into(),
        idr: B_TID.into(),
        srtp_policy: Some(SrtpPolicy::keycast(Some(16))),
        ext: Some(LtkmExt {
            security_policy: Some(SecurityPolicyExt {
                policy: SecurityPolicy::PayPerTime,
                play_back_counter: 0,
                view_counter: 0,
            }),
            tbk_id: None,
            consumption_reporting: false,
        }),
        key: Some(sek()),
        validity: KeyValidity::TsWindow { ts_low: 3_950_000_000, ts_high: 3_950_003_600 },
    }
}

pub fn ltkm_streaming() -> Vec<u8> {
    ltkm_streaming_content().seal(&smk()).unwrap()
}

/// Download LTKM without extension (TEK ID window), V = 0.
pub fn ltkm_download() -> Vec<u8> {
    LtkmContent {
        csb_id: 0x0a0b_0c0d,
        verification_requested: false,
        srtp_cs: None,
        srtp_policy: None,
        ext: None,
        validity: KeyValidity::TekIdWindow { seq_l: 0, seq_u: 100 },
        sek_pek_id: SekPekId { key_group: 2, key_number: 5 },
        ts: 8,
        ..ltkm_streaming_content()
    }
    .seal(&smk())
    .unwrap()
}

/// Download LTKM with an OMA BCAST extension: PPV with play-back, TBK flag, reporting.
pub fn ltkm_download_ext() -> Vec<u8> {
    LtkmContent {
        csb_id: 0x1111_2222,
        verification_requested: true,
        srtp_cs: None,
        srtp_policy: None,
        ext: Some(LtkmExt {
            security_policy: Some(SecurityPolicyExt {
                policy: SecurityPolicy::PayPerViewWithPlayBack,
                play_back_counter: 3,
                view_counter: 0,
            }),
            tbk_id: Some(0x0000_0042),
            consumption_reporting: true,
        }),
        sek_pek_id: SekPekId { key_group: 3, key_number: 1 },
        ts: 9,
        ..ltkm_streaming_content()
    }
    .seal(&smk())
    .unwrap()
}

/// Invalidation of the streaming LTKM's key.
pub fn ltkm_invalidation() -> Vec<u8> {
    ltkm_streaming_content().invalidation(10).seal(&smk()).unwrap()
}

pub fn stkm_streaming_content(tek_id: u16, ts: u32) -> StkmContent {
    StkmContent {
        csb_id: 0x5555_aaaa,
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: 1, key_number: 1 },
        tek_id,
        ts,
        ext: Some(StkmExt {
            protection_after_reception: ProtectionAfterReception::ServiceProtectionOnly,
            traffic_protection_protocol: TrafficProtectionProtocol::Srtp,
            traffic_authentication: true,
            tbk_id: None,
            access_criteria: Some(vec![
                AccessDescriptor::ParentalRating { system: 1, min_age: 12 },
                AccessDescriptor::ProgramId(77),
            ]),
        }),
        tek: TekField::Clear(Tek::from_bytes(arr(TEK_HEX))),
        salt: Some(TekSalt::from_bytes(arr(SALT_HEX))),
    }
}

/// Streaming STKM (TEK + salt) with an OMA BCAST extension carrying access criteria.
pub fn stkm_streaming() -> Vec<u8> {
    stkm_streaming_content(1, 3_950_000_010).seal(&sek(), &rand()).unwrap()
}

/// Download STKM: key data type TGK, no salt, no extension.
pub fn stkm_download() -> Vec<u8> {
    StkmContent { ext: None, salt: None, csb_id: 0x6666_0000, ..stkm_streaming_content(2, 3_950_000_020) }
        .seal(&sek(), &rand())
        .unwrap()
}

/// Terminal-bound STKM: TEK wrapped by the TBK (protection_after_reception 2).
pub fn stkm_bound() -> Vec<u8> {
    let wrapped = keycast_crypto::key_wrap::wrap_16(&arr(TBK_HEX), &arr(TEK_HEX));
    StkmContent {
        ext: Some(StkmExt {
            protection_after_reception: ProtectionAfterReception::TerminalBound,
            traffic_protection_protocol: TrafficProtectionProtocol::IsmaCryp,
            traffic_authentication: false,
            tbk_id: Some(0x42),
            access_criteria: None,
        }),
        tek: TekField::WrappedByTbk(wrapped),
        ..stkm_streaming_content(3, 3_950_000_030)
    }
    .seal(&sek(), &rand())
    .unwrap()
}

pub fn tbk() -> Tbk {
    Tbk::from_bytes(arr(TBK_HEX))
}

/// The verification message answering `ltkm`.
pub fn verification(ltkm: &[u8]) -> Vec<u8> {
    let l = Ltkm::decode(ltkm).unwrap();
    VerificationMessage::build(&l, &l.message_keys(&smk())).unwrap()
}

pub fn solicited_pull() -> Vec<u8> {
    SolicitedPull {
        csb_id: 0x7777_8888,
        key_domain_id: kd(),
        key_group: 1,
        ts: 11,
        rand: [0x5a; 16],
        idi: BSM.into(),
        idr: B_TID.into(),
    }
    .seal(&smk())
    .unwrap()
}

/// Writes UDP datagrams (source port, destination port, payload) from 10.0.0.1 to 10.0.0.2.
pub fn write_pcap(path: &Path, packets: &[(u16, u16, &[u8])]) {
    let mut w = PcapWriter::new();
    for (i, (sport, dport, payload)) in packets.iter().enumerate() {
        let src = SocketAddrV4::new([10, 0, 0, 1].into(), *sport);
        let dst = SocketAddrV4::new([10, 0, 0, 2].into(), *dport);
        w.add_udp(1_700_000_000 + i as u32, 0, src, dst, payload).unwrap();
    }
    std::fs::write(path, w.finish()).unwrap();
}
