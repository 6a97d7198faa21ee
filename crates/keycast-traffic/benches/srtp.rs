//! SRTP protect/unprotect throughput with MKI (AES-CM-128, HMAC-SHA-1-80).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keycast_crypto::keys::{Tek, TekSalt};
use keycast_traffic::srtp::{Mki, SRTP_MAX_OVERHEAD, SrtpMasterKey, SrtpPolicy, SrtpReceiver, SrtpSender};

fn rtp(seq: u16, payload: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload + SRTP_MAX_OVERHEAD);
    p.extend_from_slice(&[0x80, 96]);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 0xca, 0xfe, 0xba, 0xbe]);
    p.resize(12 + payload, 0xa5);
    p
}

fn bench(c: &mut Criterion) {
    let key = SrtpMasterKey::new(Mki::new(0x0001_0002, 1), Tek::from_bytes([7; 16]), TekSalt::from_bytes([9; 14]));
    for size in [128usize, 1024] {
        let mut g = c.benchmark_group(format!("srtp_{size}B"));
        g.throughput(Throughput::Bytes(size as u64));
        // Sender: protect, with the packet restored by truncation; the sequence number grows.
        let mut tx = SrtpSender::new(SrtpPolicy::rfc3711(), &key);
        let mut pkt = rtp(0, size - 12);
        let mut seq = 0u16;
        g.bench_function("protect", |b| {
            b.iter(|| {
                pkt.truncate(size);
                seq = seq.wrapping_add(1);
                pkt[2..4].copy_from_slice(&seq.to_be_bytes());
                tx.protect(black_box(&mut pkt)).unwrap();
            })
        });
        // Receiver: unprotect of a fresh copy of protected packets in sequence (no replay).
        let mut tx = SrtpSender::new(SrtpPolicy::rfc3711(), &key);
        let protected: Vec<Vec<u8>> = (0..4096u16)
            .map(|s| {
                let mut p = rtp(s, size - 12);
                tx.protect(&mut p).unwrap();
                p
            })
            .collect();
        let mut rx = SrtpReceiver::new(SrtpPolicy::rfc3711());
        rx.add_key(&key);
        let mut i = 0usize;
        let mut buf = Vec::with_capacity(size + SRTP_MAX_OVERHEAD);
        g.bench_function("unprotect", |b| {
            b.iter(|| {
                if i == protected.len() {
                    // Start a new receiver so the indices are fresh again.
                    rx = SrtpReceiver::new(SrtpPolicy::rfc3711());
                    rx.add_key(&key);
                    i = 0;
                }
                buf.clear();
                buf.extend_from_slice(&protected[i]);
                i += 1;
                rx.unprotect(black_box(&mut buf)).unwrap();
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
