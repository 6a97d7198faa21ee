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
//! | `PUT /admin/v1/offers/{id}` | `{item, amount, currency, kind, program?, tokens?, period_secs}` | 204; 404 for an unknown item or program |
//! | `GET /admin/v1/key-groups/{group}` | — | `[KeyEntry]` without key bytes |
//! | `POST /admin/v1/key-groups/{group}/rollover` | `{mcc, mnc, key_lifetime_secs, lead_secs}` | 201 with the new key's entry, or 200 `{"due": false}` |
//! | `GET /admin/v1/terminals/{impi}` | — | the terminal, its registration and purchases; 404 |
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
    KeyEntry, KeyGroup, KeySchedule, Program, ProgramId, PurchaseData, PurchaseItem, PurchaseKind, Service, ServiceId,
    TerminalId, Window,
};
use crate::http::auth::Clock;
use crate::store::{BsmStore, StoreError, StoredKey};

/// Largest admin request body, octets.
const MAX_BODY: usize = 64 * 1024;

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
        AdminState { store, token, clock: crate::http::auth::system_clock(), material: Arc::new(OsKeyMaterial) }
    }

    /// Replaces the clock (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
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
    let matches = bool::from(token.as_bytes().ct_eq(state.token.as_bytes()));
    loopback && matches && !state.token.is_empty()
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
    match state.store.add_key(&stored).await {
        Ok(()) => {
            tracing::info!(
                key_group = group,
                key_number = new.id.key_number,
                from = new.window.from,
                until = new.window.until,
                "admin API: key made"
            );
            json_answer(StatusCode::CREATED, &KeyJson::from(&stored.entry))
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
