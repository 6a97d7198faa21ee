//! ISMACryp sample encryption/decryption throughput (AES-128-CTR, 14-byte header).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keycast_crypto::keys::Tek;
use keycast_traffic::ismacryp::{HEADER_LEN, IsmacrypKey, IsmacrypReceiver, IsmacrypSender};
use keycast_traffic::srtp::Mki;

fn bench(c: &mut Criterion) {
    let key = IsmacrypKey::new(Mki::new(0x0001_0002, 1), Tek::from_bytes([7; 16]), [9; 8]);
    for size in [1024usize, 64 * 1024] {
        let mut g = c.benchmark_group(format!("ismacryp_{}KiB", size / 1024));
        g.throughput(Throughput::Bytes(size as u64));
        // Encrypt: the sample is restored by dropping the header; the byte offset grows, so
        // every run starts at a different keystream position as in a live stream.
        let mut tx = IsmacrypSender::new(&key);
        let mut sample = Vec::with_capacity(HEADER_LEN + size);
        g.bench_function("encrypt", |b| {
            b.iter(|| {
                sample.clear();
                sample.resize(size, 0xa5);
                tx.protect(black_box(&mut sample)).unwrap();
            })
        });
        // Decrypt in place (the same operation as encrypt, after the header lookup).
        let mut rx = IsmacrypReceiver::new();
        rx.add_key(&key);
        let mut tx = IsmacrypSender::new(&key);
        tx.set_offset(12_345);
        let mut protected = vec![0xa5; size];
        tx.protect(&mut protected).unwrap();
        g.bench_function("decrypt", |b| {
            b.iter(|| {
                let (_, plain) = rx.unprotect_in(black_box(&mut protected)).unwrap();
                black_box(plain.len());
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
