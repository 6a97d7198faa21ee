//! The terminal's bootstrapping client (TS 24.109 §4, RFC 3310; facts-3gpp.md §2.1–2.3) and the
//! NAF keys it leads to (TS 33.220 Annex B, TS 33.246 §6.1, profile P-7).
//!
//! Sans-IO: [`Bootstrapper`] turns HTTP responses into HTTP requests and never opens a socket,
//! reads a clock or draws randomness; the caller passes the time and the `cnonce` octets in.
//!
//! ```text
//! start()                      -> GET / with Authorization: Digest username=IMPI, nonce="", response=""
//! handle(401 challenge)        -> AUTHENTICATE(RAND, AUTN) on the card
//!     RES                      -> Step::Send(GET / with the Digest AKA answer, password = RES)
//!     AUTS                     -> Step::Send(GET / with auts=…, empty password); expect a new 401
//!     9862 (bad MAC)           -> Err(NetworkAuthFailure): abort, the BSF gets no answer
//! handle(200 OK)               -> rspauth checked with RES, BootstrappingInfo parsed,
//!                                 B-TID and lifetime stored (EF_GBABP or GbaMeStore)
//!                                 -> Step::Done(Bootstrapped)
//! ```
//!
//! Every 401 counts as one round; after [`MAX_ROUNDS`] the client gives up
//! ([`BootstrapError::TooManyRounds`]), so a hostile BSF cannot keep it (and the card) busy.

pub mod http;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keycast_card::CardError;
use keycast_card::card::{Card, CardOpError, TransportError};
use keycast_card::gba_me::GbaMeStore;
use keycast_card::usim::AkaAnswer;
use keycast_crypto::gba::{self, NafId, UA_PROTOCOL_MBMS};
use keycast_crypto::keys::{Ck, Ik, Srk};
use keycast_provisioning::bootstrapping::BootstrappingInfo;
use keycast_provisioning::digest::{
    Algorithm, AuthenticationInfo, Challenge, ClientError, Credentials, DigestClient, GbaRealmPrefix, HeaderError,
    Password, Qop, SentRequest, realm_host_matches, split_gba_realm,
};
use keycast_provisioning::time::UtcTime;

/// Most 401 answers handled in one bootstrapping run. A normal run needs one (two after a
/// resynchronisation); the third allows one retry after a refused response.
pub const MAX_ROUNDS: u32 = 3;

/// Seconds before the end of the key lifetime at which [`BootstrapState::needs_bootstrap`]
/// already asks for a new bootstrap (so that a Ua exchange started just before the end does not
/// fail half-way).
pub const LIFETIME_MARGIN_SECS: u64 = 60;

/// The User-Agent product token of a GBA client in the ME (24.109 §5.2, facts-3gpp.md §1.6).
pub const GBA_PRODUCT_TOKEN: &str = "3gpp-gba";

/// The only request-URI the client uses toward the BSF (facts-3gpp.md §2.1).
const BSF_URI: &str = "/";
/// The method of every Ub request.
const BSF_METHOD: &str = "GET";
/// Length of RAND ‖ AUTN at the start of the Ub nonce.
const RAND_AUTN_LEN: usize = 32;
/// Longest `nonce` text accepted before base64 decoding (RAND ‖ AUTN ‖ server data).
const MAX_NONCE_LEN: usize = 1024;

/// How the terminal bootstraps, which decides the card context used on Ub and where the NAF keys
/// come from (TS 33.246 §6.1, profile P-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GbaMode {
    /// GBA_U with a UICC that supports MBMS: AUTHENTICATE in the GBA context, Ks stays in the
    /// card; SMK = Ks_int_NAF (in the card), SRK = Ks_ext_NAF.
    GbaU,
    /// GBA_U with a UICC without MBMS support: as [`GbaMode::GbaU`] on Ub; SMK = Ks_ext_NAF,
    /// SRK = MRK(Ks_ext_NAF).
    GbaUNonMbmsCard,
    /// GBA_ME: AUTHENTICATE in the 3G context, Ks = CK ‖ IK kept in the terminal's
    /// [`GbaMeStore`]; SMK = Ks_NAF, SRK = MRK(Ks_NAF).
    GbaMe,
}

impl From<GbaMode> for gba::GbaMode {
    /// The same mode as keycast-crypto names it (for [`gba::mbms_keys`] on the network side).
    fn from(mode: GbaMode) -> Self {
        match mode {
            GbaMode::GbaU => gba::GbaMode::GbaUMbmsCard,
            GbaMode::GbaUNonMbmsCard => gba::GbaMode::GbaUNonMbmsCard,
            GbaMode::GbaMe => gba::GbaMode::GbaMe,
        }
    }
}

impl GbaMode {
    fn is_gba_u(self) -> bool {
        matches!(self, GbaMode::GbaU | GbaMode::GbaUNonMbmsCard)
    }
}

/// What the client needs to know to bootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapConfig {
    /// The BSF address: `Host` header and the realm of the first request (facts-3gpp.md §2.1).
    pub bsf_host: String,
    /// The IMPI (Digest username on Ub).
    pub impi: String,
    /// The User-Agent; [`GBA_PRODUCT_TOKEN`] is appended when no `3gpp-gba…` token is present.
    pub user_agent: String,
    /// GBA_U or GBA_ME.
    pub mode: GbaMode,
}

/// An HTTP request for the shell to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method (`GET`).
    pub method: String,
    /// The request-URI (`/`).
    pub uri: String,
    /// Header fields, in order.
    pub headers: Vec<(String, String)>,
    /// The entity body (empty on Ub).
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first value of a header field (names compare case-insensitively).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name).next()
    }
}

/// An HTTP response the shell received.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header fields, in order (a field may repeat, e.g. several `WWW-Authenticate`).
    pub headers: Vec<(String, String)>,
    /// The entity body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of a header field (names compare case-insensitively).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name).next()
    }
}

fn find_header<'a, 'n>(headers: &'a [(String, String)], name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
    headers.iter().filter(move |(n, _)| n.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The result of a successful bootstrapping run, kept by the terminal (see [`BootstrapState`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrapped {
    /// The B-TID (`base64(RAND)@BSF`), the username toward every NAF.
    pub b_tid: String,
    /// When Ks expires.
    pub lifetime: UtcTime,
    /// How the run was made (decides where NAF keys come from).
    pub mode: GbaMode,
}

/// What the shell does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this request to the BSF and pass its response to [`Bootstrapper::handle`].
    Send(HttpRequest),
    /// Bootstrapping succeeded; the B-TID and lifetime are stored (card or [`GbaMeStore`]).
    Done(Bootstrapped),
}

/// Why bootstrapping failed. Every error ends the run: start a new [`Bootstrapper`] to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// The card refused AUTN (9862, MAC failure): the network is not authentic. The run is
    /// aborted and the BSF gets no answer (24.109 §4.4).
    #[error("network authentication failure: the card refused AUTN")]
    NetworkAuthFailure,
    /// The BSF answered with a status other than 200 or 401.
    #[error("the BSF answered {0}")]
    BsfRejected(u16),
    /// The 200 OK does not authenticate the BSF: `rspauth` absent or wrong, or
    /// `Authentication-Info` echoing another `qop`, `cnonce` or `nc`.
    #[error("rspauth does not verify: the BSF is not authenticated")]
    RspauthMismatch,
    /// A message from the BSF is malformed or not what Ub allows.
    #[error("malformed BSF message: {what}")]
    Malformed {
        /// What was wrong.
        what: &'static str,
    },
    /// The BSF challenged more than [`MAX_ROUNDS`] times.
    #[error("the BSF challenged more than {MAX_ROUNDS} times")]
    TooManyRounds,
    /// The card failed or refused something other than AUTN.
    #[error("card: {0}")]
    Card(CardOpError),
    /// GBA_ME mode needs the terminal's [`GbaMeStore`], and none was given.
    #[error("GBA_ME bootstrapping needs the terminal key store")]
    NoGbaMeStore,
    /// The caller's `cnonce` random is outside 4..=64 octets.
    #[error("cnonce random of {0} octets is outside 4..=64")]
    BadCnonceRandom(usize),
    /// [`Bootstrapper::handle`] was called before [`Bootstrapper::start`] or after the run ended.
    #[error("no bootstrapping request is outstanding")]
    OutOfOrder,
}

/// The keys of a successful AKA run, kept until the 200 OK.
enum AkaKeys {
    /// GBA_U: Ks stays in the card.
    GbaU,
    /// GBA_ME: CK and IK for the [`GbaMeStore`] (wiped on drop).
    GbaMe { ck: Ck, ik: Ik },
}

impl core::fmt::Debug for AkaKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AkaKeys::GbaU => f.write_str("GbaU"),
            AkaKeys::GbaMe { .. } => f.write_str("GbaMe(…)"),
        }
    }
}

#[derive(Debug)]
enum State {
    /// [`Bootstrapper::start`] not called yet.
    Fresh,
    /// The initial request or an AUTS request is out: a 401 is expected.
    AwaitChallenge,
    /// The Digest AKA answer is out: a 200 (or another 401) is expected.
    AwaitResult { client: Box<DigestClient>, sent: Box<SentRequest>, rand: [u8; 16], keys: AkaKeys },
    /// The run ended (success or failure).
    Finished,
}

/// The Ub state machine of one bootstrapping run (see the module documentation).
#[derive(Debug)]
pub struct Bootstrapper {
    config: BootstrapConfig,
    state: State,
    rounds: u32,
}

impl Bootstrapper {
    /// A client for one run.
    #[must_use]
    pub fn new(config: BootstrapConfig) -> Self {
        Bootstrapper { config, state: State::Fresh, rounds: 0 }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &BootstrapConfig {
        &self.config
    }

    /// The number of 401 answers handled so far.
    #[must_use]
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The first request (facts-3gpp.md §2.1 step 1): `GET /` with
    /// `Authorization: Digest username="<IMPI>", realm="<BSF>", nonce="", uri="/", response=""`.
    /// Calling it again restarts the run.
    #[must_use]
    pub fn start(&mut self) -> HttpRequest {
        self.state = State::AwaitChallenge;
        self.rounds = 0;
        let initial = Credentials::initial(&self.config.impi, &self.config.bsf_host, BSF_URI);
        // Formatting fails only for a configuration holding control characters or over 8 KiB;
        // the request then carries the identities with those characters dropped.
        let authorization = match initial.to_header_value() {
            Ok(v) => v,
            Err(_) => format!(
                "Digest username=\"{}\", realm=\"{}\", nonce=\"\", uri=\"/\", response=\"\"",
                sanitize(&self.config.impi),
                sanitize(&self.config.bsf_host)
            ),
        };
        self.request(authorization)
    }

    fn request(&self, authorization: String) -> HttpRequest {
        HttpRequest {
            method: BSF_METHOD.to_owned(),
            uri: BSF_URI.to_owned(),
            headers: vec![
                ("Host".to_owned(), self.config.bsf_host.clone()),
                ("User-Agent".to_owned(), user_agent(&self.config.user_agent)),
                ("Authorization".to_owned(), authorization),
            ],
            body: Vec::new(),
        }
    }

    /// Handles the BSF's answer to the last request.
    ///
    /// `card` runs AUTHENTICATE (GBA context for GBA_U, 3G context for GBA_ME); `gba_me` is the
    /// terminal's store, required for GBA_ME; `now` is checked against the lifetime the BSF
    /// gives; `cnonce_random` (4..=64 octets from the caller's RNG) becomes the `cnonce` when a
    /// challenge is answered.
    ///
    /// # Errors
    /// [`BootstrapError`]; every error ends the run.
    pub fn handle(
        &mut self,
        response: HttpResponse,
        card: &mut impl Card,
        gba_me: Option<&mut GbaMeStore>,
        now: UtcTime,
        cnonce_random: &[u8],
    ) -> Result<Step, BootstrapError> {
        let state = core::mem::replace(&mut self.state, State::Finished);
        if matches!(state, State::Fresh | State::Finished) {
            self.state = state;
            return Err(BootstrapError::OutOfOrder);
        }
        let result = match response.status {
            401 => self.on_challenge(&response, card, gba_me.is_some(), cnonce_random),
            200 => match state {
                State::AwaitResult { mut client, sent, rand, keys } => {
                    self.on_success(&response, &mut client, &sent, rand, keys, card, gba_me, now)
                }
                _ => Err(BootstrapError::Malformed { what: "200 OK before any challenge was answered" }),
            },
            other => Err(BootstrapError::BsfRejected(other)),
        };
        // On success `on_challenge` has set the next state; any error leaves `Finished`.
        if result.is_err() {
            self.state = State::Finished;
        }
        result
    }

    fn on_challenge(
        &mut self,
        response: &HttpResponse,
        card: &mut impl Card,
        has_gba_me: bool,
        cnonce_random: &[u8],
    ) -> Result<Step, BootstrapError> {
        self.rounds += 1;
        if self.rounds > MAX_ROUNDS {
            return Err(BootstrapError::TooManyRounds);
        }
        // Everything is checked before the card is touched, so that a bad challenge or a bad
        // caller input does not move the card's SQN.
        if !keycast_provisioning::digest::client::CNONCE_RANDOM_LEN.contains(&cnonce_random.len()) {
            return Err(BootstrapError::BadCnonceRandom(cnonce_random.len()));
        }
        if self.config.mode == GbaMode::GbaMe && !has_gba_me {
            return Err(BootstrapError::NoGbaMeStore);
        }
        let challenge = ub_challenge(response)?;
        if challenge.algorithm() != Algorithm::AkaV1Md5 {
            return Err(BootstrapError::Malformed { what: "challenge algorithm is not AKAv1-MD5" });
        }
        if !challenge.qop.contains(&Qop::AuthInt) {
            return Err(BootstrapError::Malformed { what: "challenge does not offer qop auth-int" });
        }
        let (rand, autn) = split_nonce(&challenge.nonce)?;

        let answer = if self.config.mode.is_gba_u() {
            card.gba_bootstrap(&rand, &autn)
        } else {
            card.authenticate_3g(&rand, &autn)
        };
        let answer = match answer {
            Ok(a) => a,
            Err(CardOpError::Card(CardError::Mac)) => return Err(BootstrapError::NetworkAuthFailure),
            Err(e) => return Err(BootstrapError::Card(e)),
        };
        let impi = self.config.impi.clone();
        match (answer, self.config.mode.is_gba_u()) {
            (AkaAnswer::SyncFailure { auts }, _) => {
                let mut client =
                    DigestClient::new_resync(challenge, &impi, auts, &[Qop::AuthInt]).map_err(client_error)?;
                let sent = client.authorize(BSF_METHOD, BSF_URI, b"", cnonce_random).map_err(client_error)?;
                let authorization = format_credentials(sent.credentials())?;
                self.state = State::AwaitChallenge;
                Ok(Step::Send(self.request(authorization)))
            }
            (AkaAnswer::SuccessGba { res }, true) => {
                self.answer(challenge, Password::from_bytes(res.expose_secret()), rand, AkaKeys::GbaU, cnonce_random)
            }
            (AkaAnswer::Success3g { res, ck, ik }, false) => self.answer(
                challenge,
                Password::from_bytes(res.expose_secret()),
                rand,
                AkaKeys::GbaMe { ck, ik },
                cnonce_random,
            ),
            _ => Err(BootstrapError::Card(CardOpError::Transport(TransportError::BadResponse(
                "AUTHENTICATE answered in the wrong context".to_owned(),
            )))),
        }
    }

    fn answer(
        &mut self,
        challenge: Challenge,
        password: Password,
        rand: [u8; 16],
        keys: AkaKeys,
        cnonce_random: &[u8],
    ) -> Result<Step, BootstrapError> {
        let mut client =
            DigestClient::new(challenge, &self.config.impi, password, &[Qop::AuthInt]).map_err(client_error)?;
        let sent = client.authorize(BSF_METHOD, BSF_URI, b"", cnonce_random).map_err(client_error)?;
        let authorization = format_credentials(sent.credentials())?;
        let request = self.request(authorization);
        self.state = State::AwaitResult { client: Box::new(client), sent: Box::new(sent), rand, keys };
        Ok(Step::Send(request))
    }

    #[allow(clippy::too_many_arguments)]
    fn on_success(
        &mut self,
        response: &HttpResponse,
        client: &mut DigestClient,
        sent: &SentRequest,
        rand: [u8; 16],
        keys: AkaKeys,
        card: &mut impl Card,
        gba_me: Option<&mut GbaMeStore>,
        now: UtcTime,
    ) -> Result<Step, BootstrapError> {
        // Mutual authentication first: nothing of the body is used before rspauth verifies.
        let info = find_header(&response.headers, "Authentication-Info")
            .next()
            .ok_or(BootstrapError::Malformed { what: "200 OK without Authentication-Info" })?;
        let info =
            AuthenticationInfo::parse(info).map_err(|_| BootstrapError::Malformed { what: "Authentication-Info" })?;
        client.check_authentication_info(sent, &info, &response.body).map_err(|e| match e {
            ClientError::MissingRspauth | ClientError::BadRspauth | ClientError::EchoMismatch(_) => {
                BootstrapError::RspauthMismatch
            }
            _ => BootstrapError::Malformed { what: "Authentication-Info" },
        })?;
        let bootstrapping = BootstrappingInfo::from_xml(&response.body)
            .map_err(|_| BootstrapError::Malformed { what: "BootstrappingInfo body" })?;
        if bootstrapping.lifetime() <= now {
            return Err(BootstrapError::Malformed { what: "BootstrappingInfo lifetime has already passed" });
        }
        let b_tid = bootstrapping.btid().to_owned();
        let lifetime = bootstrapping.lifetime();
        match keys {
            AkaKeys::GbaU => card.write_gba_bp(&b_tid, &lifetime.to_string()).map_err(BootstrapError::Card)?,
            AkaKeys::GbaMe { ck, ik } => {
                gba_me.ok_or(BootstrapError::NoGbaMeStore)?.bootstrap(&ck, &ik, rand, &b_tid);
            }
        }
        Ok(Step::Done(Bootstrapped { b_tid, lifetime, mode: self.config.mode }))
    }
}

/// The Digest challenge of a 401 (the first `WWW-Authenticate` that parses as Digest).
fn ub_challenge(response: &HttpResponse) -> Result<Challenge, BootstrapError> {
    let mut seen = false;
    for value in find_header(&response.headers, "WWW-Authenticate") {
        seen = true;
        match Challenge::parse(value) {
            Ok(c) => return Ok(c),
            Err(HeaderError::NotDigest) => continue,
            Err(_) => return Err(BootstrapError::Malformed { what: "WWW-Authenticate" }),
        }
    }
    Err(BootstrapError::Malformed {
        what: if seen { "WWW-Authenticate holds no Digest challenge" } else { "401 without WWW-Authenticate" },
    })
}

/// RAND (octets 0..16) and AUTN (16..32) of a Ub nonce (facts-3gpp.md §2.1 step 3).
fn split_nonce(nonce: &str) -> Result<([u8; 16], [u8; 16]), BootstrapError> {
    const BAD: BootstrapError = BootstrapError::Malformed { what: "nonce is not base64 of RAND ‖ AUTN" };
    if nonce.len() > MAX_NONCE_LEN {
        return Err(BAD);
    }
    let raw = STANDARD.decode(nonce.trim()).map_err(|_| BAD)?;
    if raw.len() < RAND_AUTN_LEN {
        return Err(BAD);
    }
    let rand: [u8; 16] = raw[..16].try_into().map_err(|_| BAD)?;
    let autn: [u8; 16] = raw[16..32].try_into().map_err(|_| BAD)?;
    Ok((rand, autn))
}

fn format_credentials(c: &Credentials) -> Result<String, BootstrapError> {
    // Only fields echoed from the (already parsed) challenge can fail to format.
    c.to_header_value().map_err(|_| BootstrapError::Malformed { what: "challenge parameters cannot be echoed" })
}

fn client_error(e: ClientError) -> BootstrapError {
    match e {
        ClientError::BadCnonceRandom(n) => BootstrapError::BadCnonceRandom(n),
        ClientError::UnsupportedAlgorithm(_) => BootstrapError::Malformed { what: "challenge algorithm" },
        ClientError::NoAcceptableQop => BootstrapError::Malformed { what: "challenge does not offer qop auth-int" },
        _ => BootstrapError::Malformed { what: "challenge" },
    }
}

fn sanitize(text: &str) -> String {
    text.chars().filter(|c| !c.is_control() && *c != '"' && *c != '\\').collect()
}

/// The configured User-Agent, with [`GBA_PRODUCT_TOKEN`] appended unless a `3gpp-gba…` token is
/// already there (24.109 §5.2; `3gpp-gba-tmpi` and `3gpp-gba-uicc` count).
fn user_agent(configured: &str) -> String {
    let configured = sanitize(configured);
    let has_token = configured.split_whitespace().any(|t| t.to_ascii_lowercase().starts_with(GBA_PRODUCT_TOKEN));
    match (configured.trim().is_empty(), has_token) {
        (true, _) => GBA_PRODUCT_TOKEN.to_owned(),
        (false, true) => configured,
        (false, false) => format!("{} {GBA_PRODUCT_TOKEN}", configured.trim_end()),
    }
}

/// The terminal's record of the current bootstrap: EF_GBABP's role for GBA_ME, a mirror of it for
/// GBA_U (facts-3gpp.md §1.4–1.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapState {
    current: Option<Bootstrapped>,
    margin_secs: u64,
}

impl Default for BootstrapState {
    fn default() -> Self {
        Self::new()
    }
}

impl BootstrapState {
    /// No bootstrap yet, with the margin [`LIFETIME_MARGIN_SECS`].
    #[must_use]
    pub fn new() -> Self {
        BootstrapState { current: None, margin_secs: LIFETIME_MARGIN_SECS }
    }

    /// The same with another safety margin, in seconds.
    #[must_use]
    pub fn with_margin(mut self, margin_secs: u64) -> Self {
        self.margin_secs = margin_secs;
        self
    }

    /// Records a successful run (replacing any earlier one).
    pub fn record(&mut self, bootstrapped: Bootstrapped) {
        self.current = Some(bootstrapped);
    }

    /// Forgets the bootstrap (e.g. a NAF asked for a new one, or the card changed).
    pub fn clear(&mut self) {
        self.current = None;
    }

    /// The current bootstrap, expired or not.
    #[must_use]
    pub fn current(&self) -> Option<&Bootstrapped> {
        self.current.as_ref()
    }

    /// The current B-TID, expired or not.
    #[must_use]
    pub fn b_tid(&self) -> Option<&str> {
        self.current.as_ref().map(|b| b.b_tid.as_str())
    }

    /// Whether a bootstrap is needed: none is held, or its lifetime ends within the margin.
    #[must_use]
    pub fn needs_bootstrap(&self, now: UtcTime) -> bool {
        match &self.current {
            None => true,
            Some(b) => b.lifetime.unix_seconds() <= now.unix_seconds().saturating_add(self.margin_secs),
        }
    }
}

/// What the terminal needs for HTTP Digest toward one NAF (24.109 §5.2, profile P-7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NafCredentials {
    /// The Digest username: the B-TID.
    pub b_tid: String,
    /// The password source: SRK (MRK in 33.246 terms); see [`ua_digest_password`].
    pub srk: Srk,
    /// The realm prefix the NAF must use for this key.
    pub realm_prefix: GbaRealmPrefix,
    /// The NAF FQDN the key is bound to (the realm host).
    pub naf_fqdn: String,
}

impl NafCredentials {
    /// The realm the NAF's challenges must carry: `<prefix>@<NAF FQDN>`.
    #[must_use]
    pub fn realm(&self) -> String {
        self.realm_prefix.realm(&self.naf_fqdn)
    }

    /// Whether a Ua challenge's realm is the one for this key: the right prefix, and its host is
    /// the NAF FQDN (24.109 §5.2: the UE checks it on every message).
    #[must_use]
    pub fn realm_matches(&self, realm: &str) -> bool {
        realm_host_matches(realm, &self.naf_fqdn) && split_gba_realm(realm).is_some_and(|(p, _)| p == self.realm_prefix)
    }

    /// A Digest client answering a Ua challenge with these credentials, after the realm check;
    /// `None` when the realm is not this NAF's or the challenge cannot be answered (unknown
    /// algorithm, no acceptable qop).
    #[must_use]
    pub fn digest_client(&self, challenge: Challenge, qop_preference: &[Qop]) -> Option<DigestClient> {
        if !self.realm_matches(&challenge.realm) {
            return None;
        }
        DigestClient::new(challenge, &self.b_tid, ua_digest_password(&self.srk), qop_preference).ok()
    }
}

/// Why NAF keys could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NafKeyError {
    /// No bootstrap is held: bootstrap first.
    #[error("not bootstrapped")]
    NotBootstrapped,
    /// The GBA_ME store holds another bootstrap than the terminal's record (or none): bootstrap
    /// again.
    #[error("the GBA_ME store does not hold the current bootstrap")]
    StoreMismatch,
    /// GBA_ME needs the terminal's [`GbaMeStore`], and none was given.
    #[error("GBA_ME NAF keys need the terminal key store")]
    NoGbaMeStore,
    /// GBA_ME derives keys for the MBMS Ua protocol (`01 00 00 00 01`) only.
    #[error("Ua protocol {0:02x?} is not supported for GBA_ME")]
    UnsupportedUaProtocol([u8; 5]),
    /// The card failed or refused NAF derivation (e.g. 6985 when it holds no Ks).
    #[error("card: {0}")]
    Card(CardOpError),
    /// The GBA_ME store refused.
    #[error("GBA_ME store: {0}")]
    Store(CardError),
}

/// Derives the Ua keys for a NAF (profile P-7), with NAF_Id = `naf_fqdn` ‖ `ua_protocol`
/// ([`UA_PROTOCOL_MBMS`] for a BSM):
///
/// - GBA_U, MBMS card: NAF derivation on the card; Ks_ext_NAF is the SRK, Ks_int_NAF stays in the
///   card as the BSM's SMK.
/// - GBA_U, card without MBMS: SRK = MRK(Ks_ext_NAF).
/// - GBA_ME: [`GbaMeStore::mbms_naf_keys`] (installs SMK = Ks_NAF, returns SRK = MRK(Ks_NAF)).
///
/// The state's lifetime is not checked here: call [`BootstrapState::needs_bootstrap`] first.
///
/// # Errors
/// [`NafKeyError`].
pub fn naf_keys(
    state: &BootstrapState,
    card: &mut impl Card,
    gba_me: Option<&mut GbaMeStore>,
    naf_fqdn: &str,
    impi: &str,
    ua_protocol: [u8; 5],
) -> Result<NafCredentials, NafKeyError> {
    let current = state.current().ok_or(NafKeyError::NotBootstrapped)?;
    let srk = match current.mode {
        GbaMode::GbaU | GbaMode::GbaUNonMbmsCard => {
            let naf_id = NafId::new(naf_fqdn, ua_protocol);
            let ext = card.gba_naf_derivation(naf_id.as_bytes(), impi).map_err(NafKeyError::Card)?;
            gba::mbms_srk(current.mode.into(), ext.expose_secret())
        }
        GbaMode::GbaMe => {
            let store = gba_me.ok_or(NafKeyError::NoGbaMeStore)?;
            if ua_protocol != UA_PROTOCOL_MBMS {
                return Err(NafKeyError::UnsupportedUaProtocol(ua_protocol));
            }
            if store.b_tid() != Some(current.b_tid.as_str()) {
                return Err(NafKeyError::StoreMismatch);
            }
            store.mbms_naf_keys(naf_fqdn, impi).map_err(NafKeyError::Store)?
        }
    };
    Ok(NafCredentials {
        b_tid: current.b_tid.clone(),
        srk,
        realm_prefix: GbaRealmPrefix::Bootstrapping,
        naf_fqdn: naf_fqdn.to_owned(),
    })
}

/// The Ua Digest password: standard base64 with padding of the SRK (profile P-11.13).
#[must_use]
pub fn ua_digest_password(srk: &Srk) -> Password {
    Password::base64_of_key(srk.expose_secret())
}

/// Whether a NAF's answer means "bootstrap again": a 401 to a request made with an existing
/// B-TID (24.109 §5.2, facts-3gpp.md §1.6). A 401 to a request without one means "bootstrap
/// first", which [`BootstrapState::needs_bootstrap`] already says. (A 401 with `stale=true`
/// only asks for a fresh nonce; the caller may retry once with it before bootstrapping again.)
#[must_use]
pub fn rebootstrap_needed(ua_response_status: u16, had_btid: bool) -> bool {
    ua_response_status == 401 && had_btid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_token() {
        assert_eq!(user_agent("Keycast/1.0"), "Keycast/1.0 3gpp-gba");
        assert_eq!(user_agent("Keycast/1.0 3gpp-gba-tmpi"), "Keycast/1.0 3gpp-gba-tmpi");
        assert_eq!(user_agent(""), "3gpp-gba");
        assert_eq!(user_agent("a\r\nX: y"), "aX: y 3gpp-gba");
    }

    #[test]
    fn nonce_split() {
        let (rand, autn) = split_nonce("I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7M=").unwrap();
        assert_eq!(hex::encode(rand), "23553cbe9637a89d218ae64dae47bf35");
        assert_eq!(hex::encode(autn), "55f328b43577b9b94a9ffac354dfafb3");
        assert!(split_nonce("I1U8vpY3qJ0hiuZNrke/NQ==").is_err());
        assert!(split_nonce("!!").is_err());
        assert!(split_nonce("").is_err());
    }

    #[test]
    fn rebootstrap() {
        assert!(rebootstrap_needed(401, true));
        assert!(!rebootstrap_needed(401, false));
        assert!(!rebootstrap_needed(200, true));
        assert!(!rebootstrap_needed(403, true));
    }
}
