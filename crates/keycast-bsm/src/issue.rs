//! LTKM issuing: what the BSM holds for one SEK/PEK, the TS counter per terminal and SMK, and the
//! functions that turn them into sealed LTKMs (profile P-3, P-4, P-11; TS 33.246 §6.4.5.1).
//!
//! Sans-IO: values in, bytes out. Nothing here reads a clock, stores anything or draws randomness
//! on its own; the caller persists [`SekPekRecord`] and [`LtkmCounter`] (both plain, `Clone` data)
//! and passes a [`RandomSource`] where fresh values are needed.
//!
//! # Flow
//! 1. The key lifecycle makes a [`SekPekRecord`] once per SEK/PEK: the key, its RAND and CSB ID
//!    (drawn once, shared by every terminal), its validity window, the P-4 extension and, for a
//!    streaming service, its SRTP policy.
//! 2. For every LTKM that leaves (first send and each retransmission) the shell calls
//!    [`LtkmCounter::reserve`] for the terminal's current B-TID, **persists** the reserved value,
//!    and turns the reservation into an [`LtkmTs`] with [`TsReservation::persisted`]. Only an
//!    [`LtkmTs`] is accepted by the builders, so a TS cannot be used before it could be stored.
//! 3. [`build_ltkm`] seals the LTKM for one terminal ([`TerminalKeys`]) and one [`LtkmKind`]:
//!    a key delivery, a key-validity update, or an invalidation. [`solicited_pull_ltkm`] builds
//!    the solicited-pull trigger.
//!
//! # Decisions
//! - \[chosen\] **CSB ID per key**, like RAND (`profile: P-2, P-11.7`): the key's first LTKM picks
//!   it at random and every later LTKM of that key (retransmission, update, invalidation) reuses
//!   it, for every terminal. Since the SMK differs per terminal the message keys still differ per
//!   terminal, and the BSM can rebuild any LTKM it sent from the record, the terminal's keys and
//!   the TS alone — which is how [`crate::verification`] checks verification messages without
//!   storing message keys.
//! - **Counter** (`profile: P-3`): one per terminal and SMK, +1 for every LTKM sent, retransmissions
//!   and solicited pulls included; it restarts at 1 when the terminal's B-TID (hence its Ks and
//!   SMK) changes, since the card keeps one TS per MUK and starts a new MUK with none. \[chosen\]
//!   After 2^32 − 1 LTKMs the counter wraps to 0, which RFC 1982 arithmetic (the card's rule) still
//!   reads as "greater" than 0xFFFF_FFFF.
//! - **V = 1 on every pushed LTKM** ([`build_ltkm`] takes the flag; the push path always sets it):
//!   the verification message is the only acknowledgement the push scheduler gets. A solicited
//!   pull has V = 0 (`profile: P-3, P-11.6`).
//! - **One form per key** (`profile: P-11.14`): updates and invalidations carry the key's SP and
//!   P-4 extension like its delivery, since the header form (streaming/download) and the VF/VT
//!   width (TS or TEK ID window, `profile: P-11.8`) follow from them.
//! - **Invalidation is per terminal**: [`LtkmKind::Invalidate`] inverts the window in the LTKM only
//!   (`profile: P-3, P-11.7`); the record itself stays valid for the terminals that keep the key.
//!   A global end of a key is a validity update of the record ([`SekPekRecord::with_validity`]).

use keycast_crypto::keys::{SekPek, Smk};
use keycast_mikey::{
    KeyDomainId, KeyValidity, LtkmContent, LtkmExt, MikeyError, SekPekId, SolicitedPull, SrtpCs, SrtpPolicy,
};

use crate::rng::RandomSource;

/// Why an LTKM could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// Key Group or Key Number is 0 (`profile: P-1, P-11.11`).
    #[error("SEK/PEK ID: Key Group and Key Number must be non-zero")]
    BadSekPekId,
    /// The validity window's form does not match the extension: a TS window needs a security
    /// policy extension, a TEK ID window must not have one (`profile: P-11.8`).
    #[error("validity window: TS window exactly when the P-4 extension carries a security policy")]
    ValidityForm,
    /// SEQu 0xFFFF is never used (`profile: P-11.11`).
    #[error("validity window: SEQu 0xFFFF is never used")]
    SeqUpperReserved,
    /// The SRTP-ID map entry names another policy than the SP payload (`profile: P-11.1`).
    #[error("streaming policy: the SRTP-ID map entry must name the SP's policy number")]
    PolicyNumber,
    /// A delivery with an inverted window would hand out a revoked key.
    #[error("a key delivery needs a window whose lower bound is not above its upper bound")]
    DeliversInvalidatedKey,
    /// The TS was reserved under another B-TID (another SMK) than the terminal's current one.
    #[error("the TS was reserved for another B-TID than the terminal's current one")]
    TsOfAnotherSmk,
    /// The record is not the key the delivery names.
    #[error("the SEK/PEK record is not the key the delivery names")]
    WrongRecord,
    /// The MIKEY layer refused to build the message.
    #[error(transparent)]
    Mikey(#[from] MikeyError),
}

/// What the BSM holds for one SEK/PEK (all plain data; storage maps it to one row).
///
/// The key zeroizes on drop and prints as `SekPek(…)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SekPekRecord {
    /// Key Domain ID.
    pub key_domain_id: KeyDomainId,
    /// SEK/PEK ID (Key Group and Key Number both non-zero).
    pub sek_pek_id: SekPekId,
    /// The key.
    pub key: SekPek,
    /// RAND of every LTKM of this key, for every terminal (`profile: P-2, P-3`).
    pub rand: [u8; 16],
    /// CSB ID of every LTKM of this key (per key, see the module docs).
    pub csb_id: u32,
    /// The current validity window: TS low/high when `ext` carries a security policy, otherwise
    /// the TEK ID window (`profile: P-3, P-11.8`).
    pub validity: KeyValidity,
    /// The OMA BCAST LTKM extension (security policy code and counters, TBK ID, reporting flag;
    /// `profile: P-4`). `None` gives the implicit play-once right.
    pub ext: Option<LtkmExt>,
    /// Streaming services: the SRTP-ID map entry and SP payload; `None` for download services.
    pub streaming: Option<StreamingPolicy>,
}

/// The SRTP side of a streaming key's LTKMs (`profile: P-2, P-11.1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamingPolicy {
    /// SRTP-ID map entry (SSRC 0 and ROC 0 when the key is not tied to one stream).
    pub srtp_cs: SrtpCs,
    /// The SP payload; its policy number must equal the map entry's.
    pub srtp_policy: SrtpPolicy,
}

impl StreamingPolicy {
    /// Keycast's SRTP policy for a key not tied to one stream (`profile: P-11.1`).
    #[must_use]
    pub fn keycast(roc_rate: Option<u16>) -> Self {
        let srtp_policy = SrtpPolicy::keycast(roc_rate);
        Self { srtp_cs: SrtpCs { policy_no: srtp_policy.policy_no, ssrc: 0, roc: 0 }, srtp_policy }
    }
}

impl SekPekRecord {
    /// Whether the record's windows are in TS form (the extension carries a security policy).
    #[must_use]
    pub fn ts_form(&self) -> bool {
        self.ext.is_some_and(|e| e.security_policy.is_some())
    }

    /// Checks what the profile requires of the record, so a bad record fails here with a
    /// precise reason rather than deep in the codec.
    pub fn validate(&self) -> Result<(), IssueError> {
        if self.sek_pek_id.key_group == 0 || self.sek_pek_id.key_number == 0 {
            return Err(IssueError::BadSekPekId);
        }
        self.check_window(self.validity)?;
        if let Some(s) = &self.streaming
            && s.srtp_cs.policy_no != s.srtp_policy.policy_no
        {
            return Err(IssueError::PolicyNumber);
        }
        Ok(())
    }

    fn check_window(&self, validity: KeyValidity) -> Result<(), IssueError> {
        match (validity, self.ts_form()) {
            (KeyValidity::TsWindow { .. }, true) | (KeyValidity::TekIdWindow { .. }, false) => {}
            _ => return Err(IssueError::ValidityForm),
        }
        if let KeyValidity::TekIdWindow { seq_u: 0xffff, .. } = validity {
            return Err(IssueError::SeqUpperReserved);
        }
        Ok(())
    }

    /// The same key with a new window (a key-validity update for every holder): extend or shorten
    /// its life. The caller then queues [`LtkmKind::UpdateValidity`] deliveries.
    pub fn with_validity(&self, validity: KeyValidity) -> Result<Self, IssueError> {
        self.check_window(validity)?;
        Ok(Self { validity, ..self.clone() })
    }

    /// The kind of LTKM that delivers this key with its current window.
    #[must_use]
    pub fn delivery(&self) -> LtkmKind {
        LtkmKind::Deliver { validity: self.validity }
    }

    /// The LTKM content of `kind` for one terminal (unsealed).
    fn content(
        &self,
        kind: &LtkmKind,
        terminal: &TerminalKeys,
        ts: u32,
        verification: bool,
    ) -> Result<LtkmContent, IssueError> {
        self.validate()?;
        let (key, validity) = match *kind {
            LtkmKind::Deliver { validity } => {
                if validity.is_invalidation() {
                    return Err(IssueError::DeliversInvalidatedKey);
                }
                (Some(self.key.clone()), validity)
            }
            LtkmKind::UpdateValidity { validity } => (None, validity),
            LtkmKind::Invalidate => (None, KeyValidity::invalidation(self.ts_form())),
        };
        self.check_window(validity)?;
        Ok(LtkmContent {
            csb_id: self.csb_id,
            verification_requested: verification,
            srtp_cs: self.streaming.as_ref().map(|s| s.srtp_cs),
            key_domain_id: self.key_domain_id,
            sek_pek_id: self.sek_pek_id,
            ts,
            rand: self.rand,
            idi: terminal.bsm_fqdn.clone(),
            idr: terminal.btid.clone(),
            srtp_policy: self.streaming.as_ref().map(|s| s.srtp_policy.clone()),
            ext: self.ext,
            key,
            validity,
        })
    }
}

/// What one LTKM does to a key on the card (`profile: P-3, P-11.7`). Stored with each delivery,
/// so the BSM knows exactly what it sent (and can rebuild it to check the answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LtkmKind {
    /// Delivers the key with this window.
    Deliver {
        /// The window sent with the key.
        validity: KeyValidity,
    },
    /// Changes the window of a key the card holds (no key in the LTKM). An inverted window here
    /// revokes the key just as [`LtkmKind::Invalidate`] does.
    UpdateValidity {
        /// The new window.
        validity: KeyValidity,
    },
    /// Revokes the key on this terminal: lower bound above upper bound, no key (unsubscribe).
    Invalidate,
}

/// One terminal as the issuer needs it: IDr, the key that seals its LTKMs, and IDi.
///
/// The SMK zeroizes on drop and prints as `Smk(…)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalKeys {
    /// The terminal's current B-TID (IDr, `profile: P-1, P-3`).
    pub btid: String,
    /// SMK (= MUK) of this B-TID (`profile: P-7`).
    pub smk: Smk,
    /// The BSM FQDN (IDi).
    pub bsm_fqdn: String,
}

/// The LTKM TS counter of one terminal and SMK (`profile: P-3`). Persist it whenever
/// [`LtkmCounter::reserve`] moves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LtkmCounter {
    btid: String,
    last: u32,
}

impl LtkmCounter {
    /// A counter that has sent nothing under this B-TID.
    #[must_use]
    pub fn new(btid: impl Into<String>) -> Self {
        Self { btid: btid.into(), last: 0 }
    }

    /// A counter as read back from storage.
    #[must_use]
    pub fn restore(btid: impl Into<String>, last: u32) -> Self {
        Self { btid: btid.into(), last }
    }

    /// The B-TID (and so the SMK) the counter runs for.
    #[must_use]
    pub fn btid(&self) -> &str {
        &self.btid
    }

    /// The last TS reserved (0: none yet under this B-TID).
    #[must_use]
    pub fn last(&self) -> u32 {
        self.last
    }

    /// Takes the next TS for an LTKM to the terminal whose current B-TID is `btid`. A B-TID other
    /// than the counter's means a new SMK: the counter restarts and the first TS is 1.
    ///
    /// The counter moves at once; the caller must store [`LtkmCounter::last`] (or the
    /// reservation's values) before any LTKM with this TS leaves, so that a crash never makes the
    /// BSM reuse a TS the card has already seen.
    pub fn reserve(&mut self, btid: &str) -> TsReservation {
        if self.btid != btid {
            btid.clone_into(&mut self.btid);
            self.last = 0;
        }
        self.last = self.last.wrapping_add(1);
        TsReservation { btid: self.btid.clone(), ts: self.last }
    }
}

/// A TS taken from an [`LtkmCounter`] but not yet known to be stored.
#[must_use = "persist the counter, then call `persisted()` to get the TS for the LTKM"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsReservation {
    btid: String,
    ts: u32,
}

impl TsReservation {
    /// The B-TID the TS belongs to (the counter row's key).
    #[must_use]
    pub fn btid(&self) -> &str {
        &self.btid
    }

    /// The TS to store.
    #[must_use]
    pub fn ts(&self) -> u32 {
        self.ts
    }

    /// Says the counter value is durable; only now may an LTKM carry the TS.
    pub fn persisted(self) -> LtkmTs {
        LtkmTs { btid: self.btid, ts: self.ts }
    }
}

/// A durable LTKM TS for one B-TID: the only TS the builders accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LtkmTs {
    btid: String,
    ts: u32,
}

impl LtkmTs {
    /// The B-TID.
    #[must_use]
    pub fn btid(&self) -> &str {
        &self.btid
    }

    /// The TS value.
    #[must_use]
    pub fn value(&self) -> u32 {
        self.ts
    }

    /// A TS already used by an LTKM that was sent, to rebuild that LTKM (verification intake).
    pub(crate) fn already_sent(btid: &str, ts: u32) -> Self {
        Self { btid: btid.to_owned(), ts }
    }
}

/// Builds and seals one LTKM of `kind` for `terminal` (`profile: P-3`): the key's RAND and CSB ID,
/// IDi = BSM FQDN, IDr = B-TID, TS from the terminal's counter, V = `verification`.
///
/// Sealing is deterministic, so the same arguments give the same bytes; verification intake
/// relies on that.
pub fn build_ltkm(
    kind: &LtkmKind,
    key: &SekPekRecord,
    terminal: &TerminalKeys,
    ts: &LtkmTs,
    verification: bool,
) -> Result<Vec<u8>, IssueError> {
    if ts.btid != terminal.btid {
        return Err(IssueError::TsOfAnotherSmk);
    }
    let content = key.content(kind, terminal, ts.ts, verification)?;
    Ok(content.seal(&terminal.smk)?)
}

/// The pushed key delivery: the key with its current window, V = 1.
pub fn delivery_ltkm(key: &SekPekRecord, terminal: &TerminalKeys, ts: &LtkmTs) -> Result<Vec<u8>, IssueError> {
    build_ltkm(&key.delivery(), key, terminal, ts, true)
}

/// A pushed key-validity update: no key, the record's current window, V = 1.
pub fn validity_update_ltkm(key: &SekPekRecord, terminal: &TerminalKeys, ts: &LtkmTs) -> Result<Vec<u8>, IssueError> {
    build_ltkm(&LtkmKind::UpdateValidity { validity: key.validity }, key, terminal, ts, true)
}

/// A pushed invalidation of the key on this terminal: inverted window, no key, V = 1.
pub fn invalidation_ltkm(key: &SekPekRecord, terminal: &TerminalKeys, ts: &LtkmTs) -> Result<Vec<u8>, IssueError> {
    build_ltkm(&LtkmKind::Invalidate, key, terminal, ts, true)
}

/// The solicited-pull trigger for the current key of `key_group` (`profile: P-3, P-11.6`):
/// Key Number 0, V = 0, MAC only, a fresh RAND and CSB ID from `rng`, under the terminal's SMK.
pub fn solicited_pull_ltkm(
    key_domain_id: KeyDomainId,
    key_group: u16,
    terminal: &TerminalKeys,
    ts: &LtkmTs,
    rng: &mut impl RandomSource,
) -> Result<Vec<u8>, IssueError> {
    if ts.btid != terminal.btid {
        return Err(IssueError::TsOfAnotherSmk);
    }
    if key_group == 0 {
        return Err(IssueError::BadSekPekId);
    }
    let mut rand = [0u8; 16];
    rng.fill(&mut rand);
    let mut csb = [0u8; 4];
    rng.fill(&mut csb);
    let pull = SolicitedPull {
        csb_id: u32::from_be_bytes(csb),
        key_domain_id,
        key_group,
        ts: ts.ts,
        rand,
        idi: terminal.bsm_fqdn.clone(),
        idr: terminal.btid.clone(),
    };
    Ok(pull.seal(&terminal.smk)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_counts_from_one_and_restarts_with_a_new_btid() {
        let mut c = LtkmCounter::new("btid-a");
        assert_eq!(c.reserve("btid-a").ts(), 1);
        assert_eq!(c.reserve("btid-a").ts(), 2);
        let r = c.reserve("btid-b");
        assert_eq!((r.btid(), r.ts()), ("btid-b", 1));
        assert_eq!((c.btid(), c.last()), ("btid-b", 1));
    }

    #[test]
    fn counter_wraps_to_zero() {
        let mut c = LtkmCounter::restore("b", u32::MAX);
        assert_eq!(c.reserve("b").ts(), 0);
    }
}
