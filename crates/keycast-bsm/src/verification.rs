//! Verification-message intake (`profile: P-5, P-11.3`; TS 33.246 §6.4.5.2): the card's answer to
//! an LTKM with V = 1 acknowledges a delivery of the push scheduler.
//!
//! # Flow
//! 1. [`parse`] reads the message's unauthenticated claims: CSB ID, TS and IDr (the B-TID).
//! 2. The scheduler names the LTKM that was sealed for that B-TID with that TS
//!    ([`Scheduler::find_sent`]); none is [`VerificationError::Unmatched`].
//! 3. The caller supplies the key record and the terminal's keys for that B-TID.
//! 4. [`check`] rebuilds the LTKM that was sent and verifies the MAC with its message keys.
//! 5. [`intake`] does 1–4 and then acknowledges the delivery.
//!
//! # What the BSM keeps per sent LTKM \[chosen\]
//! Only public values: the B-TID it was sealed for and its TS ([`crate::delivery::SentLtkm`]); the
//! delivery row keeps its [`crate::issue::LtkmKind`] (with the window). The MAC covers the LTKM's
//! IDi, IDr and T payloads as sent (`profile: P-11.3`), and sealing is deterministic, so the BSM
//! rebuilds that LTKM from the key record (RAND and CSB ID are per key), the terminal's SMK and
//! the TS. Neither message keys nor LTKM bytes are stored; the SMK is needed anyway to send.
//!
//! # Refusals
//! Every bad message is a [`VerificationError`], never a panic, and changes nothing: malformed
//! bytes, a (B-TID, TS) no LTKM was sent with, a CSB ID that is not the key's, a MAC that does
//! not verify (forged, or sealed under another SMK), and a second message for an LTKM already
//! answered (a replay). The MAC is checked before the replay test, so a forgery is never reported
//! as a replay.

use keycast_mikey::{Ltkm, MikeyError, VerificationMessage};

use crate::delivery::{AckOutcome, DeliveryId, DeliveryKey, DeliveryRow, Scheduler, SentLtkm, Time};
use crate::issue::{IssueError, LtkmTs, SekPekRecord, TerminalKeys, build_ltkm};
use crate::rng::RandomSource;

/// Why a verification message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerificationError {
    /// Not a well-formed verification message.
    #[error("malformed verification message: {0}")]
    Malformed(MikeyError),
    /// No LTKM was sent (or is still remembered) with this B-TID and TS.
    #[error("no LTKM sent with this B-TID and TS")]
    Unmatched,
    /// The CSB ID is not the one of the LTKM's key.
    #[error("the CSB ID is not the LTKM's")]
    CsbIdMismatch,
    /// The caller has no keys for the delivery (key record or the SMK of that B-TID).
    #[error("no keys for the delivery this message names")]
    KeysUnavailable,
    /// The keys supplied are not those of the delivery (another key, or another B-TID).
    #[error("the keys supplied do not belong to this delivery")]
    WrongKeys,
    /// The MAC did not verify: forged, altered, or made under another SMK.
    #[error("verification MAC check failed")]
    Forged,
    /// A verification message for this very LTKM was already accepted.
    #[error("this LTKM was already acknowledged by a verification message")]
    Replayed {
        /// The delivery it acknowledged.
        delivery: DeliveryId,
    },
    /// The LTKM could not be rebuilt from the keys supplied.
    #[error("cannot rebuild the LTKM: {0}")]
    Rebuild(IssueError),
}

/// What a verification message claims, before any check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationClaim {
    /// CSB ID (the LTKM's).
    pub csb_id: u32,
    /// TS (the LTKM's).
    pub ts: u32,
    /// IDr: the B-TID.
    pub btid: String,
}

/// A verification message that acknowledged a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The delivery.
    pub id: DeliveryId,
    /// Its name.
    pub key: DeliveryKey,
    /// What the acknowledgement did.
    pub outcome: AckOutcome,
}

/// Decodes a verification message and returns its claims (not yet authenticated).
pub fn parse(bytes: &[u8]) -> Result<VerificationClaim, VerificationError> {
    let vm = VerificationMessage::decode(bytes).map_err(VerificationError::Malformed)?;
    Ok(VerificationClaim { csb_id: vm.csb_id(), ts: vm.ts(), btid: vm.idr().to_owned() })
}

/// Checks that `bytes` answers the LTKM `sent` of delivery `row`: rebuilds that LTKM from
/// `record` and `terminal` and verifies the MAC in constant time. Changes nothing.
pub fn check(
    bytes: &[u8],
    row: &DeliveryRow,
    sent: &SentLtkm,
    record: &SekPekRecord,
    terminal: &TerminalKeys,
) -> Result<(), VerificationError> {
    let key = &row.delivery.key;
    if record.key_domain_id != key.key_domain_id || record.sek_pek_id != key.sek_pek_id || terminal.btid != sent.btid {
        return Err(VerificationError::WrongKeys);
    }
    let vm = VerificationMessage::decode(bytes).map_err(VerificationError::Malformed)?;
    if vm.ts() != sent.ts || vm.idr() != sent.btid {
        return Err(VerificationError::Unmatched);
    }
    if vm.csb_id() != record.csb_id {
        return Err(VerificationError::CsbIdMismatch);
    }
    let ts = LtkmTs::already_sent(&sent.btid, sent.ts);
    let ltkm_bytes = build_ltkm(&row.delivery.kind, record, terminal, &ts, true).map_err(VerificationError::Rebuild)?;
    let ltkm = Ltkm::decode(&ltkm_bytes).map_err(|e| VerificationError::Rebuild(IssueError::Mikey(e)))?;
    match vm.verify(&ltkm, &ltkm.message_keys(&terminal.smk)) {
        Ok(()) => Ok(()),
        Err(MikeyError::MacMismatch { .. }) => Err(VerificationError::Forged),
        // CSB ID, TS and IDr were compared above; any other refusal means it answers another LTKM.
        Err(_) => Err(VerificationError::Unmatched),
    }
}

/// Takes in one verification message: parse, match, check the MAC, acknowledge.
///
/// `keys` gets the delivery's key and the B-TID its LTKM was sealed for, and returns that
/// delivery's key record and the terminal's keys for that B-TID (`None`: unavailable, e.g. the
/// terminal bootstrapped again and the old SMK is gone).
pub fn intake<'k, R: RandomSource>(
    scheduler: &mut Scheduler<R>,
    bytes: &[u8],
    now: Time,
    keys: impl FnOnce(&DeliveryKey, &str) -> Option<(&'k SekPekRecord, &'k TerminalKeys)>,
) -> Result<Verified, VerificationError> {
    let claim = parse(bytes)?;
    let (id, row, sent) = scheduler.find_sent(&claim.btid, claim.ts).ok_or(VerificationError::Unmatched)?;
    let (record, terminal) = keys(&row.delivery.key, &sent.btid).ok_or(VerificationError::KeysUnavailable)?;
    check(bytes, row, sent, record, terminal)?;
    let key = row.delivery.key.clone();
    if !scheduler.mark_sent_answered(id, &claim.btid, claim.ts) {
        return Err(VerificationError::Replayed { delivery: id });
    }
    // `find_sent` just returned this id, so the delivery exists.
    let outcome = scheduler.acknowledged(id, now).map_err(|_| VerificationError::Unmatched)?;
    Ok(Verified { id, key, outcome })
}
