//! The BSF on the network: an axum shell around the sans-IO core ([`Bsf`], [`zn_keys`]), served
//! over plain HTTP or HTTPS (rustls, optional client certificates) by [`serve`].
//!
//! The shell reads the clock (through [`Clock`]), draws randomness ([`OsRandom`] in production),
//! moves bytes and maps results to HTTP; every decision is the core's.
//!
//! # Routes
//!
//! | route | what |
//! |---|---|
//! | `GET /` (also the absolute form `GET http://<bsf>/`) | Ub (TS 24.109 §4): the answers of [`crate::bsf`] (200, 400, 401, 403, 500) |
//! | `POST /zn/v1/naf-keys` | Zn for the BSM: NAF keys for (B-TID, NAF_Id), JSON |
//! | `GET /metrics` ([`metrics_app`], meant for a separate listener) | Prometheus text |
//!
//! Limits on every route: request head ≤ [`MAX_HEADER_SIZE`] octets and ≤ [`MAX_HEADERS`]
//! fields (else **431** and the connection closes), body ≤ [`MAX_BODY`] octets (else **413**),
//! head read within [`HEADER_READ_TIMEOUT`] (else the connection closes), whole request within
//! [`REQUEST_TIMEOUT`] (else **408**), TLS handshake within [`TLS_HANDSHAKE_TIMEOUT`].
//!
//! # Zn: `POST /zn/v1/naf-keys`
//!
//! Request `{"btid": "…", "naf_id": "<base64 of FQDN ‖ 5-octet Ua protocol id>", "gba_u_aware": bool}`
//! (`gba_u_aware` defaults to `false`; unknown fields are refused).
//!
//! The caller must be an authenticated NAF ([`ZnAuth`]): either a client certificate (mutual TLS)
//! whose subject CN or a SAN DNS name is one of [`ZnAuth::allowed_naf_cert_names`], or
//! `Authorization: Bearer <token>` with a configured [`ZnToken`] **from a loopback address
//! only**. A NAF may only ask for its own keys: the FQDN inside NAF_Id must be the authenticated
//! NAF's. The NAF_Id FQDN must also be one of [`crate::bsf::BsfConfig::authorised_nafs`].
//!
//! | status | body | meaning |
//! |---|---|---|
//! | 200 | `{"impi", "gba_type": "gba-u"\|"gba-me", "bootstrapped_at", "lifetime", "ks_naf"}` (GBA_ME) or `… "ks_ext_naf"[, "ks_int_naf"]` (GBA_U; `ks_int_naf` only when `gba_u_aware`) | keys in base64, times in RFC 3339 UTC |
//! | 400 | `{"error": "malformed", "detail": "…"}` | body not the JSON above, NAF_Id not base64 or not FQDN ‖ 5 octets |
//! | 401 | `{"error": "unauthenticated"}` (+ `WWW-Authenticate: Bearer`) | no client certificate and no valid token from loopback |
//! | 403 | `{"error": "unknown-naf"}` | the caller's certificate names no allowed NAF, or the NAF_Id FQDN is not an authorised NAF |
//! | 403 | `{"error": "naf-mismatch"}` | the NAF_Id FQDN is not the authenticated NAF's own |
//! | 404 | `{"error": "unknown-btid"}` | no session with this B-TID (never existed, replaced by a later run, purged): the UE must bootstrap again |
//! | 410 | `{"error": "expired", "lifetime": "…"}` | the session's key lifetime has passed |
//! | 500 | `{"error": "internal"}` | the store failed (logged) |
//!
//! # Concurrency
//!
//! [`Bsf::handle_ub`] takes `&self`: requests go through the core concurrently, and wait for
//! each other only inside the store (the SQL stores group the writes of concurrent requests
//! into one transaction). The random source sits behind a synchronous lock taken only to draw
//! a RAND. Correctness across requests never depends on the shell: the store advances SQN and
//! records the challenge atomically and takes a challenge at most once, so nonces are
//! single-use and SQNs unique even between BSF instances. Each Ub request runs in its own task,
//! so a client that disconnects cannot cancel a request half-way.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use keycast_provisioning::zn as wire;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;
use tower::ServiceExt as _;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use zeroize::Zeroizing;

use super::{
    Bsf, BsfEvent, BsfMetrics, BsfStore, GbaType, RandomSource, UbRequest, ZnError, ZnKeys, ZnRequest, zn_keys,
};

/// Path of the Zn key API.
pub const ZN_PATH: &str = wire::PATH;
/// Largest request body (Ub or Zn), octets.
pub const MAX_BODY: usize = 16 * 1024;
/// Largest request head (request line and header fields), octets.
pub const MAX_HEADER_SIZE: usize = 16 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 64;
/// Time allowed to receive a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a whole request (body and handling).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for a TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`serve`] waits for open connections after the shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The wall clock as Unix seconds. Production uses [`system_clock`]; tests inject their own.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// `SystemTime::now()` as Unix seconds (0 before 1970).
#[must_use]
pub fn system_clock() -> Clock {
    Arc::new(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// The operating system's CSPRNG (`getrandom`).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        // Without an OS random source no RAND can be drawn safely: a broken invariant.
        getrandom::fill(buf).expect("the operating system's random source failed");
    }
}

/// A NAF allowed on Zn by bearer token (loopback callers only).
#[derive(Clone)]
pub struct ZnToken {
    /// The NAF FQDN the token stands for.
    pub naf: String,
    /// The token.
    pub token: Zeroizing<String>,
}

impl core::fmt::Debug for ZnToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ZnToken").field("naf", &self.naf).finish_non_exhaustive()
    }
}

/// Who may call Zn.
#[derive(Debug, Clone, Default)]
pub struct ZnAuth {
    /// Bearer tokens, each standing for one NAF; accepted only from loopback peers.
    pub tokens: Vec<ZnToken>,
    /// NAF FQDNs accepted as a client certificate's subject CN or SAN DNS name (the certificate
    /// must chain to the NAF roots of [`tls_server_config`]).
    pub allowed_naf_cert_names: Vec<String>,
}

/// What [`serve`] knows about a connection, put into every request's extensions.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// DNS names (subject CN and SAN DNS names) of the verified client certificate, if any.
    pub client_cert_names: Vec<String>,
}

/// The state's random source, lent to one request at a time for each draw.
struct SharedRandom<'a>(&'a StdMutex<Box<dyn RandomSource + Send>>);

impl RandomSource for SharedRandom<'_> {
    fn fill(&mut self, buf: &mut [u8]) {
        // A panic inside `fill` leaves no half-updated state that matters for the next draw.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).fill(buf);
    }
}

/// The shared state of the BSF service.
pub struct BsfState<S> {
    bsf: Bsf,
    rng: StdMutex<Box<dyn RandomSource + Send>>,
    store: Arc<S>,
    authorised_nafs: Vec<String>,
    zn_auth: ZnAuth,
    clock: Clock,
}

impl<S> core::fmt::Debug for BsfState<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BsfState")
            .field("authorised_nafs", &self.authorised_nafs)
            .field("zn_auth", &self.zn_auth)
            .finish_non_exhaustive()
    }
}

impl<S: BsfStore + Send + Sync + 'static> BsfState<S> {
    /// A state around this core and store, with the OS random source and the system clock.
    #[must_use]
    pub fn new(bsf: Bsf, store: Arc<S>, zn_auth: ZnAuth) -> Self {
        let authorised_nafs = bsf.config().authorised_nafs.clone();
        BsfState { bsf, rng: StdMutex::new(Box::new(OsRandom)), store, authorised_nafs, zn_auth, clock: system_clock() }
    }

    /// Replaces the random source (tests: a [`crate::bsf::SeededRandom`]).
    #[must_use]
    pub fn with_rng(mut self, rng: impl RandomSource + Send + 'static) -> Self {
        self.rng = StdMutex::new(Box::new(rng));
        self
    }

    /// Replaces the clock (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The core's counters so far.
    pub async fn core_metrics(&self) -> BsfMetrics {
        self.bsf.metrics()
    }
}

/// The BSF router: Ub on `/` and Zn on [`ZN_PATH`], with body limits and a request timeout.
/// Header limits are set per connection by [`serve`].
pub fn app<S: BsfStore + Send + Sync + 'static>(state: Arc<BsfState<S>>) -> Router {
    Router::new()
        .route("/", get(ub::<S>))
        .route(ZN_PATH, post(zn::<S>))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Ub

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// The single value of a header as text; `Err` when it repeats or is not visible ASCII.
fn single_header(headers: &HeaderMap, name: HeaderName) -> Result<Option<&str>, ()> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(());
    }
    first.to_str().map(Some).map_err(|_| ())
}

async fn ub<S: BsfStore + Send + Sync + 'static>(
    State(state): State<Arc<BsfState<S>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(authorization) = single_header(&headers, AUTHORIZATION) else {
        record_ub(&BsfEvent::Rejected(super::FailureCause::MalformedRequest));
        return text(StatusCode::BAD_REQUEST, "Authorization must be one visible-ASCII header field");
    };
    let authorization = authorization.map(str::to_owned);
    let user_agent = headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let impi = authorization
        .as_deref()
        .and_then(|a| keycast_provisioning::digest::Credentials::parse(a).ok())
        .map(|c| c.username);
    let now = (state.clock)();
    let uri = uri.to_string();
    // A task of its own, so that a client going away cannot cut a request in half.
    let task = tokio::spawn(async move {
        let request = UbRequest {
            method: method.as_str(),
            uri: &uri,
            authorization: authorization.as_deref(),
            user_agent: user_agent.as_deref(),
            body: &body,
        };
        state.bsf.handle_ub(&*state.store, &request, now, &mut SharedRandom(&state.rng)).await
    });
    let response = match task.await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "Ub handler task failed");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    record_ub(&response.event);
    match &response.log_detail {
        Some(detail) => {
            tracing::warn!(impi = ?impi, status = response.status, event = ?response.event, detail = %detail, "ub")
        }
        None => tracing::info!(impi = ?impi, status = response.status, event = ?response.event, "ub"),
    }
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = Response::builder().status(status);
    for (name, value) in &response.headers {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            (Ok(n), Ok(v)) => out = out.header(n, v),
            _ => {
                tracing::error!(header = %name, "core produced a header that cannot be sent");
                return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            }
        }
    }
    out.body(axum::body::Body::from(response.body))
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
}

// ---------------------------------------------------------------------------------------------
// Zn

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}

/// Sends a refusal; `error` is its code, also the metric label.
fn zn_refusal(status: StatusCode, error: &'static str, refusal: &wire::Refusal) -> Response {
    record_zn(error);
    json_response(status, refusal.to_json().into_bytes())
}

fn zn_error(status: StatusCode, error: &'static str) -> Response {
    zn_refusal(status, error, &wire::Refusal::new(error))
}

fn zn_malformed(detail: &str) -> Response {
    let refusal = wire::Refusal { detail: Some(detail.to_owned()), ..wire::Refusal::new(wire::ERROR_MALFORMED) };
    zn_refusal(StatusCode::BAD_REQUEST, wire::ERROR_MALFORMED, &refusal)
}

fn strip_dot(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

fn same_name(a: &str, b: &str) -> bool {
    strip_dot(a).eq_ignore_ascii_case(strip_dot(b))
}

/// The NAF FQDNs the caller is authenticated as: `Ok(names)` (never empty), or the refusal.
fn authenticate_naf(
    auth: &ZnAuth,
    conn: Option<&ConnInfo>,
    headers: &HeaderMap,
) -> Result<Vec<String>, (StatusCode, &'static str)> {
    const UNAUTHENTICATED: (StatusCode, &str) = (StatusCode::UNAUTHORIZED, "unauthenticated");
    if let Some(conn) = conn.filter(|c| !c.client_cert_names.is_empty()) {
        let names: Vec<String> = conn
            .client_cert_names
            .iter()
            .filter(|n| auth.allowed_naf_cert_names.iter().any(|a| same_name(a, n)))
            .cloned()
            .collect();
        return if names.is_empty() { Err((StatusCode::FORBIDDEN, "unknown-naf")) } else { Ok(names) };
    }
    let Ok(Some(value)) = single_header(headers, AUTHORIZATION) else { return Err(UNAUTHENTICATED) };
    let Some(token) = value.strip_prefix("Bearer ").map(str::trim) else { return Err(UNAUTHENTICATED) };
    let loopback = conn.is_some_and(|c| match c.peer.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    });
    // Every configured token is compared (constant time each), whatever the peer.
    let mut found = None;
    for t in &auth.tokens {
        if bool::from(t.token.as_bytes().ct_eq(token.as_bytes())) {
            found = Some(t.naf.clone());
        }
    }
    match found {
        Some(naf) if loopback => Ok(vec![naf]),
        _ => Err(UNAUTHENTICATED),
    }
}

async fn zn<S: BsfStore + Send + Sync + 'static>(State(state): State<Arc<BsfState<S>>>, request: Request) -> Response {
    let conn = request.extensions().get::<ConnInfo>().cloned();
    let (parts, body) = request.into_parts();
    let nafs = match authenticate_naf(&state.zn_auth, conn.as_ref(), &parts.headers) {
        Ok(n) => n,
        Err((status, error)) => {
            tracing::info!(peer = ?conn.as_ref().map(|c| c.peer), outcome = error, "zn refused");
            let mut r = zn_error(status, error);
            if status == StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            return r;
        }
    };
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return zn_error(StatusCode::PAYLOAD_TOO_LARGE, wire::ERROR_TOO_LARGE),
    };
    let req = match wire::KeyRequest::from_json(&body) {
        Ok(r) => r,
        Err(e) => return zn_malformed(&e.to_string()),
    };
    let Some(fqdn) = req.naf_fqdn() else {
        return zn_malformed("naf_id must be FQDN followed by the 5-octet Ua protocol identifier");
    };
    if !nafs.iter().any(|n| same_name(n, fqdn)) {
        tracing::info!(naf = ?nafs, asked = ?fqdn, outcome = "naf-mismatch", "zn refused");
        return zn_error(StatusCode::FORBIDDEN, wire::ERROR_NAF_MISMATCH);
    }
    let now = (state.clock)();
    let zn_request = ZnRequest { btid: &req.btid, naf_id: &req.naf_id, naf_is_gba_u_aware: req.gba_u_aware };
    let answer = match zn_keys(&*state.store, &state.authorised_nafs, &zn_request, now).await {
        Ok(a) => a,
        Err(e) => {
            let (status, error) = match &e {
                ZnError::UnknownBtid => (StatusCode::NOT_FOUND, wire::ERROR_UNKNOWN_BTID),
                ZnError::Expired { .. } => (StatusCode::GONE, wire::ERROR_EXPIRED),
                ZnError::UnknownNaf => (StatusCode::FORBIDDEN, wire::ERROR_UNKNOWN_NAF),
                ZnError::InvalidNafId => return zn_malformed("naf_id is not FQDN ‖ 5 octets"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, wire::ERROR_INTERNAL),
            };
            if status == StatusCode::INTERNAL_SERVER_ERROR {
                tracing::warn!(naf = %fqdn, btid = ?req.btid, error = %e, "zn failed");
            } else {
                tracing::info!(naf = %fqdn, btid = ?req.btid, outcome = error, "zn refused");
            }
            if let ZnError::Expired { lifetime } = e {
                let refusal = wire::Refusal { lifetime: Some(lifetime.to_string()), ..wire::Refusal::new(error) };
                return zn_refusal(status, error, &refusal);
            }
            return zn_error(status, error);
        }
    };
    tracing::info!(naf = %fqdn, btid = ?req.btid, impi = ?answer.impi, gba_type = answer.gba_type.as_str(), outcome = "ok", "zn");
    record_zn("ok");
    let keys = match &answer.keys {
        ZnKeys::Me { ks_naf } => wire::NafKeys::Me { ks_naf: wire::NafKey::from_bytes(*ks_naf.expose_secret()) },
        ZnKeys::U { ks_ext_naf, ks_int_naf } => wire::NafKeys::U {
            ks_ext_naf: wire::NafKey::from_bytes(*ks_ext_naf.expose_secret()),
            ks_int_naf: ks_int_naf.as_ref().map(|k| wire::NafKey::from_bytes(*k.expose_secret())),
        },
    };
    debug_assert_eq!(answer.gba_type == GbaType::GbaU, matches!(answer.keys, ZnKeys::U { .. }));
    let body =
        wire::KeyAnswer { impi: answer.impi, bootstrapped_at: answer.bootstrapped_at, lifetime: answer.lifetime, keys }
            .to_json();
    (StatusCode::OK, [(CONTENT_TYPE, "application/json")], body.as_bytes().to_vec()).into_response()
}

// ---------------------------------------------------------------------------------------------
// Metrics

fn record_ub(event: &BsfEvent) {
    match *event {
        BsfEvent::Challenged { known_impi } => {
            metrics::counter!("keycast_bsf_challenges_total", "known_impi" => if known_impi { "true" } else { "false" })
                .increment(1);
        }
        BsfEvent::Bootstrapped { gba_type } => {
            metrics::counter!("keycast_bsf_bootstraps_total", "gba_type" => gba_type.as_str()).increment(1);
        }
        BsfEvent::Resynchronised => metrics::counter!("keycast_bsf_resyncs_total").increment(1),
        BsfEvent::Rejected(cause) => {
            metrics::counter!("keycast_bsf_ub_failures_total", "cause" => cause.as_str()).increment(1);
        }
    }
}

fn record_zn(outcome: &'static str) {
    metrics::counter!("keycast_bsf_zn_answers_total", "outcome" => outcome).increment(1);
}

static PROMETHEUS: StdMutex<Option<PrometheusHandle>> = StdMutex::new(None);

/// Installs the Prometheus recorder as the process's `metrics` recorder (once; later calls
/// return the same handle).
///
/// # Errors
/// When another `metrics` recorder is already installed.
pub fn install_prometheus() -> Result<PrometheusHandle, metrics::SetRecorderError<()>> {
    let mut slot = PROMETHEUS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| metrics::SetRecorderError(()))?;
    metrics::describe_counter!("keycast_bsf_challenges_total", "Ub challenges sent to initial requests");
    metrics::describe_counter!("keycast_bsf_bootstraps_total", "Successful bootstrapping runs by GBA type");
    metrics::describe_counter!("keycast_bsf_resyncs_total", "SQN resynchronisations (valid AUTS)");
    metrics::describe_counter!("keycast_bsf_ub_failures_total", "Refused Ub requests by cause");
    metrics::describe_counter!("keycast_bsf_zn_answers_total", "Zn answers by outcome");
    *slot = Some(handle.clone());
    Ok(handle)
}

/// `GET /metrics` in the Prometheus text format.
pub fn metrics_app(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()) }
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Serving

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// rustls refused the certificate, the key or the protocol versions.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (e.g. no NAF root).
    #[error("TLS client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// A rustls server configuration (aws-lc-rs, TLS 1.2 and 1.3, ALPN `http/1.1`) with this
/// certificate chain and key. With `naf_roots`, clients **may** present a certificate, which must
/// chain to one of these roots (mutual TLS for Zn); clients without one (UEs on Ub) are admitted.
///
/// # Errors
/// [`TlsSetupError`].
pub fn tls_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    naf_roots: Option<RootCertStore>,
) -> Result<rustls::ServerConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match naf_roots {
        Some(roots) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).allow_unauthenticated().build()?,
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Subject CN and SAN DNS names of a DER certificate (empty when it does not parse).
fn cert_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let mut names: Vec<String> =
        cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_owned).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_owned());
            }
        }
    }
    names
}

/// Serves `app` on `listener` (HTTP/1.1; TLS when `tls` is given) until `shutdown` completes,
/// then lets open connections finish for up to [`SHUTDOWN_GRACE`]. Every request carries a
/// [`ConnInfo`] extension. Accept errors are logged and do not stop the server.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_header_size(MAX_HEADER_SIZE)
                .max_headers(MAX_HEADERS)
                .keep_alive(true);
            let Some(acceptor) = acceptor else {
                let info = ConnInfo { peer, tls: false, client_cert_names: Vec::new() };
                let conn = builder.serve_connection(TokioIo::new(tcp), service(app, info));
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            };
            let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let names = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| cert_names(c));
            let info = ConnInfo { peer, tls: true, client_cert_names: names.unwrap_or_default() };
            let conn = builder.serve_connection(TokioIo::new(stream), service(app, info));
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the shutdown grace period");
    }
}

/// The hyper service of one connection: the router, with the [`ConnInfo`] added to each request.
fn service(
    app: Router,
    info: ConnInfo,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = Response,
    Error = core::convert::Infallible,
    Future = impl Future<Output = Result<Response, core::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(info.clone());
        app.clone().oneshot(request.map(axum::body::Body::new))
    })
}
