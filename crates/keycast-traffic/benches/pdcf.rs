//! Adapted PDCF write and read of a 10 000-sample recording (1 KiB audio-sized samples, one
//! STKM per 50 samples, one fragment per 50 samples = one per second at 20 ms frames).

use core::time::Duration;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keycast_crypto::keys::Tek;
use keycast_traffic::ismacryp::{IsmacrypKey, IsmacrypSender};
use keycast_traffic::pdcf::{MediaTrack, PdcfHeader, PdcfWriter, Recording};
use keycast_traffic::srtp::Mki;

const SAMPLES: usize = 10_000;
const SAMPLE_LEN: usize = 1024;

fn samples() -> Vec<Vec<u8>> {
    let key = IsmacrypKey::new(Mki::new(0x0001_0002, 1), Tek::from_bytes([7; 16]), [9; 8]);
    let mut tx = IsmacrypSender::new(&key);
    (0..SAMPLES)
        .map(|_| {
            let mut s = vec![0x5a; SAMPLE_LEN];
            tx.protect(&mut s).unwrap();
            s
        })
        .collect()
}

fn write(header: &PdcfHeader, samples: &[Vec<u8>]) -> Vec<u8> {
    let (mut w, mut file) = PdcfWriter::new(header).unwrap();
    for (i, s) in samples.iter().enumerate() {
        let now = Duration::from_millis(20 * i as u64);
        if i % 50 == 0 {
            w.push_stkm(now, &[0xab; 120]).unwrap();
        }
        w.push_media(now, (i as u32).wrapping_mul(960), s).unwrap();
        if i % 50 == 49 {
            file.extend(w.flush_fragment());
        }
    }
    file.extend(w.finish());
    file
}

fn bench(c: &mut Criterion) {
    let header = PdcfHeader::new(MediaTrack::audio(*b"mp4a", 48_000, 2));
    let samples = samples();
    let file = write(&header, &samples);
    let mut g = c.benchmark_group("pdcf_10000_samples");
    g.throughput(Throughput::Bytes(file.len() as u64));
    g.sample_size(20);
    g.bench_function("write", |b| b.iter(|| black_box(write(&header, black_box(&samples))).len()));
    g.bench_function("read", |b| {
        b.iter(|| {
            let rec = Recording::parse(black_box(&file)).unwrap();
            assert_eq!(rec.media.len(), SAMPLES);
            rec.events().count()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
