//! HTTP Digest authentication of terminals on the BSM's provisioning interfaces (Ua), without
//! IO: RFC 2617 Digest with GBA keys (TS 24.109 §5.2, TS 33.246 §6.1, profile P-7).
//!
//! `profile: P-7` — username = B-TID, password = base64(SRK), realm =
//! `3GPP-bootstrapping@<BSM FQDN>`, `algorithm=MD5`, `qop="auth,auth-int"` offered, User-Agent
//! carrying `3gpp-gba`.
//!
//! # Flow
//! The shell calls [`UaAuthenticator::begin`] with the request head, the time and 16 random
//! octets (for a nonce, should one be needed). It either answers at once ([`UaStep::Respond`]:
//! 401 with a challenge, 400, 403) or asks for the keys of the B-TID ([`UaStep::NeedKeys`]).
//! The shell gets them from a [`crate::keys::KeySource`] and calls [`UaAuthenticator::complete`]
//! with the outcome and the request body, which answers ([`UaVerdict::Respond`]) or accepts
//! ([`UaVerdict::Accepted`]). After the application has produced its response,
//! [`Authenticated::authentication_info`] gives the `Authentication-Info` value, whose `rspauth`
//! covers the response body under `auth-int`.
//!
//! ```text
//! no Authorization                         -> 401 challenge
//! Authorization unparsable / wrong realm, algorithm, qop, uri / empty response -> 400
//! nonce forged, foreign, dated ahead       -> 401 challenge
//! nonce expired                            -> 401 challenge, stale=true
//! ok so far                                -> NeedKeys(B-TID)
//! B-TID unknown to the BSF, or its lifetime over -> 401 challenge (the terminal bootstraps again)
//! BSF unreachable or refusing the BSM      -> 503
//! response wrong (wrong key, other terminal's B-TID, body altered under auth-int) -> 401 challenge
//! nc not above the highest seen for (nonce, B-TID) -> 401 challenge
//! otherwise                                -> accepted
//! ```
//!
//! # Choices
//! - \[chosen\] **User-Agent**: a request whose User-Agent has no product token `3gpp-gba` (or
//!   `3gpp-gba-…`, e.g. `3gpp-gba-tmpi`) is refused with **403**: it does not come from a GBA
//!   client, and this BSM offers no other authentication. [`UaConfig::require_gba_user_agent`]
//!   turns the rule off. `curl -A 3gpp-gba` passes.
//! - \[chosen\] **Errors the client made** (realm of another host or prefix, algorithm other than
//!   MD5, no or unknown qop, `uri` not the Request-URI, `auts`, empty or non-hex `response`,
//!   username empty or over [`MAX_BTID_LEN`] octets) get **400**, as on the BSF: no correct
//!   client produces them from our challenge, so a new challenge would not help.
//! - **Nonces** are stateless ([`NonceIssuer`], HMAC-tagged, issue time inside) and live
//!   [`UaConfig::nonce_lifetime`] seconds (\[chosen\] default 300). Within that time the terminal
//!   reuses the nonce with a rising `nc`; no `nextnonce` is sent. `stale=true` is set on the age
//!   of the nonce alone, before any key is fetched.
//! - **Replay**: [`NcTracker`] ([`NcPolicy::Increasing`], bounded) keyed by (nonce, B-TID), so
//!   terminals cannot disturb each other's counts; it is updated only after the response
//!   verified. A nonce the bounded tracker had to forget gets `stale=true`.
//! - **qop**: `auth` and `auth-int` are both accepted. Only `auth-int` covers the body;
//!   interfaces that must not trust an unprotected body should run over TLS.
//! - No failure counting: the password is a 256-bit key, not something to guess.
//! - No `opaque`: the nonce already carries everything the server needs.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use keycast_crypto::hmac::hmac_sha256;
use keycast_provisioning::digest::{
    Algorithm, Challenge, Credentials, GbaRealmPrefix, MAX_HEADER_LEN, NcError, NcPolicy, NcTracker, NonceCount,
    NonceError, NonceInfo, NonceIssuer, NonceKind, Password, Qop, VerifyError, realm_host_matches, split_gba_realm,
    uri_names_request,
};
use zeroize::Zeroizing;

use crate::keys::{GbaType, KeyError, KeyRecord};

/// Longest B-TID accepted as a username (base64(RAND) `@` a DNS name).
pub const MAX_BTID_LEN: usize = 255;
/// Default nonce lifetime, seconds \[chosen\].
pub const DEFAULT_NONCE_LIFETIME: u64 = 300;
/// Default number of (nonce, B-TID) pairs whose `nc` is remembered \[chosen\].
pub const DEFAULT_NC_CAPACITY: usize = 65_536;
/// The product token of a GBA client in the User-Agent (TS 24.109 §5.2).
pub const GBA_PRODUCT_TOKEN: &str = "3gpp-gba";

/// Configuration of the authenticator.
#[derive(Clone)]
pub struct UaConfig {
    /// The BSM's FQDN: the realm host (and, elsewhere, the NAF_Id).
    pub fqdn: String,
    /// Secret the nonce and replay keys are derived from. BSM nodes behind one name share it.
    pub secret: Zeroizing<[u8; 32]>,
    /// How long a nonce may be used, seconds.
    pub nonce_lifetime: u64,
    /// How many (nonce, B-TID) pairs the replay guard remembers.
    pub nc_capacity: usize,
    /// Refuse requests without a `3gpp-gba` User-Agent token (403).
    pub require_gba_user_agent: bool,
}

impl core::fmt::Debug for UaConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UaConfig")
            .field("fqdn", &self.fqdn)
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("nc_capacity", &self.nc_capacity)
            .field("require_gba_user_agent", &self.require_gba_user_agent)
            .finish_non_exhaustive()
    }
}

impl UaConfig {
    /// A configuration with the defaults: nonces live [`DEFAULT_NONCE_LIFETIME`] s, the replay
    /// guard holds [`DEFAULT_NC_CAPACITY`] entries, the User-Agent rule is on.
    #[must_use]
    pub fn new(fqdn: &str, secret: [u8; 32]) -> Self {
        UaConfig {
            fqdn: fqdn.to_owned(),
            secret: Zeroizing::new(secret),
            nonce_lifetime: DEFAULT_NONCE_LIFETIME,
            nc_capacity: DEFAULT_NC_CAPACITY,
            require_gba_user_agent: true,
        }
    }
}

/// A configuration the authenticator cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The FQDN is empty, over 253 octets, or holds characters other than ASCII letters,
    /// digits, `.` and `-`.
    #[error("BSM FQDN must be a DNS name")]
    InvalidFqdn,
    /// The nonce lifetime is zero.
    #[error("nonce lifetime must be positive")]
    ZeroNonceLifetime,
}

/// The head of one request, as the shell received it.
#[derive(Debug, Clone, Copy)]
pub struct UaRequest<'a> {
    /// The method.
    pub method: &'a str,
    /// The Request-URI (origin form `/path?query`, or absolute form).
    pub uri: &'a str,
    /// The `Authorization` value, if present.
    pub authorization: Option<&'a str>,
    /// The `User-Agent` value, if present.
    pub user_agent: Option<&'a str>,
}

/// Why a request was not accepted; also a metric label ([`UaFailure::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UaFailure {
    /// 400: the request breaks the Digest rules of this interface.
    Malformed,
    /// 403: no `3gpp-gba` User-Agent token.
    NotGbaClient,
    /// 401: nonce not ours (malformed, forged, another kind, dated ahead).
    InvalidNonce,
    /// 401 with `stale=true`: nonce older than its lifetime.
    ExpiredNonce,
    /// 401 with `stale=true`: the replay guard had to forget nonces this old.
    UntrackedNonce,
    /// 401: the BSF knows no such B-TID.
    UnknownBtid,
    /// 401: the B-TID's key lifetime is over.
    ExpiredKey,
    /// 401: `response` does not verify (wrong key, another terminal's B-TID, altered body).
    WrongResponse,
    /// 401: `nc` not above the highest accepted for this nonce and B-TID.
    ReplayedNc,
    /// 503: the keys could not be had from the BSF.
    KeysUnavailable,
    /// 500: a bug (a key source answering for another B-TID, a header that cannot be written).
    Internal,
}

impl UaFailure {
    /// Snake-case label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            UaFailure::Malformed => "malformed",
            UaFailure::NotGbaClient => "not_gba_client",
            UaFailure::InvalidNonce => "invalid_nonce",
            UaFailure::ExpiredNonce => "expired_nonce",
            UaFailure::UntrackedNonce => "untracked_nonce",
            UaFailure::UnknownBtid => "unknown_btid",
            UaFailure::ExpiredKey => "expired_key",
            UaFailure::WrongResponse => "wrong_response",
            UaFailure::ReplayedNc => "replayed_nc",
            UaFailure::KeysUnavailable => "keys_unavailable",
            UaFailure::Internal => "internal",
        }
    }
}

/// What happened to a request, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UaEvent {
    /// 401 to a request without credentials.
    Challenged,
    /// Accepted with `qop=auth-int` (`true`) or `auth` (`false`).
    Accepted {
        /// Whether the body was covered.
        auth_int: bool,
    },
    /// Refused.
    Rejected(UaFailure),
}

impl UaEvent {
    /// A metric label: `challenged`, `accepted_auth`, `accepted_auth_int`, or the failure's.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            UaEvent::Challenged => "challenged",
            UaEvent::Accepted { auth_int: true } => "accepted_auth_int",
            UaEvent::Accepted { auth_int: false } => "accepted_auth",
            UaEvent::Rejected(f) => f.as_str(),
        }
    }
}

/// A response the shell sends as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UaResponse {
    /// 400, 401, 403, 500 or 503.
    pub status: u16,
    /// Header fields (name, value).
    pub headers: Vec<(String, String)>,
    /// Body (short `text/plain`).
    pub body: Vec<u8>,
    /// What happened (never sent).
    pub event: UaEvent,
    /// Detail for the log (never sent).
    pub log_detail: Option<String>,
}

impl UaResponse {
    /// The first value of a header (case-insensitive name).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn text(status: u16, reason: &str, event: UaEvent) -> Self {
        UaResponse {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: reason.as_bytes().to_vec(),
            event,
            log_detail: None,
        }
    }

    fn bad_request(reason: &str) -> Self {
        Self::text(400, reason, UaEvent::Rejected(UaFailure::Malformed))
    }
}

/// A request whose credentials passed every check that needs no key; hand it back to
/// [`UaAuthenticator::complete`] with the keys of [`KeyQuery::btid`].
#[derive(Debug, Clone)]
#[must_use]
pub struct KeyQuery {
    method: String,
    // Boxed: the credentials are large next to a response, and both travel in one enum.
    credentials: Box<Credentials>,
    nonce: NonceInfo,
}

impl KeyQuery {
    /// The B-TID whose keys are needed.
    #[must_use]
    pub fn btid(&self) -> &str {
        &self.credentials.username
    }
}

/// The first decision ([`UaAuthenticator::begin`]).
#[derive(Debug)]
#[must_use]
pub enum UaStep {
    /// Answer with this.
    Respond(UaResponse),
    /// Fetch the keys of the B-TID, then call [`UaAuthenticator::complete`].
    NeedKeys(KeyQuery),
}

/// The final decision ([`UaAuthenticator::complete`]).
#[derive(Debug)]
#[must_use]
pub enum UaVerdict {
    /// Answer with this.
    Respond(UaResponse),
    /// The terminal is authenticated.
    Accepted(Authenticated),
}

/// An authenticated request: who sent it, its keys, and what `rspauth` needs.
#[derive(Debug, Clone)]
pub struct Authenticated {
    keys: Arc<KeyRecord>,
    credentials: Box<Credentials>,
    /// The Ua password the response verified with, kept for `rspauth` (one copy per request,
    /// not two; it remembers its HA1).
    password: Password,
}

impl Authenticated {
    /// The B-TID.
    #[must_use]
    pub fn btid(&self) -> &str {
        self.keys.btid()
    }

    /// The IMPI behind the B-TID.
    #[must_use]
    pub fn impi(&self) -> &str {
        self.keys.impi()
    }

    /// GBA_U or GBA_ME.
    #[must_use]
    pub fn gba_type(&self) -> GbaType {
        self.keys.gba_type()
    }

    /// The terminal's keys (SMK for LTKMs).
    #[must_use]
    pub fn keys(&self) -> &Arc<KeyRecord> {
        &self.keys
    }

    /// Whether the request body was covered by the response (`qop=auth-int`).
    #[must_use]
    pub fn body_protected(&self) -> bool {
        self.credentials.qop == Some(Qop::AuthInt)
    }

    /// The event to record.
    #[must_use]
    pub fn event(&self) -> UaEvent {
        UaEvent::Accepted { auth_int: self.body_protected() }
    }

    /// The `Authentication-Info` value for the response carrying `response_body`: `rspauth`
    /// (over the body under `auth-int`) and the echoed `qop`, `cnonce`, `nc`. `None` only if
    /// the echoed values cannot be written back (the parser accepted them, so not expected).
    #[must_use]
    pub fn authentication_info(&self, response_body: &[u8]) -> Option<String> {
        let info = self.credentials.authentication_info(&self.password, response_body, None).ok()?;
        info.to_header_value().ok()
    }
}

/// The Ua Digest authenticator of one BSM. One value serves concurrent requests (`&self`):
/// the only state, the replay guard, sits behind a short synchronous lock.
pub struct UaAuthenticator {
    fqdn: String,
    realm: String,
    require_gba_user_agent: bool,
    issuer: NonceIssuer,
    nc_key: Zeroizing<[u8; 32]>,
    nc: Mutex<NcTracker>,
}

impl core::fmt::Debug for UaAuthenticator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UaAuthenticator")
            .field("realm", &self.realm)
            .field("require_gba_user_agent", &self.require_gba_user_agent)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn valid_fqdn(fqdn: &str) -> bool {
    !fqdn.is_empty() && fqdn.len() <= 253 && fqdn.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
}

/// Whether a User-Agent value carries the product `3gpp-gba` or `3gpp-gba-<something>`
/// (any version, any case).
#[must_use]
pub fn has_gba_token(user_agent: &str) -> bool {
    user_agent.split_ascii_whitespace().any(|word| {
        let product = word.split('/').next().unwrap_or_default();
        product.get(..GBA_PRODUCT_TOKEN.len()).is_some_and(|p| p.eq_ignore_ascii_case(GBA_PRODUCT_TOKEN))
            && matches!(product.as_bytes().get(GBA_PRODUCT_TOKEN.len()), None | Some(b'-'))
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The tracker is updated by single map operations: a panic elsewhere cannot leave it torn.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl UaAuthenticator {
    /// An authenticator for this configuration.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn new(config: &UaConfig) -> Result<Self, ConfigError> {
        if !valid_fqdn(&config.fqdn) {
            return Err(ConfigError::InvalidFqdn);
        }
        if config.nonce_lifetime == 0 {
            return Err(ConfigError::ZeroNonceLifetime);
        }
        // Separate keys, so the nonce tag and the replay-guard index never share one.
        let nonce_key = hmac_sha256(&config.secret[..], &[b"keycast-bsm ua nonce"]);
        let nc_key = Zeroizing::new(hmac_sha256(&config.secret[..], &[b"keycast-bsm ua nc"]));
        Ok(UaAuthenticator {
            fqdn: config.fqdn.clone(),
            realm: GbaRealmPrefix::Bootstrapping.realm(&config.fqdn),
            require_gba_user_agent: config.require_gba_user_agent,
            issuer: NonceIssuer::new(nonce_key, config.nonce_lifetime),
            nc_key,
            nc: Mutex::new(NcTracker::new(NcPolicy::Increasing, config.nc_capacity, config.nonce_lifetime)),
        })
    }

    /// The realm of the challenges: `3GPP-bootstrapping@<FQDN>`.
    #[must_use]
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// A 401 with a fresh challenge (nonce from `random` and `now`).
    #[must_use]
    pub fn challenge(&self, now: u64, random: &[u8; 16], stale: bool, event: UaEvent) -> UaResponse {
        let challenge = Challenge {
            realm: self.realm.clone(),
            nonce: self.issuer.issue_ua(random, now),
            opaque: None,
            algorithm: Some(Algorithm::Md5),
            // profile: P-7 — both offered, `auth` first as written there.
            qop: vec![Qop::Auth, Qop::AuthInt],
            stale,
            other: Vec::new(),
        };
        match challenge.to_header_value() {
            Ok(value) => {
                let mut r = UaResponse::text(401, "authentication required", event);
                r.headers.push(("WWW-Authenticate".into(), value));
                r
            }
            Err(e) => {
                let mut r = UaResponse::text(500, "internal error", UaEvent::Rejected(UaFailure::Internal));
                r.log_detail = Some(format!("challenge cannot be written: {e}"));
                r
            }
        }
    }

    fn refuse(&self, now: u64, random: &[u8; 16], failure: UaFailure) -> UaResponse {
        let stale = matches!(failure, UaFailure::ExpiredNonce | UaFailure::UntrackedNonce);
        self.challenge(now, random, stale, UaEvent::Rejected(failure))
    }

    /// Everything that needs no key: User-Agent, credential syntax, realm, algorithm, qop, uri
    /// and nonce. `random` feeds the nonce of a challenge, if one is sent. Never panics.
    pub fn begin(&self, request: &UaRequest<'_>, now: u64, random: &[u8; 16]) -> UaStep {
        match self.check_head(request, now, random) {
            Ok(query) => UaStep::NeedKeys(query),
            Err(response) => UaStep::Respond(response),
        }
    }

    fn check_head(&self, request: &UaRequest<'_>, now: u64, random: &[u8; 16]) -> Result<KeyQuery, UaResponse> {
        if let Some(ua) = request.user_agent.filter(|ua| ua.len() > MAX_HEADER_LEN) {
            return Err(UaResponse::bad_request(&format!("User-Agent of {} octets is too long", ua.len())));
        }
        if self.require_gba_user_agent && !request.user_agent.is_some_and(has_gba_token) {
            return Err(UaResponse::text(
                403,
                "User-Agent must carry the 3gpp-gba product token",
                UaEvent::Rejected(UaFailure::NotGbaClient),
            ));
        }
        let Some(header) = request.authorization else {
            return Err(self.challenge(now, random, false, UaEvent::Challenged));
        };
        let credentials = Credentials::parse(header).map_err(|e| UaResponse::bad_request(&e.reason()))?;
        if credentials.username.is_empty() || credentials.username.len() > MAX_BTID_LEN {
            return Err(UaResponse::bad_request("username must be a B-TID of 1 to 255 octets"));
        }
        // profile: P-7 — the ME-based key answers the `3GPP-bootstrapping` realm of this host.
        let realm_ok = realm_host_matches(&credentials.realm, &self.fqdn)
            && split_gba_realm(&credentials.realm).is_some_and(|(p, _)| p == GbaRealmPrefix::Bootstrapping);
        if !realm_ok {
            return Err(UaResponse::bad_request("realm is not this BSM's"));
        }
        if credentials.algorithm.as_ref().is_some_and(|a| *a != Algorithm::Md5) {
            return Err(UaResponse::bad_request("algorithm must be MD5"));
        }
        match credentials.qop {
            Some(Qop::Auth | Qop::AuthInt) => {}
            None => return Err(UaResponse::bad_request("qop is required (auth or auth-int)")),
            Some(_) => return Err(UaResponse::bad_request("qop must be auth or auth-int")),
        }
        if credentials.response.is_empty() {
            return Err(UaResponse::bad_request("response is empty"));
        }
        if credentials.auts.is_some() {
            return Err(UaResponse::bad_request("auts has no meaning on this interface"));
        }
        if !uri_names_request(&credentials.uri, request.uri) {
            return Err(UaResponse::bad_request("uri does not name the Request-URI"));
        }
        let nonce = match self.issuer.check(&credentials.nonce, now) {
            Ok(info) if info.kind == NonceKind::Ua => info,
            Err(NonceError::Expired { .. }) => return Err(self.refuse(now, random, UaFailure::ExpiredNonce)),
            Ok(_) | Err(_) => return Err(self.refuse(now, random, UaFailure::InvalidNonce)),
        };
        Ok(KeyQuery { method: request.method.to_owned(), credentials: Box::new(credentials), nonce })
    }

    /// Finishes a request with the outcome of the key lookup for [`KeyQuery::btid`] and the
    /// request body: verifies the response (over the body under `auth-int`), then the nonce
    /// count. Never panics.
    pub fn complete(
        &self,
        query: KeyQuery,
        keys: Result<Arc<KeyRecord>, KeyError>,
        body: &[u8],
        now: u64,
        random: &[u8; 16],
    ) -> UaVerdict {
        match self.check_answer(query, keys, body, now, random) {
            Ok(accepted) => UaVerdict::Accepted(accepted),
            Err(response) => UaVerdict::Respond(response),
        }
    }

    fn check_answer(
        &self,
        query: KeyQuery,
        keys: Result<Arc<KeyRecord>, KeyError>,
        body: &[u8],
        now: u64,
        random: &[u8; 16],
    ) -> Result<Authenticated, UaResponse> {
        let keys = match keys {
            Ok(k) => k,
            Err(KeyError::UnknownBtid) => return Err(self.refuse(now, random, UaFailure::UnknownBtid)),
            Err(KeyError::Expired { .. }) => return Err(self.refuse(now, random, UaFailure::ExpiredKey)),
            Err(e) => {
                let mut r =
                    UaResponse::text(503, "key server unavailable", UaEvent::Rejected(UaFailure::KeysUnavailable));
                r.headers.push(("Retry-After".into(), "5".into()));
                r.log_detail = Some(e.to_string());
                return Err(r);
            }
        };
        if keys.btid() != query.btid() {
            let mut r = UaResponse::text(500, "internal error", UaEvent::Rejected(UaFailure::Internal));
            r.log_detail = Some("key source answered for another B-TID".into());
            return Err(r);
        }
        if !keys.is_valid_at(now) {
            return Err(self.refuse(now, random, UaFailure::ExpiredKey));
        }
        let password = keys.ua_password();
        match query.credentials.verify_response(&password, &query.method, body) {
            Ok(()) => {}
            Err(VerifyError::Mismatch) => return Err(self.refuse(now, random, UaFailure::WrongResponse)),
            Err(_) => return Err(UaResponse::bad_request("response cannot be checked")),
        }
        // The parser pairs `nc` with `qop`, and `qop` is present by now.
        let nc = query.credentials.nc.unwrap_or(NonceCount(0));
        let per_terminal = NonceInfo { id: self.nc_index(&query.nonce, query.btid()), ..query.nonce };
        match lock(&self.nc).accept(&per_terminal, nc, now) {
            Ok(()) => Ok(Authenticated { keys, credentials: query.credentials, password }),
            Err(NcError::Forgotten) => Err(self.refuse(now, random, UaFailure::UntrackedNonce)),
            Err(_) => Err(self.refuse(now, random, UaFailure::ReplayedNc)),
        }
    }

    /// The replay guard's key for (nonce, B-TID).
    fn nc_index(&self, nonce: &NonceInfo, btid: &str) -> [u8; 16] {
        let mac = hmac_sha256(&self.nc_key[..], &[&nonce.id, btid.as_bytes()]);
        core::array::from_fn(|i| mac[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gba_token() {
        for ok in ["3gpp-gba", "3GPP-GBA", "Keycast/1.0 3gpp-gba", "x 3gpp-gba-tmpi/2 y", "3gpp-gba/1.0"] {
            assert!(has_gba_token(ok), "{ok}");
        }
        for bad in ["", "curl/8.0", "3gpp-gbax", "x3gpp-gba", "3gpp", "(3gpp-gba)", "é3gpp-gba"] {
            assert!(!has_gba_token(bad), "{bad}");
        }
    }
}
