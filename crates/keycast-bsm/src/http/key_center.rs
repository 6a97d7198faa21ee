//! The BSM as NAF Key Center (TS 33.110 §4.5.2; `profile: P-10`) and as the source of terminal
//! binding keys (`profile: P-11.5`), served on the mutually authenticated HTTPS provisioning
//! listener only.
//!
//! | route | request | answer |
//! |---|---|---|
//! | `POST` [`KS_LOCAL_PATH`] | [`KsLocalRequest`] (JSON) | [`KsLocalAnswer`]: B-TID, Ks_local, key lifetime, Counter Limit |
//! | `POST` [`TBK_PATH`] | [`TbkRequest`] (JSON) | [`TbkAnswer`]: the TBK wrapped under a key from the SRK |
//!
//! Both routes sit behind two layers, outermost first: [`require_mutual_tls`] (a request that did
//! not come over HTTPS with a verified client certificate gets `403` before any Digest exchange,
//! as the BCAST_Client_ID rule of seed §6.9.2.1) and [`require_ua_digest`] (HTTP Digest with the
//! B-TID and the SRK, `profile: P-7`; an unknown or expired B-TID gets its `401` there, which tells
//! the terminal to bootstrap again).
//!
//! \[chosen\] (`profile: P-10`) **Wire form.** TS 33.110 defines what the key establishment
//! carries, not how. Keycast uses JSON (`application/json`), binary fields as standard base64 with
//! padding. Request: `{"b_tid", "terminal_id", "iccid", "terminal_appli_id", "uicc_appli_id",
//! "randx"}`; answer: `{"b_tid", "naf_id", "ks_local", "counter_limit", "key_lifetime"}` with
//! `key_lifetime` in Unix seconds (the earlier of now + the configured lifetime and the end of
//! the bootstrapping session, since Ks_local cannot outlive Ks_int_NAF). Field sizes (\[chosen\],
//! within the KDF's limits): Terminal_ID 1..=16 octets (an IMEI(SV) as digits fits), ICCID
//! 1..=20 (the card's ICCID as it uses it in the KDF: 10 BCD octets or up to 20 digits),
//! Terminal_appli_ID 1..=32, UICC_appli_ID 1..=16, RANDx exactly 16; others answer `400`.
//!
//! \[chosen\] (`profile: P-10`) **Authentication.** TS 33.110's "mutually authenticated HTTPS" is
//! the client certificate (the equipment) plus Ua Digest (the subscriber, B-TID); the request's
//! `b_tid` must be the Digest username (else `403`), so a terminal can only get the Ks_local of its
//! own bootstrap. A GBA_ME session has no Ks_int_NAF: `403` with [`GBA_U_REQUIRED_BODY`]. The
//! Ks_int_NAF is the GBA_U record's SMK (`profile: P-7`: SMK = Ks_int_NAF on an MBMS-capable
//! card, the only GBA_U case this BSM serves), so no further Zn query is needed.
//!
//! \[chosen\] (`profile: P-11.5`) **TBKs.** One TBK per terminal_binding_key_id, derived, not
//! stored: `TBK = first 16 octets of HMAC-SHA-256(tbk_secret, "keycast-tbk" ‖ id (4, big-endian))`
//! ([`tbk_for`]), so every BSM node and the broadcaster that wraps TEKs (given the same secret)
//! agree without a table. A broadcast STKM is the same for every receiver, so the binding key is
//! shared by the terminals entitled to it: a terminal gets the TBK of `id` only when one of its
//! purchases that has not ended draws on a key group bound to `id` in
//! [`KeyCenterConfig::tbk_bindings`] (else `403`, [`TBK_NOT_ENTITLED_BODY`]). Delivery: inside the
//! mTLS answer, and wrapped once more, `AES-KW(K_tbk, TBK)` (RFC 3394, 24 octets) with `K_tbk =
//! first 16 octets of HMAC-SHA-256(SRK, "keycast-tbk-wrap")` ([`tbk_wrapping_key`]), so that a TLS
//! terminator in front of the BSM never sees the TBK in the clear and only the Digest-authenticated
//! terminal can unwrap it. Answer: `{"terminal_binding_key_id", "wrapped_tbk"}`.
//!
//! Logs carry the B-TID and the outcome, never a key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keycast_crypto::gba::{self, LocalKeyParams, NafId};
use keycast_crypto::hmac::hmac_sha256;
use keycast_crypto::key_wrap;
use keycast_crypto::keys::{KsIntNaf, Srk, Tbk};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::auth::{Clock, UaGuard, UaIdentity, require_ua_digest, system_clock};
use crate::client_id::Channel;
use crate::domain::{PurchaseKind, TerminalId};
use crate::keys::GbaType;
use crate::store::BsmStore;

/// Path of the Ks_local establishment \[chosen\].
pub const KS_LOCAL_PATH: &str = "/keycenter/ks-local";
/// Path of TBK provisioning \[chosen\].
pub const TBK_PATH: &str = "/keycenter/tbk";
/// Media type of requests and answers \[chosen\].
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// Body of the refusal outside mutually authenticated HTTPS.
pub const MUTUAL_TLS_REQUIRED_BODY: &str = "the key center is served only over HTTPS with a client certificate";
/// Body of the refusal of a GBA_ME session.
pub const GBA_U_REQUIRED_BODY: &str = "GBA_U required: a GBA_ME session has no Ks_int_NAF";
/// Body of the refusal of a TBK the terminal is not entitled to.
pub const TBK_NOT_ENTITLED_BODY: &str = "no purchase entitles this terminal to that terminal binding key";
/// Label of the TBK derivation \[chosen\].
const TBK_LABEL: &[u8] = b"keycast-tbk";
/// Label of the TBK-wrapping key derived from the SRK \[chosen\].
const TBK_WRAP_LABEL: &[u8] = b"keycast-tbk-wrap";
/// Largest request body, octets (the JSON is a few hundred).
const MAX_BODY: usize = 4096;
/// RANDx length (octets) \[chosen\].
pub const RANDX_LEN: usize = 16;

/// The key center's settings.
pub struct KeyCenterConfig {
    /// NAF_Id of the BSM (`profile: P-7`: FQDN ‖ `01 00 00 00 01`), told to the terminal for the
    /// card's Local Key Establishment.
    pub naf_id: NafId,
    /// The Counter Limit given with every Ks_local (P6 of the KDF; 16 octets big-endian).
    pub counter_limit: u128,
    /// How long a Ks_local may be used, seconds (capped by the bootstrapping session).
    pub key_lifetime: u64,
    /// The secret TBKs are derived from ([`tbk_for`]).
    pub tbk_secret: Zeroizing<[u8; 32]>,
    /// Key group → terminal_binding_key_id: purchases drawing on the key group entitle the
    /// terminal to that TBK, and the group's LTKMs name it.
    pub tbk_bindings: BTreeMap<u16, u32>,
}

impl core::fmt::Debug for KeyCenterConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyCenterConfig")
            .field("naf_id", &self.naf_id)
            .field("counter_limit", &self.counter_limit)
            .field("key_lifetime", &self.key_lifetime)
            .field("tbk_bindings", &self.tbk_bindings)
            .finish_non_exhaustive()
    }
}

impl KeyCenterConfig {
    /// Defaults for the BSM `fqdn`: Counter Limit [`DEFAULT_COUNTER_LIMIT`], lifetime
    /// [`DEFAULT_KEY_LIFETIME`], no TBK bindings.
    #[must_use]
    pub fn new(fqdn: &str, tbk_secret: Zeroizing<[u8; 32]>) -> Self {
        KeyCenterConfig {
            naf_id: NafId::mbms(fqdn),
            counter_limit: DEFAULT_COUNTER_LIMIT,
            key_lifetime: DEFAULT_KEY_LIFETIME,
            tbk_secret,
            tbk_bindings: BTreeMap::new(),
        }
    }
}

/// Default Counter Limit: TEKs one Ks_local may carry \[chosen: a day of TEK changes every
/// ten seconds, with room\].
pub const DEFAULT_COUNTER_LIMIT: u128 = 65_536;
/// Default Ks_local lifetime, seconds \[chosen: one day\].
pub const DEFAULT_KEY_LIFETIME: u64 = 86_400;

/// `TBK = first 16 octets of HMAC-SHA-256(secret, "keycast-tbk" ‖ id)` (module docs).
#[must_use]
pub fn tbk_for(secret: &[u8; 32], terminal_binding_key_id: u32) -> Tbk {
    let full = Zeroizing::new(hmac_sha256(secret, &[TBK_LABEL, &terminal_binding_key_id.to_be_bytes()]));
    let mut k = [0u8; 16];
    k.copy_from_slice(&full[..16]);
    let tbk = Tbk::from_bytes(k);
    zeroize::Zeroize::zeroize(&mut k);
    tbk
}

/// `K_tbk = first 16 octets of HMAC-SHA-256(SRK, "keycast-tbk-wrap")` (module docs).
#[must_use]
pub fn tbk_wrapping_key(srk: &Srk) -> Zeroizing<[u8; 16]> {
    let full = Zeroizing::new(hmac_sha256(srk.expose_secret(), &[TBK_WRAP_LABEL]));
    let mut k = Zeroizing::new([0u8; 16]);
    k.copy_from_slice(&full[..16]);
    k
}

/// The Ks_local request (TS 33.110 §4.5.2 step 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KsLocalRequest {
    /// B-TID.
    pub b_tid: String,
    /// Terminal_ID (base64).
    pub terminal_id: String,
    /// ICCID as the card uses it in the KDF (base64).
    pub iccid: String,
    /// Terminal_appli_ID (base64).
    pub terminal_appli_id: String,
    /// UICC_appli_ID (base64).
    pub uicc_appli_id: String,
    /// RANDx (base64, 16 octets).
    pub randx: String,
}

/// The Ks_local answer (TS 33.110 §4.5.2 step 5). `ks_local` is secret: this type does not
/// print it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KsLocalAnswer {
    /// B-TID.
    pub b_tid: String,
    /// NAF_Id of the key center (base64).
    pub naf_id: String,
    /// Ks_local (base64, 32 octets).
    pub ks_local: String,
    /// Counter Limit (base64, 16 octets).
    pub counter_limit: String,
    /// When Ks_local stops being valid (Unix seconds).
    pub key_lifetime: u64,
}

impl core::fmt::Debug for KsLocalAnswer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KsLocalAnswer")
            .field("b_tid", &self.b_tid)
            .field("counter_limit", &self.counter_limit)
            .field("key_lifetime", &self.key_lifetime)
            .finish_non_exhaustive()
    }
}

/// The TBK request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TbkRequest {
    /// The terminal_binding_key_id from an LTKM's OMA BCAST extension (`profile: P-4`).
    pub terminal_binding_key_id: u32,
}

/// The TBK answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TbkAnswer {
    /// The terminal_binding_key_id asked for.
    pub terminal_binding_key_id: u32,
    /// `AES-KW(K_tbk, TBK)` (base64, 24 octets).
    pub wrapped_tbk: String,
}

/// Why the key center refused; its [`IntoResponse`] gives the status and a text body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyCenterError {
    /// Not over HTTPS with a verified client certificate (403).
    #[error("{MUTUAL_TLS_REQUIRED_BODY}")]
    MutualTlsRequired,
    /// The content type is not [`JSON_CONTENT_TYPE`] (415).
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// The body is not the request's JSON, or a field has a wrong size (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request's B-TID is not the authenticated one (403).
    #[error("b_tid is not the B-TID of the Digest authentication")]
    BtidMismatch,
    /// The session is GBA_ME: no Ks_int_NAF exists (403).
    #[error("{GBA_U_REQUIRED_BODY}")]
    GbaURequired,
    /// The terminal is not entitled to the TBK (403).
    #[error("{TBK_NOT_ENTITLED_BODY}")]
    NotEntitled,
    /// The store failed (503).
    #[error("store unavailable")]
    Store,
    /// Our own failure (500).
    #[error("internal error")]
    Internal,
}

impl IntoResponse for KeyCenterError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::MutualTlsRequired | Self::BtidMismatch | Self::GbaURequired | Self::NotEntitled => {
                StatusCode::FORBIDDEN
            }
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Store => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, [(CONTENT_TYPE, "text/plain; charset=utf-8")], self.to_string()).into_response()
    }
}

/// The routes' state: the store (for TBK entitlements), the Ua Digest guard, the clock, the
/// settings.
pub struct KeyCenterState<S> {
    store: S,
    guard: Arc<UaGuard>,
    clock: Clock,
    config: KeyCenterConfig,
}

impl<S> core::fmt::Debug for KeyCenterState<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyCenterState").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<S: BsmStore + Send + Sync> KeyCenterState<S> {
    /// State with the system clock.
    #[must_use]
    pub fn new(store: S, guard: Arc<UaGuard>, config: KeyCenterConfig) -> Self {
        KeyCenterState { store, guard, clock: system_clock(), config }
    }

    /// Replaces the clock (tests; it should be the guard's).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &KeyCenterConfig {
        &self.config
    }
}

/// The key center's routes, for merging into the router of the mutually authenticated HTTPS
/// provisioning listener (module docs).
pub fn key_center_app<S: BsmStore + Send + Sync + 'static>(state: Arc<KeyCenterState<S>>) -> Router {
    let guard = state.guard.clone();
    Router::new()
        .route(KS_LOCAL_PATH, post(ks_local_handler::<S>))
        .route(TBK_PATH, post(tbk_handler::<S>))
        .route_layer(axum::middleware::from_fn_with_state(guard, require_ua_digest))
        // Added last, so it runs first: no Digest challenge outside mutual TLS.
        .route_layer(axum::middleware::from_fn(require_mutual_tls))
        .with_state(state)
}

/// Refuses (403) a request that did not come over HTTPS with a verified client certificate.
pub async fn require_mutual_tls(request: Request, next: Next) -> Response {
    if super::tls::channel_of(request.extensions()) != Channel::MutualTls {
        metrics::counter!("keycast_bsm_key_center_total", "outcome" => "not_mutual_tls").increment(1);
        tracing::info!(uri = %request.uri(), "key center request outside mutual TLS refused");
        return KeyCenterError::MutualTlsRequired.into_response();
    }
    next.run(request).await
}

fn parse_json<'a, T: Deserialize<'a>>(headers: &HeaderMap, body: &'a Bytes) -> Result<T, KeyCenterError> {
    let media = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    if media.as_deref() != Some(JSON_CONTENT_TYPE) {
        return Err(KeyCenterError::UnsupportedMediaType);
    }
    if body.len() > MAX_BODY {
        return Err(KeyCenterError::BadRequest(format!("body over {MAX_BODY} octets")));
    }
    serde_json::from_slice(body).map_err(|e| KeyCenterError::BadRequest(e.to_string()))
}

/// A base64 field whose decoded length is inside `sizes`.
fn field(name: &str, text: &str, sizes: core::ops::RangeInclusive<usize>) -> Result<Vec<u8>, KeyCenterError> {
    let bytes = STANDARD.decode(text).map_err(|_| KeyCenterError::BadRequest(format!("{name}: not base64")))?;
    if !sizes.contains(&bytes.len()) {
        return Err(KeyCenterError::BadRequest(format!(
            "{name}: {} octets, expected {}..={}",
            bytes.len(),
            sizes.start(),
            sizes.end()
        )));
    }
    Ok(bytes)
}

fn outcome(result: Result<Response, KeyCenterError>, route: &'static str, btid: &str) -> Response {
    match result {
        Ok(r) => {
            metrics::counter!("keycast_bsm_key_center_total", "outcome" => "ok").increment(1);
            tracing::info!(btid, route, "key center answered");
            r
        }
        Err(e) => {
            metrics::counter!("keycast_bsm_key_center_total", "outcome" => "refused").increment(1);
            tracing::info!(btid, route, error = %e, "key center refused");
            e.into_response()
        }
    }
}

async fn ks_local_handler<S: BsmStore + Send + Sync>(
    State(state): State<Arc<KeyCenterState<S>>>,
    terminal: UaIdentity,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = ks_local(&state, &terminal, &headers, &body);
    outcome(result, "ks-local", terminal.btid())
}

fn ks_local<S>(
    state: &KeyCenterState<S>,
    terminal: &UaIdentity,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, KeyCenterError> {
    let request: KsLocalRequest = parse_json(headers, body)?;
    if request.b_tid != terminal.btid() {
        return Err(KeyCenterError::BtidMismatch);
    }
    if terminal.gba_type() != GbaType::GbaU {
        return Err(KeyCenterError::GbaURequired);
    }
    let terminal_id = field("terminal_id", &request.terminal_id, 1..=16)?;
    let iccid = field("iccid", &request.iccid, 1..=20)?;
    let terminal_appli_id = field("terminal_appli_id", &request.terminal_appli_id, 1..=32)?;
    let uicc_appli_id = field("uicc_appli_id", &request.uicc_appli_id, 1..=16)?;
    let randx = field("randx", &request.randx, RANDX_LEN..=RANDX_LEN)?;
    // profile: P-7 — for GBA_U (MBMS-capable card) the SMK is Ks_int_NAF.
    let ks_int_naf = KsIntNaf::from_bytes(*terminal.keys.smk().expose_secret());
    let counter_limit = state.config.counter_limit.to_be_bytes();
    let params = LocalKeyParams {
        b_tid: terminal.btid(),
        terminal_id: &terminal_id,
        iccid: &iccid,
        terminal_appli_id: &terminal_appli_id,
        uicc_appli_id: &uicc_appli_id,
        randx: &randx,
        counter_limit: &counter_limit,
    };
    let ks_local = gba::ks_local(&ks_int_naf, &params).map_err(|_| KeyCenterError::Internal)?;
    let now = (state.clock)();
    let answer = KsLocalAnswer {
        b_tid: terminal.btid().to_owned(),
        naf_id: STANDARD.encode(state.config.naf_id.as_bytes()),
        ks_local: STANDARD.encode(ks_local.expose_secret()),
        counter_limit: STANDARD.encode(counter_limit),
        key_lifetime: now.saturating_add(state.config.key_lifetime).min(terminal.keys.lifetime()),
    };
    let json = Zeroizing::new(serde_json::to_vec(&answer).map_err(|_| KeyCenterError::Internal)?);
    // The body leaves in a Vec the response owns; our copies are wiped here.
    drop(Zeroizing::new(answer.ks_local));
    Ok(([(CONTENT_TYPE, JSON_CONTENT_TYPE)], json.to_vec()).into_response())
}

async fn tbk_handler<S: BsmStore + Send + Sync>(
    State(state): State<Arc<KeyCenterState<S>>>,
    terminal: UaIdentity,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = tbk(&state, &terminal, &headers, &body).await;
    outcome(result, "tbk", terminal.btid())
}

async fn tbk<S: BsmStore + Send + Sync>(
    state: &KeyCenterState<S>,
    terminal: &UaIdentity,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, KeyCenterError> {
    let request: TbkRequest = parse_json(headers, body)?;
    let id = request.terminal_binding_key_id;
    let now = (state.clock)();
    if !entitled(state, &TerminalId(terminal.impi().to_owned()), id, now).await? {
        return Err(KeyCenterError::NotEntitled);
    }
    let tbk = tbk_for(&state.config.tbk_secret, id);
    let wrapped = key_wrap::wrap_16(&tbk_wrapping_key(terminal.keys.srk()), tbk.expose_secret());
    let answer = TbkAnswer { terminal_binding_key_id: id, wrapped_tbk: STANDARD.encode(wrapped) };
    let json = serde_json::to_vec(&answer).map_err(|_| KeyCenterError::Internal)?;
    Ok(([(CONTENT_TYPE, JSON_CONTENT_TYPE)], json).into_response())
}

/// Whether a purchase of `terminal` that has not ended at `now` draws on a key group bound to
/// `id`.
async fn entitled<S: BsmStore + Send + Sync>(
    state: &KeyCenterState<S>,
    terminal: &TerminalId,
    id: u32,
    now: u64,
) -> Result<bool, KeyCenterError> {
    let groups: BTreeSet<u16> =
        state.config.tbk_bindings.iter().filter(|(_, bound)| **bound == id).map(|(group, _)| *group).collect();
    if groups.is_empty() {
        return Ok(false);
    }
    let store_error = |e| {
        tracing::warn!(error = %e, "store failed during a TBK request");
        KeyCenterError::Store
    };
    let purchases = state.store.purchases(terminal).await.map_err(store_error)?;
    let purchases: Vec<_> = purchases.into_iter().filter(|p| p.window.until > now).collect();
    if purchases.is_empty() {
        return Ok(false);
    }
    let items = state.store.purchase_items().await.map_err(store_error)?;
    let services = state.store.services().await.map_err(store_error)?;
    let programs = state.store.programs().await.map_err(store_error)?;
    for p in &purchases {
        let drawn: Vec<u16> = match &p.kind {
            PurchaseKind::PayPerView(program) => {
                programs.iter().filter(|pr| &pr.id == program).map(|pr| pr.key_group).collect()
            }
            PurchaseKind::Subscription | PurchaseKind::PayPerTime | PurchaseKind::Tokens(_) => items
                .iter()
                .filter(|i| i.global_id == p.item)
                .flat_map(|i| i.services.iter())
                .filter_map(|s| services.iter().find(|x| &x.id == s))
                .map(|s| s.key_group)
                .collect(),
        };
        if drawn.iter().any(|g| groups.contains(g)) {
            return Ok(true);
        }
    }
    Ok(false)
}
