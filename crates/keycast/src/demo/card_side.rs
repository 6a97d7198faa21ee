//! The card side of the demo: the checks a smartcard makes on LTKMs and STKMs.
//!
//! **The full card emulator (APDUs, status words on the wire, persistence, parental control, the
//! secure authenticated channel of P-10) lives in `keycast-card` (a later issue).** This module
//! keeps only the decision logic the demo narrates, and that logic is real: every acceptance and
//! every refusal the demo prints comes from the checks below, in the order of profile P-6:
//!
//! - LTKM (P-3): MAC with the SMK, then the LTKM counter of that SMK must increase (RFC 1982
//!   serial comparison; an undefined comparison is a replay); store SEK/PEK + RAND + validity,
//!   apply key-validity updates and invalidations, recognise a solicited pull, and build the
//!   verification message when V = 1.
//! - STKM (P-6): 1 find the key (6A88) and refuse an invalidated one (6985); 2 MAC (9862);
//!   3 key validity (9865); 4 freshness per SEK/PEK, where the P-4 policy decides between discard
//!   and play-back; 5 the resend rule (same TEK ID = fast-zapping resend, lower = refused);
//!   6 rights (pay-per-view program lock, user PPV tokens); 7 unwrap (TBK), store, answer
//!   TEK ‖ salt.

use core::fmt;

use keycast_crypto::key_wrap;
use keycast_crypto::keys::{SekPek, Smk, Tbk, Tek, TekSalt};
use keycast_mikey::{
    KeyDomainId, KeyValidity, Ltkm, MikeyError, OpenedLtkm, SecurityPolicy, SecurityPolicyExt, SekPekId, Stkm,
    TekField, TekId, VerificationMessage,
};

/// `a > b` in RFC 1982 serial-number arithmetic with 32 bits. Equal values and the undefined
/// case (a difference of exactly 2^31) are not greater, so both count as replays (profile P-2).
#[must_use]
pub fn serial_gt(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 0x8000_0000
}

/// Why the card refused a message. [`CardError::status_word`] gives the word the card would
/// answer (profile P-6; ISO 7816-4 meanings for the rest).
#[derive(Debug)]
pub enum CardError {
    /// The message does not decode, or breaks the profile.
    Malformed(MikeyError),
    /// The MAC did not verify.
    Mac(MikeyError),
    /// An LTKM whose counter is not above the last one accepted under this SMK.
    LtkmReplay {
        /// The LTKM's TS.
        ts: u32,
        /// The last accepted TS.
        last: u32,
    },
    /// No SEK/PEK with this ID (the terminal would send an LTKM Request).
    KeyNotFound(SekPekId),
    /// The SEK/PEK was revoked by an invalidation LTKM.
    KeyInvalidated(SekPekId),
    /// The STKM falls outside the key's validity.
    OutsideValidity {
        /// The STKM's TS.
        ts: u32,
        /// The STKM's TEK ID.
        tek_id: TekId,
        /// The key's validity.
        validity: KeyValidity,
    },
    /// The STKM's TS is not above the last accepted one and the key's policy allows no play-back.
    NotFresh {
        /// The STKM's TS.
        ts: u32,
        /// The last accepted TS.
        last: u32,
    },
    /// A TEK ID below the last accepted one (only equal IDs are resends).
    LowerTekId {
        /// The STKM's TEK ID.
        tek_id: TekId,
        /// The last accepted TEK ID.
        last: TekId,
    },
    /// The key's rights do not allow this use.
    Rights(&'static str),
    /// The TEK is bound to a terminal whose TBK the card does not hold, or the unwrap failed.
    Tbk(&'static str),
}

impl CardError {
    /// The status word the card answers with.
    #[must_use]
    pub fn status_word(&self) -> u16 {
        match self {
            Self::Malformed(_) => 0x6a80,
            Self::Mac(_) => 0x9862,
            Self::LtkmReplay { .. }
            | Self::OutsideValidity { .. }
            | Self::NotFresh { .. }
            | Self::LowerTekId { .. } => 0x9865,
            Self::KeyNotFound(_) => 0x6a88,
            Self::KeyInvalidated(_) | Self::Rights(_) | Self::Tbk(_) => 0x6985,
        }
    }
}

impl fmt::Display for CardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed: {e}"),
            Self::Mac(e) => write!(f, "{e}"),
            Self::LtkmReplay { ts, last } => write!(f, "LTKM replay: TS {ts} is not above the last accepted TS {last}"),
            Self::KeyNotFound(id) => write!(f, "key not found: SEK/PEK {:08x}", u32::from_be_bytes(id.to_bytes())),
            Self::KeyInvalidated(id) => write!(f, "SEK/PEK {:08x} was invalidated", u32::from_be_bytes(id.to_bytes())),
            Self::OutsideValidity { ts, tek_id, validity } => match validity {
                KeyValidity::TsWindow { ts_low, ts_high } => {
                    write!(f, "key validity: TS {ts} outside [{ts_low}, {ts_high}]")
                }
                KeyValidity::TekIdWindow { seq_l, seq_u } => {
                    write!(f, "key validity: TEK ID {tek_id} outside SEQl {seq_l} < TEK ID ≤ SEQu {seq_u}")
                }
            },
            Self::NotFresh { ts, last } => {
                write!(
                    f,
                    "freshness: TS {ts} is not above the last accepted TS {last} and the policy allows no play-back"
                )
            }
            Self::LowerTekId { tek_id, last } => {
                write!(f, "resend check: TEK ID {tek_id} is below the last accepted TEK ID {last}")
            }
            Self::Rights(why) => write!(f, "rights: {why}"),
            Self::Tbk(why) => write!(f, "terminal binding: {why}"),
        }?;
        write!(f, " (status word {:04X})", self.status_word())
    }
}

impl std::error::Error for CardError {}

fn mac_or_malformed(e: MikeyError) -> CardError {
    match e {
        MikeyError::MacMismatch { .. } => CardError::Mac(e),
        other => CardError::Malformed(other),
    }
}

/// What an accepted LTKM did.
#[derive(Debug)]
pub enum LtkmOutcome {
    /// A SEK/PEK was stored.
    Stored {
        /// Its ID.
        sek_pek_id: SekPekId,
        /// Its validity.
        validity: KeyValidity,
        /// The verification message, when the LTKM asked for one.
        verification: Option<Vec<u8>>,
    },
    /// The validity of a held key changed.
    ValidityUpdated {
        /// The key's ID.
        sek_pek_id: SekPekId,
        /// The new validity.
        validity: KeyValidity,
        /// The verification message, when asked for.
        verification: Option<Vec<u8>>,
    },
    /// A key was revoked.
    Invalidated {
        /// The key's ID.
        sek_pek_id: SekPekId,
        /// The verification message, when asked for.
        verification: Option<Vec<u8>>,
    },
    /// A solicited-pull trigger: the terminal should request the current key of this Key Group.
    /// Never answered with a verification message (P-3).
    SolicitedPull {
        /// The Key Group.
        key_group: u16,
    },
}

/// What the card returns for an accepted STKM.
#[derive(Debug)]
pub struct TekAnswer {
    /// The TEK ID.
    pub tek_id: TekId,
    /// The TEK.
    pub tek: Tek,
    /// The salt (streaming).
    pub salt: Option<TekSalt>,
    /// The TEK ID equals the last accepted one (fast-zapping resend).
    pub resend: bool,
    /// Accepted as play-back of a recording, not live.
    pub play_back: bool,
}

/// What an LTKM did to the key store.
enum Applied {
    Invalidated,
    Stored,
    Updated,
}

/// One SEK/PEK held by the card.
struct StoredKey {
    key_domain_id: KeyDomainId,
    sek_pek_id: SekPekId,
    /// `None` after an invalidation of a key the card never held.
    sek: Option<SekPek>,
    /// The RAND of the delivering LTKM; every STKM under this key uses it (P-2).
    rand: [u8; 16],
    validity: KeyValidity,
    policy: Option<SecurityPolicyExt>,
    invalidated: bool,
    last_ts: Option<u32>,
    last_tek_id: Option<TekId>,
    in_play_back: bool,
    play_backs_left: u16,
    views_left: u16,
    /// Pay-per-view: the one program this key opens (`Some(None)` = STKMs without a program ID).
    ppv_program: Option<Option<u32>>,
    /// User PPV: programs already paid with a view token.
    paid_programs: Vec<Option<u32>>,
}

/// The demo's card: one SMK, the keys it delivered, and the TBKs of this terminal.
pub struct DemoCard {
    smk: Smk,
    last_ltkm_ts: Option<u32>,
    keys: Vec<StoredKey>,
    tbks: Vec<(u32, Tbk)>,
}

impl fmt::Debug for DemoCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoCard").field("keys", &self.keys.len()).finish_non_exhaustive()
    }
}

impl DemoCard {
    /// A card holding `smk` (its Ks_int_NAF, which never leaves it).
    #[must_use]
    pub fn new(smk: Smk) -> Self {
        Self { smk, last_ltkm_ts: None, keys: Vec::new(), tbks: Vec::new() }
    }

    /// Gives the card a terminal binding key.
    pub fn add_tbk(&mut self, id: u32, tbk: Tbk) {
        self.tbks.push((id, tbk));
    }

    fn find(&mut self, kd: KeyDomainId, id: SekPekId) -> Option<&mut StoredKey> {
        self.keys.iter_mut().find(|k| k.key_domain_id == kd && k.sek_pek_id == id)
    }

    /// Processes an LTKM (or solicited pull) protected by this card's SMK.
    pub fn process_ltkm(&mut self, bytes: &[u8]) -> Result<LtkmOutcome, CardError> {
        let ltkm = Ltkm::decode(bytes).map_err(CardError::Malformed)?;
        let keys = ltkm.message_keys(&self.smk);
        // The MAC comes first, so a forged LTKM cannot move the counter.
        let opened = ltkm.open_with_keys(&keys).map_err(mac_or_malformed)?;
        if let Some(last) = self.last_ltkm_ts
            && !serial_gt(ltkm.ts(), last)
        {
            return Err(CardError::LtkmReplay { ts: ltkm.ts(), last });
        }
        let c = match opened {
            OpenedLtkm::SolicitedPull(p) => {
                self.last_ltkm_ts = Some(ltkm.ts());
                return Ok(LtkmOutcome::SolicitedPull { key_group: p.key_group });
            }
            OpenedLtkm::Key(c) => c,
        };
        let (kd, id) = (c.key_domain_id, c.sek_pek_id);
        let policy = c.ext.and_then(|e| e.security_policy);
        let applied = if c.validity.is_invalidation() {
            match self.find(kd, id) {
                Some(k) => k.invalidated = true,
                // Remember the revocation even for a key never held, so a late delivery of the
                // same ID under the old window cannot revive it.
                None => self.keys.push(StoredKey::new(kd, id, None, c.rand, c.validity, policy, true)),
            }
            Applied::Invalidated
        } else if let Some(sek) = c.key {
            self.keys.retain(|k| !(k.key_domain_id == kd && k.sek_pek_id == id));
            self.keys.push(StoredKey::new(kd, id, Some(sek), c.rand, c.validity, policy, false));
            Applied::Stored
        } else {
            let k = self.find(kd, id).ok_or(CardError::KeyNotFound(id))?;
            if k.invalidated {
                return Err(CardError::KeyInvalidated(id));
            }
            k.validity = c.validity;
            Applied::Updated
        };
        self.last_ltkm_ts = Some(ltkm.ts());
        let verification = if ltkm.verification_requested() {
            Some(VerificationMessage::build(&ltkm, &keys).map_err(CardError::Malformed)?)
        } else {
            None
        };
        Ok(match applied {
            Applied::Invalidated => LtkmOutcome::Invalidated { sek_pek_id: id, verification },
            Applied::Stored => LtkmOutcome::Stored { sek_pek_id: id, validity: c.validity, verification },
            Applied::Updated => LtkmOutcome::ValidityUpdated { sek_pek_id: id, validity: c.validity, verification },
        })
    }

    /// Processes an STKM and answers TEK ‖ salt (profile P-6 steps 1–7).
    pub fn process_stkm(&mut self, bytes: &[u8]) -> Result<TekAnswer, CardError> {
        let stkm = Stkm::decode(bytes).map_err(CardError::Malformed)?;
        let (kd, id) = (stkm.key_domain_id(), stkm.sek_pek_id());
        // 1. Find the key.
        let tbks = &self.tbks;
        let key = self
            .keys
            .iter_mut()
            .find(|k| k.key_domain_id == kd && k.sek_pek_id == id)
            .ok_or(CardError::KeyNotFound(id))?;
        let sek = match (&key.sek, key.invalidated) {
            (Some(sek), false) => sek,
            _ => return Err(CardError::KeyInvalidated(id)),
        };
        // 2. MAC. `open` verifies before it decrypts; nothing leaves the card before step 7.
        let content = stkm.open(sek, &key.rand).map_err(mac_or_malformed)?;
        let (ts, tek_id) = (content.ts, content.tek_id);
        // 3. Key validity.
        let inside = match key.validity {
            KeyValidity::TsWindow { ts_low, ts_high } => (ts_low..=ts_high).contains(&ts),
            KeyValidity::TekIdWindow { seq_l, seq_u } => seq_l < tek_id && tek_id <= seq_u,
        };
        if !inside {
            return Err(CardError::OutsideValidity { ts, tek_id, validity: key.validity });
        }
        // 4. Freshness; a stale STKM is play-back or discard, as the policy says (P-4).
        let fresh = key.last_ts.is_none_or(|last| serial_gt(ts, last));
        let mut takes_play_back = false;
        if !fresh {
            let last = key.last_ts.unwrap_or_default();
            let allowed = match key.policy.map(|p| p.policy) {
                Some(SecurityPolicy::PayPerTimeWithPlayBack | SecurityPolicy::PayPerViewWithPlayBack) => {
                    takes_play_back = !key.in_play_back;
                    key.in_play_back || key.play_backs_left > 0
                }
                Some(SecurityPolicy::UnlimitedWithinWindow) => true,
                // Play-once keys and the other policies discard stale STKMs.
                _ => false,
            };
            if !allowed {
                return Err(CardError::NotFresh { ts, last });
            }
        }
        // 5. Resend rule, live use only: equal TEK ID = fast-zapping resend, lower = refused.
        let mut resend = false;
        if let (true, KeyValidity::TsWindow { .. }, Some(last)) = (fresh, key.validity, key.last_tek_id) {
            if tek_id < last {
                return Err(CardError::LowerTekId { tek_id, last });
            }
            resend = tek_id == last;
        }
        // 6. Rights (parental rating and the secure channel belong to keycast-card).
        let program = content.ext.as_ref().and_then(|e| e.program_id());
        let mut takes_view = false;
        match key.policy.map(|p| p.policy) {
            Some(SecurityPolicy::PayPerView | SecurityPolicy::PayPerViewWithPlayBack)
                if key.ppv_program.is_some_and(|p| p != program) =>
            {
                return Err(CardError::Rights("a pay-per-view key opens one program only"));
            }
            Some(SecurityPolicy::UserPayPerView) if !key.paid_programs.contains(&program) => {
                if key.views_left == 0 {
                    return Err(CardError::Rights("no view tokens left for a new program"));
                }
                takes_view = true;
            }
            _ => {}
        }
        // 7. Unwrap, then commit the state changes and answer.
        let tek = match &content.tek {
            TekField::Clear(t) => t.clone(),
            TekField::WrappedByTbk(w) => {
                let tbk_id = content.ext.as_ref().and_then(|e| e.tbk_id).ok_or(CardError::Tbk("no TBK ID"))?;
                let (_, tbk) = tbks
                    .iter()
                    .find(|(i, _)| *i == tbk_id)
                    .ok_or(CardError::Tbk("the card holds no TBK with this ID"))?;
                let raw =
                    key_wrap::unwrap_16(tbk.expose_secret(), w).map_err(|_| CardError::Tbk("TEK unwrap failed"))?;
                Tek::from_bytes(*raw)
            }
        };
        if matches!(
            key.policy.map(|p| p.policy),
            Some(SecurityPolicy::PayPerView | SecurityPolicy::PayPerViewWithPlayBack)
        ) {
            key.ppv_program = Some(program);
        }
        if takes_view {
            key.views_left -= 1;
            key.paid_programs.push(program);
        }
        if fresh {
            key.in_play_back = false;
            key.last_ts = Some(ts);
            key.last_tek_id = Some(tek_id);
            if let KeyValidity::TekIdWindow { seq_u, .. } = key.validity {
                // MBMS keys: SEQl := TEK ID (TS 33.246 §6.3.4).
                key.validity = KeyValidity::TekIdWindow { seq_l: tek_id, seq_u };
            }
        } else {
            if takes_play_back {
                key.play_backs_left -= 1;
            }
            key.in_play_back = true;
        }
        Ok(TekAnswer { tek_id, tek, salt: content.salt, resend, play_back: !fresh })
    }
}

impl StoredKey {
    fn new(
        key_domain_id: KeyDomainId,
        sek_pek_id: SekPekId,
        sek: Option<SekPek>,
        rand: [u8; 16],
        validity: KeyValidity,
        policy: Option<SecurityPolicyExt>,
        invalidated: bool,
    ) -> Self {
        Self {
            key_domain_id,
            sek_pek_id,
            sek,
            rand,
            validity,
            policy,
            invalidated,
            last_ts: None,
            last_tek_id: None,
            in_play_back: false,
            play_backs_left: policy.map_or(0, |p| p.play_back_counter),
            views_left: policy.map_or(0, |p| p.view_counter),
            ppv_program: None,
            paid_programs: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycast_mikey::{LtkmContent, LtkmExt, StkmContent, StkmExt};

    #[test]
    fn serial_comparison_follows_rfc_1982() {
        assert!(serial_gt(2, 1));
        assert!(!serial_gt(1, 1));
        assert!(!serial_gt(1, 2));
        assert!(serial_gt(0, u32::MAX), "wraps around");
        assert!(!serial_gt(0x8000_0000, 0), "undefined counts as a replay");
        assert!(serial_gt(0x7fff_ffff, 0));
    }

    fn ltkm(policy: SecurityPolicy, play_back_counter: u16) -> LtkmContent {
        LtkmContent {
            csb_id: 7,
            verification_requested: false,
            srtp_cs: None,
            key_domain_id: KeyDomainId::from_mcc_mnc("001", "01").unwrap(),
            sek_pek_id: SekPekId { key_group: 1, key_number: 1 },
            ts: 1,
            rand: [3; 16],
            idi: "bmsc.example.org".into(),
            idr: "x@bsf.example.org".into(),
            srtp_policy: None,
            ext: Some(LtkmExt {
                security_policy: Some(SecurityPolicyExt { policy, play_back_counter, view_counter: 1 }),
                tbk_id: None,
                consumption_reporting: false,
            }),
            key: Some(SekPek::from_bytes([5; 16])),
            validity: KeyValidity::TsWindow { ts_low: 100, ts_high: 200 },
        }
    }

    fn stkm(tek_id: u16, ts: u32, program: Option<u32>) -> Vec<u8> {
        StkmContent {
            csb_id: 9,
            key_domain_id: KeyDomainId::from_mcc_mnc("001", "01").unwrap(),
            sek_pek_id: SekPekId { key_group: 1, key_number: 1 },
            tek_id,
            ts,
            ext: program.map(|p| StkmExt {
                protection_after_reception: keycast_mikey::ProtectionAfterReception::MayRecord,
                traffic_protection_protocol: keycast_mikey::TrafficProtectionProtocol::Srtp,
                traffic_authentication: true,
                tbk_id: None,
                access_criteria: Some(vec![keycast_mikey::AccessDescriptor::ProgramId(p)]),
            }),
            tek: TekField::Clear(Tek::from_bytes([tek_id as u8; 16])),
            salt: Some(TekSalt::from_bytes([1; 14])),
        }
        .seal(&SekPek::from_bytes([5; 16]), &[3; 16])
        .unwrap()
    }

    fn card(policy: SecurityPolicy, play_back_counter: u16) -> DemoCard {
        let smk = Smk::from_bytes([1; 32]);
        let mut c = DemoCard::new(smk.clone());
        c.process_ltkm(&ltkm(policy, play_back_counter).seal(&smk).unwrap()).unwrap();
        c
    }

    #[test]
    fn play_back_policy_spends_one_counter_per_session() {
        let mut c = card(SecurityPolicy::PayPerTimeWithPlayBack, 1);
        c.process_stkm(&stkm(1, 110, None)).unwrap();
        c.process_stkm(&stkm(2, 120, None)).unwrap();
        let a = c.process_stkm(&stkm(1, 110, None)).unwrap();
        assert!(a.play_back);
        c.process_stkm(&stkm(2, 120, None)).unwrap();
        c.process_stkm(&stkm(3, 130, None)).unwrap();
        let e = c.process_stkm(&stkm(1, 110, None)).unwrap_err();
        assert!(matches!(e, CardError::NotFresh { .. }), "{e}");
    }

    #[test]
    fn pay_per_time_refuses_stale_stkm() {
        let mut c = card(SecurityPolicy::PayPerTime, 5);
        c.process_stkm(&stkm(1, 110, None)).unwrap();
        assert_eq!(c.process_stkm(&stkm(1, 110, None)).unwrap_err().status_word(), 0x9865);
    }

    #[test]
    fn pay_per_view_locks_to_the_first_program() {
        let mut c = card(SecurityPolicy::PayPerView, 0);
        c.process_stkm(&stkm(1, 110, Some(7))).unwrap();
        c.process_stkm(&stkm(2, 120, Some(7))).unwrap();
        assert!(matches!(c.process_stkm(&stkm(3, 130, Some(8))).unwrap_err(), CardError::Rights(_)));
    }

    #[test]
    fn user_ppv_spends_tokens_per_new_program() {
        let mut c = card(SecurityPolicy::UserPayPerView, 0);
        c.process_stkm(&stkm(1, 110, Some(7))).unwrap();
        c.process_stkm(&stkm(2, 120, Some(7))).unwrap();
        assert!(matches!(c.process_stkm(&stkm(3, 130, Some(8))).unwrap_err(), CardError::Rights(_)));
    }

    #[test]
    fn unknown_key_and_update_for_unknown_key_are_refused() {
        let smk = Smk::from_bytes([1; 32]);
        let mut c = DemoCard::new(smk.clone());
        assert_eq!(c.process_stkm(&stkm(1, 110, None)).unwrap_err().status_word(), 0x6a88);
        let update =
            ltkm(SecurityPolicy::PayPerTime, 0).validity_update(2, KeyValidity::TsWindow { ts_low: 1, ts_high: 2 });
        assert!(matches!(c.process_ltkm(&update.seal(&smk).unwrap()).unwrap_err(), CardError::KeyNotFound(_)));
    }
}
