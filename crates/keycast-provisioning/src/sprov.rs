//! OMA BCAST service provisioning messages ([`CONTENT_TYPE`]), as Keycast defines them in its
//! own schema `crates/keycast-provisioning/schemas/keycast-sprov.xsd` (namespace [`NAMESPACE`]).
//!
//! **The element and status-code details are a Keycast choice** [chosen; profile P-8]: the OMA
//! text was not available, so the schema follows what is confirmed (facts-ietf-oma.md §10.1) and
//! the MBBMS mirror (§10.2). The status codes are the MBBMS global codes 301..329 renumbered
//! 1..29 in the same order, 0 = success, and 131 = insufficient charge ([`StatusCode`]).
//!
//! | request | response | what |
//! |---|---|---|
//! | [`ServiceRequest`] | [`ServiceResponse`] | subscribe to purchase items; `registrationRequired` |
//! | [`TokenPurchaseRequest`] | [`TokenPurchaseResponse`] | buy tokens for a key (Key Domain ID ‖ SEK/PEK ID) |
//! | [`UnsubscribeRequest`] | [`UnsubscribeResponse`] | end subscriptions ([`ALL_SERVICES`] = all) |
//! | [`RegistrationRequest`] | [`RegistrationResponse`] | register for LTKM push (MBMS registration) |
//! | [`DeregistrationRequest`] | [`DeregistrationResponse`] | deregister |
//! | [`LtkmRequest`] (`LTKMRequest`) | [`LtkmResponse`] (`LTKMResponse`) | ask again for missed LTKMs |
//! | [`AccountInquiry`] | [`AccountInquiryResponse`] | what the account holds |
//!
//! Every request carries a `requestID` (echoed in the response) and optionally the client's
//! identity ([`ClientIdentity`]); every response a global status code, an optional description
//! and per-item status codes. Responses that deliver keys carry LTKMs (base64 MIKEY messages) in a
//! `SmartcardProfile` part. [`SprovMessage::from_xml`] decodes any of them by its root element.
//!
//! Decoding checks the namespace of every element it reads, ignores unknown elements and
//! attributes, refuses a DOCTYPE and bodies over [`MAX_XML_LEN`], and names the element in its
//! errors ([`XmlError`]). Encoding checks every value (so that it survives the trip unchanged
//! and the document validates against the schema) and returns an error rather than write an
//! invalid document.
//!
//! ```
//! use keycast_provisioning::sprov::{PurchaseItemRef, RegistrationRequest, SprovMessage};
//!
//! let request = RegistrationRequest {
//!     request_id: 7,
//!     client: None,
//!     items: vec![PurchaseItemRef::new("urn:bsm:item:news", Some("urn:bsm:pd:1"))],
//! };
//! let xml = request.to_xml().unwrap();
//! assert_eq!(request.items[0].mbms_user_service_id(), "urn:bsm:item:newsurn:bsm:pd:1");
//! assert_eq!(SprovMessage::from_xml(xml.as_bytes()), Ok(SprovMessage::RegistrationRequest(request)));
//! ```

use crate::time::UtcTime;
use crate::xml::{
    self, DECL, Element, b64, b64_any, b64_fixed, check_token, esc, parse_bool, parse_time, parse_unsigned,
};

pub use crate::xml::XmlError;

/// Content type of every message (IANA).
pub const CONTENT_TYPE: &str = "application/vnd.oma.bcast.sprov+xml";
/// Namespace of Keycast's schema \[chosen\].
pub const NAMESPACE: &str = "urn:keycast:oma-bcast:sprov:1";
/// `globalIDRef` value meaning "every purchase item" in an [`UnsubscribeRequest`].
pub const ALL_SERVICES: &str = "urn:allServices";
/// Largest body accepted and written (64 KiB).
pub const MAX_XML_LEN: usize = 64 * 1024;
/// Longest string value (ID, identity, description), in octets.
pub const MAX_VALUE_LEN: usize = 2048;

const NS: &str = NAMESPACE;

/// Reads a required status-code attribute: `status_attr!(el, "Element", "attribute")`.
macro_rules! status_attr {
    ($el:expr, $owner:literal, $attr:literal) => {
        match $el.attr($attr) {
            Some(v) => status_value(concat!($owner, "@", $attr), v),
            None => Err(XmlError::MissingAttribute { element: $owner, attribute: $attr }),
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Status codes

macro_rules! status_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        /// A global or per-item status code \[chosen: MBBMS codes renumbered, see the module docs\].
        ///
        /// Unknown values are kept in [`StatusCode::Unknown`] so that nothing is lost on decode.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum StatusCode {
            $($(#[$doc])* $name,)*
            /// A value this version does not know.
            Unknown(u16),
        }

        impl From<u16> for StatusCode {
            fn from(v: u16) -> Self {
                match v {
                    $($value => StatusCode::$name,)*
                    other => StatusCode::Unknown(other),
                }
            }
        }

        impl From<StatusCode> for u16 {
            fn from(c: StatusCode) -> u16 {
                match c {
                    $(StatusCode::$name => $value,)*
                    StatusCode::Unknown(v) => v,
                }
            }
        }
    };
}

status_codes! {
    /// 0: success.
    Success = 0,
    /// 1 (MBBMS 301): device authentication failed.
    DeviceAuthenticationFailed = 1,
    /// 2 (302): user authentication failed.
    UserAuthenticationFailed = 2,
    /// 3 (303): purchase item unknown.
    PurchaseItemUnknown = 3,
    /// 4 (304): device authorization failed.
    DeviceAuthorizationFailed = 4,
    /// 5 (305): user authorization failed.
    UserAuthorizationFailed = 5,
    /// 6 (306): device (service) not registered.
    DeviceNotRegistered = 6,
    /// 7 (307): server error.
    ServerError = 7,
    /// 8 (308): malformed message.
    MalformedMessage = 8,
    /// 9 (309): charging error.
    ChargingError = 9,
    /// 10 (310): no subscription.
    NoSubscription = 10,
    /// 11 (311): operation not permitted.
    OperationNotPermitted = 11,
    /// 12 (312): unsupported version.
    UnsupportedVersion = 12,
    /// 13 (313): illegal device.
    IllegalDevice = 13,
    /// 14 (314): area not allowed.
    AreaNotAllowed = 14,
    /// 15 (315): request unavailable.
    RequestUnavailable = 15,
    /// 16 (316): request already done.
    RequestAlreadyDone = 16,
    /// 17 (317): element does not exist.
    ElementDoesNotExist = 17,
    /// 18 (318): undefined error.
    UndefinedError = 18,
    /// 19 (319): delayed.
    Delayed = 19,
    /// 20 (320): (key) generation failure.
    GenerationFailure = 20,
    /// 21 (321): invalid information.
    InvalidInformation = 21,
    /// 22 (322): invalid request.
    InvalidRequest = 22,
    /// 23 (323): wrong destination.
    WrongDestination = 23,
    /// 24 (324): wrong key info.
    WrongKeyInfo = 24,
    /// 25 (325): provider unknown.
    ProviderUnknown = 25,
    /// 26 (326): BSM ID unknown.
    BsmIdUnknown = 26,
    /// 27 (327): already in use.
    AlreadyInUse = 27,
    /// 28 (328): no matching fragment.
    NoMatchingFragment = 28,
    /// 29 (329): already subscribed.
    AlreadySubscribed = 29,
    /// 131 (MBBMS 431): insufficient charge.
    InsufficientCharge = 131,
}

impl StatusCode {
    /// The numeric value written in the XML.
    #[must_use]
    pub fn value(self) -> u16 {
        self.into()
    }

    /// True for [`StatusCode::Success`].
    #[must_use]
    pub fn is_success(self) -> bool {
        self == StatusCode::Success
    }
}

// ---------------------------------------------------------------------------------------------
// Shared parts

/// Who sends a request (`ClientID`): a user identity of a given kind, or a B-TID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientIdentity {
    /// `UserID type="IMSI"`: 6 to 15 decimal digits.
    Imsi(String),
    /// `UserID type="URI"`.
    Uri(String),
    /// `UserID type="IMPI"`.
    Impi(String),
    /// `BTID`: the B-TID of a GBA run.
    Btid(String),
}

impl ClientIdentity {
    fn check(&self) -> Result<(), XmlError> {
        match self {
            ClientIdentity::Imsi(v) => {
                if !(6..=15).contains(&v.len()) || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(XmlError::InvalidValue { element: "UserID", reason: "IMSI must be 6 to 15 digits" });
                }
                Ok(())
            }
            ClientIdentity::Uri(v) | ClientIdentity::Impi(v) => check_token("UserID", v, MAX_VALUE_LEN),
            ClientIdentity::Btid(v) => check_token("BTID", v, MAX_VALUE_LEN),
        }
    }

    fn write(&self, w: &mut Writer) -> Result<(), XmlError> {
        self.check()?;
        w.open("ClientID", &[]);
        match self {
            ClientIdentity::Imsi(v) => w.text("UserID", &[("type", "IMSI".into())], v),
            ClientIdentity::Uri(v) => w.text("UserID", &[("type", "URI".into())], v),
            ClientIdentity::Impi(v) => w.text("UserID", &[("type", "IMPI".into())], v),
            ClientIdentity::Btid(v) => w.text("BTID", &[], v),
        }
        w.close("ClientID");
        Ok(())
    }

    fn read(el: &Element) -> Result<Self, XmlError> {
        let user = el.opt(NS, "UserID")?;
        let btid = el.opt(NS, "BTID")?;
        let id = match (user, btid) {
            (Some(u), None) => {
                let v = u.text("UserID")?.to_owned();
                match u.req_attr("UserID", "type")? {
                    "IMSI" => ClientIdentity::Imsi(v),
                    "URI" => ClientIdentity::Uri(v),
                    "IMPI" => ClientIdentity::Impi(v),
                    _ => {
                        return Err(XmlError::InvalidValue { element: "UserID@type", reason: "not IMSI, URI or IMPI" });
                    }
                }
            }
            (None, Some(b)) => ClientIdentity::Btid(b.text("BTID")?.to_owned()),
            (None, None) => return Err(XmlError::Missing { element: "UserID", parent: "ClientID" }),
            (Some(_), Some(_)) => {
                return Err(XmlError::InvalidValue { element: "ClientID", reason: "both UserID and BTID" });
            }
        };
        id.check()?;
        Ok(id)
    }
}

/// A purchase item reference: `globalIDRef` (the Service Guide GlobalPurchaseItemID) and an
/// optional `purchaseDataIDRef`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PurchaseItemRef {
    /// `globalIDRef`.
    pub global_id_ref: String,
    /// `purchaseDataIDRef`.
    pub purchase_data_id_ref: Option<String>,
}

impl PurchaseItemRef {
    /// A reference from string slices.
    #[must_use]
    pub fn new(global_id_ref: &str, purchase_data_id_ref: Option<&str>) -> Self {
        PurchaseItemRef {
            global_id_ref: global_id_ref.to_owned(),
            purchase_data_id_ref: purchase_data_id_ref.map(str::to_owned),
        }
    }

    /// The MBMS User Service ID this names: GlobalPurchaseItemID ‖ PurchaseDataID (profile P-1).
    #[must_use]
    pub fn mbms_user_service_id(&self) -> String {
        let mut s = self.global_id_ref.clone();
        if let Some(p) = &self.purchase_data_id_ref {
            s.push_str(p);
        }
        s
    }

    fn attrs(&self) -> Result<Vec<(&'static str, String)>, XmlError> {
        check_token("PurchaseItem@globalIDRef", &self.global_id_ref, MAX_VALUE_LEN)?;
        let mut a = vec![("globalIDRef", self.global_id_ref.clone())];
        if let Some(p) = &self.purchase_data_id_ref {
            check_token("PurchaseItem@purchaseDataIDRef", p, MAX_VALUE_LEN)?;
            a.push(("purchaseDataIDRef", p.clone()));
        }
        Ok(a)
    }

    fn read(el: &Element) -> Result<Self, XmlError> {
        let g = el.req_attr("PurchaseItem", "globalIDRef")?;
        check_token("PurchaseItem@globalIDRef", g, MAX_VALUE_LEN)?;
        let p = el.attr("purchaseDataIDRef");
        if let Some(p) = p {
            check_token("PurchaseItem@purchaseDataIDRef", p, MAX_VALUE_LEN)?;
        }
        Ok(PurchaseItemRef::new(g, p))
    }
}

/// A price: a decimal amount (up to 15 integer and 6 fraction digits) in an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Price {
    /// The amount as written, e.g. `4.99`.
    pub amount: String,
    /// The currency, e.g. `EUR`.
    pub currency: String,
}

impl Price {
    fn check(&self) -> Result<(), XmlError> {
        let (int, frac) = match self.amount.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (self.amount.as_str(), None),
        };
        let digits = |s: &str, max| !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(int, 15) || frac.is_some_and(|f| !digits(f, 6)) {
            return Err(XmlError::InvalidValue { element: "Price", reason: "not a decimal amount" });
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(XmlError::InvalidValue { element: "Price@currency", reason: "not an ISO 4217 code" });
        }
        Ok(())
    }

    fn write(&self, w: &mut Writer) -> Result<(), XmlError> {
        self.check()?;
        w.text("Price", &[("currency", self.currency.clone())], &self.amount);
        Ok(())
    }

    fn read_opt(parent: &Element) -> Result<Option<Self>, XmlError> {
        let Some(el) = parent.opt(NS, "Price")? else { return Ok(None) };
        let price =
            Price { amount: el.text("Price")?.to_owned(), currency: el.req_attr("Price", "currency")?.to_owned() };
        price.check()?;
        Ok(Some(price))
    }
}

/// A purchase item as asked for in a [`ServiceRequest`], with the price the terminal saw.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PurchaseRequestItem {
    /// The item.
    pub item: PurchaseItemRef,
    /// The price the terminal agreed to, if any.
    pub price: Option<Price>,
}

/// A per-item status: the item and its `itemwiseStatusCode`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ItemStatus {
    /// The item.
    pub item: PurchaseItemRef,
    /// Its status.
    pub status: StatusCode,
}

impl ItemStatus {
    fn write(&self, w: &mut Writer) -> Result<(), XmlError> {
        let mut a = self.item.attrs()?;
        a.push(("itemwiseStatusCode", self.status.value().to_string()));
        w.empty("PurchaseItem", &a);
        Ok(())
    }

    fn read(el: &Element) -> Result<Self, XmlError> {
        Ok(ItemStatus {
            item: PurchaseItemRef::read(el)?,
            status: status_attr!(el, "PurchaseItem", "itemwiseStatusCode")?,
        })
    }
}

/// An OMA BCAST key name: Key Domain ID ‖ SEK/PEK ID (7 octets; profile P-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BcastKeyId {
    /// Key Domain ID, 3 octets.
    pub key_domain_id: [u8; 3],
    /// SEK/PEK ID (= MBMS MSK ID), 4 octets: Key Group ‖ Key Number.
    pub sek_pek_id: [u8; 4],
}

impl BcastKeyId {
    /// The 7 octets Key Domain ID ‖ SEK/PEK ID.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 7] {
        let mut b = [0; 7];
        b[..3].copy_from_slice(&self.key_domain_id);
        b[3..].copy_from_slice(&self.sek_pek_id);
        b
    }

    /// Splits 7 octets into Key Domain ID and SEK/PEK ID.
    #[must_use]
    pub fn from_bytes(b: [u8; 7]) -> Self {
        BcastKeyId { key_domain_id: [b[0], b[1], b[2]], sek_pek_id: [b[3], b[4], b[5], b[6]] }
    }

    fn split_attrs(&self) -> [(&'static str, String); 2] {
        [("keyDomainID", b64(&self.key_domain_id)), ("sekPekID", b64(&self.sek_pek_id))]
    }

    fn read_split(el: &Element, element: &'static str) -> Result<Self, XmlError> {
        Ok(BcastKeyId {
            key_domain_id: b64_fixed("Key@keyDomainID", el.req_attr(element, "keyDomainID")?)?,
            sek_pek_id: b64_fixed("Key@sekPekID", el.req_attr(element, "sekPekID")?)?,
        })
    }

    fn read_joined(el: &Element) -> Result<Self, XmlError> {
        let v = b64_fixed::<7>("TokenPurchaseItem@keyID", el.req_attr("TokenPurchaseItem", "keyID")?)?;
        Ok(BcastKeyId::from_bytes(v))
    }
}

/// One key of a [`TokenPurchaseRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenPurchaseItem {
    /// The key the tokens are for (`keyID`, 7 octets).
    pub key_id: BcastKeyId,
    /// The purchase item the tokens belong to, if the terminal knows it.
    pub global_id_ref: Option<String>,
    /// How many tokens.
    pub number_of_tokens: Option<u32>,
    /// The price the terminal agreed to.
    pub price: Option<Price>,
}

/// The answer for one key of a [`TokenPurchaseResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenStatus {
    /// The key.
    pub key_id: BcastKeyId,
    /// Its status.
    pub status: StatusCode,
    /// How many tokens were granted.
    pub number_of_tokens: Option<u32>,
}

/// One key of an [`LtkmRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LtkmKeyRequest {
    /// The key (`keyDomainID`, `sekPekID`; Key Number 0 asks for the current key).
    pub key: BcastKeyId,
    /// Start of the validity wanted.
    pub valid_from: Option<UtcTime>,
    /// End of the validity wanted.
    pub valid_until: Option<UtcTime>,
}

/// The answer for one key of an [`LtkmResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyStatus {
    /// The key.
    pub key: BcastKeyId,
    /// Its status.
    pub status: StatusCode,
}

/// What an [`AccountInquiry`] asks about (MBBMS inquiry types 1..5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InquiryType {
    /// The purchase items subscribed to.
    PurchaseItem,
    /// Service Guide related information.
    ServiceGuide,
    /// Billing information.
    BillingInfo,
    /// Purchases made.
    Purchase,
    /// Purchase fragments.
    PurchaseFragment,
}

impl InquiryType {
    const ALL: [(InquiryType, &'static str); 5] = [
        (InquiryType::PurchaseItem, "PurchaseItem"),
        (InquiryType::ServiceGuide, "ServiceGuide"),
        (InquiryType::BillingInfo, "BillingInfo"),
        (InquiryType::Purchase, "Purchase"),
        (InquiryType::PurchaseFragment, "PurchaseFragment"),
    ];

    /// The attribute value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(t, _)| *t == self).map_or("", |(_, s)| s)
    }

    fn parse(s: &str) -> Result<Self, XmlError> {
        Self::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(t, _)| *t)
            .ok_or(XmlError::InvalidValue { element: "AccountInquiry@inquiryType", reason: "unknown inquiry type" })
    }
}

/// One purchase item of an [`AccountInquiryResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountItem {
    /// The item.
    pub item: PurchaseItemRef,
    /// Its status, if the BSM gives one.
    pub status: Option<StatusCode>,
    /// Start of the subscription.
    pub valid_from: Option<UtcTime>,
    /// End of the subscription.
    pub valid_until: Option<UtcTime>,
    /// Its price.
    pub price: Option<Price>,
}

// ---------------------------------------------------------------------------------------------
// Messages

/// Declares a message struct that starts with the request header (`requestID`, `ClientID`) or
/// the response header (`requestID`, `globalStatusCode`, `Description`), and implements [`Head`]
/// for it, so that the header is written and read in one place.
macro_rules! message {
    (request $(#[$doc:meta])* $ty:ident = $root:literal { $($fields:tt)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $ty {
            /// `requestID`.
            pub request_id: u32,
            /// `ClientID`.
            pub client: Option<ClientIdentity>,
            $($fields)*
        }

        impl Head for $ty {
            const ROOT: &'static str = $root;
            type Fields = (u32, Option<ClientIdentity>);
            fn head_attrs(&self) -> Vec<(&'static str, String)> {
                vec![("requestID", self.request_id.to_string())]
            }
            fn write_head(&self, w: &mut Writer) -> Result<(), XmlError> {
                self.client.as_ref().map_or(Ok(()), |c| c.write(w))
            }
            fn read_head(root: &Element) -> Result<Self::Fields, XmlError> {
                Ok((request_id(root, $root)?, root.opt(NS, "ClientID")?.map(ClientIdentity::read).transpose()?))
            }
        }
    };
    (response $(#[$doc:meta])* $ty:ident = $root:literal { $($fields:tt)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $ty {
            /// `requestID` of the request answered.
            pub request_id: u32,
            /// `globalStatusCode`.
            pub status: StatusCode,
            /// `Description`.
            pub description: Option<String>,
            $($fields)*
        }

        impl Head for $ty {
            const ROOT: &'static str = $root;
            type Fields = (u32, StatusCode, Option<String>);
            fn head_attrs(&self) -> Vec<(&'static str, String)> {
                vec![("requestID", self.request_id.to_string()), ("globalStatusCode", self.status.value().to_string())]
            }
            fn write_head(&self, w: &mut Writer) -> Result<(), XmlError> {
                write_description(w, &self.description)
            }
            fn read_head(root: &Element) -> Result<Self::Fields, XmlError> {
                Ok((
                    request_id(root, $root)?,
                    status_attr!(root, $root, "globalStatusCode")?,
                    read_text_opt(root, "Description")?,
                ))
            }
        }
    };
}

message! { request
    /// `ServiceRequest`: subscribe to one or more purchase items.
    ServiceRequest = "ServiceRequest" {
        /// `PurchaseItem` (1..n).
        pub items: Vec<PurchaseRequestItem>,
    }
}

message! { response
    /// `ServiceResponse`.
    ServiceResponse = "ServiceResponse" {
        /// `registrationRequired`: the terminal must send a [`RegistrationRequest`]; when false the
        /// BSM registered it implicitly.
        pub registration_required: bool,
        /// Per-item status.
        pub items: Vec<ItemStatus>,
        /// LTKMs (`SmartcardProfile/LTKM`), each one MIKEY message.
        pub ltkms: Vec<Vec<u8>>,
    }
}

message! { request
    /// `TokenPurchaseRequest`: buy tokens for keys.
    TokenPurchaseRequest = "TokenPurchaseRequest" {
        /// `TokenPurchaseItem` (1..n).
        pub items: Vec<TokenPurchaseItem>,
    }
}

message! { response
    /// `TokenPurchaseResponse`.
    TokenPurchaseResponse = "TokenPurchaseResponse" {
        /// Per-key status.
        pub items: Vec<TokenStatus>,
        /// LTKMs carrying the tokens.
        pub ltkms: Vec<Vec<u8>>,
    }
}

message! { request
    /// `UnsubscribeRequest`: end subscriptions ([`ALL_SERVICES`] names every item).
    UnsubscribeRequest = "UnsubscribeRequest" {
        /// `PurchaseItem` (1..n).
        pub items: Vec<PurchaseItemRef>,
    }
}

message! { response
    /// `UnsubscribeResponse`.
    UnsubscribeResponse = "UnsubscribeResponse" {
        /// Per-item status.
        pub items: Vec<ItemStatus>,
    }
}

message! { request
    /// `RegistrationRequest`: register for LTKM push (the MBMS registration's equivalent).
    RegistrationRequest = "RegistrationRequest" {
        /// `PurchaseItem` (1..n); each names an MBMS User Service.
        pub items: Vec<PurchaseItemRef>,
    }
}

message! { response
    /// `RegistrationResponse`.
    RegistrationResponse = "RegistrationResponse" {
        /// Per-item status.
        pub items: Vec<ItemStatus>,
        /// LTKMs sent at once.
        pub ltkms: Vec<Vec<u8>>,
    }
}

message! { request
    /// `DeregistrationRequest`.
    DeregistrationRequest = "DeregistrationRequest" {
        /// `PurchaseItem` (1..n).
        pub items: Vec<PurchaseItemRef>,
    }
}

message! { response
    /// `DeregistrationResponse`.
    DeregistrationResponse = "DeregistrationResponse" {
        /// Per-item status.
        pub items: Vec<ItemStatus>,
    }
}

message! { request
    /// `LTKMRequest`: ask again for missed LTKMs, per key.
    LtkmRequest = "LTKMRequest" {
        /// `Key` (1..n).
        pub keys: Vec<LtkmKeyRequest>,
    }
}

message! { response
    /// `LTKMResponse`.
    LtkmResponse = "LTKMResponse" {
        /// Per-key status.
        pub keys: Vec<KeyStatus>,
        /// The LTKMs.
        pub ltkms: Vec<Vec<u8>>,
    }
}

message! { request
    /// `AccountInquiry`.
    AccountInquiry = "AccountInquiry" {
        /// `inquiryType`.
        pub inquiry_type: InquiryType,
        /// `PurchaseItem` (0..n) narrowing the inquiry.
        pub items: Vec<PurchaseItemRef>,
    }
}

message! { response
    /// `AccountInquiryResponse`.
    AccountInquiryResponse = "AccountInquiryResponse" {
        /// The purchase items.
        pub items: Vec<AccountItem>,
        /// `BillingInfo` text.
        pub billing_info: Option<String>,
    }
}

// ---------------------------------------------------------------------------------------------
// Per-message bodies

/// The header every message starts with, implemented by [`message!`]: written by [`encode`]
/// before the body, read by each [`Body::read`] where the header fields belong.
trait Head: Sized {
    const ROOT: &'static str;
    /// The header's fields, as [`Head::read_head`] returns them.
    type Fields;
    /// The header's root attributes (after `xmlns`).
    fn head_attrs(&self) -> Vec<(&'static str, String)>;
    /// The header's child elements (`ClientID` or `Description`), written first.
    fn write_head(&self, w: &mut Writer) -> Result<(), XmlError>;
    fn read_head(root: &Element) -> Result<Self::Fields, XmlError>;
}

/// What each message type adds to its header for the shared encoder and decoder.
trait Body: Head {
    /// Checks made before anything is written.
    fn check(&self) -> Result<(), XmlError> {
        Ok(())
    }
    /// Root attributes after the header's.
    fn root_attrs(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// The child elements after the header's.
    fn write_body(&self, w: &mut Writer) -> Result<(), XmlError>;
    fn read(root: &Element) -> Result<Self, XmlError>;
}

fn request_id(root: &Element, element: &'static str) -> Result<u32, XmlError> {
    let v = root.req_attr(element, "requestID")?;
    let n = parse_unsigned("requestID", v, u64::from(u32::MAX))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX)) // parse_unsigned bounded it by u32::MAX
}

fn status_value(element: &'static str, v: &str) -> Result<StatusCode, XmlError> {
    let n = parse_unsigned(element, v, u64::from(u16::MAX))?;
    Ok(StatusCode::from(u16::try_from(n).unwrap_or(u16::MAX))) // bounded by u16::MAX above
}

fn write_description(w: &mut Writer, d: &Option<String>) -> Result<(), XmlError> {
    if let Some(d) = d {
        check_token("Description", d, MAX_VALUE_LEN)?;
        w.text("Description", &[], d);
    }
    Ok(())
}

fn read_text_opt(root: &Element, name: &'static str) -> Result<Option<String>, XmlError> {
    let Some(el) = root.opt(NS, name)? else { return Ok(None) };
    let t = el.text(name)?;
    check_token(name, t, MAX_VALUE_LEN)?;
    Ok(Some(t.to_owned()))
}

fn write_ltkms(w: &mut Writer, ltkms: &[Vec<u8>]) -> Result<(), XmlError> {
    if ltkms.is_empty() {
        return Ok(());
    }
    w.open("SmartcardProfile", &[]);
    for l in ltkms {
        if l.is_empty() {
            return Err(XmlError::InvalidValue { element: "LTKM", reason: "empty" });
        }
        w.text("LTKM", &[], &b64(l));
    }
    w.close("SmartcardProfile");
    Ok(())
}

fn read_ltkms(root: &Element) -> Result<Vec<Vec<u8>>, XmlError> {
    let Some(sp) = root.opt(NS, "SmartcardProfile")? else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for l in sp.many(NS, "LTKM", "SmartcardProfile")? {
        let v = b64_any("LTKM", l.text("LTKM")?)?;
        if v.is_empty() {
            return Err(XmlError::InvalidValue { element: "LTKM", reason: "empty" });
        }
        out.push(v);
    }
    Ok(out)
}

fn non_empty<T>(list: &[T], element: &'static str, parent: &'static str) -> Result<(), XmlError> {
    if list.is_empty() {
        return Err(XmlError::Missing { element, parent });
    }
    Ok(())
}

fn write_item_refs(w: &mut Writer, items: &[PurchaseItemRef]) -> Result<(), XmlError> {
    for i in items {
        w.empty("PurchaseItem", &i.attrs()?);
    }
    Ok(())
}

fn write_item_statuses(w: &mut Writer, items: &[ItemStatus]) -> Result<(), XmlError> {
    for i in items {
        i.write(w)?;
    }
    Ok(())
}

fn read_item_statuses(root: &Element) -> Result<Vec<ItemStatus>, XmlError> {
    root.all(NS, "PurchaseItem").map(ItemStatus::read).collect()
}

/// Writes `name` with `attrs`, holding the price if there is one.
fn write_priced(
    w: &mut Writer,
    name: &str,
    attrs: &[(&'static str, String)],
    price: &Option<Price>,
) -> Result<(), XmlError> {
    match price {
        None => w.empty(name, attrs),
        Some(p) => {
            w.open(name, attrs);
            p.write(w)?;
            w.close(name);
        }
    }
    Ok(())
}

fn time_attr(el: &Element, element: &'static str, attr: &str) -> Result<Option<UtcTime>, XmlError> {
    el.attr(attr).map(|v| parse_time(element, v)).transpose()
}

fn opt_u32(el: &Element, element: &'static str, attr: &str) -> Result<Option<u32>, XmlError> {
    el.attr(attr)
        .map(|v| parse_unsigned(element, v, u64::from(u32::MAX)).map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
        .transpose()
}

impl Body for ServiceRequest {
    fn check(&self) -> Result<(), XmlError> {
        non_empty(&self.items, "PurchaseItem", Self::ROOT)
    }
    fn write_body(&self, w: &mut Writer) -> Result<(), XmlError> {
        for i in &self.items {
            write_priced(w, "PurchaseItem", &i.item.attrs()?, &i.price)?;
        }
        Ok(())
    }
    fn read(root: &Element) -> Result<Self, XmlError> {
        let mut items = Vec::new();
        for e in root.many(NS, "PurchaseItem", Self::ROOT)? {
            items.push(PurchaseRequestItem { item: PurchaseItemRef::read(e)?, price: Price::read_opt(e)? });
        }
        let (request_id, client) = Self::read_head(root)?;
        Ok(ServiceRequest { request_id, client, items })
    }
}

impl Body for ServiceResponse {
    fn root_attrs(&self) -> Vec<(&'static str, String)> {
        if self.registration_required { vec![("registrationRequired", "true".into())] } else { Vec::new() }
    }
    fn write_body(&self, w: &mut Writer) -> Result<(), XmlError> {
        write_item_statuses(w, &self.items)?;
        write_ltkms(w, &self.ltkms)
    }
    fn read(root: &Element) -> Result<Self, XmlError> {
        let (request_id, status, description) = Self::read_head(root)?;
        Ok(ServiceResponse {
            request_id,
            status,
            description,
            registration_required: match root.attr("registrationRequired") {
                None => false,
                Some(v) => parse_bool("ServiceResponse@registrationRequired", v)?,
            },
            items: read_item_statuses(root)?,
            ltkms: read_ltkms(root)?,
        })
    }
}

impl Body for TokenPurchaseRequest {
    fn check(&self) -> Result<(), XmlError> {
        non_empty(&self.items, "TokenPurchaseItem", Self::ROOT)
    }
    fn write_body(&self, w: &mut Writer) -> Result<(), XmlError> {
        for i in &self.items {
            let mut a = vec![("keyID", b64(&i.key_id.to_bytes()))];
            if let Some(g) = &i.global_id_ref {
                check_token("TokenPurchaseItem@globalIDRef", g, MAX_VALUE_LEN)?;
                a.push(("globalIDRef", g.clone()));
            }
            if let Some(n) = i.number_of_tokens {
                a.push(("numberOfTokens", n.to_string()));
            }
            write_priced(w, "TokenPurchaseItem", &a, &i.price)?;
        }
        Ok(())
    }
    fn read(root: &Element) -> Result<Self, XmlError> {
        let mut items = Vec::new();
        for e in root.many(NS, "TokenPurchaseItem", Self::ROOT)? {
            let global_id_ref = e.attr("globalIDRef").map(str::to_owned);
            if let Some(g) = &global_id_ref {
                check_token("TokenPurchaseItem@globalIDRef", g, MAX_VALUE_LEN)?;
            }
            items.push(TokenPurchaseItem {
                key_id: BcastKeyId::read_joined(e)?,
                global_id_ref,
                number_of_tokens: opt_u32(e, "TokenPurchaseItem@numberOfTokens", "numberOfTokens")?,
                price: Price::read_opt(e)?,
            });
        }
        let (request_id, client) = Self::read_head(root)?;
        Ok(TokenPurchaseRequest { request_id, client, items })
    }
}

impl Body for TokenPurchaseResponse {
    fn write_body(&self, w: &mut Writer) -> Result<(), XmlError> {
        for i in &self.items {
            let mut a =
                vec![("keyID", b64(&i.key_id.to_bytes())), ("itemwiseStatusCode", i.status.value().to_string())];
            if let Some(n) = i.number_of_tokens {
                a.push(("numberOfTokens", n.to_string()));
            }
            w.empty("TokenPurchaseItem", &a);
        }
        write_ltkms(w, &self.ltkms)
    }
    fn read(root: &Element) -> Result<Self, XmlError> {
        let mut items = Vec::new();
        for e in root.all(NS, "TokenPurchaseItem") {
            items.push(TokenStatus {
                key_id: BcastKeyId::read_joined(e)?,
                status: status_attr!(e, "TokenPurchaseItem", "itemwiseStatusCode")?,
                number_of_tokens: opt_u32(e, "TokenPurchaseItem@numberOfTokens", "numberOfTokens")?,
            });
        }
        let (request_id, status, description) = Self::read_head(root)?;
        Ok(TokenPurchaseResponse { request_id, status, description, items, ltkms: read_ltkms(root)? })
    }
}

/// The three requests that carry a client and a list of purchase item references.
macro_rules! item_list_request {
    ($($ty:ident),*) => {$(
        impl Body for $ty {
            fn check(&self) -> Result<(), XmlError> {
                non_empty(&self.items, "PurchaseItem", Self::ROOT)
            }
            fn write_body(&self, w: &mut Writer) -> Result<(), XmlError> {
                write_item_refs(w, &self.items)
            }
            fn read(root: &Element) -> Result<Self, XmlError> {
                let items = root.many(NS, "PurchaseItem", Self::ROOT)?;
                let (request_id, client) = Self::read_head(root)?;
                let items = items.into_iter().map(PurchaseItemRef::read).collect::<Result<_, _>>()?;
                Ok($ty { request_id, client, items })
            }
        }
    )*};
}

item_list_request!(UnsubscribeRequest, RegistrationRequest, DeregistrationRequest);

/// The two responses with per-item status and no LTKMs.
macro_rules! item_status_response {
    ($($ty:ident),*) => {$(
        impl Body for $ty {
            fn write_body(&self, w: &mut Writer) -> Result<(), XmlError> {
                write_item_statuses(w, &self.items)
            }
            fn read(root: &Element) -> Result<Self, XmlError> {
                let (request_id, status, description) = Self::read_head(root)?;
                Ok($ty { request_id, status, description, items: read_item_statuses(root)? })
            }
        }
    )*};
}

item_status_response!(UnsubscribeResponse, DeregistrationResponse);

impl Body for RegistrationResponse {
    fn write_body(&self, w: &mut Writer) -> Result<(), XmlError> {
        write_item_statuses(w, &self.items)?;
        write_ltkms(w, &self.ltkms)
    }
    fn read(root: &Element) -> Result<Self, XmlError> {
        let (request_id, status, description) = Self::read_head(root)?;
        Ok(RegistrationResponse {
            request_id,
            status,
            description,
            items: read_item_statuses(root)?,
            ltkms: read_ltkms(root)?,
        })
    }
}

impl Body for LtkmRequest {
    fn check(&self) -> Result<(), XmlError> {
        non_empty(&self.keys, "Key", Self::ROOT)
    }
    fn write_body(&self, w: &mut Writer) -> Result<(), XmlError> {
        for k in &self.keys {
            let mut a = k.key.split_attrs().to_vec();
            if let Some(t) = k.valid_from {
                a.push(("validFrom", t.to_string()));
            }
            if let Some(t) = k.valid_until {
                a.push(("validUntil", t.to_string()));
            }
            w.empty("Key", &a);
        }
        Ok(())
    }
    fn read(root: &Element) -> Result<Self, XmlError> {
        let mut keys = Vec::new();
        for e in root.many(NS, "Key", Self::ROOT)? {
            keys.push(LtkmKeyRequest {
                key: BcastKeyId::read_split(e, "Key")?,
                valid_from: time_attr(e, "Key@validFrom", "validFrom")?,
                valid_until: time_attr(e, "Key@validUntil", "validUntil")?,
            });
        }
        let (request_id, client) = Self::read_head(root)?;
        Ok(LtkmRequest { request_id, client, keys })
    }
}

impl Body for LtkmResponse {
    fn write_body(&self, w: &mut Writer) -> Result<(), XmlError> {
        for k in &self.keys {
            let mut a = k.key.split_attrs().to_vec();
            a.push(("itemwiseStatusCode", k.status.value().to_string()));
            w.empty("Key", &a);
        }
        write_ltkms(w, &self.ltkms)
    }
    fn read(root: &Element) -> Result<Self, XmlError> {
        let mut keys = Vec::new();
        for e in root.all(NS, "Key") {
            keys.push(KeyStatus {
                key: BcastKeyId::read_split(e, "Key")?,
                status: status_attr!(e, "Key", "itemwiseStatusCode")?,
            });
        }
        let (request_id, status, description) = Self::read_head(root)?;
        Ok(LtkmResponse { request_id, status, description, keys, ltkms: read_ltkms(root)? })
    }
}

impl Body for AccountInquiry {
    fn root_attrs(&self) -> Vec<(&'static str, String)> {
        vec![("inquiryType", self.inquiry_type.as_str().into())]
    }
    fn write_body(&self, w: &mut Writer) -> Result<(), XmlError> {
        write_item_refs(w, &self.items)
    }
    fn read(root: &Element) -> Result<Self, XmlError> {
        let (request_id, client) = Self::read_head(root)?;
        Ok(AccountInquiry {
            request_id,
            client,
            inquiry_type: InquiryType::parse(root.req_attr(Self::ROOT, "inquiryType")?)?,
            items: root.all(NS, "PurchaseItem").map(PurchaseItemRef::read).collect::<Result<_, _>>()?,
        })
    }
}

impl Body for AccountInquiryResponse {
    fn write_body(&self, w: &mut Writer) -> Result<(), XmlError> {
        for i in &self.items {
            let mut a = i.item.attrs()?;
            if let Some(s) = i.status {
                a.push(("itemwiseStatusCode", s.value().to_string()));
            }
            if let Some(t) = i.valid_from {
                a.push(("validFrom", t.to_string()));
            }
            if let Some(t) = i.valid_until {
                a.push(("validUntil", t.to_string()));
            }
            write_priced(w, "PurchaseItem", &a, &i.price)?;
        }
        if let Some(b) = &self.billing_info {
            check_token("BillingInfo", b, MAX_VALUE_LEN)?;
            w.text("BillingInfo", &[], b);
        }
        Ok(())
    }
    fn read(root: &Element) -> Result<Self, XmlError> {
        let mut items = Vec::new();
        for e in root.all(NS, "PurchaseItem") {
            items.push(AccountItem {
                item: PurchaseItemRef::read(e)?,
                status: e
                    .attr("itemwiseStatusCode")
                    .map(|v| status_value("PurchaseItem@itemwiseStatusCode", v))
                    .transpose()?,
                valid_from: time_attr(e, "PurchaseItem@validFrom", "validFrom")?,
                valid_until: time_attr(e, "PurchaseItem@validUntil", "validUntil")?,
                price: Price::read_opt(e)?,
            });
        }
        let (request_id, status, description) = Self::read_head(root)?;
        Ok(AccountInquiryResponse {
            request_id,
            status,
            description,
            items,
            billing_info: read_text_opt(root, "BillingInfo")?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding and decoding entry points

fn encode<T: Body>(msg: &T) -> Result<String, XmlError> {
    msg.check()?;
    // 1 KiB up front: a Registration Response with one LTKM is ≈ 600 octets, and
    // growing from empty cost several reallocations per answer.
    let mut out = String::with_capacity(1024);
    out.push_str(DECL);
    let mut w = Writer { out, depth: 0 };
    let mut attrs = vec![("xmlns", NS.to_owned())];
    attrs.extend(msg.head_attrs());
    attrs.extend(msg.root_attrs());
    w.open(T::ROOT, &attrs);
    msg.write_head(&mut w)?;
    msg.write_body(&mut w)?;
    w.close(T::ROOT);
    if w.out.len() > MAX_XML_LEN {
        return Err(XmlError::TooLarge { len: w.out.len(), max: MAX_XML_LEN });
    }
    Ok(w.out)
}

fn parse_root(body: &[u8]) -> Result<Element, XmlError> {
    let root = xml::parse(body, MAX_XML_LEN)?;
    if root.is(NS, root.local_name()) {
        Ok(root)
    } else {
        Err(XmlError::WrongRoot {
            expected: "an element in urn:keycast:oma-bcast:sprov:1",
            found: root.qualified_name(),
        })
    }
}

fn decode<T: Body>(body: &[u8]) -> Result<T, XmlError> {
    let root = parse_root(body)?;
    if root.local_name() != T::ROOT {
        return Err(XmlError::WrongRoot { expected: T::ROOT, found: root.qualified_name() });
    }
    T::read(&root)
}

macro_rules! messages {
    ($($ty:ident),* $(,)?) => {
        $(
            impl $ty {
                /// The root element name.
                pub const ROOT: &'static str = <Self as Head>::ROOT;

                /// Encodes the message.
                ///
                /// # Errors
                /// [`XmlError::Missing`] for an empty list the schema needs an entry in,
                /// [`XmlError::InvalidValue`] for a value that cannot be carried unchanged, and
                /// [`XmlError::TooLarge`] past [`MAX_XML_LEN`].
                pub fn to_xml(&self) -> Result<String, XmlError> {
                    encode(self)
                }

                /// Decodes the message; the root must be this message's element in [`NAMESPACE`].
                ///
                /// # Errors
                /// See [`XmlError`].
                pub fn from_xml(body: &[u8]) -> Result<Self, XmlError> {
                    decode(body)
                }
            }

            impl From<$ty> for SprovMessage {
                fn from(m: $ty) -> Self {
                    SprovMessage::$ty(m)
                }
            }
        )*

        /// Any service provisioning message, told apart by its root element.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum SprovMessage {
            $(
                #[doc = concat!("A [`", stringify!($ty), "`].")]
                $ty($ty),
            )*
        }

        impl SprovMessage {
            /// Decodes whichever message `body` holds.
            ///
            /// # Errors
            /// [`XmlError::WrongRoot`] for a root that is no message of [`NAMESPACE`]; otherwise
            /// as the message's own `from_xml`.
            pub fn from_xml(body: &[u8]) -> Result<Self, XmlError> {
                let root = parse_root(body)?;
                $(
                    if root.local_name() == <$ty as Head>::ROOT {
                        return <$ty as Body>::read(&root).map(SprovMessage::$ty);
                    }
                )*
                Err(XmlError::WrongRoot { expected: "a Keycast OMA BCAST provisioning message", found: root.qualified_name() })
            }

            /// Encodes the message.
            ///
            /// # Errors
            /// As the message's own `to_xml`.
            pub fn to_xml(&self) -> Result<String, XmlError> {
                match self {
                    $(SprovMessage::$ty(m) => m.to_xml(),)*
                }
            }

            /// The root element name.
            #[must_use]
            pub fn root_name(&self) -> &'static str {
                match self {
                    $(SprovMessage::$ty(_) => <$ty as Head>::ROOT,)*
                }
            }
        }
    };
}

messages!(
    ServiceRequest,
    ServiceResponse,
    TokenPurchaseRequest,
    TokenPurchaseResponse,
    UnsubscribeRequest,
    UnsubscribeResponse,
    RegistrationRequest,
    RegistrationResponse,
    DeregistrationRequest,
    DeregistrationResponse,
    LtkmRequest,
    LtkmResponse,
    AccountInquiry,
    AccountInquiryResponse,
);

impl SprovMessage {
    /// True for the seven requests (sent by the terminal).
    #[must_use]
    pub fn is_request(&self) -> bool {
        !self.root_name().ends_with("Response")
    }
}

// ---------------------------------------------------------------------------------------------
// A small indenting writer

struct Writer {
    out: String,
    depth: usize,
}

impl Writer {
    fn start_tag(&mut self, name: &str, attrs: &[(&'static str, String)]) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        self.out.push('<');
        self.out.push_str(name);
        // Pushed piece by piece rather than through `write!`: the formatting machinery cost more
        // than the copying on the BSM's hot path.
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            self.out.push_str(&esc(v));
            self.out.push('"');
        }
    }

    fn open(&mut self, name: &str, attrs: &[(&'static str, String)]) {
        self.start_tag(name, attrs);
        self.out.push_str(">\n");
        self.depth += 1;
    }

    fn close(&mut self, name: &str) {
        self.depth = self.depth.saturating_sub(1);
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    fn empty(&mut self, name: &str, attrs: &[(&'static str, String)]) {
        self.start_tag(name, attrs);
        self.out.push_str("/>\n");
    }

    fn text(&mut self, name: &str, attrs: &[(&'static str, String)], text: &str) {
        self.start_tag(name, attrs);
        self.out.push('>');
        self.out.push_str(&esc(text));
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }
}
