//! What a SQL store keeps of the catalogue and the keys between reads (issue 5: every request
//! reads them, and each read is a round trip to the database). The tables carry a stamp
//! (`catalogue_version`, moved by triggers on every change, whoever makes it); the cache is
//! trusted for [`FRESH`] after the stamp was last read and dropped whole when the stamp moves. The
//! store's own writes drop it at once.
//!
//! \[chosen\] A change made by another process reaches this one within [`FRESH`] (plus the
//! reads in flight); one made through this store, at once. A read that began before a local write
//! does not refill the cache after it (a generation counter tells).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::domain::{KeyEntry, Program, PurchaseData, PurchaseItem, Service};
use crate::store::{StoreError, StoredKey};

/// One key of a group as cached: its entry, and its bytes or why they do not open.
#[derive(Debug, Clone)]
pub(super) struct GroupKey {
    pub entry: KeyEntry,
    pub key: Result<StoredKey, StoreError>,
}

/// How long a read stamp is trusted \[chosen\].
pub(super) const FRESH: Duration = Duration::from_millis(250);

#[derive(Default)]
struct State {
    stamp: Option<i64>,
    checked_at: Option<Instant>,
    generation: u64,
    services: Option<Arc<Vec<Service>>>,
    programs: Option<Arc<Vec<Program>>>,
    items: Option<Arc<Vec<PurchaseItem>>>,
    offers: Option<Arc<Vec<PurchaseData>>>,
    /// Every key of a group with its bytes (they zeroize on drop), oldest first.
    groups: HashMap<u16, Arc<Vec<GroupKey>>>,
}

impl State {
    fn drop_all(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.services = None;
        self.programs = None;
        self.items = None;
        self.offers = None;
        self.groups.clear();
    }
}

/// The cache (shared by a store's clones).
#[derive(Default)]
pub(super) struct CatalogueCache {
    state: Mutex<State>,
}

impl core::fmt::Debug for CatalogueCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CatalogueCache").finish_non_exhaustive()
    }
}

impl CatalogueCache {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state whole; a poisoned lock still guards a usable cache.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the stamp was read within [`FRESH`].
    pub(super) fn fresh(&self) -> bool {
        self.lock().checked_at.is_some_and(|t| t.elapsed() < FRESH)
    }

    /// The stamp just read: drops everything when it moved.
    pub(super) fn stamp(&self, stamp: i64) {
        let mut s = self.lock();
        if s.stamp != Some(stamp) {
            s.drop_all();
            s.stamp = Some(stamp);
        }
        s.checked_at = Some(Instant::now());
    }

    /// A local write: drops everything now and makes the next read check the stamp.
    pub(super) fn changed(&self) {
        let mut s = self.lock();
        s.drop_all();
        s.checked_at = None;
    }

    /// The generation a read starts under (pass it back to the `put_…` call).
    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    pub(super) fn services(&self) -> Option<Arc<Vec<Service>>> {
        self.lock().services.clone()
    }

    pub(super) fn programs(&self) -> Option<Arc<Vec<Program>>> {
        self.lock().programs.clone()
    }

    pub(super) fn items(&self) -> Option<Arc<Vec<PurchaseItem>>> {
        self.lock().items.clone()
    }

    pub(super) fn offers(&self) -> Option<Arc<Vec<PurchaseData>>> {
        self.lock().offers.clone()
    }

    pub(super) fn group(&self, group: u16) -> Option<Arc<Vec<GroupKey>>> {
        self.lock().groups.get(&group).cloned()
    }

    pub(super) fn put_services(&self, generation: u64, v: Arc<Vec<Service>>) {
        let mut s = self.lock();
        if s.generation == generation {
            s.services = Some(v);
        }
    }

    pub(super) fn put_programs(&self, generation: u64, v: Arc<Vec<Program>>) {
        let mut s = self.lock();
        if s.generation == generation {
            s.programs = Some(v);
        }
    }

    pub(super) fn put_items(&self, generation: u64, v: Arc<Vec<PurchaseItem>>) {
        let mut s = self.lock();
        if s.generation == generation {
            s.items = Some(v);
        }
    }

    pub(super) fn put_offers(&self, generation: u64, v: Arc<Vec<PurchaseData>>) {
        let mut s = self.lock();
        if s.generation == generation {
            s.offers = Some(v);
        }
    }

    pub(super) fn put_group(&self, generation: u64, group: u16, v: Arc<Vec<GroupKey>>) {
        let mut s = self.lock();
        if s.generation == generation {
            s.groups.insert(group, v);
        }
    }
}
