//! The TEK schedule: which TEK protects the content at each instant, and which one is announced
//! next (profile P-1, P-6, P-9).
//!
//! - Every crypto period gets a fresh TEK (16 bytes) and salt (14 bytes) from the injected
//!   [`RandomSource`].
//! - TEK IDs start at SEQl + 1 (1 for the BSM's window 0..0xFFFE) and rise by one per TEK;
//!   0xFFFF and IDs above SEQu are never used (P-1). At a switch to the next SEK/PEK of the same
//!   Key Group they go on rising when its window allows \[chosen\], so that an MKI's TEK ID and
//!   an ESP SPI (Key Group ‖ TEK ID, P-9) never repeat within a group; otherwise they start again
//!   at the new key's SEQl + 1. When they run out the current TEK stays in use and
//!   [`ScheduleError::TekIdsExhausted`] says so.
//! - Periods end on whole seconds, so switches and announcements fall on the STKM stream's
//!   once-a-second rounds.
//! - A TEK never outlives its SEK/PEK: a period that would cross the key's end is cut there, and
//!   the next TEK is drawn under the key valid from that instant, with TEK IDs starting again.
//! - The next TEK exists `lead` before the switch, so its STKMs go out ahead of it and
//!   terminals hold it when the first packet under it arrives.
//!
//! Times are Unix milliseconds passed in; they must not go backwards.

use std::sync::Arc;

use keycast_crypto::keys::{Tek, TekSalt};
use keycast_traffic::esp::{EspKey, Spi};
use keycast_traffic::srtp::{Mki, SrtpMasterKey};
use zeroize::Zeroizing;

use crate::keys::{LiveKey, NoRandomness, RandomSource};

/// How long TEKs live and how early the next one is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Crypto period: how long one TEK protects the content, milliseconds.
    pub crypto_period_ms: u64,
    /// How long before a TEK switch the next TEK is announced in STKMs, milliseconds.
    pub lead_ms: u64,
}

impl ScheduleConfig {
    /// A schedule; `None` unless `0 < lead < crypto period` (a TEK must exist before it is
    /// announced, and the announcement must come before the switch) and both are whole seconds
    /// (so switches and announcements fall on the STKM stream's once-a-second rounds, see
    /// [`crate::stream`]).
    #[must_use]
    pub fn new(crypto_period_ms: u64, lead_ms: u64) -> Option<Self> {
        (lead_ms > 0
            && lead_ms < crypto_period_ms
            && crypto_period_ms.is_multiple_of(1000)
            && lead_ms.is_multiple_of(1000))
        .then_some(Self { crypto_period_ms, lead_ms })
    }
}

/// Why the schedule could not move on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// No live SEK/PEK covers this instant (Unix ms); the current TEK, if any, stays in use.
    #[error("no SEK/PEK is valid at {0} ms")]
    NoKey(u64),
    /// The random source failed.
    #[error(transparent)]
    Random(#[from] NoRandomness),
    /// The SEK/PEK's TEK ID window is used up; the current TEK stays in use.
    #[error("TEK IDs of SEK/PEK {0:08x} are used up")]
    TekIdsExhausted(u32),
}

/// One TEK with the key that announces it and its period. Key bytes zeroize on drop; `Debug`
/// shows only IDs and times.
#[derive(Clone)]
pub struct TekEntry {
    /// The SEK/PEK whose STKMs carry this TEK.
    pub key: Arc<LiveKey>,
    /// TEK ID.
    pub tek_id: u16,
    /// The TEK (SRTP master key).
    pub tek: Tek,
    /// The salt (SRTP master salt).
    pub salt: TekSalt,
    /// When it starts protecting, Unix ms.
    pub from_ms: u64,
    /// When the next TEK takes over, Unix ms.
    pub until_ms: u64,
}

impl core::fmt::Debug for TekEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TekEntry")
            .field("sek_pek_id", &self.key.sek_pek_id)
            .field("tek_id", &self.tek_id)
            .field("from_ms", &self.from_ms)
            .field("until_ms", &self.until_ms)
            .finish_non_exhaustive()
    }
}

impl TekEntry {
    /// MKI = SEK/PEK ID ‖ TEK ID (profile P-9).
    #[must_use]
    pub fn mki(&self) -> Mki {
        Mki::new(self.key.id_u32(), self.tek_id)
    }

    /// The SRTP master key: TEK, salt, MKI (profile P-9).
    #[must_use]
    pub fn srtp_key(&self) -> SrtpMasterKey {
        SrtpMasterKey::new(self.mki(), self.tek.clone(), self.salt.clone())
    }

    /// The ESP SA: SPI = Key Group ‖ TEK ID, key = TEK (profile P-9).
    #[must_use]
    pub fn esp_key(&self) -> EspKey {
        EspKey::new(Spi::new(self.key.sek_pek_id.key_group, self.tek_id), self.tek.clone())
    }

    /// Whether `other` is the same TEK (same SEK/PEK and TEK ID).
    #[must_use]
    pub fn same_tek(&self, other: &TekEntry) -> bool {
        self.key.same_key(&other.key) && self.tek_id == other.tek_id
    }
}

/// The TEK schedule (module docs).
#[derive(Debug)]
pub struct TekSchedule<R> {
    config: ScheduleConfig,
    rng: R,
    keys: Vec<Arc<LiveKey>>,
    current: Option<TekEntry>,
    next: Option<TekEntry>,
}

impl<R: RandomSource> TekSchedule<R> {
    /// An empty schedule: give it keys with [`TekSchedule::set_keys`], then call
    /// [`TekSchedule::advance`].
    pub fn new(config: ScheduleConfig, rng: R) -> Self {
        Self { config, rng, keys: Vec::new(), current: None, next: None }
    }
}

impl<R> TekSchedule<R> {
    /// The configuration.
    #[must_use]
    pub fn config(&self) -> ScheduleConfig {
        self.config
    }

    /// Replaces the live SEK/PEKs (the BSM's latest answer). TEKs already drawn keep their key.
    pub fn set_keys(&mut self, keys: impl IntoIterator<Item = LiveKey>) {
        let mut keys: Vec<Arc<LiveKey>> = keys.into_iter().map(Arc::new).collect();
        keys.sort_by_key(|k| k.from);
        self.keys = keys;
    }

    /// The live keys, oldest first.
    #[must_use]
    pub fn keys(&self) -> &[Arc<LiveKey>] {
        &self.keys
    }

    /// The TEK protecting the content now.
    #[must_use]
    pub fn current(&self) -> Option<&TekEntry> {
        self.current.as_ref()
    }

    /// The next TEK, once announced (from `lead` before the switch).
    #[must_use]
    pub fn next(&self) -> Option<&TekEntry> {
        self.next.as_ref()
    }

    /// When [`TekSchedule::advance`] has work next (announce or switch), Unix ms.
    #[must_use]
    pub fn next_event(&self) -> Option<u64> {
        let current = self.current.as_ref()?;
        Some(match self.next {
            None => current.until_ms.saturating_sub(self.config.lead_ms),
            Some(_) => current.until_ms,
        })
    }
}

impl<R: RandomSource> TekSchedule<R> {
    /// Moves the schedule to `now`: draws the first TEK, announces the next one `lead` ahead,
    /// switches at the end of a period. Returns whether the current or next TEK changed.
    ///
    /// # Errors
    /// [`ScheduleError`]: the schedule keeps what it has (the current TEK stays in use) and a
    /// later call tries again.
    pub fn advance(&mut self, now: u64) -> Result<bool, ScheduleError> {
        let mut changed = false;
        if self.current.is_none() {
            self.current = Some(self.draw(now, None)?);
            changed = true;
        }
        while let Some(current) = self.current.as_ref().filter(|c| now >= c.until_ms) {
            let next = match self.next.take() {
                Some(n) => n,
                None => {
                    let (start, prev) = (current.until_ms, (current.key.clone(), current.tek_id));
                    match self.draw(start, Some(prev)) {
                        Ok(n) => n,
                        Err(e) => {
                            // Keep protecting with the current TEK rather than stop the content.
                            if let Some(c) = self.current.as_mut() {
                                c.until_ms = now.saturating_add(1000);
                            }
                            return Err(e);
                        }
                    }
                }
            };
            self.current = Some(next);
            changed = true;
        }
        if self.next.is_none()
            && let Some(current) = &self.current
            && now.saturating_add(self.config.lead_ms) >= current.until_ms
        {
            let (start, prev) = (current.until_ms, (current.key.clone(), current.tek_id));
            self.next = Some(self.draw(start, Some(prev))?);
            changed = true;
        }
        Ok(changed)
    }

    /// A fresh TEK starting at `start`, after `prev`.
    fn draw(&mut self, start: u64, prev: Option<(Arc<LiveKey>, u16)>) -> Result<TekEntry, ScheduleError> {
        let key = self.keys.iter().rev().find(|k| k.covers(start)).cloned().ok_or(ScheduleError::NoKey(start))?;
        // Under the same key: the next ID. Under a new key of the same group: the next ID too
        // when the new key's window allows it (so MKIs and ESP SPIs, = Key Group ‖ TEK ID, stay
        // unique in the group), otherwise SEQl + 1. [chosen]
        let first = key.tek_id_low.checked_add(1);
        let tek_id = match prev {
            Some((k, id)) if k.same_key(&key) => id.checked_add(1),
            Some((k, id)) if k.sek_pek_id.key_group == key.sek_pek_id.key_group => {
                id.checked_add(1).filter(|n| Some(*n) > first && *n <= key.tek_id_high && *n != 0xffff).or(first)
            }
            _ => first,
        };
        let tek_id = tek_id
            .filter(|id| *id <= key.tek_id_high && *id != 0xffff)
            .ok_or(ScheduleError::TekIdsExhausted(key.id_u32()))?;
        let mut material = Zeroizing::new([0u8; 30]);
        self.rng.fill(&mut material[..])?;
        let tek = Tek::from_bytes(core::array::from_fn(|i| material[i]));
        let salt = TekSalt::from_bytes(core::array::from_fn(|i| material[16 + i]));
        // Periods end on whole seconds (the first one may be longer by less than a second).
        let end = start.saturating_add(self.config.crypto_period_ms).div_ceil(1000).saturating_mul(1000);
        let until_ms = end.min(key.until.saturating_mul(1000));
        Ok(TekEntry { key, tek_id, tek, salt, from_ms: start, until_ms })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use keycast_crypto::keys::SekPek;
    use keycast_mikey::{KeyDomainId, SekPekId};

    use super::*;
    use crate::keys::SeededRandom;

    pub(crate) const T0: u64 = 1_767_225_600;

    pub(crate) fn key(n: u16, from: u64, until: u64) -> LiveKey {
        LiveKey {
            key_domain_id: KeyDomainId::from_mcc_mnc("001", "01").unwrap(),
            sek_pek_id: SekPekId { key_group: 3, key_number: n },
            key: SekPek::from_bytes([n as u8; 16]),
            rand: [0xa0 | n as u8; 16],
            from,
            until,
            ts_low: crate::keys::ntp_seconds(from * 1000).unwrap(),
            ts_high: crate::keys::ntp_seconds(until * 1000 - 1000).unwrap(),
            tek_id_low: 0,
            tek_id_high: 0xfffe,
        }
    }

    fn schedule() -> TekSchedule<SeededRandom> {
        let mut s = TekSchedule::new(ScheduleConfig::new(10_000, 2_000).unwrap(), SeededRandom::new(1));
        s.set_keys([key(1, T0 - 100, T0 + 25), key(2, T0 + 25, T0 + 1000)]);
        s
    }

    #[test]
    fn config_needs_lead_below_period() {
        assert!(ScheduleConfig::new(10_000, 10_000).is_none());
        assert!(ScheduleConfig::new(10_000, 0).is_none());
        assert!(ScheduleConfig::new(10_500, 1_000).is_none(), "whole seconds only");
        assert!(ScheduleConfig::new(10_000, 9_000).is_some());
    }

    #[test]
    fn tek_ids_rise_from_one_and_next_is_announced_lead_ahead() {
        let mut s = schedule();
        let t = T0 * 1000;
        assert!(s.advance(t).unwrap());
        let first = s.current().unwrap().clone();
        assert_eq!((first.tek_id, first.from_ms, first.until_ms), (1, t, t + 10_000));
        assert!(s.next().is_none());
        assert_eq!(s.next_event(), Some(t + 8_000));
        assert!(!s.advance(t + 7_999).unwrap());
        assert!(s.advance(t + 8_000).unwrap());
        let next = s.next().unwrap().clone();
        assert_eq!(next.tek_id, 2);
        assert_ne!(next.tek, first.tek);
        assert_ne!(next.salt, first.salt);
        assert_eq!(s.next_event(), Some(t + 10_000));
        assert!(s.advance(t + 10_000).unwrap());
        assert!(s.current().unwrap().same_tek(&next));
        assert_eq!(s.current().unwrap().tek, next.tek, "the announced TEK is the one used");
        assert!(s.next().is_none());
    }

    #[test]
    fn switches_sek_at_its_start_and_tek_ids_go_on() {
        let mut s = schedule();
        let t = T0 * 1000;
        s.advance(t).unwrap();
        s.advance(t + 10_000).unwrap();
        // The third period would cross key 1's end at T0 + 25 s: cut there.
        s.advance(t + 20_000).unwrap();
        let c = s.current().unwrap();
        assert_eq!((c.key.sek_pek_id.key_number, c.tek_id, c.until_ms), (1, 3, t + 25_000));
        s.advance(t + 23_000).unwrap();
        let n = s.next().unwrap();
        assert_eq!((n.key.sek_pek_id.key_number, n.tek_id, n.from_ms), (2, 4, t + 25_000));
        s.advance(t + 25_000).unwrap();
        assert_eq!(s.current().unwrap().mki(), Mki::new(0x0003_0002, 4));
    }

    #[test]
    fn without_a_key_nothing_is_drawn_and_the_current_tek_stays() {
        let mut s = TekSchedule::new(ScheduleConfig::new(10_000, 2_000).unwrap(), SeededRandom::new(1));
        assert_eq!(s.advance(T0 * 1000), Err(ScheduleError::NoKey(T0 * 1000)));
        s.set_keys([key(1, T0, T0 + 10)]);
        s.advance(T0 * 1000).unwrap();
        let first = s.current().unwrap().clone();
        // Key 1 ends at T0 + 10 s and no next key is known.
        assert!(s.advance(T0 * 1000 + 9_000).is_err());
        assert!(s.advance(T0 * 1000 + 10_000).is_err());
        assert!(s.current().unwrap().same_tek(&first));
        s.set_keys([key(1, T0, T0 + 10), key(2, T0 + 10, T0 + 100)]);
        s.advance(T0 * 1000 + 10_500).unwrap();
        s.advance(T0 * 1000 + 11_000).unwrap();
        assert_eq!(s.current().unwrap().key.sek_pek_id.key_number, 2);
        assert_eq!(s.current().unwrap().tek_id, 2, "TEK IDs go on in the group");
    }

    #[test]
    fn tek_id_window_is_respected() {
        let mut k = key(1, T0, T0 + 1000);
        k.tek_id_low = 5;
        k.tek_id_high = 6;
        let mut s = TekSchedule::new(ScheduleConfig::new(10_000, 2_000).unwrap(), SeededRandom::new(1));
        s.set_keys([k]);
        s.advance(T0 * 1000).unwrap();
        assert_eq!(s.current().unwrap().tek_id, 6);
        assert_eq!(s.advance(T0 * 1000 + 8_000), Err(ScheduleError::TekIdsExhausted(0x0003_0001)));
    }
}
