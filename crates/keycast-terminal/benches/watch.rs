//! Terminal end to end, sans-IO: STKMs and SRTP in, clear RTP out through [`Watcher`] with the
//! card emulator (over its APDU interface) as key holder. One STKM per 1 000 packets of 1 KiB
//! (about one per second of a 8 Mbit/s stream), a new TEK every tenth STKM; throughput is in
//! packets (criterion's "elements").

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keycast_card::usim::{Usim, UsimIdentity};
use keycast_card::{ApduCard, Emulator};
use keycast_crypto::keys::{Opc, SekPek, Smk, SubscriberKey, Tek, TekSalt};
use keycast_mikey::{
    KeyDomainId, KeyValidity, LtkmContent, LtkmExt, ProtectionAfterReception, SecurityPolicy, SecurityPolicyExt,
    SekPekId, StkmContent, StkmExt, TekField, TrafficProtectionProtocol,
};
use keycast_terminal::media::srtp::{Mki, SrtpMasterKey, SrtpPolicy, SrtpSender};
use keycast_terminal::media::{Event, Packet, WatchConfig, Watcher};

const BSM: &str = "bmsc.example.org";
const BTID: &str = "btid-1@bsf.example.org";
const TS0: u32 = 3_989_000_000;
const SEK: [u8; 16] = [0x12; 16];
/// Packets per STKM.
const PER_STKM: usize = 1000;
/// Payload bytes per packet.
const PAYLOAD: usize = 1024;

fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

fn sek_id() -> SekPekId {
    SekPekId { key_group: 1, key_number: 2 }
}

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
        sek_pek_id: sek_id(),
        ts: 1,
        rand: [7; 16],
        idi: BSM.into(),
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
        key: Some(SekPek::from_bytes(SEK)),
        validity: KeyValidity::TsWindow { ts_low: TS0, ts_high: u32::MAX },
    }
    .seal(&smk)
    .unwrap();
    usim.mbms.msk_update(&ltkm).unwrap();
    ApduCard::new(Emulator::new(usim))
}

fn tek(tek_id: u16) -> SrtpMasterKey {
    let b = tek_id.to_be_bytes()[1];
    SrtpMasterKey::new(
        Mki::new(u32::from_be_bytes(sek_id().to_bytes()), tek_id),
        Tek::from_bytes([b; 16]),
        TekSalt::from_bytes([!b; 14]),
    )
}

fn stkm(tek_id: u16, ts: u32) -> Vec<u8> {
    let key = tek(tek_id);
    StkmContent {
        csb_id: 9,
        key_domain_id: kd(),
        sek_pek_id: sek_id(),
        tek_id,
        ts,
        ext: Some(StkmExt {
            protection_after_reception: ProtectionAfterReception::ServiceProtectionOnly,
            traffic_protection_protocol: TrafficProtectionProtocol::Srtp,
            traffic_authentication: true,
            tbk_id: None,
            access_criteria: None,
        }),
        tek: TekField::Clear(key.key().clone()),
        salt: Some(key.salt().clone()),
    }
    .seal(&SekPek::from_bytes(SEK), &[7; 16])
    .unwrap()
}

/// `rounds` STKMs, each followed by its PER_STKM protected packets.
fn traffic(rounds: usize) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
    let mut sender = SrtpSender::new(SrtpPolicy::rfc3711(), &tek(1));
    let mut seq = 0u16;
    (0..rounds)
        .map(|r| {
            let tek_id = u16::try_from(r / 10 + 1).unwrap();
            sender.set_key(&tek(tek_id));
            let packets = (0..PER_STKM)
                .map(|_| {
                    seq = seq.wrapping_add(1);
                    let mut p = vec![0x80, 96];
                    p.extend_from_slice(&seq.to_be_bytes());
                    p.extend_from_slice(&[0, 0, 0, 0, 0xca, 0xfe, 0xba, 0xbe]);
                    p.resize(12 + PAYLOAD, 0x5a);
                    sender.protect(&mut p).unwrap();
                    p
                })
                .collect();
            (stkm(tek_id, TS0 + u32::try_from(r).unwrap() + 1), packets)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rounds = 30;
    let input = traffic(rounds);
    let mut g = c.benchmark_group("terminal_watch");
    g.throughput(Throughput::Elements((rounds * PER_STKM) as u64));
    g.sample_size(10);
    g.bench_function("stkm_and_srtp_1KiB_to_rtp", |b| {
        b.iter_batched(
            || (card(), Watcher::new(WatchConfig::default()), input.clone()),
            |(mut card, mut watcher, mut input)| {
                let start = Instant::now();
                let mut out = 0usize;
                for (r, (stkm, packets)) in input.iter_mut().enumerate() {
                    // One STKM per second of packets.
                    let now = start + Duration::from_secs(r as u64);
                    let e = watcher.handle_stkm(&mut card, stkm, now);
                    assert!(matches!(e, Event::TekInstalled { .. } | Event::ResendSkipped { .. }), "{e:?}");
                    for p in packets.iter_mut() {
                        if let Packet::Clear { len, .. } = watcher.handle_srtp(p, now) {
                            out += len;
                        }
                    }
                }
                assert_eq!(out, rounds * PER_STKM * (12 + PAYLOAD));
                out
            },
            criterion::BatchSize::LargeInput,
        );
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
