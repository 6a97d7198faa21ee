//! Keycast crypto benchmarks: Milenage against the `milenage` crate, MIKEY message-key
//! derivation, and AES-CM over a 1200-byte packet.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use keycast_crypto::aes_cm::AesCm128;
use keycast_crypto::keys::{Opc, SubscriberKey};
use keycast_crypto::mikey::MessageKeys;
use keycast_crypto::milenage::Milenage;

// TS 35.208 test set 1 (vectors.md §1).
const K: [u8; 16] = *b"\x46\x5b\x5c\xe8\xb1\x99\xb4\x9f\xaa\x5f\x0a\x2e\xe2\x38\xa6\xbc";
const OPC: [u8; 16] = *b"\xcd\x63\xcb\x71\x95\x4a\x9f\x4e\x48\xa5\x99\x4e\x37\xa0\x2b\xaf";
const RAND: [u8; 16] = *b"\x23\x55\x3c\xbe\x96\x37\xa8\x9d\x21\x8a\xe6\x4d\xae\x47\xbf\x35";
const SQN: [u8; 6] = *b"\xff\x9b\xb4\xd0\xb6\x07";
const AMF: [u8; 2] = *b"\xb9\xb9";

fn short<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    g
}

fn milenage(c: &mut Criterion) {
    let mut g = short(c, "milenage");
    // Each variant computes f1, f1*, f2, f3, f4, f5 and f5* for one RAND, key setup included.
    g.bench_function("keycast (new + all)", |b| {
        b.iter(|| {
            let m = Milenage::new(&SubscriberKey::from_bytes(black_box(K)), &Opc::from_bytes(black_box(OPC)));
            black_box(m.all(black_box(&RAND), SQN, AMF))
        })
    });
    let m = Milenage::new(&SubscriberKey::from_bytes(K), &Opc::from_bytes(OPC));
    g.bench_function("keycast (pre-keyed all)", |b| b.iter(|| black_box(m.all(black_box(&RAND), SQN, AMF))));
    g.bench_function("milenage crate", |b| {
        b.iter(|| {
            let mut m = milenage::Milenage::new_with_opc(black_box(K), black_box(OPC));
            let rand = black_box(&RAND);
            black_box(m.f1(rand, &SQN, &AMF));
            black_box(m.f1star(rand, &SQN, &AMF));
            black_box(m.f2345(rand));
            black_box(m.f5star(rand))
        })
    });
    g.finish();
}

fn prf(c: &mut Criterion) {
    let mut g = short(c, "prf");
    let psk = [0x5a; 32];
    let rand = [0xa5; 16];
    g.bench_function("MessageKeys::derive (32-byte PSK)", |b| {
        b.iter(|| black_box(MessageKeys::derive(black_box(&psk), 0x0102_0304, &rand)))
    });
    // The per-message work of opening an STKM: MAC check over ~100 bytes, then decrypting
    // a 36-byte KEMAC body.
    let keys = MessageKeys::derive(&psk, 0x0102_0304, &rand);
    let msg = [0x33u8; 100];
    let tag = keys.mac(&[&msg]);
    g.bench_function("MessageKeys verify 100 B + decrypt 36 B", |b| {
        b.iter(|| {
            let ok = keys.verify_mac(&[black_box(&msg)], &tag);
            let mut body = [0x44u8; 36];
            keys.apply_keystream(&keys.kemac_iv(0x0102_0304, 7), &mut body);
            black_box((ok, body))
        })
    });
    g.finish();
}

fn aes_cm(c: &mut Criterion) {
    let mut g = short(c, "aes_cm");
    let cm = AesCm128::new(&[0x2b; 16]);
    let iv = [0xf0; 16];
    let mut buf = vec![0u8; 1200];
    g.throughput(Throughput::Bytes(1200));
    g.bench_function("1200 bytes", |b| b.iter(|| cm.apply_keystream(black_box(&iv), black_box(&mut buf))));
    g.finish();
}

criterion_group!(benches, milenage, prf, aes_cm);
criterion_main!(benches);
