//! What a [`super::SqliteStore`] keeps in memory because it is the only process on its database
//! (issue 5: a Registration should touch no SQL but its durable TS reservation). PostgreSQL
//! stores keep none of it: several BSM processes share that database, and nothing here could
//! see their writes.
//!
//! - **One process per database file** \[chosen\]: opening a file takes an exclusive lock
//!   (`flock`) on `<file>.bsm-lock` beside it, held while a store of this process is open on it; a
//!   second process is refused ([`StoreError::Backend`], "in use by another BSM process"). Within
//!   one process, every store opened on the same file shares one [`Local`] (a registry by
//!   canonical path), so their caches see each other's writes. A lock on the database file itself
//!   would not do: closing any other descriptor of that file drops SQLite's own POSIX locks.
//! - **Terminals and purchases** ([`TerminalCache`]): read through, dropped per terminal by every
//!   write of the store to that terminal's row or purchases (after it commits), whole by bulk
//!   writes. A read that began before a write does not refill the cache after it (a generation
//!   counter tells), so a cached row is the committed one. Writes made by plain SQL behind the
//!   store's back are not seen (as for any single-writer cache; the store is the only writer).
//! - **"No live deliveries"** per terminal (the intent writer's read, [`TerminalCache::no_live`]):
//!   only the empty answer is kept, and every write that can make a delivery live drops it.
//! - **LTKM TS in durable blocks** ([`TsBlocks`]).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};

use super::ts_batch::TsQueue;
use crate::domain::Purchase;
use crate::store::{StoreError, Terminal};

/// TS values reserved durably at once per terminal \[chosen\]: one commit per 1 024 LTKMs of a
/// terminal instead of one per LTKM, the next block reserved when half of one is used (so a busy
/// terminal's requests do not wait for a slow fsync); a crash skips at most the unused values of
/// two blocks per terminal: 2^32 / 1 024 ≈ 4.2 million blocks per SMK.
pub(super) const TS_BLOCK: u32 = 1024;

/// Entries kept before a cache is emptied \[chosen\] (≈ 200 bytes each: 100 000 ≈ 20 MB). An
/// emptied TS block only skips its unused values.
const CAPACITY: usize = 100_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the maps whole, so a poisoned lock still guards usable state.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The in-memory state of one SQLite database in this process.
#[derive(Default)]
pub(super) struct Local {
    /// The `flock` on `<file>.bsm-lock` (none for an in-memory database).
    _lock: Option<File>,
    pub terminals: TerminalCache,
    pub ts: TsBlocks,
}

impl core::fmt::Debug for Local {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Local").finish_non_exhaustive()
    }
}

/// Open databases of this process, by canonical path.
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<Local>>>> = LazyLock::new(Mutex::default);

impl Local {
    /// The state of the database at `filename` (as sqlx names it): shared with the stores of this
    /// process already open on it, else new, with the file's lock taken.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when another process holds the lock or it cannot be taken.
    pub(super) fn for_file(filename: &Path) -> Result<Arc<Self>, StoreError> {
        // sqlx names in-memory databases `file:sqlx-in-memory-N`: no file, no other process.
        if filename.as_os_str().to_string_lossy().starts_with("file:") {
            return Ok(Arc::default());
        }
        let parent = match filename.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = filename
            .file_name()
            .ok_or_else(|| StoreError::Backend(format!("SQLite path {} names no file", filename.display())))?;
        let dir = parent
            .canonicalize()
            .map_err(|e| StoreError::Backend(format!("SQLite directory {}: {e}", parent.display())))?;
        let path = dir.join(name);
        let mut open = lock(&OPEN);
        open.retain(|_, w| w.strong_count() > 0);
        if let Some(local) = open.get(&path).and_then(Weak::upgrade) {
            return Ok(local);
        }
        let mut lock_name = OsString::from(path.as_os_str());
        lock_name.push(".bsm-lock");
        let lock_path = PathBuf::from(lock_name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Backend(format!("lock file {}: {e}", lock_path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Backend(format!(
                    "SQLite database {} is in use by another BSM process (lock {}); a SQLite store \
                     serves one process, use PostgreSQL for several",
                    path.display(),
                    lock_path.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::Backend(format!("locking {}: {e}", lock_path.display())));
            }
        }
        let local = Arc::new(Local { _lock: Some(file), ..Local::default() });
        open.insert(path, Arc::downgrade(&local));
        Ok(local)
    }
}

#[derive(Default)]
struct TerminalState {
    generation: u64,
    /// `None`: the terminal is not stored.
    terminals: HashMap<String, Option<Terminal>>,
    purchases: HashMap<String, Arc<Vec<Purchase>>>,
    live_generation: u64,
    no_live: HashSet<String>,
}

/// Terminal rows, their purchases and "no live deliveries", read through (module docs).
#[derive(Default)]
pub(super) struct TerminalCache {
    state: Mutex<TerminalState>,
}

impl TerminalCache {
    /// The read generation: take it before a read whose result may be kept.
    pub(super) fn generation(&self) -> u64 {
        lock(&self.state).generation
    }

    /// The terminal's row as cached (`Some(None)`: known not to be stored).
    pub(super) fn terminal(&self, id: &str) -> Option<Option<Terminal>> {
        lock(&self.state).terminals.get(id).cloned()
    }

    /// Keeps a row read at `generation`, unless a write came in between.
    pub(super) fn put_terminal(&self, generation: u64, id: &str, row: Option<Terminal>) {
        let mut s = lock(&self.state);
        if s.generation == generation {
            if s.terminals.len() >= CAPACITY {
                s.terminals.clear();
            }
            s.terminals.insert(id.to_owned(), row);
        }
    }

    /// The terminal's purchases as cached.
    pub(super) fn purchases(&self, id: &str) -> Option<Arc<Vec<Purchase>>> {
        lock(&self.state).purchases.get(id).cloned()
    }

    /// Keeps purchases read at `generation`, unless a write came in between.
    pub(super) fn put_purchases(&self, generation: u64, id: &str, purchases: Vec<Purchase>) {
        let mut s = lock(&self.state);
        if s.generation == generation {
            if s.purchases.len() >= CAPACITY {
                s.purchases.clear();
            }
            s.purchases.insert(id.to_owned(), Arc::new(purchases));
        }
    }

    /// After a write to the terminal's row or purchases committed (or failed: it may have).
    pub(super) fn changed(&self, id: &str) {
        let mut s = lock(&self.state);
        s.generation = s.generation.wrapping_add(1);
        s.terminals.remove(id);
        s.purchases.remove(id);
    }

    /// After a write that may change any terminal's row or purchases.
    pub(super) fn changed_all(&self) {
        let mut s = lock(&self.state);
        s.generation = s.generation.wrapping_add(1);
        s.terminals.clear();
        s.purchases.clear();
    }

    /// The generation of the "no live deliveries" answers: take it before the read.
    pub(super) fn live_generation(&self) -> u64 {
        lock(&self.state).live_generation
    }

    /// Whether the terminal is known to have no live deliveries.
    pub(super) fn no_live(&self, terminal: &str) -> bool {
        lock(&self.state).no_live.contains(terminal)
    }

    /// Keeps "no live deliveries" read at `generation`, unless a delivery write came in between.
    pub(super) fn put_no_live(&self, generation: u64, terminal: &str) {
        let mut s = lock(&self.state);
        if s.live_generation == generation {
            if s.no_live.len() >= CAPACITY {
                s.no_live.clear();
            }
            s.no_live.insert(terminal.to_owned());
        }
    }

    /// Before and after a write that may make a delivery live (both: a read in between must not
    /// keep its answer).
    pub(super) fn deliveries_changed(&self) {
        let mut s = lock(&self.state);
        s.live_generation = s.live_generation.wrapping_add(1);
        s.no_live.clear();
    }
}

/// The unused rest of a terminal's durably reserved TS block.
struct Block {
    smk: String,
    /// Next to hand out; above `last` when used up.
    next: u64,
    last: u64,
}

/// A block being reserved ahead, under `smk`: the first TS of it once committed.
struct Ahead {
    smk: String,
    task: tokio::task::JoinHandle<Result<u32, StoreError>>,
}

#[derive(Default)]
struct Slot {
    block: Option<Block>,
    ahead: Option<Ahead>,
}

impl Slot {
    /// Waits for the block reserved ahead, if any: its first TS when it is for `smk`.
    async fn land(&mut self, smk: &str) -> Option<u32> {
        let ahead = self.ahead.take()?;
        // A failed or foreign reservation only skips values: monotonic, never reused.
        let first = ahead.task.await.ok()?.ok()?;
        (ahead.smk == smk).then_some(first)
    }
}

/// LTKM TS values handed out from blocks reserved durably ([`TS_BLOCK`] at once): the counter in
/// the database is always at or above every TS handed out, so after a crash the next block starts
/// above them all (the unused rest is skipped: monotonic, never reused).
///
/// - One async lock per terminal serialises its reservations: they are handed out in order, and
///   concurrent ones do not each take a block. Reservations of different terminals still share
///   the group commit.
/// - When half a block is used, the next one is reserved in the background, so a request seldom
///   waits for a commit; a request waits for it only when the block runs out first. A request
///   under another SMK (a new bootstrap) waits for that reservation before its own, so the
///   database sees them in order (the counter restarts under the newest SMK).
/// - A TS that `record_send` reserves in its own transaction moves the counter past the block:
///   [`TsBlocks::forget`] drops the block (and the one ahead) after that commit, so later
///   reservations start above it.
#[derive(Default)]
pub(super) struct TsBlocks {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl TsBlocks {
    fn slot(&self, terminal: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get(terminal) {
            return slot.clone();
        }
        if slots.len() >= CAPACITY {
            // Blocks not in use go (their rest is skipped); one in use stays with its holder.
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        slots.entry(terminal.to_owned()).or_default().clone()
    }

    /// `n` TS values in a row for `terminal` under `smk`, the first returned: from the terminal's
    /// block, else from a new block that `queue` reserves durably (committed before any of it is
    /// handed out).
    pub(super) async fn reserve(&self, queue: &TsQueue, terminal: &str, smk: &str, n: u32) -> Result<u32, StoreError> {
        let slot = self.slot(terminal);
        let mut held = slot.lock().await;
        let want = u64::from(n);
        loop {
            if let Some(b) = held.block.as_mut()
                && b.smk == smk
                && b.next + want - 1 <= b.last
            {
                let first = b.next;
                b.next += want;
                let rest = b.last + 1 - b.next;
                if rest < u64::from(TS_BLOCK / 2) && held.ahead.is_none() {
                    let (queue, terminal, for_smk) = (queue.clone(), terminal.to_owned(), smk.to_owned());
                    let task = tokio::spawn(async move { queue.reserve(&terminal, &for_smk, TS_BLOCK).await });
                    held.ahead = Some(Ahead { smk: smk.to_owned(), task });
                }
                return u32::try_from(first).map_err(|_| StoreError::Corrupt(format!("LTKM TS {first}")));
            }
            if held.ahead.is_none() {
                break;
            }
            if let Some(first) = held.land(smk).await {
                held.install(smk, first, TS_BLOCK);
            }
        }
        let count = n.max(TS_BLOCK);
        let first = match queue.reserve(terminal, smk, count).await {
            Ok(first) => first,
            // Near the end of the 32-bit counter a whole block may not fit where `n` still does.
            Err(StoreError::Conflict(_)) if count > n => {
                let first = queue.reserve(terminal, smk, n).await?;
                // The counter moved past the block's rest: it must not be handed out after this.
                held.block = None;
                return Ok(first);
            }
            Err(e) => return Err(e),
        };
        held.install(smk, first, count);
        let b = held.block.as_mut().ok_or_else(|| StoreError::Corrupt("TS block".into()))?;
        let start = b.next;
        b.next += want;
        u32::try_from(start).map_err(|_| StoreError::Corrupt(format!("LTKM TS {start}")))
    }

    /// Drops the terminal's block and the one ahead: the counter was moved outside them
    /// (`record_send`), after that commit.
    pub(super) async fn forget(&self, terminal: &str) {
        let slot = lock(&self.slots).get(terminal).cloned();
        if let Some(slot) = slot {
            let mut held = slot.lock().await;
            // Whatever it reserved is skipped; waiting keeps a late one from landing after this.
            let _ = held.land("").await;
            held.block = None;
        }
    }
}

impl Slot {
    /// Takes the committed block `first ..= first + count - 1` under `smk`. When it continues the
    /// current block (no other reservation in between), the current block's rest is handed out
    /// first, none skipped.
    fn install(&mut self, smk: &str, first: u32, count: u32) {
        let first = u64::from(first);
        let last = first + u64::from(count) - 1;
        let next = match &self.block {
            Some(b) if b.smk == smk && b.last + 1 == first && b.next <= b.last => b.next,
            _ => first,
        };
        self.block = Some(Block { smk: smk.to_owned(), next, last });
    }
}
