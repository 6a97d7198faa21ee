//! The provisioning routes: the OMA BCAST service provisioning interface (`POST /sprov`,
//! `application/vnd.oma.bcast.sprov+xml`) and the 3GPP MBMS key-management interface (`POST
//! /keymanagement?requesttype=register|deregister|msk-request`, TS 33.246 Annex G), both behind
//! [`require_ua_digest`] (`profile: P-7, P-8`). The handlers only move bytes: they check the
//! content type, decode with the codecs of `keycast-provisioning`, call [`Provisioning`] with the
//! authenticated caller, the source address and the clock, hand the [`DeliveryIntent`]s to an
//! [`IntentSink`], and encode the typed answer.
//!
//! ```text
//! let state = Arc::new(ProvisioningState::new(Provisioning::new(store, config), guard));
//! let app = bsm_app(state);
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! ```
//!
//! The source address comes from axum's `ConnectInfo`: serve the router with
//! `into_make_service_with_connect_info::<SocketAddr>()` (P-8: the push address is the source
//! address of the registration). Requests are bounded by the guard's body limit and again by the
//! codecs' 64 KiB XML limit.
//!
//! HTTP-level refusals, all from [`ProvisioningHttpError`]: 415 for a wrong content type, 413 for a
//! body over the XML limit, 400 for XML that does not decode (the codec's typed error in the
//! body) or for a response posted as a request, 404 for an unknown `requesttype` (33.246
//! §6.3.2.4: malformed Request-URI), 503 when the store fails, 500 for our own failures. Per-item
//! problems are status codes inside a 200 answer.
//!
//! Registrations (`RegistrationRequest`, `requesttype=register`) also pass the BCAST_Client_ID
//! rules of [`ProvisioningState::with_client_id_policy`] (seed §6.9.2, see
//! [`super::client_id`]): `403 send_BCAST_Client_ID`, `403` for an ID outside mutually
//! authenticated HTTPS, `400` for a malformed ID; an accepted ID is stored with the terminal
//! after the Registration is handled. For the channel to be known, serve the router with
//! [`super::tls::serve`] (which also provides the `ConnectInfo`); served otherwise, every request
//! counts as plain HTTP.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use keycast_provisioning::mbms::{
    self, DEREGISTER_CONTENT_TYPE, DeregisterRequest, MSK_REQUEST_CONTENT_TYPE, MSK_RESPONSE_CONTENT_TYPE, MskRequest,
    REGISTER_CONTENT_TYPE, REGISTER_RESPONSE_CONTENT_TYPE, RegisterRequest,
};
use keycast_provisioning::sprov::{self, SprovMessage, XmlError};

use super::auth::{Clock, UaGuard, UaIdentity, require_ua_digest, system_clock};
use super::client_id::{RequestChannel, client_id_gate};
use crate::client_id::{BcastClientId, BcastClientIdPolicy};
use crate::service::{DeliveryIntent, Provisioning, ServiceError};
use crate::store::{BsmStore, StoreError};

/// Path of the OMA BCAST service provisioning interface \[chosen: the PurchaseURL's path\].
pub const SPROV_PATH: &str = "/sprov";
/// Path of the 3GPP MBMS key-management interface (33.246 Annex G).
pub const KEY_MANAGEMENT_PATH: &str = "/keymanagement";

/// What [`IntentSink::submit`] returns: done when the intents are stored, or why not.
pub type SubmitFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// Where the routes put what the push scheduler should do. The scheduler's shell implements it;
/// [`LogIntents`] only logs.
pub trait IntentSink: Send + Sync {
    /// Takes the intents of one answered request. The route awaits it after the answer is decided
    /// and before it is sent, so the deliveries are stored before the terminal hears of its
    /// purchase (a failure answers 503: the terminal retries, and the request is idempotent).
    fn submit(&self, intents: Vec<DeliveryIntent>) -> SubmitFuture<'_>;
}

/// An [`IntentSink`] that logs how many intents it drops (for a BSM without pushes).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogIntents;

impl IntentSink for LogIntents {
    fn submit(&self, intents: Vec<DeliveryIntent>) -> SubmitFuture<'_> {
        if !intents.is_empty() {
            tracing::debug!(count = intents.len(), "delivery intents dropped: no push scheduler attached");
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The routes' state: the provisioning logic, the Ua Digest guard, the intent sink, the clock,
/// the BCAST_Client_ID policy.
pub struct ProvisioningState<S> {
    service: Provisioning<S>,
    guard: Arc<UaGuard>,
    intents: Arc<dyn IntentSink>,
    clock: Clock,
    client_id_policy: BcastClientIdPolicy,
}

impl<S> core::fmt::Debug for ProvisioningState<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ProvisioningState")
            .field("guard", &self.guard)
            .field("client_id_policy", &self.client_id_policy)
            .finish_non_exhaustive()
    }
}

impl<S: BsmStore + Sync> ProvisioningState<S> {
    /// State with the system clock, [`LogIntents`] and the default BCAST_Client_ID policy
    /// ([`BcastClientIdPolicy::Ignore`]).
    #[must_use]
    pub fn new(service: Provisioning<S>, guard: Arc<UaGuard>) -> Self {
        ProvisioningState {
            service,
            guard,
            intents: Arc::new(LogIntents),
            clock: system_clock(),
            client_id_policy: BcastClientIdPolicy::default(),
        }
    }

    /// Sets the BCAST_Client_ID policy of Registrations (seed §6.9.2).
    #[must_use]
    pub fn with_client_id_policy(mut self, policy: BcastClientIdPolicy) -> Self {
        self.client_id_policy = policy;
        self
    }

    /// The BCAST_Client_ID policy.
    #[must_use]
    pub fn client_id_policy(&self) -> BcastClientIdPolicy {
        self.client_id_policy
    }

    /// Replaces the intent sink.
    #[must_use]
    pub fn with_intents(mut self, intents: Arc<dyn IntentSink>) -> Self {
        self.intents = intents;
        self
    }

    /// Replaces the clock (tests; it should be the guard's).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The provisioning logic.
    #[must_use]
    pub fn service(&self) -> &Provisioning<S> {
        &self.service
    }
}

/// Why a provisioning request got no 200. Carries no secret; the body says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisioningHttpError {
    /// The content type is not the one the interface (and request type) takes.
    #[error("unsupported content type: expected {expected}")]
    UnsupportedMediaType {
        /// The content type expected.
        expected: &'static str,
    },
    /// The body is over the XML limit.
    #[error("body over {max} octets")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The XML does not decode.
    #[error("malformed provisioning message: {0}")]
    Malformed(#[from] XmlError),
    /// A response message was posted.
    #[error("{0} is not a request")]
    NotARequest(&'static str),
    /// `requesttype` is missing or unknown.
    #[error("unknown requesttype: expected register, deregister or msk-request")]
    UnknownRequestType,
    /// The store is unavailable; the terminal may retry.
    #[error("service unavailable")]
    Unavailable,
    /// Our failure.
    #[error("internal error")]
    Internal,
}

impl ProvisioningHttpError {
    /// The HTTP status.
    #[must_use]
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Malformed(_) | Self::NotARequest(_) => StatusCode::BAD_REQUEST,
            Self::UnknownRequestType => StatusCode::NOT_FOUND,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ProvisioningHttpError {
    fn into_response(self) -> Response {
        (self.status_code(), [(CONTENT_TYPE, "text/plain; charset=utf-8")], self.to_string()).into_response()
    }
}

impl From<ServiceError> for ProvisioningHttpError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotARequest(root) => Self::NotARequest(root),
            ServiceError::Store(e) => {
                tracing::error!(error = %e, "provisioning: store failed");
                Self::Unavailable
            }
            other => {
                tracing::error!(error = %other, "provisioning: request failed");
                Self::Internal
            }
        }
    }
}

/// The router: `POST /sprov` and `POST /keymanagement`, both behind [`require_ua_digest`].
pub fn bsm_app<S: BsmStore + Send + Sync + 'static>(state: Arc<ProvisioningState<S>>) -> Router {
    let guard = state.guard.clone();
    Router::new()
        .route(SPROV_PATH, post(sprov_handler::<S>))
        .route(KEY_MANAGEMENT_PATH, post(key_management_handler::<S>))
        .route_layer(axum::middleware::from_fn_with_state(guard, require_ua_digest))
        .with_state(state)
}

/// The media type of `Content-Type` without parameters (as sent: compare it ignoring ASCII
/// case); `None` when absent or not text.
fn media_type(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or_default().trim())
}

fn expect_content(
    headers: &HeaderMap,
    expected: &'static str,
    body: &Bytes,
    max: usize,
) -> Result<(), ProvisioningHttpError> {
    // Compared in place rather than lower-cased into a new string: every request passes here.
    if !media_type(headers).is_some_and(|m| m.eq_ignore_ascii_case(expected)) {
        return Err(ProvisioningHttpError::UnsupportedMediaType { expected });
    }
    if body.len() > max {
        return Err(ProvisioningHttpError::TooLarge { max });
    }
    Ok(())
}

fn xml_answer(content_type: &'static str, xml: Result<String, XmlError>) -> Response {
    match xml {
        Ok(xml) => (StatusCode::OK, [(CONTENT_TYPE, content_type)], xml).into_response(),
        Err(e) => {
            // Our own answer does not encode: a bug or an over-long answer, never the peer's fault.
            tracing::error!(error = %e, "provisioning: answer does not encode");
            ProvisioningHttpError::Internal.into_response()
        }
    }
}

/// Stores an accepted BCAST_Client_ID with the terminal the request authenticated.
async fn keep_client_id<S: BsmStore + Send + Sync + 'static>(
    state: &ProvisioningState<S>,
    terminal: &crate::domain::TerminalId,
    client_id: Option<BcastClientId>,
) -> Result<(), ProvisioningHttpError> {
    let Some(client_id) = client_id else { return Ok(()) };
    match state.service.store().set_bcast_client_id(terminal, &client_id).await {
        Ok(true) => Ok(()),
        // The Registration has just touched the terminal: only a concurrent removal gets here.
        Ok(false) => {
            tracing::warn!(terminal = %terminal.0, "BCAST_Client_ID not stored: the terminal vanished");
            Ok(())
        }
        Err(e) => Err(ServiceError::Store(e).into()),
    }
}

async fn sprov_handler<S: BsmStore + Send + Sync + 'static>(
    State(state): State<Arc<ProvisioningState<S>>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    RequestChannel(channel): RequestChannel,
    terminal: UaIdentity,
    request: Request,
) -> Result<Response, ProvisioningHttpError> {
    // The request taken whole rather than as `HeaderMap` + `Bytes`: the `HeaderMap` extractor
    // copies every header of every request. The body was read (and bounded) by the Ua layer.
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let body = body_bytes(body, sprov::MAX_XML_LEN).await?;
    expect_content(&headers, sprov::CONTENT_TYPE, &body, sprov::MAX_XML_LEN)?;
    let message = SprovMessage::from_xml(&body)?;
    if !message.is_request() {
        return Err(ProvisioningHttpError::NotARequest(message.root_name()));
    }
    let registration = matches!(message, SprovMessage::RegistrationRequest(_));
    let client_id = match client_id_gate(state.client_id_policy, channel, &headers, registration, terminal.btid()) {
        Ok(id) => id,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    let caller = state.service.caller(&terminal.keys);
    let now = (state.clock)();
    let kind = message.root_name();
    let outcome = state.service.handle(&caller, message, source, now).await?;
    keep_client_id(&state, &caller.terminal, client_id).await?;
    tracing::info!(btid = terminal.btid(), request = kind, intents = outcome.intents.len(), "sprov");
    store_intents(&state, outcome.intents).await?;
    Ok(xml_answer(sprov::CONTENT_TYPE, outcome.response.to_xml()))
}

/// The request body, refused with 413 past `max` octets.
async fn body_bytes(body: Body, max: usize) -> Result<Bytes, ProvisioningHttpError> {
    axum::body::to_bytes(body, max).await.map_err(|_| ProvisioningHttpError::TooLarge { max })
}

/// Hands the intents to the sink and waits until they are stored.
async fn store_intents<S>(
    state: &ProvisioningState<S>,
    intents: Vec<DeliveryIntent>,
) -> Result<(), ProvisioningHttpError> {
    let count = intents.len();
    state.intents.submit(intents).await.map_err(|e| {
        tracing::error!(error = %e, count, "delivery intents not stored; answering 503");
        ProvisioningHttpError::Unavailable
    })
}

/// The `requesttype` query parameter (33.246 Annex G).
fn request_type(uri: &Uri) -> Option<&str> {
    uri.query()?.split('&').find_map(|pair| pair.strip_prefix("requesttype="))
}

async fn key_management_handler<S: BsmStore + Send + Sync + 'static>(
    State(state): State<Arc<ProvisioningState<S>>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    RequestChannel(channel): RequestChannel,
    terminal: UaIdentity,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ProvisioningHttpError> {
    let caller = state.service.caller(&terminal.keys);
    let now = (state.clock)();
    let kind = request_type(&uri).ok_or(ProvisioningHttpError::UnknownRequestType)?;
    // A Registration is judged once it decodes; the other requests only for an ID in the clear.
    let gate = |registration| client_id_gate(state.client_id_policy, channel, &headers, registration, terminal.btid());
    if kind != "register"
        && let Err(refusal) = gate(false)
    {
        return Ok(refusal.into_response());
    }
    let (intents, answer) = match kind {
        "register" => {
            expect_content(&headers, REGISTER_CONTENT_TYPE, &body, mbms::MAX_XML_LEN)?;
            let request = RegisterRequest::from_xml(&body)?;
            let client_id = match gate(true) {
                Ok(id) => id,
                Err(refusal) => return Ok(refusal.into_response()),
            };
            let o = state.service.mbms_register(&caller, &request, source, now).await?;
            keep_client_id(&state, &caller.terminal, client_id).await?;
            (o.intents, xml_answer(REGISTER_RESPONSE_CONTENT_TYPE, o.response.to_xml()))
        }
        "deregister" => {
            expect_content(&headers, DEREGISTER_CONTENT_TYPE, &body, mbms::MAX_XML_LEN)?;
            let request = DeregisterRequest::from_xml(&body)?;
            let o = state.service.mbms_deregister(&caller, &request, now).await?;
            (o.intents, xml_answer(REGISTER_RESPONSE_CONTENT_TYPE, o.response.to_xml()))
        }
        "msk-request" => {
            expect_content(&headers, MSK_REQUEST_CONTENT_TYPE, &body, mbms::MAX_XML_LEN)?;
            let request = MskRequest::from_xml(&body)?;
            let o = state.service.mbms_msk_request(&caller, &request, source, now).await?;
            (o.intents, xml_answer(MSK_RESPONSE_CONTENT_TYPE, o.response.to_xml()))
        }
        _ => return Err(ProvisioningHttpError::UnknownRequestType),
    };
    tracing::info!(btid = terminal.btid(), request = kind, intents = intents.len(), "keymanagement");
    store_intents(&state, intents).await?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_type_is_read_from_the_query() {
        let uri: Uri = "/keymanagement?requesttype=msk-request".parse().unwrap();
        assert_eq!(request_type(&uri), Some("msk-request"));
        let uri: Uri = "/keymanagement?x=1&requesttype=register".parse().unwrap();
        assert_eq!(request_type(&uri), Some("register"));
        let uri: Uri = "/keymanagement".parse().unwrap();
        assert_eq!(request_type(&uri), None);
    }

    #[test]
    fn media_type_ignores_parameters_and_case() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, "Application/VND.oma.bcast.sprov+xml; charset=utf-8".parse().unwrap());
        assert!(media_type(&h).is_some_and(|m| m.eq_ignore_ascii_case(sprov::CONTENT_TYPE)));
        assert!(expect_content(&h, sprov::CONTENT_TYPE, &Bytes::new(), 1).is_ok());
        assert_eq!(media_type(&HeaderMap::new()), None);
    }
}
