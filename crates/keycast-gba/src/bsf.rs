//! The BSF core: the Ub exchange of TS 24.109 §4 with HTTP Digest AKA (RFC 3310, `AKAv1-MD5`,
//! `qop="auth-int"`), the HSS role (subscribers, SQN) and the Zn key answers for NAFs.
//!
//! Sans-IO: [`Bsf::handle_ub`] takes one request (method, Request-URI, `Authorization`, body),
//! the store, the time (Unix seconds) and a [`RandomSource`], and returns the response (status,
//! headers, body) plus a [`BsfEvent`] for metrics. [`zn_keys`] answers a NAF.
//!
//! # Flow (facts-3gpp.md §2.1)
//! 1. Initial request, `Authorization: Digest username="<IMPI>", realm="<domain>", nonce="",
//!    uri="/", response=""` → **401** with `WWW-Authenticate: Digest realm="<domain>",
//!    nonce="<base64(RAND ‖ AUTN ‖ server data)>", algorithm=AKAv1-MD5, qop="auth-int",
//!    opaque="…"`. For a GBA_U subscriber AUTN is AUTN* (MAC* = MAC ⊕ Trunc(SHA-1(IK))).
//! 2. Answer computed with RES → **200** with `Authentication-Info` (`rspauth` with XRES as the
//!    password, echoing `qop`, `cnonce`, `nc`), `Content-Type: application/vnd.3gpp.bsf+xml` and
//!    the `BootstrappingInfo` body (B-TID = base64(RAND)@domain, lifetime, currenttime). The
//!    expected password is XRES, **with its LSB flipped for GBA_U** (TS 33.220 §5.3.2).
//! 3. Answer with `auts` (computed with the empty password) → SQN resynchronised from AUTS and
//!    a fresh **401**; an AUTS whose MAC-S fails → **403**.
//!
//! # Nonce layout
//! [`NonceIssuer::issue_ub`]: base64(RAND (16) ‖ AUTN (16) ‖ 0x01 ‖ issued-at (8) ‖ tag (16)),
//! 76 characters; the tag is a truncated HMAC-SHA-256 under a key derived from the server secret,
//! so authenticity and age are checked without state. The tag is also the key of the
//! The [`Pending`] record of the challenge, kept under its RAND, makes the nonce **single-use**
//! (taken from the store on the first answer, whatever its outcome) across restarts; the in-memory [`NcTracker`]
//! ([`NcPolicy::SingleUse`]) refuses any second verified answer as well. `opaque` is
//! hex(HMAC(server-derived key, nonce))[..32] and must be echoed.
//!
//! # Policies
//! - **Malformed requests → 400** with a short `text/plain` reason: no or unparsable
//!   `Authorization`, non-Digest scheme, username empty or over 255 octets, realm not this BSF,
//!   algorithm other than `AKAv1-MD5`, answer without `qop=auth-int`, `uri` not naming the
//!   Request-URI, `opaque` not the one sent, an initial request carrying `response` or `auts`.
//! - **Nonce problems → 401 with a fresh challenge**: forged/foreign/future nonce, replayed nonce
//!   or nc; an expired nonce gets `stale=true`.
//! - **Wrong RES → 401 with a fresh challenge**, counted per username (known or not). At the
//!   [`BsfConfig::max_failures`]-th consecutive failure within [`BsfConfig::failure_window`]
//!   seconds the answer is **403** (24.109 §4.3 "report failure") and the count restarts, so the
//!   UE may begin a new run; a success clears the count.
//! - **No user enumeration**: an unknown IMPI gets a challenge built from a fake subscriber
//!   whose K, OPc and SQN are HMACs of the IMPI under a server-derived key (AMF
//!   [`BsfConfig::fake_amf`]), with a random RAND and the same Milenage work, so status, header
//!   set, value lengths and timing match; its answers fail exactly like a wrong RES (401, then
//!   403), and its AUTS fails like a bad MAC-S (403).
//! - **SQN**: see [`sqn`] (step 32, IND unused; resync: SQN_MS + step). The store advances SQN_HE
//!   and records the pending challenge in one atomic step ([`BsfStore::start_run`]).
//! - **Concurrent runs of one IMPI**: every challenge is independent (its own RAND, SQN and
//!   pending record); each can be answered once; a later success replaces the earlier session.
//! - Store failures, SQN exhaustion → 500 (`log_detail` says why; the body does not).
//!
//! # Concurrency
//! [`Bsf::handle_ub`] takes `&self`: one value serves any number of concurrent requests. Its
//! own state (nc tracker, failure counts, counters) sits behind short synchronous locks that
//! are never held across an `.await`, so requests wait for each other only in the store.

pub mod http;
pub mod metrics;
pub mod rng;
pub mod sql;
pub mod sqn;
pub mod store;
pub mod zn;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use keycast_crypto::gba::{b_tid, ks_from_ck_ik};
use keycast_crypto::hmac::hmac_sha256;
use keycast_crypto::keys::{Opc, SubscriberKey};
use keycast_crypto::milenage::{Milenage, flip_res_lsb, gba_u_mac_star, sqn_from_u64, sqn_to_u64};
use keycast_provisioning::bootstrapping::{BootstrappingInfo, CONTENT_TYPE};
use keycast_provisioning::digest::{
    Algorithm, Challenge, Credentials, NcPolicy, NcTracker, NonceCount, NonceError, NonceInfo, NonceIssuer, NonceKind,
    Password, Qop, VerifyError, uri_names_request,
};
use thiserror::Error;
use zeroize::Zeroizing;

pub use metrics::{BsfEvent, BsfMetrics, FailureCause};
pub use rng::{RandomSource, SeededRandom};
pub use sql::{PgStore, SqliteStore, StorageKey, StorageKeyError};
pub use sqn::{SQN_MAX, SqnScheme};
pub use store::{
    BsfStore, GbaType, MemoryStore, Pending, Purged, RunStart, Session, SqnAdvance, StoreError, Subscriber,
    SubscriberSummary, TakenRun,
};
pub use zn::{ZnAnswer, ZnError, ZnKeys, ZnRequest, zn_keys};

/// Longest IMPI accepted (an NAI, RFC 7542, is at most 253 octets).
pub const MAX_IMPI_LEN: usize = 255;

/// BSF configuration.
#[derive(Clone)]
pub struct BsfConfig {
    /// BSF domain name: the realm on Ub and the domain part of every B-TID.
    pub domain: String,
    /// Key lifetime (Ks and B-TID), seconds.
    pub key_lifetime: u64,
    /// How long a challenge may be answered, seconds.
    pub nonce_lifetime: u64,
    /// Server secret: the nonce, opaque and fake-vector keys are derived from it. Several BSF
    /// instances sharing a store must share it.
    pub server_secret: Zeroizing<[u8; 32]>,
    /// Consecutive failed answers per username after which the BSF answers 403 (at least 1).
    pub max_failures: u32,
    /// Failures further apart than this (seconds) are not consecutive.
    pub failure_window: u64,
    /// How SQN advances.
    pub sqn: SqnScheme,
    /// AMF of fake vectors for unknown IMPIs; set it to the AMF real subscribers use, since AMF
    /// travels in clear inside AUTN.
    pub fake_amf: [u8; 2],
    /// Nonces remembered by the nc tracker.
    pub nc_capacity: usize,
    /// Usernames whose failure counts are remembered.
    pub failure_capacity: usize,
    /// NAF FQDNs allowed on Zn (see [`Bsf::zn_keys`]).
    pub authorised_nafs: Vec<String>,
}

impl core::fmt::Debug for BsfConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BsfConfig")
            .field("domain", &self.domain)
            .field("key_lifetime", &self.key_lifetime)
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("max_failures", &self.max_failures)
            .field("failure_window", &self.failure_window)
            .field("sqn", &self.sqn)
            .field("fake_amf", &self.fake_amf)
            .field("authorised_nafs", &self.authorised_nafs)
            .finish_non_exhaustive()
    }
}

impl BsfConfig {
    /// A configuration with defaults [chosen by Keycast]: key lifetime 24 h, nonce lifetime
    /// 300 s, 3 consecutive failures within 1 h, SQN step 32, fake AMF `8000`, 65 536 tracked
    /// nonces and usernames, no authorised NAF.
    #[must_use]
    pub fn new(domain: &str, server_secret: [u8; 32]) -> Self {
        BsfConfig {
            domain: domain.to_owned(),
            key_lifetime: 86_400,
            nonce_lifetime: 300,
            server_secret: Zeroizing::new(server_secret),
            max_failures: 3,
            failure_window: 3600,
            sqn: SqnScheme::default(),
            fake_amf: [0x80, 0x00],
            nc_capacity: 65_536,
            failure_capacity: 65_536,
            authorised_nafs: Vec::new(),
        }
    }
}

/// A configuration the BSF cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The domain is empty, longer than 253 octets, or holds characters other than ASCII
    /// letters, digits, `.`, `-` and `:`.
    #[error("BSF domain must be a DNS name (optionally with a port)")]
    InvalidDomain,
    /// A lifetime or the failure limit is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
}

/// One Ub request, as the HTTP shell received it.
#[derive(Debug, Clone, Copy)]
pub struct UbRequest<'a> {
    /// HTTP method (normally `GET`).
    pub method: &'a str,
    /// Request-URI (normally `/`).
    pub uri: &'a str,
    /// The `Authorization` header value, if any.
    pub authorization: Option<&'a str>,
    /// The `User-Agent` header value, if any (not used yet: TMPI is not supported).
    pub user_agent: Option<&'a str>,
    /// Entity body (covered by `qop=auth-int`).
    pub body: &'a [u8],
}

/// The response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UbResponse {
    /// 200, 400, 401, 403 or 500.
    pub status: u16,
    /// Header fields (name, value), in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// What happened, for metrics and logs (never sent).
    pub event: BsfEvent,
    /// Detail for the log on a 500 (never sent).
    pub log_detail: Option<String>,
}

impl UbResponse {
    /// The value of the first header with this name (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn text(status: u16, reason: &str, event: BsfEvent) -> Self {
        UbResponse {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: reason.as_bytes().to_vec(),
            event,
            log_detail: None,
        }
    }

    fn bad_request(reason: &str) -> Self {
        Self::text(400, reason, BsfEvent::Rejected(FailureCause::MalformedRequest))
    }

    fn forbidden(cause: FailureCause) -> Self {
        Self::text(403, "bootstrapping failed", BsfEvent::Rejected(cause))
    }
}

/// Why a request could not be served at all (→ 500).
enum Halt {
    Store(StoreError),
    SqnExhausted(String),
    Internal(&'static str),
}

impl From<StoreError> for Halt {
    fn from(e: StoreError) -> Self {
        Halt::Store(e)
    }
}

/// Why a challenge is being sent: it decides the event, `stale` and the SQN base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// Answer to an initial request.
    Initial,
    /// A refused answer; `ExpiredNonce` sets `stale=true`.
    Rejected(FailureCause),
    /// After a verified AUTS carrying this SQN_MS.
    Resync(u64),
}

#[derive(Debug, Clone, Copy)]
struct FailureRecord {
    count: u32,
    last: u64,
}

/// The BSF: configuration, nonce issuer, nc tracker, failure counts and metrics. One value
/// serves any number of concurrent requests (`&self`); the store and the clock come with each
/// call.
pub struct Bsf {
    config: BsfConfig,
    issuer: NonceIssuer,
    nc: Mutex<NcTracker>,
    opaque_key: Zeroizing<[u8; 32]>,
    fake_key: Zeroizing<[u8; 32]>,
    failures: Mutex<HashMap<String, FailureRecord>>,
    metrics: Mutex<BsfMetrics>,
}

/// Locks a mutex of the core. Each guarded value stays consistent whatever panicked while it
/// was held (every update is one map or counter operation), so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl core::fmt::Debug for Bsf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Bsf").field("config", &self.config).field("metrics", &self.metrics()).finish_non_exhaustive()
    }
}

fn derive_key(secret: &[u8; 32], label: &[u8]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(hmac_sha256(secret, &[b"keycast-bsf ", label]))
}

fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
}

/// AUTN (or AUTN* for GBA_U) = (SQN ⊕ AK) ‖ AMF ‖ MAC-A (or MAC*).
fn build_autn(m: &Milenage, rand: &[u8; 16], sqn: u64, amf: [u8; 2], gba_type: GbaType) -> [u8; 16] {
    let sqn = sqn_from_u64(sqn);
    let out = m.all(rand, sqn, amf);
    let mut autn = [0u8; 16];
    for i in 0..6 {
        autn[i] = sqn[i] ^ out.ak[i];
    }
    autn[6..8].copy_from_slice(&amf);
    let mac = match gba_type {
        GbaType::GbaU => gba_u_mac_star(&out.mac_a, &out.ik),
        GbaType::GbaMe => out.mac_a,
    };
    autn[8..].copy_from_slice(&mac);
    autn
}

impl Bsf {
    /// A BSF with this configuration.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn new(config: BsfConfig) -> Result<Self, ConfigError> {
        if !valid_domain(&config.domain) {
            return Err(ConfigError::InvalidDomain);
        }
        if config.key_lifetime == 0 {
            return Err(ConfigError::Zero("key_lifetime"));
        }
        if config.nonce_lifetime == 0 {
            return Err(ConfigError::Zero("nonce_lifetime"));
        }
        if config.max_failures == 0 {
            return Err(ConfigError::Zero("max_failures"));
        }
        let nonce_key = derive_key(&config.server_secret, b"nonce");
        let issuer = NonceIssuer::new(*nonce_key, config.nonce_lifetime);
        let nc = NcTracker::new(NcPolicy::SingleUse, config.nc_capacity, config.nonce_lifetime);
        Ok(Bsf {
            opaque_key: derive_key(&config.server_secret, b"opaque"),
            fake_key: derive_key(&config.server_secret, b"fake-subscriber"),
            issuer,
            nc: Mutex::new(nc),
            config,
            failures: Mutex::new(HashMap::new()),
            metrics: Mutex::new(BsfMetrics::default()),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &BsfConfig {
        &self.config
    }

    /// Counters over every request handled so far (a copy).
    #[must_use]
    pub fn metrics(&self) -> BsfMetrics {
        lock(&self.metrics).clone()
    }

    /// Zn with this BSF's [`BsfConfig::authorised_nafs`]; see [`zn_keys`].
    ///
    /// # Errors
    /// [`ZnError`].
    pub async fn zn_keys<S: BsfStore>(
        &self,
        store: &S,
        request: &ZnRequest<'_>,
        now: u64,
    ) -> Result<ZnAnswer, ZnError> {
        zn_keys(store, &self.config.authorised_nafs, request, now).await
    }

    /// Handles one Ub request at time `now` (Unix seconds). Never panics on any input. The
    /// store's writes are committed when the returned future completes, so the response can go.
    pub async fn handle_ub<S: BsfStore, R: RandomSource + ?Sized>(
        &self,
        store: &S,
        request: &UbRequest<'_>,
        now: u64,
        rng: &mut R,
    ) -> UbResponse {
        let response = match self.process(store, request, now, rng).await {
            Ok(r) => r,
            Err(halt) => {
                let (cause, detail) = match halt {
                    Halt::Store(e) => (FailureCause::StoreFailure, e.to_string()),
                    Halt::SqnExhausted(impi) => (FailureCause::SqnExhausted, format!("SQN space exhausted for {impi}")),
                    Halt::Internal(what) => (FailureCause::Internal, what.to_owned()),
                };
                let mut r = UbResponse::text(500, "internal error", BsfEvent::Rejected(cause));
                r.log_detail = Some(detail);
                r
            }
        };
        lock(&self.metrics).record(&response.event);
        response
    }

    async fn process<S: BsfStore, R: RandomSource + ?Sized>(
        &self,
        store: &S,
        req: &UbRequest<'_>,
        now: u64,
        rng: &mut R,
    ) -> Result<UbResponse, Halt> {
        let Some(header) = req.authorization else {
            return Ok(UbResponse::bad_request("missing Authorization header"));
        };
        let creds = match Credentials::parse(header) {
            Ok(c) => c,
            Err(e) => return Ok(UbResponse::bad_request(&e.reason())),
        };
        if creds.username.is_empty() || creds.username.len() > MAX_IMPI_LEN {
            return Ok(UbResponse::bad_request("username must be an IMPI of 1 to 255 octets"));
        }
        if !creds.realm.eq_ignore_ascii_case(&self.config.domain) {
            return Ok(UbResponse::bad_request("realm does not name this BSF"));
        }
        if creds.algorithm.as_ref().is_some_and(|a| *a != Algorithm::AkaV1Md5) {
            return Ok(UbResponse::bad_request("algorithm must be AKAv1-MD5"));
        }
        if creds.nonce.is_empty() {
            if !creds.response.is_empty() || creds.auts.is_some() {
                return Ok(UbResponse::bad_request("initial request must have an empty response and no auts"));
            }
            return self.challenge(store, &creds.username, now, rng, Why::Initial).await;
        }
        self.answer(store, req, &creds, now, rng).await
    }

    /// Builds a fresh vector for `impi` (fake for an unknown IMPI), records it as pending and
    /// returns the 401 with the event `why` calls for.
    async fn challenge<S: BsfStore, R: RandomSource + ?Sized>(
        &self,
        store: &S,
        impi: &str,
        now: u64,
        rng: &mut R,
        why: Why,
    ) -> Result<UbResponse, Halt> {
        let mut rand = [0u8; 16];
        rng.fill(&mut rand);
        let advance = match why {
            Why::Resync(sqn_ms) => SqnAdvance::Resync { sqn_ms, scheme: self.config.sqn },
            Why::Initial | Why::Rejected(_) => SqnAdvance::Next(self.config.sqn),
        };
        let pending = Pending {
            impi: impi.to_owned(),
            rand,
            issued_at: now,
            expires_at: now.saturating_add(self.config.nonce_lifetime).saturating_add(1),
        };
        // An unknown IMPI costs the same store round trip and Milenage work as a subscriber.
        let (autn, known) = match store.start_run(impi, advance, pending).await? {
            RunStart::Subscriber(sub) => {
                let m = Milenage::new(&sub.k, &sub.opc);
                (build_autn(&m, &rand, sub.sqn, sub.amf, sub.gba_type), true)
            }
            RunStart::Unknown => {
                let fake = self.fake_subscriber(impi);
                let m = Milenage::new(&fake.k, &fake.opc);
                (build_autn(&m, &rand, fake.sqn, fake.amf, fake.gba_type), false)
            }
            RunStart::SqnExhausted => return Err(Halt::SqnExhausted(impi.to_owned())),
        };
        let nonce = self.issuer.issue_ub(&rand, &autn, now);
        let challenge = Challenge {
            realm: self.config.domain.clone(),
            opaque: Some(self.opaque_for(&nonce)),
            nonce,
            algorithm: Some(Algorithm::AkaV1Md5),
            qop: vec![Qop::AuthInt],
            stale: why == Why::Rejected(FailureCause::ExpiredNonce),
            other: Vec::new(),
        };
        let value = challenge.to_header_value().map_err(|_| Halt::Internal("challenge cannot be formatted"))?;
        Ok(UbResponse {
            status: 401,
            headers: vec![("WWW-Authenticate".into(), value)],
            body: Vec::new(),
            event: match why {
                Why::Initial => BsfEvent::Challenged { known_impi: known },
                Why::Rejected(cause) => BsfEvent::Rejected(cause),
                Why::Resync(_) => BsfEvent::Resynchronised,
            },
            log_detail: None,
        })
    }

    async fn answer<S: BsfStore, R: RandomSource + ?Sized>(
        &self,
        store: &S,
        req: &UbRequest<'_>,
        creds: &Credentials,
        now: u64,
        rng: &mut R,
    ) -> Result<UbResponse, Halt> {
        let impi = creds.username.as_str();
        if creds.qop != Some(Qop::AuthInt) {
            return Ok(UbResponse::bad_request("qop must be auth-int"));
        }
        if creds.response.is_empty() {
            return Ok(UbResponse::bad_request("response is empty"));
        }
        if !uri_names_request(&creds.uri, req.uri) {
            return Ok(UbResponse::bad_request("uri does not name the Request-URI"));
        }
        let info: NonceInfo = match self.issuer.check(&creds.nonce, now) {
            Ok(info) => info,
            Err(NonceError::Expired { .. }) => {
                return self.challenge(store, impi, now, rng, Why::Rejected(FailureCause::ExpiredNonce)).await;
            }
            Err(_) => return self.challenge(store, impi, now, rng, Why::Rejected(FailureCause::InvalidNonce)).await,
        };
        let NonceKind::Ub { rand, .. } = info.kind else {
            return self.challenge(store, impi, now, rng, Why::Rejected(FailureCause::InvalidNonce)).await;
        };
        if creds.opaque.as_deref() != Some(self.opaque_for(&creds.nonce).as_str()) {
            return Ok(UbResponse::bad_request("opaque does not match the challenge"));
        }
        let Some(TakenRun { pending, subscriber }) = store.take_run(&rand).await? else {
            return self.challenge(store, impi, now, rng, Why::Rejected(FailureCause::ReplayedNonce)).await;
        };
        if pending.impi != impi {
            return self.failed(store, impi, now, rng, FailureCause::IdentityMismatch).await;
        }
        let known = subscriber.is_some();
        let sub = subscriber.unwrap_or_else(|| self.fake_subscriber(impi));
        let wrong = if known { FailureCause::WrongResponse } else { FailureCause::UnknownImpi };
        let m = Milenage::new(&sub.k, &sub.opc);
        let nc = creds.nc.unwrap_or(NonceCount(0));

        if let Some(auts) = creds.auts {
            // RFC 3310 §3.4: with `auts` the response is computed with the empty password.
            if creds.verify_response(&Password::empty(), req.method, req.body).is_err() {
                return self.failed(store, impi, now, rng, wrong).await;
            }
            if lock(&self.nc).accept(&info, nc, now).is_err() {
                return self.challenge(store, impi, now, rng, Why::Rejected(FailureCause::ReplayedNc)).await;
            }
            return match m.recover_sqn_ms(&rand, &auts) {
                Ok(sqn_ms) if known => {
                    let sqn_ms = sqn_to_u64(sqn_ms);
                    self.challenge(store, impi, now, rng, Why::Resync(sqn_ms)).await
                }
                _ => Ok(UbResponse::forbidden(FailureCause::ResyncMacFailure)),
            };
        }

        let (res, ck, ik, _) = m.f2345(&rand);
        let xres = match sub.gba_type {
            GbaType::GbaU => flip_res_lsb(&res),
            GbaType::GbaMe => res,
        };
        let password = Password::from_bytes(xres.expose_secret());
        match creds.verify_response(&password, req.method, req.body) {
            Ok(()) if known => {}
            Err(VerifyError::Malformed) => return Ok(UbResponse::bad_request("response is not 32 hex digits")),
            Ok(()) | Err(_) => return self.failed(store, impi, now, rng, wrong).await,
        }
        if lock(&self.nc).accept(&info, nc, now).is_err() {
            return self.challenge(store, impi, now, rng, Why::Rejected(FailureCause::ReplayedNc)).await;
        }

        // Success.
        let btid = b_tid(&rand, &self.config.domain);
        let expires_at = now.saturating_add(self.config.key_lifetime);
        let xml = BootstrappingInfo::new(&btid, zn::utc(expires_at), Some(zn::utc(now)))
            .map_err(|_| Halt::Internal("B-TID refused by BootstrappingInfo"))?
            .to_xml()
            .into_bytes();
        let auth_info = creds
            .authentication_info(&password, &xml, None)
            .ok()
            .and_then(|i| i.to_header_value().ok())
            .ok_or(Halt::Internal("Authentication-Info cannot be formatted"))?;
        store
            .put_session(Session {
                btid,
                impi: impi.to_owned(),
                ks: ks_from_ck_ik(&ck, &ik),
                rand,
                gba_type: sub.gba_type,
                bootstrapped_at: now,
                expires_at,
            })
            .await?;
        lock(&self.failures).remove(impi);
        Ok(UbResponse {
            status: 200,
            headers: vec![("Authentication-Info".into(), auth_info), ("Content-Type".into(), CONTENT_TYPE.into())],
            body: xml,
            event: BsfEvent::Bootstrapped { gba_type: sub.gba_type },
            log_detail: None,
        })
    }

    /// A failed answer: counts it, then 403 at the limit, otherwise a fresh challenge.
    async fn failed<S: BsfStore, R: RandomSource + ?Sized>(
        &self,
        store: &S,
        impi: &str,
        now: u64,
        rng: &mut R,
        cause: FailureCause,
    ) -> Result<UbResponse, Halt> {
        if self.count_failure(impi, now) >= self.config.max_failures {
            lock(&self.failures).remove(impi);
            return Ok(UbResponse::forbidden(FailureCause::TooManyFailures));
        }
        self.challenge(store, impi, now, rng, Why::Rejected(cause)).await
    }

    /// Counts one failure for `impi` and returns the consecutive count. The map is bounded: when
    /// full, counts older than the window go, and if that frees nothing the map is cleared
    /// (a 64-bit RES cannot be guessed, so losing counts costs no security).
    fn count_failure(&self, impi: &str, now: u64) -> u32 {
        let window = self.config.failure_window;
        let mut failures = lock(&self.failures);
        if !failures.contains_key(impi) && failures.len() >= self.config.failure_capacity.max(1) {
            failures.retain(|_, r| now.saturating_sub(r.last) < window);
            if failures.len() >= self.config.failure_capacity.max(1) {
                failures.clear();
            }
        }
        let r = failures.entry(impi.to_owned()).or_insert(FailureRecord { count: 0, last: now });
        if now.saturating_sub(r.last) >= window {
            r.count = 0;
        }
        r.count = r.count.saturating_add(1);
        r.last = now;
        r.count
    }

    fn opaque_for(&self, nonce: &str) -> String {
        hex::encode(&hmac_sha256(&self.opaque_key[..], &[nonce.as_bytes()])[..16])
    }

    /// The fake subscriber of an unknown IMPI: K, OPc and SQN are HMACs of the IMPI, so the same
    /// IMPI always looks the same.
    fn fake_subscriber(&self, impi: &str) -> Subscriber {
        let mac = |label: &[u8]| Zeroizing::new(hmac_sha256(&self.fake_key[..], &[label, impi.as_bytes()]));
        let first16 = |b: &[u8; 32]| -> [u8; 16] { core::array::from_fn(|i| b[i]) };
        let k = mac(b"K");
        let opc = mac(b"OPc");
        let sqn = mac(b"SQN");
        // A 40-bit SEQ-like value with IND = 0, well below the end of the SQN space.
        let sqn = (u64::from_be_bytes([0, 0, 0, sqn[0], sqn[1], sqn[2], sqn[3], sqn[4]]) >> 5) << 5;
        Subscriber {
            impi: impi.to_owned(),
            imsi: String::new(),
            k: SubscriberKey::from_bytes(first16(&k)),
            opc: Opc::from_bytes(first16(&opc)),
            sqn,
            amf: self.config.fake_amf,
            gba_type: GbaType::GbaMe,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        assert!(Bsf::new(BsfConfig::new("bsf.example.org", [0; 32])).is_ok());
        assert!(Bsf::new(BsfConfig::new("bsf.example.org:8080", [0; 32])).is_ok());
        assert_eq!(Bsf::new(BsfConfig::new("", [0; 32])).unwrap_err(), ConfigError::InvalidDomain);
        assert_eq!(Bsf::new(BsfConfig::new("bsf\"x", [0; 32])).unwrap_err(), ConfigError::InvalidDomain);
        let mut c = BsfConfig::new("bsf.example.org", [0; 32]);
        c.nonce_lifetime = 0;
        assert_eq!(Bsf::new(c).unwrap_err(), ConfigError::Zero("nonce_lifetime"));
    }

    #[test]
    fn debug_hides_secrets() {
        let bsf = Bsf::new(BsfConfig::new("bsf.example.org", [0xab; 32])).unwrap();
        let text = format!("{bsf:?}");
        assert!(!text.contains("171"), "{text}");
        assert!(!text.to_lowercase().contains("abab"), "{text}");
    }

    #[test]
    fn fake_subscriber_is_stable_per_impi_and_secret() {
        let bsf = Bsf::new(BsfConfig::new("bsf.example.org", [1; 32])).unwrap();
        let a = bsf.fake_subscriber("a@x");
        assert_eq!(a, bsf.fake_subscriber("a@x"));
        assert_ne!(a.k, bsf.fake_subscriber("b@x").k);
        let other = Bsf::new(BsfConfig::new("bsf.example.org", [2; 32])).unwrap();
        assert_ne!(a.k, other.fake_subscriber("a@x").k);
        assert_eq!(a.sqn % 32, 0);
        assert!(a.sqn < 1 << 40);
    }

    #[test]
    fn failure_counts_are_consecutive_within_the_window_and_bounded() {
        let mut c = BsfConfig::new("bsf.example.org", [1; 32]);
        c.failure_capacity = 2;
        c.failure_window = 100;
        let bsf = Bsf::new(c).unwrap();
        assert_eq!(bsf.count_failure("a", 0), 1);
        assert_eq!(bsf.count_failure("a", 50), 2);
        assert_eq!(bsf.count_failure("a", 150), 1, "outside the window");
        assert_eq!(bsf.count_failure("b", 150), 1);
        assert_eq!(bsf.count_failure("c", 160), 1);
        assert!(lock(&bsf.failures).len() <= 2);
    }
}
