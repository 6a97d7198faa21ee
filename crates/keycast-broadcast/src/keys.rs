//! The SEK/PEKs a broadcaster seals STKMs under, randomness, and NTP time.

use core::fmt;

use keycast_crypto::keys::SekPek;
use keycast_mikey::{KeyDomainId, SekPekId};

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970) (RFC 5905 §6).
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Unix milliseconds as the integer NTP seconds of an STKM's TS (profile P-6), or `None` past
/// the end of NTP era 0 (2036).
#[must_use]
pub fn ntp_seconds(unix_ms: u64) -> Option<u32> {
    u32::try_from(unix_ms / 1000 + NTP_UNIX_OFFSET).ok()
}

/// One live SEK/PEK: what the BSM's broadcaster API answers for a key (profile P-1, P-2, P-6).
/// The key zeroizes on drop; `Debug` shows no key bytes and no RAND.
#[derive(Clone, PartialEq, Eq)]
pub struct LiveKey {
    /// Key Domain ID.
    pub key_domain_id: KeyDomainId,
    /// SEK/PEK ID.
    pub sek_pek_id: SekPekId,
    /// The key.
    pub key: SekPek,
    /// The RAND its STKMs are sealed with (that of the LTKMs that deliver it, P-2).
    pub rand: [u8; 16],
    /// Start of its window, Unix seconds.
    pub from: u64,
    /// End of its window (exclusive), Unix seconds.
    pub until: u64,
    /// TS low (NTP seconds): no STKM under it may carry an earlier TS.
    pub ts_low: u32,
    /// TS high (NTP seconds).
    pub ts_high: u32,
    /// SEQl: TEK IDs under this key are greater.
    pub tek_id_low: u16,
    /// SEQu: TEK IDs under this key are at most this.
    pub tek_id_high: u16,
}

impl fmt::Debug for LiveKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveKey")
            .field("sek_pek_id", &self.sek_pek_id)
            .field("from", &self.from)
            .field("until", &self.until)
            .finish_non_exhaustive()
    }
}

impl LiveKey {
    /// Whether the key is valid at `unix_ms`.
    #[must_use]
    pub fn covers(&self, unix_ms: u64) -> bool {
        self.from.saturating_mul(1000) <= unix_ms && unix_ms < self.until.saturating_mul(1000)
    }

    /// The SEK/PEK ID as the 4-byte number that starts the MKI (profile P-9).
    #[must_use]
    pub fn id_u32(&self) -> u32 {
        u32::from_be_bytes(self.sek_pek_id.to_bytes())
    }

    /// Whether `other` is the same key (same ID and window).
    #[must_use]
    pub fn same_key(&self, other: &LiveKey) -> bool {
        self.sek_pek_id == other.sek_pek_id && self.from == other.from
    }
}

/// No random octets could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no random octets available")]
pub struct NoRandomness;

/// Where TEKs, salts, CSB IDs and ESP IVs come from: the OS in service, a seeded source in tests.
pub trait RandomSource {
    /// Fills `buf` with unpredictable octets.
    ///
    /// # Errors
    /// [`NoRandomness`].
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), NoRandomness>;
}

impl<R: RandomSource + ?Sized> RandomSource for Box<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), NoRandomness> {
        (**self).fill(buf)
    }
}

/// The operating system's CSPRNG.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), NoRandomness> {
        getrandom::fill(buf).map_err(|_| NoRandomness)
    }
}

/// A deterministic source for tests and benches (SplitMix64); never use it for real keys.
#[derive(Debug, Clone)]
pub struct SeededRandom(u64);

impl SeededRandom {
    /// A source starting from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
}

impl RandomSource for SeededRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), NoRandomness> {
        for chunk in buf.chunks_mut(8) {
            // SplitMix64 (Steele, Lea, Flood 2014).
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_be_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}
