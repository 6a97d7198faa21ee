//! The STKM stream (profile P-6, P-8): STKMs for the TEKs the schedule holds (the current one
//! and, from `lead` before the switch, the next one), sealed under each TEK's SEK/PEK with the
//! RAND stored with it.
//!
//! - Layout: `HDR ‖ EXT(Key ID: Key Domain ID, SEK/PEK ID, TEK ID) ‖ T ‖ EXT(OMA BCAST STKM) ‖
//!   KEMAC(TEK ‖ salt)`, built by [`keycast_mikey::StkmContent::seal`].
//! - TS: the integer NTP seconds of the send time, always greater than the last TS sent under
//!   the same SEK/PEK (also when the TEK repeats), and never below the key's TS low (the next
//!   key's STKMs go out before it starts) (P-6).
//! - CSB ID: drawn once per stream (P-2).
//! - Timing \[chosen\]: one round per NTP second (P-8: at least once a second), at the first
//!   poll in that second; and at once when the announced TEKs change, for every key whose TS of
//!   this second is still unused. A round carries **at most one STKM per SEK/PEK**: when the
//!   current and the next TEK share a key, the next one goes first (the announcement), then
//!   they alternate. So a key never uses more than one TS per second and TS stays at the wall
//!   clock (a TS running ahead would leave the key's TS window before the key ends); only
//!   a key announced before its start runs ahead, by at most the lead.

use std::collections::HashMap;

use keycast_mikey::{
    AccessDescriptor, MikeyError, ProtectionAfterReception, SekPekId, StkmContent, StkmExt, TekField,
    TrafficProtectionProtocol,
};

use crate::keys::ntp_seconds;
use crate::schedule::{TekEntry, TekSchedule};

/// What the OMA BCAST STKM extension says (profile P-6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StkmSettings {
    /// protection_after_reception; 2 (bound to a terminal) is not offered by a broadcaster,
    /// which knows no TBK.
    pub protection_after_reception: ProtectionAfterReception,
    /// traffic_protection_protocol (SRTP or IPsec ESP here).
    pub protocol: TrafficProtectionProtocol,
    /// traffic_authentication_flag: SRTP tags / ESP ICVs are present.
    pub traffic_authentication: bool,
    /// Program ID access criterion (PEK-protected pay-per-view programs).
    pub program_id: Option<u32>,
    /// Parental rating access criterion: rating system and minimum age.
    pub parental_rating: Option<(u8, u8)>,
}

impl Default for StkmSettings {
    fn default() -> Self {
        Self {
            protection_after_reception: ProtectionAfterReception::ServiceProtectionOnly,
            protocol: TrafficProtectionProtocol::Srtp,
            traffic_authentication: true,
            program_id: None,
            parental_rating: None,
        }
    }
}

impl StkmSettings {
    /// The extension every STKM of the stream carries.
    #[must_use]
    pub fn ext(&self) -> StkmExt {
        let mut access = Vec::new();
        if let Some((system, min_age)) = self.parental_rating {
            access.push(AccessDescriptor::ParentalRating { system, min_age });
        }
        if let Some(id) = self.program_id {
            access.push(AccessDescriptor::ProgramId(id));
        }
        StkmExt {
            protection_after_reception: self.protection_after_reception,
            traffic_protection_protocol: self.protocol,
            traffic_authentication: self.traffic_authentication,
            tbk_id: None,
            access_criteria: (!access.is_empty()).then_some(access),
        }
    }
}

/// Why the stream cannot be set up or an STKM not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The settings ask for something a broadcaster cannot do.
    #[error("invalid STKM settings: {0}")]
    Settings(&'static str),
    /// Sealing failed.
    #[error(transparent)]
    Seal(#[from] MikeyError),
    /// The time is past NTP era 0.
    #[error("time out of the NTP era")]
    Time,
}

/// One STKM ready to go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutStkm {
    /// The protecting SEK/PEK.
    pub sek_pek_id: SekPekId,
    /// The TEK it carries.
    pub tek_id: u16,
    /// Its TS.
    pub ts: u32,
    /// The message.
    pub bytes: Vec<u8>,
}

/// The STKM stream (module docs).
#[derive(Debug)]
pub struct StkmStream {
    settings: StkmSettings,
    ext: StkmExt,
    csb_id: u32,
    /// Per SEK/PEK (by ID and window start): last TS sent and the TEK ID it carried.
    last: HashMap<(SekPekId, u64), (u32, u16)>,
    last_sent_ms: Option<u64>,
    /// (SEK/PEK ID, window start, TEK ID) of the TEKs held at the last poll.
    last_set: Vec<(SekPekId, u64, u16)>,
}

impl StkmStream {
    /// A stream with CSB ID `csb_id` (draw it at random, P-2).
    ///
    /// # Errors
    /// [`StreamError::Settings`] for protection_after_reception 2.
    pub fn new(settings: StkmSettings, csb_id: u32) -> Result<Self, StreamError> {
        if settings.protection_after_reception == ProtectionAfterReception::TerminalBound {
            return Err(StreamError::Settings("protection_after_reception 2 needs a terminal's TBK"));
        }
        let ext = settings.ext();
        Ok(Self { settings, ext, csb_id, last: HashMap::new(), last_sent_ms: None, last_set: Vec::new() })
    }

    /// The settings.
    #[must_use]
    pub fn settings(&self) -> &StkmSettings {
        &self.settings
    }

    /// The stream's CSB ID.
    #[must_use]
    pub fn csb_id(&self) -> u32 {
        self.csb_id
    }

    /// When the next round is due: the start of the next second, Unix ms (`None` before the
    /// first round).
    #[must_use]
    pub fn next_due(&self) -> Option<u64> {
        self.last_sent_ms.map(|t| (t / 1000).saturating_add(1).saturating_mul(1000))
    }

    /// The STKMs due at `now` (module docs); empty when none is.
    ///
    /// # Errors
    /// [`StreamError`]; nothing is recorded as sent then.
    pub fn poll<R>(&mut self, now: u64, schedule: &TekSchedule<R>) -> Result<Vec<OutStkm>, StreamError> {
        let entries: Vec<&TekEntry> = schedule.current().into_iter().chain(schedule.next()).collect();
        let set: Vec<(SekPekId, u64, u16)> = entries.iter().map(|e| (e.key.sek_pek_id, e.key.from, e.tek_id)).collect();
        let changed = set != self.last_set;
        let new_second = self.last_sent_ms.is_none_or(|t| now / 1000 > t / 1000);
        if entries.is_empty() || !(changed || new_second) {
            return Ok(Vec::new());
        }
        let now_ts = ntp_seconds(now).ok_or(StreamError::Time)?;
        let mut chosen: Vec<(&TekEntry, u32)> = Vec::with_capacity(2);
        for (i, e) in entries.iter().enumerate() {
            let slot = (e.key.sek_pek_id, e.key.from);
            if chosen.iter().any(|(c, _)| (c.key.sek_pek_id, c.key.from) == slot) {
                continue;
            }
            // The other TEK of this key, if both are held.
            let other = entries.iter().skip(i + 1).find(|o| (o.key.sek_pek_id, o.key.from) == slot);
            let last = self.last.get(&slot).copied();
            let pick = match (other, last) {
                // Both held: the announcement first, then alternate.
                (Some(next), Some((_, sent))) if sent == e.tek_id => *next,
                (Some(next), _) if changed && !self.last_set.contains(&(slot.0, slot.1, next.tek_id)) => *next,
                _ => *e,
            };
            let candidate = now_ts.max(pick.key.ts_low);
            let ts = match last {
                // Mid-second change: only keys whose TS for this second is unused.
                Some((ts, _)) if !new_second && ts >= candidate => continue,
                Some((ts, _)) if ts >= candidate => ts.checked_add(1).ok_or(StreamError::Time)?,
                _ => candidate,
            };
            chosen.push((pick, ts));
        }
        let mut out = Vec::with_capacity(chosen.len());
        for (e, ts) in &chosen {
            let content = StkmContent {
                csb_id: self.csb_id,
                key_domain_id: e.key.key_domain_id,
                sek_pek_id: e.key.sek_pek_id,
                tek_id: e.tek_id,
                ts: *ts,
                ext: Some(self.ext.clone()),
                tek: TekField::Clear(e.tek.clone()),
                salt: Some(e.salt.clone()),
            };
            let bytes = content.seal(&e.key.key, &e.key.rand)?;
            out.push(OutStkm { sek_pek_id: e.key.sek_pek_id, tek_id: e.tek_id, ts: *ts, bytes });
        }
        for (e, ts) in chosen {
            self.last.insert((e.key.sek_pek_id, e.key.from), (ts, e.tek_id));
        }
        // Keys no longer live need no TS memory.
        let live: Vec<(SekPekId, u64)> = schedule.keys().iter().map(|k| (k.sek_pek_id, k.from)).collect();
        self.last.retain(|slot, _| live.contains(slot) || set.iter().any(|(id, from, _)| (*id, *from) == *slot));
        if !out.is_empty() {
            self.last_sent_ms = Some(now);
        }
        self.last_set = set;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use keycast_card::mbms::{MbmsStore, TekOut};
    use keycast_crypto::keys::Smk;
    use keycast_mikey::{KeyValidity, LtkmContent, LtkmExt, SecurityPolicy, SecurityPolicyExt, Stkm};

    use super::*;
    use crate::keys::SeededRandom;
    use crate::schedule::ScheduleConfig;
    use crate::schedule::tests::{T0, key};

    fn setup() -> (TekSchedule<SeededRandom>, StkmStream) {
        let mut s = TekSchedule::new(ScheduleConfig::new(4_000, 2_000).unwrap(), SeededRandom::new(9));
        s.set_keys([key(1, T0 - 100, T0 + 10), key(2, T0 + 10, T0 + 1000)]);
        let settings = StkmSettings { program_id: Some(77), ..StkmSettings::default() };
        (s, StkmStream::new(settings, 0x0a0b_0c0d).unwrap())
    }

    fn ids(out: &[OutStkm]) -> Vec<(u16, u16, u32)> {
        out.iter().map(|o| (o.sek_pek_id.key_number, o.tek_id, o.ts)).collect()
    }

    #[test]
    fn refuses_terminal_binding() {
        let tb = StkmSettings {
            protection_after_reception: ProtectionAfterReception::TerminalBound,
            ..StkmSettings::default()
        };
        assert!(StkmStream::new(tb, 1).is_err());
    }

    #[test]
    fn once_a_second_announcement_first_then_alternating() {
        let (mut s, mut st) = setup();
        let t = T0 * 1000;
        let n = ntp_seconds(t).unwrap();
        let mut poll = |now: u64| {
            s.advance(now).unwrap();
            ids(&st.poll(now, &s).unwrap())
        };
        assert_eq!(poll(t), vec![(1, 1, n)]);
        assert_eq!(poll(t + 999), vec![], "not due within the second");
        assert_eq!(poll(t + 1000), vec![(1, 1, n + 1)]);
        // The next TEK is announced at once, ahead of the current one.
        assert_eq!(poll(t + 2000), vec![(1, 2, n + 2)]);
        assert_eq!(poll(t + 3000), vec![(1, 1, n + 3)]);
        assert_eq!(poll(t + 3500), vec![]);
        assert_eq!(poll(t + 4000), vec![(1, 2, n + 4)], "switched");
        assert_eq!(poll(t + 5000), vec![(1, 2, n + 5)]);
        // The last TEK of key 1 ends with the key at T0 + 10; key 2's first TEK is announced at
        // T0 + 8 under key 2 in the same round, with key 2's TS low.
        assert_eq!(poll(t + 6000), vec![(1, 3, n + 6)]);
        assert_eq!(poll(t + 7000), vec![(1, 2, n + 7)]);
        assert_eq!(poll(t + 8000), vec![(1, 3, n + 8), (2, 4, n + 10)]);
        assert_eq!(poll(t + 9000), vec![(1, 3, n + 9), (2, 4, n + 11)]);
        assert_eq!(poll(t + 10_000), vec![(2, 4, n + 12)]);
        let due = st.next_due().unwrap();
        assert_eq!(due, t + 11_000);
    }

    #[test]
    fn mid_second_change_uses_only_free_ts() {
        let (mut s, mut st) = setup();
        let t = T0 * 1000;
        s.advance(t).unwrap();
        assert_eq!(st.poll(t, &s).unwrap().len(), 1);
        // New keys mid-second: key 1's TS of this second is taken, so nothing goes out.
        s.set_keys([key(1, T0 - 100, T0 + 10), key(2, T0 + 10, T0 + 1000), key(3, T0 + 1000, T0 + 2000)]);
        assert!(st.poll(t + 500, &s).unwrap().is_empty());
        let out = st.poll(t + 1000, &s).unwrap();
        assert_eq!(out.len(), 1);
        let decoded = Stkm::decode(&out[0].bytes).unwrap();
        assert_eq!(decoded.ext().unwrap().program_id(), Some(77));
        assert_eq!(decoded.csb_id(), 0x0a0b_0c0d);
    }

    /// A card holding SEK 1 (LTKM first) opens every STKM to the TEK the schedule holds.
    #[test]
    fn card_opens_stkms_to_the_scheduled_teks() {
        let (mut s, mut st) = setup();
        let smk = Smk::from_bytes([0x21; 32]);
        let mut card = MbmsStore::default();
        card.install_muk("bsm.example.org", "btid@bsf", smk.clone()).unwrap();
        for k in s.keys().to_vec() {
            let ltkm = LtkmContent {
                csb_id: 5,
                verification_requested: false,
                srtp_cs: None,
                key_domain_id: k.key_domain_id,
                sek_pek_id: k.sek_pek_id,
                ts: u32::from(k.sek_pek_id.key_number),
                rand: k.rand,
                idi: "bsm.example.org".into(),
                idr: "btid@bsf".into(),
                srtp_policy: None,
                // BCAST form (TS window), so a resent TEK is accepted again (P-6 step 5).
                ext: Some(LtkmExt {
                    security_policy: Some(SecurityPolicyExt {
                        policy: SecurityPolicy::PayPerTime,
                        play_back_counter: 0,
                        view_counter: 0,
                    }),
                    tbk_id: None,
                    consumption_reporting: false,
                }),
                key: Some(k.key.clone()),
                validity: KeyValidity::TsWindow { ts_low: k.ts_low, ts_high: k.ts_high },
            };
            card.msk_update(&ltkm.seal(&smk).unwrap()).unwrap();
        }
        let t = T0 * 1000;
        let mut seen = 0;
        let mut highest: HashMap<SekPekId, u16> = HashMap::new();
        for step in 0..30u64 {
            let now = t + step * 500;
            s.advance(now).unwrap();
            for o in st.poll(now, &s).unwrap() {
                let answer = card.mtk_generation(&o.bytes);
                let top = highest.entry(o.sek_pek_id).or_default();
                if o.tek_id < *top {
                    // The current TEK repeated after the next was announced: a card that took the
                    // next one refuses it (P-6 step 5), and already holds it.
                    assert!(answer.is_err());
                    continue;
                }
                *top = o.tek_id;
                let entry = [s.current(), s.next()]
                    .into_iter()
                    .flatten()
                    .find(|e| e.tek_id == o.tek_id && e.key.sek_pek_id == o.sek_pek_id)
                    .unwrap();
                match answer.unwrap().tek {
                    TekOut::Clear { tek, salt } => {
                        assert_eq!(tek, entry.tek);
                        assert_eq!(salt.as_ref(), Some(&entry.salt));
                    }
                    other => panic!("unexpected {other:?}"),
                }
                seen += 1;
            }
        }
        assert!(seen >= 12, "{seen}");
        assert_eq!(s.current().unwrap().key.sek_pek_id.key_number, 2, "the SEK switched during the run");
    }
}

#[cfg(test)]
mod end_to_end {
    use keycast_card::mbms::{MbmsStore, TekOut};
    use keycast_crypto::keys::Smk;
    use keycast_mikey::{KeyValidity, LtkmContent};
    use keycast_traffic::srtp::{Mki, SrtpMasterKey, SrtpPolicy, SrtpReceiver};

    use super::*;
    use crate::keys::SeededRandom;
    use crate::protect::{Protector, TrafficMode};
    use crate::schedule::ScheduleConfig;
    use crate::schedule::tests::{T0, key};

    /// Broadcaster core → STKMs → card → TEKs → SRTP receiver: every RTP packet protected by the
    /// `Protector` unprotects with a TEK the card released, across TEK and SEK switches.
    #[test]
    fn srtp_decrypts_with_teks_the_card_took_from_stkms() {
        let mut schedule = TekSchedule::new(ScheduleConfig::new(3_000, 1_000).unwrap(), SeededRandom::new(5));
        schedule.set_keys([key(1, T0 - 10, T0 + 7), key(2, T0 + 7, T0 + 100)]);
        let mut stream = StkmStream::new(StkmSettings::default(), 42).unwrap();
        let mut protector = Protector::new(TrafficMode::Srtp(SrtpPolicy::rfc3711()), SeededRandom::new(6));
        let smk = Smk::from_bytes([3; 32]);
        let mut card = MbmsStore::default();
        card.install_muk("bsm", "btid", smk.clone()).unwrap();
        for k in schedule.keys().to_vec() {
            let ltkm = LtkmContent {
                csb_id: 1,
                verification_requested: false,
                srtp_cs: None,
                key_domain_id: k.key_domain_id,
                sek_pek_id: k.sek_pek_id,
                ts: u32::from(k.sek_pek_id.key_number),
                rand: k.rand,
                idi: "bsm".into(),
                idr: "btid".into(),
                srtp_policy: None,
                ext: None,
                key: Some(k.key.clone()),
                validity: KeyValidity::TekIdWindow { seq_l: k.tek_id_low, seq_u: k.tek_id_high },
            };
            card.msk_update(&ltkm.seal(&smk).unwrap()).unwrap();
        }
        let mut rx = SrtpReceiver::new(SrtpPolicy::rfc3711());
        let mut held: Vec<Mki> = Vec::new();
        let mut used: Vec<Mki> = Vec::new();
        for i in 0..600u16 {
            let now = T0 * 1000 + u64::from(i) * 20;
            schedule.advance(now).unwrap();
            if let Some(c) = schedule.current() {
                protector.set_tek(c);
            }
            for o in stream.poll(now, &schedule).unwrap() {
                let mki = Mki::new(u32::from_be_bytes(o.sek_pek_id.to_bytes()), o.tek_id);
                // MBMS-form keys take each TEK ID once (P-6 step 5); repeats are refused.
                if let Ok(answer) = card.mtk_generation(&o.bytes) {
                    let TekOut::Clear { tek, salt: Some(salt) } = answer.tek else { panic!("clear TEK expected") };
                    rx.add_key(&SrtpMasterKey::new(mki, tek, salt));
                    held.push(mki);
                }
            }
            let mut p = vec![0x80, 96];
            p.extend_from_slice(&i.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 7]);
            p.extend_from_slice(b"media");
            let plain = p.clone();
            protector.protect_rtp(&mut p).unwrap();
            let mki = Mki::from_bytes(p[plain.len()..plain.len() + 6].try_into().unwrap());
            assert!(held.contains(&mki), "the card gave {mki} before its first packet");
            if !used.contains(&mki) {
                used.push(mki);
            }
            rx.unprotect(&mut p).unwrap();
            assert_eq!(p, plain);
        }
        assert!(used.len() >= 4, "{used:?}");
        assert!(used.iter().any(|m| m.sek_pek_id() == 0x0003_0002), "the SEK switched: {used:?}");
    }
}
