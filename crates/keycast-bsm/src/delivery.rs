//! The LTKM push scheduler (issue 5; `profile: P-3, P-5, P-8`): one delivery per (terminal, key,
//! version), pushed over UDP, retried with backoff until a verification message acknowledges it,
//! then one solicited-pull trigger, then given up.
//!
//! Sans-IO, in the quinn/str0m shape: the scheduler holds no socket, reads no clock and starts no
//! thread. Time comes in as [`Time`] on every call and must never go backwards; randomness (jitter)
//! comes from an injected [`RandomSource`]. The shell loop is:
//!
//! 1. [`Scheduler::enqueue`] / [`Scheduler::enqueue_campaign`] new deliveries;
//! 2. [`Scheduler::poll`] at `now`, and for each [`Action`]:
//!    - [`Action::Send`]: reserve a TS ([`crate::issue::LtkmCounter`]), persist it, build the LTKM of
//!      the delivery's [`LtkmKind`] ([`crate::issue::build_ltkm`], V = 1), send it to `to`, then
//!      report [`Scheduler::send_result`] with the B-TID and TS it carried;
//!    - [`Action::SolicitedPull`]: the same with [`crate::issue::solicited_pull_ltkm`];
//!    - [`Action::GiveUp`]: the delivery is now [`DeliveryState::Failed`];
//! 3. feed verification messages to [`crate::verification::intake`] (it calls
//!    [`Scheduler::acknowledged`]), and a pull answered over HTTP straight to
//!    [`Scheduler::acknowledged`];
//! 4. sleep until [`Scheduler::poll_timeout`] or the next input.
//!
//! After each call the shell persists the rows ([`Scheduler::row`]) of the deliveries it touched:
//! [`DeliveryRow`] is plain data, and [`Scheduler::restore`] rebuilds the timers from rows.
//!
//! The store-backed push worker ([`crate::push`]), where the rows themselves are the timers,
//! takes the same decisions through the pure parts: [`SchedulerConfig::step`],
//! [`SchedulerConfig::next_due`], [`SchedulerConfig::draw_jitter`] and [`RateLimiter`].
//!
//! # States
//! `Pending → Sent { attempt } → … → Sent { max_attempts } → PullSolicited → Failed`, and from any
//! of these to `Acknowledged` when a verification message (or a pull) proves the card got the LTKM.
//! An acknowledgement after giving up still counts (the card has the key after all).
//!
//! # Timing \[chosen; issue 5 "spread … rate limit and jitter … retries with backoff"\]
//! - **Spread**: a campaign of N deliveries (a key rollover, a mass update) gets nominal due times
//!   `now + window·i/N`, i = 0..N, plus a jitter drawn uniformly from `[0, jitter]`, never beyond
//!   `now + window`. A single [`Scheduler::enqueue`] is due at `now` + jitter.
//! - **Rate limit**: a token bucket in its GCRA form, `per_second` tokens a second, `burst` at most
//!   banked. Every UDP datagram takes one token (pushes and solicited pulls; giving up takes none).
//!   In any window of W seconds at most `burst − 1 + per_second·W` datagrams leave; with the
//!   default `burst` = 1, at most `per_second` in any one-second slice. A due delivery that finds
//!   no token waits; order stays by due time.
//! - **Retries**: after attempt k (k = 1 …) the scheduler waits `min(initial·factor^(k−1),
//!   max_backoff)` plus jitter for the acknowledgement; with no acknowledgement and k <
//!   `max_attempts` it sends attempt k + 1 (a new LTKM with a new TS: `profile: P-3`). After the
//!   last attempt: one solicited-pull trigger (if enabled), `pull_wait` for the terminal to pull,
//!   then [`Action::GiveUp`].
//! - **Ports** (`profile: P-8`): 2269 for terminals registered through the 3GPP MBMS interface,
//!   4359 for OMA BCAST ones; both configurable.
//!
//! # Cost
//! Timers sit in a binary heap keyed by (due, insertion order); an acknowledged delivery's timer is
//! dropped lazily (a generation number marks it stale), so every operation is O(log n) and no
//! call scans the deliveries. `benches/scheduler.rs` measures a campaign of 1 000 000.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use keycast_mikey::{KeyDomainId, SekPekId};

use crate::issue::LtkmKind;
use crate::rng::RandomSource;

/// A point in time: microseconds since the Unix epoch, as the shell's clock says. The scheduler
/// never reads a clock; microseconds keep the rate limiter exact at high rates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// From microseconds since the Unix epoch.
    #[must_use]
    pub const fn from_micros(us: u64) -> Self {
        Self(us)
    }

    /// From milliseconds since the Unix epoch (saturating).
    #[must_use]
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms.saturating_mul(1_000))
    }

    /// From seconds since the Unix epoch (saturating).
    #[must_use]
    pub const fn from_secs(s: u64) -> Self {
        Self(s.saturating_mul(1_000_000))
    }

    /// Microseconds since the Unix epoch.
    #[must_use]
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating.
    #[must_use]
    pub fn after(self, d: Duration) -> Self {
        Self(self.0.saturating_add(micros(d)))
    }

    /// `self − earlier`, or zero when `earlier` is later.
    #[must_use]
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Names a delivery: one LTKM content for one terminal (issue 5: a row per terminal, key and
/// version).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    /// The BSM's identity of the terminal: the subscriber's IMPI, which stays the same across
    /// bootstraps (the B-TID, and with it the SMK, changes with each).
    pub terminal: String,
    /// Key Domain ID of the key.
    pub key_domain_id: KeyDomainId,
    /// SEK/PEK ID.
    pub sek_pek_id: SekPekId,
    /// \[chosen\] The sequence number of what the BSM decided to send this terminal for this key:
    /// 1 the delivery, then one more per validity update or invalidation. The caller assigns it.
    pub version: u32,
}

/// Through which interface the terminal registered: decides the push port (`profile: P-8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegistrationInterface {
    /// 3GPP MBMS key management (port 2269 by default).
    Mbms,
    /// OMA BCAST service provisioning (port 4359 by default).
    OmaBcast,
}

/// Where LTKMs for the terminal go: the source address of its last registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PushAddress {
    /// The registered source address.
    pub ip: IpAddr,
    /// The interface it registered through.
    pub interface: RegistrationInterface,
}

/// One delivery to schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Its name.
    pub key: DeliveryKey,
    /// What the LTKM does (delivery, validity update, invalidation) and with which window.
    pub kind: LtkmKind,
    /// Where to push.
    pub to: PushAddress,
}

/// Handle of a delivery inside one scheduler (and its storage rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(pub u64);

/// Why a delivery failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// Every push and the solicited pull went unanswered.
    NoAcknowledgement,
    /// The shell reported that it cannot send at all ([`SendResult::Abandon`]).
    Abandoned,
    /// \[chosen\] The BSM stopped pushing to the terminal: it deregistered (`profile: P-8`).
    Stopped,
    /// \[chosen\] Something newer made this LTKM moot: the key went to the terminal in an HTTP
    /// answer after this delivery was queued to invalidate it.
    Superseded,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Waiting for its first push.
    Pending,
    /// Pushed `attempt` times, the last at `at`; waiting for the verification message.
    Sent {
        /// Pushes so far (1-based).
        attempt: u32,
        /// When the last push was handed to the shell.
        at: Time,
    },
    /// Every push went unanswered; a solicited-pull trigger went out at `at`.
    PullSolicited {
        /// When the trigger was handed to the shell.
        at: Time,
    },
    /// The card confirmed the LTKM (verification message, or the terminal pulled the key).
    Acknowledged {
        /// When.
        at: Time,
    },
    /// Given up.
    Failed {
        /// When.
        at: Time,
        /// Why.
        reason: FailReason,
    },
}

impl DeliveryState {
    /// Acknowledged or failed: nothing more will be sent.
    #[must_use]
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Acknowledged { .. } | Self::Failed { .. })
    }
}

/// One LTKM that left for a delivery: what verification intake matches a verification message
/// against (`profile: P-5`: CSB ID, TS and B-TID). No key material is kept: the message keys are
/// derived again from the SMK of this B-TID when the answer comes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SentLtkm {
    /// Which push (1-based).
    pub attempt: u32,
    /// IDr of the LTKM: the B-TID it was sealed for (names the SMK).
    pub btid: String,
    /// Its TS.
    pub ts: u32,
    /// When the shell reported it sent.
    pub at: Time,
    /// A verification message for exactly this LTKM was accepted (a second one is a replay).
    pub acknowledged: bool,
}

/// Everything the scheduler knows about one delivery: the storage row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    /// The delivery.
    pub delivery: Delivery,
    /// Its state.
    pub state: DeliveryState,
    /// When the scheduler acts on it next (`None` in a final state).
    pub due: Option<Time>,
    /// The LTKMs that left for it, oldest first (at most `max_attempts`).
    pub sent: Vec<SentLtkm>,
}

/// Which datagram a [`Scheduler::send_result`] reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attempt {
    /// Push number n (1-based) of the LTKM.
    Push(u32),
    /// The solicited-pull trigger.
    SolicitedPull,
}

/// What the shell did with an [`Action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// The LTKM left, sealed for this B-TID with this TS.
    Sent {
        /// The B-TID (IDr) it was sealed for.
        btid: String,
        /// The TS it carried.
        ts: u32,
    },
    /// It could not be sent this time (socket error, keys momentarily unavailable). The attempt
    /// still counts; the retry timer that is already running sends the next one.
    NotSent,
    /// It can never be sent (the terminal is gone): the delivery fails now.
    Abandon,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Build the delivery's LTKM with a fresh TS (V = 1) and send it to `to`.
    Send {
        /// The delivery.
        id: DeliveryId,
        /// Its name (terminal, key, version).
        key: DeliveryKey,
        /// What the LTKM carries.
        kind: LtkmKind,
        /// Terminal address and P-8 port.
        to: SocketAddr,
        /// Push number (1-based); report it back in [`Scheduler::send_result`].
        attempt: u32,
    },
    /// Send a solicited-pull trigger for `key_group` to the terminal (fresh TS, RAND, CSB ID).
    SolicitedPull {
        /// The delivery.
        id: DeliveryId,
        /// The terminal (IMPI).
        terminal: String,
        /// Key Domain ID.
        key_domain_id: KeyDomainId,
        /// The Key Group whose current key the terminal should request.
        key_group: u16,
        /// Terminal address and P-8 port.
        to: SocketAddr,
    },
    /// The delivery failed: no acknowledgement after every retry and the pull.
    GiveUp {
        /// The delivery.
        id: DeliveryId,
        /// Its name.
        key: DeliveryKey,
    },
}

/// Token bucket for pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Datagrams per second (≥ 1).
    pub per_second: u32,
    /// Tokens that may be banked for a burst (≥ 1; 1 means evenly spaced sends).
    pub burst: u32,
}

/// Retry and backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait for an acknowledgement after the first push.
    pub initial: Duration,
    /// Each further wait is this many times the previous one (≥ 1).
    pub factor: u32,
    /// Longest wait.
    pub max_backoff: Duration,
    /// Pushes in all, the first included (≥ 1).
    pub max_attempts: u32,
    /// Send one solicited-pull trigger after the last push.
    pub solicited_pull: bool,
    /// How long the terminal has to pull after the trigger before the delivery fails.
    pub pull_wait: Duration,
}

/// LTKM push ports (`profile: P-8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushPorts {
    /// Terminals registered through 3GPP MBMS (TS 33.246 §6.4.1: 2269).
    pub mbms: u16,
    /// Terminals registered through OMA BCAST (IANA `omabcastltkm`: 4359).
    pub oma_bcast: u16,
}

impl Default for PushPorts {
    fn default() -> Self {
        Self { mbms: 2269, oma_bcast: 4359 }
    }
}

/// Scheduler configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// A campaign is spread over this window.
    pub spread_window: Duration,
    /// Largest random delay added to a due time (campaign slots, single deliveries, retries).
    pub jitter: Duration,
    /// Rate limit of datagrams; `None` for none.
    pub rate: Option<RateLimit>,
    /// Retries.
    pub retry: RetryPolicy,
    /// Push ports.
    pub ports: PushPorts,
}

impl Default for SchedulerConfig {
    /// \[chosen\] Ten minutes of spread, a second of jitter, 1 000 pushes a second evenly spaced,
    /// four pushes 30 s, 60 s, 120 s, 240 s apart, then a pull with ten minutes to answer.
    fn default() -> Self {
        Self {
            spread_window: Duration::from_secs(600),
            jitter: Duration::from_secs(1),
            rate: Some(RateLimit { per_second: 1_000, burst: 1 }),
            retry: RetryPolicy {
                initial: Duration::from_secs(30),
                factor: 2,
                max_backoff: Duration::from_secs(3_600),
                max_attempts: 4,
                solicited_pull: true,
                pull_wait: Duration::from_secs(600),
            },
            ports: PushPorts::default(),
        }
    }
}

impl SchedulerConfig {
    /// The wait for an acknowledgement after push `attempt` (1-based), before jitter.
    #[must_use]
    pub fn backoff(&self, attempt: u32) -> Duration {
        let r = &self.retry;
        let exp = attempt.saturating_sub(1);
        let mult = u64::from(r.factor).checked_pow(exp).unwrap_or(u64::MAX);
        let us = micros(r.initial).saturating_mul(mult);
        Duration::from_micros(us).min(r.max_backoff)
    }

    /// Refuses a configuration that cannot work (no attempt, factor 0, an empty token bucket).
    ///
    /// # Errors
    /// [`DeliveryError::BadConfig`].
    pub fn check(&self) -> Result<(), DeliveryError> {
        if self.retry.max_attempts == 0 {
            return Err(DeliveryError::BadConfig("retry.max_attempts must be at least 1"));
        }
        if self.retry.factor == 0 {
            return Err(DeliveryError::BadConfig("retry.factor must be at least 1"));
        }
        if let Some(r) = self.rate
            && (r.per_second == 0 || r.burst == 0)
        {
            return Err(DeliveryError::BadConfig("rate.per_second and rate.burst must be at least 1"));
        }
        Ok(())
    }

    /// The push port for a terminal registered through `interface` (`profile: P-8`).
    #[must_use]
    pub fn port(&self, interface: RegistrationInterface) -> u16 {
        match interface {
            RegistrationInterface::Mbms => self.ports.mbms,
            RegistrationInterface::OmaBcast => self.ports.oma_bcast,
        }
    }

    /// A random delay drawn uniformly from `[0, jitter]` (none, and nothing drawn, when the
    /// jitter is zero).
    pub fn draw_jitter(&self, rng: &mut impl RandomSource) -> Duration {
        let max = micros(self.jitter);
        Duration::from_micros(if max == 0 { 0 } else { rng.next_u64() % max.saturating_add(1) })
    }

    /// What a delivery in `state` does when its due time comes; `None` in a final state. The
    /// in-memory [`Scheduler`] and the store-backed push worker (`crate::push`) both decide here.
    #[must_use]
    pub fn step(&self, state: &DeliveryState) -> Option<Step> {
        Step::of(state, self.retry.max_attempts, self.retry.solicited_pull)
    }

    /// When a delivery acts next after taking `step` at `now`: after push k, the backoff of k plus
    /// jitter (drawn from `rng` for pushes only); after the pull trigger, `pull_wait`; after giving
    /// up, never.
    pub fn next_due(&self, step: Step, now: Time, rng: &mut impl RandomSource) -> Option<Time> {
        match step {
            Step::Push(k) => Some(now.after(self.backoff(k)).after(self.draw_jitter(rng))),
            Step::Pull => Some(now.after(self.retry.pull_wait)),
            Step::GiveUp => None,
        }
    }
}

/// Why a scheduler call was refused (a caller or storage problem; never caused by network input
/// alone, which goes through [`crate::verification`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// A delivery with this key is already scheduled (or listed twice in one campaign).
    #[error("a delivery with this (terminal, key, version) already exists")]
    Duplicate(Option<DeliveryId>),
    /// No such delivery.
    #[error("no such delivery")]
    Unknown,
    /// The B-TID and TS were already reported for another LTKM: a TS was used twice.
    #[error("this B-TID and TS were already used by another LTKM")]
    TsReused,
    /// The configuration cannot work.
    #[error("bad scheduler configuration: {0}")]
    BadConfig(&'static str),
    /// A stored row cannot be taken back.
    #[error("bad stored delivery row: {0}")]
    BadRow(&'static str),
}

/// What an acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// The delivery is now acknowledged; no more pushes.
    Acknowledged,
    /// It already was: nothing changed.
    AlreadyAcknowledged,
    /// It had been given up; it is acknowledged now.
    AfterGiveUp,
}

/// The push rate limiter: the token bucket of [`RateLimit`] in its GCRA form (`tat` is the
/// theoretical arrival time of the next datagram). Shared by the [`Scheduler`] and the push
/// worker, so both keep the same limit.
#[derive(Debug, Clone, Copy)]
pub struct RateLimiter {
    interval: u64,
    tolerance: u64,
    tat: u64,
}

impl RateLimiter {
    /// A full bucket for `rate`.
    #[must_use]
    pub fn new(rate: RateLimit) -> Self {
        // Rounding the interval up keeps the real rate at or below the configured one.
        let interval = 1_000_000u64.div_ceil(u64::from(rate.per_second)).max(1);
        Self { interval, tolerance: interval.saturating_mul(u64::from(rate.burst) - 1), tat: 0 }
    }

    fn next_allowed(&self) -> u64 {
        self.tat.saturating_sub(self.tolerance)
    }

    fn try_take(&mut self, now: u64) -> bool {
        if self.next_allowed() > now {
            return false;
        }
        self.tat = self.tat.max(now).saturating_add(self.interval);
        true
    }

    /// Takes one token at `now`; `false` (and nothing taken) when the bucket is empty.
    pub fn take(&mut self, now: Time) -> bool {
        self.try_take(now.0)
    }

    /// The earliest time a token is available.
    #[must_use]
    pub fn next_token(&self) -> Time {
        Time(self.next_allowed())
    }

    /// How many tokens [`RateLimiter::take`] would hand out at `now`, at most `max` (takes none).
    #[must_use]
    pub fn available(&self, now: Time, max: u32) -> u32 {
        let mut probe = *self;
        let mut n = 0;
        while n < max && probe.try_take(now.0) {
            n += 1;
        }
        n
    }
}

#[derive(Debug, Clone)]
struct Slot {
    row: DeliveryRow,
    /// Generation of the one live timer; heap entries with another one are stale.
    timer_gen: u64,
}

/// What happens to a delivery when its due time comes ([`SchedulerConfig::step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Push number n (1-based) of the LTKM.
    Push(u32),
    /// The solicited-pull trigger.
    Pull,
    /// Give up.
    GiveUp,
}

impl Step {
    fn of(state: &DeliveryState, max_attempts: u32, pull: bool) -> Option<Self> {
        Some(match *state {
            DeliveryState::Pending => Self::Push(1),
            DeliveryState::Sent { attempt, .. } if attempt < max_attempts => Self::Push(attempt + 1),
            DeliveryState::Sent { .. } if pull => Self::Pull,
            DeliveryState::Sent { .. } | DeliveryState::PullSolicited { .. } => Self::GiveUp,
            DeliveryState::Acknowledged { .. } | DeliveryState::Failed { .. } => return None,
        })
    }

    /// Whether it sends a datagram (and so takes a token of the rate limit).
    #[must_use]
    pub fn takes_token(self) -> bool {
        !matches!(self, Self::GiveUp)
    }
}

/// Timer entry: (due, generation, delivery). Generations grow with every timer armed, so they
/// also keep deliveries with the same due time in arming order; the heap is a min-heap on it.
type Timer = Reverse<(u64, u64, u64)>;

/// The push scheduler. See the module docs for the loop and the timing rules.
#[derive(Debug)]
pub struct Scheduler<R> {
    config: SchedulerConfig,
    rng: R,
    slots: HashMap<u64, Slot>,
    by_key: HashMap<DeliveryKey, u64>,
    by_ts: HashMap<(String, u32), u64>,
    timers: BinaryHeap<Timer>,
    limiter: Option<RateLimiter>,
    next_id: u64,
    next_gen: u64,
}

impl<R: RandomSource> Scheduler<R> {
    /// An empty scheduler.
    pub fn new(config: SchedulerConfig, rng: R) -> Result<Self, DeliveryError> {
        config.check()?;
        Ok(Self {
            config,
            rng,
            slots: HashMap::new(),
            by_key: HashMap::new(),
            by_ts: HashMap::new(),
            timers: BinaryHeap::new(),
            limiter: config.rate.map(RateLimiter::new),
            next_id: 0,
            next_gen: 0,
        })
    }

    /// A scheduler holding rows read back from storage; live rows get their timers back at their
    /// stored due time. Fails on a configuration error or on two rows with the same key or id.
    pub fn restore(
        config: SchedulerConfig,
        rng: R,
        rows: impl IntoIterator<Item = (DeliveryId, DeliveryRow)>,
    ) -> Result<Self, DeliveryError> {
        let mut s = Self::new(config, rng)?;
        for (DeliveryId(id), row) in rows {
            if id == u64::MAX {
                // The next id handed out must stay above every stored one.
                return Err(DeliveryError::BadRow("delivery id u64::MAX is reserved"));
            }
            if s.slots.contains_key(&id) {
                return Err(DeliveryError::Duplicate(Some(DeliveryId(id))));
            }
            match s.by_key.entry(row.delivery.key.clone()) {
                Entry::Occupied(e) => return Err(DeliveryError::Duplicate(Some(DeliveryId(*e.get())))),
                Entry::Vacant(e) => e.insert(id),
            };
            for sent in &row.sent {
                if s.by_ts.insert((sent.btid.clone(), sent.ts), id).is_some() {
                    return Err(DeliveryError::TsReused);
                }
            }
            let due = if row.state.is_final() { None } else { row.due };
            s.slots.insert(id, Slot { row: DeliveryRow { due: None, ..row }, timer_gen: 0 });
            if let Some(due) = due {
                s.arm(id, due);
            }
            s.next_id = s.next_id.max(id + 1);
        }
        Ok(s)
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Number of deliveries held (final ones included until [`Scheduler::forget`]).
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no delivery is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The row of a delivery.
    #[must_use]
    pub fn row(&self, id: DeliveryId) -> Option<&DeliveryRow> {
        self.slots.get(&id.0).map(|s| &s.row)
    }

    /// The delivery with this key.
    #[must_use]
    pub fn id_of(&self, key: &DeliveryKey) -> Option<DeliveryId> {
        self.by_key.get(key).copied().map(DeliveryId)
    }

    /// Every row, in no particular order.
    pub fn rows(&self) -> impl Iterator<Item = (DeliveryId, &DeliveryRow)> {
        self.slots.iter().map(|(id, s)| (DeliveryId(*id), &s.row))
    }

    /// The delivery whose LTKM was sealed for `btid` with `ts`, and that LTKM.
    #[must_use]
    pub fn find_sent(&self, btid: &str, ts: u32) -> Option<(DeliveryId, &DeliveryRow, &SentLtkm)> {
        let id = *self.by_ts.get(&(btid.to_owned(), ts))?;
        let row = &self.slots.get(&id)?.row;
        let sent = row.sent.iter().find(|s| s.ts == ts && s.btid == btid)?;
        Some((DeliveryId(id), row, sent))
    }

    /// Drops a delivery from memory (storage keeps its row). Its B-TID/TS pairs are forgotten
    /// too, so a late verification message for it becomes "unmatched".
    pub fn forget(&mut self, id: DeliveryId) -> Option<DeliveryRow> {
        let slot = self.slots.remove(&id.0)?;
        self.by_key.remove(&slot.row.delivery.key);
        for s in &slot.row.sent {
            self.by_ts.remove(&(s.btid.clone(), s.ts));
        }
        Some(slot.row)
    }

    fn jitter(&mut self) -> u64 {
        micros(self.config.draw_jitter(&mut self.rng))
    }

    fn arm(&mut self, id: u64, due: Time) {
        self.next_gen += 1;
        let gen_ = self.next_gen;
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.timer_gen = gen_;
            slot.row.due = Some(due);
            self.timers.push(Reverse((due.0, gen_, id)));
        }
    }

    fn disarm(slot: &mut Slot) {
        // Generation 0 is never armed, so every heap entry of this slot is now stale.
        slot.timer_gen = 0;
        slot.row.due = None;
    }

    fn insert(&mut self, delivery: Delivery, due: Time) -> DeliveryId {
        let id = self.next_id;
        // 2^64 deliveries are out of reach; restore refuses the one id that could overflow here.
        self.next_id = self.next_id.saturating_add(1);
        self.by_key.insert(delivery.key.clone(), id);
        let row = DeliveryRow { delivery, state: DeliveryState::Pending, due: None, sent: Vec::new() };
        self.slots.insert(id, Slot { row, timer_gen: 0 });
        self.arm(id, due);
        DeliveryId(id)
    }

    /// Schedules one delivery for `now` plus jitter.
    pub fn enqueue(&mut self, delivery: Delivery, now: Time) -> Result<DeliveryId, DeliveryError> {
        if let Some(id) = self.id_of(&delivery.key) {
            return Err(DeliveryError::Duplicate(Some(id)));
        }
        let due = Time(now.0.saturating_add(self.jitter()));
        Ok(self.insert(delivery, due))
    }

    /// Schedules a campaign spread uniformly over the configured window, each with jitter, never
    /// beyond `now + window`. All or nothing: a key that exists, or appears twice, refuses the
    /// whole campaign.
    pub fn enqueue_campaign(&mut self, deliveries: Vec<Delivery>, now: Time) -> Result<Vec<DeliveryId>, DeliveryError> {
        let mut seen = std::collections::HashSet::with_capacity(deliveries.len());
        for d in &deliveries {
            if let Some(id) = self.id_of(&d.key) {
                return Err(DeliveryError::Duplicate(Some(id)));
            }
            if !seen.insert(&d.key) {
                return Err(DeliveryError::Duplicate(None));
            }
        }
        drop(seen);
        let window = micros(self.config.spread_window);
        let n = deliveries.len() as u128;
        let end = now.0.saturating_add(window);
        self.slots.reserve(deliveries.len());
        self.by_key.reserve(deliveries.len());
        let mut ids = Vec::with_capacity(deliveries.len());
        for (i, d) in deliveries.into_iter().enumerate() {
            // i < n, so the quotient is below `window` and fits in u64.
            let offset = u64::try_from(u128::from(window) * i as u128 / n).unwrap_or(window);
            let due = now.0.saturating_add(offset).saturating_add(self.jitter()).min(end);
            ids.push(self.insert(d, Time(due)));
        }
        Ok(ids)
    }

    /// The earliest time [`Scheduler::poll`] has something to do (rate limit included), or `None`
    /// when nothing is scheduled. Waking earlier is harmless.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Time> {
        while let Some(&Reverse((due, gen_, id))) = self.timers.peek() {
            let Some(slot) = self.slots.get(&id).filter(|s| s.timer_gen == gen_) else {
                self.timers.pop();
                continue;
            };
            let step = self.config.step(&slot.row.state);
            let at = match (step, &self.limiter) {
                (Some(s), Some(l)) if s.takes_token() => due.max(l.next_allowed()),
                _ => due,
            };
            return Some(Time(at));
        }
        None
    }

    /// Everything due at `now`, as actions for the shell (see [`Action`]). States change as the
    /// actions are handed out.
    #[must_use]
    pub fn poll(&mut self, now: Time) -> Vec<Action> {
        let mut out = Vec::new();
        self.poll_into(now, &mut out);
        out
    }

    /// [`Scheduler::poll`] appending to a buffer the caller reuses.
    pub fn poll_into(&mut self, now: Time, out: &mut Vec<Action>) {
        while let Some(&Reverse((due, gen_, id))) = self.timers.peek() {
            if due > now.0 {
                break;
            }
            let Some(slot) = self.slots.get(&id).filter(|s| s.timer_gen == gen_) else {
                self.timers.pop();
                continue;
            };
            let Some(step) = self.config.step(&slot.row.state) else {
                self.timers.pop();
                continue;
            };
            if step.takes_token() && !self.limiter.as_mut().is_none_or(|l| l.try_take(now.0)) {
                // Out of tokens: everything behind waits too, so due order is kept.
                break;
            }
            self.timers.pop();
            let action = self.apply(id, step, now);
            out.extend(action);
        }
    }

    fn apply(&mut self, id: u64, step: Step, now: Time) -> Option<Action> {
        let next = self.config.next_due(step, now, &mut self.rng);
        let config = self.config;
        let slot = self.slots.get_mut(&id)?;
        let d = &slot.row.delivery;
        let to = SocketAddr::new(d.to.ip, config.port(d.to.interface));
        let action = match step {
            Step::Push(attempt) => {
                slot.row.state = DeliveryState::Sent { attempt, at: now };
                Action::Send { id: DeliveryId(id), key: d.key.clone(), kind: d.kind, to, attempt }
            }
            Step::Pull => {
                slot.row.state = DeliveryState::PullSolicited { at: now };
                Action::SolicitedPull {
                    id: DeliveryId(id),
                    terminal: d.key.terminal.clone(),
                    key_domain_id: d.key.key_domain_id,
                    key_group: d.key.sek_pek_id.key_group,
                    to,
                }
            }
            Step::GiveUp => {
                slot.row.state = DeliveryState::Failed { at: now, reason: FailReason::NoAcknowledgement };
                Action::GiveUp { id: DeliveryId(id), key: d.key.clone() }
            }
        };
        match next {
            Some(due) => self.arm(id, due),
            None => Self::disarm(slot),
        }
        Some(action)
    }

    /// The shell's report on an action's datagram. A push reported [`SendResult::Sent`] becomes
    /// matchable by verification intake under its B-TID and TS.
    pub fn send_result(
        &mut self,
        id: DeliveryId,
        attempt: Attempt,
        result: SendResult,
        now: Time,
    ) -> Result<(), DeliveryError> {
        let slot = self.slots.get_mut(&id.0).ok_or(DeliveryError::Unknown)?;
        match (result, attempt) {
            (SendResult::Sent { btid, ts }, Attempt::Push(attempt)) => match self.by_ts.entry((btid, ts)) {
                Entry::Occupied(_) => return Err(DeliveryError::TsReused),
                Entry::Vacant(e) => {
                    slot.row.sent.push(SentLtkm { attempt, btid: e.key().0.clone(), ts, at: now, acknowledged: false });
                    e.insert(id.0);
                }
            },
            // A pull trigger asks for no verification message: nothing to match later.
            (SendResult::Sent { .. } | SendResult::NotSent, _) => {}
            (SendResult::Abandon, _) => {
                if !slot.row.state.is_final() {
                    slot.row.state = DeliveryState::Failed { at: now, reason: FailReason::Abandoned };
                    Self::disarm(slot);
                }
            }
        }
        Ok(())
    }

    /// The card has what the delivery carries (a verified verification message, or the terminal
    /// pulled the key). Stops its retries; repeating it is harmless.
    pub fn acknowledged(&mut self, id: DeliveryId, now: Time) -> Result<AckOutcome, DeliveryError> {
        let slot = self.slots.get_mut(&id.0).ok_or(DeliveryError::Unknown)?;
        let outcome = match slot.row.state {
            DeliveryState::Acknowledged { .. } => return Ok(AckOutcome::AlreadyAcknowledged),
            DeliveryState::Failed { .. } => AckOutcome::AfterGiveUp,
            _ => AckOutcome::Acknowledged,
        };
        slot.row.state = DeliveryState::Acknowledged { at: now };
        Self::disarm(slot);
        Ok(outcome)
    }

    /// Marks the sent LTKM (B-TID, TS) of a delivery as answered; `false` when it already was.
    pub(crate) fn mark_sent_answered(&mut self, id: DeliveryId, btid: &str, ts: u32) -> bool {
        let Some(slot) = self.slots.get_mut(&id.0) else { return false };
        match slot.row.sent.iter_mut().find(|s| s.ts == ts && s.btid == btid) {
            Some(s) if !s.acknowledged => {
                s.acknowledged = true;
                true
            }
            _ => false,
        }
    }
}
