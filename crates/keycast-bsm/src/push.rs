//! The LTKM push service (issue 5; `profile: P-3, P-5, P-8`): the thin async shell that turns
//! stored delivery rows into UDP datagrams and verification messages into acknowledgements.
//!
//! Every timing decision is the sans-IO scheduler's ([`SchedulerConfig::step`],
//! [`SchedulerConfig::next_due`], [`RateLimiter`]); every durable decision is the store's
//! ([`BsmStore::claim_due`], [`BsmStore::record_sends`], [`BsmStore::acknowledge_sent`]). The worker
//! only moves bytes between them, the key source and one UDP socket, so several workers (in one
//! process or many, each with its own id) can share one database.
//!
//! # One round ([`PushWorker::run_once`])
//! 1. Take as many rows as the rate limit has tokens for (at most the batch size) with
//!    [`BsmStore::claim_due`], under a lease.
//! 2. For each, [`SchedulerConfig::step`] says what is due:
//!    - a push or the solicited-pull trigger: everything the LTKM needs besides its TS is resolved
//!      first — the terminal's current B-TID ([`BsmStore::terminal`]), its SMK ([`KeySource`]),
//!      the stored key and the delivery's form;
//!    - giving up: [`BsmStore::record_outcome`] with `Failed`.
//! 3. [`BsmStore::record_sends`] records every attempt of the round in one transaction (one
//!    commit): it reserves each LTKM's TS and moves each row's state and next due time **before**
//!    any LTKM is built with its TS (V = 1 for a push, [`crate::issue::solicited_pull_ltkm`] for
//!    the trigger) and sent to the terminal's registered address on the port of its interface
//!    ([`SchedulerConfig::port`]).
//! 4. A row whose claim was lost meanwhile is refused by the store and sends nothing.
//!
//! # Intake ([`PushWorker::handle_datagram`])
//! A datagram on the push socket is taken as a verification message (`profile: P-5`): parsed,
//! matched by (B-TID, TS) with [`BsmStore::find_sent`], checked by rebuilding the LTKM from the
//! stored key, the delivery's [`LtkmForm`] and the SMK of that B-TID
//! ([`crate::verification::check`]), and only then acknowledged ([`BsmStore::acknowledge_sent`]).
//! Malformed, unmatched, forged and replayed datagrams are counted ([`PushStats`]) and logged
//! without key material; they change nothing.
//!
//! # Keycast's choices
//! - \[chosen\] **No keys, no push, the attempt still counts**: a terminal without a B-TID, or whose
//!   B-TID the BSF no longer knows (expired, replaced), cannot be sealed for. The row moves on as if
//!   the attempt had been sent ([`BsmStore::record_unsent`]: `Sent { attempt }` or
//!   `PullSolicited`, next due from the retry policy, claim ended) without a TS or a datagram, so it ends given up per the policy unless the terminal
//!   comes back (a registration queues fresh deliveries, `crate::http::intents`).
//! - \[chosen\] **Address**: the terminal's current registration (`profile: P-8`: the source address
//!   of its last registration, and its interface decides the port); the row's own address only for
//!   a terminal with no registration (an invalidation after an unsubscribe without one).
//! - \[chosen\] A key that is gone from the store, or an LTKM that cannot be built from it, ends
//!   the delivery `Failed { Abandoned }`: no retry can fix stored data.
//! - \[chosen\] **Rate limit per process**: one [`RateLimiter`] per worker; a round claims no more
//!   rows than it has tokens, so a claimed row is never left waiting for a token under its lease.
//! - \[chosen\] **Polling**: the database is shared, so a worker cannot know the next due time of
//!   rows other processes queue; it polls every [`PushConfig::idle_poll`] when a round found
//!   nothing, and at once when a round was full.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::delivery::{
    AckOutcome, Attempt, DeliveryError, DeliveryKey, DeliveryRow, DeliveryState, FailReason, PushAddress, RateLimiter,
    RegistrationInterface, SchedulerConfig, Step, Time,
};
use crate::domain::TerminalId;
use crate::issue::{IssueError, LtkmTs, SekPekRecord, TerminalKeys, build_ltkm, solicited_pull_ltkm};
use crate::keys::KeySource;
use crate::rng::RandomSource;
use crate::service::PushIntent;
use crate::store::{BsmStore, Interface, LtkmForm, SendRecord, StoreError, StoredKey, Terminal};
use crate::verification::{self, VerificationError};

/// Largest datagram read: a verification message is about a hundred octets; anything longer is
/// truncated by the socket and then refused as malformed.
const MAX_DATAGRAM: usize = 2048;

/// How a push worker behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// This worker's name in the store's leases; unique among the workers sharing the database
    /// (e.g. host and PID; a restarted process takes a new one).
    pub worker: String,
    /// The BSM FQDN: IDi of every LTKM (`profile: P-3`).
    pub bsm_fqdn: String,
    /// Timing: retries, backoff, jitter, rate limit, ports.
    pub scheduler: SchedulerConfig,
    /// How long a claim protects a row from other workers.
    pub lease: Duration,
    /// Rows claimed per round at most.
    pub batch: u32,
    /// Wait between rounds that found nothing to do.
    pub idle_poll: Duration,
}

impl PushConfig {
    /// \[chosen\] Defaults: the scheduler's defaults, a 60 s lease, 256 rows a round, a round every
    /// second when idle.
    #[must_use]
    pub fn new(worker: impl Into<String>, bsm_fqdn: impl Into<String>) -> Self {
        Self {
            worker: worker.into(),
            bsm_fqdn: bsm_fqdn.into(),
            scheduler: SchedulerConfig::default(),
            lease: Duration::from_secs(60),
            batch: 256,
            idle_poll: Duration::from_secs(1),
        }
    }
}

/// Why a push worker could not start or run a round.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The scheduler configuration cannot work.
    #[error(transparent)]
    Config(#[from] DeliveryError),
    /// The store failed (claiming rows).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The socket failed.
    #[error("push socket: {0}")]
    Io(#[from] io::Error),
}

/// The operating system's random source (`getrandom`), for the RAND and CSB ID of solicited-pull
/// triggers and for jitter.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        if getrandom::fill(buf).is_err() {
            // RAND and CSB ID travel in the clear and only have to differ between LTKMs; the
            // clock's nanoseconds still make them differ, and jitter only spreads load.
            tracing::error!("the operating system's random source failed; falling back to the clock");
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let mut fallback = crate::rng::SeededRandom::new(u64::try_from(nanos & u128::from(u64::MAX)).unwrap_or(0));
            fallback.fill(buf);
        }
    }
}

/// What a round did ([`PushWorker::run_once`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Rows claimed.
    pub claimed: u32,
    /// LTKM pushes sent.
    pub pushed: u32,
    /// Solicited-pull triggers sent.
    pub pulls: u32,
    /// Deliveries given up.
    pub gave_up: u32,
    /// Attempts counted without a datagram (no B-TID or no keys for it, or the send failed).
    pub not_sent: u32,
    /// Rows another worker took over before this one recorded its send (nothing sent).
    pub lost: u32,
    /// Deliveries abandoned (key gone, LTKM cannot be built).
    pub abandoned: u32,
    /// Rows left to their lease after a store error.
    pub errors: u32,
    /// The rate limit bounded the round (no token, or fewer than the batch): when it has the next
    /// token.
    pub throttled_until: Option<Time>,
}

/// What one datagram on the push socket did ([`PushWorker::handle_datagram`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intake {
    /// A verified verification message acknowledged this delivery.
    Acknowledged {
        /// The delivery.
        key: DeliveryKey,
        /// What the acknowledgement did.
        outcome: AckOutcome,
    },
    /// Refused; nothing changed.
    Refused(VerificationError),
    /// The store failed; nothing changed.
    StoreFailed(StoreError),
}

/// Counters of the push worker (also exported as `keycast_bsm_push_total{event}` metrics).
#[derive(Debug, Default)]
pub struct PushStats {
    pushed: AtomicU64,
    pulls: AtomicU64,
    gave_up: AtomicU64,
    not_sent: AtomicU64,
    acknowledged: AtomicU64,
    malformed: AtomicU64,
    unmatched: AtomicU64,
    forged: AtomicU64,
    replayed: AtomicU64,
    other_refusals: AtomicU64,
}

/// A snapshot of [`PushStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushCounts {
    /// LTKM pushes sent.
    pub pushed: u64,
    /// Solicited-pull triggers sent.
    pub pulls: u64,
    /// Deliveries given up.
    pub gave_up: u64,
    /// Attempts counted without a datagram.
    pub not_sent: u64,
    /// Verification messages accepted.
    pub acknowledged: u64,
    /// Datagrams that are no verification message.
    pub malformed: u64,
    /// Verification messages naming no LTKM the BSM sent.
    pub unmatched: u64,
    /// Verification messages whose MAC failed (or whose CSB ID is not the key's).
    pub forged: u64,
    /// Verification messages for an LTKM already answered.
    pub replayed: u64,
    /// Other refusals (keys unavailable, store failure).
    pub other_refusals: u64,
}

impl PushStats {
    fn bump(&self, counter: &AtomicU64, event: &'static str) {
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("keycast_bsm_push_total", "event" => event).increment(1);
    }

    /// The counters now.
    #[must_use]
    pub fn snapshot(&self) -> PushCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PushCounts {
            pushed: get(&self.pushed),
            pulls: get(&self.pulls),
            gave_up: get(&self.gave_up),
            not_sent: get(&self.not_sent),
            acknowledged: get(&self.acknowledged),
            malformed: get(&self.malformed),
            unmatched: get(&self.unmatched),
            forged: get(&self.forged),
            replayed: get(&self.replayed),
            other_refusals: get(&self.other_refusals),
        }
    }
}

/// The clock of the push loop.
pub type PushClock = Arc<dyn Fn() -> Time + Send + Sync>;

/// The system clock as a [`Time`].
#[must_use]
pub fn system_push_clock() -> PushClock {
    Arc::new(|| {
        let us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
        Time::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
    })
}

/// What the worker mutates between awaits (never held across one).
struct Shared<R> {
    limiter: Option<RateLimiter>,
    rng: R,
}

/// One push worker: a store, a key source, a UDP socket and a worker id.
pub struct PushWorker<S, K, R> {
    store: S,
    keys: K,
    config: PushConfig,
    socket: UdpSocket,
    shared: Mutex<Shared<R>>,
    stats: PushStats,
}

impl<S, K, R> core::fmt::Debug for PushWorker<S, K, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PushWorker")
            .field("worker", &self.config.worker)
            .field("socket", &self.socket.local_addr().ok())
            .finish_non_exhaustive()
    }
}

/// What happened to one claimed row.
enum RowOutcome {
    Pushed,
    Pulled,
    GaveUp,
    NotSent,
    Lost,
    Abandoned,
    Error,
    Skipped,
}

impl RoundReport {
    fn count(&mut self, outcome: RowOutcome) {
        match outcome {
            RowOutcome::Pushed => self.pushed += 1,
            RowOutcome::Pulled => self.pulls += 1,
            RowOutcome::GaveUp => self.gave_up += 1,
            RowOutcome::NotSent => self.not_sent += 1,
            RowOutcome::Lost => self.lost += 1,
            RowOutcome::Abandoned => self.abandoned += 1,
            RowOutcome::Error => self.errors += 1,
            RowOutcome::Skipped => {}
        }
    }
}

/// A claimed row ready for its attempt: its step, its next due time, and — when the terminal
/// can be sealed for — what its datagram needs.
struct Prepared<'r> {
    row: &'r DeliveryRow,
    step: Step,
    next_due: Time,
    sealing: Option<Sealing>,
}

/// The stored keys read during one round, by ID (`None`: not stored).
#[derive(Default)]
struct RoundKeys(std::collections::HashMap<keycast_mikey::SekPekId, Option<StoredKey>>);

/// The terminal's keys, the key record of a push (`None` for the pull trigger) and the address.
struct Sealing {
    keys: TerminalKeys,
    issue: Option<SekPekRecord>,
    to: PushAddress,
}

/// The store's name of the datagram a step sends (a give-up sends none and never gets here).
fn attempt_of(step: Step) -> Attempt {
    match step {
        Step::Push(k) => Attempt::Push(k),
        Step::Pull | Step::GiveUp => Attempt::SolicitedPull,
    }
}

fn unix_secs(t: Time) -> u64 {
    t.as_micros() / 1_000_000
}

/// The push address now: the current registration, else the row's (module docs).
fn current_address(terminal: &Terminal, row: &DeliveryRow) -> PushAddress {
    if let Some(r) = &terminal.registration {
        let ip = r.address.parse::<SocketAddr>().map(|a| a.ip()).or_else(|_| r.address.parse::<IpAddr>());
        if let Ok(ip) = ip {
            let interface = match r.interface {
                Interface::Mbms => RegistrationInterface::Mbms,
                Interface::OmaBcast => RegistrationInterface::OmaBcast,
            };
            return PushAddress { ip, interface };
        }
    }
    row.delivery.to
}

/// Why no record: the key's window is past the first NTP era (no LTKM can carry it), or the record
/// breaks a profile rule.
#[derive(Debug, thiserror::Error)]
enum RecordError {
    #[error("the key's window is outside the first NTP era")]
    Era,
    #[error(transparent)]
    Issue(#[from] IssueError),
}

/// The issuer's record for a delivery: the stored key shaped by the delivery's form, exactly as the
/// provisioning logic shaped it when it queued the push.
fn record_of(row: &DeliveryRow, form: &LtkmForm, stored: &StoredKey) -> Result<SekPekRecord, RecordError> {
    let d = &row.delivery;
    let intent = PushIntent {
        terminal: TerminalId(d.key.terminal.clone()),
        key_domain_id: d.key.key_domain_id,
        sek_pek_id: d.key.sek_pek_id,
        kind: d.kind,
        ext: form.ext,
        streaming: form.streaming.clone(),
        to: d.to,
    };
    // Its only failure is a key window past the NTP era.
    let record = intent.record(stored).map_err(|_| RecordError::Era)?;
    record.validate()?;
    Ok(record)
}

impl<S, K, R> PushWorker<S, K, R>
where
    S: BsmStore + Sync,
    K: KeySource,
    R: RandomSource + Send,
{
    /// A worker sending (and receiving verification messages) on `socket`.
    ///
    /// # Errors
    /// [`PushError::Config`] for a scheduler configuration that cannot work.
    pub fn new(store: S, keys: K, config: PushConfig, socket: UdpSocket, rng: R) -> Result<Self, PushError> {
        config.scheduler.check()?;
        let limiter = config.scheduler.rate.map(RateLimiter::new);
        Ok(Self {
            store,
            keys,
            config,
            socket,
            shared: Mutex::new(Shared { limiter, rng }),
            stats: PushStats::default(),
        })
    }

    /// A worker on a new socket bound to `bind`.
    ///
    /// # Errors
    /// [`PushError::Io`] when the socket cannot be bound; as [`PushWorker::new`].
    pub async fn bind(store: S, keys: K, config: PushConfig, bind: SocketAddr, rng: R) -> Result<Self, PushError> {
        let socket = UdpSocket::bind(bind).await?;
        Self::new(store, keys, config, socket, rng)
    }

    fn shared(&self) -> MutexGuard<'_, Shared<R>> {
        // Every update of the limiter and the generator is complete before anything can panic.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The socket's local address (where terminals send verification messages).
    ///
    /// # Errors
    /// The socket's error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &PushConfig {
        &self.config
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> &PushStats {
        &self.stats
    }

    /// One round at `now`: claims due rows and pushes, pulls or gives up each (module docs).
    ///
    /// # Errors
    /// [`PushError::Store`] when the claim fails; failures of single rows are counted in the
    /// report and leave the row to its lease.
    pub async fn run_once(&self, now: Time) -> Result<RoundReport, PushError> {
        let mut report = RoundReport::default();
        let tokens = {
            let shared = self.shared();
            match &shared.limiter {
                Some(l) => {
                    let n = l.available(now, self.config.batch);
                    if n == 0 {
                        report.throttled_until = Some(l.next_token());
                    }
                    n
                }
                None => self.config.batch,
            }
        };
        if tokens == 0 {
            return Ok(report);
        }
        let rows = self.store.claim_due(&self.config.worker, now, self.config.lease, tokens).await?;
        report.claimed = u32::try_from(rows.len()).unwrap_or(u32::MAX);
        let mut prepared = Vec::with_capacity(rows.len());
        // The keys read this round: a campaign's rows share one, so it is read (and unwrapped) once.
        let mut round_keys = RoundKeys::default();
        for (_, row) in &rows {
            match self.prepare(row, now, &mut round_keys).await {
                Ok(p) => prepared.push(p),
                Err(outcome) => report.count(outcome),
            }
        }
        if !prepared.is_empty() {
            let sends: Vec<SendRecord> = prepared
                .iter()
                .map(|p| SendRecord {
                    key: p.row.delivery.key.clone(),
                    attempt: attempt_of(p.step),
                    btid: p.sealing.as_ref().map(|s| s.keys.btid.clone()),
                    next_due: p.next_due,
                })
                .collect();
            match self.store.record_sends(&self.config.worker, &sends, now).await {
                Ok(results) => {
                    for (p, result) in prepared.iter().zip(results) {
                        let outcome = self.finish(p, result, now).await;
                        report.count(outcome);
                    }
                }
                // Nothing was recorded: the rows wait for their lease and go again.
                Err(e) => {
                    for p in &prepared {
                        report.count(self.store_error(&p.row.delivery.key, &e));
                    }
                }
            }
        }
        if tokens < self.config.batch && report.claimed == tokens {
            // The rate limit, not the rows due, bounded this round: the loop comes back for the
            // rest when the next token is there.
            report.throttled_until = self.shared().limiter.as_ref().map(RateLimiter::next_token);
        }
        Ok(report)
    }

    /// Decides a claimed row's step and resolves what its datagram needs; `Err` with the outcome
    /// when the row ends here (given up, abandoned, skipped, a store error).
    async fn prepare<'r>(
        &self,
        row: &'r DeliveryRow,
        now: Time,
        round_keys: &mut RoundKeys,
    ) -> Result<Prepared<'r>, RowOutcome> {
        let key = &row.delivery.key;
        let Some(step) = self.config.scheduler.step(&row.state) else {
            // A final row is never due; nothing to do.
            return Err(RowOutcome::Skipped);
        };
        if step == Step::GiveUp {
            let failed = DeliveryState::Failed { at: now, reason: FailReason::NoAcknowledgement };
            return Err(match self.store.record_outcome(key, failed, None).await {
                Ok(_) => {
                    self.stats.bump(&self.stats.gave_up, "gave-up");
                    tracing::info!(terminal = %key.terminal, version = key.version, "LTKM delivery given up");
                    RowOutcome::GaveUp
                }
                Err(e) => self.store_error(key, &e),
            });
        }
        let (next_due, token) = {
            let mut shared = self.shared();
            let Shared { limiter, rng } = &mut *shared;
            let next_due = self.config.scheduler.next_due(step, now, rng);
            // Tokens were counted before the claim; a missing one would mean another round of this
            // worker ran meanwhile: the row then waits for its lease.
            let token = limiter.as_mut().is_none_or(|l| l.take(now));
            (next_due, token)
        };
        let (Some(next_due), true) = (next_due, token) else { return Err(RowOutcome::Error) };
        let terminal = match self.store.terminal(&TerminalId(key.terminal.clone())).await {
            Ok(t) => t,
            Err(e) => return Err(self.store_error(key, &e)),
        };
        let Some((terminal, btid)) = terminal.and_then(|t| t.btid.clone().map(|b| (t, b))) else {
            tracing::info!(terminal = %key.terminal, "no B-TID known for the terminal; push not sent");
            return Ok(Prepared { row, step, next_due, sealing: None });
        };
        let record = match self.keys.keys(&btid, unix_secs(now)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(terminal = %key.terminal, btid = %btid, error = %e, "no keys for the B-TID; push not sent");
                return Ok(Prepared { row, step, next_due, sealing: None });
            }
        };
        let keys = TerminalKeys { btid, smk: record.smk().clone(), bsm_fqdn: self.config.bsm_fqdn.clone() };
        // Everything the LTKM needs besides its TS is resolved before the TS is reserved, so a TS
        // is burnt only by a crash or a failed send.
        let issue = match step {
            Step::Push(_) => match self.push_record(row, now, round_keys).await {
                Ok(Some(record)) => Some(record),
                Ok(None) => return Err(RowOutcome::Skipped),
                Err(Err(e)) => return Err(self.store_error(key, &e)),
                Err(Ok(why)) => return Err(self.abandon(key, now, why).await),
            },
            Step::Pull | Step::GiveUp => None,
        };
        let to = current_address(&terminal, row);
        Ok(Prepared { row, step, next_due, sealing: Some(Sealing { keys, issue, to }) })
    }

    /// Builds and sends a prepared row's datagram once its attempt is recorded.
    async fn finish(&self, p: &Prepared<'_>, recorded: Result<Option<LtkmTs>, StoreError>, now: Time) -> RowOutcome {
        let key = &p.row.delivery.key;
        let ts = match (recorded, &p.sealing) {
            (Err(e), _) => return self.store_error(key, &e),
            (Ok(Some(ts)), Some(_)) => ts,
            (Ok(_), _) => {
                // Counted without a datagram (module docs).
                self.stats.bump(&self.stats.not_sent, "not-sent");
                return RowOutcome::NotSent;
            }
        };
        let Some(sealing) = &p.sealing else { return RowOutcome::Error };
        let bytes = match self.build(p.row, sealing.issue.as_ref(), &sealing.keys, &ts) {
            Ok(b) => b,
            Err(e) => return self.abandon(key, now, e.to_string()).await,
        };
        let target = SocketAddr::new(sealing.to.ip, self.config.scheduler.port(sealing.to.interface));
        match self.socket.send_to(&bytes, target).await {
            Ok(_) => {
                let pull = sealing.issue.is_none();
                tracing::debug!(terminal = %key.terminal, ts = ts.value(), %target, pull, "LTKM datagram sent");
                if pull {
                    self.stats.bump(&self.stats.pulls, "pull");
                    RowOutcome::Pulled
                } else {
                    self.stats.bump(&self.stats.pushed, "pushed");
                    RowOutcome::Pushed
                }
            }
            Err(e) => {
                // The attempt and its retry timer are recorded: the next attempt follows the policy.
                tracing::warn!(terminal = %key.terminal, %target, error = %e, "LTKM send failed");
                self.stats.bump(&self.stats.not_sent, "not-sent");
                RowOutcome::NotSent
            }
        }
    }

    fn store_error(&self, key: &DeliveryKey, e: &StoreError) -> RowOutcome {
        match e {
            StoreError::NotClaimed(_) => {
                tracing::debug!(terminal = %key.terminal, version = key.version, "claim lost; not sending");
                RowOutcome::Lost
            }
            e => {
                tracing::warn!(terminal = %key.terminal, version = key.version, error = %e, "delivery store error");
                RowOutcome::Error
            }
        }
    }

    async fn abandon(&self, key: &DeliveryKey, now: Time, why: String) -> RowOutcome {
        tracing::warn!(terminal = %key.terminal, version = key.version, reason = %why, "LTKM delivery abandoned");
        let failed = DeliveryState::Failed { at: now, reason: FailReason::Abandoned };
        match self.store.record_outcome(key, failed, None).await {
            Ok(_) => RowOutcome::Abandoned,
            Err(e) => self.store_error(key, &e),
        }
    }

    /// The record for a push: `Ok(None)` when the row vanished, `Err(Ok(reason))` to abandon,
    /// `Err(Err(store error))`.
    async fn push_record(
        &self,
        row: &DeliveryRow,
        now: Time,
        keys: &mut RoundKeys,
    ) -> Result<Option<SekPekRecord>, Result<String, StoreError>> {
        let key = &row.delivery.key;
        let Some(form) = self.store.delivery_form(key).await.map_err(Err)? else { return Ok(None) };
        let stored = match keys.0.entry(key.sek_pek_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(self.store.key(key.sek_pek_id, unix_secs(now)).await.map_err(Err)?)
            }
        };
        let Some(stored) = stored.as_ref() else {
            return Err(Ok("the key is no longer stored".to_owned()));
        };
        if stored.key_domain != key.key_domain_id {
            return Err(Ok("the stored key belongs to another Key Domain".to_owned()));
        }
        record_of(row, &form, stored).map(Some).map_err(|e| Ok(e.to_string()))
    }

    fn build(
        &self,
        row: &DeliveryRow,
        record: Option<&SekPekRecord>,
        keys: &TerminalKeys,
        ts: &LtkmTs,
    ) -> Result<Vec<u8>, IssueError> {
        let d = &row.delivery;
        match record {
            // `profile: P-3`: every pushed LTKM asks for a verification message (V = 1).
            Some(record) => build_ltkm(&d.kind, record, keys, ts, true),
            None => {
                let mut shared = self.shared();
                solicited_pull_ltkm(d.key.key_domain_id, d.key.sek_pek_id.key_group, keys, ts, &mut shared.rng)
            }
        }
    }

    /// Takes in one datagram received on the push socket as a verification message (module docs).
    /// Never panics; changes the store only for a verified, first answer to a sent LTKM.
    pub async fn handle_datagram(&self, bytes: &[u8], from: SocketAddr, now: Time) -> Intake {
        let intake = self.verify_and_acknowledge(bytes, now).await;
        match &intake {
            Intake::Acknowledged { key, outcome } => {
                self.stats.bump(&self.stats.acknowledged, "acknowledged");
                tracing::debug!(terminal = %key.terminal, version = key.version, ?outcome, %from, "delivery acknowledged");
            }
            Intake::Refused(e) => {
                let (counter, event) = match e {
                    VerificationError::Malformed(_) => (&self.stats.malformed, "malformed"),
                    VerificationError::Unmatched => (&self.stats.unmatched, "unmatched"),
                    VerificationError::Forged | VerificationError::CsbIdMismatch => (&self.stats.forged, "forged"),
                    VerificationError::Replayed { .. } => (&self.stats.replayed, "replayed"),
                    _ => (&self.stats.other_refusals, "refused"),
                };
                self.stats.bump(counter, event);
                // The error texts name no key material (they carry field names and codes only).
                tracing::info!(%from, len = bytes.len(), reason = %e, "datagram refused on the push socket");
            }
            Intake::StoreFailed(e) => {
                self.stats.bump(&self.stats.other_refusals, "refused");
                tracing::warn!(%from, error = %e, "verification intake: store failed");
            }
        }
        intake
    }

    async fn verify_and_acknowledge(&self, bytes: &[u8], now: Time) -> Intake {
        let claim = match verification::parse(bytes) {
            Ok(c) => c,
            Err(e) => return Intake::Refused(e),
        };
        let found = match self.store.find_sent(&claim.btid, claim.ts).await {
            Ok(Some(found)) => found,
            Ok(None) => return Intake::Refused(VerificationError::Unmatched),
            Err(e) => return Intake::StoreFailed(e),
        };
        let Ok(record) = self.keys.keys(&found.sent.btid, unix_secs(now)).await else {
            return Intake::Refused(VerificationError::KeysUnavailable);
        };
        let keys = TerminalKeys {
            btid: found.sent.btid.clone(),
            smk: record.smk().clone(),
            bsm_fqdn: self.config.bsm_fqdn.clone(),
        };
        let key = &found.row.delivery.key;
        // The key as it was when the LTKM left.
        let stored = match self.store.key(key.sek_pek_id, unix_secs(found.sent.at)).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return Intake::Refused(VerificationError::KeysUnavailable),
            Err(e) => return Intake::StoreFailed(e),
        };
        let record = match record_of(&found.row, &found.form, &stored) {
            Ok(r) => r,
            Err(RecordError::Issue(e)) => return Intake::Refused(VerificationError::Rebuild(e)),
            Err(RecordError::Era) => return Intake::Refused(VerificationError::KeysUnavailable),
        };
        if let Err(e) = verification::check(bytes, &found.row, &found.sent, &record, &keys) {
            return Intake::Refused(e);
        }
        match self.store.acknowledge_sent(&claim.btid, claim.ts, now).await {
            Ok(Some(outcome)) => Intake::Acknowledged { key: key.clone(), outcome },
            Ok(None) => Intake::Refused(VerificationError::Replayed { delivery: found.id }),
            Err(e) => Intake::StoreFailed(e),
        }
    }

    /// Waits for one datagram on the push socket and takes it in at `now` (tests; the loop of
    /// [`PushService`] does the same).
    ///
    /// # Errors
    /// The socket's error.
    pub async fn receive_once(&self, now: Time) -> io::Result<Intake> {
        let mut buf = [0u8; MAX_DATAGRAM];
        let (n, from) = self.socket.recv_from(&mut buf).await?;
        Ok(self.handle_datagram(&buf[..n], from, now).await)
    }
}

/// A running push worker: its loop on a tokio task, stopped gracefully through a watch channel.
pub struct PushService<S, K, R> {
    worker: Arc<PushWorker<S, K, R>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl<S, K, R> core::fmt::Debug for PushService<S, K, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PushService").field("worker", &self.worker).finish_non_exhaustive()
    }
}

impl<S, K, R> PushService<S, K, R>
where
    S: BsmStore + Send + Sync + 'static,
    K: KeySource + 'static,
    R: RandomSource + Send + 'static,
{
    /// Starts the loop: rounds at the clock's time (at once after a full round, else every
    /// [`PushConfig::idle_poll`], or when the rate limit has a token again) and intake of every
    /// datagram on the socket.
    #[must_use]
    pub fn spawn(worker: PushWorker<S, K, R>, clock: PushClock) -> Self {
        let worker = Arc::new(worker);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run_loop(worker.clone(), clock, stopped));
        Self { worker, stop, task }
    }

    /// The worker (counters, store, local address).
    #[must_use]
    pub fn worker(&self) -> &Arc<PushWorker<S, K, R>> {
        &self.worker
    }

    /// One round at `now`, outside the loop's schedule (tests, administration).
    ///
    /// # Errors
    /// As [`PushWorker::run_once`].
    pub async fn run_once(&self, now: Time) -> Result<RoundReport, PushError> {
        self.worker.run_once(now).await
    }

    /// Stops the loop after the round or datagram in progress and waits for it.
    pub async fn stop(self) {
        // A send error means the loop has already ended.
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "push loop ended abnormally");
        }
    }
}

async fn run_loop<S, K, R>(worker: Arc<PushWorker<S, K, R>>, clock: PushClock, mut stopped: watch::Receiver<bool>)
where
    S: BsmStore + Sync,
    K: KeySource,
    R: RandomSource + Send,
{
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut wake = tokio::time::Instant::now();
    loop {
        if *stopped.borrow() {
            break;
        }
        tokio::select! {
            biased;
            changed = stopped.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            received = worker.socket.recv_from(&mut buf) => match received {
                Ok((n, from)) => {
                    let _ = worker.handle_datagram(&buf[..n], from, clock()).await;
                }
                // ICMP errors of earlier sends surface here on some systems; the socket stays usable.
                Err(e) => tracing::debug!(error = %e, "push socket receive error"),
            },
            () = tokio::time::sleep_until(wake) => {
                let now = clock();
                let pause = match worker.run_once(now).await {
                    Ok(r) if r.claimed > 0 && r.claimed >= worker.config.batch => Duration::ZERO,
                    Ok(r) => r.throttled_until.map_or(worker.config.idle_poll, |t| t.since(now).min(worker.config.idle_poll)),
                    Err(e) => {
                        tracing::warn!(error = %e, "push round failed");
                        worker.config.idle_poll
                    }
                };
                wake = tokio::time::Instant::now() + pause;
            }
        }
    }
}
