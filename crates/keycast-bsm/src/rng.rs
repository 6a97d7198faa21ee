//! Randomness the LTKM issuer and the push scheduler draw, supplied by the caller.
//!
//! The cores never reach for an operating-system generator themselves: the shell passes one in,
//! and tests pass a seeded one, so a run can be replayed exactly (quinn's `rng_seed`). The trait
//! has the shape of `keycast_gba::bsf::RandomSource`; it is defined here again so that the BSM
//! does not depend on the BSF crate (DESIGN.md §2 arrows).
//!
//! Two different needs draw from it:
//! - **jitter** of push times ([`crate::delivery`]) only has to be spread out, not secret;
//! - the **RAND and CSB ID of a solicited-pull trigger** ([`crate::issue::solicited_pull_ltkm`])
//!   enter key derivation and should be unpredictable: production shells back the trait with the
//!   operating system's CSPRNG (e.g. `getrandom::fill`) for those.

/// A source of random octets.
pub trait RandomSource {
    /// Fills `buf` with random octets.
    fn fill(&mut self, buf: &mut [u8]);

    /// Eight random octets as an integer.
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_be_bytes(b)
    }
}

impl<R: RandomSource + ?Sized> RandomSource for &mut R {
    fn fill(&mut self, buf: &mut [u8]) {
        (**self).fill(buf);
    }
}

/// A deterministic generator (SplitMix64) for tests, benches and reproducible runs — **never for
/// RAND or CSB ID in production**: anyone who knows the seed knows every value. It is fine for
/// push jitter, which only spreads load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededRandom {
    state: u64,
}

impl SeededRandom {
    /// A generator with the given seed.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn step(&mut self) -> u64 {
        // SplitMix64 (Steele, Lea, Flood 2014): a full-period 64-bit sequence with good mixing,
        // cheap enough to draw once per scheduled push.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl RandomSource for SeededRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.step().to_be_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.step()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_fill_matches_words() {
        let (mut a, mut b) = (SeededRandom::new(7), SeededRandom::new(7));
        let mut buf = [0u8; 12];
        a.fill(&mut buf);
        let (w0, w1) = (b.next_u64().to_be_bytes(), b.next_u64().to_be_bytes());
        assert_eq!(&buf[..8], &w0);
        assert_eq!(&buf[8..], &w1[..4]);
        assert_ne!(SeededRandom::new(8).next_u64(), SeededRandom::new(7).next_u64());
    }
}
