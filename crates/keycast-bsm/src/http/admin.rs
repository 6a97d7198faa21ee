//! The BSM's administration API: JSON over HTTP on a listener of its own, for the operator's
//! tools (`keycast bsm …`). It edits the catalogue, makes SEK/PEKs when their group's schedule
//! says so, and shows keys (never their bytes) and terminals.
//!
//! Authentication \[chosen\]: `Authorization: Bearer <token>` with the token from the service's
//! configuration, compared in constant time, and accepted only from a loopback peer (the shell
//! must serve with `ConnectInfo<SocketAddr>`); anything else is 401. Operators reach a remote
//! BSM through an SSH tunnel or a local agent.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /admin/v1/services` | — | `[Service]` |
//! | `PUT /admin/v1/services/{id}` | `{name, mcc, mnc, key_group, streaming}` | 204 |
//! | `GET /admin/v1/programs` | — | `[Program]` |
//! | `PUT /admin/v1/programs/{id}` | `{service, key_group, from, until}` | 204; 404 for an unknown service |
//! | `GET /admin/v1/purchase-items` | — | `[PurchaseItem]` |
//! | `PUT /admin/v1/purchase-items/{id}` | `{name, services}` | 204; 404 for an unknown service |
//! | `GET /admin/v1/offers` | — | `[Offer]` |
//! | `PUT /admin/v1/offers/{id}` | `{item, amount, currency, kind, program?, tokens?, period_secs, play_backs?}` | 204; 404 for an unknown item or program; 400 for play_backs on a subscription or tokens offer |
//! | `GET /admin/v1/key-groups/{group}` | — | `[KeyEntry]` without key bytes |
//! | `POST /admin/v1/key-groups/{group}/rollover` | `{mcc, mnc, key_lifetime_secs, lead_secs}` | 201 with the new key's entry and the id of the campaign that pushes it (`campaign`), or 200 `{"due": false}` |
//! | `PUT /admin/v1/key-groups/{group}/keys/{number}/until` | `{until}` | 200 with the key's entry and the id of the campaign that pushes the new window; 404, 409 (overlaps the next key, revoked, not after now) |
//! | `GET /admin/v1/key-groups/{group}/keys/{number}/deliveries` | — | `{rows, terminals, max_version, pending, sent, pull_solicited, acknowledged, failed}`: how the key's deliveries stand |
//! | `GET /admin/v1/campaigns` | — | `[Campaign]`, newest first, with `subscribers` (terminals with purchases) for progress |
//! | `GET /admin/v1/campaigns/{id}` | — | the campaign; 404 |
//! | `POST /admin/v1/terminals/import` | `[{impi, registration?: {address, interface, at}, purchases: [{item, offer, kind, program?, tokens?, from, until}]}]` (at most 8 MiB) | 200 `{"imported": n}`, all or nothing; 404 for an unknown item, offer or program |
//! | `GET /admin/v1/terminals/{impi}` | — | the terminal, its registration and purchases; 404 |
//!
//! A new key, or a moved key end, comes with its campaign (`crate::campaign`), made in the same
//! transaction; the service's campaign runner queues the pushes, spread over the configured
//! window ([`AdminState::with_campaign_spread`]).
//!
//! Times are Unix seconds. Errors are `{"error": "..."}` with 400 (bad body), 401, 404, 409
//! (a key conflict) or 500 (the store).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keycast_crypto::keys::SekPek;
use keycast_mikey::{KeyDomainId, SekPekId};
use keycast_provisioning::sprov::Price;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::domain::{
    KeyEntry, KeyGroup, KeySchedule, Program, ProgramId, Purchase, PurchaseData, PurchaseItem, PurchaseKind, Service,
    ServiceId, TerminalId, Window,
};
use crate::http::auth::Clock;
use crate::store::{BsmStore, Campaign, CampaignKind, Interface, Registration, StoreError, StoredKey, TerminalImport};

/// Largest admin request body, octets.
const MAX_BODY: usize = 64 * 1024;
/// Largest bulk-import body, octets.
const MAX_IMPORT_BODY: usize = 8 * 1024 * 1024;

/// No random octets could be had (nothing is created then).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no random octets available")]
pub struct NoRandomness;

/// Where the new keys' bytes, RANDs and CSB IDs come from (the operating system in service;
/// fixed in tests).
pub trait KeyMaterial: Send + Sync {
    /// Fills `buf` with unpredictable octets.
    ///
    /// # Errors
    /// [`NoRandomness`].
    fn fill(&self, buf: &mut [u8]) -> Result<(), NoRandomness>;
}

/// The operating system's CSPRNG.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsKeyMaterial;

impl KeyMaterial for OsKeyMaterial {
    fn fill(&self, buf: &mut [u8]) -> Result<(), NoRandomness> {
        getrandom::fill(buf).map_err(|_| NoRandomness)
    }
}

/// The admin API's state.
pub struct AdminState<S> {
    store: S,
    token: Zeroizing<String>,
    clock: Clock,
    material: Arc<dyn KeyMaterial>,
    campaign_spread: std::time::Duration,
}

impl<S> core::fmt::Debug for AdminState<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AdminState").finish_non_exhaustive()
    }
}

impl<S> AdminState<S> {
    /// State over `store`, accepting `token`, with the system clock and OS randomness.
    #[must_use]
    pub fn new(store: S, token: Zeroizing<String>) -> Self {
        AdminState {
            store,
            token,
            clock: crate::http::auth::system_clock(),
            material: Arc::new(OsKeyMaterial),
            campaign_spread: crate::delivery::SchedulerConfig::default().spread_window,
        }
    }

    /// Replaces the clock (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The window a campaign's pushes are spread over (default: the scheduler's
    /// [`crate::delivery::SchedulerConfig::spread_window`]).
    #[must_use]
    pub fn with_campaign_spread(mut self, spread: std::time::Duration) -> Self {
        self.campaign_spread = spread;
        self
    }

    /// Replaces the key material source (tests).
    #[must_use]
    pub fn with_material(mut self, material: Arc<dyn KeyMaterial>) -> Self {
        self.material = material;
        self
    }
}

/// A JSON answer.
fn json_answer(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A JSON error answer.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_answer(status, &json!({ "error": message.into() }))
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::Missing(what) => error(StatusCode::NOT_FOUND, format!("{what} does not exist")),
        StoreError::Conflict(what) => error(StatusCode::CONFLICT, what),
        e => {
            tracing::error!(error = %e, "admin API: store failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "store failure")
        }
    }
}

/// Whether the request carries the admin token and comes from loopback.
fn authorised<S>(state: &AdminState<S>, peer: SocketAddr, headers: &HeaderMap) -> bool {
    bearer_from_loopback(&state.token, peer, headers)
}

/// Whether `headers` carry `Authorization: Bearer <expected>` (compared in constant time) and
/// `peer` is a loopback address; an empty `expected` admits no one. The admin and broadcaster
/// APIs' rule (\[chosen\], module docs).
pub(crate) fn bearer_from_loopback(expected: &str, peer: SocketAddr, headers: &HeaderMap) -> bool {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    let loopback = match peer.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback(),
        std::net::IpAddr::V6(ip) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    };
    let matches = bool::from(token.as_bytes().ct_eq(expected.as_bytes()));
    loopback && matches && !expected.is_empty()
}

/// A service as the API shows and takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceJson {
    /// globalServiceID (ignored in a PUT body: the path names it).
    #[serde(default, skip_deserializing)]
    pub id: String,
    /// Name.
    pub name: String,
    /// MCC of the Key Domain.
    pub mcc: String,
    /// MNC of the Key Domain.
    pub mnc: String,
    /// Key Group of its SEKs.
    pub key_group: u16,
    /// Streaming (SRTP) or download.
    pub streaming: bool,
}

/// A program as the API shows and takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramJson {
    /// Program ID (from the path in a PUT).
    #[serde(default, skip_deserializing)]
    pub id: String,
    /// Its service.
    pub service: String,
    /// Key Group of its PEKs.
    pub key_group: u16,
    /// On air from (Unix seconds).
    pub from: u64,
    /// Until (Unix seconds).
    pub until: u64,
}

/// A purchase item as the API shows and takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseItemJson {
    /// GlobalPurchaseItemID (from the path in a PUT).
    #[serde(default, skip_deserializing)]
    pub id: String,
    /// Name.
    pub name: String,
    /// Its services.
    pub services: Vec<String>,
}

/// An offer (PurchaseData) as the API shows and takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferJson {
    /// PurchaseData ID (from the path in a PUT).
    #[serde(default, skip_deserializing)]
    pub id: String,
    /// The purchase item.
    pub item: String,
    /// Price amount, e.g. `4.99`.
    pub amount: String,
    /// ISO 4217 currency.
    pub currency: String,
    /// `subscription`, `ppv`, `ppt` or `tokens`.
    pub kind: String,
    /// The program, for `ppv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Tokens sold, for `tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u32>,
    /// Subscription period or bought time, seconds.
    pub period_secs: u64,
    /// Play-backs of a recording the key allows, for `ppt` and `ppv` (profile P-4 codes 0x01
    /// and 0x03); absent or 0 for live use only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub play_backs: u16,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

/// A key as the API shows it (no key bytes, no RAND).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyJson {
    /// Key Group.
    pub key_group: u16,
    /// Key Number.
    pub key_number: u16,
    /// Valid from (Unix seconds).
    pub from: u64,
    /// Valid until (Unix seconds).
    pub until: u64,
    /// When it was revoked, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

impl From<&KeyEntry> for KeyJson {
    fn from(k: &KeyEntry) -> Self {
        KeyJson {
            key_group: k.id.key_group,
            key_number: k.id.key_number,
            from: k.window.from,
            until: k.window.until,
            revoked_at: k.revoked_at,
        }
    }
}

/// The answer to a rollover that made a key, or to a moved key end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloverAnswer {
    /// The key.
    #[serde(flatten)]
    pub key: KeyJson,
    /// The campaign that pushes it.
    pub campaign: u64,
}

/// A key's new end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEndJson {
    /// The new end (Unix seconds): after now and after the key's start, not into the next key.
    pub until: u64,
}

/// A campaign as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignJson {
    /// Its id.
    pub id: u64,
    /// `deliver` (a new key) or `update` (a moved key end).
    pub kind: String,
    /// The key.
    pub key: KeyJson,
    /// When it was made (Unix seconds).
    pub created_at: u64,
    /// Spread of its pushes, seconds.
    pub spread_secs: u64,
    /// Terminals looked at so far.
    pub terminals: u64,
    /// Deliveries queued so far.
    pub queued: u64,
    /// Terminals with purchases now (what `terminals` reaches at the end, give or take new ones).
    pub subscribers: u64,
    /// When it ended; absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
}

fn campaign_json(c: &Campaign, subscribers: u64) -> CampaignJson {
    CampaignJson {
        id: c.id,
        kind: match c.kind {
            CampaignKind::Deliver => "deliver",
            CampaignKind::UpdateValidity { .. } => "update",
        }
        .to_owned(),
        key: KeyJson::from(&c.key),
        created_at: c.created_at,
        spread_secs: c.spread.as_secs(),
        terminals: c.terminals,
        queued: c.queued,
        subscribers,
        finished_at: c.finished_at,
    }
}

/// One subscriber of a bulk import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportJson {
    /// IMPI.
    pub impi: String,
    /// Registration for pushes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<RegistrationJson>,
    /// Purchases.
    #[serde(default)]
    pub purchases: Vec<PurchaseJson>,
}

/// A registration in an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationJson {
    /// `ip:port` or `ip`.
    pub address: String,
    /// `oma-bcast` or `mbms`.
    pub interface: String,
    /// When (Unix seconds).
    pub at: u64,
}

/// A purchase in an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseJson {
    /// GlobalPurchaseItemID.
    pub item: String,
    /// PurchaseData ID.
    pub offer: String,
    /// `subscription`, `ppt`, `ppv` (with `program`) or `tokens` (with `tokens`).
    pub kind: String,
    /// The program of a pay-per-view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Tokens bought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u32>,
    /// Access from (Unix seconds).
    pub from: u64,
    /// Access until (Unix seconds).
    pub until: u64,
}

fn import_of(j: ImportJson) -> Result<TerminalImport, String> {
    let id = TerminalId(j.impi);
    if id.0.is_empty() || id.0.len() > 255 {
        return Err("impi must be 1 to 255 characters".into());
    }
    let registration = match j.registration {
        None => None,
        Some(r) => {
            let interface = Interface::parse(&r.interface)
                .ok_or_else(|| format!("{}: interface must be oma-bcast or mbms", id.0))?;
            let ip = r.address.parse::<SocketAddr>().map(|a| a.ip()).or_else(|_| r.address.parse());
            if ip.is_err() {
                return Err(format!("{}: registration address {:?} is not ip or ip:port", id.0, r.address));
            }
            Some(Registration { address: r.address, interface, at: r.at })
        }
    };
    let mut purchases = Vec::with_capacity(j.purchases.len());
    for p in j.purchases {
        let kind = match (p.kind.as_str(), p.program, p.tokens) {
            ("subscription", None, None) => PurchaseKind::Subscription,
            ("ppt", None, None) => PurchaseKind::PayPerTime,
            ("ppv", Some(program), None) => PurchaseKind::PayPerView(ProgramId(program)),
            ("tokens", None, Some(n)) => PurchaseKind::Tokens(n),
            _ => {
                return Err(format!(
                    "{}: purchase kind must be subscription, ppt, ppv (with program) or tokens (with tokens)",
                    id.0
                ));
            }
        };
        let window =
            Window::new(p.from, p.until).ok_or_else(|| format!("{}: purchase until must be after from", id.0))?;
        purchases.push(Purchase { terminal: id.clone(), item: p.item, purchase_data: p.offer, kind, window });
    }
    Ok(TerminalImport { id, registration, purchases })
}

/// A rollover request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloverJson {
    /// MCC of the Key Domain.
    pub mcc: String,
    /// MNC of the Key Domain.
    pub mnc: String,
    /// Lifetime of each key, seconds.
    pub key_lifetime_secs: u64,
    /// How long before the current key ends its successor is made, seconds.
    pub lead_secs: u64,
}

fn kind_of(o: &OfferJson) -> Result<PurchaseKind, &'static str> {
    if o.play_backs > 0 && !matches!(o.kind.as_str(), "ppt" | "ppv") {
        return Err("play_backs is for ppt and ppv offers (P-4 codes 0x01 and 0x03); a subscription plays back \
                    within its window, tokens have no play-back");
    }
    match (o.kind.as_str(), &o.program, o.tokens) {
        ("subscription", None, None) => Ok(PurchaseKind::Subscription),
        ("ppt", None, None) => Ok(PurchaseKind::PayPerTime),
        ("ppv", Some(p), None) => Ok(PurchaseKind::PayPerView(ProgramId(p.clone()))),
        ("tokens", None, Some(n)) => Ok(PurchaseKind::Tokens(n)),
        _ => Err("kind must be subscription, ppt, ppv (with program) or tokens (with tokens)"),
    }
}

fn offer_json(d: &PurchaseData) -> OfferJson {
    let (kind, program, tokens) = match &d.kind {
        PurchaseKind::Subscription => ("subscription", None, None),
        PurchaseKind::PayPerTime => ("ppt", None, None),
        PurchaseKind::PayPerView(p) => ("ppv", Some(p.0.clone()), None),
        PurchaseKind::Tokens(n) => ("tokens", None, Some(*n)),
    };
    OfferJson {
        id: d.id.clone(),
        item: d.item.clone(),
        amount: d.price.amount.clone(),
        currency: d.price.currency.clone(),
        kind: kind.to_owned(),
        program,
        tokens,
        period_secs: d.period,
        play_backs: d.play_backs,
    }
}

fn key_domain(mcc: &str, mnc: &str) -> Result<KeyDomainId, String> {
    KeyDomainId::from_mcc_mnc(mcc, mnc).ok_or_else(|| "mcc must be 3 digits and mnc 2 or 3 digits".to_owned())
}

/// Parses a JSON body bounded by [`MAX_BODY`] (the router's limit); the error is the 400's text.
fn body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("bad JSON body: {e}"))
}

/// The admin router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn admin_app<S: BsmStore + Send + Sync + 'static>(state: Arc<AdminState<S>>) -> Router {
    Router::new()
        .route("/admin/v1/services", get(list_services::<S>))
        .route("/admin/v1/services/{id}", axum::routing::put(put_service::<S>))
        .route("/admin/v1/programs", get(list_programs::<S>))
        .route("/admin/v1/programs/{id}", axum::routing::put(put_program::<S>))
        .route("/admin/v1/purchase-items", get(list_items::<S>))
        .route("/admin/v1/purchase-items/{id}", axum::routing::put(put_item::<S>))
        .route("/admin/v1/offers", get(list_offers::<S>))
        .route("/admin/v1/offers/{id}", axum::routing::put(put_offer::<S>))
        .route("/admin/v1/key-groups/{group}", get(key_group::<S>))
        .route("/admin/v1/key-groups/{group}/rollover", post(rollover::<S>))
        .route("/admin/v1/key-groups/{group}/keys/{number}/until", axum::routing::put(move_key_end::<S>))
        .route("/admin/v1/key-groups/{group}/keys/{number}/deliveries", get(key_deliveries::<S>))
        .route("/admin/v1/campaigns", get(list_campaigns::<S>))
        .route("/admin/v1/campaigns/{id}", get(one_campaign::<S>))
        .route(
            "/admin/v1/terminals/import",
            post(import::<S>).layer(axum::extract::DefaultBodyLimit::max(MAX_IMPORT_BODY)),
        )
        .route("/admin/v1/terminals/{impi}", get(terminal::<S>))
        .layer(axum::middleware::from_fn_with_state(state.clone(), require_admin::<S>))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn require_admin<S: Send + Sync + 'static>(
    State(state): State<Arc<AdminState<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !authorised(&state, peer, request.headers()) {
        tracing::info!(%peer, "admin API: unauthenticated request refused");
        let mut r = error(StatusCode::UNAUTHORIZED, "unauthenticated");
        r.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        return r;
    }
    next.run(request).await
}

async fn list_services<S: BsmStore + Send + Sync + 'static>(State(state): State<Arc<AdminState<S>>>) -> Response {
    match state.store.services().await {
        Ok(list) => {
            let out: Vec<ServiceJson> = list
                .iter()
                .map(|s| {
                    let (mcc, mnc) = s.key_domain.mcc_mnc().unwrap_or_default();
                    ServiceJson {
                        id: s.id.0.clone(),
                        name: s.name.clone(),
                        mcc,
                        mnc,
                        key_group: s.key_group,
                        streaming: s.streaming,
                    }
                })
                .collect();
            json_answer(StatusCode::OK, &out)
        }
        Err(e) => store_error(e),
    }
}

async fn put_service<S: BsmStore + Send + Sync + 'static>(
    State(state): State<Arc<AdminState<S>>>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let j: ServiceJson = match body(&bytes) {
        Ok(j) => j,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let kd = match key_domain(&j.mcc, &j.mnc) {
        Ok(kd) => kd,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    if j.key_group == 0 {
        return error(StatusCode::BAD_REQUEST, "Key Group 0 is reserved");
    }
    let service =
        Service { id: ServiceId(id), name: j.name, key_domain: kd, key_group: j.key_group, streaming: j.streaming };
    match state.store.put_service(&service).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(e),
    }
}

async fn list_programs<S: BsmStore + Send + Sync + 'static>(State(state): State<Arc<AdminState<S>>>) -> Response {
    match state.store.programs().await {
        Ok(list) => json_answer(
            StatusCode::OK,
            &list
                .iter()
                .map(|p| ProgramJson {
                    id: p.id.0.clone(),
                    service: p.service.0.clone(),
                    key_group: p.key_group,
                    from: p.window.from,
                    until: p.window.until,
                })
                .collect::<Vec<_>>(),
        ),
        Err(e) => store_error(e),
    }
}

async fn put_program<S: BsmStore + Send + Sync + 'static>(
    State(state): State<Arc<AdminState<S>>>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let j: ProgramJson = match body(&bytes) {
        Ok(j) => j,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let Some(window) = Window::new(j.from, j.until) else {
        return error(StatusCode::BAD_REQUEST, "from must be before until");
    };
    if j.key_group == 0 {
        return error(StatusCode::BAD_REQUEST, "Key Group 0 is reserved");
    }
    let program = Program { id: ProgramId(id), service: ServiceId(j.service), key_group: j.key_group, window };
    match state.store.put_program(&program).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(e),
    }
}

async fn list_items<S: BsmStore + Send + Sync + 'static>(State(state): State<Arc<AdminState<S>>>) -> Response {
    match state.store.purchase_items().await {
        Ok(list) => json_answer(
            StatusCode::OK,
            &list
                .iter()
                .map(|i| PurchaseItemJson {
                    id: i.global_id.clone(),
                    name: i.name.clone(),
                    services: i.services.iter().map(|s| s.0.clone()).collect(),
                })
                .collect::<Vec<_>>(),
        ),
        Err(e) => store_error(e),
    }
}

async fn put_item<S: BsmStore + Send + Sync + 'static>(
    State(state): State<Arc<AdminState<S>>>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let j: PurchaseItemJson = match body(&bytes) {
        Ok(j) => j,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let item = PurchaseItem { global_id: id, name: j.name, services: j.services.into_iter().map(ServiceId).collect() };
    match state.store.put_purchase_item(&item).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(e),
    }
}

async fn list_offers<S: BsmStore + Send + Sync + 'static>(State(state): State<Arc<AdminState<S>>>) -> Response {
    match state.store.purchase_data().await {
        Ok(list) => json_answer(StatusCode::OK, &list.iter().map(offer_json).collect::<Vec<_>>()),
        Err(e) => store_error(e),
    }
}

async fn put_offer<S: BsmStore + Send + Sync + 'static>(
    State(state): State<Arc<AdminState<S>>>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let j: OfferJson = match body(&bytes) {
        Ok(j) => j,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let kind = match kind_of(&j) {
        Ok(k) => k,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let offer = PurchaseData {
        id,
        item: j.item,
        price: Price { amount: j.amount, currency: j.currency },
        kind,
        period: j.period_secs,
        play_backs: j.play_backs,
    };
    match state.store.put_purchase_data(&offer).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(e),
    }
}

async fn key_group<S: BsmStore + Send + Sync + 'static>(
    State(state): State<Arc<AdminState<S>>>,
    Path(group): Path<u16>,
) -> Response {
    match state.store.key_entries(group).await {
        Ok(keys) => json_answer(StatusCode::OK, &keys.iter().map(KeyJson::from).collect::<Vec<_>>()),
        Err(e) => store_error(e),
    }
}

/// Makes the group's next key when its schedule says one is due (the first key of an empty
/// group, after a gap, or `lead` before the current one ends), with fresh key bytes, RAND and CSB
/// ID (profile P-2, P-3: the same for every terminal).
async fn rollover<S: BsmStore + Send + Sync + 'static>(
    State(state): State<Arc<AdminState<S>>>,
    Path(group): Path<u16>,
    bytes: axum::body::Bytes,
) -> Response {
    let j: RolloverJson = match body(&bytes) {
        Ok(j) => j,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let kd = match key_domain(&j.mcc, &j.mnc) {
        Ok(kd) => kd,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let Some(schedule) = KeySchedule::new(j.key_lifetime_secs, j.lead_secs) else {
        return error(StatusCode::BAD_REQUEST, "key_lifetime_secs must be positive and above lead_secs");
    };
    let entries = match state.store.key_entries(group).await {
        Ok(e) => e,
        Err(e) => return store_error(e),
    };
    let keys = match KeyGroup::with_keys(group, entries) {
        Ok(g) => g,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let now = (state.clock)();
    let Some(new) = keys.rollover_due(schedule, now) else {
        return json_answer(StatusCode::OK, &json!({ "due": false }));
    };
    let mut material = Zeroizing::new([0u8; 36]);
    if state.material.fill(&mut material[..]).is_err() {
        tracing::error!("admin API: no random octets for a new key");
        return error(StatusCode::INTERNAL_SERVER_ERROR, "no randomness");
    }
    let key = SekPek::from_bytes(core::array::from_fn(|i| material[i]));
    let rand: [u8; 16] = core::array::from_fn(|i| material[16 + i]);
    let csb_id = u32::from_be_bytes([material[32], material[33], material[34], material[35]]);
    let stored = StoredKey {
        entry: KeyEntry {
            id: SekPekId { key_group: group, key_number: new.id.key_number },
            window: new.window,
            revoked_at: None,
        },
        key_domain: kd,
        key,
        rand,
        csb_id,
    };
    match state.store.add_key_campaign(&stored, state.campaign_spread, now).await {
        Ok(campaign) => {
            tracing::info!(
                key_group = group,
                key_number = new.id.key_number,
                from = new.window.from,
                until = new.window.until,
                campaign,
                "admin API: key made"
            );
            json_answer(StatusCode::CREATED, &RolloverAnswer { key: KeyJson::from(&stored.entry), campaign })
        }
        Err(e) => store_error(e),
    }
}

async fn terminal<S: BsmStore + Send + Sync + 'static>(
    State(state): State<Arc<AdminState<S>>>,
    Path(impi): Path<String>,
) -> Response {
    let id = TerminalId(impi);
    let t = match state.store.terminal(&id).await {
        Ok(Some(t)) => t,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such terminal"),
        Err(e) => return store_error(e),
    };
    let purchases = match state.store.purchases(&id).await {
        Ok(p) => p,
        Err(e) => return store_error(e),
    };
    json_answer(
        StatusCode::OK,
        &json!({
            "impi": t.id.0,
            "btid": t.btid,
            "last_seen": t.last_seen,
            "registration": t.registration.map(|r| json!({
                "address": r.address, "interface": r.interface.as_str(), "at": r.at,
            })),
            "purchases": purchases.iter().map(|p| json!({
                "item": p.item, "offer": p.purchase_data, "from": p.window.from, "until": p.window.until,
            })).collect::<Vec<_>>(),
        }),
    )
}

/// Moves a key's end (extends or shortens its life) and makes the campaign that pushes the new
/// window.
async fn move_key_end<S: BsmStore + Send + Sync + 'static>(
    State(state): State<Arc<AdminState<S>>>,
    Path((group, number)): Path<(u16, u16)>,
    bytes: axum::body::Bytes,
) -> Response {
    let j: KeyEndJson = match body(&bytes) {
        Ok(j) => j,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let now = (state.clock)();
    if j.until <= now {
        return error(StatusCode::CONFLICT, "until must be after now (revoke a key instead of ending it in the past)");
    }
    let entries = match state.store.key_entries(group).await {
        Ok(e) => e,
        Err(e) => return store_error(e),
    };
    // Numbers repeat after 65 535 keys: the latest key with this number is meant.
    let Some(entry) = entries.iter().rev().find(|k| k.id.key_number == number) else {
        return error(StatusCode::NOT_FOUND, format!("key {group}/{number} does not exist"));
    };
    match state.store.update_key_until(entry.id, entry.window.from, j.until, state.campaign_spread, now).await {
        Ok(campaign) => {
            tracing::info!(
                key_group = group,
                key_number = number,
                from = entry.window.until,
                to = j.until,
                campaign,
                "admin API: key end moved"
            );
            let key = KeyEntry { window: Window { from: entry.window.from, until: j.until }, ..*entry };
            json_answer(StatusCode::OK, &RolloverAnswer { key: KeyJson::from(&key), campaign })
        }
        Err(e) => store_error(e),
    }
}

async fn list_campaigns<S: BsmStore + Send + Sync + 'static>(State(state): State<Arc<AdminState<S>>>) -> Response {
    let (campaigns, subscribers) = match (state.store.campaigns(false).await, state.store.subscribers().await) {
        (Ok(c), Ok(n)) => (c, n),
        (Err(e), _) | (_, Err(e)) => return store_error(e),
    };
    json_answer(StatusCode::OK, &campaigns.iter().map(|c| campaign_json(c, subscribers)).collect::<Vec<_>>())
}

async fn one_campaign<S: BsmStore + Send + Sync + 'static>(
    State(state): State<Arc<AdminState<S>>>,
    Path(id): Path<u64>,
) -> Response {
    let (campaigns, subscribers) = match (state.store.campaigns(false).await, state.store.subscribers().await) {
        (Ok(c), Ok(n)) => (c, n),
        (Err(e), _) | (_, Err(e)) => return store_error(e),
    };
    match campaigns.iter().find(|c| c.id == id) {
        Some(c) => json_answer(StatusCode::OK, &campaign_json(c, subscribers)),
        None => error(StatusCode::NOT_FOUND, format!("campaign {id} does not exist")),
    }
}

/// Stores a batch of subscribers, all or nothing.
async fn import<S: BsmStore + Send + Sync + 'static>(
    State(state): State<Arc<AdminState<S>>>,
    bytes: axum::body::Bytes,
) -> Response {
    let list: Vec<ImportJson> = match body(&bytes) {
        Ok(j) => j,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let mut imports = Vec::with_capacity(list.len());
    for j in list {
        match import_of(j) {
            Ok(i) => imports.push(i),
            Err(why) => return error(StatusCode::BAD_REQUEST, why),
        }
    }
    match state.store.import_terminals(&imports).await {
        Ok(n) => json_answer(StatusCode::OK, &json!({ "imported": n })),
        Err(StoreError::Invalid(why)) => error(StatusCode::BAD_REQUEST, why),
        Err(e) => store_error(e),
    }
}

async fn key_deliveries<S: BsmStore + Send + Sync + 'static>(
    State(state): State<Arc<AdminState<S>>>,
    Path((group, number)): Path<(u16, u16)>,
) -> Response {
    match state.store.delivery_summary(SekPekId { key_group: group, key_number: number }).await {
        Ok(d) => json_answer(
            StatusCode::OK,
            &json!({
                "rows": d.rows, "terminals": d.terminals, "max_version": d.max_version, "pending": d.pending,
                "sent": d.sent, "pull_solicited": d.pull_solicited, "acknowledged": d.acknowledged, "failed": d.failed,
            }),
        ),
        Err(e) => store_error(e),
    }
}
