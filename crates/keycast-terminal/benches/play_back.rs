//! Play-back throughput, sans-IO: a recording held in memory (the adapted PDCF, one STKM per
//! 1 000 samples of 1 KiB, as [`Recorder`](keycast_terminal::media::record::Recorder) writes
//! it), walked by [`Player`] with the card emulator (over its APDU interface) answering every
//! STKM, each sample ISMACryp-decrypted. Throughput is in samples (criterion's "elements");
//! parsing the file is measured apart.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use keycast_card::usim::{Usim, UsimIdentity};
use keycast_card::{ApduCard, Emulator};
use keycast_crypto::keys::{Opc, SekPek, Smk, SubscriberKey, Tek, TekSalt};
use keycast_mikey::{
    KeyDomainId, KeyValidity, LtkmContent, LtkmExt, ProtectionAfterReception, SecurityPolicy, SecurityPolicyExt,
    SekPekId, StkmContent, StkmExt, TekField, TrafficProtectionProtocol,
};
use keycast_terminal::media::play::Player;
use keycast_terminal::media::srtp::Mki;
use keycast_traffic::ismacryp::{IsmacrypKey, IsmacrypSender};
use keycast_traffic::pdcf::{MediaTrack, PdcfHeader, PdcfWriter};

const BSM: &str = "bmsc.example.org";
const BTID: &str = "btid-1@bsf.example.org";
const TS0: u32 = 3_989_000_000;
const SEK: [u8; 16] = [0x12; 16];
const RAND: [u8; 16] = [0x21; 16];
/// Samples per STKM.
const PER_STKM: usize = 1000;
/// STKMs in the recording.
const STKMS: usize = 10;
/// Bytes per sample.
const SAMPLE: usize = 1024;

fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

const SEK_ID: SekPekId = SekPekId { key_group: 1, key_number: 2 };

/// The card with the SEK under policy 0x05 (unlimited play-back inside the window).
fn card() -> ApduCard<Emulator> {
    let id =
        UsimIdentity { imsi: "001010000000001".into(), impi: "user@ims".into(), iccid: "8900100000000000001".into() };
    let mut usim = Usim::new(id, SubscriberKey::from_bytes([1; 16]), Opc::from_bytes([2; 16]));
    let smk = Smk::from_bytes([0x11; 32]);
    usim.mbms.install_muk(BSM, BTID, smk.clone()).unwrap();
    let ltkm = LtkmContent {
        csb_id: 1,
        verification_requested: false,
        srtp_cs: None,
        key_domain_id: kd(),
        sek_pek_id: SEK_ID,
        ts: 1,
        rand: RAND,
        idi: BSM.into(),
        idr: BTID.into(),
        srtp_policy: None,
        ext: Some(LtkmExt {
            security_policy: Some(SecurityPolicyExt {
                policy: SecurityPolicy::UnlimitedWithinWindow,
                play_back_counter: 0,
                view_counter: 0,
            }),
            tbk_id: None,
            consumption_reporting: false,
        }),
        key: Some(SekPek::from_bytes(SEK)),
        validity: KeyValidity::TsWindow { ts_low: TS0, ts_high: TS0 + 100_000 },
    }
    .seal(&smk)
    .unwrap();
    usim.mbms.msk_update(&ltkm).unwrap();
    ApduCard::new(Emulator::new(usim))
}

/// A recording of `STKMS` TEKs, `PER_STKM` samples each.
fn recording() -> Vec<u8> {
    let (mut w, mut file) = PdcfWriter::new(&PdcfHeader::new(MediaTrack::video(*b"avc1", 90_000, 640, 360))).unwrap();
    let mut sender: Option<IsmacrypSender> = None;
    for s in 0..STKMS {
        let tek_id = u16::try_from(s + 1).unwrap();
        let (tek, salt) = (Tek::from_bytes([tek_id as u8; 16]), TekSalt::from_bytes([0x5a; 14]));
        let stkm = StkmContent {
            csb_id: 2,
            key_domain_id: kd(),
            sek_pek_id: SEK_ID,
            tek_id,
            ts: TS0 + u32::from(tek_id),
            ext: Some(StkmExt {
                protection_after_reception: ProtectionAfterReception::ServiceProtectionOnly,
                traffic_protection_protocol: TrafficProtectionProtocol::Srtp,
                traffic_authentication: true,
                tbk_id: None,
                access_criteria: None,
            }),
            tek: TekField::Clear(tek.clone()),
            salt: Some(salt.clone()),
        }
        .seal(&SekPek::from_bytes(SEK), &RAND)
        .unwrap();
        let t = Duration::from_secs(s as u64);
        w.push_stkm(t, &stkm).unwrap();
        let key = IsmacrypKey::from_stkm(Mki::new(u32::from_be_bytes(SEK_ID.to_bytes()), tek_id), tek, &salt);
        match &mut sender {
            Some(x) => x.set_key(&key),
            None => sender = Some(IsmacrypSender::new(&key)),
        }
        for i in 0..PER_STKM {
            let mut au = vec![i as u8; SAMPLE];
            sender.as_mut().unwrap().protect(&mut au).unwrap();
            let n = (s * PER_STKM + i) as u32;
            w.push_media(t + Duration::from_millis(i as u64), n * 90, &au).unwrap();
        }
        file.extend(w.flush_fragment());
    }
    file.extend(w.finish());
    file
}

fn bench(c: &mut Criterion) {
    let data = recording();
    let mut card = card();
    let samples = (STKMS * PER_STKM) as u64;
    let mut g = c.benchmark_group("play_back");
    g.throughput(Throughput::Elements(samples));
    g.bench_function("decrypt_1KiB_samples", |b| {
        b.iter_batched(
            || Player::open(&data).unwrap(),
            |mut player| {
                let mut buf = Vec::with_capacity(SAMPLE + 16);
                let mut n = 0u64;
                while player.next_sample_into(&mut card, &mut buf).unwrap().is_some() {
                    n += black_box(buf.len()) as u64;
                }
                assert_eq!(n, samples * SAMPLE as u64);
            },
            BatchSize::LargeInput,
        );
    });
    g.bench_function("open_recording", |b| b.iter(|| Player::open(black_box(&data)).unwrap()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
