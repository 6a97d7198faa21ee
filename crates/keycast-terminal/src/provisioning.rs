//! The terminal's provisioning client core (`profile: P-7, P-8`): every request of the OMA BCAST
//! service provisioning interface and of the 3GPP MBMS key-management interface, the Ua Digest
//! exchange that carries it, and what the answers mean for the terminal.
//!
//! Sans-IO, in the shape of keycast-gba's `Bootstrapper`: [`ProvisioningClient::start`] turns a
//! [`Request`] into an [`HttpRequest`]; [`ProvisioningClient::handle_response`] turns each HTTP
//! answer into the next [`Step`]. The caller passes `cnonce` octets and the terminal's key holder
//! (the card for GBA_U, the ME's store for GBA_ME: [`crate::key_holder`]) in, and sends what
//! comes out. One exchange runs at a time.
//!
//! ```text
//! start(request)                 -> POST (Authorization when a nonce from an earlier challenge is kept)
//! 401 to a POST without Digest   -> POST again with Digest (B-TID, base64(SRK), auth-int)
//! 401 stale=true, or to a kept nonce -> POST again with the fresh challenge (once)
//! 401 to a fresh Digest answer   -> Step::Rebootstrap: bootstrap, naf_keys, set_credentials,
//!                                   resume() -> POST again (once per exchange)
//! 200                            -> rspauth checked (mutual authentication), body decoded,
//!                                   request ID matched, purchase list updated, LTKMs to the key holder
//!                                   -> Step::Done(Answer)
//! 403 send_BCAST_Client_ID to a Registration
//!                                -> POST again with the BCAST_Client_ID (once; over mutual TLS
//!                                   only, else ProvisioningError::ClientIdNeedsHttps)
//! 503 / other                    -> ProvisioningError
//! ```
//!
//! # Keycast's choices
//! - \[chosen\] (`profile: P-7`) **qop**: `auth-int` only by default, so the body (purchase items,
//!   keys asked for) is covered by the Digest response; [`ClientConfig::allow_qop_auth`] also
//!   accepts `auth` from a BSM that offers nothing better.
//! - \[chosen\] (`profile: P-7`) **mutual authentication**: a 200 must carry `Authentication-Info`
//!   with an `rspauth` that verifies over the body; otherwise the answer (and its LTKMs) is refused.
//! - \[chosen\] (`profile: P-8`) **no `ClientID`** in requests: the Digest username already names
//!   the terminal (the B-TID), and a second copy in the body would go stale when a 401 makes the
//!   terminal bootstrap again and resend the same body.
//! - \[chosen\] (`profile: P-8`) **request IDs** count up from [`ClientConfig::first_request_id`]
//!   (wrapping, never 0) and an answer must echo the ID of its request.
//! - **Purchase list** (seed §6.4: "once a purchaseItemID has expired … the terminal SHALL remove
//!   it from all subsequent Registration and Deregistration requests"): items enter on a
//!   successful (or "already subscribed") Service Request with the validity the caller gives
//!   (from the Service Guide's PurchaseData), take `validUntil` from an Account Inquiry answer,
//!   leave on a successful Unsubscribe; (de)registrations name only items whose validity has not
//!   ended at `now`, and expired items are dropped from the list when such a request is built.
//!   \[chosen\] An item the BSM answers a registration with "no subscription" or "purchase item
//!   unknown" is dropped too, so that it is not sent again at every start.
//! - **BCAST_Client_ID** (seed §6.9.2), [`ClientConfig::bcast_client_id`]: it travels only on a
//!   Registration (`RegistrationRequest`, MBMS `register`) and only when the shell has said the
//!   BSM is reached over HTTPS with a client certificate
//!   ([`ProvisioningClient::set_mutual_tls`]); the client refuses to put it on any other
//!   connection ([`ProvisioningError::ClientIdNeedsHttps`]). It is one word of the
//!   `User-Agent`, next to `3gpp-gba`: `User-Agent: Keycast/1.0 3gpp-gba
//!   BCAST_Client_ID=<base64>` (the BSM's Digest layer needs both in the one header).
//!   \[chosen\] (`profile: P-8`) By default it is sent only when the BSM asks (`403` with body
//!   `send_BCAST_Client_ID`): then the same Registration goes again, with the ID and the next
//!   Digest nonce count, on the same HTTPS connection (the seed's figure shows a `GET /` for this
//!   step; a BSM needs the Registration itself to answer it with a Registration Response, seed
//!   §6.9.2.5). [`ClientConfig::send_client_id_at_start`] sends it on every Registration
//!   instead (seed §6.9.2.2). Without an ID the request for one ends the exchange with
//!   [`ProvisioningError::ClientIdRequested`]; a BSM that asks again after getting it ends it
//!   with [`ProvisioningError::ClientIdRefused`].

use std::collections::BTreeMap;

use keycast_gba::client::{GBA_PRODUCT_TOKEN, HttpRequest, HttpResponse, NafCredentials, rebootstrap_needed};
use keycast_provisioning::digest::{
    AuthenticationInfo, Challenge, ClientError, DigestClient, HeaderError, Qop, SentRequest,
};
use keycast_provisioning::mbms::{
    self, DeregisterRequest, MskRef, MskRequest, MskResponse, RegisterRequest, RegisterResponse,
};
use keycast_provisioning::sprov::{
    self, ALL_SERVICES, AccountInquiry, AccountInquiryResponse, BcastKeyId, DeregistrationRequest,
    DeregistrationResponse, InquiryType, LtkmKeyRequest, LtkmRequest, LtkmResponse, PurchaseItemRef,
    PurchaseRequestItem, RegistrationRequest, RegistrationResponse, ServiceRequest, ServiceResponse, SprovMessage,
    StatusCode, TokenPurchaseItem, TokenPurchaseRequest, TokenPurchaseResponse, UnsubscribeRequest,
    UnsubscribeResponse, XmlError,
};
use keycast_provisioning::time::UtcTime;

use crate::key_holder::MbmsKeyHolder;
use crate::ltkm_intake::{IntakeError, IntakeReport, Interface, LtkmIntake, LtkmOrigin};

/// Path of the OMA BCAST service provisioning interface \[chosen; `profile: P-8`\] (the BSM's
/// PurchaseURL path; keycast-bsm serves it).
pub const DEFAULT_SPROV_PATH: &str = "/sprov";
/// Path of the 3GPP MBMS key-management interface (TS 33.246 Annex G).
pub const DEFAULT_KEY_MANAGEMENT_PATH: &str = "/keymanagement";
/// Most fresh challenges answered in one exchange (the first, and one stale or forgotten nonce).
const MAX_CHALLENGES: u8 = 2;
/// Most Service Requests whose validity hints wait for their answer.
const MAX_SERVICE_HINTS: usize = 8;
/// The body of a BSM's request for the BCAST_Client_ID (seed §6.9.2.3).
pub const SEND_CLIENT_ID_BODY: &str = "send_BCAST_Client_ID";
/// The `User-Agent` label in front of the BCAST_Client_ID (seed §6.9.2.2).
pub const CLIENT_ID_LABEL: &str = "BCAST_Client_ID=";
/// Most octets of a BCAST_Client_ID \[chosen: the BSM's bound, keycast-bsm `MAX_CLIENT_ID_LEN`\].
pub const MAX_CLIENT_ID_LEN: usize = 256;

/// The terminal's BCAST_Client_ID (1 to [`MAX_CLIENT_ID_LEN`] octets; base64 on the wire).
/// Prints only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct BcastClientId(Vec<u8>);

impl core::fmt::Debug for BcastClientId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "BcastClientId({} octets)", self.0.len())
    }
}

impl BcastClientId {
    /// The ID of these octets; `None` when empty or longer than [`MAX_CLIENT_ID_LEN`].
    #[must_use]
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        (1..=MAX_CLIENT_ID_LEN).contains(&bytes.len()).then_some(BcastClientId(bytes))
    }

    /// The octets.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The `User-Agent` word: `BCAST_Client_ID=<base64>` (RFC 4648 §4, padded).
    #[must_use]
    pub fn user_agent_word(&self) -> String {
        use base64::Engine as _;
        format!("{CLIENT_ID_LABEL}{}", base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

/// What the client needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The BSM FQDN: `Host`, the realm host the challenges must carry, IDi of its LTKMs.
    pub bsm_fqdn: String,
    /// The User-Agent; [`GBA_PRODUCT_TOKEN`] is appended when no `3gpp-gba…` token is present.
    pub user_agent: String,
    /// Path of the OMA BCAST interface.
    pub sprov_path: String,
    /// Path of the MBMS key-management interface.
    pub key_management_path: String,
    /// Also answer a challenge that offers only `qop=auth` (the body is then not covered).
    pub allow_qop_auth: bool,
    /// The `requestID` of the first request.
    pub first_request_id: u32,
    /// The terminal's BCAST_Client_ID, if it has one (sent only over mutual TLS).
    pub bcast_client_id: Option<BcastClientId>,
    /// Send the BCAST_Client_ID on every Registration, not only when the BSM asks.
    pub send_client_id_at_start: bool,
}

impl ClientConfig {
    /// Defaults for the BSM `bsm_fqdn`: the paths above, `auth-int` only, request IDs from 1.
    #[must_use]
    pub fn new(bsm_fqdn: &str, user_agent: &str) -> Self {
        ClientConfig {
            bsm_fqdn: bsm_fqdn.to_owned(),
            user_agent: user_agent.to_owned(),
            sprov_path: DEFAULT_SPROV_PATH.to_owned(),
            key_management_path: DEFAULT_KEY_MANAGEMENT_PATH.to_owned(),
            allow_qop_auth: false,
            first_request_id: 1,
            bcast_client_id: None,
            send_client_id_at_start: false,
        }
    }
}

/// One request of either interface, before it is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// An OMA BCAST request (POST to the sprov path).
    Sprov(SprovMessage),
    /// MBMS registration (`requesttype=register`).
    MbmsRegister(RegisterRequest),
    /// MBMS deregistration (`requesttype=deregister`).
    MbmsDeregister(DeregisterRequest),
    /// MBMS MSK request (`requesttype=msk-request`).
    MbmsMskRequest(MskRequest),
}

impl Request {
    /// The interface the request travels on.
    #[must_use]
    pub fn interface(&self) -> Interface {
        match self {
            Request::Sprov(_) => Interface::OmaBcast,
            _ => Interface::Mbms,
        }
    }

    /// Whether the request is a Registration (the only request that may carry the
    /// BCAST_Client_ID).
    #[must_use]
    pub fn is_registration(&self) -> bool {
        matches!(self, Request::Sprov(SprovMessage::RegistrationRequest(_)) | Request::MbmsRegister(_))
    }

    /// A short name for logs (the root element or the request type).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Request::Sprov(m) => m.root_name(),
            Request::MbmsRegister(_) => "register",
            Request::MbmsDeregister(_) => "deregister",
            Request::MbmsMskRequest(_) => "msk-request",
        }
    }

    /// The `requestID` of an OMA BCAST request.
    #[must_use]
    pub fn request_id(&self) -> Option<u32> {
        match self {
            Request::Sprov(m) => Some(match m {
                SprovMessage::ServiceRequest(r) => r.request_id,
                SprovMessage::TokenPurchaseRequest(r) => r.request_id,
                SprovMessage::UnsubscribeRequest(r) => r.request_id,
                SprovMessage::RegistrationRequest(r) => r.request_id,
                SprovMessage::DeregistrationRequest(r) => r.request_id,
                SprovMessage::LtkmRequest(r) => r.request_id,
                SprovMessage::AccountInquiry(r) => r.request_id,
                _ => return None,
            }),
            _ => None,
        }
    }

    /// Request-URI, content type and body.
    ///
    /// # Errors
    /// [`ProvisioningError::Encode`] when a value cannot be carried, and
    /// [`ProvisioningError::NotARequest`] for a response message.
    pub fn encode(&self, config: &ClientConfig) -> Result<(String, &'static str, Vec<u8>), ProvisioningError> {
        let km = |t: &str| format!("{}?requesttype={t}", config.key_management_path);
        Ok(match self {
            Request::Sprov(m) => {
                if !m.is_request() {
                    return Err(ProvisioningError::NotARequest(m.root_name()));
                }
                (config.sprov_path.clone(), sprov::CONTENT_TYPE, m.to_xml()?.into_bytes())
            }
            Request::MbmsRegister(r) => (km("register"), mbms::REGISTER_CONTENT_TYPE, r.to_xml()?.into_bytes()),
            Request::MbmsDeregister(r) => (km("deregister"), mbms::DEREGISTER_CONTENT_TYPE, r.to_xml()?.into_bytes()),
            Request::MbmsMskRequest(r) => (km("msk-request"), mbms::MSK_REQUEST_CONTENT_TYPE, r.to_xml()?.into_bytes()),
        })
    }
}

/// A typed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `ServiceResponse`.
    Service(ServiceResponse),
    /// `TokenPurchaseResponse`.
    TokenPurchase(TokenPurchaseResponse),
    /// `UnsubscribeResponse`.
    Unsubscribe(UnsubscribeResponse),
    /// `RegistrationResponse`.
    Registration(RegistrationResponse),
    /// `DeregistrationResponse`.
    Deregistration(DeregistrationResponse),
    /// `LTKMResponse`.
    Ltkm(LtkmResponse),
    /// `AccountInquiryResponse`.
    AccountInquiry(AccountInquiryResponse),
    /// MBMS (de)registration answer (one status per service).
    MbmsRegister(RegisterResponse),
    /// MBMS MSK request answer (statuses only; the keys are pushed).
    MbmsMsk(MskResponse),
}

impl Response {
    /// The LTKMs the answer carries (none for the MBMS interface, whose keys are pushed).
    #[must_use]
    pub fn ltkms(&self) -> &[Vec<u8>] {
        match self {
            Response::Service(r) => &r.ltkms,
            Response::TokenPurchase(r) => &r.ltkms,
            Response::Registration(r) => &r.ltkms,
            Response::Ltkm(r) => &r.ltkms,
            _ => &[],
        }
    }

    /// The global status of an OMA BCAST answer.
    #[must_use]
    pub fn global_status(&self) -> Option<StatusCode> {
        Some(match self {
            Response::Service(r) => r.status,
            Response::TokenPurchase(r) => r.status,
            Response::Unsubscribe(r) => r.status,
            Response::Registration(r) => r.status,
            Response::Deregistration(r) => r.status,
            Response::Ltkm(r) => r.status,
            Response::AccountInquiry(r) => r.status,
            Response::MbmsRegister(_) | Response::MbmsMsk(_) => return None,
        })
    }

    /// The items or keys the BSM refused, each named as text with its code (OMA BCAST status
    /// code, or RFC 2616 code on the MBMS interface).
    #[must_use]
    pub fn refused_items(&self) -> Vec<(String, u16)> {
        let items = |v: &[sprov::ItemStatus]| {
            v.iter()
                .filter(|i| !i.status.is_success())
                .map(|i| (i.item.mbms_user_service_id(), i.status.value()))
                .collect::<Vec<_>>()
        };
        let key = |k: &BcastKeyId| hex_of(&k.to_bytes());
        match self {
            Response::Service(r) => items(&r.items),
            Response::Unsubscribe(r) => items(&r.items),
            Response::Registration(r) => items(&r.items),
            Response::Deregistration(r) => items(&r.items),
            Response::TokenPurchase(r) => {
                r.items.iter().filter(|i| !i.status.is_success()).map(|i| (key(&i.key_id), i.status.value())).collect()
            }
            Response::Ltkm(r) => {
                r.keys.iter().filter(|k| !k.status.is_success()).map(|k| (key(&k.key), k.status.value())).collect()
            }
            Response::AccountInquiry(r) => r
                .items
                .iter()
                .filter_map(|i| {
                    i.status.filter(|s| !s.is_success()).map(|s| (i.item.mbms_user_service_id(), s.value()))
                })
                .collect(),
            Response::MbmsRegister(r) => r
                .responses
                .iter()
                .filter(|s| !s.response_code.is_success())
                .map(|s| (s.service_id.clone(), s.response_code.code))
                .collect(),
            Response::MbmsMsk(r) => r
                .responses
                .iter()
                .filter(|s| !s.response_code.is_success())
                .map(|s| (hex_of(&[&s.msk.key_domain_id[..], &s.msk.msk_id[..]].concat()), s.response_code.code))
                .collect(),
        }
    }

    /// A Service Response with `registrationRequired`: the terminal must register now.
    #[must_use]
    pub fn registration_required(&self) -> bool {
        matches!(self, Response::Service(r) if r.registration_required)
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A finished exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The decoded answer.
    pub response: Response,
    /// One report per LTKM the answer carried, in order (a malformed one as its error).
    pub ltkms: Vec<Result<IntakeReport, IntakeError>>,
    /// How many times the terminal bootstrapped again during the exchange (0 or 1).
    pub rebootstraps: u8,
}

/// What the shell does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this request and pass the answer to [`ProvisioningClient::handle_response`].
    Send(HttpRequest),
    /// Bootstrap again (the BSM refused the B-TID), derive the NAF keys, pass them to
    /// [`ProvisioningClient::set_credentials`], then send [`ProvisioningClient::resume`].
    Rebootstrap,
    /// The exchange is over.
    Done(Box<Answer>),
}

/// Why an exchange failed. Every error ends the exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisioningError {
    /// No Ua credentials: bootstrap and derive the NAF keys first.
    #[error("no Ua credentials: bootstrap first")]
    NoCredentials,
    /// An exchange is already running, or none is.
    #[error("out of order: {0}")]
    OutOfOrder(&'static str),
    /// Nothing to send (e.g. a registration with no purchase item left).
    #[error("nothing to request: {0}")]
    NothingToRequest(&'static str),
    /// A response message was given as a request.
    #[error("{0} is not a request")]
    NotARequest(&'static str),
    /// The request could not be encoded.
    #[error("cannot encode the request: {0}")]
    Encode(#[from] XmlError),
    /// The challenge's realm is not `3GPP-bootstrapping@<BSM FQDN>`, or its algorithm or qop
    /// cannot be answered.
    #[error("the BSM's challenge cannot be answered: {0}")]
    Challenge(&'static str),
    /// The BSM kept refusing after a fresh Digest answer and one new bootstrap.
    #[error("the BSM refused the credentials")]
    Unauthorized,
    /// A 200 without a verifying `rspauth`: the BSM is not authenticated.
    #[error("the answer does not authenticate the BSM: {0}")]
    NotAuthenticated(&'static str),
    /// The answer's body does not decode, or is not the answer to this request.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// 503: the BSM is busy; the request may be repeated after `retry_after` seconds.
    #[error("the BSM is unavailable")]
    Unavailable {
        /// `Retry-After` in seconds, when given.
        retry_after: Option<u64>,
    },
    /// Another HTTP status.
    #[error("the BSM answered HTTP {0}")]
    Http(u16),
    /// The caller's `cnonce` random is outside 4..=64 octets.
    #[error("cnonce random of {0} octets is outside 4..=64")]
    BadCnonceRandom(usize),
    /// The BCAST_Client_ID would go on a connection that is not HTTPS with a client certificate.
    #[error("the BCAST_Client_ID is sent only over HTTPS with a client certificate")]
    ClientIdNeedsHttps,
    /// The BSM asks for a BCAST_Client_ID (`403 send_BCAST_Client_ID`) and none is configured:
    /// it refuses the Registration.
    #[error("the BSM asks for a BCAST_Client_ID and the terminal has none")]
    ClientIdRequested,
    /// The BSM asked for the BCAST_Client_ID again after it was sent: it does not accept it.
    #[error("the BSM did not accept the BCAST_Client_ID")]
    ClientIdRefused,
}

/// One purchase item the terminal holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    /// The item (and offer).
    pub item: PurchaseItemRef,
    /// When it ends (`None`: not known, kept until unsubscribed).
    pub valid_until: Option<UtcTime>,
}

impl Purchase {
    /// Whether the item is still valid at `now`.
    #[must_use]
    pub fn is_active(&self, now: UtcTime) -> bool {
        self.valid_until.is_none_or(|until| now < until)
    }
}

/// The terminal's purchase items, keyed by their MBMS User Service ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurchaseList {
    items: BTreeMap<String, Purchase>,
}

impl PurchaseList {
    /// Adds or replaces an item.
    pub fn insert(&mut self, purchase: Purchase) {
        self.items.insert(purchase.item.mbms_user_service_id(), purchase);
    }

    /// Removes an item (by `globalIDRef`; every offer of it).
    pub fn remove_item(&mut self, global_id_ref: &str) {
        self.items.retain(|_, p| p.item.global_id_ref != global_id_ref);
    }

    /// Drops the items whose validity ended at `now`; returns them.
    pub fn purge_expired(&mut self, now: UtcTime) -> Vec<Purchase> {
        let expired: Vec<String> =
            self.items.iter().filter(|(_, p)| !p.is_active(now)).map(|(k, _)| k.clone()).collect();
        expired.iter().filter_map(|k| self.items.remove(k)).collect()
    }

    /// The items valid at `now`.
    #[must_use]
    pub fn active(&self, now: UtcTime) -> Vec<PurchaseItemRef> {
        self.items.values().filter(|p| p.is_active(now)).map(|p| p.item.clone()).collect()
    }

    /// Every item, expired or not.
    pub fn iter(&self) -> impl Iterator<Item = &Purchase> {
        self.items.values()
    }

    /// Number of items.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there is none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The exchange in progress.
#[derive(Debug)]
struct Pending {
    request: Request,
    uri: String,
    content_type: &'static str,
    body: Vec<u8>,
    /// The Digest answer of the last POST; `None` when it went without `Authorization`.
    sent: Option<SentRequest>,
    /// Whether the last POST answered a challenge received in this exchange (a 401 to it means
    /// the B-TID is refused) rather than a nonce kept from an earlier one.
    fresh: bool,
    challenges: u8,
    rebootstraps: u8,
    awaiting_credentials: bool,
    /// Whether the request carries the BCAST_Client_ID.
    with_client_id: bool,
}

/// The provisioning client of one terminal toward one BSM (see the module documentation).
#[derive(Debug)]
pub struct ProvisioningClient {
    config: ClientConfig,
    credentials: Option<NafCredentials>,
    digest: Option<DigestClient>,
    last_challenge: Option<Challenge>,
    next_request_id: u32,
    purchases: PurchaseList,
    /// Validity of the items of recent Service Requests, by request ID.
    service_hints: Vec<(u32, Vec<Purchase>)>,
    intake: LtkmIntake,
    pending: Option<Pending>,
    /// The shell reaches the BSM over HTTPS with a client certificate.
    mutual_tls: bool,
}

impl ProvisioningClient {
    /// A client with no credentials yet.
    #[must_use]
    pub fn new(config: ClientConfig) -> Self {
        let intake = LtkmIntake::new(&config.bsm_fqdn);
        let next_request_id = config.first_request_id.max(1);
        ProvisioningClient {
            config,
            credentials: None,
            digest: None,
            last_challenge: None,
            next_request_id,
            purchases: PurchaseList::default(),
            service_hints: Vec::new(),
            intake,
            pending: None,
            mutual_tls: false,
        }
    }

    /// Tells the client whether the BSM is reached over HTTPS with a client certificate (the
    /// shell's transport), which the BCAST_Client_ID needs. Off by default.
    pub fn set_mutual_tls(&mut self, mutual_tls: bool) {
        self.mutual_tls = mutual_tls;
    }

    /// Whether the client believes the BSM is reached over mutual TLS.
    #[must_use]
    pub fn mutual_tls(&self) -> bool {
        self.mutual_tls
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Installs the Ua credentials of a (new) bootstrap (`keycast_gba::client::naf_keys`). Any
    /// nonce kept for the old B-TID is forgotten.
    pub fn set_credentials(&mut self, credentials: NafCredentials) {
        self.credentials = Some(credentials);
        self.digest = None;
    }

    /// Drops the credentials (the card changed, or the terminal powers down).
    pub fn clear_credentials(&mut self) {
        self.credentials = None;
        self.digest = None;
    }

    /// The B-TID of the current credentials.
    #[must_use]
    pub fn b_tid(&self) -> Option<&str> {
        self.credentials.as_ref().map(|c| c.b_tid.as_str())
    }

    /// The request ID the next request takes (kept across restarts, [`crate::state`]).
    #[must_use]
    pub fn next_request_id(&self) -> u32 {
        self.next_request_id
    }

    /// The purchase list.
    #[must_use]
    pub fn purchases(&self) -> &PurchaseList {
        &self.purchases
    }

    /// The purchase list, to change it (e.g. items bought through a web shop).
    pub fn purchases_mut(&mut self) -> &mut PurchaseList {
        &mut self.purchases
    }

    /// The LTKM intake (its hold-off state).
    pub fn intake_mut(&mut self) -> &mut LtkmIntake {
        &mut self.intake
    }

    /// Whether an exchange is running.
    #[must_use]
    pub fn is_busy(&self) -> bool {
        self.pending.is_some()
    }

    fn take_request_id(&mut self) -> u32 {
        let id = self.next_request_id;
        self.next_request_id = match id.wrapping_add(1) {
            0 => 1,
            n => n,
        };
        id
    }

    // ---------------------------------------------------------------------------------------
    // Building requests

    /// `ServiceRequest` for `items`, each with the validity the terminal expects (from the
    /// Service Guide), kept in the purchase list when the BSM accepts the item.
    ///
    /// # Errors
    /// [`ProvisioningError::NothingToRequest`] for an empty list.
    pub fn service_request(
        &mut self,
        items: Vec<(PurchaseRequestItem, Option<UtcTime>)>,
    ) -> Result<Request, ProvisioningError> {
        if items.is_empty() {
            return Err(ProvisioningError::NothingToRequest("no purchase item"));
        }
        let request_id = self.take_request_id();
        let hints =
            items.iter().map(|(i, until)| Purchase { item: i.item.clone(), valid_until: *until }).collect::<Vec<_>>();
        // Kept until the answer comes; only the last few requests' hints are remembered.
        if self.service_hints.len() >= MAX_SERVICE_HINTS {
            self.service_hints.remove(0);
        }
        self.service_hints.push((request_id, hints));
        let items = items.into_iter().map(|(i, _)| i).collect();
        Ok(Request::Sprov(SprovMessage::ServiceRequest(ServiceRequest { request_id, client: None, items })))
    }

    /// `TokenPurchaseRequest`.
    ///
    /// # Errors
    /// [`ProvisioningError::NothingToRequest`] for an empty list.
    pub fn token_purchase(&mut self, items: Vec<TokenPurchaseItem>) -> Result<Request, ProvisioningError> {
        if items.is_empty() {
            return Err(ProvisioningError::NothingToRequest("no token purchase item"));
        }
        let request_id = self.take_request_id();
        Ok(Request::Sprov(SprovMessage::TokenPurchaseRequest(TokenPurchaseRequest { request_id, client: None, items })))
    }

    /// `UnsubscribeRequest` (`None`: every item, [`ALL_SERVICES`]).
    pub fn unsubscribe(&mut self, items: Option<Vec<PurchaseItemRef>>) -> Request {
        let items = items.filter(|v| !v.is_empty()).unwrap_or_else(|| vec![PurchaseItemRef::new(ALL_SERVICES, None)]);
        let request_id = self.take_request_id();
        Request::Sprov(SprovMessage::UnsubscribeRequest(UnsubscribeRequest { request_id, client: None, items }))
    }

    /// `RegistrationRequest` naming the purchase items valid at `now`; expired items are dropped
    /// from the list first (seed §6.4).
    ///
    /// # Errors
    /// [`ProvisioningError::NothingToRequest`] when no item is left.
    pub fn registration(&mut self, now: UtcTime) -> Result<Request, ProvisioningError> {
        let items = self.active_items(now)?;
        let request_id = self.take_request_id();
        Ok(Request::Sprov(SprovMessage::RegistrationRequest(RegistrationRequest { request_id, client: None, items })))
    }

    /// `DeregistrationRequest`, with the same rule as [`ProvisioningClient::registration`].
    ///
    /// # Errors
    /// [`ProvisioningError::NothingToRequest`] when no item is left.
    pub fn deregistration(&mut self, now: UtcTime) -> Result<Request, ProvisioningError> {
        let items = self.active_items(now)?;
        let request_id = self.take_request_id();
        Ok(Request::Sprov(SprovMessage::DeregistrationRequest(DeregistrationRequest {
            request_id,
            client: None,
            items,
        })))
    }

    /// `LTKMRequest` for `keys` (Key Number 0: the current key of the group).
    ///
    /// # Errors
    /// [`ProvisioningError::NothingToRequest`] for an empty list.
    pub fn ltkm_request(&mut self, keys: &[BcastKeyId]) -> Result<Request, ProvisioningError> {
        if keys.is_empty() {
            return Err(ProvisioningError::NothingToRequest("no key"));
        }
        let request_id = self.take_request_id();
        let keys = keys.iter().map(|&key| LtkmKeyRequest { key, valid_from: None, valid_until: None }).collect();
        Ok(Request::Sprov(SprovMessage::LtkmRequest(LtkmRequest { request_id, client: None, keys })))
    }

    /// `AccountInquiry`.
    pub fn account_inquiry(&mut self, inquiry_type: InquiryType, items: Vec<PurchaseItemRef>) -> Request {
        let request_id = self.take_request_id();
        Request::Sprov(SprovMessage::AccountInquiry(AccountInquiry { request_id, client: None, inquiry_type, items }))
    }

    /// MBMS registration of the items valid at `now` (their MBMS User Service IDs, `profile:
    /// P-1`); expired items are dropped first.
    ///
    /// # Errors
    /// [`ProvisioningError::NothingToRequest`] when no item is left.
    pub fn mbms_register(&mut self, now: UtcTime) -> Result<Request, ProvisioningError> {
        let ids = self.active_items(now)?.iter().map(PurchaseItemRef::mbms_user_service_id).collect();
        Ok(Request::MbmsRegister(RegisterRequest { service_ids: ids }))
    }

    /// MBMS deregistration, with the same rule.
    ///
    /// # Errors
    /// [`ProvisioningError::NothingToRequest`] when no item is left.
    pub fn mbms_deregister(&mut self, now: UtcTime) -> Result<Request, ProvisioningError> {
        let ids = self.active_items(now)?.iter().map(PurchaseItemRef::mbms_user_service_id).collect();
        Ok(Request::MbmsDeregister(DeregisterRequest { service_ids: ids }))
    }

    /// MBMS MSK request for `keys`.
    ///
    /// # Errors
    /// [`ProvisioningError::NothingToRequest`] for an empty list.
    pub fn mbms_msk_request(&mut self, keys: &[BcastKeyId]) -> Result<Request, ProvisioningError> {
        if keys.is_empty() {
            return Err(ProvisioningError::NothingToRequest("no key"));
        }
        let msks = keys.iter().map(|k| MskRef { key_domain_id: k.key_domain_id, msk_id: k.sek_pek_id }).collect();
        Ok(Request::MbmsMskRequest(MskRequest { msks }))
    }

    /// The request asking for `keys` on `interface` (an LTKM Request or an MSK request), as an
    /// [`crate::ltkm_intake::IntakeAction::RequestKeys`] asks.
    ///
    /// # Errors
    /// [`ProvisioningError::NothingToRequest`] for an empty list.
    pub fn key_request(&mut self, interface: Interface, keys: &[BcastKeyId]) -> Result<Request, ProvisioningError> {
        match interface {
            Interface::OmaBcast => self.ltkm_request(keys),
            Interface::Mbms => self.mbms_msk_request(keys),
        }
    }

    fn active_items(&mut self, now: UtcTime) -> Result<Vec<PurchaseItemRef>, ProvisioningError> {
        let dropped = self.purchases.purge_expired(now);
        if !dropped.is_empty() {
            tracing::info!(count = dropped.len(), "expired purchase items dropped");
        }
        let items = self.purchases.active(now);
        if items.is_empty() {
            return Err(ProvisioningError::NothingToRequest("no valid purchase item"));
        }
        Ok(items)
    }

    // ---------------------------------------------------------------------------------------
    // The exchange

    /// Starts the exchange of `request`: the first POST. When a nonce from an earlier challenge
    /// is kept, the POST already carries Digest credentials (saving a round trip).
    ///
    /// # Errors
    /// [`ProvisioningError::NoCredentials`], [`ProvisioningError::OutOfOrder`] while another
    /// exchange runs, encoding errors, [`ProvisioningError::BadCnonceRandom`].
    pub fn start(&mut self, request: Request, cnonce_random: &[u8]) -> Result<HttpRequest, ProvisioningError> {
        if self.pending.is_some() {
            return Err(ProvisioningError::OutOfOrder("an exchange is already running"));
        }
        if self.credentials.is_none() {
            return Err(ProvisioningError::NoCredentials);
        }
        let with_client_id =
            self.config.send_client_id_at_start && request.is_registration() && self.config.bcast_client_id.is_some();
        if with_client_id && !self.mutual_tls {
            return Err(ProvisioningError::ClientIdNeedsHttps);
        }
        let (uri, content_type, body) = request.encode(&self.config)?;
        let mut pending = Pending {
            request,
            uri,
            content_type,
            body,
            sent: None,
            fresh: false,
            challenges: 0,
            rebootstraps: 0,
            awaiting_credentials: false,
            with_client_id,
        };
        let authorization = match self.digest.as_mut() {
            Some(digest) => {
                let sent = authorize(digest, &pending, cnonce_random)?;
                let header = format_credentials(&sent)?;
                pending.sent = Some(sent);
                Some(header)
            }
            None => None,
        };
        let http = self.http_request(&pending, authorization);
        self.pending = Some(pending);
        Ok(http)
    }

    /// After [`Step::Rebootstrap`] and [`ProvisioningClient::set_credentials`]: the same request
    /// again, answering the last challenge with the new credentials.
    ///
    /// # Errors
    /// [`ProvisioningError::OutOfOrder`] when no exchange waits for credentials,
    /// [`ProvisioningError::NoCredentials`], [`ProvisioningError::Challenge`].
    pub fn resume(&mut self, cnonce_random: &[u8]) -> Result<HttpRequest, ProvisioningError> {
        let mut pending = self.pending.take().ok_or(ProvisioningError::OutOfOrder("no exchange is running"))?;
        if !pending.awaiting_credentials {
            self.pending = Some(pending);
            return Err(ProvisioningError::OutOfOrder("the exchange does not wait for credentials"));
        }
        let result = match self.last_challenge.clone() {
            Some(challenge) => self.answer(&mut pending, challenge, cnonce_random),
            None => Err(ProvisioningError::OutOfOrder("no challenge to answer")),
        };
        match result {
            Ok(request) => {
                pending.awaiting_credentials = false;
                self.pending = Some(pending);
                Ok(request)
            }
            // Still waiting: the caller may bootstrap and call again.
            Err(ProvisioningError::NoCredentials) => {
                self.pending = Some(pending);
                Err(ProvisioningError::NoCredentials)
            }
            Err(e) => Err(e),
        }
    }

    /// Abandons the running exchange (e.g. after a transport failure); the next
    /// [`ProvisioningClient::start`] begins afresh.
    pub fn abort(&mut self) {
        self.pending = None;
        // The nonce may have been used by the lost request: start over with a fresh challenge.
        self.digest = None;
    }

    /// Handles the BSM's answer to the last POST. LTKMs in a successful answer go to `card` (the
    /// terminal's [`MbmsKeyHolder`]: the card for GBA_U, the ME's store for GBA_ME) through the
    /// LTKM intake; `now` is the time of the answer.
    ///
    /// # Errors
    /// [`ProvisioningError`]; every error ends the exchange.
    pub fn handle_response(
        &mut self,
        response: HttpResponse,
        card: &mut (impl MbmsKeyHolder + ?Sized),
        now: UtcTime,
        cnonce_random: &[u8],
    ) -> Result<Step, ProvisioningError> {
        let mut pending = self.pending.take().ok_or(ProvisioningError::OutOfOrder("no exchange is running"))?;
        if pending.awaiting_credentials {
            self.pending = Some(pending);
            return Err(ProvisioningError::OutOfOrder("the exchange waits for new credentials"));
        }
        let step = match response.status {
            401 => self.on_unauthorized(&mut pending, &response, cnonce_random),
            200 => self.on_success(&pending, &response, card, now).map(|a| Step::Done(Box::new(a))),
            403 if pending.request.is_registration() && asks_for_client_id(&response) => {
                self.on_client_id_request(&mut pending, cnonce_random)
            }
            503 => {
                let retry_after = response.header("Retry-After").and_then(|v| v.trim().parse().ok());
                Err(ProvisioningError::Unavailable { retry_after })
            }
            other => Err(ProvisioningError::Http(other)),
        };
        match &step {
            Ok(Step::Send(_) | Step::Rebootstrap) => self.pending = Some(pending),
            Ok(Step::Done(_)) => {}
            Err(_) => {
                // A refused Digest answer leaves no usable nonce behind.
                if response.status != 200 {
                    self.digest = None;
                }
            }
        }
        step
    }

    fn on_unauthorized(
        &mut self,
        pending: &mut Pending,
        response: &HttpResponse,
        cnonce_random: &[u8],
    ) -> Result<Step, ProvisioningError> {
        let challenge = ua_challenge(response)?;
        let had_btid = pending.sent.is_some();
        // A kept nonce may simply have expired or been forgotten (stale=true, or a BSM restart
        // that changed its nonce secret): answer the fresh challenge before suspecting the B-TID.
        let retry_with_challenge = !had_btid || challenge.stale || !pending.fresh;
        if retry_with_challenge {
            if pending.challenges >= MAX_CHALLENGES {
                return Err(ProvisioningError::Unauthorized);
            }
            pending.challenges += 1;
            return self.answer(pending, challenge, cnonce_random).map(Step::Send);
        }
        if rebootstrap_needed(response.status, had_btid) && pending.rebootstraps == 0 {
            pending.rebootstraps += 1;
            pending.awaiting_credentials = true;
            pending.sent = None;
            self.last_challenge = Some(challenge);
            // The B-TID is refused: its SRK must not be used again.
            self.clear_credentials();
            return Ok(Step::Rebootstrap);
        }
        Err(ProvisioningError::Unauthorized)
    }

    /// The BSM asks for the BCAST_Client_ID: the same Registration again, with it.
    fn on_client_id_request(&mut self, pending: &mut Pending, cnonce_random: &[u8]) -> Result<Step, ProvisioningError> {
        if pending.with_client_id {
            return Err(ProvisioningError::ClientIdRefused);
        }
        if self.config.bcast_client_id.is_none() {
            return Err(ProvisioningError::ClientIdRequested);
        }
        if !self.mutual_tls {
            return Err(ProvisioningError::ClientIdNeedsHttps);
        }
        pending.with_client_id = true;
        // The BSM answered after authenticating the request: its nonce is good for the next count.
        let authorization = match self.digest.as_mut() {
            Some(digest) => {
                let sent = authorize(digest, pending, cnonce_random)?;
                let header = format_credentials(&sent)?;
                pending.sent = Some(sent);
                Some(header)
            }
            None => {
                pending.sent = None;
                None
            }
        };
        Ok(Step::Send(self.http_request(pending, authorization)))
    }

    /// Answers `challenge` for the pending request with the current credentials.
    fn answer(
        &mut self,
        pending: &mut Pending,
        challenge: Challenge,
        cnonce_random: &[u8],
    ) -> Result<HttpRequest, ProvisioningError> {
        let creds = self.credentials.as_ref().ok_or(ProvisioningError::NoCredentials)?;
        if !creds.realm_matches(&challenge.realm) {
            return Err(ProvisioningError::Challenge("realm is not 3GPP-bootstrapping@<BSM FQDN>"));
        }
        let prefs: &[Qop] = if self.config.allow_qop_auth { &[Qop::AuthInt, Qop::Auth] } else { &[Qop::AuthInt] };
        self.last_challenge = Some(challenge.clone());
        let mut digest = creds
            .digest_client(challenge, prefs)
            .ok_or(ProvisioningError::Challenge("algorithm or qop cannot be answered"))?;
        let sent = authorize(&mut digest, pending, cnonce_random)?;
        let header = format_credentials(&sent)?;
        pending.sent = Some(sent);
        pending.fresh = true;
        self.digest = Some(digest);
        Ok(self.http_request(pending, Some(header)))
    }

    fn on_success(
        &mut self,
        pending: &Pending,
        response: &HttpResponse,
        card: &mut (impl MbmsKeyHolder + ?Sized),
        now: UtcTime,
    ) -> Result<Answer, ProvisioningError> {
        // Mutual authentication first: nothing in the body is used before rspauth verifies.
        let sent =
            pending.sent.as_ref().ok_or(ProvisioningError::NotAuthenticated("200 to an unauthenticated request"))?;
        let info = response
            .header("Authentication-Info")
            .ok_or(ProvisioningError::NotAuthenticated("no Authentication-Info"))?;
        let info =
            AuthenticationInfo::parse(info).map_err(|_| ProvisioningError::NotAuthenticated("Authentication-Info"))?;
        let digest = self.digest.as_mut().ok_or(ProvisioningError::NotAuthenticated("no Digest state"))?;
        digest.check_authentication_info(sent, &info, &response.body).map_err(|e| match e {
            ClientError::MissingRspauth => ProvisioningError::NotAuthenticated("no rspauth"),
            ClientError::BadRspauth => ProvisioningError::NotAuthenticated("rspauth does not verify"),
            _ => ProvisioningError::NotAuthenticated("Authentication-Info echoes other values"),
        })?;
        let decoded = decode_response(&pending.request, response)?;
        self.apply(&decoded, now);
        let origin = LtkmOrigin::Response(pending.request.interface());
        let b_tid = self.credentials.as_ref().map(|c| c.b_tid.clone());
        let ltkms =
            decoded.ltkms().iter().map(|l| self.intake.handle(card, l, origin, b_tid.as_deref(), now)).collect();
        Ok(Answer { response: decoded, ltkms, rebootstraps: pending.rebootstraps })
    }

    /// What an answer changes in the purchase list.
    fn apply(&mut self, response: &Response, now: UtcTime) {
        match response {
            Response::Service(r) => {
                let hints = self
                    .service_hints
                    .iter()
                    .position(|(id, _)| *id == r.request_id)
                    .map(|at| self.service_hints.remove(at).1)
                    .unwrap_or_default();
                for i in &r.items {
                    if matches!(i.status, StatusCode::Success | StatusCode::AlreadySubscribed) {
                        let hint = hints.iter().find(|h| h.item == i.item).and_then(|h| h.valid_until);
                        self.purchases.insert(Purchase { item: i.item.clone(), valid_until: hint });
                    }
                }
            }
            Response::Unsubscribe(r) => {
                for i in r.items.iter().filter(|i| i.status.is_success()) {
                    if i.item.global_id_ref == ALL_SERVICES {
                        self.purchases = PurchaseList::default();
                    } else {
                        self.purchases.remove_item(&i.item.global_id_ref);
                    }
                }
            }
            Response::Registration(r) => {
                for i in &r.items {
                    if matches!(i.status, StatusCode::NoSubscription | StatusCode::PurchaseItemUnknown) {
                        self.purchases.remove_item(&i.item.global_id_ref);
                    }
                }
            }
            Response::AccountInquiry(r) => {
                for i in &r.items {
                    if i.status.is_none_or(StatusCode::is_success) {
                        self.purchases.insert(Purchase { item: i.item.clone(), valid_until: i.valid_until });
                    }
                }
                self.purchases.purge_expired(now);
            }
            _ => {}
        }
    }

    fn http_request(&self, pending: &Pending, authorization: Option<String>) -> HttpRequest {
        let mut agent = user_agent(&self.config.user_agent);
        // `with_client_id` is set only over mutual TLS (see `start` and `on_client_id_request`).
        if let Some(id) = self.config.bcast_client_id.as_ref().filter(|_| pending.with_client_id && self.mutual_tls) {
            agent.push(' ');
            agent.push_str(&id.user_agent_word());
        }
        let mut headers = vec![
            ("Host".to_owned(), self.config.bsm_fqdn.clone()),
            ("User-Agent".to_owned(), agent),
            ("Content-Type".to_owned(), pending.content_type.to_owned()),
        ];
        if let Some(a) = authorization {
            headers.push(("Authorization".to_owned(), a));
        }
        HttpRequest { method: "POST".to_owned(), uri: pending.uri.clone(), headers, body: pending.body.clone() }
    }
}

fn authorize(
    digest: &mut DigestClient,
    pending: &Pending,
    cnonce_random: &[u8],
) -> Result<SentRequest, ProvisioningError> {
    digest.authorize("POST", &pending.uri, &pending.body, cnonce_random).map_err(|e| match e {
        ClientError::BadCnonceRandom(n) => ProvisioningError::BadCnonceRandom(n),
        _ => ProvisioningError::Challenge("nonce count exhausted"),
    })
}

fn format_credentials(sent: &SentRequest) -> Result<String, ProvisioningError> {
    // Only values echoed from the (already parsed) challenge can fail to format.
    sent.credentials().to_header_value().map_err(|_| ProvisioningError::Challenge("challenge values cannot be echoed"))
}

/// The first Digest challenge of a 401.
fn ua_challenge(response: &HttpResponse) -> Result<Challenge, ProvisioningError> {
    for (name, value) in &response.headers {
        if !name.trim().eq_ignore_ascii_case("WWW-Authenticate") {
            continue;
        }
        match Challenge::parse(value) {
            Ok(c) => return Ok(c),
            Err(HeaderError::NotDigest) => continue,
            Err(_) => return Err(ProvisioningError::Challenge("WWW-Authenticate does not parse")),
        }
    }
    Err(ProvisioningError::Challenge("401 without a Digest challenge"))
}

/// The configured User-Agent with the GBA product token (24.109 §5.2; the BSM refuses requests
/// without it, `profile: P-7`). A `BCAST_Client_ID=` word in the configured text is dropped: the
/// ID goes only where [`ProvisioningClient`] puts it, over mutual TLS.
fn user_agent(configured: &str) -> String {
    let printable: String = configured.chars().filter(|c| !c.is_control()).collect();
    let is_client_id =
        |w: &str| w.get(..CLIENT_ID_LABEL.len()).is_some_and(|l| l.eq_ignore_ascii_case(CLIENT_ID_LABEL));
    let clean = if printable.split_whitespace().any(is_client_id) {
        printable.split_whitespace().filter(|w| !is_client_id(w)).collect::<Vec<_>>().join(" ")
    } else {
        printable
    };
    if clean.split_whitespace().any(|t| t.to_ascii_lowercase().starts_with(GBA_PRODUCT_TOKEN)) {
        clean
    } else if clean.trim().is_empty() {
        GBA_PRODUCT_TOKEN.to_owned()
    } else {
        format!("{} {GBA_PRODUCT_TOKEN}", clean.trim_end())
    }
}

/// Whether a 403 is the BSM's request for the BCAST_Client_ID (its body, seed §6.9.2.3).
fn asks_for_client_id(response: &HttpResponse) -> bool {
    core::str::from_utf8(&response.body).is_ok_and(|b| b.trim() == SEND_CLIENT_ID_BODY)
}

/// The media type of a `Content-Type` value, lower case, without parameters.
fn media_type(value: &str) -> String {
    value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Decodes the answer to `request` and checks it answers it.
fn decode_response(request: &Request, response: &HttpResponse) -> Result<Response, ProvisioningError> {
    let expected = match request {
        Request::Sprov(_) => sprov::CONTENT_TYPE,
        Request::MbmsRegister(_) | Request::MbmsDeregister(_) => mbms::REGISTER_RESPONSE_CONTENT_TYPE,
        Request::MbmsMskRequest(_) => mbms::MSK_RESPONSE_CONTENT_TYPE,
    };
    let got = response.header("Content-Type").map(media_type);
    if got.as_deref() != Some(expected) {
        return Err(ProvisioningError::Malformed(format!("content type {got:?}, expected {expected}")));
    }
    let bad = |e: XmlError| ProvisioningError::Malformed(e.to_string());
    let body = &response.body;
    let decoded = match request {
        Request::Sprov(m) => {
            let answer = SprovMessage::from_xml(body).map_err(bad)?;
            match (m, answer) {
                (SprovMessage::ServiceRequest(_), SprovMessage::ServiceResponse(r)) => Response::Service(r),
                (SprovMessage::TokenPurchaseRequest(_), SprovMessage::TokenPurchaseResponse(r)) => {
                    Response::TokenPurchase(r)
                }
                (SprovMessage::UnsubscribeRequest(_), SprovMessage::UnsubscribeResponse(r)) => Response::Unsubscribe(r),
                (SprovMessage::RegistrationRequest(_), SprovMessage::RegistrationResponse(r)) => {
                    Response::Registration(r)
                }
                (SprovMessage::DeregistrationRequest(_), SprovMessage::DeregistrationResponse(r)) => {
                    Response::Deregistration(r)
                }
                (SprovMessage::LtkmRequest(_), SprovMessage::LtkmResponse(r)) => Response::Ltkm(r),
                (SprovMessage::AccountInquiry(_), SprovMessage::AccountInquiryResponse(r)) => {
                    Response::AccountInquiry(r)
                }
                (_, other) => {
                    return Err(ProvisioningError::Malformed(format!(
                        "{} does not answer {}",
                        other.root_name(),
                        m.root_name()
                    )));
                }
            }
        }
        Request::MbmsRegister(_) | Request::MbmsDeregister(_) => {
            Response::MbmsRegister(RegisterResponse::from_xml(body).map_err(bad)?)
        }
        Request::MbmsMskRequest(_) => Response::MbmsMsk(MskResponse::from_xml(body).map_err(bad)?),
    };
    if let (Some(sent), Some(got)) = (request.request_id(), response_request_id(&decoded))
        && sent != got
    {
        return Err(ProvisioningError::Malformed(format!("requestID {got} answers no request of ours (sent {sent})")));
    }
    Ok(decoded)
}

fn response_request_id(r: &Response) -> Option<u32> {
    Some(match r {
        Response::Service(r) => r.request_id,
        Response::TokenPurchase(r) => r.request_id,
        Response::Unsubscribe(r) => r.request_id,
        Response::Registration(r) => r.request_id,
        Response::Deregistration(r) => r.request_id,
        Response::Ltkm(r) => r.request_id,
        Response::AccountInquiry(r) => r.request_id,
        Response::MbmsRegister(_) | Response::MbmsMsk(_) => return None,
    })
}
