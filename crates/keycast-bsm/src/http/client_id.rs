//! The BCAST_Client_ID rules ([`crate::client_id::decide`]) on the provisioning routes: the
//! handlers of `POST /sprov` (every message; a `RegistrationRequest` is a Registration) and
//! `POST /keymanagement` (`requesttype=register` is a Registration) call [`client_id_gate`] after
//! Digest authentication and decoding, before the provisioning logic, with the
//! [`RequestChannel`] that [`super::tls::serve`] recorded.
//!
//! Why after Digest: the ID is stored with the terminal the Digest layer authenticated (its
//! IMPI), and an unauthenticated request learns nothing about the BSM's policy. The terminal's
//! `User-Agent` carries both `3gpp-gba` (for the Digest layer) and `BCAST_Client_ID=<base64>`
//! (see [`crate::client_id`]).
//!
//! | decision | answer |
//! |---|---|
//! | ask | `403` (reason phrase `Not acceptable`), `Server: BCAST NAF Server`, `Content-Type: text/plain`, body exactly `send_BCAST_Client_ID` (seed §6.9.2.3; the `Date` comes from hyper) |
//! | ID outside mutual TLS | `403`, body [`CHANNEL_REFUSED_BODY`]: \[chosen\] (`profile: P-8`) 403 rather than 400 because the request is well formed but not acceptable on this connection; nothing is read or stored |
//! | malformed ID | `400`, body the [`crate::client_id::ClientIdError`] text |
//! | accepted | the request goes on; the handler stores the ID with the terminal once the Registration is handled, before the answer leaves |
//!
//! \[chosen\] (`profile: P-8`) The `Server: BCAST NAF Server` header goes on the request for the ID
//! only, where the seed shows it; other answers name no server. The Digest layer adds
//! `Authentication-Info` to these answers as to any other, so a terminal can check that the request
//! for its ID came from the BSM it authenticated.
//!
//! Outcomes other than "proceed" are counted in `keycast_bsm_client_id_total{outcome}` and
//! logged with the B-TID and, for an accepted ID, its log tag (never the ID).

use axum::extract::FromRequestParts;
use axum::http::header::{CONTENT_TYPE, SERVER, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::ext::ReasonPhrase;

use crate::client_id::{BcastClientId, BcastClientIdPolicy, Channel, ClientIdDecision, ClientIdError, decide};

/// The body of the BSM's request for the ID (seed §6.9.2.3).
pub const SEND_CLIENT_ID_BODY: &str = "send_BCAST_Client_ID";
/// The `Server` header of the BSM's request for the ID (seed §6.9.2.3).
pub const SERVER_NAME: &str = "BCAST NAF Server";
/// The body of the refusal of an ID outside mutually authenticated HTTPS.
pub const CHANNEL_REFUSED_BODY: &str = "BCAST_Client_ID is accepted only over HTTPS with a client certificate";
/// The reason phrase the seed gives its 403.
const NOT_ACCEPTABLE: ReasonPhrase = ReasonPhrase::from_static(b"Not acceptable");

/// The [`Channel`] of a request, as an extractor that never fails ([`super::tls::channel_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestChannel(pub Channel);

impl<S: Send + Sync> FromRequestParts<S> for RequestChannel {
    type Rejection = core::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestChannel(super::tls::channel_of(&parts.extensions)))
    }
}

/// The BSM's request for the ID: `403 Not acceptable`, `Server: BCAST NAF Server`, body
/// `send_BCAST_Client_ID`.
#[must_use]
pub fn send_client_id_response() -> Response {
    let mut response = (
        StatusCode::FORBIDDEN,
        [(SERVER, HeaderValue::from_static(SERVER_NAME)), (CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        SEND_CLIENT_ID_BODY,
    )
        .into_response();
    response.extensions_mut().insert(NOT_ACCEPTABLE);
    response
}

/// Why [`client_id_gate`] stops a request; its [`IntoResponse`] is the answer of the module
/// table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientIdRefusal {
    /// A Registration without the ID under [`BcastClientIdPolicy::Request`].
    #[error("{SEND_CLIENT_ID_BODY}")]
    Ask,
    /// An ID outside mutually authenticated HTTPS.
    #[error("{CHANNEL_REFUSED_BODY}")]
    Channel,
    /// A malformed ID.
    #[error(transparent)]
    Malformed(#[from] ClientIdError),
}

impl IntoResponse for ClientIdRefusal {
    fn into_response(self) -> Response {
        let status = match self {
            Self::Ask => return send_client_id_response(),
            Self::Channel => StatusCode::FORBIDDEN,
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
        };
        (status, [(CONTENT_TYPE, "text/plain; charset=utf-8")], self.to_string()).into_response()
    }
}

/// Applies `policy` to one authenticated request of terminal `btid`: `Ok(Some(id))` to store
/// after handling it, `Ok(None)` to handle it as it is, `Err(refusal)` to answer instead.
///
/// # Errors
/// [`ClientIdRefusal`].
pub fn client_id_gate(
    policy: BcastClientIdPolicy,
    channel: Channel,
    headers: &HeaderMap,
    registration: bool,
    btid: &str,
) -> Result<Option<BcastClientId>, ClientIdRefusal> {
    // The Digest layer has already refused a repeated or non-ASCII User-Agent.
    let user_agent = headers.get(USER_AGENT).and_then(|v| v.to_str().ok());
    let decision = decide(policy, channel, user_agent, registration);
    if decision != ClientIdDecision::Proceed {
        metrics::counter!("keycast_bsm_client_id_total", "outcome" => decision.as_str()).increment(1);
    }
    match decision {
        ClientIdDecision::Proceed => Ok(None),
        ClientIdDecision::Accept(id) => {
            tracing::info!(btid, client_id_tag = %id.log_tag(), ?channel, "BCAST_Client_ID accepted");
            Ok(Some(id))
        }
        ClientIdDecision::Ask => {
            tracing::info!(btid, ?channel, "Registration without BCAST_Client_ID: asked for it");
            Err(ClientIdRefusal::Ask)
        }
        ClientIdDecision::RefuseChannel => {
            tracing::warn!(btid, ?channel, "BCAST_Client_ID outside mutually authenticated HTTPS refused");
            Err(ClientIdRefusal::Channel)
        }
        ClientIdDecision::Malformed(e) => {
            tracing::info!(btid, error = %e, "malformed BCAST_Client_ID refused");
            Err(ClientIdRefusal::Malformed(e))
        }
    }
}
