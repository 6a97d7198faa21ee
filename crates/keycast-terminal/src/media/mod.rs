//! The terminal's media path for live watching (layers 3–4, receive side): STKMs in, TEKs from
//! the key holder, SRTP/SRTCP in, clear RTP/RTCP out (DESIGN.md §4 walk 3; profile P-6, P-8,
//! P-9).
//!
//! [`Watcher`] is the sans-IO core: it opens no socket, reads no clock (every input carries its
//! `now`) and starts no thread. The key holder (the card, or the GBA_ME store) is passed into
//! each STKM call, as the LTKM intake does, so the same holder can serve the provisioning client
//! between two calls. [`shell`] is the thin tokio edge (`keycast terminal watch`), [`sdp`] the
//! description of the clear stream for an ordinary player.
//!
//! ```text
//! STKM ─► decode ─► stale? ─► resend of a held TEK? ─► key holder: MTK generation ─► TEK+salt
//!          │          (drop)      (skip the card)          │ 6A88 ─► Event::KeyMissing (LTKM Request)
//!          ▼                                                ▼
//!     Event::Malformed                         SrtpReceiver of that SEK/PEK (two TEKs)
//! SRTP ─► MKI (SEK/PEK ID ‖ TEK ID) ─► receiver ─► unprotect in place ─► clear RTP
//! ```
//!
//! # When the card sees an STKM \[chosen\]
//!
//! TS 33.246 §6.4.6 lets the ME drop an MTK message before MGV-F when its TS is not above the
//! stored one or its MTK ID not above the current one. The OMA BCAST card, though, keeps state
//! per STKM (P-6 step 7: TS, TEK ID, audit counters; step 6: program ID and parental rating of
//! *this* STKM; step 1: invalidation), so a terminal that never showed a resend to the card would
//! keep decrypting after an invalidation or a change of program until the next TEK. Keycast
//! therefore does this:
//!
//! 1. **Stale STKMs never reach the card**: TS not above the last TS the card *accepted* for that
//!    SEK/PEK in this session (RFC 1982 comparison), or a TEK ID below the last accepted one. A
//!    reordered or duplicated datagram would otherwise be taken as play-back by a key with
//!    play-back rights (P-4) and spend a play-back. Only card-accepted values move these bounds,
//!    so a forged STKM cannot shut the stream out.
//! 2. **Resends are cheap, but not blind**: an STKM for a TEK already installed, with the same
//!    OMA BCAST STKM extension (access criteria, protection) as the one the card accepted, skips
//!    the card while the card accepted an STKM of that key less than
//!    [`WatchConfig::card_recheck`] ago (default [`DEFAULT_CARD_RECHECK`], 10 s). After that, or
//!    when the extension changes (a new program ID or rating), the resend goes to the card, which
//!    returns the same TEK (P-6 step 5) or refuses. `card_recheck = 0` shows every fresh STKM to
//!    the card.
//! 3. **Refusals about rights withdraw the TEKs** of that SEK/PEK at once: 6985 (invalidated key,
//!    pay-per-view key of another program, parental rating, no tokens), 6982 (secure channel
//!    required), 6A88 (key gone). A MAC failure (9862) or a malformed message withdraws nothing:
//!    anyone can send those. A 9865 to a re-checked resend means the key follows the MBMS rule
//!    (SEQl := TEK ID, so a repeated TEK ID is outside its window): the TEK stays, and that key's
//!    resends are no longer shown to the card (TS 33.246 §6.4.6 behaviour).
//! 4. **Zapping**: each SEK/PEK has its own [`SrtpReceiver`] keeping its two most recent TEKs, for
//!    up to [`WatchConfig::max_services`] keys (least recently used dropped). Coming back to a
//!    service whose key state was dropped (or a fresh terminal tuning in) sends its STKM to the
//!    card, which gives the same TEK again for the same TEK ID (the resend rule).
//! 5. **"Key not found"** (6A88) gives [`Event::KeyMissing`] at most once per
//!    [`WatchConfig::key_request_interval`] per key (default 30 s), and at most
//!    [`WatchConfig::max_key_requests`] times per interval for all keys together (the card
//!    answers 6A88 before checking the MAC, so anyone can name a key); the caller sends the LTKM
//!    Request ([`crate::shell::TerminalShell::request_keys`]) and may hand the same STKM in
//!    again once the answer's LTKM is in the card. In between, [`Event::AwaitingKey`].
//!
//! # For a recorder
//!
//! Every STKM call returns its [`Event`] and the caller knows the bytes and the reception time;
//! every packet call returns the [`Mki`] it was opened with, and [`Watcher::master_key`] gives
//! the TEK and salt installed under it (while the packet's key is installed, i.e. right after the
//! call). [`MediaTap`] bundles the three for the shell's `run_with`.

pub mod play;
pub mod record;
pub mod sdp;
pub mod shell;

use std::time::{Duration, Instant};

use keycast_card::CardError;
use keycast_card::card::CardOpError;
use keycast_card::mbms::{TekOut, serial_gt};
use keycast_mikey::{KeyDomainId, MikeyError, SekPekId, Stkm, StkmExt, TekId, TrafficProtectionProtocol};
use keycast_provisioning::sprov::BcastKeyId;
/// keycast-traffic's SRTP, re-exported for the shell's users (policies, keys, senders in tests).
pub use keycast_traffic::srtp;
use keycast_traffic::srtp::{MKI_LEN, Mki, SRTCP_INDEX_LEN, SrtpError, SrtpMasterKey, SrtpPolicy, SrtpReceiver};

use crate::key_holder::MbmsKeyHolder;
use crate::ltkm_intake::bcast_key;

/// How long a resend may skip the card after the card last accepted an STKM of its key
/// \[chosen\]; see the module documentation.
pub const DEFAULT_CARD_RECHECK: Duration = Duration::from_secs(10);
/// Least time between two [`Event::KeyMissing`] for one key \[chosen\].
pub const DEFAULT_KEY_REQUEST_INTERVAL: Duration = Duration::from_secs(30);
/// SEK/PEKs whose receivers are kept at once \[chosen\].
pub const DEFAULT_MAX_SERVICES: usize = 8;
/// Most [`Event::KeyMissing`] for all keys together per key request interval \[chosen\]: the
/// card says "key not found" before it checks the MAC, so forged STKMs naming random keys must
/// not turn into a stream of LTKM Requests.
pub const DEFAULT_MAX_KEY_REQUESTS: usize = 4;
/// Keys remembered as asked for \[chosen\] (the oldest is forgotten first).
const MAX_REMEMBERED_REQUESTS: usize = 64;

/// Settings of a [`Watcher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchConfig {
    /// SRTP authentication of the streams (profile P-9, P-11.2): RFC 3711 by default, RFC 4771
    /// RCCm1–3 with the LTKM's R, or no tag. An STKM whose OMA BCAST extension clears
    /// traffic_authentication_flag makes its key's receiver use no tag.
    pub srtp_policy: SrtpPolicy,
    /// See [`DEFAULT_CARD_RECHECK`].
    pub card_recheck: Duration,
    /// See [`DEFAULT_KEY_REQUEST_INTERVAL`].
    pub key_request_interval: Duration,
    /// See [`DEFAULT_MAX_SERVICES`] (at least 1).
    pub max_services: usize,
    /// See [`DEFAULT_MAX_KEY_REQUESTS`].
    pub max_key_requests: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            srtp_policy: SrtpPolicy::rfc3711(),
            card_recheck: DEFAULT_CARD_RECHECK,
            key_request_interval: DEFAULT_KEY_REQUEST_INTERVAL,
            max_services: DEFAULT_MAX_SERVICES,
            max_key_requests: DEFAULT_MAX_KEY_REQUESTS,
        }
    }
}

/// Why a TEK the card released cannot be used for SRTP here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unusable {
    /// The STKM's extension names another traffic protection (checked before the card).
    NotSrtp(TrafficProtectionProtocol),
    /// A TEK without salt (a download TEK, P-6): not an SRTP master key.
    NoSalt,
    /// Bound to a terminal binding key (P-11.5), which this terminal does not hold yet.
    TbkWrapped,
    /// Wrapped for the secure authenticated channel (P-10), not established here yet.
    ChannelWrapped,
}

/// What one STKM led to. No variant carries key bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The card released a new TEK; it is installed under `mki` (`dropped`: the oldest of the
    /// key's two TEKs, now gone).
    TekInstalled {
        /// Key Domain ID.
        key_domain: KeyDomainId,
        /// SEK/PEK ID ‖ TEK ID.
        mki: Mki,
        /// The TEK that made room.
        dropped: Option<Mki>,
    },
    /// The card was asked about a TEK already installed and released it again (resend rule).
    TekConfirmed {
        /// Key Domain ID.
        key_domain: KeyDomainId,
        /// SEK/PEK ID ‖ TEK ID.
        mki: Mki,
    },
    /// A resend for an installed TEK; the card was not asked (module docs, point 2).
    ResendSkipped {
        /// Key Domain ID.
        key_domain: KeyDomainId,
        /// SEK/PEK ID ‖ TEK ID.
        mki: Mki,
    },
    /// Dropped before the card: TS or TEK ID not above what the card accepted (point 1).
    Stale {
        /// Key Domain ID.
        key_domain: KeyDomainId,
        /// SEK/PEK ID.
        sek_pek_id: SekPekId,
        /// TEK ID.
        tek_id: TekId,
        /// The STKM's TS.
        ts: u32,
    },
    /// The key holder lacks this SEK/PEK (6A88): send an LTKM Request for it now.
    KeyMissing {
        /// Key Domain ID.
        key_domain: KeyDomainId,
        /// SEK/PEK ID.
        sek_pek_id: SekPekId,
    },
    /// The key is still missing and was asked for less than the request interval ago.
    AwaitingKey {
        /// Key Domain ID.
        key_domain: KeyDomainId,
        /// SEK/PEK ID.
        sek_pek_id: SekPekId,
    },
    /// The key holder refused the STKM.
    Refused {
        /// Key Domain ID.
        key_domain: KeyDomainId,
        /// SEK/PEK ID.
        sek_pek_id: SekPekId,
        /// TEK ID.
        tek_id: TekId,
        /// The card's reason (status word inside).
        error: CardOpError,
        /// TEKs of this key withdrawn because of it (point 3).
        withdrawn: Vec<Mki>,
    },
    /// The TEK cannot serve SRTP here.
    Unusable {
        /// Key Domain ID.
        key_domain: KeyDomainId,
        /// SEK/PEK ID ‖ TEK ID.
        mki: Mki,
        /// Why.
        reason: Unusable,
    },
    /// Not an STKM the profile allows.
    Malformed(MikeyError),
}

impl Event {
    /// The LTKM Request this event asks for ([`Event::KeyMissing`] only).
    #[must_use]
    pub fn key_request(&self) -> Option<BcastKeyId> {
        match self {
            Event::KeyMissing { key_domain, sek_pek_id } => Some(bcast_key(*key_domain, *sek_pek_id)),
            _ => None,
        }
    }
}

/// One SRTP or SRTCP packet's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// Opened in place: the clear RTP/RTCP packet is `buf[..len]`, opened with the TEK under
    /// `mki`.
    Clear {
        /// Length of the clear packet at the start of the buffer.
        len: usize,
        /// The key it was opened with.
        mki: Mki,
    },
    /// Dropped (the buffer is unchanged).
    Dropped(SrtpError),
}

/// Counters of a [`Watcher`] (also the final summary of `keycast terminal watch`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// STKM datagrams handed in.
    pub stkms_in: u64,
    /// STKMs the card accepted (new or confirmed TEK).
    pub stkms_accepted: u64,
    /// Resends that skipped the card.
    pub stkms_skipped: u64,
    /// Stale STKMs dropped before the card.
    pub stkms_stale: u64,
    /// STKMs the card refused, "key not found" included.
    pub stkms_refused: u64,
    /// STKMs that do not decode.
    pub stkms_malformed: u64,
    /// STKMs whose TEK cannot serve SRTP.
    pub stkms_unusable: u64,
    /// [`Event::KeyMissing`] given out (LTKM Requests asked for).
    pub key_requests: u64,
    /// TEKs installed.
    pub teks_installed: u64,
    /// TEKs withdrawn after a refusal about rights.
    pub teks_withdrawn: u64,
    /// SRTP packets handed in.
    pub packets_in: u64,
    /// SRTP packets opened.
    pub packets_out: u64,
    /// SRTCP packets handed in.
    pub rtcp_in: u64,
    /// SRTCP packets opened.
    pub rtcp_out: u64,
    /// Packets (SRTP or SRTCP) dropped for an MKI without installed TEK.
    pub dropped_unknown_mki: u64,
    /// Packets dropped for a wrong tag.
    pub dropped_auth: u64,
    /// Packets dropped as replays or too old.
    pub dropped_replay: u64,
    /// Packets dropped for any other reason (malformed, too many streams, …).
    pub dropped_other: u64,
}

/// State of one SEK/PEK: its receiver and what the card last accepted.
struct Service {
    key_domain: KeyDomainId,
    sek_pek_id: SekPekId,
    receiver: SrtpReceiver,
    /// Installed master keys, newest first (mirrors the receiver's two slots).
    keys: Vec<SrtpMasterKey>,
    /// TS of the last STKM the card accepted.
    last_ts: Option<u32>,
    /// Highest TEK ID the card accepted.
    last_tek_id: Option<TekId>,
    /// The clear OMA BCAST extension of that STKM.
    accepted_ext: Option<StkmExt>,
    /// When the card last accepted an STKM of this key.
    last_card: Option<Instant>,
    /// The card refused a re-checked resend with 9865: MBMS-form key, resends stay in the ME.
    no_resend_checks: bool,
    last_used: Instant,
}

impl Service {
    fn has(&self, mki: Mki) -> bool {
        self.keys.iter().any(|k| k.mki() == mki)
    }

    fn withdraw(&mut self) -> Vec<Mki> {
        let gone: Vec<Mki> = self.keys.drain(..).map(|k| k.mki()).collect();
        for m in &gone {
            self.receiver.remove_key(*m);
        }
        gone
    }
}

/// The sans-IO live-watching core; see the module documentation.
pub struct Watcher {
    config: WatchConfig,
    services: Vec<Service>,
    /// Keys asked for, with when (oldest first).
    requested: Vec<((KeyDomainId, SekPekId), Instant)>,
    /// Index of the service that opened the last packet (tried first).
    last_hit: usize,
    stats: WatchStats,
    /// The content-protection state (K_sac, TBKs): unwraps channel- and TBK-wrapped TEKs.
    protection: Option<crate::protection::ProtectionState>,
}

impl core::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mkis: Vec<Mki> = self.services.iter().flat_map(|s| s.keys.iter().map(SrtpMasterKey::mki)).collect();
        f.debug_struct("Watcher")
            .field("config", &self.config)
            .field("mkis", &mkis)
            .field("stats", &self.stats)
            .finish()
    }
}

/// 32-bit SEK/PEK ID as the MKI takes it.
fn sek_u32(id: SekPekId) -> u32 {
    u32::from_be_bytes(id.to_bytes())
}

impl Watcher {
    /// A watcher holding no TEK yet.
    #[must_use]
    pub fn new(config: WatchConfig) -> Self {
        Watcher {
            config,
            services: Vec::new(),
            requested: Vec::new(),
            last_hit: 0,
            stats: WatchStats::default(),
            protection: None,
        }
    }

    /// Gives the watcher the terminal's content-protection state: TEKs the card releases
    /// wrapped for the secure authenticated channel (P-10) or under a terminal binding key
    /// (P-11.5) are then unwrapped with it ([`crate::protection::usable_tek_for`]) instead of
    /// being [`Unusable`]. Replaces an earlier state (e.g. after the channel was established
    /// again).
    pub fn set_protection(&mut self, state: crate::protection::ProtectionState) {
        self.protection = Some(state);
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> WatchStats {
        self.stats
    }

    /// MKIs of every installed TEK.
    pub fn mkis(&self) -> impl Iterator<Item = Mki> + '_ {
        self.services.iter().flat_map(|s| s.keys.iter().map(SrtpMasterKey::mki))
    }

    /// The TEK and salt installed under `mki` (for a recorder: the key a packet was opened
    /// with, see [`Packet::Clear`]).
    #[must_use]
    pub fn master_key(&self, mki: Mki) -> Option<&SrtpMasterKey> {
        self.services.iter().flat_map(|s| s.keys.iter()).find(|k| k.mki() == mki)
    }

    /// Forgets every key state (a new session: the next STKM of each service goes to the card).
    pub fn forget_all(&mut self) {
        self.services.clear();
        self.requested.clear();
        self.last_hit = 0;
    }

    /// Forgets that `key` was asked for, so that the next "key not found" asks again at once
    /// (e.g. after the LTKM Request failed).
    pub fn forget_request(&mut self, key_domain: KeyDomainId, sek_pek_id: SekPekId) {
        self.requested.retain(|(k, _)| *k != (key_domain, sek_pek_id));
    }

    fn service_index(&self, key_domain: KeyDomainId, sek_pek_id: SekPekId) -> Option<usize> {
        self.services.iter().position(|s| s.key_domain == key_domain && s.sek_pek_id == sek_pek_id)
    }

    /// The service of the key, made (evicting the least recently used beyond the bound) when new.
    fn service_mut(
        &mut self,
        key_domain: KeyDomainId,
        sek_pek_id: SekPekId,
        policy: SrtpPolicy,
        now: Instant,
    ) -> usize {
        if let Some(i) = self.service_index(key_domain, sek_pek_id) {
            return i;
        }
        if self.services.len() >= self.config.max_services.max(1)
            && let Some((oldest, _)) = self.services.iter().enumerate().min_by_key(|(_, s)| s.last_used)
        {
            self.services.swap_remove(oldest);
            self.last_hit = 0;
        }
        self.services.push(Service {
            key_domain,
            sek_pek_id,
            receiver: SrtpReceiver::new(policy),
            keys: Vec::new(),
            last_ts: None,
            last_tek_id: None,
            accepted_ext: None,
            last_card: None,
            no_resend_checks: false,
            last_used: now,
        });
        self.services.len() - 1
    }

    /// Handles one STKM datagram received at `now`: drop it, skip the card, or ask `holder`
    /// for its TEK and install it. Never answers on the network (P-6).
    pub fn handle_stkm<K: MbmsKeyHolder + ?Sized>(&mut self, holder: &mut K, stkm: &[u8], now: Instant) -> Event {
        self.stats.stkms_in += 1;
        let event = self.stkm_event(holder, stkm, now);
        let s = &mut self.stats;
        match &event {
            Event::TekInstalled { .. } => {
                s.stkms_accepted += 1;
                s.teks_installed += 1;
            }
            Event::TekConfirmed { .. } => s.stkms_accepted += 1,
            Event::ResendSkipped { .. } => s.stkms_skipped += 1,
            Event::Stale { .. } => s.stkms_stale += 1,
            Event::KeyMissing { .. } => {
                s.stkms_refused += 1;
                s.key_requests += 1;
            }
            Event::AwaitingKey { .. } => s.stkms_refused += 1,
            Event::Refused { withdrawn, .. } => {
                s.stkms_refused += 1;
                s.teks_withdrawn += withdrawn.len() as u64;
            }
            Event::Unusable { .. } => s.stkms_unusable += 1,
            Event::Malformed(_) => s.stkms_malformed += 1,
        }
        event
    }

    fn stkm_event<K: MbmsKeyHolder + ?Sized>(&mut self, holder: &mut K, bytes: &[u8], now: Instant) -> Event {
        let stkm = match Stkm::decode(bytes) {
            Ok(s) => s,
            Err(e) => return Event::Malformed(e),
        };
        let (key_domain, sek_pek_id, tek_id, ts) = (stkm.key_domain_id(), stkm.sek_pek_id(), stkm.tek_id(), stkm.ts());
        let ext = stkm.ext().cloned();
        let mki = Mki::new(sek_u32(sek_pek_id), tek_id);
        // Checked before the card: a key with rights would be spent on a stream we cannot open.
        if let Some(e) = &ext
            && e.traffic_protection_protocol != TrafficProtectionProtocol::Srtp
        {
            return Event::Unusable { key_domain, mki, reason: Unusable::NotSrtp(e.traffic_protection_protocol) };
        }
        let mut resend = false;
        if let Some(i) = self.service_index(key_domain, sek_pek_id) {
            let svc = &mut self.services[i];
            // 1. Stale: TS or TEK ID not above what the card accepted (TS 33.246 §6.4.6).
            let stale_ts = svc.last_ts.is_some_and(|last| !serial_gt(ts, last));
            let stale_tek = svc.last_tek_id.is_some_and(|last| tek_id < last);
            if stale_ts || stale_tek {
                return Event::Stale { key_domain, sek_pek_id, tek_id, ts };
            }
            // 2. A resend for an installed TEK skips the card while the last check is recent.
            if svc.has(mki) {
                resend = true;
                let recent = svc.last_card.is_some_and(|t| now.saturating_duration_since(t) < self.config.card_recheck);
                if svc.accepted_ext == ext && (recent || svc.no_resend_checks) {
                    svc.last_used = now;
                    return Event::ResendSkipped { key_domain, mki };
                }
            }
        }
        match holder.mtk_generation(bytes) {
            Ok(out) => self.install(key_domain, sek_pek_id, tek_id, ts, ext, out, now),
            Err(error) => self.refused(key_domain, sek_pek_id, tek_id, error, resend, now),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn install(
        &mut self,
        key_domain: KeyDomainId,
        sek_pek_id: SekPekId,
        tek_id: TekId,
        ts: u32,
        ext: Option<StkmExt>,
        out: TekOut,
        now: Instant,
    ) -> Event {
        let mki = Mki::new(sek_u32(sek_pek_id), tek_id);
        // A wrapped TEK becomes a clear one when the protection state holds its key; the unwrap
        // error itself is not kept (it names no key, and the reason below says enough).
        let out = match (out, &self.protection) {
            (out @ (TekOut::TbkWrapped { .. } | TekOut::ChannelWrapped(_)), Some(state)) => {
                let tbk_id = ext.as_ref().and_then(|e| e.tbk_id);
                let wrapped_reason = match &out {
                    TekOut::TbkWrapped { .. } => Unusable::TbkWrapped,
                    _ => Unusable::ChannelWrapped,
                };
                match crate::protection::usable_tek_for(state, out, tbk_id) {
                    Ok((tek, salt)) => TekOut::Clear { tek, salt },
                    Err(_) => return Event::Unusable { key_domain, mki, reason: wrapped_reason },
                }
            }
            (out, _) => out,
        };
        let (tek, salt) = match out {
            TekOut::Clear { tek, salt: Some(salt) } => (tek, salt),
            TekOut::Clear { salt: None, .. } => return Event::Unusable { key_domain, mki, reason: Unusable::NoSalt },
            TekOut::TbkWrapped { .. } => return Event::Unusable { key_domain, mki, reason: Unusable::TbkWrapped },
            TekOut::ChannelWrapped(_) => {
                return Event::Unusable { key_domain, mki, reason: Unusable::ChannelWrapped };
            }
        };
        // No tag when the (now verified) STKM says the traffic carries none (P-9).
        let policy = match &ext {
            Some(e) if !e.traffic_authentication => SrtpPolicy::unauthenticated(),
            _ => self.config.srtp_policy,
        };
        let i = self.service_mut(key_domain, sek_pek_id, policy, now);
        let svc = &mut self.services[i];
        if svc.receiver.policy() != policy {
            // The stream's authentication changed: start a receiver with the new policy.
            svc.keys.clear();
            svc.receiver = SrtpReceiver::new(policy);
        }
        svc.last_ts = Some(ts);
        svc.last_tek_id = Some(svc.last_tek_id.map_or(tek_id, |t| t.max(tek_id)));
        svc.accepted_ext = ext;
        svc.last_card = Some(now);
        svc.last_used = now;
        let key = SrtpMasterKey::new(mki, tek, salt);
        if let Some(held) = svc.keys.iter().find(|k| k.mki() == mki) {
            if held.key() == key.key() && held.salt() == key.salt() {
                return Event::TekConfirmed { key_domain, mki };
            }
            // Same MKI, other key (the card's answer wins): replace in place.
            svc.receiver.add_key(&key);
            svc.keys.retain(|k| k.mki() != mki);
            svc.keys.insert(0, key);
            return Event::TekInstalled { key_domain, mki, dropped: None };
        }
        svc.no_resend_checks = false;
        let dropped = svc.receiver.add_key(&key);
        svc.keys.insert(0, key);
        svc.keys.truncate(2);
        Event::TekInstalled { key_domain, mki, dropped }
    }

    fn refused(
        &mut self,
        key_domain: KeyDomainId,
        sek_pek_id: SekPekId,
        tek_id: TekId,
        error: CardOpError,
        resend: bool,
        now: Instant,
    ) -> Event {
        let index = self.service_index(key_domain, sek_pek_id);
        let card_error = match &error {
            CardOpError::Card(e) => Some(e),
            _ => None,
        };
        let withdrawn = match (index, card_error) {
            (Some(i), Some(CardError::KeyNotFound | CardError::ConditionsOfUse(_) | CardError::SecurityStatus(_))) => {
                self.services[i].withdraw()
            }
            (Some(i), Some(CardError::Freshness(_))) if resend => {
                // An MBMS-form key: the card takes no repeated TEK ID; keep the TEK (point 3).
                self.services[i].no_resend_checks = true;
                Vec::new()
            }
            _ => Vec::new(),
        };
        if let Some(CardError::KeyNotFound) = card_error {
            let key = (key_domain, sek_pek_id);
            let interval = self.config.key_request_interval;
            let recent = self.requested.iter().filter(|(_, at)| now.saturating_duration_since(*at) < interval).count();
            let held = self.requested.iter().position(|(k, _)| *k == key);
            let due = match held {
                Some(i) if now.saturating_duration_since(self.requested[i].1) < interval => false,
                _ if recent >= self.config.max_key_requests => false,
                Some(i) => {
                    self.requested.remove(i);
                    true
                }
                None => true,
            };
            if due {
                if self.requested.len() >= MAX_REMEMBERED_REQUESTS {
                    self.requested.remove(0);
                }
                self.requested.push((key, now));
            }
            self.stats.teks_withdrawn += withdrawn.len() as u64;
            return if due {
                Event::KeyMissing { key_domain, sek_pek_id }
            } else {
                Event::AwaitingKey { key_domain, sek_pek_id }
            };
        }
        Event::Refused { key_domain, sek_pek_id, tek_id, error, withdrawn }
    }

    /// Opens the SRTP packet that fills `buf` in place: on [`Packet::Clear`] the RTP packet is
    /// `buf[..len]`. `now` orders the key states for eviction.
    pub fn handle_srtp(&mut self, buf: &mut [u8], now: Instant) -> Packet {
        self.stats.packets_in += 1;
        let p = self.open(buf, now, |r, b| r.unprotect_in(b), |n| n);
        if matches!(p, Packet::Clear { .. }) {
            self.stats.packets_out += 1;
        }
        p
    }

    /// Opens the SRTCP packet that fills `buf` in place (same master keys and MKI, P-9).
    pub fn handle_srtcp(&mut self, buf: &mut [u8], now: Instant) -> Packet {
        self.stats.rtcp_in += 1;
        // After the RTCP packet: E‖index (4), then the MKI.
        let p = self.open(buf, now, |r, b| r.unprotect_rtcp_in(b), |n| n + SRTCP_INDEX_LEN);
        if matches!(p, Packet::Clear { .. }) {
            self.stats.rtcp_out += 1;
        }
        p
    }

    /// Tries the receivers (the last one that opened a packet first) until one holds the
    /// packet's MKI. `mki_at` maps the clear length to where the MKI still sits in `buf`.
    fn open(
        &mut self,
        buf: &mut [u8],
        now: Instant,
        unprotect: impl Fn(&mut SrtpReceiver, &mut [u8]) -> Result<usize, SrtpError>,
        mki_at: impl Fn(usize) -> usize,
    ) -> Packet {
        let n = self.services.len();
        let mut unknown = SrtpError::UnknownMki(Mki::from_bytes([0; MKI_LEN]));
        for step in 0..n {
            let i = (self.last_hit + step) % n;
            match unprotect(&mut self.services[i].receiver, buf) {
                Err(SrtpError::UnknownMki(m)) => unknown = SrtpError::UnknownMki(m),
                Ok(len) => {
                    self.last_hit = i;
                    self.services[i].last_used = now;
                    let at = mki_at(len);
                    // The trailer is left in place by the in-place unprotect.
                    let mki = buf.get(at..at + MKI_LEN).and_then(|b| b.try_into().ok()).map(Mki::from_bytes);
                    return match mki {
                        Some(mki) => Packet::Clear { len, mki },
                        None => self.dropped(SrtpError::TooShort { what: "MKI", needed: at + MKI_LEN, len: buf.len() }),
                    };
                }
                Err(e) => return self.dropped(e),
            }
        }
        self.dropped(unknown)
    }

    fn dropped(&mut self, e: SrtpError) -> Packet {
        let s = &mut self.stats;
        match e {
            SrtpError::UnknownMki(_) => s.dropped_unknown_mki += 1,
            SrtpError::AuthFailed => s.dropped_auth += 1,
            SrtpError::Replayed { .. } | SrtpError::TooOld { .. } => s.dropped_replay += 1,
            _ => s.dropped_other += 1,
        }
        Packet::Dropped(e)
    }
}

/// Where a recorder (or any observer) hooks into the shell's loop; every method has an empty
/// default. Called right after the watcher handled the input, so [`Watcher::master_key`] still
/// has the packet's key.
pub trait MediaTap: Send {
    /// An STKM datagram received at `at`, and what it led to.
    fn stkm(&mut self, at: Instant, stkm: &[u8], event: &Event) {
        let _ = (at, stkm, event);
    }
    /// A clear RTP packet, opened with `key`.
    fn rtp(&mut self, at: Instant, rtp: &[u8], key: &SrtpMasterKey) {
        let _ = (at, rtp, key);
    }
    /// A clear RTCP packet, opened with `key`.
    fn rtcp(&mut self, at: Instant, rtcp: &[u8], key: &SrtpMasterKey) {
        let _ = (at, rtcp, key);
    }
}

/// A tap that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTap;

impl MediaTap for NoTap {}

#[cfg(test)]
mod tests;
