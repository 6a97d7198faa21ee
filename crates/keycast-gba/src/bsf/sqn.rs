//! The SQN scheme of the subscriber store (TS 33.102 §6.3.2 and Annex C, simplified).
//!
//! SQN is 48 bits. Keycast uses the Annex C layout SQN = SEQ ‖ IND with a 5-bit IND that is
//! **always 0**: every new vector takes SQN_HE + [`SqnScheme::step`] (default 32, i.e. SEQ + 1).
//! The stored value is the last SQN issued (SQN_HE).
//!
//! Resynchronisation (TS 33.102 §6.3.5): the BSF recovers SQN_MS from AUTS
//! ([`keycast_crypto::milenage::Milenage::recover_sqn_ms`], which also checks MAC-S) and issues
//! its next vector with SQN = SQN_MS + step, which a USIM with the freshness rule
//! `SQN_MS < SQN ≤ SQN_MS + Δ` always accepts. An AUTS whose MAC-S fails changes nothing.

/// The largest SQN (2^48 − 1).
pub const SQN_MAX: u64 = (1 << 48) - 1;

/// How SQN advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqnScheme {
    /// Increment per vector; 32 = one SEQ step with a 5-bit IND left at 0. At least 1.
    pub step: u64,
}

impl Default for SqnScheme {
    fn default() -> Self {
        SqnScheme { step: 32 }
    }
}

impl SqnScheme {
    /// The SQN of the next vector after `current` (the last issued), or `None` when the 48-bit
    /// space is exhausted (the subscriber needs a new K).
    #[must_use]
    pub fn next(&self, current: u64) -> Option<u64> {
        current.checked_add(self.step.max(1)).filter(|&n| n <= SQN_MAX)
    }

    /// The SQN of the first vector after a resynchronisation to `sqn_ms` (SQN_MS + step).
    #[must_use]
    pub fn after_resync(&self, sqn_ms: u64) -> Option<u64> {
        self.next(sqn_ms & SQN_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_exhaustion() {
        let s = SqnScheme::default();
        assert_eq!(s.next(0), Some(32));
        assert_eq!(s.next(0xff9b_b4d0_b5e7), Some(0xff9b_b4d0_b607));
        assert_eq!(s.after_resync(0x21), Some(0x41));
        assert_eq!(s.next(SQN_MAX - 31), None);
        assert_eq!(s.next(SQN_MAX - 32), Some(SQN_MAX));
        assert_eq!(SqnScheme { step: 0 }.next(5), Some(6));
    }
}
