//! Randomness for the BSF core, supplied by the caller.
//!
//! The core draws exactly one value per challenge: **RAND, 16 octets, first** (the `opaque` is
//! derived from the nonce, not drawn). A deterministic source can therefore reproduce a vector
//! by queueing the RAND it wants ([`SeededRandom::queue`]).

use std::collections::VecDeque;

use keycast_crypto::hmac::hmac_sha256;
use zeroize::Zeroizing;

/// A source of random octets. Production shells back it with the operating system's CSPRNG
/// (e.g. `getrandom::fill`); tests use [`SeededRandom`].
pub trait RandomSource {
    /// Fills `buf` with random octets.
    fn fill(&mut self, buf: &mut [u8]);
}

impl<R: RandomSource + ?Sized> RandomSource for &mut R {
    fn fill(&mut self, buf: &mut [u8]) {
        (**self).fill(buf);
    }
}

/// A deterministic generator for tests and reproducible runs — **never for production**: anyone
/// who knows the seed knows every RAND.
///
/// Output block *i* is HMAC-SHA-256(seed, "keycast-seeded-random" ‖ i as 8 octets big-endian);
/// octets queued with [`SeededRandom::queue`] are served first, in order.
pub struct SeededRandom {
    seed: Zeroizing<[u8; 32]>,
    counter: u64,
    block: Zeroizing<[u8; 32]>,
    used: usize,
    queued: VecDeque<u8>,
}

impl core::fmt::Debug for SeededRandom {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SeededRandom").field("counter", &self.counter).finish_non_exhaustive()
    }
}

impl SeededRandom {
    /// A generator with the given seed.
    #[must_use]
    pub fn new(seed: [u8; 32]) -> Self {
        SeededRandom {
            seed: Zeroizing::new(seed),
            counter: 0,
            block: Zeroizing::new([0; 32]),
            used: 32,
            queued: VecDeque::new(),
        }
    }

    /// Queues octets to be returned before any generated ones (e.g. a RAND from a test vector).
    pub fn queue(&mut self, bytes: &[u8]) {
        self.queued.extend(bytes.iter().copied());
    }

    fn next_byte(&mut self) -> u8 {
        if let Some(b) = self.queued.pop_front() {
            return b;
        }
        if self.used == self.block.len() {
            *self.block = hmac_sha256(&self.seed[..], &[b"keycast-seeded-random", &self.counter.to_be_bytes()]);
            self.counter = self.counter.wrapping_add(1);
            self.used = 0;
        }
        let b = self.block[self.used];
        self.used += 1;
        b
    }
}

impl RandomSource for SeededRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf.iter_mut() {
            *b = self.next_byte();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_queue_first() {
        let mut a = SeededRandom::new([1; 32]);
        let mut b = SeededRandom::new([1; 32]);
        let (mut x, mut y) = ([0u8; 40], [0u8; 40]);
        a.fill(&mut x);
        b.fill(&mut y[..7]);
        b.fill(&mut y[7..]);
        assert_eq!(x, y);
        assert_ne!(x[..32], x[8..]);

        let mut c = SeededRandom::new([1; 32]);
        c.queue(&[9, 8, 7]);
        let mut z = [0u8; 5];
        c.fill(&mut z);
        assert_eq!(z, [9, 8, 7, x[0], x[1]]);
        let mut other = [0u8; 40];
        SeededRandom::new([2; 32]).fill(&mut other);
        assert_ne!(x, other);
    }
}
