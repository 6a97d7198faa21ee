//! The MBMS security context of the card: MUKs (SMKs) per BSM, SEK/PEKs per Key Domain ID and
//! Key Group, and the rights and counters that decide whether a TEK leaves the card.
//!
//! The same store serves the USIM emulator (MUK = Ks_int_NAF) and the GBA_ME terminal store
//! (MUK = Ks_NAF): TS 31.102 §7.1.1.6–7.1.1.8 for MSK update and MTK generation, with the OMA BCAST
//! rules of profile P-3, P-4, P-6 and P-10.
//!
//! Every operation checks everything first and changes state last, so a refused message leaves
//! the store exactly as it was.

use keycast_crypto::key_wrap;
use keycast_crypto::keys::{SekPek, Smk, Tek, TekSalt};
use keycast_crypto::mikey::MessageKeys;
use keycast_mikey::{
    KeyDomainId, KeyValidity, Ltkm, LtkmExt, MikeyError, OpenedLtkm, ProtectionAfterReception, SecurityPolicy,
    SekPekId, Stkm, TekField, TekId, VerificationMessage,
};
use zeroize::Zeroizing;

use crate::error::CardError;
use crate::sac::SecureChannel;

/// `a > b` in RFC 1982 serial-number arithmetic on 32 bits. Equality and the undefined case (a
/// difference of exactly 2^31) are not "greater", so both count as replays (profile P-2).
#[must_use]
pub fn serial_gt(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 0x8000_0000
}

/// Capacity limits of the store (the sizes of EF_MUK and EF_MSK on a card).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// EF_MUK records: one per BSM (IDi).
    pub muk_records: usize,
    /// EF_MSK records: one per (Key Domain ID, Key Group).
    pub msk_records: usize,
}

impl Default for Capacity {
    fn default() -> Self {
        Self { muk_records: 8, msk_records: 32 }
    }
}

/// One MUK and the TS counter of the LTKMs it protected (EF_MUK, TS 31.102 §4.2.81).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MukKey {
    /// IDr: the B-TID.
    pub idr: String,
    /// The key (Ks_int_NAF on a USIM, Ks_NAF in a GBA_ME store).
    pub key: Smk,
    /// TS of the last LTKM accepted under this MUK.
    pub ts: Option<u32>,
}

/// The MUKs of one BSM (IDi): the last generated and the last one the BSM used successfully
/// (TS 33.246 §6.1; TS 31.102 §7.1.1.6 step 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MukRecord {
    /// IDi: the BSM FQDN.
    pub idi: String,
    /// The last generated MUK.
    pub current: MukKey,
    /// The last MUK that verified an LTKM, when it is not `current`.
    pub last_used: Option<MukKey>,
}

/// Rights and counters of one SEK/PEK (profile P-4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rights {
    /// Play-backs still allowed (policies 0x01, 0x03).
    pub play_backs_left: u16,
    /// Views (tokens) still allowed (policy 0x04).
    pub views_left: u16,
    /// The one program a pay-per-view key is for: set by the first STKM (`Some(None)`: a program
    /// without program ID).
    pub ppv_program: Option<Option<u32>>,
    /// Programs paid with a token (policy 0x04).
    pub paid_programs: Vec<Option<u32>>,
    /// A play-back session is running (started by a freshness failure after live use).
    pub in_play_back: bool,
    /// Audit: live STKMs accepted.
    pub live_count: u32,
    /// Audit: play-back sessions started.
    pub play_back_sessions: u32,
}

/// The OMA BCAST audit counters of one SEK/PEK as the terminal reads them (profile P-4): the
/// counters the card keeps in [`Rights`], and the LTKM's consumption_reporting_flag, which tells
/// the terminal whether the operator asked for the consumption to be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditCounters {
    /// Live STKMs accepted under the key.
    pub live_stkms: u32,
    /// Play-back sessions started under the key.
    pub play_back_sessions: u32,
    /// Play-backs still allowed (policies 0x01, 0x03).
    pub play_backs_left: u16,
    /// View tokens still allowed (policy 0x04).
    pub views_left: u16,
    /// The program a pay-per-view key is locked to: `None` not yet locked, `Some(None)` a program
    /// without program ID, `Some(Some(id))` that program ID.
    pub ppv_program: Option<Option<u32>>,
    /// Programs paid with a view token (policy 0x04), saturating at `u16::MAX`.
    pub paid_programs: u16,
    /// The LTKM's consumption_reporting_flag (profile P-4).
    pub consumption_reporting: bool,
}

impl AuditCounters {
    /// The counters of a held key.
    pub fn of(entry: &MskEntry) -> Self {
        let r = &entry.rights;
        Self {
            live_stkms: r.live_count,
            play_back_sessions: r.play_back_sessions,
            play_backs_left: r.play_backs_left,
            views_left: r.views_left,
            ppv_program: r.ppv_program,
            paid_programs: u16::try_from(r.paid_programs.len()).unwrap_or(u16::MAX),
            consumption_reporting: entry.ext.is_some_and(|e| e.consumption_reporting),
        }
    }
}

/// One SEK/PEK held by the card, with what the LTKM that delivered it said.
#[derive(Debug, Clone)]
pub struct MskEntry {
    /// SEK/PEK ID.
    pub id: SekPekId,
    /// The key.
    pub key: SekPek,
    /// The RAND of the delivering LTKM (the PRF input for its STKMs).
    pub rand: [u8; 16],
    /// Validity window.
    pub validity: KeyValidity,
    /// OMA BCAST LTKM extension (policy, TBK, reporting); `None`: implicit play-once.
    pub ext: Option<LtkmExt>,
    /// TS of the last live STKM accepted.
    pub ts: Option<u32>,
    /// TEK ID of the last live STKM accepted.
    pub last_tek_id: Option<TekId>,
    /// Rights and counters.
    pub rights: Rights,
    /// Message keys of the last CSB ID seen, so an STKM costs no key derivation.
    keys_cache: Option<(u32, MessageKeys)>,
}

impl PartialEq for MskEntry {
    fn eq(&self, other: &Self) -> bool {
        // The key cache is derived data.
        (self.id, &self.key, self.rand, self.validity, self.ext, self.ts, self.last_tek_id, &self.rights)
            == (other.id, &other.key, other.rand, other.validity, other.ext, other.ts, other.last_tek_id, &other.rights)
    }
}

impl Eq for MskEntry {}

impl MskEntry {
    /// A key as stored from an LTKM, with fresh counters.
    pub fn new(id: SekPekId, key: SekPek, rand: [u8; 16], validity: KeyValidity, ext: Option<LtkmExt>) -> Self {
        let mut entry = Self {
            id,
            key,
            rand,
            validity,
            ext,
            ts: None,
            last_tek_id: None,
            rights: Rights::default(),
            keys_cache: None,
        };
        entry.grant(ext);
        entry
    }

    fn grant(&mut self, ext: Option<LtkmExt>) {
        let spe = ext.and_then(|e| e.security_policy);
        self.rights.play_backs_left = spe.map_or(0, |s| s.play_back_counter);
        self.rights.views_left = spe.map_or(0, |s| s.view_counter);
    }

    /// The security policy; `None` is the implicit play-once right (seed 6.6.1.3).
    pub fn policy(&self) -> Option<SecurityPolicy> {
        self.ext.and_then(|e| e.security_policy).map(|s| s.policy)
    }

    /// Whether the key was revoked (lower bound above upper bound).
    pub fn is_invalidated(&self) -> bool {
        self.validity.is_invalidation()
    }

    fn message_keys(&mut self, csb_id: u32) -> &MessageKeys {
        if self.keys_cache.as_ref().is_none_or(|(c, _)| *c != csb_id) {
            self.keys_cache = Some((csb_id, MessageKeys::derive(self.key.expose_secret(), csb_id, &self.rand)));
        }
        &self.keys_cache.as_ref().expect("set above").1
    }
}

/// The keys of one (Key Domain ID, Key Group): at most two, newest first (EF_MSK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MskRecord {
    /// Key Domain ID.
    pub key_domain_id: KeyDomainId,
    /// Key Group.
    pub key_group: u16,
    /// Newest first; at most two.
    pub keys: Vec<MskEntry>,
}

/// What an accepted LTKM did (MSK update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MskUpdateEvent {
    /// A SEK/PEK was stored (new, or replacing one with the same ID).
    Stored(SekPekId),
    /// The validity of a held key changed.
    ValidityUpdated(SekPekId),
    /// A held key was revoked.
    Invalidated(SekPekId),
    /// A solicited-pull trigger: the terminal sends an LTKM Request for the current key of this
    /// Key Group, and no verification message.
    SolicitedPull {
        /// Key Domain ID.
        key_domain_id: KeyDomainId,
        /// Key Group.
        key_group: u16,
    },
}

/// The answer to an accepted LTKM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MskUpdate {
    /// What happened.
    pub event: MskUpdateEvent,
    /// The verification message, when the LTKM had V = 1.
    pub verification: Option<Vec<u8>>,
    /// The key evicted to make room (the older of two in the group).
    pub evicted: Option<SekPekId>,
}

/// The TEK as it leaves the card (profile P-6 step 7, P-10, P-11.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TekOut {
    /// TEK and salt in the clear (service protection, or no extension).
    Clear {
        /// The TEK.
        tek: Tek,
        /// The salt (streaming).
        salt: Option<TekSalt>,
    },
    /// TEK wrapped by the terminal's TBK: only that terminal can use it; salt in the clear.
    TbkWrapped {
        /// RFC 3394 wrap of the TEK under the TBK.
        wrapped: [u8; 24],
        /// The salt (streaming).
        salt: Option<TekSalt>,
    },
    /// `AES-KW(K_sac, TEK ‖ salt ‖ 00 00)` over the secure authenticated channel (P-10).
    ChannelWrapped(Box<[u8; 40]>),
}

/// The answer to an accepted STKM (MTK generation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtkAnswer {
    /// The SEK/PEK that protected the STKM.
    pub sek_pek_id: SekPekId,
    /// TEK ID.
    pub tek_id: TekId,
    /// The TEK (and salt) in the form the card may release.
    pub tek: TekOut,
    /// The TEK ID equals the last accepted one (a fast-zapping resend).
    pub resend: bool,
    /// Accepted as play-back of a recording, not live.
    pub play_back: bool,
}

/// The MBMS security context: MUKs, SEK/PEKs, parental setting and the secure channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MbmsStore {
    /// EF_MUK.
    pub muks: Vec<MukRecord>,
    /// EF_MSK.
    pub msks: Vec<MskRecord>,
    /// The card's parental setting: the highest minimum age the holder may watch (`None`: no
    /// restriction).
    pub parental_limit: Option<u8>,
    /// Secure authenticated channel to the terminal (P-10), when established.
    pub sac: Option<SecureChannel>,
    /// Capacity limits.
    pub capacity: Capacity,
}

fn mikey_refusal(e: MikeyError) -> CardError {
    match e {
        MikeyError::MacMismatch { .. } => CardError::Mac,
        other => CardError::Malformed(other.to_string()),
    }
}

/// Where a key sits: (record index, key index).
type Slot = (usize, usize);

impl MbmsStore {
    /// A store with the given capacity.
    pub fn with_capacity(capacity: Capacity) -> Self {
        Self { capacity, ..Self::default() }
    }

    /// Installs a newly generated MUK for a BSM (after a NAF derivation for its NAF_Id). The
    /// previous one stays usable as "last used" only if an LTKM verified under it (31.102
    /// §7.1.1.6 step 2). Fails with 9867 when EF_MUK is full.
    pub fn install_muk(&mut self, idi: &str, idr: &str, key: Smk) -> Result<(), CardError> {
        let new = MukKey { idr: idr.to_owned(), key, ts: None };
        if let Some(rec) = self.muks.iter_mut().find(|r| r.idi == idi) {
            if rec.current.idr != idr || rec.current.key != new.key {
                let old = core::mem::replace(&mut rec.current, new);
                if old.ts.is_some() {
                    rec.last_used = Some(old);
                }
            }
            return Ok(());
        }
        if self.muks.len() >= self.capacity.muk_records {
            return Err(CardError::NoMukMemory);
        }
        self.muks.push(MukRecord { idi: idi.to_owned(), current: new, last_used: None });
        Ok(())
    }

    /// Deletes the MUK named by (IDi, IDr) (MUK deletion, 31.102 §7.1.1.10); 6A88 when absent.
    pub fn delete_muk(&mut self, idi: &str, idr: &str) -> Result<(), CardError> {
        let i = self.muks.iter().position(|r| r.idi == idi).ok_or(CardError::KeyNotFound)?;
        let rec = &mut self.muks[i];
        if rec.current.idr == idr {
            self.muks.remove(i);
        } else if rec.last_used.as_ref().is_some_and(|m| m.idr == idr) {
            rec.last_used = None;
        } else {
            return Err(CardError::KeyNotFound);
        }
        Ok(())
    }

    /// Deletes every key of a Key Group (MSK deletion, 31.102 §7.1.1.9); 6A88 when absent.
    pub fn delete_msks(&mut self, key_domain_id: KeyDomainId, key_group: u16) -> Result<(), CardError> {
        let i = self
            .msks
            .iter()
            .position(|r| r.key_domain_id == key_domain_id && r.key_group == key_group)
            .ok_or(CardError::KeyNotFound)?;
        self.msks.remove(i);
        Ok(())
    }

    /// The key with this ID, if held.
    pub fn msk(&self, key_domain_id: KeyDomainId, id: SekPekId) -> Option<&MskEntry> {
        self.find_msk(key_domain_id, id).map(|(r, k)| &self.msks[r].keys[k])
    }

    fn find_msk(&self, key_domain_id: KeyDomainId, id: SekPekId) -> Option<Slot> {
        let r = self.msks.iter().position(|r| r.key_domain_id == key_domain_id && r.key_group == id.key_group)?;
        let k = self.msks[r].keys.iter().position(|k| k.id == id)?;
        Some((r, k))
    }

    /// The OMA BCAST audit counters of a held key (profile P-4); 6A88 when the key is absent.
    /// Reading changes nothing.
    pub fn audit(&self, key_domain_id: KeyDomainId, id: SekPekId) -> Result<AuditCounters, CardError> {
        self.msk(key_domain_id, id).map(AuditCounters::of).ok_or(CardError::KeyNotFound)
    }

    /// MSK update: checks an LTKM and stores what it carries (31.102 §7.1.1.6; profile P-3).
    pub fn msk_update(&mut self, ltkm_bytes: &[u8]) -> Result<MskUpdate, CardError> {
        let ltkm = Ltkm::decode(ltkm_bytes).map_err(mikey_refusal)?;
        let r = self.muks.iter().position(|r| r.idi == ltkm.idi()).ok_or(CardError::KeyNotFound)?;
        let rec = &self.muks[r];
        let under_current = rec.current.idr == ltkm.idr();
        let muk = if under_current {
            &rec.current
        } else {
            match &rec.last_used {
                Some(m) if m.idr == ltkm.idr() => m,
                _ => return Err(CardError::KeyNotFound),
            }
        };
        let keys = ltkm.message_keys(&muk.key);
        let opened = ltkm.open_with_keys(&keys).map_err(mikey_refusal)?;
        if !under_current {
            // A good MAC under the previous MUK: the terminal must move to the new B-TID.
            return Err(CardError::Freshness("LTKM protected by the previous MUK; use the new B-TID"));
        }
        if muk.ts.is_some_and(|last| !serial_gt(ltkm.ts(), last)) {
            return Err(CardError::Freshness("LTKM TS not above the last accepted TS of this MUK"));
        }
        let (event, evicted) = match opened {
            OpenedLtkm::SolicitedPull(p) => {
                (MskUpdateEvent::SolicitedPull { key_domain_id: p.key_domain_id, key_group: p.key_group }, None)
            }
            OpenedLtkm::Key(content) => self.apply_key(content)?,
        };
        let verification = match (&event, ltkm.verification_requested()) {
            (MskUpdateEvent::SolicitedPull { .. }, _) | (_, false) => None,
            (_, true) => Some(VerificationMessage::build(&ltkm, &keys).map_err(mikey_refusal)?),
        };
        // Everything checked and applied: the MUK's TS and its "last used" status move last.
        let rec = &mut self.muks[r];
        rec.current.ts = Some(ltkm.ts());
        rec.last_used = None;
        Ok(MskUpdate { event, verification, evicted })
    }

    fn apply_key(&mut self, c: keycast_mikey::LtkmContent) -> Result<(MskUpdateEvent, Option<SekPekId>), CardError> {
        let id = c.sek_pek_id;
        match (c.key, self.find_msk(c.key_domain_id, id)) {
            (None, None) => Err(CardError::KeyNotFound),
            (None, Some((r, k))) => {
                let entry = &mut self.msks[r].keys[k];
                entry.validity = c.validity;
                Ok((
                    if c.validity.is_invalidation() {
                        MskUpdateEvent::Invalidated(id)
                    } else {
                        MskUpdateEvent::ValidityUpdated(id)
                    },
                    None,
                ))
            }
            (Some(key), Some((r, k))) => {
                // Same ID as a stored key: replace key and validity, keep its TS (31.102 step 5).
                let entry = &mut self.msks[r].keys[k];
                let mut fresh = MskEntry::new(id, key, c.rand, c.validity, c.ext);
                fresh.ts = entry.ts;
                fresh.last_tek_id = entry.last_tek_id;
                *entry = fresh;
                let newest = self.msks[r].keys.remove(k);
                self.msks[r].keys.insert(0, newest);
                Ok((MskUpdateEvent::Stored(id), None))
            }
            (Some(key), None) => {
                let entry = MskEntry::new(id, key, c.rand, c.validity, c.ext);
                let r = match self
                    .msks
                    .iter()
                    .position(|r| r.key_domain_id == c.key_domain_id && r.key_group == id.key_group)
                {
                    Some(r) => r,
                    None => {
                        if self.msks.len() >= self.capacity.msk_records {
                            return Err(CardError::NoMemory);
                        }
                        self.msks.push(MskRecord {
                            key_domain_id: c.key_domain_id,
                            key_group: id.key_group,
                            keys: vec![],
                        });
                        self.msks.len() - 1
                    }
                };
                let keys = &mut self.msks[r].keys;
                keys.insert(0, entry);
                // At most two keys per Key Domain ID + Key Group: the older one goes (33.246 §6.5).
                let evicted = (keys.len() > 2).then(|| keys.pop().expect("len > 2").id);
                Ok((MskUpdateEvent::Stored(id), evicted))
            }
        }
    }

    /// MTK generation: checks an STKM and releases its TEK (profile P-6 steps 1–7).
    pub fn mtk_generation(&mut self, stkm_bytes: &[u8]) -> Result<MtkAnswer, CardError> {
        let stkm = Stkm::decode(stkm_bytes).map_err(mikey_refusal)?;
        // 1. Find the key.
        let (r, k) = self.find_msk(stkm.key_domain_id(), stkm.sek_pek_id()).ok_or(CardError::KeyNotFound)?;
        let parental_limit = self.parental_limit;
        let entry = &mut self.msks[r].keys[k];
        if entry.is_invalidated() {
            return Err(CardError::ConditionsOfUse("SEK/PEK invalidated"));
        }
        // 2. Message validation.
        let content = stkm.open_with_keys(entry.message_keys(stkm.csb_id())).map_err(mikey_refusal)?;
        let (ts, tek_id) = (content.ts, content.tek_id);
        // 3. Key validity.
        let ts_form = matches!(entry.validity, KeyValidity::TsWindow { .. });
        let in_window = match entry.validity {
            KeyValidity::TsWindow { ts_low, ts_high } => ts_low <= ts && ts <= ts_high,
            KeyValidity::TekIdWindow { seq_l, seq_u } => seq_l < tek_id && tek_id <= seq_u,
        };
        if !in_window {
            return Err(CardError::Freshness("STKM outside the key validity"));
        }
        // 4. Freshness; P-4 decides between discard and play-back.
        let fresh = entry.ts.is_none_or(|last| serial_gt(ts, last));
        let policy = entry.policy();
        let mut starts_play_back = false;
        if !fresh {
            let allows = match policy {
                Some(SecurityPolicy::PayPerTimeWithPlayBack | SecurityPolicy::PayPerViewWithPlayBack) => {
                    entry.rights.in_play_back || entry.rights.play_backs_left > 0
                }
                Some(SecurityPolicy::UnlimitedWithinWindow) => true,
                _ => false,
            };
            if !allows {
                return Err(CardError::Freshness("STKM TS not fresh and the key allows no play-back"));
            }
            starts_play_back = !entry.rights.in_play_back;
        }
        // 5. Resend check (live only): same TEK ID is a fast-zapping resend, lower is refused.
        let resend = fresh && entry.last_tek_id == Some(tek_id);
        if fresh && ts_form && entry.last_tek_id.is_some_and(|last| tek_id < last) {
            return Err(CardError::Freshness("TEK ID below the last accepted TEK ID"));
        }
        // 6. Rights.
        let ext = content.ext.as_ref();
        let program = ext.and_then(|e| e.program_id());
        let mut take_view = false;
        match policy {
            Some(SecurityPolicy::PayPerView | SecurityPolicy::PayPerViewWithPlayBack)
                if entry.rights.ppv_program.is_some_and(|p| p != program) =>
            {
                return Err(CardError::ConditionsOfUse("pay-per-view key is for another program"));
            }
            Some(SecurityPolicy::UserPayPerView) if !entry.rights.paid_programs.contains(&program) => {
                if entry.rights.views_left == 0 {
                    return Err(CardError::ConditionsOfUse("no view tokens left"));
                }
                take_view = true;
            }
            _ => {}
        }
        if let (Some((_, min_age)), Some(limit)) = (ext.and_then(|e| e.parental_rating()), parental_limit)
            && min_age > limit
        {
            return Err(CardError::ConditionsOfUse("parental rating above the card's setting"));
        }
        let par = ext.map(|e| e.protection_after_reception);
        let needs_channel =
            matches!(par, Some(ProtectionAfterReception::MayRecord | ProtectionAfterReception::MustNotRecord));
        let tek = match (&content.tek, needs_channel) {
            (TekField::WrappedByTbk(w), _) => TekOut::TbkWrapped { wrapped: *w, salt: content.salt.clone() },
            (TekField::Clear(tek), false) => TekOut::Clear { tek: tek.clone(), salt: content.salt.clone() },
            (TekField::Clear(tek), true) => {
                let sac = self.sac.as_ref().ok_or(CardError::SecurityStatus("secure channel required"))?;
                let wrapped = sac.wrap_tek(tek, content.salt.as_ref())?;
                TekOut::ChannelWrapped(Box::new(wrapped))
            }
        };
        // 7. Everything checked: store TS and TEK ID, update counters.
        if needs_channel && !matches!(content.tek, TekField::WrappedByTbk(_)) {
            self.sac.as_mut().expect("checked above").count_use();
        }
        let entry = &mut self.msks[r].keys[k];
        let rights = &mut entry.rights;
        if fresh {
            entry.ts = Some(ts);
            entry.last_tek_id = Some(tek_id);
            if !ts_form {
                // MBMS: SEQl := TEK ID (33.246 §6.5).
                if let KeyValidity::TekIdWindow { seq_u, .. } = entry.validity {
                    entry.validity = KeyValidity::TekIdWindow { seq_l: tek_id, seq_u };
                }
            }
            rights.in_play_back = false;
            rights.live_count = rights.live_count.saturating_add(1);
        } else if starts_play_back {
            rights.in_play_back = true;
            rights.play_back_sessions = rights.play_back_sessions.saturating_add(1);
            if matches!(policy, Some(SecurityPolicy::PayPerTimeWithPlayBack | SecurityPolicy::PayPerViewWithPlayBack)) {
                rights.play_backs_left -= 1;
            }
        }
        if matches!(policy, Some(SecurityPolicy::PayPerView | SecurityPolicy::PayPerViewWithPlayBack)) {
            rights.ppv_program.get_or_insert(program);
        }
        if take_view {
            rights.views_left -= 1;
            rights.paid_programs.push(program);
        }
        Ok(MtkAnswer { sek_pek_id: content.sek_pek_id, tek_id, tek, resend, play_back: !fresh })
    }
}

/// Unwraps a channel-wrapped TEK answer on the terminal side (P-10): returns TEK and salt.
pub fn unwrap_channel_tek(k_sac: &[u8; 16], wrapped: &[u8; 40]) -> Result<(Tek, TekSalt), CardError> {
    let plain: Zeroizing<Vec<u8>> = key_wrap::unwrap(k_sac, wrapped).map_err(|_| CardError::Mac)?;
    let tek = Tek::from_slice(&plain[..16]).map_err(|_| CardError::Mac)?;
    let salt = TekSalt::from_slice(&plain[16..30]).map_err(|_| CardError::Mac)?;
    Ok((tek, salt))
}
