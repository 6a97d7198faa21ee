//! The BSF's data (HSS role and bootstrapping sessions) behind a small, data-oriented trait.
//!
//! [`BsfStore`] is what the later SQLite/PostgreSQL shells implement; [`MemoryStore`] is the
//! in-memory implementation for tests and single-process use. The trait holds plain records
//! and no logic: every decision is made by [`crate::bsf::Bsf`].

use std::collections::HashMap;

use keycast_crypto::keys::{Ks, Opc, SubscriberKey};
use thiserror::Error;

/// The GBA flavour of a subscriber's card (TS 33.220 §4, §5.2–5.3), from its GUSS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GbaType {
    /// GBA_U: a GBA-aware UICC. The 401 carries AUTN* (MAC*), the stored XRES has its LSB
    /// flipped, and GBA_U-aware NAFs get Ks_ext_NAF and Ks_int_NAF.
    GbaU,
    /// GBA_ME: a plain USIM (3G context); NAFs get Ks_NAF.
    GbaMe,
}

impl GbaType {
    /// `"gba-u"` or `"gba-me"` (the KDF labels of TS 33.220 B.3, also handy as metric labels).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            GbaType::GbaU => "gba-u",
            GbaType::GbaMe => "gba-me",
        }
    }
}

/// One subscriber (the HSS/HLR data the BSF needs). The keys print as `SubscriberKey(…)` and
/// `Opc(…)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// IMPI, the Ub username.
    pub impi: String,
    /// IMSI.
    pub imsi: String,
    /// K.
    pub k: SubscriberKey,
    /// OPc.
    pub opc: Opc,
    /// SQN_HE: the last SQN issued, 48 bits (see [`crate::bsf::sqn`]).
    pub sqn: u64,
    /// AMF put into AUTN.
    pub amf: [u8; 2],
    /// GBA_U or GBA_ME.
    pub gba_type: GbaType,
}

/// A bootstrapping session: what Zn needs to answer for a B-TID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// B-TID = base64(RAND) "@" BSF domain.
    pub btid: String,
    /// IMPI that bootstrapped.
    pub impi: String,
    /// Ks = CK ‖ IK.
    pub ks: Ks,
    /// RAND of the run.
    pub rand: [u8; 16],
    /// The subscriber's GBA type at bootstrapping time.
    pub gba_type: GbaType,
    /// When the run succeeded (Unix seconds).
    pub bootstrapped_at: u64,
    /// When Ks expires (Unix seconds); the session is unusable from this instant on.
    pub expires_at: u64,
}

/// Key of a pending challenge: the 16-octet tag of its nonce
/// ([`keycast_provisioning::digest::NonceInfo::id`]).
pub type NonceKey = [u8; 16];

/// A challenge that was sent and not yet answered. Holds no secret: XRES, CK and IK are
/// recomputed from K, OPc and RAND when the answer arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The IMPI the challenge was issued to (known or not: unknown IMPIs get a fake vector).
    pub impi: String,
    /// RAND of the challenge.
    pub rand: [u8; 16],
    /// When the nonce was issued (Unix seconds).
    pub issued_at: u64,
    /// When the nonce stops being accepted (Unix seconds); the entry may be purged after it.
    pub expires_at: u64,
}

/// A storage failure (connection lost, constraint violated, …). Carries no secret.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("BSF store: {message}")]
pub struct StoreError {
    /// What failed, for the log.
    pub message: String,
}

impl StoreError {
    /// A store error with a message.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        StoreError { message: message.into() }
    }
}

/// The BSF's storage.
///
/// Contract for implementers:
/// - [`BsfStore::update_sqn`] is a compare-and-set: it writes `new` only when the stored SQN
///   still equals `expected`, and says whether it did. Concurrent challenge builders for one
///   IMPI thus never issue the same SQN twice; the loser reads again and retries.
/// - [`BsfStore::put_session`] stores the session under its B-TID and **removes every earlier
///   session of the same IMPI** (a later success replaces the session, TS 33.220 §4.4.2).
/// - [`BsfStore::take_pending`] removes and returns atomically (`DELETE … RETURNING`): of two
///   concurrent takes of one key at most one gets the entry. This is what makes a Ub nonce
///   single-use across restarts and across BSF instances sharing the store.
pub trait BsfStore {
    /// The subscriber with this IMPI.
    ///
    /// # Errors
    /// [`StoreError`].
    fn subscriber(&self, impi: &str) -> Result<Option<Subscriber>, StoreError>;

    /// Sets SQN_HE of `impi` to `new` if it is still `expected`; `Ok(false)` when it was not
    /// (or the subscriber is gone).
    ///
    /// # Errors
    /// [`StoreError`].
    fn update_sqn(&mut self, impi: &str, expected: u64, new: u64) -> Result<bool, StoreError>;

    /// Stores a session, replacing earlier sessions of the same IMPI.
    ///
    /// # Errors
    /// [`StoreError`].
    fn put_session(&mut self, session: Session) -> Result<(), StoreError>;

    /// The session with this B-TID (expired or not: the caller checks `expires_at`).
    ///
    /// # Errors
    /// [`StoreError`].
    fn session(&self, btid: &str) -> Result<Option<Session>, StoreError>;

    /// Records a pending challenge.
    ///
    /// # Errors
    /// [`StoreError`].
    fn put_pending(&mut self, key: NonceKey, pending: Pending) -> Result<(), StoreError>;

    /// Removes and returns the pending challenge with this key.
    ///
    /// # Errors
    /// [`StoreError`].
    fn take_pending(&mut self, key: &NonceKey) -> Result<Option<Pending>, StoreError>;
}

/// An in-memory [`BsfStore`].
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    subscribers: HashMap<String, Subscriber>,
    sessions: HashMap<String, Session>,
    /// IMPI → B-TID of its current session.
    session_of: HashMap<String, String>,
    pending: HashMap<NonceKey, Pending>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a subscriber (provisioning; not part of the trait).
    pub fn insert_subscriber(&mut self, subscriber: Subscriber) {
        self.subscribers.insert(subscriber.impi.clone(), subscriber);
    }

    /// Removes a subscriber.
    pub fn remove_subscriber(&mut self, impi: &str) -> Option<Subscriber> {
        self.subscribers.remove(impi)
    }

    /// Number of pending challenges held.
    #[must_use]
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Number of sessions held.
    #[must_use]
    pub fn session_len(&self) -> usize {
        self.sessions.len()
    }

    /// Drops expired sessions and pending challenges (housekeeping, run periodically).
    pub fn purge_expired(&mut self, now: u64) {
        self.pending.retain(|_, p| p.expires_at > now);
        self.sessions.retain(|_, s| s.expires_at > now);
        let sessions = &self.sessions;
        self.session_of.retain(|_, btid| sessions.contains_key(btid));
    }
}

impl BsfStore for MemoryStore {
    fn subscriber(&self, impi: &str) -> Result<Option<Subscriber>, StoreError> {
        Ok(self.subscribers.get(impi).cloned())
    }

    fn update_sqn(&mut self, impi: &str, expected: u64, new: u64) -> Result<bool, StoreError> {
        match self.subscribers.get_mut(impi) {
            Some(s) if s.sqn == expected => {
                s.sqn = new;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn put_session(&mut self, session: Session) -> Result<(), StoreError> {
        if let Some(old) = self.session_of.insert(session.impi.clone(), session.btid.clone())
            && old != session.btid
        {
            self.sessions.remove(&old);
        }
        self.sessions.insert(session.btid.clone(), session);
        Ok(())
    }

    fn session(&self, btid: &str) -> Result<Option<Session>, StoreError> {
        Ok(self.sessions.get(btid).cloned())
    }

    fn put_pending(&mut self, key: NonceKey, pending: Pending) -> Result<(), StoreError> {
        self.pending.insert(key, pending);
        Ok(())
    }

    fn take_pending(&mut self, key: &NonceKey) -> Result<Option<Pending>, StoreError> {
        Ok(self.pending.remove(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(impi: &str) -> Subscriber {
        Subscriber {
            impi: impi.into(),
            imsi: "001010000000001".into(),
            k: SubscriberKey::from_bytes([1; 16]),
            opc: Opc::from_bytes([2; 16]),
            sqn: 64,
            amf: [0x80, 0],
            gba_type: GbaType::GbaMe,
        }
    }

    fn session(btid: &str, impi: &str) -> Session {
        Session {
            btid: btid.into(),
            impi: impi.into(),
            ks: Ks::from_bytes([3; 32]),
            rand: [4; 16],
            gba_type: GbaType::GbaMe,
            bootstrapped_at: 10,
            expires_at: 20,
        }
    }

    #[test]
    fn sqn_is_compare_and_set() {
        let mut s = MemoryStore::new();
        s.insert_subscriber(sub("a"));
        assert_eq!(s.update_sqn("a", 32, 96), Ok(false));
        assert_eq!(s.update_sqn("a", 64, 96), Ok(true));
        assert_eq!(s.subscriber("a").unwrap().unwrap().sqn, 96);
        assert_eq!(s.update_sqn("a", 96, 0x21), Ok(true), "resync may lower SQN_HE");
        assert_eq!(s.update_sqn("nobody", 0, 1), Ok(false));
    }

    #[test]
    fn later_session_replaces_earlier_one_of_same_impi() {
        let mut s = MemoryStore::new();
        s.put_session(session("x@bsf", "a")).unwrap();
        s.put_session(session("y@bsf", "b")).unwrap();
        s.put_session(session("z@bsf", "a")).unwrap();
        assert!(s.session("x@bsf").unwrap().is_none());
        assert!(s.session("y@bsf").unwrap().is_some());
        assert!(s.session("z@bsf").unwrap().is_some());
        s.purge_expired(20);
        assert_eq!(s.session_len(), 0);
    }

    #[test]
    fn pending_is_taken_once() {
        let mut s = MemoryStore::new();
        let p = Pending { impi: "a".into(), rand: [1; 16], issued_at: 1, expires_at: 2 };
        s.put_pending([7; 16], p.clone()).unwrap();
        assert_eq!(s.take_pending(&[7; 16]), Ok(Some(p)));
        assert_eq!(s.take_pending(&[7; 16]), Ok(None));
    }
}
