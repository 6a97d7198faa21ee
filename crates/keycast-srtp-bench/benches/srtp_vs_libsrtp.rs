//! Keycast SRTP against Debian's libsrtp2 in the same criterion run (issue 6): protect and
//! unprotect of 1024-byte and 128-byte RTP packets (whole packet, 12-byte header included), with
//! a 6-byte MKI and AES_CM_128_HMAC_SHA1_80. Groups `srtp_vs_libsrtp_{1024,128}B`, functions
//! `{keycast,libsrtp}_{protect,unprotect}`; ratio = libsrtp time / Keycast time.
//!
//! Equal work per iteration on both sides:
//! - protect: copy the same plaintext RTP packet into a reused buffer, write the next sequence
//!   number, protect in place (Keycast `SrtpSender::protect_in`, libsrtp `srtp_protect_mki`).
//!   Sequence numbers only advance, so neither side's sender replay check refuses a packet (no
//!   `allow_repeat_tx`); the ROC rolls over every 65 536 packets on both.
//! - unprotect: copy the next of 2048 protected packets (sequence 0..2047, made once; the
//!   interop check proves both libraries produce exactly these bytes) into a reused buffer and
//!   unprotect it in place. After 2048 packets both sides start a fresh receiver session so no
//!   packet is a replay; creating the receiver is outside the timed region (`iter_custom`).
//!
//! Before timing, `cross_check` asserts that libsrtp's protected packets equal Keycast's byte for
//! byte and that each side unprotects the other's. Without libsrtp2 the bench prints that it
//! was skipped.

#[cfg(have_libsrtp2)]
mod bench {
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    use criterion::{Criterion, Throughput};
    use keycast_srtp_bench::libsrtp::Session;
    use keycast_srtp_bench::{MASTER_KEY, MASTER_SALT, MKI, cross_check, keycast_key, rtp_packet};
    use keycast_traffic::srtp::{SrtpPolicy, SrtpReceiver, SrtpSender};

    /// Protected packets per receiver session in the unprotect benches.
    const RING: usize = 2048;

    fn libsrtp_sender() -> Session {
        Session::sender(&MASTER_KEY, &MASTER_SALT, &MKI.to_bytes()).expect("libsrtp sender")
    }

    fn libsrtp_receiver() -> Session {
        Session::receiver(&MASTER_KEY, &MASTER_SALT, &MKI.to_bytes()).expect("libsrtp receiver")
    }

    fn keycast_receiver() -> SrtpReceiver {
        let mut rx = SrtpReceiver::new(SrtpPolicy::rfc3711());
        rx.add_key(&keycast_key());
        rx
    }

    /// Times `iters` unprotects, `RING` per fresh receiver made by `fresh` (untimed).
    fn unprotect_loop<R>(
        iters: u64,
        protected: &[Vec<u8>],
        buf: &mut [u8],
        mut fresh: impl FnMut() -> R,
        mut unprotect: impl FnMut(&mut R, &mut [u8]) -> usize,
    ) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let n = usize::try_from(left.min(RING as u64)).unwrap_or(RING);
            let mut rx = fresh();
            let start = Instant::now();
            for p in &protected[..n] {
                let b = &mut buf[..p.len()];
                b.copy_from_slice(p);
                black_box(unprotect(&mut rx, black_box(b)));
            }
            total += start.elapsed();
            left -= n as u64;
        }
        total
    }

    pub fn run(c: &mut Criterion) {
        for size in [1024usize, 128] {
            cross_check(size, (0..16).chain([0x7fff, 0xfffe, 0xffff, 0, 1])).expect("libsrtp and Keycast disagree");
            let plain = rtp_packet(0, size);
            let mut g = c.benchmark_group(format!("srtp_vs_libsrtp_{size}B"));
            g.throughput(Throughput::Bytes(size as u64));

            let mut buf = vec![0u8; size + Session::TRAILER_ROOM];
            let mut tx = SrtpSender::new(SrtpPolicy::rfc3711(), &keycast_key());
            let mut seq = 0u16;
            g.bench_function("keycast_protect", |b| {
                b.iter(|| {
                    buf[..size].copy_from_slice(&plain);
                    seq = seq.wrapping_add(1);
                    buf[2..4].copy_from_slice(&seq.to_be_bytes());
                    black_box(tx.protect_in(black_box(&mut buf), size).unwrap())
                })
            });
            let mut tx = libsrtp_sender();
            let mut seq = 0u16;
            g.bench_function("libsrtp_protect", |b| {
                b.iter(|| {
                    buf[..size].copy_from_slice(&plain);
                    seq = seq.wrapping_add(1);
                    buf[2..4].copy_from_slice(&seq.to_be_bytes());
                    black_box(tx.protect(black_box(&mut buf), size).unwrap())
                })
            });

            let mut tx = SrtpSender::new(SrtpPolicy::rfc3711(), &keycast_key());
            let protected: Vec<Vec<u8>> = (0..RING as u16)
                .map(|s| {
                    let mut p = rtp_packet(s, size);
                    tx.protect(&mut p).unwrap();
                    p
                })
                .collect();
            g.bench_function("keycast_unprotect", |b| {
                b.iter_custom(|iters| {
                    unprotect_loop(iters, &protected, &mut buf, keycast_receiver, |rx, p| rx.unprotect_in(p).unwrap())
                })
            });
            g.bench_function("libsrtp_unprotect", |b| {
                b.iter_custom(|iters| {
                    unprotect_loop(iters, &protected, &mut buf, libsrtp_receiver, |rx, p| rx.unprotect(p).unwrap())
                })
            });
            g.finish();
        }
    }
}

#[cfg(have_libsrtp2)]
criterion::criterion_group!(benches, bench::run);
#[cfg(have_libsrtp2)]
criterion::criterion_main!(benches);

#[cfg(not(have_libsrtp2))]
fn main() {
    println!("srtp_vs_libsrtp: skipped, libsrtp2 was not found at build time (apt-get install libsrtp2-dev)");
}
