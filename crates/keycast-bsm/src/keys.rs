//! The NAF keys of one B-TID as the BSM holds them (profile P-7), where they come from
//! ([`KeySource`]) and the bounded cache in front of the BSF ([`KeyCache`]).
//!
//! The BSF answers Zn with Ks_NAF (GBA_ME) or Ks_ext_NAF and Ks_int_NAF (GBA_U, asked for as a
//! GBA_U-aware NAF). [`KeyRecord::new`] turns them into the two keys the BSM works with
//! (TS 33.246 §6.1, profile P-7):
//!
//! | bootstrap | SMK (seals LTKMs) | SRK (Ua Digest password = base64(SRK)) |
//! |---|---|---|
//! | GBA_U | Ks_int_NAF | Ks_ext_NAF |
//! | GBA_ME | Ks_NAF | MRK(Ks_NAF) |
//!
//! \[chosen\] A GBA_U session is taken to run on an MBMS-capable card: the Smartcard Profile keeps
//! SMK in the card, and Zn does not say whether a card lacks MBMS support (the P-7 row "GBA_U
//! with a card without MBMS support" is not served by this BSM). `profile: P-7`.
//!
//! # Cache
//! [`KeyCache`] keeps a record until its lifetime (the Ks lifetime from Zn) ends; then the B-TID
//! is refused as expired without asking the BSF again, since an expired B-TID never comes back.
//! \[chosen\] Bounds: at most `capacity` records (default [`DEFAULT_CACHE_CAPACITY`]); when full,
//! the record whose lifetime ends first goes (expired ones first, as they end earliest). Only one
//! record per IMPI is kept: a record of a later bootstrap replaces the earlier one, as the BSF
//! itself keeps one session per subscriber. Refusals (unknown B-TID, expired, BSF down) are not
//! cached, so a terminal that bootstraps again is served at once.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use keycast_crypto::gba::{self, GbaMode};
use keycast_crypto::keys::{KsExtNaf, KsIntNaf, KsNaf, Smk, Srk};
use keycast_provisioning::digest::Password;

pub use keycast_crypto::gba::GbaType;

/// The NAF keys of one Zn answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NafKeys {
    /// A GBA_ME session.
    Me {
        /// Ks_NAF.
        ks_naf: KsNaf,
    },
    /// A GBA_U session, as given to a GBA_U-aware NAF.
    U {
        /// Ks_ext_NAF (the ME's key).
        ks_ext_naf: KsExtNaf,
        /// Ks_int_NAF (the card's key).
        ks_int_naf: KsIntNaf,
    },
}

/// Everything the BSM knows about one bootstrapped terminal: identity, GBA type, lifetime, SMK
/// and SRK. The keys are wiped on drop and print as `Smk(…)` / `Srk(…)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    btid: String,
    impi: String,
    gba_type: GbaType,
    bootstrapped_at: u64,
    lifetime: u64,
    smk: Smk,
    srk: Srk,
    ua: UaPassword,
}

/// base64(SRK) made once per record: the Ua password, which remembers its HA1 (one MD5 and one
/// base64 per record, not per request). A function of the SRK, so records compare through that.
#[derive(Clone)]
struct UaPassword(Password);

impl PartialEq for UaPassword {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for UaPassword {}

impl core::fmt::Debug for UaPassword {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("(from the SRK)")
    }
}

impl KeyRecord {
    /// The record of `btid`, deriving SMK and SRK from the NAF keys per profile P-7 (see the
    /// module documentation). Times are Unix seconds; `lifetime` is when Ks expires.
    #[must_use]
    pub fn new(btid: &str, impi: &str, bootstrapped_at: u64, lifetime: u64, keys: &NafKeys) -> Self {
        // profile: P-7 — which NAF key becomes SMK and which SRK.
        let (gba_type, smk, srk) = match keys {
            NafKeys::U { ks_ext_naf, ks_int_naf } => (
                GbaType::GbaU,
                Smk::from_bytes(*ks_int_naf.expose_secret()),
                gba::mbms_srk(GbaMode::GbaUMbmsCard, ks_ext_naf.expose_secret()),
            ),
            NafKeys::Me { ks_naf } => (
                GbaType::GbaMe,
                Smk::from_bytes(*ks_naf.expose_secret()),
                gba::mbms_srk(GbaMode::GbaMe, ks_naf.expose_secret()),
            ),
        };
        let ua = UaPassword(Password::base64_of_key(srk.expose_secret()));
        KeyRecord { btid: btid.to_owned(), impi: impi.to_owned(), gba_type, bootstrapped_at, lifetime, smk, srk, ua }
    }

    /// The B-TID (the Digest username on Ua).
    #[must_use]
    pub fn btid(&self) -> &str {
        &self.btid
    }

    /// The subscriber's IMPI.
    #[must_use]
    pub fn impi(&self) -> &str {
        &self.impi
    }

    /// GBA_U or GBA_ME.
    #[must_use]
    pub fn gba_type(&self) -> GbaType {
        self.gba_type
    }

    /// When the bootstrapping run succeeded (Unix seconds).
    #[must_use]
    pub fn bootstrapped_at(&self) -> u64 {
        self.bootstrapped_at
    }

    /// When Ks, and with it every key here, expires (Unix seconds).
    #[must_use]
    pub fn lifetime(&self) -> u64 {
        self.lifetime
    }

    /// Whether the keys may still be used at `now`.
    #[must_use]
    pub fn is_valid_at(&self, now: u64) -> bool {
        now < self.lifetime
    }

    /// SMK (MUK): the key that protects LTKMs for this terminal.
    #[must_use]
    pub fn smk(&self) -> &Smk {
        &self.smk
    }

    /// SRK (MRK): the key behind the Ua Digest password.
    #[must_use]
    pub fn srk(&self) -> &Srk {
        &self.srk
    }

    /// The Ua Digest password, base64(SRK) (profile P-7, P-11.13).
    #[must_use]
    pub fn ua_password(&self) -> Password {
        self.ua.0.clone()
    }
}

/// Why no keys could be had for a B-TID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The BSF knows no such B-TID (never existed, replaced by a later bootstrap, purged): the
    /// terminal must bootstrap again.
    #[error("unknown B-TID")]
    UnknownBtid,
    /// The bootstrapping session's lifetime has passed: the terminal must bootstrap again.
    #[error("bootstrapping session expired (lifetime {lifetime})")]
    Expired {
        /// When it expired (Unix seconds).
        lifetime: u64,
    },
    /// The BSF could not be reached or failed (transport error, timeout, 5xx).
    #[error("key server unavailable: {0}")]
    Unavailable(String),
    /// The BSF refused this BSM (credential, NAF authorisation or request format): a
    /// configuration problem, not the terminal's.
    #[error("key server refused the BSM: {0}")]
    Refused(String),
    /// The BSF's answer could not be understood.
    #[error("invalid key server answer: {0}")]
    InvalidAnswer(String),
}

impl KeyError {
    /// Whether the terminal should bootstrap again (as opposed to a BSM-side failure).
    #[must_use]
    pub fn needs_bootstrap(&self) -> bool {
        matches!(self, KeyError::UnknownBtid | KeyError::Expired { .. })
    }
}

/// The future a [`KeySource`] returns.
pub type KeyFuture<'a> = Pin<Box<dyn Future<Output = Result<Arc<KeyRecord>, KeyError>> + Send + 'a>>;

/// Where the BSM gets the keys of a B-TID: the Zn client ([`crate::zn_client::ZnClient`]), the
/// [`KeyCache`] in front of it, or a fake in tests.
pub trait KeySource: Send + Sync {
    /// The keys of `btid` at time `now` (Unix seconds).
    fn keys<'a>(&'a self, btid: &'a str, now: u64) -> KeyFuture<'a>;
}

impl<T: KeySource + ?Sized> KeySource for Arc<T> {
    fn keys<'a>(&'a self, btid: &'a str, now: u64) -> KeyFuture<'a> {
        (**self).keys(btid, now)
    }
}

/// Default number of B-TIDs a [`KeyCache`] holds \[chosen\].
pub const DEFAULT_CACHE_CAPACITY: usize = 65_536;

#[derive(Default)]
struct CacheState {
    by_btid: HashMap<String, Arc<KeyRecord>>,
    /// IMPI → the B-TID of its newest cached record.
    by_impi: HashMap<String, String>,
    /// (lifetime, B-TID): eviction order, earliest end first.
    order: BTreeSet<(u64, String)>,
}

impl CacheState {
    fn remove(&mut self, btid: &str) -> Option<Arc<KeyRecord>> {
        let record = self.by_btid.remove(btid)?;
        self.order.remove(&(record.lifetime, record.btid.clone()));
        if self.by_impi.get(&record.impi).is_some_and(|b| b == btid) {
            self.by_impi.remove(&record.impi);
        }
        Some(record)
    }

    /// Whether `record` was kept: it is not if a later bootstrap of its IMPI is cached.
    fn insert(&mut self, record: Arc<KeyRecord>, capacity: usize) -> bool {
        if let Some(current) = self.by_impi.get(&record.impi).and_then(|b| self.by_btid.get(b)) {
            if current.bootstrapped_at > record.bootstrapped_at {
                return false;
            }
            let old = current.btid.clone();
            self.remove(&old);
        }
        self.remove(&record.btid);
        while self.by_btid.len() >= capacity {
            let Some((_, btid)) = self.order.pop_first() else { break };
            self.remove(&btid);
        }
        self.order.insert((record.lifetime, record.btid.clone()));
        self.by_impi.insert(record.impi.clone(), record.btid.clone());
        self.by_btid.insert(record.btid.clone(), record);
        true
    }
}

/// A bounded cache of [`KeyRecord`]s in front of another [`KeySource`] (normally the Zn
/// client). Lookups for different B-TIDs run concurrently; the lock is never held across the
/// inner source's await.
pub struct KeyCache<S> {
    inner: S,
    capacity: usize,
    state: Mutex<CacheState>,
}

impl<S> core::fmt::Debug for KeyCache<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyCache").field("capacity", &self.capacity).field("len", &self.len()).finish_non_exhaustive()
    }
}

impl<S: KeySource> KeyCache<S> {
    /// A cache of at most `capacity` records (at least 1) in front of `inner`.
    #[must_use]
    pub fn new(inner: S, capacity: usize) -> Self {
        KeyCache { inner, capacity: capacity.max(1), state: Mutex::new(CacheState::default()) }
    }

    /// The source behind the cache.
    #[must_use]
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Drops the record of `btid`, if cached (e.g. when the operator revokes a terminal).
    pub fn forget(&self, btid: &str) {
        self.lock().remove(btid);
    }

    async fn lookup(&self, btid: &str, now: u64) -> Result<Arc<KeyRecord>, KeyError> {
        {
            let mut state = self.lock();
            if let Some(record) = state.by_btid.get(btid) {
                if record.is_valid_at(now) {
                    return Ok(record.clone());
                }
                let lifetime = record.lifetime;
                state.remove(btid);
                return Err(KeyError::Expired { lifetime });
            }
        }
        let record = self.inner.keys(btid, now).await?;
        if record.btid != btid {
            return Err(KeyError::InvalidAnswer("the key source answered for another B-TID".to_owned()));
        }
        if !record.is_valid_at(now) {
            return Err(KeyError::Expired { lifetime: record.lifetime });
        }
        if !self.lock().insert(record.clone(), self.capacity) {
            tracing::debug!(btid = ?btid, "keys of an earlier bootstrap served but not cached");
        }
        Ok(record)
    }
}

impl<S> KeyCache<S> {
    fn lock(&self) -> MutexGuard<'_, CacheState> {
        // Each update leaves the maps consistent before anything can panic, so a poisoned
        // lock still guards a usable cache.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of records held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().by_btid.len()
    }

    /// Whether no record is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<S: KeySource> KeySource for KeyCache<S> {
    fn keys<'a>(&'a self, btid: &'a str, now: u64) -> KeyFuture<'a> {
        Box::pin(self.lookup(btid, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p7_key_roles() {
        let ext = [0x11; 32];
        let int = [0x22; 32];
        let u = KeyRecord::new(
            "b@bsf",
            "i",
            1,
            2,
            &NafKeys::U { ks_ext_naf: KsExtNaf::from_bytes(ext), ks_int_naf: KsIntNaf::from_bytes(int) },
        );
        assert_eq!(u.gba_type(), GbaType::GbaU);
        assert_eq!(u.smk().expose_secret(), &int);
        assert_eq!(u.srk().expose_secret(), &ext);

        let naf = [0x33; 32];
        let me = KeyRecord::new("b@bsf", "i", 1, 2, &NafKeys::Me { ks_naf: KsNaf::from_bytes(naf) });
        assert_eq!(me.gba_type(), GbaType::GbaMe);
        assert_eq!(me.smk().expose_secret(), &naf);
        assert_eq!(me.srk(), &gba::mrk(&naf));
        assert_ne!(me.srk().expose_secret(), &naf);
    }

    #[test]
    fn debug_shows_no_key() {
        let r = KeyRecord::new("b@bsf", "i", 1, 2, &NafKeys::Me { ks_naf: KsNaf::from_bytes([0xab; 32]) });
        let text = format!("{r:?}");
        assert!(text.contains("Smk(…)") && text.contains("Srk(…)"), "{text}");
        assert!(!text.contains("171") && !text.to_lowercase().contains("abab"), "{text}");
    }
}
