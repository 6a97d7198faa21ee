//! RTP → SRTP packets per second through `Protector`, with a TEK switch every 1 000 packets.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keycast_broadcast::keys::SeededRandom;
use keycast_broadcast::{LiveKey, Protector, ScheduleConfig, TekSchedule, TrafficMode};
use keycast_crypto::keys::SekPek;
use keycast_mikey::{KeyDomainId, SekPekId};
use keycast_traffic::srtp::SrtpPolicy;

const T0: u64 = 1_767_225_600;

fn key(n: u16, from: u64, until: u64) -> LiveKey {
    LiveKey {
        key_domain_id: KeyDomainId([0, 0xf1, 0x10]),
        sek_pek_id: SekPekId { key_group: 1, key_number: n },
        key: SekPek::from_bytes([n as u8; 16]),
        rand: [7; 16],
        from,
        until,
        ts_low: 0,
        ts_high: u32::MAX,
        tek_id_low: 0,
        tek_id_high: 0xfffe,
    }
}

fn rtp(seq: u16, payload: usize) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1, 0x11, 0x22, 0x33, 0x44]);
    p.resize(12 + payload, 0xab);
    p
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("protector");
    for (name, mode) in [("srtp_rfc3711", TrafficMode::Srtp(SrtpPolicy::rfc3711())), ("esp", TrafficMode::Esp)] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{name}_1200B_switch_every_1000"), |b| {
            // A 2 s crypto period, a packet every 2 ms of schedule time: a switch every 1 000 packets.
            let mut schedule = TekSchedule::new(ScheduleConfig::new(2_000, 1_000).unwrap(), SeededRandom::new(1));
            schedule.set_keys([key(1, T0, T0 + 1_000_000)]);
            let mut protector = Protector::new(mode, SeededRandom::new(2));
            let template = rtp(0, 1200);
            let mut packet = Vec::with_capacity(1400);
            let mut n: u64 = 0;
            b.iter(|| {
                if n.is_multiple_of(1000) {
                    let now = T0 * 1000 + n * 2;
                    schedule.advance(now).unwrap();
                    protector.set_tek(schedule.current().unwrap());
                }
                packet.clear();
                packet.extend_from_slice(&template);
                let seq = (n as u16).to_be_bytes();
                packet[2] = seq[0];
                packet[3] = seq[1];
                protector.protect_rtp(&mut packet).unwrap();
                n += 1;
                black_box(&packet);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
