//! The key cache in front of a fake BSF: hits, lifetime, bounds, one record per IMPI, no
//! caching of refusals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use keycast_bsm::keys::{KeyCache, KeyError, KeyFuture, KeyRecord, KeySource, NafKeys};
use keycast_crypto::keys::KsNaf;

const T0: u64 = 1_780_272_000;

/// A BSF stand-in: answers from a map and counts the calls.
#[derive(Default)]
struct FakeBsf {
    sessions: Mutex<HashMap<String, Result<Arc<KeyRecord>, KeyError>>>,
    calls: AtomicUsize,
}

impl FakeBsf {
    fn put(&self, btid: &str, impi: &str, bootstrapped_at: u64, lifetime: u64) {
        let keys = NafKeys::Me { ks_naf: KsNaf::from_bytes([bootstrapped_at as u8; 32]) };
        let record = KeyRecord::new(btid, impi, bootstrapped_at, lifetime, &keys);
        self.sessions.lock().unwrap().insert(btid.to_owned(), Ok(Arc::new(record)));
    }

    fn refuse(&self, btid: &str, error: KeyError) {
        self.sessions.lock().unwrap().insert(btid.to_owned(), Err(error));
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl KeySource for FakeBsf {
    fn keys<'a>(&'a self, btid: &'a str, _now: u64) -> KeyFuture<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self.sessions.lock().unwrap().get(btid).cloned().unwrap_or(Err(KeyError::UnknownBtid));
        Box::pin(async move { answer })
    }
}

fn cache(capacity: usize) -> KeyCache<Arc<FakeBsf>> {
    KeyCache::new(Arc::new(FakeBsf::default()), capacity)
}

#[tokio::test]
async fn serves_from_the_cache_until_the_lifetime_ends() {
    let cache = cache(8);
    cache.inner().put("a@bsf", "impi-a", T0, T0 + 100);
    assert_eq!(cache.keys("a@bsf", T0).await.unwrap().impi(), "impi-a");
    assert_eq!(cache.keys("a@bsf", T0 + 99).await.unwrap().btid(), "a@bsf");
    assert_eq!(cache.inner().calls(), 1);
    // At the end of the lifetime the B-TID is dead: refused without asking the BSF again.
    assert_eq!(cache.keys("a@bsf", T0 + 100).await.unwrap_err(), KeyError::Expired { lifetime: T0 + 100 });
    assert_eq!(cache.inner().calls(), 1);
    assert!(cache.is_empty());
}

#[tokio::test]
async fn refusals_are_not_cached() {
    let cache = cache(8);
    assert_eq!(cache.keys("b@bsf", T0).await.unwrap_err(), KeyError::UnknownBtid);
    cache.inner().refuse("c@bsf", KeyError::Unavailable("down".into()));
    assert!(matches!(cache.keys("c@bsf", T0).await, Err(KeyError::Unavailable(_))));
    // The terminal bootstraps (or the BSF comes back): served at once.
    cache.inner().put("b@bsf", "impi-b", T0, T0 + 100);
    cache.inner().put("c@bsf", "impi-c", T0, T0 + 100);
    assert!(cache.keys("b@bsf", T0).await.is_ok());
    assert!(cache.keys("c@bsf", T0).await.is_ok());
    assert_eq!(cache.inner().calls(), 4);
    assert_eq!(cache.len(), 2);
}

#[tokio::test]
async fn a_record_already_expired_at_the_source_is_refused() {
    let cache = cache(8);
    cache.inner().put("a@bsf", "impi-a", T0 - 200, T0 - 100);
    assert_eq!(cache.keys("a@bsf", T0).await.unwrap_err(), KeyError::Expired { lifetime: T0 - 100 });
    assert!(cache.is_empty());
}

#[tokio::test]
async fn a_source_answering_for_another_btid_is_refused() {
    let cache = cache(8);
    cache.inner().put("a@bsf", "impi-a", T0, T0 + 100);
    let wrong = cache.inner().sessions.lock().unwrap().get("a@bsf").cloned().unwrap();
    cache.inner().sessions.lock().unwrap().insert("x@bsf".into(), wrong);
    assert!(matches!(cache.keys("x@bsf", T0).await, Err(KeyError::InvalidAnswer(_))));
    assert!(cache.is_empty());
}

#[tokio::test]
async fn bounded_by_capacity_evicting_the_earliest_end_first() {
    let cache = cache(3);
    for (i, lifetime) in [(0u64, 500), (1, 100), (2, 300), (3, 400)] {
        cache.inner().put(&format!("{i}@bsf"), &format!("impi-{i}"), T0, T0 + lifetime);
        cache.keys(&format!("{i}@bsf"), T0).await.unwrap();
        assert!(cache.len() <= 3);
    }
    let calls = cache.inner().calls();
    // "1@bsf" (ending first) went; the others are still served from the cache.
    for i in [0, 2, 3] {
        cache.keys(&format!("{i}@bsf"), T0).await.unwrap();
    }
    assert_eq!(cache.inner().calls(), calls);
    cache.keys("1@bsf", T0).await.unwrap();
    assert_eq!(cache.inner().calls(), calls + 1);
    assert_eq!(cache.len(), 3);
}

#[tokio::test]
async fn a_later_bootstrap_replaces_the_earlier_record_of_its_impi() {
    let cache = cache(8);
    cache.inner().put("old@bsf", "impi-a", T0, T0 + 1000);
    cache.inner().put("new@bsf", "impi-a", T0 + 10, T0 + 1010);
    cache.keys("old@bsf", T0 + 10).await.unwrap();
    cache.keys("new@bsf", T0 + 10).await.unwrap();
    assert_eq!(cache.len(), 1);
    // The BSF forgot the old session: the old B-TID is no longer served from the cache.
    cache.inner().refuse("old@bsf", KeyError::UnknownBtid);
    assert_eq!(cache.keys("old@bsf", T0 + 11).await.unwrap_err(), KeyError::UnknownBtid);
    // An answer for an earlier bootstrap does not push out the later one.
    cache.inner().put("old@bsf", "impi-a", T0, T0 + 1000);
    cache.keys("old@bsf", T0 + 12).await.unwrap();
    let calls = cache.inner().calls();
    cache.keys("new@bsf", T0 + 12).await.unwrap();
    assert_eq!(cache.inner().calls(), calls);
}

#[tokio::test]
async fn forget_drops_a_record() {
    let cache = cache(8);
    cache.inner().put("a@bsf", "impi-a", T0, T0 + 100);
    cache.keys("a@bsf", T0).await.unwrap();
    cache.forget("a@bsf");
    assert!(cache.is_empty());
    cache.keys("a@bsf", T0).await.unwrap();
    assert_eq!(cache.inner().calls(), 2);
}
