//! The BSM's storage: the catalogue, the SEK/PEKs with their history, the terminals and their
//! registrations, the purchases, and the LTKM counters, behind one trait with two backends in
//! [`sql`]: SQLite (the default: one file, zero setup) and PostgreSQL (by URL, shared by several
//! BSM processes). The same conformance suite (`tests/store_conformance.rs`) runs on both.
//!
//! Every write is committed before its call returns, so a service can answer as soon as the call
//! is done. SEK/PEKs are wrapped at rest ([`keycast_crypto::at_rest`], scope
//! `keycast-bsm-store`, bound to the key's group, number and window start), so a copied database
//! gives no key away.
//!
//! # Deliveries
//! LTKM deliveries ([`crate::delivery::DeliveryRow`]) are rows too, so several BSM processes can
//! share the pushing and a crash neither loses nor repeats one. A worker (any process, named by a
//! string unique to it, e.g. host and PID) loops:
//!
//! 1. [`BsmStore::claim_due`]: takes a lease on up to `limit` due rows; no other worker gets them
//!    while the lease lives (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: one writer at a time);
//! 2. for each, [`BsmStore::record_send`] **before** the LTKM leaves: reserves the terminal's next
//!    TS, records the attempt, moves the state and the next due time, and ends the lease, in one
//!    transaction. Only then is the LTKM built with the returned TS and sent.
//! 3. verification messages end in [`BsmStore::find_sent`] (which LTKM, which delivery, which
//!    form, to rebuild it and check the MAC) and [`BsmStore::acknowledge_sent`]; pulls and
//!    give-ups in [`BsmStore::record_outcome`].
//!
//! The push worker and its intake are in [`crate::push`]; the HTTP intents become rows through
//! [`crate::http::intents`].
//!
//! A worker that dies between 1 and 2 leaves its rows claimed until the lease runs out; then any
//! worker claims them again (the delivery is not lost). A worker that dies between 2 and the send
//! burnt one TS and one attempt; the retry timer recorded in 2 sends the next one (the delivery
//! is not repeated beyond the retry it would have had anyway). A worker whose lease ran out while
//! it was slow is refused in 2 ([`StoreError::NotClaimed`]) and sends nothing, so two workers
//! never push the same attempt.

pub mod sql;

use std::time::Duration;

use keycast_crypto::keys::SekPek;
use keycast_mikey::{KeyDomainId, SekPekId};
use thiserror::Error;

use keycast_mikey::LtkmExt;

use crate::client_id::BcastClientId;
use crate::issue::{LtkmTs, StreamingPolicy};

use crate::delivery::{AckOutcome, Attempt, DeliveryId, DeliveryKey, DeliveryRow, DeliveryState, SentLtkm, Time};
use crate::domain::{KeyEntry, Program, Purchase, PurchaseData, PurchaseItem, Service, TerminalId, Window};

/// A storage failure. Carries no secret.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed (connection lost, migration refused, …).
    #[error("BSM store: {0}")]
    Backend(String),
    /// The storage key is not the one this database was created with.
    #[error("BSM store: the storage key does not open this database (wrong key, or another database)")]
    WrongStorageKey,
    /// A wrapped key failed its integrity check although the storage key is right.
    #[error("BSM store: wrapped key {0} fails its integrity check (row altered or moved)")]
    Integrity(String),
    /// A row refers to something that does not exist (a purchase item naming an unknown service,
    /// a purchase of an unknown terminal, …).
    #[error("BSM store: {0} does not exist")]
    Missing(String),
    /// A key overlaps or repeats a key of its group, or another such conflict.
    #[error("BSM store: {0}")]
    Conflict(String),
    /// A stored value cannot be read back.
    #[error("BSM store: corrupt row: {0}")]
    Corrupt(String),
    /// The worker does not hold a live claim on the delivery (its lease ran out, another worker
    /// took the row, or the delivery was finished meanwhile): it must not send.
    #[error("BSM store: {0}")]
    NotClaimed(String),
    /// The caller passed something the store cannot hold (a live delivery without a due time,
    /// a push number out of sequence, …).
    #[error("BSM store: {0}")]
    Invalid(String),
}

/// One SEK/PEK with what an LTKM needs besides the terminal's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// ID, window and revocation.
    pub entry: KeyEntry,
    /// Key Domain ID.
    pub key_domain: KeyDomainId,
    /// The key.
    pub key: SekPek,
    /// RAND of its LTKMs, the same for every terminal (profile P-3).
    pub rand: [u8; 16],
    /// CSB ID of its LTKMs, the same for every terminal (profile P-2, P-11.7).
    pub csb_id: u32,
}

/// How a delivery's LTKM is shaped beyond its [`crate::issue::LtkmKind`]: the P-4 extension the
/// terminal gets for the key and, for a streaming key, its SRTP policy (`profile: P-2, P-4,
/// P-11.1`). Stored with the delivery ([`BsmStore::enqueue_pushes`]) because the LTKM must be the
/// same at every attempt and rebuilt byte for byte when its verification message comes back
/// (`profile: P-11.3`). The default (no extension, download form) is what
/// [`BsmStore::enqueue_deliveries`] stores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LtkmForm {
    /// The OMA BCAST LTKM extension, `None` for none.
    pub ext: Option<LtkmExt>,
    /// The SRTP-ID map entry and SP payload of a streaming key, `None` for a download key.
    pub streaming: Option<StreamingPolicy>,
}

/// A sent LTKM found by its (B-TID, TS), with its delivery: what verification intake needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMatch {
    /// The delivery's store id.
    pub id: DeliveryId,
    /// The delivery with every sent attempt.
    pub row: DeliveryRow,
    /// The LTKM with this B-TID and TS.
    pub sent: SentLtkm,
    /// How its LTKMs are shaped.
    pub form: LtkmForm,
}

/// How a terminal registered, which decides where its LTKMs are pushed (profile P-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// The 3GPP MBMS key-management interface (pushes to UDP 2269).
    Mbms,
    /// The OMA BCAST service provisioning interface (pushes to UDP 4359).
    OmaBcast,
}

impl Interface {
    /// `"mbms"` or `"oma-bcast"` (the stored form).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Mbms => "mbms",
            Interface::OmaBcast => "oma-bcast",
        }
    }

    /// The stored form back.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "mbms" => Some(Interface::Mbms),
            "oma-bcast" => Some(Interface::OmaBcast),
            _ => None,
        }
    }
}

/// What the BSM knows of a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminal {
    /// The subscriber's IMPI.
    pub id: TerminalId,
    /// The B-TID of its last authenticated request (its SMK's name).
    pub btid: Option<String>,
    /// Registered for pushes: the source address of its last registration and its interface.
    pub registration: Option<Registration>,
    /// When it was last heard from (Unix seconds).
    pub last_seen: u64,
    /// The BCAST_Client_ID of its last Registration that carried one (seed §6.9.2).
    pub bcast_client_id: Option<BcastClientId>,
}

/// \[chosen\] Seconds within which an unchanged `last_seen` or registration is not written again
/// ([`BsmStore::touch_terminal`], [`BsmStore::register`]).
pub const UNCHANGED_WRITE_GRANULARITY: u64 = 60;

/// A terminal's registration for LTKM pushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Source address of the last registration (`ip:port`, the port being the request's; pushes
    /// go to the interface's port at that address).
    pub address: String,
    /// The interface it registered through.
    pub interface: Interface,
    /// When (Unix seconds).
    pub at: u64,
}

/// Why a campaign runs (module [`crate::campaign`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignKind {
    /// A new key: every entitled registered terminal gets it.
    Deliver,
    /// The key's end moved from `old_until` to its current end: every entitled registered
    /// terminal whose window changes gets the new window.
    UpdateValidity {
        /// The end before the change (Unix seconds).
        old_until: u64,
    },
}

/// A key campaign as stored: which key, why, how far it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    /// Its store id.
    pub id: u64,
    /// The key with its current window.
    pub key: KeyEntry,
    /// The key's Key Domain ID.
    pub key_domain: KeyDomainId,
    /// Why it runs.
    pub kind: CampaignKind,
    /// When it was made (Unix seconds).
    pub created_at: u64,
    /// Due times are spread over `[created_at, created_at + spread)`.
    pub spread: Duration,
    /// The last terminal (IMPI) whose deliveries are stored; `None` before the first page.
    pub cursor: Option<String>,
    /// Terminals looked at so far.
    pub terminals: u64,
    /// Deliveries stored so far.
    pub queued: u64,
    /// When it ended (Unix seconds); `None` while it runs.
    pub finished_at: Option<u64>,
}

/// One terminal a campaign looks at: registered, with its purchases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignTarget {
    /// The terminal.
    pub terminal: TerminalId,
    /// Where its pushes go.
    pub registration: Registration,
    /// Its purchases (every item, ended ones too).
    pub purchases: Vec<Purchase>,
    /// The highest delivery version stored for it and the campaign's key, `None` when none.
    pub latest_version: Option<u32>,
}

/// One page of a campaign's terminals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignPage {
    /// The registered terminals of the page with purchases, in IMPI order.
    pub targets: Vec<CampaignTarget>,
    /// Terminals with purchases the page looked at (registered or not).
    pub looked_at: u64,
    /// The last IMPI the page covers (the cursor to store with its deliveries); `None` when
    /// there was nothing after the cursor: the campaign is done.
    pub last: Option<String>,
}

/// One attempt for [`BsmStore::record_sends`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRecord {
    /// The delivery, claimed by the worker.
    pub key: DeliveryKey,
    /// Which attempt.
    pub attempt: Attempt,
    /// The B-TID whose SMK seals the LTKM (a TS is reserved under it); `None` when nothing can be
    /// sent (as [`BsmStore::record_unsent`]).
    pub btid: Option<String>,
    /// When the delivery acts next.
    pub next_due: Time,
}

/// How the deliveries of one key stand (the admin API's view of a campaign's outcome).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliverySummary {
    /// Delivery rows of the key (every version).
    pub rows: u64,
    /// Distinct terminals among them.
    pub terminals: u64,
    /// The highest version.
    pub max_version: u32,
    /// Rows per state: pending, sent, pull-solicited, acknowledged, failed.
    pub pending: u64,
    /// Sent, waiting for a verification message.
    pub sent: u64,
    /// Solicited pull triggered.
    pub pull_solicited: u64,
    /// Acknowledged.
    pub acknowledged: u64,
    /// Failed (given up, stopped, superseded).
    pub failed: u64,
}

/// A subscriber for [`BsmStore::import_terminals`]: the terminal, its registration and purchases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalImport {
    /// The subscriber's IMPI.
    pub id: TerminalId,
    /// Its registration for pushes, if any.
    pub registration: Option<Registration>,
    /// Its purchases (each of this terminal).
    pub purchases: Vec<Purchase>,
}

impl Registration {
    /// Whether storing `self` over `stored` would change nothing a client can observe: same
    /// address and interface, times within [`UNCHANGED_WRITE_GRANULARITY`].
    #[must_use]
    pub fn renews(&self, stored: &Registration) -> bool {
        self.address == stored.address
            && self.interface == stored.interface
            && self.at.abs_diff(stored.at) < UNCHANGED_WRITE_GRANULARITY
    }
}

/// The BSM's storage. Implementations are shared handles; every write is committed before the
/// returned future completes.
pub trait BsmStore {
    /// Adds or replaces a service.
    ///
    /// # Errors
    /// [`StoreError`].
    fn put_service(&self, service: &Service) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every service, by ID.
    ///
    /// # Errors
    /// [`StoreError`].
    fn services(&self) -> impl Future<Output = Result<Vec<Service>, StoreError>> + Send;

    /// Adds or replaces a program.
    ///
    /// # Errors
    /// [`StoreError::Missing`] when its service does not exist; other [`StoreError`]s.
    fn put_program(&self, program: &Program) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every program, by ID.
    ///
    /// # Errors
    /// [`StoreError`].
    fn programs(&self) -> impl Future<Output = Result<Vec<Program>, StoreError>> + Send;

    /// Adds or replaces a purchase item with its list of services.
    ///
    /// # Errors
    /// [`StoreError::Missing`] when a service does not exist; other [`StoreError`]s.
    fn put_purchase_item(&self, item: &PurchaseItem) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every purchase item, by GlobalPurchaseItemID.
    ///
    /// # Errors
    /// [`StoreError`].
    fn purchase_items(&self) -> impl Future<Output = Result<Vec<PurchaseItem>, StoreError>> + Send;

    /// Adds or replaces an offer.
    ///
    /// # Errors
    /// [`StoreError::Missing`] when its purchase item (or program) does not exist.
    fn put_purchase_data(&self, data: &PurchaseData) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every offer, by ID.
    ///
    /// # Errors
    /// [`StoreError`].
    fn purchase_data(&self) -> impl Future<Output = Result<Vec<PurchaseData>, StoreError>> + Send;

    /// Adds a key to its group: after the group's latest key, without overlap, never Key Number 0.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when it overlaps or repeats a key of its group.
    fn add_key(&self, key: &StoredKey) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every key of a group, oldest first, without the key bytes (history included).
    ///
    /// # Errors
    /// [`StoreError`].
    fn key_entries(&self, key_group: u16) -> impl Future<Output = Result<Vec<KeyEntry>, StoreError>> + Send;

    /// The key of this ID whose window contains `at`, or else the latest with this ID (numbers
    /// repeat after 65 535 keys), with its bytes.
    ///
    /// # Errors
    /// [`StoreError`].
    fn key(&self, id: SekPekId, at: u64) -> impl Future<Output = Result<Option<StoredKey>, StoreError>> + Send;

    /// Keys of a group whose windows overlap `window` (history, for recordings), with their bytes.
    ///
    /// # Errors
    /// [`StoreError`].
    fn keys_covering(
        &self,
        key_group: u16,
        window: Window,
    ) -> impl Future<Output = Result<Vec<StoredKey>, StoreError>> + Send;

    /// Marks the key revoked at `at` (it stays in the history); `Ok(false)` when there is no such
    /// live key.
    ///
    /// # Errors
    /// [`StoreError`].
    fn revoke_key(&self, id: SekPekId, at: u64) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records that a terminal was heard from at `now` with this B-TID (creating it on first
    /// contact) and returns it.
    ///
    /// \[chosen\] `last_seen` has a granularity of 60 s: when the stored B-TID is this one and the
    /// stored `last_seen` is less than 60 s away from `now`, nothing is written (no write lock, no
    /// commit) and the stored terminal is returned as it is. A new B-TID is always written.
    ///
    /// # Errors
    /// [`StoreError`].
    fn touch_terminal(
        &self,
        id: &TerminalId,
        btid: &str,
        now: u64,
    ) -> impl Future<Output = Result<Terminal, StoreError>> + Send;

    /// The terminal, if known.
    ///
    /// # Errors
    /// [`StoreError`].
    fn terminal(&self, id: &TerminalId) -> impl Future<Output = Result<Option<Terminal>, StoreError>> + Send;

    /// Registers a terminal for pushes (or moves its registration); `Ok(false)` when unknown.
    ///
    /// \[chosen\] The registration time has a granularity of 60 s: when the stored registration
    /// has the same address and interface and its time is less than 60 s away from `at`, nothing
    /// is written and `Ok(true)` is returned. A new address or interface is always written.
    ///
    /// # Errors
    /// [`StoreError`].
    fn register(
        &self,
        id: &TerminalId,
        registration: &Registration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records the terminal's BCAST_Client_ID (replacing an earlier one); `Ok(false)` when the
    /// terminal is unknown.
    ///
    /// # Errors
    /// [`StoreError`].
    fn set_bcast_client_id(
        &self,
        id: &TerminalId,
        client_id: &BcastClientId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Ends a terminal's registration; `Ok(false)` when it had none.
    ///
    /// # Errors
    /// [`StoreError`].
    fn deregister(&self, id: &TerminalId) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records a purchase, replacing the terminal's earlier purchase of the same item.
    ///
    /// # Errors
    /// [`StoreError::Missing`] when the terminal, item or offer does not exist.
    fn put_purchase(&self, purchase: &Purchase) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A terminal's purchases, by item.
    ///
    /// # Errors
    /// [`StoreError`].
    fn purchases(&self, terminal: &TerminalId) -> impl Future<Output = Result<Vec<Purchase>, StoreError>> + Send;

    /// Removes a terminal's purchase of `item` and returns it (unsubscribe).
    ///
    /// # Errors
    /// [`StoreError`].
    fn remove_purchase(
        &self,
        terminal: &TerminalId,
        item: &str,
    ) -> impl Future<Output = Result<Option<Purchase>, StoreError>> + Send;

    /// Removes the terminal's purchases that ended at or before `now`; returns how many.
    ///
    /// # Errors
    /// [`StoreError`].
    fn purge_purchases(&self, terminal: &TerminalId, now: u64) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Reserves the next `n` LTKM timestamps of `terminal` under the SMK named `smk` (its B-TID)
    /// and returns the first (profile P-3: at least +1 per LTKM sent, retransmissions too;
    /// restarting at 1 when the SMK changes). Durable before it returns, so a timestamp is never
    /// used twice, even across a crash. The `n` values are consecutive and above every value
    /// reserved before; a store may skip values between reservations (\[chosen\] the SQLite
    /// store hands them out of durable blocks, whose unused rest a restart or a `record_send`
    /// skips: the card only refuses a TS not above the last).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the 32-bit counter would overflow (the terminal must
    /// bootstrap again); other [`StoreError`]s.
    fn reserve_ltkm_ts(
        &self,
        terminal: &TerminalId,
        smk: &str,
        n: u32,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Stores new deliveries, all or nothing, in one transaction (multi-row statements, so a
    /// rollover of a million terminals is one call). Rows are stored as given: state, due time and
    /// sent attempts (a fresh delivery is [`DeliveryState::Pending`] with its due time, no
    /// attempts; a row taken from a running [`crate::delivery::Scheduler`] keeps its progress).
    /// Returns how many were stored. Store ids are assigned here; read them back with
    /// [`BsmStore::delivery`], [`BsmStore::open_deliveries`] or [`BsmStore::claim_due`].
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when a (terminal, Key Domain ID, SEK/PEK ID, version) already
    /// exists or appears twice, [`StoreError::Invalid`] for a live row without a due time: in
    /// both cases nothing is stored. Other [`StoreError`]s.
    fn enqueue_deliveries(&self, rows: &[DeliveryRow]) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Claims up to `limit` deliveries that are due (live, due time ≤ `now`) and not under a live
    /// lease, for `worker` until `now + lease`, earliest due first; returns them with their sent
    /// attempts. Atomic: two concurrent claimers never get the same row. A lease that ran out
    /// (a crashed or stalled worker) no longer protects its rows.
    ///
    /// # Errors
    /// [`StoreError`].
    fn claim_due(
        &self,
        worker: &str,
        now: Time,
        lease: Duration,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(DeliveryId, DeliveryRow)>, StoreError>> + Send;

    /// Records, in one transaction, that `worker` is about to send `attempt` of a delivery it
    /// holds: reserves the terminal's next LTKM TS under the SMK named by `btid` (as
    /// [`BsmStore::reserve_ltkm_ts`]), appends the sent attempt (pushes only; a solicited pull
    /// expects no verification message), moves the state to `Sent { attempt }` or
    /// `PullSolicited` at `now`, sets the next due time (when to retry or give up) and ends the
    /// claim. Returns the TS for the LTKM: durable before the LTKM is built, so the caller sends
    /// only after this returns (profile P-3: a TS is never used twice).
    ///
    /// # Errors
    /// [`StoreError::NotClaimed`] when the worker's lease ran out, another worker holds the row,
    /// or it is final; [`StoreError::Invalid`] for a push number other than the next;
    /// [`StoreError::Missing`] for an unknown delivery or terminal; [`StoreError::Conflict`] when
    /// the TS counter is exhausted. Nothing is changed then.
    fn record_send(
        &self,
        worker: &str,
        key: &DeliveryKey,
        attempt: Attempt,
        btid: &str,
        now: Time,
        next_due: Time,
    ) -> impl Future<Output = Result<LtkmTs, StoreError>> + Send;

    /// Records, in one transaction, that `worker` counts `attempt` of a delivery it holds although
    /// nothing could be sent (no B-TID or no keys for the terminal): moves the state to
    /// `Sent { attempt }` or `PullSolicited` at `now` with no sent LTKM and no TS, sets the next
    /// due time and ends the claim, exactly as [`BsmStore::record_send`] does for a send. The
    /// retry policy so runs its course for a terminal that cannot be reached.
    ///
    /// # Errors
    /// As [`BsmStore::record_send`] (no TS is involved).
    fn record_unsent(
        &self,
        worker: &str,
        key: &DeliveryKey,
        attempt: Attempt,
        now: Time,
        next_due: Time,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// [`BsmStore::record_send`] and [`BsmStore::record_unsent`] for a whole round in one
    /// transaction (one commit, so one fsync, for up to a round of LTKMs). Each attempt succeeds
    /// or fails on its own (a failed one changes nothing); the answers are in `sends` order. The
    /// caller sends only after this returns: every TS in the answer is durable.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the transaction fails as a whole (nothing is recorded then);
    /// per attempt, the errors of [`BsmStore::record_send`].
    fn record_sends(
        &self,
        worker: &str,
        sends: &[SendRecord],
        now: Time,
    ) -> impl Future<Output = Result<Vec<Result<Option<LtkmTs>, StoreError>>, StoreError>> + Send;

    /// Records an outcome that needs no TS, from any process and without a claim:
    /// - `Acknowledged` (a verified verification message, or the terminal pulled the key): from
    ///   any other state, a given-up one included; repeating it changes nothing (the first time
    ///   stays);
    /// - `Failed` (give-up): from a live state only (an acknowledgement is never taken back);
    /// - a live state with its `due` time (e.g. a retry rescheduled): from a live state only;
    ///   a lease in progress is kept.
    ///
    /// A final state ends the lease and drops the due time. Returns whether the row changed.
    ///
    /// # Errors
    /// [`StoreError::Missing`] for an unknown delivery; [`StoreError::Invalid`] for a live state
    /// without `due`.
    fn record_outcome(
        &self,
        key: &DeliveryKey,
        state: DeliveryState,
        due: Option<Time>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Every live delivery with its sent attempts, by id: what [`crate::delivery::Scheduler::restore`]
    /// takes when one process runs the scheduler in memory. Leases are not shown.
    ///
    /// # Errors
    /// [`StoreError`].
    fn open_deliveries(&self) -> impl Future<Output = Result<Vec<(DeliveryId, DeliveryRow)>, StoreError>> + Send;

    /// One delivery (live or final) with its sent attempts.
    ///
    /// # Errors
    /// [`StoreError`].
    fn delivery(
        &self,
        key: &DeliveryKey,
    ) -> impl Future<Output = Result<Option<(DeliveryId, DeliveryRow)>, StoreError>> + Send;

    /// [`BsmStore::enqueue_deliveries`] with each row's [`LtkmForm`] (the push path: the worker
    /// reads the form back with [`BsmStore::delivery_form`]). All or nothing.
    ///
    /// # Errors
    /// As [`BsmStore::enqueue_deliveries`]; [`StoreError::Invalid`] for an SRTP parameter longer
    /// than 255 octets.
    fn enqueue_pushes(
        &self,
        pushes: &[(DeliveryRow, LtkmForm)],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The [`LtkmForm`] a delivery was queued with; `None` for an unknown delivery.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a stored form that does not decode; other [`StoreError`]s.
    fn delivery_form(&self, key: &DeliveryKey) -> impl Future<Output = Result<Option<LtkmForm>, StoreError>> + Send;

    /// The highest delivery version queued (live or final) for this terminal and key, `None` when
    /// none: the next LTKM for the key gets the next version.
    ///
    /// # Errors
    /// [`StoreError`].
    fn latest_delivery_version(
        &self,
        terminal: &str,
        key_domain_id: KeyDomainId,
        sek_pek_id: SekPekId,
    ) -> impl Future<Output = Result<Option<u32>, StoreError>> + Send;

    /// A terminal's live deliveries with their sent attempts, by id.
    ///
    /// # Errors
    /// [`StoreError`].
    fn live_deliveries_of(
        &self,
        terminal: &str,
    ) -> impl Future<Output = Result<Vec<(DeliveryId, DeliveryRow)>, StoreError>> + Send;

    /// The LTKM that was sent sealed for `btid` with `ts` (`profile: P-5`: what a verification
    /// message names), with its delivery and form; `None` when no LTKM was sent so. Reads only.
    ///
    /// # Errors
    /// [`StoreError`].
    fn find_sent(&self, btid: &str, ts: u32) -> impl Future<Output = Result<Option<SentMatch>, StoreError>> + Send;

    /// In one transaction: marks the sent LTKM (B-TID, TS) answered and its delivery
    /// `Acknowledged { at: now }` (from any state, as [`BsmStore::record_outcome`] does). Call it
    /// only after the verification message's MAC is checked. Returns what the acknowledgement did,
    /// or `None` when this LTKM was already answered (a replay: nothing changes).
    ///
    /// # Errors
    /// [`StoreError::Missing`] when no LTKM was sent with this B-TID and TS; other [`StoreError`]s.
    fn acknowledge_sent(
        &self,
        btid: &str,
        ts: u32,
        now: Time,
    ) -> impl Future<Output = Result<Option<AckOutcome>, StoreError>> + Send;

    /// Adds a key as [`BsmStore::add_key`] does and, in the same transaction, the
    /// [`CampaignKind::Deliver`] campaign that pushes it (module [`crate::campaign`]): either both
    /// exist afterwards or neither. Returns the campaign's id.
    ///
    /// # Errors
    /// As [`BsmStore::add_key`].
    fn add_key_campaign(
        &self,
        key: &StoredKey,
        spread: Duration,
        now: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Moves the end of the key of group `id.key_group` starting at `from` to `until` (extending
    /// or shortening its life) and, in the same transaction, makes the
    /// [`CampaignKind::UpdateValidity`] campaign that pushes the new window. Returns the
    /// campaign's id.
    ///
    /// # Errors
    /// [`StoreError::Missing`] when there is no such key (or its number differs);
    /// [`StoreError::Conflict`] when `until` is not after the key's start, reaches into the next
    /// key of its group, or the key is revoked; other [`StoreError`]s.
    fn update_key_until(
        &self,
        id: SekPekId,
        from: u64,
        until: u64,
        spread: Duration,
        now: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Campaigns, newest first: only those still running when `open_only`.
    ///
    /// # Errors
    /// [`StoreError`].
    fn campaigns(&self, open_only: bool) -> impl Future<Output = Result<Vec<Campaign>, StoreError>> + Send;

    /// The next page of a campaign: the terminals with purchases after `after` (IMPI order), at
    /// most `limit` of them, and of those the registered ones with their purchases and their
    /// latest delivery version of the campaign's key. Reads only.
    ///
    /// # Errors
    /// [`StoreError::Missing`] for an unknown campaign; other [`StoreError`]s.
    fn campaign_page(
        &self,
        campaign: &Campaign,
        after: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<CampaignPage, StoreError>> + Send;

    /// In one transaction: stores a page's deliveries (a row whose (terminal, key, version)
    /// exists already is skipped: the terminal got the key some other way meanwhile), moves the
    /// campaign's cursor from `after` to `last`, adds `looked_at` and the stored rows to its
    /// counts, and ends it at `finished_at` when given. Returns the rows stored.
    ///
    /// # Errors
    /// [`StoreError::NotClaimed`] when the cursor is no longer `after` (another process advanced
    /// or ended the campaign): nothing is stored; [`StoreError::Invalid`] for a row the schema
    /// refuses; other [`StoreError`]s.
    #[allow(clippy::too_many_arguments)]
    fn advance_campaign(
        &self,
        campaign: u64,
        after: Option<&str>,
        last: Option<&str>,
        rows: &[(DeliveryRow, LtkmForm)],
        looked_at: u64,
        finished_at: Option<u64>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Adds (or replaces) terminals with their registrations and purchases in one transaction of
    /// multi-row statements (bulk import); all or nothing. A terminal imported again keeps its
    /// B-TID and LTKM counter; its registration and its purchases of the imported items are
    /// replaced. Returns how many terminals were stored.
    ///
    /// # Errors
    /// [`StoreError::Missing`] when a purchase names an unknown item, offer or program;
    /// [`StoreError::Invalid`] when a purchase belongs to another terminal; other [`StoreError`]s.
    fn import_terminals(&self, terminals: &[TerminalImport]) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// How many terminals have purchases (what a campaign walks).
    ///
    /// # Errors
    /// [`StoreError`].
    fn subscribers(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// How the deliveries of the key(s) with this ID stand.
    ///
    /// # Errors
    /// [`StoreError`].
    fn delivery_summary(&self, id: SekPekId) -> impl Future<Output = Result<DeliverySummary, StoreError>> + Send;
}
