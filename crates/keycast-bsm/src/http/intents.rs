//! From delivery intents to stored deliveries (issue 5; `profile: P-3, P-8`): the provisioning
//! routes decide what should be pushed ([`DeliveryIntent`]); [`IntentWriter`] makes rows of it that
//! any push worker ([`crate::push`]) picks up, and [`StoreIntents`] is the [`IntentSink`] the routes
//! hand intents to.
//!
//! # What each intent does \[chosen\]
//! | intent | rows |
//! |---|---|
//! | [`DeliveryIntent::Push`] | a new `Pending` delivery with its [`LtkmForm`] (P-4 extension, SRTP policy) and the next version of (terminal, key), due at `now` plus jitter |
//! | [`DeliveryIntent::DeliveredInResponse`] | the terminal's live deliveries of that key end: deliveries and validity updates `Acknowledged` (the authenticated HTTP answer carried the key with its current window, as an answered pull does), invalidations `Failed { Superseded }` (the terminal holds the key again: the invalidation must not follow) |
//! | [`DeliveryIntent::Registered`] | the terminal's live deliveries become due at once: the worker sends them to the new address, which it reads from the registration at send time |
//! | [`DeliveryIntent::StopPushes`] | the terminal's live deliveries end `Failed { Stopped }`; they are not resumed by a later registration, which sends the keys the terminal is entitled to then (in its answer, or as new pushes) |
//!
//! - **Versions**: 1 for the first LTKM of a (terminal, key), then the highest stored plus one for
//!   every later one (update, invalidation, a new delivery after a registration), read with
//!   [`BsmStore::latest_delivery_version`]. Two writers racing for one version make the store
//!   refuse the second batch ([`StoreError::Conflict`]); it reads the versions again and retries.
//! - **Due times**: the intents of one request concern one terminal, so each push follows the
//!   scheduler's rule for single deliveries (`now` plus [`SchedulerConfig::draw_jitter`]); the
//!   campaign spread is for mass updates of many terminals.
//! - **Durability**: the routes await [`IntentSink::submit`] before the answer leaves, and
//!   [`StoreIntents`] writes the rows in it: a terminal that was told of its purchase has its
//!   pushes stored. A write that fails makes the answer 503; the terminal asks again (a repeated
//!   Service Request re-sends its keys, and no push is queued twice for one version).

use std::sync::{Arc, Mutex, PoisonError};

use keycast_mikey::{KeyDomainId, SekPekId};

use super::provisioning::{IntentSink, SubmitFuture};
use crate::delivery::{
    Delivery, DeliveryId, DeliveryKey, DeliveryRow, DeliveryState, FailReason, SchedulerConfig, Time,
};
use crate::domain::TerminalId;
use crate::issue::LtkmKind;
use crate::push::PushClock;
use crate::rng::RandomSource;
use crate::service::{DeliveryIntent, PushIntent};
use crate::store::{BsmStore, LtkmForm, StoreError};

/// Attempts at writing one batch of pushes when another writer takes the same versions.
const VERSION_RETRIES: usize = 3;

/// What [`IntentWriter::write`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntentReport {
    /// Deliveries queued.
    pub queued: u64,
    /// Live deliveries acknowledged by an HTTP answer.
    pub acknowledged: u64,
    /// Live invalidations made moot by an HTTP answer.
    pub superseded: u64,
    /// Live deliveries stopped by a deregistration.
    pub stopped: u64,
    /// Live deliveries made due at once by a registration.
    pub rescheduled: u64,
}

/// Live deliveries per terminal, read once per [`IntentWriter::write`].
#[derive(Default)]
struct LiveRows(std::collections::HashMap<String, Vec<(DeliveryId, DeliveryRow)>>);

impl LiveRows {
    async fn of<S: BsmStore + Sync>(
        &mut self,
        store: &S,
        terminal: &TerminalId,
    ) -> Result<&mut Vec<(DeliveryId, DeliveryRow)>, StoreError> {
        if !self.0.contains_key(&terminal.0) {
            let rows = store.live_deliveries_of(&terminal.0).await?;
            self.0.insert(terminal.0.clone(), rows);
        }
        Ok(self.0.entry(terminal.0.clone()).or_default())
    }
}

/// Writes delivery intents into the store (module docs).
pub struct IntentWriter<S, R> {
    store: S,
    config: SchedulerConfig,
    rng: Mutex<R>,
}

impl<S, R> core::fmt::Debug for IntentWriter<S, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IntentWriter").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<S: BsmStore + Sync, R: RandomSource + Send> IntentWriter<S, R> {
    /// A writer over `store`, with the scheduler's jitter from `config` drawn from `rng`.
    #[must_use]
    pub fn new(store: S, config: SchedulerConfig, rng: R) -> Self {
        Self { store, config, rng: Mutex::new(rng) }
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &S {
        &self.store
    }

    fn jitter(&self) -> std::time::Duration {
        // The generator is left whole by every draw, so a poisoned lock still guards a usable one.
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        self.config.draw_jitter(&mut *rng)
    }

    /// Writes the intents of one request, in order, at `now`.
    ///
    /// # Errors
    /// [`StoreError`]: what was written before the failure stays written.
    pub async fn write(&self, intents: Vec<DeliveryIntent>, now: Time) -> Result<IntentReport, StoreError> {
        let mut report = IntentReport::default();
        let mut pushes = Vec::new();
        // Each terminal's live deliveries, read once per call (a Registration's answer has both a
        // `Registered` and a `DeliveredInResponse` per key) and kept in step with what `apply`
        // changes; dropped when pushes are queued, which adds rows.
        let mut live = LiveRows::default();
        for intent in intents {
            match intent {
                DeliveryIntent::Push(p) => pushes.push(p),
                other => {
                    // Pushes queued before a close or stop in the same list are written first.
                    if !pushes.is_empty() {
                        report.queued += self.queue(std::mem::take(&mut pushes), now).await?;
                        live.0.clear();
                    }
                    self.apply(other, now, &mut report, &mut live).await?;
                }
            }
        }
        report.queued += self.queue(pushes, now).await?;
        Ok(report)
    }

    async fn apply(
        &self,
        intent: DeliveryIntent,
        now: Time,
        report: &mut IntentReport,
        live: &mut LiveRows,
    ) -> Result<(), StoreError> {
        match intent {
            DeliveryIntent::DeliveredInResponse { terminal, key_domain_id, sek_pek_id } => {
                let rows = live.of(&self.store, &terminal).await?;
                let mut ended = Vec::new();
                for (id, row) in rows.iter() {
                    let key = &row.delivery.key;
                    if key.key_domain_id != key_domain_id || key.sek_pek_id != sek_pek_id {
                        continue;
                    }
                    let state = match row.delivery.kind {
                        LtkmKind::Invalidate => DeliveryState::Failed { at: now, reason: FailReason::Superseded },
                        LtkmKind::Deliver { .. } | LtkmKind::UpdateValidity { .. } => {
                            DeliveryState::Acknowledged { at: now }
                        }
                    };
                    if self.store.record_outcome(key, state, None).await? {
                        match state {
                            DeliveryState::Acknowledged { .. } => report.acknowledged += 1,
                            _ => report.superseded += 1,
                        }
                    }
                    ended.push(*id);
                }
                rows.retain(|(id, _)| !ended.contains(id));
            }
            DeliveryIntent::Registered { terminal, .. } => {
                for (_, row) in live.of(&self.store, &terminal).await?.iter() {
                    if self.store.record_outcome(&row.delivery.key, row.state, Some(now)).await? {
                        report.rescheduled += 1;
                    }
                }
            }
            DeliveryIntent::StopPushes { terminal } => {
                let stopped = DeliveryState::Failed { at: now, reason: FailReason::Stopped };
                let rows = live.of(&self.store, &terminal).await?;
                for (_, row) in rows.iter() {
                    if self.store.record_outcome(&row.delivery.key, stopped, None).await? {
                        report.stopped += 1;
                    }
                }
                rows.clear();
                if report.stopped > 0 {
                    tracing::info!(terminal = %terminal.0, stopped = report.stopped, "pushes stopped: deregistered");
                }
            }
            // Pushes are queued by `write`.
            DeliveryIntent::Push(_) => {}
        }
        Ok(())
    }

    /// Queues pushes with fresh versions, retrying when another writer took a version first.
    async fn queue(&self, pushes: Vec<PushIntent>, now: Time) -> Result<u64, StoreError> {
        if pushes.is_empty() {
            return Ok(0);
        }
        let mut last = None;
        for _ in 0..VERSION_RETRIES {
            let rows = self.rows(&pushes, now).await?;
            match self.store.enqueue_pushes(&rows).await {
                Ok(n) => return Ok(n),
                Err(e @ StoreError::Conflict(_)) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| StoreError::Conflict("delivery versions".into())))
    }

    async fn rows(&self, pushes: &[PushIntent], now: Time) -> Result<Vec<(DeliveryRow, LtkmForm)>, StoreError> {
        // Versions handed out in this batch, so two pushes of one key in one list do not collide.
        let mut taken: Vec<(&TerminalId, KeyDomainId, SekPekId, u32)> = Vec::new();
        let mut rows = Vec::with_capacity(pushes.len());
        for p in pushes {
            let batch = taken
                .iter()
                .filter(|(t, d, id, _)| *t == &p.terminal && *d == p.key_domain_id && *id == p.sek_pek_id)
                .map(|(.., v)| *v)
                .max();
            let version = match batch {
                Some(v) => v,
                None => {
                    self.store.latest_delivery_version(&p.terminal.0, p.key_domain_id, p.sek_pek_id).await?.unwrap_or(0)
                }
            }
            .checked_add(1)
            .ok_or_else(|| StoreError::Conflict(format!("delivery versions of {} exhausted", p.terminal.0)))?;
            taken.push((&p.terminal, p.key_domain_id, p.sek_pek_id, version));
            let key = DeliveryKey {
                terminal: p.terminal.0.clone(),
                key_domain_id: p.key_domain_id,
                sek_pek_id: p.sek_pek_id,
                version,
            };
            let delivery = Delivery { key, kind: p.kind, to: p.to };
            let row = DeliveryRow {
                delivery,
                state: DeliveryState::Pending,
                due: Some(now.after(self.jitter())),
                sent: Vec::new(),
            };
            rows.push((row, LtkmForm { ext: p.ext, streaming: p.streaming.clone() }));
        }
        Ok(rows)
    }
}

/// The [`IntentSink`] of a BSM that pushes: writes each request's intents with an
/// [`IntentWriter`] before the route answers (module docs).
pub struct StoreIntents<S, R> {
    writer: Arc<IntentWriter<S, R>>,
    clock: PushClock,
}

impl<S, R> core::fmt::Debug for StoreIntents<S, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StoreIntents").finish_non_exhaustive()
    }
}

impl<S, R> StoreIntents<S, R> {
    /// A sink writing through `writer`, at the times `clock` gives.
    #[must_use]
    pub fn new(writer: Arc<IntentWriter<S, R>>, clock: PushClock) -> Self {
        Self { writer, clock }
    }
}

impl<S, R> IntentSink for StoreIntents<S, R>
where
    S: BsmStore + Send + Sync + 'static,
    R: RandomSource + Send + 'static,
{
    fn submit(&self, intents: Vec<DeliveryIntent>) -> SubmitFuture<'_> {
        Box::pin(async move {
            if intents.is_empty() {
                return Ok(());
            }
            self.writer.write(intents, (self.clock)()).await.map(|_| ())
        })
    }
}
