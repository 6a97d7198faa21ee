//! The BSF's data (HSS role and bootstrapping sessions) behind a small, data-oriented trait.
//!
//! [`BsfStore`] is implemented by [`MemoryStore`] (tests, single process) and by the SQL stores
//! of [`crate::bsf::sql`] (SQLite by default, PostgreSQL by URL). The trait holds plain records
//! and no logic: every decision is made by [`crate::bsf::Bsf`].

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use keycast_crypto::keys::{Ks, Opc, SubscriberKey};
use thiserror::Error;

use super::sqn::SqnScheme;

pub use keycast_crypto::gba::GbaType;

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

/// A challenge that was sent and not yet answered, kept under its RAND (128 random bits, so
/// unique). Holds no secret: XRES, CK and IK are recomputed from K, OPc and RAND when the answer
/// arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The IMPI the challenge was issued to (known or not: unknown IMPIs get a fake vector).
    pub impi: String,
    /// RAND of the challenge (the key of the record).
    pub rand: [u8; 16],
    /// When the nonce was issued (Unix seconds).
    pub issued_at: u64,
    /// When the nonce stops being accepted (Unix seconds); the entry may be purged after it.
    pub expires_at: u64,
}

/// How [`BsfStore::start_run`] moves SQN_HE for the new vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqnAdvance {
    /// The next SQN after SQN_HE ([`SqnScheme::next`]).
    Next(SqnScheme),
    /// The first SQN after a verified AUTS carrying `sqn_ms` ([`SqnScheme::after_resync`]).
    Resync {
        /// SQN_MS recovered from AUTS.
        sqn_ms: u64,
        /// The scheme.
        scheme: SqnScheme,
    },
}

impl SqnAdvance {
    /// The SQN of the new vector when SQN_HE is `current`; `None` when the space is exhausted.
    #[must_use]
    pub fn apply(self, current: u64) -> Option<u64> {
        match self {
            SqnAdvance::Next(scheme) => scheme.next(current),
            SqnAdvance::Resync { sqn_ms, scheme } => scheme.after_resync(sqn_ms),
        }
    }
}

/// What [`BsfStore::start_run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStart {
    /// The subscriber, with [`Subscriber::sqn`] already advanced to the SQN of the new vector
    /// (stored as SQN_HE); the pending challenge is recorded.
    Subscriber(Subscriber),
    /// No subscriber has this IMPI; the pending challenge is recorded all the same (the caller
    /// answers with a fake vector).
    Unknown,
    /// The subscriber's 48-bit SQN space is exhausted: nothing was changed or recorded.
    SqnExhausted,
}

/// What [`BsfStore::take_run`] returned: the pending challenge, and the subscriber its IMPI
/// names as it is now (`None` when there is none, e.g. deleted since).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenRun {
    /// The pending challenge, now removed.
    pub pending: Pending,
    /// The subscriber of `pending.impi`.
    pub subscriber: Option<Subscriber>,
}

/// A storage failure. Carries no secret (IMPIs and B-TIDs are identifiers, not secrets).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed (connection lost, constraint violated, migration refused, …).
    #[error("BSF store: {0}")]
    Backend(String),
    /// The storage key is not the one this database was created with: nothing can be unwrapped.
    #[error("BSF store: the storage key does not open this database (wrong key, or another database)")]
    WrongStorageKey,
    /// A wrapped key failed its integrity check although the storage key is right: the row was
    /// altered or moved (a wrapped key is bound to its column and row).
    #[error("BSF store: wrapped {what} of {id} fails its integrity check (row altered or moved)")]
    Integrity {
        /// `K`, `OPc` or `Ks`.
        what: &'static str,
        /// The IMPI or B-TID of the row.
        id: String,
    },
    /// [`BsfStore::add_subscriber`] with an IMPI that already exists.
    #[error("BSF store: subscriber {0} already exists")]
    DuplicateSubscriber(String),
    /// A stored value cannot be read back (wrong length, unknown GBA type, out of range).
    #[error("BSF store: corrupt row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// A [`StoreError::Backend`] with a message.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        StoreError::Backend(message.into())
    }
}

/// A subscriber as listed for administration: everything but K and OPc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberSummary {
    /// IMPI.
    pub impi: String,
    /// IMSI.
    pub imsi: String,
    /// SQN_HE.
    pub sqn: u64,
    /// AMF.
    pub amf: [u8; 2],
    /// GBA_U or GBA_ME.
    pub gba_type: GbaType,
}

impl From<&Subscriber> for SubscriberSummary {
    fn from(s: &Subscriber) -> Self {
        SubscriberSummary { impi: s.impi.clone(), imsi: s.imsi.clone(), sqn: s.sqn, amf: s.amf, gba_type: s.gba_type }
    }
}

/// What [`BsfStore::purge_expired`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Sessions whose `expires_at` had passed.
    pub sessions: u64,
    /// Pending challenges whose `expires_at` had passed.
    pub pending: u64,
}

/// The BSF's storage.
///
/// Every method takes `&self`: implementations are shared handles (a connection pool, a mutex)
/// that many requests use at once, and every write is durable (committed) before the returned
/// future completes. The futures are `Send`, so a generic shell can run them on any task.
///
/// A bootstrap makes three calls, each one round trip, so that a store can serve many
/// concurrent runs with few transactions (the SQL stores group the calls of concurrent runs
/// into one transaction, see [`crate::bsf::sql`]): [`BsfStore::start_run`] for the 401,
/// [`BsfStore::take_run`] and [`BsfStore::put_session`] for the 200.
///
/// Contract for implementers (checked for every backend by `tests/store_conformance.rs`):
/// - [`BsfStore::start_run`] reads the subscriber, advances SQN_HE and records the pending
///   challenge **atomically**: concurrent runs of one IMPI never get the same SQN, and each
///   gets the one after the other's.
/// - [`BsfStore::take_run`] removes and returns atomically: of two concurrent takes of one RAND
///   at most one gets the entry. This is what makes a Ub nonce single-use across restarts and
///   across BSF instances sharing the store.
/// - [`BsfStore::put_session`] stores the session under its B-TID and **removes every earlier
///   session of the same IMPI** (a later success replaces the session, TS 33.220 §4.4.2).
/// - [`BsfStore::add_subscriber`] refuses an existing IMPI with
///   [`StoreError::DuplicateSubscriber`]; [`BsfStore::list_subscribers`] returns no secret.
pub trait BsfStore {
    /// Starts a run for `impi`: advances its SQN_HE as `advance` says and records `pending`
    /// (keyed by its RAND, replacing an entry with the same RAND), in one atomic step.
    ///
    /// # Errors
    /// [`StoreError`]; nothing is changed then.
    fn start_run(
        &self,
        impi: &str,
        advance: SqnAdvance,
        pending: Pending,
    ) -> impl Future<Output = Result<RunStart, StoreError>> + Send;

    /// Removes the pending challenge with this RAND and returns it with its subscriber.
    ///
    /// # Errors
    /// [`StoreError`].
    fn take_run(&self, rand: &[u8; 16]) -> impl Future<Output = Result<Option<TakenRun>, StoreError>> + Send;

    /// Stores a session, replacing earlier sessions of the same IMPI.
    ///
    /// # Errors
    /// [`StoreError`].
    fn put_session(&self, session: Session) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The session with this B-TID (expired or not: the caller checks `expires_at`).
    ///
    /// # Errors
    /// [`StoreError`].
    fn session(&self, btid: &str) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send;

    /// The subscriber with this IMPI (administration).
    ///
    /// # Errors
    /// [`StoreError`].
    fn subscriber(&self, impi: &str) -> impl Future<Output = Result<Option<Subscriber>, StoreError>> + Send;

    /// Sets SQN_HE of `impi` (administration, e.g. after a card's SQN was reset); `Ok(false)`
    /// when there is no such subscriber.
    ///
    /// # Errors
    /// [`StoreError`].
    fn set_sqn(&self, impi: &str, sqn: u64) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Adds a subscriber (provisioning).
    ///
    /// # Errors
    /// [`StoreError::DuplicateSubscriber`] when the IMPI exists; other [`StoreError`]s.
    fn add_subscriber(&self, subscriber: &Subscriber) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes a subscriber and its bootstrapping session; `Ok(false)` when there was none.
    /// Challenges already sent to it can no longer succeed (the IMPI is then unknown).
    ///
    /// # Errors
    /// [`StoreError`].
    fn delete_subscriber(&self, impi: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Every subscriber, without K and OPc, ordered by IMPI.
    ///
    /// # Errors
    /// [`StoreError`].
    fn list_subscribers(&self) -> impl Future<Output = Result<Vec<SubscriberSummary>, StoreError>> + Send;

    /// Removes sessions and pending challenges with `expires_at <= now` (housekeeping, run
    /// periodically).
    ///
    /// # Errors
    /// [`StoreError`].
    fn purge_expired(&self, now: u64) -> impl Future<Output = Result<Purged, StoreError>> + Send;
}

#[derive(Debug, Default, Clone)]
struct Memory {
    subscribers: HashMap<String, Subscriber>,
    sessions: HashMap<String, Session>,
    /// IMPI → B-TID of its current session.
    session_of: HashMap<String, String>,
    /// RAND → pending challenge.
    pending: HashMap<[u8; 16], Pending>,
}

/// An in-memory [`BsfStore`] (tests and single-process use; nothing survives a restart).
///
/// One mutex guards the data; it is never held across an `.await`. `clone` copies the data
/// (share a store between tasks with an `Arc`).
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Memory>,
}

impl Clone for MemoryStore {
    fn clone(&self) -> Self {
        MemoryStore { inner: Mutex::new(self.lock().clone()) }
    }
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Memory> {
        // The data stay consistent whatever panicked while the lock was held: every update is a
        // single map operation.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds or replaces a subscriber (test set-up; [`BsfStore::add_subscriber`] refuses
    /// duplicates).
    pub fn insert_subscriber(&self, subscriber: Subscriber) {
        self.lock().subscribers.insert(subscriber.impi.clone(), subscriber);
    }

    /// Removes a subscriber (and nothing else).
    pub fn remove_subscriber(&self, impi: &str) -> Option<Subscriber> {
        self.lock().subscribers.remove(impi)
    }

    /// Number of pending challenges held.
    #[must_use]
    pub fn pending_len(&self) -> usize {
        self.lock().pending.len()
    }

    /// Number of sessions held.
    #[must_use]
    pub fn session_len(&self) -> usize {
        self.lock().sessions.len()
    }
}

impl BsfStore for MemoryStore {
    async fn start_run(&self, impi: &str, advance: SqnAdvance, pending: Pending) -> Result<RunStart, StoreError> {
        let mut m = self.lock();
        let start = match m.subscribers.get_mut(impi) {
            None => RunStart::Unknown,
            Some(s) => match advance.apply(s.sqn) {
                None => return Ok(RunStart::SqnExhausted),
                Some(sqn) => {
                    s.sqn = sqn;
                    RunStart::Subscriber(s.clone())
                }
            },
        };
        m.pending.insert(pending.rand, pending);
        Ok(start)
    }

    async fn take_run(&self, rand: &[u8; 16]) -> Result<Option<TakenRun>, StoreError> {
        let mut m = self.lock();
        Ok(m.pending.remove(rand).map(|pending| {
            let subscriber = m.subscribers.get(&pending.impi).cloned();
            TakenRun { pending, subscriber }
        }))
    }

    async fn subscriber(&self, impi: &str) -> Result<Option<Subscriber>, StoreError> {
        Ok(self.lock().subscribers.get(impi).cloned())
    }

    async fn put_session(&self, session: Session) -> Result<(), StoreError> {
        let mut m = self.lock();
        // The B-TID may name another IMPI's session (a RAND collision): that session goes.
        if let Some(prev) = m.sessions.remove(&session.btid)
            && prev.impi != session.impi
        {
            m.session_of.remove(&prev.impi);
        }
        if let Some(old) = m.session_of.insert(session.impi.clone(), session.btid.clone())
            && old != session.btid
        {
            m.sessions.remove(&old);
        }
        m.sessions.insert(session.btid.clone(), session);
        Ok(())
    }

    async fn session(&self, btid: &str) -> Result<Option<Session>, StoreError> {
        Ok(self.lock().sessions.get(btid).cloned())
    }

    async fn set_sqn(&self, impi: &str, sqn: u64) -> Result<bool, StoreError> {
        Ok(self.lock().subscribers.get_mut(impi).map(|s| s.sqn = sqn).is_some())
    }

    async fn add_subscriber(&self, subscriber: &Subscriber) -> Result<(), StoreError> {
        let mut m = self.lock();
        if m.subscribers.contains_key(&subscriber.impi) {
            return Err(StoreError::DuplicateSubscriber(subscriber.impi.clone()));
        }
        m.subscribers.insert(subscriber.impi.clone(), subscriber.clone());
        Ok(())
    }

    async fn delete_subscriber(&self, impi: &str) -> Result<bool, StoreError> {
        let mut m = self.lock();
        if let Some(btid) = m.session_of.remove(impi) {
            m.sessions.remove(&btid);
        }
        Ok(m.subscribers.remove(impi).is_some())
    }

    async fn list_subscribers(&self) -> Result<Vec<SubscriberSummary>, StoreError> {
        let mut list: Vec<SubscriberSummary> = self.lock().subscribers.values().map(SubscriberSummary::from).collect();
        list.sort_by(|a, b| a.impi.cmp(&b.impi));
        Ok(list)
    }

    async fn purge_expired(&self, now: u64) -> Result<Purged, StoreError> {
        let mut m = self.lock();
        let (pending, sessions) = (m.pending.len(), m.sessions.len());
        m.pending.retain(|_, p| p.expires_at > now);
        m.sessions.retain(|_, s| s.expires_at > now);
        let Memory { sessions: live, session_of, .. } = &mut *m;
        session_of.retain(|_, btid| live.contains_key(btid));
        Ok(Purged { sessions: (sessions - m.sessions.len()) as u64, pending: (pending - m.pending.len()) as u64 })
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

    fn pending(impi: &str, rand: u8) -> Pending {
        Pending { impi: impi.into(), rand: [rand; 16], issued_at: 1, expires_at: 2 }
    }

    #[tokio::test]
    async fn start_run_advances_sqn_and_records_the_challenge() {
        let s = MemoryStore::new();
        s.insert_subscriber(sub("a"));
        let next = SqnAdvance::Next(SqnScheme::default());
        let RunStart::Subscriber(got) = s.start_run("a", next, pending("a", 1)).await.unwrap() else { panic!() };
        assert_eq!(got.sqn, 96);
        assert_eq!(s.subscriber("a").await.unwrap().unwrap().sqn, 96);
        let resync = SqnAdvance::Resync { sqn_ms: 0x21, scheme: SqnScheme::default() };
        let RunStart::Subscriber(got) = s.start_run("a", resync, pending("a", 2)).await.unwrap() else { panic!() };
        assert_eq!(got.sqn, 0x41, "resync may lower SQN_HE");
        assert_eq!(s.start_run("nobody", next, pending("nobody", 3)).await, Ok(RunStart::Unknown));
        assert_eq!(s.pending_len(), 3);
        let mut full = sub("full");
        full.sqn = crate::bsf::SQN_MAX;
        s.insert_subscriber(full);
        assert_eq!(s.start_run("full", next, pending("full", 4)).await, Ok(RunStart::SqnExhausted));
        assert_eq!(s.pending_len(), 3, "nothing recorded when exhausted");
    }

    #[tokio::test]
    async fn later_session_replaces_earlier_one_of_same_impi() {
        let s = MemoryStore::new();
        s.put_session(session("x@bsf", "a")).await.unwrap();
        s.put_session(session("y@bsf", "b")).await.unwrap();
        s.put_session(session("z@bsf", "a")).await.unwrap();
        assert!(s.session("x@bsf").await.unwrap().is_none());
        assert!(s.session("y@bsf").await.unwrap().is_some());
        assert!(s.session("z@bsf").await.unwrap().is_some());
        assert_eq!(s.purge_expired(20).await, Ok(Purged { sessions: 2, pending: 0 }));
        assert_eq!(s.session_len(), 0);
    }

    #[tokio::test]
    async fn run_is_taken_once_with_its_subscriber() {
        let s = MemoryStore::new();
        s.insert_subscriber(sub("a"));
        s.start_run("a", SqnAdvance::Next(SqnScheme::default()), pending("a", 7)).await.unwrap();
        let taken = s.take_run(&[7; 16]).await.unwrap().unwrap();
        assert_eq!(taken.pending, pending("a", 7));
        assert_eq!(taken.subscriber.unwrap().sqn, 96);
        assert_eq!(s.take_run(&[7; 16]).await, Ok(None));
    }
}
