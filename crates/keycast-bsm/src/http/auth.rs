//! Ua Digest authentication in front of axum routes: [`require_ua_digest`] runs the sans-IO
//! [`UaAuthenticator`] for each request, fetches keys through a [`KeySource`] when it asks, and
//! either answers (401, 400, 403, 413, 503) or hands the request on with a [`UaIdentity`] in its
//! extensions, which handlers take as an extractor. On the way back it adds
//! `Authentication-Info` (`rspauth` over the handler's response body).
//!
//! ```text
//! let guard = Arc::new(UaGuard::new(authenticator, Arc::new(KeyCache::new(zn_client, 65_536))));
//! let app = Router::new()
//!     .route("/sprov", post(handler))
//!     .route_layer(axum::middleware::from_fn_with_state(guard, require_ua_digest));
//! async fn handler(terminal: UaIdentity, body: Bytes) -> impl IntoResponse { … }
//! ```
//!
//! The layer reads the Request-URI from the request as it reaches it, so it must not sit
//! inside a nested router (which strips the prefix the terminal signed). The body is read only
//! once the head has passed (so unauthenticated requests cost no body read), up to
//! [`UaGuard::with_max_body`] octets (\[chosen\] default [`DEFAULT_MAX_BODY`], the provisioning XML
//! limit); the handler's response body is buffered up to [`MAX_RESPONSE_BODY`] for `rspauth`.
//!
//! Each outcome is counted in `keycast_bsm_ua_requests_total{outcome}` and logged with the
//! B-TID (never a key).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::keys::{GbaType, KeyRecord, KeySource};
use crate::ua::{UaAuthenticator, UaEvent, UaFailure, UaRequest, UaResponse, UaStep, UaVerdict};

/// The wall clock as Unix seconds; tests inject their own.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// `SystemTime::now()` as Unix seconds (0 before 1970).
#[must_use]
pub fn system_clock() -> Clock {
    Arc::new(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// Default limit of an authenticated request body, octets (the provisioning XML limit).
pub const DEFAULT_MAX_BODY: usize = keycast_provisioning::sprov::MAX_XML_LEN;
/// Largest handler response body that gets an `rspauth`, octets.
pub const MAX_RESPONSE_BODY: usize = 4 * 1024 * 1024;

/// The state of [`require_ua_digest`]: the authenticator, where keys come from, the clock.
pub struct UaGuard {
    authenticator: UaAuthenticator,
    keys: Arc<dyn KeySource>,
    clock: Clock,
    max_body: usize,
}

impl core::fmt::Debug for UaGuard {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UaGuard")
            .field("authenticator", &self.authenticator)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl UaGuard {
    /// A guard with the system clock and [`DEFAULT_MAX_BODY`].
    #[must_use]
    pub fn new(authenticator: UaAuthenticator, keys: Arc<dyn KeySource>) -> Self {
        UaGuard { authenticator, keys, clock: system_clock(), max_body: DEFAULT_MAX_BODY }
    }

    /// Replaces the clock (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the request body limit, octets.
    #[must_use]
    pub fn with_max_body(mut self, max_body: usize) -> Self {
        self.max_body = max_body;
        self
    }

    /// The authenticator.
    #[must_use]
    pub fn authenticator(&self) -> &UaAuthenticator {
        &self.authenticator
    }
}

/// Who sent an authenticated request; put into the request's extensions by
/// [`require_ua_digest`] and taken by handlers as an extractor.
#[derive(Debug, Clone)]
pub struct UaIdentity {
    /// The terminal's keys (B-TID, IMPI, GBA type, SMK, SRK, lifetime).
    pub keys: Arc<KeyRecord>,
    /// Whether the request body was covered by the Digest response (`qop=auth-int`).
    pub body_protected: bool,
}

impl UaIdentity {
    /// The B-TID.
    #[must_use]
    pub fn btid(&self) -> &str {
        self.keys.btid()
    }

    /// The IMPI.
    #[must_use]
    pub fn impi(&self) -> &str {
        self.keys.impi()
    }

    /// GBA_U or GBA_ME.
    #[must_use]
    pub fn gba_type(&self) -> GbaType {
        self.keys.gba_type()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for UaIdentity {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<UaIdentity>().cloned().ok_or_else(|| {
            // A route that asks for the identity without the layer in front: our bug.
            tracing::error!(uri = %parts.uri, "UaIdentity requested on a route without require_ua_digest");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        })
    }
}

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

fn record(event: UaEvent, btid: Option<&str>, detail: Option<&str>) {
    // The usual outcome with a literal label, which the macro makes a static key: a label given as
    // an expression builds (and allocates) the key on every request.
    if event == (UaEvent::Accepted { auth_int: true }) {
        metrics::counter!("keycast_bsm_ua_requests_total", "outcome" => "accepted_auth_int").increment(1);
    } else {
        metrics::counter!("keycast_bsm_ua_requests_total", "outcome" => event.as_str()).increment(1);
    }
    match (event, detail) {
        (_, Some(detail)) => tracing::warn!(btid = ?btid, outcome = event.as_str(), detail, "ua"),
        (UaEvent::Accepted { .. }, None) => tracing::info!(btid = ?btid, outcome = event.as_str(), "ua"),
        (_, None) => tracing::debug!(btid = ?btid, outcome = event.as_str(), "ua"),
    }
}

fn send(response: UaResponse, btid: Option<&str>) -> Response {
    record(response.event, btid, response.log_detail.as_deref());
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = Response::builder().status(status);
    for (name, value) in &response.headers {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            (Ok(n), Ok(v)) => out = out.header(n, v),
            _ => {
                tracing::error!(header = %name, "authenticator produced a header that cannot be sent");
                return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            }
        }
    }
    out.body(Body::from(response.body)).unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
}

fn malformed(reason: &'static str) -> Response {
    record(UaEvent::Rejected(UaFailure::Malformed), None, None);
    text(StatusCode::BAD_REQUEST, reason)
}

/// Octets from the operating system's CSPRNG read ahead per thread, [`RANDOM_AHEAD`] at a
/// time: every request needs 16 (for a challenge it may have to send), and one `getrandom` call
/// per request was a system call on the hot path. Each octet is handed out once and wiped from
/// the buffer as it goes.
const RANDOM_AHEAD: usize = 4096;

struct RandomAhead {
    octets: Box<[u8; RANDOM_AHEAD]>,
    /// Octets before this index are used (and zero).
    used: usize,
}

impl Drop for RandomAhead {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.octets[..]);
    }
}

thread_local! {
    static RANDOM: std::cell::RefCell<RandomAhead> =
        std::cell::RefCell::new(RandomAhead { octets: Box::new([0; RANDOM_AHEAD]), used: RANDOM_AHEAD });
}

/// 16 octets from the operating system's CSPRNG (read ahead, [`RANDOM_AHEAD`]); `None` when it
/// fails.
fn os_random_16() -> Option<[u8; 16]> {
    RANDOM.with(|cell| {
        let mut ahead = cell.borrow_mut();
        if ahead.used + 16 > RANDOM_AHEAD {
            getrandom::fill(&mut ahead.octets[..]).ok()?;
            ahead.used = 0;
        }
        let at = ahead.used;
        let mut out = [0u8; 16];
        out.copy_from_slice(&ahead.octets[at..at + 16]);
        ahead.octets[at..at + 16].fill(0);
        ahead.used = at + 16;
        Some(out)
    })
}

/// The middleware: authenticates the request per profile P-7, then runs the rest of the stack
/// with a [`UaIdentity`] and adds `Authentication-Info` to its response. Use it through
/// `axum::middleware::from_fn_with_state(Arc<UaGuard>, require_ua_digest)`.
pub async fn require_ua_digest(State(guard): State<Arc<UaGuard>>, request: Request, next: Next) -> Response {
    let now = (guard.clock)();
    let Some(random) = os_random_16() else {
        tracing::error!("the operating system's random source failed");
        return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    };
    let (mut parts, body) = request.into_parts();
    let Ok(authorization) = single_header(&parts.headers, AUTHORIZATION) else {
        return malformed("Authorization must be one visible-ASCII header field");
    };
    let Ok(user_agent) = single_header(&parts.headers, USER_AGENT) else {
        return malformed("User-Agent must be one visible-ASCII header field");
    };
    // The Request-URI as received: origin form (`/path?query`, what terminals send) borrowed
    // as it is, only the absolute form written out again.
    let absolute;
    let uri = match (parts.uri.scheme(), parts.uri.path_and_query()) {
        (None, Some(origin)) => origin.as_str(),
        _ => {
            absolute = parts.uri.to_string();
            absolute.as_str()
        }
    };
    let head = UaRequest { method: parts.method.as_str(), uri, authorization, user_agent };
    let query = match guard.authenticator.begin(&head, now, &random) {
        UaStep::Respond(response) => return send(response, None),
        UaStep::NeedKeys(query) => query,
    };
    let Ok(body) = axum::body::to_bytes(body, guard.max_body).await else {
        record(UaEvent::Rejected(UaFailure::Malformed), Some(query.btid()), None);
        return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large or unreadable");
    };
    let btid = query.btid().to_owned();
    let keys = guard.keys.keys(&btid, now).await;
    let authenticated = match guard.authenticator.complete(query, keys, &body, now, &random) {
        UaVerdict::Respond(response) => return send(response, Some(&btid)),
        UaVerdict::Accepted(a) => a,
    };
    record(authenticated.event(), Some(&btid), None);
    parts
        .extensions
        .insert(UaIdentity { keys: authenticated.keys().clone(), body_protected: authenticated.body_protected() });
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;

    let (mut parts, body) = response.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_RESPONSE_BODY).await else {
        tracing::error!(btid = ?btid, "handler response body too large or unreadable for rspauth");
        return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    };
    match authenticated.authentication_info(&body).map(|v| HeaderValue::from_str(&v)) {
        Some(Ok(value)) => {
            parts.headers.insert(HeaderName::from_static("authentication-info"), value);
        }
        _ => tracing::warn!(btid = ?btid, "Authentication-Info cannot be written; sent without it"),
    }
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ahead_random_never_repeats_across_refills() {
        let per_refill = RANDOM_AHEAD / 16;
        let draws: std::collections::HashSet<[u8; 16]> =
            (0..3 * per_refill + 5).map(|_| os_random_16().expect("OS random")).collect();
        assert_eq!(draws.len(), 3 * per_refill + 5, "every draw is new");
        assert!(!draws.contains(&[0; 16]), "no wiped octets handed out");
    }
}
