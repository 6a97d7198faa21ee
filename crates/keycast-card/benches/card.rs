//! MTK generation through the typed card API (goal ≥ 1 M STKMs per second per core), the same
//! through the APDU path (`ApduCard` over the emulator), and the cost of a card-file write.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keycast_card::mbms::MbmsStore;
use keycast_card::persist::{self, CardFile};
use keycast_card::usim::{Usim, UsimIdentity};
use keycast_card::{ApduCard, Card as _, Emulator};
use keycast_crypto::keys::{Opc, SubscriberKey};
use keycast_crypto::keys::{SekPek, Smk, Tek, TekSalt};
use keycast_mikey::*;

const IDI: &str = "bmsc.example.org";
const BTID: &str = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org";
const RAND: [u8; 16] = [0x5a; 16];
const T0: u32 = 3_950_000_000;
const BATCH: u32 = 100_000;

fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

/// A store holding one pay-per-time SEK whose window covers the whole batch.
fn loaded_store(smk: &Smk, sek: &SekPek) -> MbmsStore {
    let mut s = MbmsStore::default();
    s.install_muk(IDI, BTID, smk.clone()).unwrap();
    let ltkm = LtkmContent {
        csb_id: 1,
        verification_requested: false,
        srtp_cs: None,
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: 1, key_number: 1 },
        ts: 1,
        rand: RAND,
        idi: IDI.into(),
        idr: BTID.into(),
        srtp_policy: None,
        ext: Some(LtkmExt {
            security_policy: Some(SecurityPolicyExt {
                policy: SecurityPolicy::PayPerTime,
                play_back_counter: 0,
                view_counter: 0,
            }),
            tbk_id: None,
            consumption_reporting: false,
        }),
        key: Some(sek.clone()),
        validity: KeyValidity::TsWindow { ts_low: T0, ts_high: T0 + 2 * BATCH },
    };
    s.msk_update(&ltkm.seal(smk).unwrap()).unwrap();
    s
}

fn benches(c: &mut Criterion) {
    let smk = Smk::from_bytes([0x21; 32]);
    let sek = SekPek::from_bytes([0x44; 16]);
    // Every STKM needs a fresh TS; the TEK changes every 10 STKMs (resends in between).
    let stkms: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| {
            StkmContent {
                csb_id: 0x0a0b_0c0d,
                key_domain_id: kd(),
                sek_pek_id: SekPekId { key_group: 1, key_number: 1 },
                tek_id: (i / 10 + 1) as u16,
                ts: T0 + i,
                ext: Some(StkmExt {
                    protection_after_reception: ProtectionAfterReception::ServiceProtectionOnly,
                    traffic_protection_protocol: TrafficProtectionProtocol::Srtp,
                    traffic_authentication: true,
                    tbk_id: None,
                    access_criteria: None,
                }),
                tek: TekField::Clear(Tek::from_bytes([(i / 10) as u8; 16])),
                salt: Some(TekSalt::from_bytes([0x22; 14])),
            }
            .seal(&sek, &RAND)
            .unwrap()
        })
        .collect();

    let mut g = c.benchmark_group("card");
    g.throughput(Throughput::Elements(1));
    g.bench_function("mtk_generation_typed", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let mut store = loaded_store(&smk, &sek);
                let n = left.min(u64::from(BATCH)) as usize;
                let start = Instant::now();
                for stkm in &stkms[..n] {
                    black_box(store.mtk_generation(black_box(stkm)).unwrap());
                }
                total += start.elapsed();
                left -= n as u64;
            }
            total
        })
    });

    // The same STKMs through AUTHENTICATE odd INS (MTK generation) over the emulator.
    let usim_with = |store: MbmsStore| {
        let id = UsimIdentity { imsi: "001010000000001".into(), impi: "u@ims".into(), iccid: "89001".into() };
        let mut usim = Usim::new(id, SubscriberKey::from_bytes([1; 16]), Opc::from_bytes([2; 16]));
        usim.mbms = store;
        usim
    };
    g.bench_function("mtk_generation_apdu", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let mut card = ApduCard::new(Emulator::new(usim_with(loaded_store(&smk, &sek))));
                let n = left.min(u64::from(BATCH)) as usize;
                let start = Instant::now();
                for stkm in &stkms[..n] {
                    black_box(card.mtk_generation(black_box(stkm)).unwrap());
                }
                total += start.elapsed();
                left -= n as u64;
            }
            total
        })
    });
    g.finish();

    // A state write: encoding alone, and the whole atomic save (write, fsync, rename, dir fsync).
    let usim = usim_with(loaded_store(&smk, &sek));
    let mut g = c.benchmark_group("card_file");
    g.bench_function("encode", |b| b.iter(|| persist::encode(black_box(&usim)).len()));
    let dir = std::env::temp_dir().join(format!("keycast-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = CardFile::new(dir.join("card"));
    g.bench_function("save_atomic_fsync", |b| b.iter(|| file.save(black_box(&usim)).unwrap()));
    g.finish();
    std::fs::remove_dir_all(&dir).ok();
}

criterion_group! {
    name = card;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(card);
