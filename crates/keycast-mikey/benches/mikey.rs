//! The performance goals of the foundation issue:
//! - STKM decode ≥ 10 M/s per core;
//! - STKM open (decode, MAC, decrypt) with keys cached per SEK/PEK ≥ 1 M/s, reported as a ratio
//!   to the bare floor of one HMAC-SHA-1 over the same bytes plus one AES-CTR block, measured in
//!   the same run (goal ≥ 50 %);
//! - LTKM seal for one terminal, key derivation included, ≥ 500 k/s.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keycast_crypto::keys::{SekPek, Smk, Tek, TekSalt};
use keycast_crypto::mikey::MessageKeys;
use keycast_mikey::*;

const RAND: [u8; 16] = [0xa5; 16];

fn typical_stkm() -> StkmContent {
    StkmContent {
        csb_id: 0x0a0b0c0d,
        key_domain_id: KeyDomainId::from_mcc_mnc("001", "01").unwrap(),
        sek_pek_id: SekPekId { key_group: 1, key_number: 1 },
        tek_id: 17,
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

fn typical_ltkm() -> LtkmContent {
    LtkmContent {
        csb_id: 0x01020304,
        verification_requested: true,
        srtp_cs: Some(SrtpCs { policy_no: 0, ssrc: 0, roc: 0 }),
        key_domain_id: KeyDomainId::from_mcc_mnc("001", "01").unwrap(),
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
        key: Some(SekPek::from_bytes([0x33; 16])),
        validity: KeyValidity::TsWindow { ts_low: 3_900_000_000, ts_high: 3_900_086_400 },
    }
}

fn benches(c: &mut Criterion) {
    let sek = SekPek::from_bytes([0x44; 16]);
    let stkm = typical_stkm();
    let wire = stkm.seal(&sek, &RAND).unwrap();
    let keys = MessageKeys::derive(sek.expose_secret(), stkm.csb_id, &RAND);

    let mut g = c.benchmark_group("stkm");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode", |b| b.iter(|| Stkm::decode(black_box(&wire)).unwrap().tek_id()));
    g.bench_function("open_cached_keys", |b| {
        b.iter(|| Stkm::decode(black_box(&wire)).unwrap().open_with_keys(black_box(&keys)).unwrap().tek_id)
    });
    // The floor: what any STKM open must do at least, with the same primitives.
    let covered = &wire[..wire.len() - 20];
    let iv = keys.kemac_iv(stkm.csb_id, stkm.ts.into());
    g.bench_function("floor_hmac_plus_one_aes_block", |b| {
        b.iter(|| {
            let tag = keys.mac(&[black_box(covered)]);
            let mut block = [0u8; 16];
            keys.apply_keystream(&iv, &mut block);
            (tag[0], block[0])
        })
    });
    g.bench_function("syntax_decode", |b| b.iter(|| Message::decode(black_box(&wire)).unwrap().payloads.len()));
    g.finish();

    let smk = Smk::from_bytes([0x55; 32]);
    let ltkm = typical_ltkm();
    let mut g = c.benchmark_group("ltkm");
    g.throughput(Throughput::Elements(1));
    g.bench_function("seal_with_derivation", |b| b.iter(|| black_box(&ltkm).seal(black_box(&smk)).unwrap().len()));
    let sealed = ltkm.seal(&smk).unwrap();
    g.bench_function("open_with_derivation", |b| {
        b.iter(|| matches!(Ltkm::decode(black_box(&sealed)).unwrap().open(&smk).unwrap(), OpenedLtkm::Key(_)))
    });
    g.finish();
}

criterion_group! {
    name = mikey;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(mikey);
