//! Packet index estimation (RFC 3711 §3.3.1) and the sliding replay window (§3.3.2).

use super::SrtpError;

/// Width of the replay window in packets. RFC 3711 asks for at least 64; 128 (one `u128`)
/// tolerates more reordering at no extra cost.
pub const REPLAY_WINDOW: u64 = 128;

/// Highest accepted index of a stream plus a bitmap of the [`REPLAY_WINDOW`] indices below it
/// (bit k set = index `highest - k` accepted). For SRTP, `highest >> 16` is the ROC and the
/// low 16 bits are s_l.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplayWindow {
    highest: u64,
    seen: u128,
}

impl ReplayWindow {
    /// A window whose only accepted index is `index`.
    pub(crate) fn new(index: u64) -> Self {
        Self { highest: index, seen: 1 }
    }

    pub(crate) fn highest(&self) -> u64 {
        self.highest
    }

    /// Replaces the ROC part of the highest index, keeping s_l and the bitmap.
    pub(crate) fn set_roc(&mut self, roc: u32) {
        self.highest = u64::from(roc) << 16 | (self.highest & 0xffff);
    }

    /// Refuses an index already accepted or below the window.
    pub(crate) fn check(&self, index: u64) -> Result<(), SrtpError> {
        if index > self.highest {
            return Ok(());
        }
        let delta = self.highest - index;
        if delta >= REPLAY_WINDOW {
            return Err(SrtpError::TooOld { highest: self.highest });
        }
        if self.seen >> delta & 1 == 1 {
            return Err(SrtpError::Replayed { index });
        }
        Ok(())
    }

    /// Records an index that passed [`Self::check`] and authentication.
    pub(crate) fn accept(&mut self, index: u64) {
        if index > self.highest {
            let shift = index - self.highest;
            self.seen = if shift >= REPLAY_WINDOW { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = index;
        } else {
            // check() passed, so delta < REPLAY_WINDOW and the shift is in range.
            self.seen |= 1u128 << (self.highest - index);
        }
    }
}

/// Guesses the 48-bit index of a packet with sequence number `seq`, given the highest index
/// accepted so far (RFC 3711 §3.3.1 and Appendix A):
///
/// ```text
/// if s_l < 32768:  v = ROC - 1 if SEQ - s_l > 32768 else ROC
/// else:            v = ROC + 1 if s_l - 32768 > SEQ else ROC
/// i = SEQ + v * 65536
/// ```
///
/// A guess of ROC − 1 with ROC = 0 lies before the stream began (`TooOld`); a guess of
/// ROC + 1 past 2^32 − 1 leaves the index space (`IndexExhausted`).
pub(crate) fn estimate_index(highest: u64, seq: u16) -> Result<u64, SrtpError> {
    let roc = highest >> 16;
    let s_l = highest & 0xffff;
    let seq64 = u64::from(seq);
    let v = if s_l < 32768 {
        if seq64 > s_l + 32768 { roc.checked_sub(1).ok_or(SrtpError::TooOld { highest })? } else { roc }
    } else if s_l - 32768 > seq64 {
        roc + 1
    } else {
        roc
    };
    if v > u64::from(u32::MAX) {
        return Err(SrtpError::IndexExhausted);
    }
    Ok(v << 16 | seq64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_follows_rfc3711_3_3_1() {
        assert_eq!(estimate_index(0, 1), Ok(1));
        assert_eq!(estimate_index(0xffff, 0), Ok(0x1_0000));
        assert_eq!(estimate_index(0x1_0002, 0xfffe), Ok(0xfffe));
        assert_eq!(estimate_index(5, 0xfff0), Err(SrtpError::TooOld { highest: 5 }));
        assert_eq!(estimate_index(0xffff_ffff_ffff, 3), Err(SrtpError::IndexExhausted));
        assert_eq!(estimate_index(0x7_8000, 0x8000 + 1), Ok(0x7_8001));
    }

    #[test]
    fn window_refuses_replays_and_old_packets() {
        let mut w = ReplayWindow::new(200);
        assert_eq!(w.check(200), Err(SrtpError::Replayed { index: 200 }));
        assert_eq!(w.check(199), Ok(()));
        w.accept(199);
        assert_eq!(w.check(199), Err(SrtpError::Replayed { index: 199 }));
        assert_eq!(w.check(200 - 127), Ok(()));
        assert_eq!(w.check(200 - 128), Err(SrtpError::TooOld { highest: 200 }));
        w.accept(1000);
        assert_eq!(w.check(200), Err(SrtpError::TooOld { highest: 1000 }));
        assert_eq!(w.check(999), Ok(()));
        w.accept(1001);
        assert_eq!(w.check(1000), Err(SrtpError::Replayed { index: 1000 }));
    }
}
