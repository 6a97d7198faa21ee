//! The BSM's provisioning logic: one async function per request of the OMA BCAST service
//! provisioning interface (profile P-8) and of the 3GPP MBMS key-management interface
//! (TS 33.246 Annex G, TS 26.346 §11), over any [`BsmStore`].
//!
//! Sans-IO in the sense of DESIGN.md: no sockets, no clock, no threads. The caller passes the
//! authenticated terminal ([`Caller`], from the Ua Digest layer's key record), the parsed request,
//! the request's source address and `now` (Unix seconds). Every function returns the typed
//! response and a list of [`DeliveryIntent`]s: what the push scheduler ([`crate::delivery`])
//! should queue or drop. No randomness is needed: RAND and CSB ID are per key and stored with it
//! (`profile: P-2, P-3`), and every LTKM TS comes from the store's durable counter.
//!
//! # What each request does
//! | request | effect | LTKMs |
//! |---|---|---|
//! | [`Provisioning::registration`] | push address = source address, interface OMA BCAST (P-8) | every key the named, active purchases entitle the terminal to, in the response |
//! | [`Provisioning::service_request`] | purchase recorded per item; implicit registration when `registration_required` is false | the new purchases' keys, in the response |
//! | [`Provisioning::unsubscribe`] | purchase removed | invalidations (pushed) of the keys no other purchase needs |
//! | [`Provisioning::ltkm_request`] | — | the requested keys the terminal is entitled to, in the response |
//! | [`Provisioning::deregistration`] | registration ended, ended purchases purged, pushes stopped | — |
//! | [`Provisioning::token_purchase`] | a token purchase recorded | the key (live or from the history), in the response |
//! | [`Provisioning::account_inquiry`] | — | — |
//! | [`Provisioning::mbms_register`] | as registration, interface MBMS (pushes to 2269) | pushed (the answer has status codes only, 33.246 Annex H) |
//! | [`Provisioning::mbms_deregister`] | as deregistration | — |
//! | [`Provisioning::mbms_msk_request`] | — | pushed |
//!
//! # Keycast's choices
//! - \[chosen\] **LTKMs in an HTTP answer have V = 0** (`profile: P-3`): the authenticated HTTP
//!   answer is the transport acknowledgement, and a verification message for an LTKM that has no
//!   delivery row would match nothing at the BSM. Each such key is reported as
//!   [`DeliveryIntent::DeliveredInResponse`], so the scheduler can close pushes of the same key
//!   (including the LTKM Request that answers a solicited pull). Pushed LTKMs keep V = 1.
//! - \[chosen\] At most [`ProvisioningConfig::max_ltkms_per_response`] LTKMs go in one answer (the
//!   XML is bounded at 64 KiB); the rest become push intents.
//! - \[chosen\] **Security policy per purchase kind** (`profile: P-4`), always with the extension, so
//!   every LTKM from here carries a TS window (`profile: P-11.8`) cut to the purchase:
//!   subscription 0x05 (unlimited within the window: the subscriber may replay what it recorded
//!   during the window), pay-per-time 0x00 and pay-per-view 0x02 (the catalogue sells no
//!   play-backs, so none are granted), tokens 0x04 with view_counter = the tokens bought (capped
//!   at 65 535). When several purchases draw on one key the most generous wins (subscription >
//!   pay-per-time > tokens > pay-per-view) and the window is the hull of their windows.
//! - \[chosen\] **Double subscribe**: an item with a purchase that has not ended answers
//!   [`StatusCode::AlreadySubscribed`]; the purchase is neither renewed nor charged again, but the
//!   keys it already entitles the terminal to are sent again, so a terminal whose first answer was
//!   lost still ends with its keys.
//! - \[chosen\] **Status codes** (the `keycast-sprov.xsd` codes): unknown purchase item →
//!   [`StatusCode::PurchaseItemUnknown`]; unknown or ambiguous offer →
//!   [`StatusCode::NoMatchingFragment`]; price differing from the offer's →
//!   [`StatusCode::ChargingError`]; program already over → [`StatusCode::RequestUnavailable`];
//!   unsubscribe, register or request keys without a purchase → [`StatusCode::NoSubscription`];
//!   a key that does not exist (or Key Group 0, or another Key Domain) →
//!   [`StatusCode::WrongKeyInfo`]; a token count other than the offer's →
//!   [`StatusCode::InvalidInformation`]. The global code is success when at least one item
//!   succeeded, otherwise the first item's code.
//! - MBMS interface per-item codes (RFC 2616, 33.246 §6.3.2.4): 200, 403 for a service or MSK the
//!   terminal may not have (not bought, unknown, not registered), 400 for a malformed MSK ID.
//! - \[chosen\] **Push address** (`profile: P-8`): the source address of the last registration;
//!   a terminal that never registered gets its pushes (invalidations after an unsubscribe) at the
//!   source address of the request that caused them, on the interface that request used.
//! - \[chosen\] The store keeps one registration per terminal, so a (de)registration moves or ends
//!   it as a whole when at least one named item is accepted.
//!
//! The catalogue and the key groups are read from the store on every request; a cache is left
//! for later (it needs an invalidation signal from the admin API).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use keycast_mikey::{KeyDomainId, KeyValidity, LtkmExt, SecurityPolicy, SecurityPolicyExt, SekPekId};
use keycast_provisioning::mbms::{
    DeregisterRequest, MskRequest, MskResponse, MskStatus, RegisterRequest, RegisterResponse, ResponseCode,
    ServiceStatus,
};
use keycast_provisioning::sprov::{
    ALL_SERVICES, AccountInquiry, AccountInquiryResponse, AccountItem, BcastKeyId, DeregistrationRequest,
    DeregistrationResponse, InquiryType, ItemStatus, KeyStatus, LtkmRequest, LtkmResponse, PurchaseItemRef,
    RegistrationRequest, RegistrationResponse, ServiceRequest, ServiceResponse, SprovMessage, StatusCode,
    TokenPurchaseRequest, TokenPurchaseResponse, TokenStatus, UnsubscribeRequest, UnsubscribeResponse,
};
use keycast_provisioning::time::UtcTime;

use crate::delivery::{PushAddress, RegistrationInterface};
use crate::domain::{
    Catalogue, KeyEntry, KeyGroup, Purchase, PurchaseData, PurchaseKind, TerminalId, Window, keys_to_deliver,
    keys_to_invalidate, ntp_seconds,
};
use crate::issue::{IssueError, LtkmCounter, LtkmKind, SekPekRecord, StreamingPolicy, TerminalKeys, build_ltkm};
use crate::keys::KeyRecord;
use crate::store::{BsmStore, Interface, Registration, StoreError, StoredKey, Terminal};

/// Default of [`ProvisioningConfig::max_ltkms_per_response`].
pub const DEFAULT_MAX_LTKMS_PER_RESPONSE: usize = 64;

/// How the provisioning logic behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningConfig {
    /// The BSM FQDN: IDi of every LTKM (`profile: P-3`).
    pub bsm_fqdn: String,
    /// `registrationRequired` of a Service Response. When false the BSM registers the terminal
    /// itself after a successful Service Request (implicit registration, seed §6.3).
    pub registration_required: bool,
    /// Most LTKMs carried in one answer; the rest are pushed.
    pub max_ltkms_per_response: usize,
    /// RFC 4771 ROC transmission rate R of streaming keys' SP payload (`profile: P-11.1`); `None`
    /// for plain RFC 3711.
    pub roc_rate: Option<u16>,
    /// Key group → terminal_binding_key_id: the LTKMs of these groups' keys carry tbk_flag and the
    /// ID (`profile: P-4, P-11.5`), and the key center gives that TBK to the terminals entitled
    /// to the group ([`crate::http::key_center`]).
    pub tbk_bindings: BTreeMap<u16, u32>,
}

impl ProvisioningConfig {
    /// Defaults: implicit registration, [`DEFAULT_MAX_LTKMS_PER_RESPONSE`], plain RFC 3711.
    #[must_use]
    pub fn new(bsm_fqdn: impl Into<String>) -> Self {
        ProvisioningConfig {
            bsm_fqdn: bsm_fqdn.into(),
            registration_required: false,
            max_ltkms_per_response: DEFAULT_MAX_LTKMS_PER_RESPONSE,
            roc_rate: None,
            tbk_bindings: BTreeMap::new(),
        }
    }

    /// The P-4 extension of a key of `key_group` under `policy`: with the group's TBK binding,
    /// if any (`profile: P-4, P-11.5`).
    #[must_use]
    pub fn ext_for(&self, key_group: u16, policy: SecurityPolicyExt) -> LtkmExt {
        LtkmExt { tbk_id: self.tbk_bindings.get(&key_group).copied(), ..ext_of(policy) }
    }
}

/// The authenticated terminal of one request: the BSM's identity of it (IMPI) and the keys its
/// LTKMs are sealed with (B-TID, SMK, and the BSM FQDN as IDi). The SMK prints as `Smk(…)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The subscriber's IMPI.
    pub terminal: TerminalId,
    /// B-TID, SMK and IDi.
    pub keys: TerminalKeys,
}

impl Caller {
    /// The caller of a request that passed Ua Digest authentication with `record`.
    #[must_use]
    pub fn from_record(record: &KeyRecord, bsm_fqdn: &str) -> Self {
        Caller {
            terminal: TerminalId(record.impi().to_owned()),
            keys: TerminalKeys {
                btid: record.btid().to_owned(),
                smk: record.smk().clone(),
                bsm_fqdn: bsm_fqdn.to_owned(),
            },
        }
    }
}

/// One LTKM push for the scheduler to queue: which key, what it does, how to rebuild the
/// SEK/PEK record, and where it goes. The scheduler assigns the delivery version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushIntent {
    /// The terminal (IMPI).
    pub terminal: TerminalId,
    /// Key Domain ID.
    pub key_domain_id: KeyDomainId,
    /// SEK/PEK ID.
    pub sek_pek_id: SekPekId,
    /// Delivery (with this terminal's window) or invalidation.
    pub kind: LtkmKind,
    /// The P-4 extension this terminal gets for the key (`profile: P-4`).
    pub ext: Option<LtkmExt>,
    /// The key's SRTP policy, for a streaming service's key.
    pub streaming: Option<StreamingPolicy>,
    /// Where to push.
    pub to: PushAddress,
}

impl PushIntent {
    /// The record to build this push's LTKM from (with [`crate::issue::build_ltkm`], V = 1),
    /// given the stored key.
    ///
    /// # Errors
    /// [`ServiceError::TimeOutOfRange`] when the key's window is past the first NTP era.
    pub fn record(&self, stored: &StoredKey) -> Result<SekPekRecord, ServiceError> {
        sek_pek_record(stored, self.ext, self.streaming.clone())
    }
}

/// What the push scheduler should do after a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryIntent {
    /// Queue an LTKM push.
    Push(PushIntent),
    /// The key went to the terminal in an HTTP answer: pending pushes of it may be closed (this is
    /// also how an LTKM Request answers a solicited pull).
    DeliveredInResponse {
        /// The terminal.
        terminal: TerminalId,
        /// Key Domain ID.
        key_domain_id: KeyDomainId,
        /// SEK/PEK ID.
        sek_pek_id: SekPekId,
    },
    /// The terminal registered at `to`: its pending pushes go there from now on.
    Registered {
        /// The terminal.
        terminal: TerminalId,
        /// The new push address.
        to: PushAddress,
    },
    /// The terminal deregistered: drop its pending pushes.
    StopPushes {
        /// The terminal.
        terminal: TerminalId,
    },
}

/// A typed response and what the scheduler should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<R> {
    /// The answer to send.
    pub response: R,
    /// For the push scheduler.
    pub intents: Vec<DeliveryIntent>,
}

/// Why a request could not be served at all (per-item problems are status codes instead). Carries
/// no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An LTKM could not be built (a bad stored key).
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// A time is past the first NTP era (2036), which LTKM TS fields cannot carry.
    #[error("time outside the first NTP era")]
    TimeOutOfRange,
    /// The message is a response, not a request.
    #[error("{0} is not a request")]
    NotARequest(&'static str),
}

/// The provisioning logic over a store.
#[derive(Debug, Clone)]
pub struct Provisioning<S> {
    store: S,
    config: ProvisioningConfig,
}

// ---------------------------------------------------------------------------------------------
// The catalogue as one request sees it

/// The catalogue, offers and key groups read for one request.
pub(crate) struct View {
    catalogue: Catalogue,
    offers: BTreeMap<String, PurchaseData>,
    /// Per key group: its Key Domain ID and whether its service streams.
    groups: BTreeMap<u16, (KeyDomainId, bool)>,
}

impl View {
    /// Nothing read yet.
    fn empty() -> Self {
        View { catalogue: Catalogue::default(), offers: BTreeMap::new(), groups: BTreeMap::new() }
    }

    fn offers_of<'a>(&'a self, item: &'a str) -> impl Iterator<Item = &'a PurchaseData> {
        self.offers.values().filter(move |o| o.item == item)
    }

    /// The live key entry of `id` at `now`.
    fn live_entry(&self, id: SekPekId, now: u64) -> Option<&KeyEntry> {
        self.catalogue.groups.get(&id.key_group)?.live_key(id, now)
    }

    /// Whether the group belongs to a service or program of this Key Domain.
    fn group_in_domain(&self, key_domain: KeyDomainId, group: u16) -> bool {
        group != 0 && self.groups.get(&group).is_some_and(|(d, _)| *d == key_domain)
    }

    /// The purchase item an MBMS User Service ID names: GlobalPurchaseItemID, optionally followed
    /// by one of the item's PurchaseData IDs (`profile: P-1`). The longest item ID wins.
    fn item_of_service_id(&self, id: &str) -> Option<String> {
        self.catalogue
            .items
            .keys()
            .filter(|g| match id.strip_prefix(g.as_str()) {
                Some("") => true,
                Some(rest) => self.offers_of(g).any(|o| o.id == rest),
                None => false,
            })
            .max_by_key(|g| g.len())
            .cloned()
    }
}

/// What one terminal gets for one key: its window and policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) window: Window,
    pub(crate) policy: SecurityPolicyExt,
    rank: u8,
}

/// The P-4 policy and its precedence for a purchase kind and its offer's play-backs (see the
/// module docs; `profile: P-4`): pay-per-time and pay-per-view with play-backs take codes 0x01
/// and 0x03 with that play_back_counter.
fn policy_of(kind: &PurchaseKind, play_backs: u16) -> (SecurityPolicyExt, u8) {
    let plain = |policy| SecurityPolicyExt { policy, play_back_counter: 0, view_counter: 0 };
    let replay = |policy| SecurityPolicyExt { policy, play_back_counter: play_backs, view_counter: 0 };
    match kind {
        PurchaseKind::Subscription => (plain(SecurityPolicy::UnlimitedWithinWindow), 3),
        PurchaseKind::PayPerTime if play_backs > 0 => (replay(SecurityPolicy::PayPerTimeWithPlayBack), 2),
        PurchaseKind::PayPerTime => (plain(SecurityPolicy::PayPerTime), 2),
        PurchaseKind::Tokens(n) => (
            SecurityPolicyExt {
                policy: SecurityPolicy::UserPayPerView,
                play_back_counter: 0,
                view_counter: u16::try_from(*n).unwrap_or(u16::MAX),
            },
            1,
        ),
        PurchaseKind::PayPerView(_) if play_backs > 0 => (replay(SecurityPolicy::PayPerViewWithPlayBack), 0),
        PurchaseKind::PayPerView(_) => (plain(SecurityPolicy::PayPerView), 0),
    }
}

pub(crate) fn ext_of(policy: SecurityPolicyExt) -> LtkmExt {
    LtkmExt { security_policy: Some(policy), tbk_id: None, consumption_reporting: false }
}

/// The live keys `purchases` entitle the terminal to at `now`, each with its window (the key's
/// window cut to the purchase, hull over several purchases) and policy.
pub(crate) fn entitlements(view: &View, purchases: &[Purchase], now: u64) -> BTreeMap<SekPekId, Grant> {
    let mut out: BTreeMap<SekPekId, Grant> = BTreeMap::new();
    for p in purchases {
        // The offer's play-backs as the catalogue says now [chosen]: a purchase keeps its
        // kind and window, and its key's play-back right follows the offer.
        let play_backs = view.offers.get(&p.purchase_data).map_or(0, |o| o.play_backs);
        let (policy, rank) = policy_of(&p.kind, play_backs);
        for id in keys_to_deliver(&view.catalogue, std::slice::from_ref(p), now) {
            let Some(entry) = view.live_entry(id, now) else { continue };
            let Some(window) =
                Window::new(entry.window.from.max(p.window.from), entry.window.until.min(p.window.until))
            else {
                continue;
            };
            out.entry(id)
                .and_modify(|g| {
                    g.window = Window { from: g.window.from.min(window.from), until: g.window.until.max(window.until) };
                    if rank > g.rank {
                        g.policy = policy;
                        g.rank = rank;
                    }
                })
                .or_insert(Grant { window, policy, rank });
        }
    }
    out
}

/// The key groups `purchases` draw on: each pay-per-view program's, and otherwise those of the
/// item's services. A superset of what [`keys_to_deliver`] reads for them (it also cuts by window).
fn groups_drawn_on(catalogue: &Catalogue, purchases: &[Purchase]) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for p in purchases {
        match &p.kind {
            PurchaseKind::PayPerView(program) => out.extend(catalogue.programs.get(program).map(|pr| pr.key_group)),
            PurchaseKind::Subscription | PurchaseKind::PayPerTime | PurchaseKind::Tokens(_) => {
                let services = catalogue.items.get(&p.item).map(|i| i.services.as_slice()).unwrap_or_default();
                out.extend(services.iter().filter_map(|s| catalogue.services.get(s)).map(|s| s.key_group));
            }
        }
    }
    out
}

/// `[from, until)` as an inclusive TS window of NTP seconds (`profile: P-4, P-6`).
pub(crate) fn ts_window(window: Window) -> Result<KeyValidity, ServiceError> {
    let low = ntp_seconds(window.from).ok_or(ServiceError::TimeOutOfRange)?;
    let high = ntp_seconds(window.until.saturating_sub(1)).ok_or(ServiceError::TimeOutOfRange)?;
    Ok(KeyValidity::TsWindow { ts_low: low, ts_high: high })
}

/// The issuer's record of a stored key with the extension one terminal gets: the key's full window
/// in TS form, its RAND and CSB ID (`profile: P-2, P-3, P-4`).
fn sek_pek_record(
    stored: &StoredKey,
    ext: Option<LtkmExt>,
    streaming: Option<StreamingPolicy>,
) -> Result<SekPekRecord, ServiceError> {
    let ts_form = ext.is_some_and(|e| e.security_policy.is_some());
    let validity = if ts_form {
        ts_window(stored.entry.window)?
    } else {
        // Without a policy the window is in TEK IDs: every TEK ID the key can have (SEQu 0xFFFF
        // is never used, `profile: P-11.11`).
        KeyValidity::TekIdWindow { seq_l: 0, seq_u: 0xfffe }
    };
    Ok(SekPekRecord {
        key_domain_id: stored.key_domain,
        sek_pek_id: stored.entry.id,
        key: stored.key.clone(),
        rand: stored.rand,
        csb_id: stored.csb_id,
        validity,
        ext,
        streaming,
    })
}

fn interface_of(interface: Interface) -> RegistrationInterface {
    match interface {
        Interface::Mbms => RegistrationInterface::Mbms,
        Interface::OmaBcast => RegistrationInterface::OmaBcast,
    }
}

/// Where pushes for `terminal` go: its registration, else this request's source (module docs).
fn push_address(terminal: &Terminal, source: SocketAddr, fallback: Interface) -> PushAddress {
    if let Some(r) = &terminal.registration {
        let ip = r.address.parse::<SocketAddr>().map(|a| a.ip()).or_else(|_| r.address.parse::<IpAddr>());
        if let Ok(ip) = ip {
            return PushAddress { ip, interface: interface_of(r.interface) };
        }
        tracing::warn!(terminal = %terminal.id.0, "stored registration address does not parse; using the source");
    }
    PushAddress { ip: source.ip(), interface: interface_of(fallback) }
}

fn active(p: &Purchase, now: u64) -> bool {
    p.window.until > now
}

/// Success when any item succeeded, otherwise the first item's code (module docs).
fn global_status(codes: impl IntoIterator<Item = StatusCode>) -> StatusCode {
    let mut first = None;
    for c in codes {
        if c.is_success() {
            return StatusCode::Success;
        }
        first.get_or_insert(c);
    }
    first.unwrap_or(StatusCode::Success)
}

fn utc(secs: u64) -> Option<UtcTime> {
    UtcTime::from_unix_seconds(secs).ok()
}

// ---------------------------------------------------------------------------------------------
// The requests

impl<S: BsmStore + Sync> Provisioning<S> {
    /// The logic over `store`.
    #[must_use]
    pub fn new(store: S, config: ProvisioningConfig) -> Self {
        Provisioning { store, config }
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ProvisioningConfig {
        &self.config
    }

    /// The caller of a request authenticated with `record`, with this BSM's FQDN as IDi.
    #[must_use]
    pub fn caller(&self, record: &KeyRecord) -> Caller {
        Caller::from_record(record, &self.config.bsm_fqdn)
    }

    /// Serves any OMA BCAST request by its kind.
    ///
    /// # Errors
    /// [`ServiceError::NotARequest`] for a response message; otherwise as the request's function.
    pub async fn handle(
        &self,
        caller: &Caller,
        message: SprovMessage,
        source: SocketAddr,
        now: u64,
    ) -> Result<Outcome<SprovMessage>, ServiceError> {
        fn into<R: Into<SprovMessage>>(o: Outcome<R>) -> Outcome<SprovMessage> {
            Outcome { response: o.response.into(), intents: o.intents }
        }
        Ok(match message {
            SprovMessage::RegistrationRequest(r) => into(self.registration(caller, &r, source, now).await?),
            SprovMessage::ServiceRequest(r) => into(self.service_request(caller, &r, source, now).await?),
            SprovMessage::UnsubscribeRequest(r) => into(self.unsubscribe(caller, &r, source, now).await?),
            SprovMessage::LtkmRequest(r) => into(self.ltkm_request(caller, &r, source, now).await?),
            SprovMessage::DeregistrationRequest(r) => into(self.deregistration(caller, &r, now).await?),
            SprovMessage::TokenPurchaseRequest(r) => into(self.token_purchase(caller, &r, source, now).await?),
            SprovMessage::AccountInquiry(r) => into(self.account_inquiry(caller, &r, now).await?),
            other => return Err(ServiceError::NotARequest(other.root_name())),
        })
    }

    pub(crate) async fn view(&self) -> Result<View, ServiceError> {
        let mut view = View::empty();
        self.read_services(&mut view).await?;
        self.read_programs(&mut view).await?;
        self.read_items(&mut view).await?;
        let groups: Vec<u16> = view.groups.keys().copied().collect();
        self.read_key_groups(&mut view, groups).await?;
        view.offers = self.store.purchase_data().await?.into_iter().map(|o| (o.id.clone(), o)).collect();
        Ok(view)
    }

    /// Reads the services, with their key groups, into the view.
    async fn read_services(&self, view: &mut View) -> Result<(), ServiceError> {
        for s in self.store.services().await? {
            view.groups.insert(s.key_group, (s.key_domain, s.streaming));
            view.catalogue.services.insert(s.id.clone(), s);
        }
        Ok(())
    }

    /// Reads the programs, with their key groups, into the view (after the services).
    async fn read_programs(&self, view: &mut View) -> Result<(), ServiceError> {
        for p in self.store.programs().await? {
            if let Some(s) = view.catalogue.services.get(&p.service) {
                view.groups.insert(p.key_group, (s.key_domain, s.streaming));
            }
            view.catalogue.programs.insert(p.id.clone(), p);
        }
        Ok(())
    }

    /// Reads the purchase items into the view.
    async fn read_items(&self, view: &mut View) -> Result<(), ServiceError> {
        for i in self.store.purchase_items().await? {
            view.catalogue.items.insert(i.global_id.clone(), i);
        }
        Ok(())
    }

    /// Reads the key entries of `groups` (those of a service or program) into the view.
    async fn read_key_groups(
        &self,
        view: &mut View,
        groups: impl IntoIterator<Item = u16>,
    ) -> Result<(), ServiceError> {
        for group in groups {
            if !view.groups.contains_key(&group) || view.catalogue.groups.contains_key(&group) {
                continue;
            }
            let entries = self.store.key_entries(group).await?;
            let g = KeyGroup::with_keys(group, entries)
                .map_err(|e| StoreError::Corrupt(format!("key group {group}: {e}")))?;
            view.catalogue.groups.insert(group, g);
        }
        Ok(())
    }

    pub(crate) fn streaming_of(&self, view: &View, group: u16) -> Option<StreamingPolicy> {
        view.groups.get(&group).is_some_and(|(_, s)| *s).then(|| StreamingPolicy::keycast(self.config.roc_rate))
    }

    fn push(
        &self,
        view: &View,
        terminal: &TerminalId,
        id: SekPekId,
        grant: &Grant,
        to: PushAddress,
    ) -> Result<DeliveryIntent, ServiceError> {
        Ok(DeliveryIntent::Push(PushIntent {
            terminal: terminal.clone(),
            key_domain_id: key_domain_of(view, id),
            sek_pek_id: id,
            kind: LtkmKind::Deliver { validity: ts_window(grant.window)? },
            ext: Some(self.config.ext_for(id.key_group, grant.policy)),
            streaming: self.streaming_of(view, id.key_group),
            to,
        }))
    }

    /// Seals the granted live keys for the caller (V = 0) to go in an answer; see
    /// [`Provisioning::issue_stored`].
    async fn issue(
        &self,
        view: &View,
        caller: &Caller,
        grants: &[(SekPekId, Grant)],
        overflow_to: PushAddress,
        now: u64,
        intents: &mut Vec<DeliveryIntent>,
    ) -> Result<Vec<Vec<u8>>, ServiceError> {
        let mut sends = Vec::with_capacity(grants.len());
        for (id, grant) in grants {
            match self.store.key(*id, now).await? {
                Some(stored) => sends.push((stored, *grant)),
                // Removed between reading the groups and now: nothing to send.
                None => tracing::warn!(key_group = id.key_group, key_number = id.key_number, "granted key vanished"),
            }
        }
        self.issue_stored(view, caller, &sends, overflow_to, intents).await
    }

    async fn register(
        &self,
        terminal: &TerminalId,
        source: SocketAddr,
        interface: Interface,
        now: u64,
    ) -> Result<PushAddress, ServiceError> {
        self.register_over(terminal, None, source, interface, now).await
    }

    /// [`Self::register`] knowing the terminal's stored registration (as `touch_terminal` just
    /// returned it): a registration that changes nothing skips the store.
    async fn register_over(
        &self,
        terminal: &TerminalId,
        stored: Option<&Registration>,
        source: SocketAddr,
        interface: Interface,
        now: u64,
    ) -> Result<PushAddress, ServiceError> {
        let registration = Registration { address: source.to_string(), interface, at: now };
        if stored.is_some_and(|s| registration.renews(s)) {
            return Ok(PushAddress { ip: source.ip(), interface: interface_of(interface) });
        }
        if !self.store.register(terminal, &registration).await? {
            return Err(StoreError::Missing(format!("terminal {}", terminal.0)).into());
        }
        Ok(PushAddress { ip: source.ip(), interface: interface_of(interface) })
    }

    /// **RegistrationRequest**: registers the terminal for pushes at the request's source address
    /// (OMA BCAST interface, port 4359, `profile: P-8`) and answers with the LTKMs of every key its
    /// named, active purchases entitle it to — whatever it may have missed while unreachable.
    ///
    /// Per item: [`StatusCode::PurchaseItemUnknown`], [`StatusCode::NoSubscription`] (nothing
    /// bought, or ended), or success. Nothing is registered when no item succeeds.
    ///
    /// # Errors
    /// [`ServiceError`] when the store fails or a stored key cannot be sealed.
    pub async fn registration(
        &self,
        caller: &Caller,
        request: &RegistrationRequest,
        source: SocketAddr,
        now: u64,
    ) -> Result<Outcome<RegistrationResponse>, ServiceError> {
        let known = self.store.touch_terminal(&caller.terminal, &caller.keys.btid, now).await?;
        // A Registration reads only what it uses, as every round trip to the store counts under
        // load: the items; once an item is named, the services, the programs (for a pay-per-view
        // purchase only) and the key groups of the named purchases; never the offers.
        let mut view = View::empty();
        self.read_items(&mut view).await?;
        let purchases = self.store.purchases(&caller.terminal).await?;
        let mut items = Vec::with_capacity(request.items.len());
        let mut named = BTreeSet::new();
        for r in &request.items {
            let status = if !view.catalogue.items.contains_key(&r.global_id_ref) {
                StatusCode::PurchaseItemUnknown
            } else if purchases.iter().any(|p| p.item == r.global_id_ref && active(p, now)) {
                named.insert(r.global_id_ref.as_str());
                StatusCode::Success
            } else {
                StatusCode::NoSubscription
            };
            items.push(ItemStatus { item: r.clone(), status });
        }
        let mut intents = Vec::new();
        let mut ltkms = Vec::new();
        if !named.is_empty() {
            let stored = known.registration.as_ref();
            let to = self.register_over(&caller.terminal, stored, source, Interface::OmaBcast, now).await?;
            intents.push(DeliveryIntent::Registered { terminal: caller.terminal.clone(), to });
            let chosen: Vec<Purchase> =
                purchases.into_iter().filter(|p| named.contains(p.item.as_str()) && active(p, now)).collect();
            self.read_services(&mut view).await?;
            if chosen.iter().any(|p| matches!(p.kind, PurchaseKind::PayPerView(_))) {
                self.read_programs(&mut view).await?;
            }
            let drawn_on = groups_drawn_on(&view.catalogue, &chosen);
            self.read_key_groups(&mut view, drawn_on).await?;
            let grants: Vec<_> = entitlements(&view, &chosen, now).into_iter().collect();
            ltkms = self.issue(&view, caller, &grants, to, now, &mut intents).await?;
        }
        let status = global_status(items.iter().map(|i| i.status));
        let response = RegistrationResponse { request_id: request.request_id, status, description: None, items, ltkms };
        Ok(Outcome { response, intents })
    }

    /// **ServiceRequest**: buys each purchase item under the named (or only) offer, records the
    /// purchase, and answers with the LTKMs of the keys the new purchases entitle the terminal to.
    /// With `registration_required` false a successful request also registers the terminal at the
    /// request's source address (implicit registration).
    ///
    /// Per item codes: see the module docs (unknown item, unknown offer, price, program over,
    /// double subscribe).
    ///
    /// # Errors
    /// [`ServiceError`] when the store fails or a stored key cannot be sealed.
    pub async fn service_request(
        &self,
        caller: &Caller,
        request: &ServiceRequest,
        source: SocketAddr,
        now: u64,
    ) -> Result<Outcome<ServiceResponse>, ServiceError> {
        let terminal = self.store.touch_terminal(&caller.terminal, &caller.keys.btid, now).await?;
        let view = self.view().await?;
        let purchases = self.store.purchases(&caller.terminal).await?;
        let mut items = Vec::with_capacity(request.items.len());
        let mut granted: Vec<Purchase> = Vec::new();
        for r in &request.items {
            let status = match self.buy(&view, &caller.terminal, &purchases, r, now) {
                Ok(Buy::New(p)) => {
                    self.store.put_purchase(&p).await?;
                    granted.push(p);
                    StatusCode::Success
                }
                Ok(Buy::Already(p)) => {
                    granted.push(p);
                    StatusCode::AlreadySubscribed
                }
                Err(code) => code,
            };
            items.push(ItemStatus { item: r.item.clone(), status });
        }
        let mut intents = Vec::new();
        let succeeded = items.iter().any(|i| i.status.is_success());
        let mut to = push_address(&terminal, source, Interface::OmaBcast);
        if succeeded && !self.config.registration_required {
            to = self.register(&caller.terminal, source, Interface::OmaBcast, now).await?;
            intents.push(DeliveryIntent::Registered { terminal: caller.terminal.clone(), to });
        }
        let grants: Vec<_> = entitlements(&view, &granted, now).into_iter().collect();
        let ltkms = self.issue(&view, caller, &grants, to, now, &mut intents).await?;
        let response = ServiceResponse {
            request_id: request.request_id,
            status: global_status(items.iter().map(|i| i.status)),
            description: None,
            registration_required: self.config.registration_required,
            items,
            ltkms,
        };
        Ok(Outcome { response, intents })
    }

    /// Decides one item of a Service Request (no store writes).
    fn buy(
        &self,
        view: &View,
        terminal: &TerminalId,
        purchases: &[Purchase],
        r: &keycast_provisioning::sprov::PurchaseRequestItem,
        now: u64,
    ) -> Result<Buy, StatusCode> {
        let item = &r.item.global_id_ref;
        if !view.catalogue.items.contains_key(item) {
            return Err(StatusCode::PurchaseItemUnknown);
        }
        if let Some(p) = purchases.iter().find(|p| &p.item == item && active(p, now)) {
            return Ok(Buy::Already(p.clone()));
        }
        let offer = match &r.item.purchase_data_id_ref {
            Some(id) => view.offers.get(id).filter(|o| &o.item == item).ok_or(StatusCode::NoMatchingFragment)?,
            None => {
                let mut offers = view.offers_of(item);
                match (offers.next(), offers.next()) {
                    (Some(o), None) => o,
                    _ => return Err(StatusCode::NoMatchingFragment),
                }
            }
        };
        if r.price.as_ref().is_some_and(|p| *p != offer.price) {
            return Err(StatusCode::ChargingError);
        }
        let window = match &offer.kind {
            PurchaseKind::PayPerView(program) => {
                let program = view.catalogue.programs.get(program).ok_or(StatusCode::RequestUnavailable)?;
                Window::new(now, program.window.until)
            }
            _ => Window::new(now, now.saturating_add(offer.period)),
        }
        .ok_or(StatusCode::RequestUnavailable)?;
        Ok(Buy::New(Purchase {
            terminal: terminal.clone(),
            item: item.clone(),
            purchase_data: offer.id.clone(),
            kind: offer.kind.clone(),
            window,
        }))
    }

    /// **UnsubscribeRequest**: removes each named purchase ([`ALL_SERVICES`]: every one) and
    /// pushes an invalidation (inverted window, `profile: P-3`) of every key of it that none of the
    /// terminal's remaining purchases needs (seed §6.3: "not used by any other purchase items").
    ///
    /// Per item: [`StatusCode::PurchaseItemUnknown`], [`StatusCode::NoSubscription`] when nothing
    /// of it was bought, or success.
    ///
    /// # Errors
    /// [`ServiceError`] when the store fails.
    pub async fn unsubscribe(
        &self,
        caller: &Caller,
        request: &UnsubscribeRequest,
        source: SocketAddr,
        now: u64,
    ) -> Result<Outcome<UnsubscribeResponse>, ServiceError> {
        let terminal = self.store.touch_terminal(&caller.terminal, &caller.keys.btid, now).await?;
        let view = self.view().await?;
        let mut removed = Vec::new();
        let mut items = Vec::with_capacity(request.items.len());
        for r in &request.items {
            let status = if r.global_id_ref == ALL_SERVICES {
                let all = self.store.purchases(&caller.terminal).await?;
                let mut any = false;
                for p in all {
                    if let Some(p) = self.store.remove_purchase(&caller.terminal, &p.item).await? {
                        removed.push(p);
                        any = true;
                    }
                }
                if any { StatusCode::Success } else { StatusCode::NoSubscription }
            } else if !view.catalogue.items.contains_key(&r.global_id_ref) {
                StatusCode::PurchaseItemUnknown
            } else {
                match self.store.remove_purchase(&caller.terminal, &r.global_id_ref).await? {
                    Some(p) => {
                        removed.push(p);
                        StatusCode::Success
                    }
                    None => StatusCode::NoSubscription,
                }
            };
            items.push(ItemStatus { item: r.clone(), status });
        }
        let remaining = self.store.purchases(&caller.terminal).await?;
        let mut gone = BTreeSet::new();
        for p in &removed {
            gone.extend(keys_to_invalidate(&view.catalogue, p, &remaining, now));
        }
        let to = push_address(&terminal, source, Interface::OmaBcast);
        let intents = gone
            .into_iter()
            .map(|id| {
                DeliveryIntent::Push(PushIntent {
                    terminal: caller.terminal.clone(),
                    key_domain_id: key_domain_of(&view, id),
                    sek_pek_id: id,
                    kind: LtkmKind::Invalidate,
                    // The card keeps one form per key: the invalidation carries an extension with
                    // a policy like every LTKM from here, so its window is in TS form
                    // (`profile: P-11.8, P-11.14`).
                    ext: Some(ext_of(policy_of(&PurchaseKind::Subscription, 0).0)),
                    streaming: self.streaming_of(&view, id.key_group),
                    to,
                })
            })
            .collect();
        let status = global_status(items.iter().map(|i| i.status));
        Ok(Outcome {
            response: UnsubscribeResponse { request_id: request.request_id, status, description: None, items },
            intents,
        })
    }

    /// **LTKMRequest**: answers with an LTKM for each requested key the terminal is entitled to
    /// now (Key Number 0: the group's current key). A key no purchase of this terminal entitles
    /// it to — another subscriber's — is refused with [`StatusCode::NoSubscription`]; a key that
    /// does not exist with [`StatusCode::WrongKeyInfo`]. The requested validity is not used: the
    /// window follows the purchases.
    ///
    /// # Errors
    /// [`ServiceError`] when the store fails or a stored key cannot be sealed.
    pub async fn ltkm_request(
        &self,
        caller: &Caller,
        request: &LtkmRequest,
        source: SocketAddr,
        now: u64,
    ) -> Result<Outcome<LtkmResponse>, ServiceError> {
        let terminal = self.store.touch_terminal(&caller.terminal, &caller.keys.btid, now).await?;
        let view = self.view().await?;
        let purchases = self.store.purchases(&caller.terminal).await?;
        let entitled = entitlements(&view, &purchases, now);
        let mut keys = Vec::with_capacity(request.keys.len());
        let mut grants = Vec::new();
        for k in &request.keys {
            let status = match resolve_key(&view, k.key, now) {
                Err(code) => code,
                Ok(id) => match entitled.get(&id) {
                    Some(g) => {
                        if !grants.iter().any(|(have, _)| *have == id) {
                            grants.push((id, *g));
                        }
                        StatusCode::Success
                    }
                    None => StatusCode::NoSubscription,
                },
            };
            keys.push(KeyStatus { key: k.key, status });
        }
        let mut intents = Vec::new();
        let to = push_address(&terminal, source, Interface::OmaBcast);
        let ltkms = self.issue(&view, caller, &grants, to, now, &mut intents).await?;
        let status = global_status(keys.iter().map(|k| k.status));
        Ok(Outcome {
            response: LtkmResponse { request_id: request.request_id, status, description: None, keys, ltkms },
            intents,
        })
    }

    /// **DeregistrationRequest**: ends the terminal's registration (no more pushes), purges its
    /// ended purchases. Per item: [`StatusCode::PurchaseItemUnknown`] or success.
    ///
    /// # Errors
    /// [`ServiceError`] when the store fails.
    pub async fn deregistration(
        &self,
        caller: &Caller,
        request: &DeregistrationRequest,
        now: u64,
    ) -> Result<Outcome<DeregistrationResponse>, ServiceError> {
        self.store.touch_terminal(&caller.terminal, &caller.keys.btid, now).await?;
        let view = self.view().await?;
        let items: Vec<ItemStatus> = request
            .items
            .iter()
            .map(|r| ItemStatus {
                item: r.clone(),
                status: if view.catalogue.items.contains_key(&r.global_id_ref) {
                    StatusCode::Success
                } else {
                    StatusCode::PurchaseItemUnknown
                },
            })
            .collect();
        let mut intents = Vec::new();
        if items.iter().any(|i| i.status.is_success()) {
            self.end_registration(&caller.terminal, now, &mut intents).await?;
        }
        let status = global_status(items.iter().map(|i| i.status));
        Ok(Outcome {
            response: DeregistrationResponse { request_id: request.request_id, status, description: None, items },
            intents,
        })
    }

    async fn end_registration(
        &self,
        terminal: &TerminalId,
        now: u64,
        intents: &mut Vec<DeliveryIntent>,
    ) -> Result<(), ServiceError> {
        self.store.deregister(terminal).await?;
        self.store.purge_purchases(terminal, now).await?;
        intents.push(DeliveryIntent::StopPushes { terminal: terminal.clone() });
        Ok(())
    }

    /// **TokenPurchaseRequest**: buys the item's token offer for a key (Key Domain ID ‖ SEK/PEK
    /// ID) and answers with that key under policy 0x04 (view_counter = the tokens,
    /// `profile: P-4`). A live key comes with its window cut to the purchase; a key that is no
    /// longer live comes from the group's history (`keys_covering`) with its own window, so a
    /// recording made under it plays back.
    ///
    /// \[chosen\] The item is `globalIDRef`, or else the one item with a token offer that draws on
    /// the key's group; `numberOfTokens`, when given, must equal the offer's count. A terminal
    /// with a running purchase of the item keeps it (the token purchase is not recorded over it).
    ///
    /// # Errors
    /// [`ServiceError`] when the store fails or a stored key cannot be sealed.
    pub async fn token_purchase(
        &self,
        caller: &Caller,
        request: &TokenPurchaseRequest,
        source: SocketAddr,
        now: u64,
    ) -> Result<Outcome<TokenPurchaseResponse>, ServiceError> {
        let terminal = self.store.touch_terminal(&caller.terminal, &caller.keys.btid, now).await?;
        let view = self.view().await?;
        let purchases = self.store.purchases(&caller.terminal).await?;
        let mut items = Vec::with_capacity(request.items.len());
        let mut sends: Vec<(StoredKey, Grant)> = Vec::new();
        for t in &request.items {
            match self.token_item(&view, &caller.terminal, &purchases, t, now).await? {
                Ok(TokenGrant { stored, grant, tokens, purchase }) => {
                    if let Some(p) = purchase {
                        self.store.put_purchase(&p).await?;
                    }
                    sends.push((stored, grant));
                    items.push(TokenStatus {
                        key_id: t.key_id,
                        status: StatusCode::Success,
                        number_of_tokens: Some(tokens),
                    });
                }
                Err(code) => items.push(TokenStatus { key_id: t.key_id, status: code, number_of_tokens: None }),
            }
        }
        let mut intents = Vec::new();
        let to = push_address(&terminal, source, Interface::OmaBcast);
        let ltkms = self.issue_stored(&view, caller, &sends, to, &mut intents).await?;
        let status = global_status(items.iter().map(|i| i.status));
        Ok(Outcome {
            response: TokenPurchaseResponse { request_id: request.request_id, status, description: None, items, ltkms },
            intents,
        })
    }

    /// Decides one token purchase item; the outer `Result` is the store, the inner the item code.
    async fn token_item(
        &self,
        view: &View,
        terminal: &TerminalId,
        purchases: &[Purchase],
        t: &keycast_provisioning::sprov::TokenPurchaseItem,
        now: u64,
    ) -> Result<Result<TokenGrant, StatusCode>, ServiceError> {
        let key_domain = KeyDomainId(t.key_id.key_domain_id);
        let id = SekPekId::from_bytes(t.key_id.sek_pek_id);
        if !view.group_in_domain(key_domain, id.key_group) {
            return Ok(Err(StatusCode::WrongKeyInfo));
        }
        let draws_on_group = |item: &str| {
            view.catalogue.items.get(item).is_some_and(|i| {
                i.services.iter().any(|s| view.catalogue.services.get(s).is_some_and(|s| s.key_group == id.key_group))
            }) || view.offers_of(item).any(|o| match &o.kind {
                PurchaseKind::PayPerView(p) => {
                    view.catalogue.programs.get(p).is_some_and(|p| p.key_group == id.key_group)
                }
                _ => false,
            })
        };
        let token_offers = |item: &str| -> Vec<PurchaseData> {
            view.offers_of(item).filter(|o| matches!(o.kind, PurchaseKind::Tokens(_))).cloned().collect()
        };
        let item = match &t.global_id_ref {
            Some(g) if !view.catalogue.items.contains_key(g) => return Ok(Err(StatusCode::PurchaseItemUnknown)),
            Some(g) if !draws_on_group(g) => return Ok(Err(StatusCode::WrongKeyInfo)),
            Some(g) => g.clone(),
            None => {
                let mut candidates =
                    view.catalogue.items.keys().filter(|g| draws_on_group(g) && !token_offers(g).is_empty());
                match (candidates.next(), candidates.next()) {
                    (Some(g), None) => g.clone(),
                    _ => return Ok(Err(StatusCode::NoMatchingFragment)),
                }
            }
        };
        let offers = token_offers(&item);
        let [offer] = offers.as_slice() else { return Ok(Err(StatusCode::NoMatchingFragment)) };
        let PurchaseKind::Tokens(count) = offer.kind else { return Ok(Err(StatusCode::NoMatchingFragment)) };
        if t.number_of_tokens.is_some_and(|n| n != count) {
            return Ok(Err(StatusCode::InvalidInformation));
        }
        if t.price.as_ref().is_some_and(|p| *p != offer.price) {
            return Ok(Err(StatusCode::ChargingError));
        }
        let Some(group) = view.catalogue.groups.get(&id.key_group) else { return Ok(Err(StatusCode::WrongKeyInfo)) };
        let live = if id.key_number == 0 { group.current(now) } else { group.live_key(id, now) };
        let (entry, window) = match live {
            Some(e) => (e.clone(), Window::new(now.max(e.window.from), e.window.until)),
            // History: the latest key with this number (numbers repeat only after 65 535 keys).
            None => match group.keys().iter().rev().find(|k| id.key_number != 0 && k.id == id) {
                Some(e) => (e.clone(), Some(e.window)),
                None => return Ok(Err(StatusCode::WrongKeyInfo)),
            },
        };
        let Some(window) = window else { return Ok(Err(StatusCode::RequestUnavailable)) };
        let stored = self.store.keys_covering(id.key_group, entry.window).await?.into_iter().find(|k| k.entry == entry);
        let Some(stored) = stored else { return Ok(Err(StatusCode::WrongKeyInfo)) };
        let (policy, rank) = policy_of(&offer.kind, offer.play_backs);
        let purchase = if purchases.iter().any(|p| p.item == item && active(p, now)) {
            None
        } else {
            Window::new(now, now.saturating_add(offer.period).max(now.saturating_add(1))).map(|w| Purchase {
                terminal: terminal.clone(),
                item: item.clone(),
                purchase_data: offer.id.clone(),
                kind: offer.kind.clone(),
                window: w,
            })
        };
        Ok(Ok(TokenGrant { stored, grant: Grant { window, policy, rank }, tokens: count, purchase }))
    }

    /// Seals keys read from the store (history keys included) for the caller, V = 0, to go in an
    /// answer; keys past the per-answer limit become pushes to `overflow_to`. The TSs are
    /// reserved, durably, before any LTKM is built (`profile: P-3`).
    async fn issue_stored(
        &self,
        view: &View,
        caller: &Caller,
        sends: &[(StoredKey, Grant)],
        overflow_to: PushAddress,
        intents: &mut Vec<DeliveryIntent>,
    ) -> Result<Vec<Vec<u8>>, ServiceError> {
        let split = sends.len().min(self.config.max_ltkms_per_response);
        let (now_sent, pushed) = sends.split_at(split);
        for (stored, grant) in pushed {
            intents.push(self.push(view, &caller.terminal, stored.entry.id, grant, overflow_to)?);
        }
        if now_sent.is_empty() {
            return Ok(Vec::new());
        }
        let n = u32::try_from(now_sent.len()).unwrap_or(u32::MAX); // bounded by the config limit
        let first = self.store.reserve_ltkm_ts(&caller.terminal, &caller.keys.btid, n).await?;
        let mut ltkms = Vec::with_capacity(now_sent.len());
        for (i, (stored, grant)) in now_sent.iter().enumerate() {
            let id = stored.entry.id;
            let ext = Some(self.config.ext_for(id.key_group, grant.policy));
            let record = sek_pek_record(stored, ext, self.streaming_of(view, id.key_group))?;
            // The store made [first, first + n) durable: each TS here is one of them.
            let offset = u32::try_from(i).unwrap_or(u32::MAX);
            let ts = LtkmCounter::restore(&caller.keys.btid, first.wrapping_sub(1).wrapping_add(offset))
                .reserve(&caller.keys.btid)
                .persisted();
            let kind = LtkmKind::Deliver { validity: ts_window(grant.window)? };
            ltkms.push(build_ltkm(&kind, &record, &caller.keys, &ts, false)?);
            intents.push(DeliveryIntent::DeliveredInResponse {
                terminal: caller.terminal.clone(),
                key_domain_id: stored.key_domain,
                sek_pek_id: id,
            });
        }
        Ok(ltkms)
    }

    /// **AccountInquiry**: for inquiry types `PurchaseItem` and `Purchase`, the terminal's
    /// purchases (narrowed to the named items, if any) with their windows and prices; other
    /// inquiry types answer [`StatusCode::RequestUnavailable`] \[chosen: the BSM keeps no billing
    /// or Service Guide data\].
    ///
    /// # Errors
    /// [`ServiceError`] when the store fails.
    pub async fn account_inquiry(
        &self,
        caller: &Caller,
        request: &AccountInquiry,
        now: u64,
    ) -> Result<Outcome<AccountInquiryResponse>, ServiceError> {
        self.store.touch_terminal(&caller.terminal, &caller.keys.btid, now).await?;
        let respond = |status, items| AccountInquiryResponse {
            request_id: request.request_id,
            status,
            description: None,
            items,
            billing_info: None,
        };
        if !matches!(request.inquiry_type, InquiryType::PurchaseItem | InquiryType::Purchase) {
            return Ok(Outcome { response: respond(StatusCode::RequestUnavailable, Vec::new()), intents: Vec::new() });
        }
        let offers: BTreeMap<String, PurchaseData> =
            self.store.purchase_data().await?.into_iter().map(|o| (o.id.clone(), o)).collect();
        let items = self
            .store
            .purchases(&caller.terminal)
            .await?
            .into_iter()
            .filter(|p| request.items.is_empty() || request.items.iter().any(|r| r.global_id_ref == p.item))
            .map(|p| AccountItem {
                item: PurchaseItemRef::new(&p.item, Some(&p.purchase_data)),
                status: Some(if active(&p, now) { StatusCode::Success } else { StatusCode::NoSubscription }),
                valid_from: utc(p.window.from),
                valid_until: utc(p.window.until),
                price: offers.get(&p.purchase_data).map(|o| o.price.clone()),
            })
            .collect();
        Ok(Outcome { response: respond(StatusCode::Success, items), intents: Vec::new() })
    }

    // -----------------------------------------------------------------------------------------
    // The 3GPP MBMS key-management interface (33.246 Annex G, 26.346 §11)

    /// **MBMS register** (`requesttype=register`): per MBMS User Service ID (GlobalPurchaseItemID
    /// ‖ PurchaseDataID, or the item ID alone), 200 when the terminal holds an active purchase of
    /// the item, 403 otherwise. With any 200 the terminal is registered at the source address on
    /// the MBMS interface (pushes to UDP 2269, `profile: P-8`) and every key of the accepted
    /// services is queued for push: the answer carries status codes only (33.246 Annex H).
    ///
    /// # Errors
    /// [`ServiceError`] when the store fails.
    pub async fn mbms_register(
        &self,
        caller: &Caller,
        request: &RegisterRequest,
        source: SocketAddr,
        now: u64,
    ) -> Result<Outcome<RegisterResponse>, ServiceError> {
        self.store.touch_terminal(&caller.terminal, &caller.keys.btid, now).await?;
        let view = self.view().await?;
        let purchases = self.store.purchases(&caller.terminal).await?;
        let mut accepted = BTreeSet::new();
        let mut responses = Vec::with_capacity(request.service_ids.len());
        for sid in &request.service_ids {
            let item = view.item_of_service_id(sid);
            let ok = item.as_ref().is_some_and(|i| purchases.iter().any(|p| &p.item == i && active(p, now)));
            if ok && let Some(i) = item {
                accepted.insert(i);
            }
            responses.push(ServiceStatus { service_id: sid.clone(), response_code: ResponseCode::new(code(ok)) });
        }
        let mut intents = Vec::new();
        if !accepted.is_empty() {
            let to = self.register(&caller.terminal, source, Interface::Mbms, now).await?;
            intents.push(DeliveryIntent::Registered { terminal: caller.terminal.clone(), to });
            let chosen: Vec<Purchase> =
                purchases.into_iter().filter(|p| accepted.contains(&p.item) && active(p, now)).collect();
            for (id, grant) in entitlements(&view, &chosen, now) {
                intents.push(self.push(&view, &caller.terminal, id, &grant, to)?);
            }
        }
        Ok(Outcome { response: RegisterResponse { responses }, intents })
    }

    /// **MBMS deregister** (`requesttype=deregister`): 200 per known service, 403 otherwise; with
    /// any 200 the registration ends, ended purchases are purged and pushes stop.
    ///
    /// # Errors
    /// [`ServiceError`] when the store fails.
    pub async fn mbms_deregister(
        &self,
        caller: &Caller,
        request: &DeregisterRequest,
        now: u64,
    ) -> Result<Outcome<RegisterResponse>, ServiceError> {
        self.store.touch_terminal(&caller.terminal, &caller.keys.btid, now).await?;
        let view = self.view().await?;
        let responses: Vec<ServiceStatus> = request
            .service_ids
            .iter()
            .map(|sid| ServiceStatus {
                service_id: sid.clone(),
                response_code: ResponseCode::new(code(view.item_of_service_id(sid).is_some())),
            })
            .collect();
        let mut intents = Vec::new();
        if responses.iter().any(|r| r.response_code.is_success()) {
            self.end_registration(&caller.terminal, now, &mut intents).await?;
        }
        Ok(Outcome { response: RegisterResponse { responses }, intents })
    }

    /// **MBMS MSK request** (`requesttype=msk-request`): per (Key Domain ID, MSK ID), 200 and a
    /// push of the key when the terminal is registered and entitled to it (Key Number 0: the
    /// group's current key), 403 when it is not registered, not entitled, or the key does not
    /// exist, 400 for Key Group 0. The MSKs follow as pushed MIKEY messages (33.246 Annex H note 5).
    ///
    /// # Errors
    /// [`ServiceError`] when the store fails.
    pub async fn mbms_msk_request(
        &self,
        caller: &Caller,
        request: &MskRequest,
        source: SocketAddr,
        now: u64,
    ) -> Result<Outcome<MskResponse>, ServiceError> {
        let terminal = self.store.touch_terminal(&caller.terminal, &caller.keys.btid, now).await?;
        let view = self.view().await?;
        let purchases = self.store.purchases(&caller.terminal).await?;
        let entitled = entitlements(&view, &purchases, now);
        let mut responses = Vec::with_capacity(request.msks.len());
        let mut intents = Vec::new();
        let mut queued = BTreeSet::new();
        for m in &request.msks {
            let status = if m.key_group() == 0 {
                400
            } else if terminal.registration.is_none() {
                403
            } else {
                let key = BcastKeyId { key_domain_id: m.key_domain_id, sek_pek_id: m.msk_id };
                match resolve_key(&view, key, now).ok().and_then(|id| entitled.get(&id).map(|g| (id, g))) {
                    Some((id, grant)) => {
                        if queued.insert(id) {
                            let to = push_address(&terminal, source, Interface::Mbms);
                            intents.push(self.push(&view, &caller.terminal, id, grant, to)?);
                        }
                        200
                    }
                    None => 403,
                }
            };
            responses.push(MskStatus { msk: *m, response_code: ResponseCode::new(status) });
        }
        Ok(Outcome { response: MskResponse { responses }, intents })
    }
}

/// The Key Domain ID of a key's group (every group the view holds has one; the all-zero value is
/// never reached for a key that came from the view).
fn key_domain_of(view: &View, id: SekPekId) -> KeyDomainId {
    view.groups.get(&id.key_group).map_or(KeyDomainId([0; 3]), |(d, _)| *d)
}

/// 200 or 403.
fn code(ok: bool) -> u16 {
    if ok { 200 } else { 403 }
}

/// What one accepted Token Purchase item gives: the key, its grant, the tokens, and the purchase
/// to record (none when a running purchase of the item stays).
struct TokenGrant {
    stored: StoredKey,
    grant: Grant,
    tokens: u32,
    purchase: Option<Purchase>,
}

/// The outcome of one Service Request item.
enum Buy {
    New(Purchase),
    Already(Purchase),
}

/// The live key a key reference names at `now` (Key Number 0: the group's current key), or
/// [`StatusCode::WrongKeyInfo`].
fn resolve_key(view: &View, key: BcastKeyId, now: u64) -> Result<SekPekId, StatusCode> {
    let key_domain = KeyDomainId(key.key_domain_id);
    let id = SekPekId::from_bytes(key.sek_pek_id);
    if !view.group_in_domain(key_domain, id.key_group) {
        return Err(StatusCode::WrongKeyInfo);
    }
    let group = view.catalogue.groups.get(&id.key_group).ok_or(StatusCode::WrongKeyInfo)?;
    let entry = if id.key_number == 0 { group.current(now) } else { group.live_key(id, now) };
    entry.map(|e| e.id).ok_or(StatusCode::WrongKeyInfo)
}
