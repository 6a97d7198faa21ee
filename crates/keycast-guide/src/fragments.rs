//! The OMA BCAST Service Guide fragments the Smartcard Profile needs: [`Service`], [`Content`],
//! [`Access`], [`PurchaseItem`], [`PurchaseData`] and [`PurchaseChannel`].
//!
//! Element and attribute names and the enumerations are those of facts-ietf-oma.md §9 (read
//! from an OMA BCAST 1.0 SG parser, an ATSC 3.0 file quoting the BCAST 1.1 SG schema and the
//! Spreadtrum MBBMS headers). Where the facts leave a point open the choice is marked
//! **\[chosen\]**:
//! - every fragment element is qualified in [`SG_NS`] (public ATSC 3.0 SG tooling reads the
//!   fragments in this namespace) **\[chosen\]**;
//! - references carry the target's `id` in an `idRef` attribute (same tooling) **\[chosen\]**;
//! - `Name` carries its value in a `text` attribute (same tooling); an element whose text
//!   content holds the name is read as well **\[chosen\]**. `xml:lang` is not kept (the shared
//!   reader drops namespaced attributes);
//! - `validFrom`/`validTo` are NTP seconds (`xs:unsignedInt`) **\[chosen\]**;
//! - `SDPRef`, `USBDRef` and `ADPRef` carry a `uri` attribute and an optional `idRef`
//!   **\[chosen\]**; `BDSType` holds a `Type` child **\[chosen\]**;
//! - `TotalNumberToken`'s text is the number of tokens **\[chosen\]**.
//!
//! Unknown elements (in any namespace) and unknown attributes are skipped; a missing required
//! element or attribute, or a bad value, is a [`GuideError::Xml`] naming the fragment and the
//! element.

use crate::error::GuideError;
use crate::xmlw::{self, Attrs, attr_string, attr_u64, req_attr_string, req_attr_u64, text_string};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keycast_provisioning::xml::{DECL, Element, XmlError, b64_any, parse_bool, parse_unsigned};

/// Namespace of the Service Guide fragments (OMA BCAST SG; as used by public ATSC 3.0 tooling).
pub const SG_NS: &str = "urn:oma:xml:bcast:sg:fragments:1.0";
/// Largest fragment accepted, in octets **\[chosen\]** (an Access fragment with an inline SDP
/// stays far below it).
pub const MAX_FRAGMENT_LEN: usize = 64 * 1024;

const NS: &str = SG_NS;

macro_rules! u8_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $n:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vm])* $v,)*
            /// A value this crate has no name for (reserved or proprietary), kept as is.
            Other(u8),
        }
        impl From<u8> for $name {
            fn from(v: u8) -> Self {
                match v { $($n => $name::$v,)* o => $name::Other(o) }
            }
        }
        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                match v { $($name::$v => $n,)* $name::Other(o) => o }
            }
        }
    };
}

u8_enum! {
    /// `ServiceType` (facts-ietf-oma.md §9).
    ServiceType {
        /// 0.
        Unspecified = 0,
        /// 1.
        BasicTv = 1,
        /// 2.
        BasicRadio = 2,
        /// 3.
        RightsIssuer = 3,
        /// 4.
        Cachecast = 4,
        /// 5.
        FileDownload = 5,
        /// 6.
        SoftwareManagement = 6,
        /// 7.
        Notification = 7,
        /// 8.
        ServiceGuide = 8,
        /// 9.
        TerminalProvisioning = 9,
        /// 10.
        AuxiliaryData = 10,
        /// 11.
        StreamingOnDemand = 11,
        /// 12.
        FileDownloadOnDemand = 12,
        /// 13.
        SmartcardProvisioning = 13,
    }
}

u8_enum! {
    /// `KeyManagementSystem@protectionType` (facts-ietf-oma.md §9).
    ProtectionType {
        /// 0: content protection.
        ContentProtection = 0,
        /// 1: service protection only.
        ServiceProtection = 1,
        /// 2: content protection and recording protection.
        ContentAndRecordingProtection = 2,
    }
}

u8_enum! {
    /// `EncryptionType` (facts-ietf-oma.md §9; 4–255 reserved).
    EncryptionType {
        /// 0: IPsec.
        Ipsec = 0,
        /// 1: SRTP.
        Srtp = 1,
        /// 2: ISMACryp.
        Ismacryp = 2,
        /// 3: DCF.
        Dcf = 3,
    }
}

/// `KeyManagementSystem@kmsType` (facts-ietf-oma.md §9); unknown strings are kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KmsType {
    /// `oma-bcast-drm-pki`: the DRM Profile.
    DrmPki,
    /// `oma-bcast-gba_u-mbms`: the Smartcard Profile with GBA_U.
    GbaUMbms,
    /// `oma-bcast-gba_me-mbms`: the Smartcard Profile with GBA_ME.
    GbaMeMbms,
    /// `oma-bcast-prov-bcmcs`: 3GPP2 BCMCS.
    ProvBcmcs,
    /// Any other value, kept verbatim.
    Other(String),
}

impl KmsType {
    /// The attribute value.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            KmsType::DrmPki => "oma-bcast-drm-pki",
            KmsType::GbaUMbms => "oma-bcast-gba_u-mbms",
            KmsType::GbaMeMbms => "oma-bcast-gba_me-mbms",
            KmsType::ProvBcmcs => "oma-bcast-prov-bcmcs",
            KmsType::Other(s) => s,
        }
    }

    /// Reads an attribute value.
    #[must_use]
    pub fn parse(s: &str) -> Self {
        match s {
            "oma-bcast-drm-pki" => KmsType::DrmPki,
            "oma-bcast-gba_u-mbms" => KmsType::GbaUMbms,
            "oma-bcast-gba_me-mbms" => KmsType::GbaMeMbms,
            "oma-bcast-prov-bcmcs" => KmsType::ProvBcmcs,
            o => KmsType::Other(o.to_owned()),
        }
    }

    /// True for the two Smartcard Profile values (GBA_U and GBA_ME).
    #[must_use]
    pub fn is_smartcard_profile(&self) -> bool {
        matches!(self, KmsType::GbaUMbms | KmsType::GbaMeMbms)
    }
}

/// `validFrom` / `validTo`, NTP seconds **\[chosen\]**; both optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Validity {
    /// `validFrom`.
    pub valid_from: Option<u32>,
    /// `validTo`.
    pub valid_to: Option<u32>,
}

impl Validity {
    /// True when `ntp_seconds` lies in the (inclusive) window.
    #[must_use]
    pub fn contains(&self, ntp_seconds: u32) -> bool {
        self.valid_from.is_none_or(|f| ntp_seconds >= f) && self.valid_to.is_none_or(|t| ntp_seconds <= t)
    }

    fn read(el: &Element) -> Result<Self, XmlError> {
        let v = Validity {
            valid_from: attr_u64(el, "validFrom", u64::from(u32::MAX))?.map(|v| v as u32),
            valid_to: attr_u64(el, "validTo", u64::from(u32::MAX))?.map(|v| v as u32),
        };
        if let (Some(f), Some(t)) = (v.valid_from, v.valid_to)
            && f > t
        {
            return Err(XmlError::InvalidValue { element: "validTo", reason: "earlier than validFrom" });
        }
        Ok(v)
    }

    fn attrs(&self, a: Attrs) -> Attrs {
        a.opt("validFrom", self.valid_from).opt("validTo", self.valid_to)
    }
}

/// `ProtectionKeyID` (facts-ietf-oma.md §9): base64 value with a required `type`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProtectionKeyId {
    /// `type`: 0 = Key Domain ID (3) ‖ Key Group (2) (Smartcard Profile); 1–127 reserved;
    /// 128–255 proprietary.
    pub kind: u8,
    /// The decoded octets (5 for type 0).
    pub value: Vec<u8>,
    /// `min` (the PPV variant `ProtectionKeyIDMinMaxType`).
    pub min: Option<u64>,
    /// `max` (same).
    pub max: Option<u64>,
}

impl ProtectionKeyId {
    /// A type 0 identifier: Key Domain ID ‖ Key Group (profile P-1).
    #[must_use]
    pub fn smartcard(key_domain_id: [u8; 3], key_group: u16) -> Self {
        let mut value = key_domain_id.to_vec();
        value.extend_from_slice(&key_group.to_be_bytes());
        ProtectionKeyId { kind: 0, value, min: None, max: None }
    }

    /// For type 0: the Key Domain ID and the Key Group.
    #[must_use]
    pub fn key_domain_and_group(&self) -> Option<KeyGroupRef> {
        match (self.kind, self.value.as_slice()) {
            (0, [a, b, c, d, e]) => {
                Some(KeyGroupRef { key_domain_id: [*a, *b, *c], key_group: u16::from_be_bytes([*d, *e]) })
            }
            _ => None,
        }
    }

    fn read(el: &Element) -> Result<Self, XmlError> {
        let kind = req_attr_u64(el, "ProtectionKeyID", "type", 255)? as u8;
        let value = b64_any("ProtectionKeyID", el.text("ProtectionKeyID")?)?;
        if kind == 0 && value.len() != 5 {
            return Err(XmlError::InvalidValue {
                element: "ProtectionKeyID",
                reason: "type 0 must hold 5 octets (Key Domain ID ‖ Key Group)",
            });
        }
        Ok(ProtectionKeyId { kind, value, min: attr_u64(el, "min", u64::MAX)?, max: attr_u64(el, "max", u64::MAX)? })
    }

    fn write(&self, out: &mut String, indent: usize) {
        let a = Attrs::new().add("type", self.kind).opt("min", self.min).opt("max", self.max);
        xmlw::text(out, indent, "ProtectionKeyID", a, &B64.encode(&self.value));
    }
}

/// A key group named by Key Domain ID (3 octets) and Key Group (MSK ID octets 0–1;
/// 33.246 §6.3.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyGroupRef {
    /// Key Domain ID.
    pub key_domain_id: [u8; 3],
    /// Key Group.
    pub key_group: u16,
}

fn read_names(el: &Element) -> Result<Vec<String>, XmlError> {
    el.all(NS, "Name")
        .map(|n| match n.attr("text") {
            Some(t) if !t.is_empty() => Ok(t.to_owned()),
            _ => text_string(n, "Name"),
        })
        .collect()
}

fn write_names(out: &mut String, indent: usize, names: &[String]) {
    for n in names {
        xmlw::empty(out, indent, "Name", Attrs::new().add("text", n));
    }
}

fn read_refs(el: &Element, name: &'static str) -> Result<Vec<String>, XmlError> {
    el.all(NS, name).map(|r| req_attr_string(r, name, "idRef")).collect()
}

fn write_refs(out: &mut String, indent: usize, name: &str, refs: &[String]) {
    for r in refs {
        xmlw::empty(out, indent, name, Attrs::new().add("idRef", r));
    }
}

fn read_pkids(el: &Element) -> Result<Vec<ProtectionKeyId>, XmlError> {
    el.all(NS, "ProtectionKeyID").map(ProtectionKeyId::read).collect()
}

/// Parses the document and checks the root is `{SG_NS}name`.
fn root(xml: &str, name: &'static str, expected: &'static str) -> Result<Element, GuideError> {
    let root = xmlw::parse_doc(xml, MAX_FRAGMENT_LEN, name)?;
    if !root.is(NS, name) {
        return Err(GuideError::Xml {
            fragment: name,
            source: XmlError::WrongRoot { expected, found: root.qualified_name() },
        });
    }
    Ok(root)
}

fn id_version(el: &Element, fragment: &'static str) -> Result<(String, u32), XmlError> {
    let id = req_attr_string(el, fragment, "id")?;
    let version = req_attr_u64(el, fragment, "version", u64::from(u32::MAX))? as u32;
    Ok((id, version))
}

fn start(id: &str, version: u32) -> (String, Attrs) {
    (String::from(DECL), Attrs::new().add("xmlns", NS).add("id", id).add("version", version))
}

// ---------------------------------------------------------------------------------------------
// Service

/// The `Service` fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `id` (required).
    pub id: String,
    /// `version` (required).
    pub version: u32,
    /// `validFrom` / `validTo`.
    pub validity: Validity,
    /// `globalServiceID`.
    pub global_service_id: Option<String>,
    /// `baseCID` (DRM Profile only; ignored by the Smartcard Profile, seed §6.8.1).
    pub base_cid: Option<String>,
    /// `ProtectionKeyID` (0..n).
    pub protection_key_ids: Vec<ProtectionKeyId>,
    /// `Name` (0..n).
    pub names: Vec<String>,
    /// `ServiceType` (0..n).
    pub service_types: Vec<ServiceType>,
}

impl Service {
    /// Decodes a `Service` fragment.
    ///
    /// # Errors
    /// [`GuideError::Xml`] naming the element at fault.
    pub fn from_xml(xml: &str) -> Result<Self, GuideError> {
        let el = root(xml, "Service", "{urn:oma:xml:bcast:sg:fragments:1.0}Service")?;
        Self::read(&el).map_err(GuideError::xml("Service"))
    }

    fn read(el: &Element) -> Result<Self, XmlError> {
        let (id, version) = id_version(el, "Service")?;
        Ok(Service {
            id,
            version,
            validity: Validity::read(el)?,
            global_service_id: attr_string(el, "globalServiceID"),
            base_cid: attr_string(el, "baseCID"),
            protection_key_ids: read_pkids(el)?,
            names: read_names(el)?,
            service_types: el
                .all(NS, "ServiceType")
                .map(|t| parse_unsigned("ServiceType", t.text("ServiceType")?, 255).map(|v| ServiceType::from(v as u8)))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Encodes the fragment.
    #[must_use]
    pub fn to_xml(&self) -> String {
        let (mut out, a) = start(&self.id, self.version);
        let a = self
            .validity
            .attrs(a)
            .opt("globalServiceID", self.global_service_id.as_ref())
            .opt("baseCID", self.base_cid.as_ref());
        xmlw::open(&mut out, 0, "Service", a);
        for p in &self.protection_key_ids {
            p.write(&mut out, 2);
        }
        write_names(&mut out, 2, &self.names);
        for t in &self.service_types {
            xmlw::text(&mut out, 2, "ServiceType", Attrs::new(), &u8::from(*t).to_string());
        }
        xmlw::close(&mut out, 0, "Service");
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Content

/// The `Content` fragment (the parts the terminal needs to tie a programme to a service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// `id` (required).
    pub id: String,
    /// `version` (required).
    pub version: u32,
    /// `validFrom` / `validTo`.
    pub validity: Validity,
    /// `globalContentID`.
    pub global_content_id: Option<String>,
    /// `ServiceReference` `idRef`s (0..n).
    pub service_refs: Vec<String>,
    /// `ProtectionKeyID` (0..n).
    pub protection_key_ids: Vec<ProtectionKeyId>,
    /// `Name` (0..n).
    pub names: Vec<String>,
}

impl Content {
    /// Decodes a `Content` fragment.
    ///
    /// # Errors
    /// [`GuideError::Xml`] naming the element at fault.
    pub fn from_xml(xml: &str) -> Result<Self, GuideError> {
        let el = root(xml, "Content", "{urn:oma:xml:bcast:sg:fragments:1.0}Content")?;
        Self::read(&el).map_err(GuideError::xml("Content"))
    }

    fn read(el: &Element) -> Result<Self, XmlError> {
        let (id, version) = id_version(el, "Content")?;
        Ok(Content {
            id,
            version,
            validity: Validity::read(el)?,
            global_content_id: attr_string(el, "globalContentID"),
            service_refs: read_refs(el, "ServiceReference")?,
            protection_key_ids: read_pkids(el)?,
            names: read_names(el)?,
        })
    }

    /// Encodes the fragment.
    #[must_use]
    pub fn to_xml(&self) -> String {
        let (mut out, a) = start(&self.id, self.version);
        let a = self.validity.attrs(a).opt("globalContentID", self.global_content_id.as_ref());
        xmlw::open(&mut out, 0, "Content", a);
        write_refs(&mut out, 2, "ServiceReference", &self.service_refs);
        for p in &self.protection_key_ids {
            p.write(&mut out, 2);
        }
        write_names(&mut out, 2, &self.names);
        xmlw::close(&mut out, 0, "Content");
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Access

/// A reference to a description (`SDPRef`, `USBDRef`, `ADPRef`): `uri` and optional `idRef`
/// **\[chosen attribute names\]**.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DescriptionRef {
    /// `uri` (required).
    pub uri: String,
    /// `idRef`: the fragment id when the description travels as an SG fragment.
    pub id_ref: Option<String>,
}

impl DescriptionRef {
    /// A reference by URI only.
    #[must_use]
    pub fn uri(uri: impl Into<String>) -> Self {
        DescriptionRef { uri: uri.into(), id_ref: None }
    }

    fn read(el: &Element, name: &'static str) -> Result<Self, XmlError> {
        Ok(DescriptionRef { uri: req_attr_string(el, name, "uri")?, id_ref: attr_string(el, "idRef") })
    }

    fn write(&self, out: &mut String, indent: usize, name: &str) {
        xmlw::empty(out, indent, name, Attrs::new().add("uri", &self.uri).opt("idRef", self.id_ref.as_ref()));
    }
}

/// `SessionDescription`: an inline SDP and/or references to session descriptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionDescription {
    /// `SDP`: the session description inline (its text).
    pub sdp: Option<String>,
    /// `SDPRef` (0..n).
    pub sdp_refs: Vec<DescriptionRef>,
    /// `USBDRef` (0..n): the MBMS User Service Bundle Description.
    pub usbd_refs: Vec<DescriptionRef>,
    /// `ADPRef` (0..n): associated delivery procedure descriptions.
    pub adp_refs: Vec<DescriptionRef>,
}

impl SessionDescription {
    /// Every reference URI (SDPRef, USBDRef, ADPRef), in that order: the "Session Description
    /// Reference URIs" of seed §6.8.1.2.
    pub fn reference_uris(&self) -> impl Iterator<Item = &str> {
        self.sdp_refs.iter().chain(&self.usbd_refs).chain(&self.adp_refs).map(|r| r.uri.as_str())
    }

    fn read(el: &Element) -> Result<Self, XmlError> {
        let refs = |name| el.all(NS, name).map(|r| DescriptionRef::read(r, name)).collect::<Result<Vec<_>, _>>();
        Ok(SessionDescription {
            sdp: el.opt(NS, "SDP")?.map(|s| text_string(s, "SDP")).transpose()?,
            sdp_refs: refs("SDPRef")?,
            usbd_refs: refs("USBDRef")?,
            adp_refs: refs("ADPRef")?,
        })
    }

    fn write(&self, out: &mut String, indent: usize) {
        xmlw::open(out, indent, "SessionDescription", Attrs::new());
        if let Some(sdp) = &self.sdp {
            xmlw::text(out, indent + 2, "SDP", Attrs::new(), sdp);
        }
        for r in &self.sdp_refs {
            r.write(out, indent + 2, "SDPRef");
        }
        for r in &self.usbd_refs {
            r.write(out, indent + 2, "USBDRef");
        }
        for r in &self.adp_refs {
            r.write(out, indent + 2, "ADPRef");
        }
        xmlw::close(out, indent, "SessionDescription");
    }
}

/// `BroadcastServiceDelivery`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BroadcastServiceDelivery {
    /// `BDSType/Type`: 0 IPDC over DVB-H, 1 3GPP MBMS, 2 3GPP2 BCMCS, 128 CMMB.
    pub bds_type: Option<u8>,
    /// `SessionDescription` (0..1).
    pub session_description: Option<SessionDescription>,
    /// `FileDescription` (0..1), with its `uri` attribute if any.
    pub file_description: Option<FileDescription>,
}

/// `FileDescription`: only its presence and optional `uri` are kept **\[chosen\]**.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileDescription {
    /// `uri`.
    pub uri: Option<String>,
}

/// `AccessType`: broadcast or unicast delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessType {
    /// `BroadcastServiceDelivery`.
    Broadcast(BroadcastServiceDelivery),
    /// `UnicastServiceDelivery` (its content is not needed by the Smartcard Profile and is not
    /// kept).
    Unicast,
}

/// `KeyManagementSystem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyManagementSystem {
    /// `kmsType` (required).
    pub kms_type: KmsType,
    /// `protectionType`.
    pub protection_type: Option<ProtectionType>,
    /// `ProtectionKeyID` (0..n).
    pub protection_key_ids: Vec<ProtectionKeyId>,
    /// `PermissionsIssuerURI` (0..1): the RightsIssuerURI of the seed.
    pub permissions_issuer_uri: Option<PermissionsIssuerUri>,
    /// `TerminalBindingKeyID` (0..1).
    pub terminal_binding_key_id: Option<TerminalBindingKeyId>,
}

/// `PermissionsIssuerURI` and its boolean `type` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionsIssuerUri {
    /// The URI.
    pub uri: String,
    /// `type` (xs:boolean).
    pub kind: Option<bool>,
}

/// `TerminalBindingKeyID` and its `tbkPermissionsIssuerURI` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalBindingKeyId {
    /// The identifier, as written.
    pub id: String,
    /// `tbkPermissionsIssuerURI`.
    pub tbk_permissions_issuer_uri: Option<String>,
}

impl KeyManagementSystem {
    /// The type 0 Key Domain ID ‖ Key Group pairs of this system's ProtectionKeyIDs.
    pub fn key_groups(&self) -> impl Iterator<Item = KeyGroupRef> + '_ {
        self.protection_key_ids.iter().filter_map(ProtectionKeyId::key_domain_and_group)
    }

    fn read(el: &Element) -> Result<Self, XmlError> {
        let pi = match el.opt(NS, "PermissionsIssuerURI")? {
            None => None,
            Some(p) => Some(PermissionsIssuerUri {
                uri: text_string(p, "PermissionsIssuerURI")?,
                kind: p.attr("type").map(|t| parse_bool("PermissionsIssuerURI@type", t)).transpose()?,
            }),
        };
        let tbk = match el.opt(NS, "TerminalBindingKeyID")? {
            None => None,
            Some(t) => Some(TerminalBindingKeyId {
                id: text_string(t, "TerminalBindingKeyID")?,
                tbk_permissions_issuer_uri: attr_string(t, "tbkPermissionsIssuerURI"),
            }),
        };
        Ok(KeyManagementSystem {
            kms_type: KmsType::parse(&req_attr_string(el, "KeyManagementSystem", "kmsType")?),
            protection_type: attr_u64(el, "protectionType", 255)?.map(|v| ProtectionType::from(v as u8)),
            protection_key_ids: read_pkids(el)?,
            permissions_issuer_uri: pi,
            terminal_binding_key_id: tbk,
        })
    }

    fn write(&self, out: &mut String, indent: usize) {
        let a = Attrs::new()
            .add("kmsType", self.kms_type.as_str())
            .opt("protectionType", self.protection_type.map(u8::from));
        xmlw::open(out, indent, "KeyManagementSystem", a);
        for p in &self.protection_key_ids {
            p.write(out, indent + 2);
        }
        if let Some(p) = &self.permissions_issuer_uri {
            xmlw::text(out, indent + 2, "PermissionsIssuerURI", Attrs::new().opt("type", p.kind), &p.uri);
        }
        if let Some(t) = &self.terminal_binding_key_id {
            let a = Attrs::new().opt("tbkPermissionsIssuerURI", t.tbk_permissions_issuer_uri.as_ref());
            xmlw::text(out, indent + 2, "TerminalBindingKeyID", a, &t.id);
        }
        xmlw::close(out, indent, "KeyManagementSystem");
    }
}

/// The `Access` fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// `id` (required).
    pub id: String,
    /// `version` (required).
    pub version: u32,
    /// `validFrom` / `validTo`.
    pub validity: Validity,
    /// `KeyManagementSystem` (0..n); none means the service is in the clear.
    pub key_management_systems: Vec<KeyManagementSystem>,
    /// `EncryptionType` (0..1).
    pub encryption_type: Option<EncryptionType>,
    /// `AccessType` (required).
    pub access_type: AccessType,
    /// `ServiceReference` `idRef`s (0..n).
    pub service_refs: Vec<String>,
}

impl Access {
    /// Decodes an `Access` fragment.
    ///
    /// # Errors
    /// [`GuideError::Xml`] naming the element at fault.
    pub fn from_xml(xml: &str) -> Result<Self, GuideError> {
        let el = root(xml, "Access", "{urn:oma:xml:bcast:sg:fragments:1.0}Access")?;
        Self::read(&el).map_err(GuideError::xml("Access"))
    }

    /// The session description of a broadcast delivery, if any.
    #[must_use]
    pub fn session_description(&self) -> Option<&SessionDescription> {
        match &self.access_type {
            AccessType::Broadcast(b) => b.session_description.as_ref(),
            AccessType::Unicast => None,
        }
    }

    /// The Smartcard Profile key management systems (GBA_U and GBA_ME).
    pub fn smartcard_systems(&self) -> impl Iterator<Item = &KeyManagementSystem> {
        self.key_management_systems.iter().filter(|k| k.kms_type.is_smartcard_profile())
    }

    fn read(el: &Element) -> Result<Self, XmlError> {
        let (id, version) = id_version(el, "Access")?;
        let at = el.one(NS, "AccessType", "Access")?;
        let access_type = match (at.opt(NS, "BroadcastServiceDelivery")?, at.opt(NS, "UnicastServiceDelivery")?) {
            (Some(b), _) => AccessType::Broadcast(BroadcastServiceDelivery {
                bds_type: match b.opt(NS, "BDSType")? {
                    None => None,
                    Some(t) => {
                        let ty = t.one(NS, "Type", "BDSType")?;
                        Some(parse_unsigned("Type", ty.text("Type")?, 255)? as u8)
                    }
                },
                session_description: b.opt(NS, "SessionDescription")?.map(SessionDescription::read).transpose()?,
                file_description: b.opt(NS, "FileDescription")?.map(|f| FileDescription { uri: attr_string(f, "uri") }),
            }),
            (None, Some(_)) => AccessType::Unicast,
            (None, None) => {
                return Err(XmlError::Missing { element: "BroadcastServiceDelivery", parent: "AccessType" });
            }
        };
        Ok(Access {
            id,
            version,
            validity: Validity::read(el)?,
            key_management_systems: el
                .all(NS, "KeyManagementSystem")
                .map(KeyManagementSystem::read)
                .collect::<Result<_, _>>()?,
            encryption_type: el
                .opt(NS, "EncryptionType")?
                .map(|e| {
                    parse_unsigned("EncryptionType", e.text("EncryptionType")?, 255)
                        .map(|v| EncryptionType::from(v as u8))
                })
                .transpose()?,
            access_type,
            service_refs: read_refs(el, "ServiceReference")?,
        })
    }

    /// Encodes the fragment.
    #[must_use]
    pub fn to_xml(&self) -> String {
        let (mut out, a) = start(&self.id, self.version);
        xmlw::open(&mut out, 0, "Access", self.validity.attrs(a));
        for k in &self.key_management_systems {
            k.write(&mut out, 2);
        }
        if let Some(e) = self.encryption_type {
            xmlw::text(&mut out, 2, "EncryptionType", Attrs::new(), &u8::from(e).to_string());
        }
        xmlw::open(&mut out, 2, "AccessType", Attrs::new());
        match &self.access_type {
            AccessType::Broadcast(b) => {
                xmlw::open(&mut out, 4, "BroadcastServiceDelivery", Attrs::new());
                if let Some(t) = b.bds_type {
                    xmlw::open(&mut out, 6, "BDSType", Attrs::new());
                    xmlw::text(&mut out, 8, "Type", Attrs::new(), &t.to_string());
                    xmlw::close(&mut out, 6, "BDSType");
                }
                if let Some(sd) = &b.session_description {
                    sd.write(&mut out, 6);
                }
                if let Some(f) = &b.file_description {
                    xmlw::empty(&mut out, 6, "FileDescription", Attrs::new().opt("uri", f.uri.as_ref()));
                }
                xmlw::close(&mut out, 4, "BroadcastServiceDelivery");
            }
            AccessType::Unicast => xmlw::empty(&mut out, 4, "UnicastServiceDelivery", Attrs::new()),
        }
        xmlw::close(&mut out, 2, "AccessType");
        write_refs(&mut out, 2, "ServiceReference", &self.service_refs);
        xmlw::close(&mut out, 0, "Access");
        out
    }
}

// ---------------------------------------------------------------------------------------------
// PurchaseItem

/// The `PurchaseItem` fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseItem {
    /// `id` (required).
    pub id: String,
    /// `version` (required).
    pub version: u32,
    /// `validFrom` / `validTo`.
    pub validity: Validity,
    /// `globalPurchaseItemID`: required here **\[chosen\]**, since the MBMS User Service ID is
    /// GlobalPurchaseItemID ‖ PurchaseDataID (seed §6.8.1).
    pub global_purchase_item_id: String,
    /// `ServiceReference` `idRef`s (0..n).
    pub service_refs: Vec<String>,
    /// `ContentReference` `idRef`s (0..n).
    pub content_refs: Vec<String>,
    /// `ProtectionKeyID` (0..n).
    pub protection_key_ids: Vec<ProtectionKeyId>,
    /// `Name` (0..n).
    pub names: Vec<String>,
    /// `closed` (xs:boolean).
    pub closed: Option<bool>,
}

impl PurchaseItem {
    /// Decodes a `PurchaseItem` fragment.
    ///
    /// # Errors
    /// [`GuideError::Xml`] naming the element at fault.
    pub fn from_xml(xml: &str) -> Result<Self, GuideError> {
        let el = root(xml, "PurchaseItem", "{urn:oma:xml:bcast:sg:fragments:1.0}PurchaseItem")?;
        Self::read(&el).map_err(GuideError::xml("PurchaseItem"))
    }

    fn read(el: &Element) -> Result<Self, XmlError> {
        let (id, version) = id_version(el, "PurchaseItem")?;
        Ok(PurchaseItem {
            id,
            version,
            validity: Validity::read(el)?,
            global_purchase_item_id: req_attr_string(el, "PurchaseItem", "globalPurchaseItemID")?,
            service_refs: read_refs(el, "ServiceReference")?,
            content_refs: read_refs(el, "ContentReference")?,
            protection_key_ids: read_pkids(el)?,
            names: read_names(el)?,
            closed: el.attr("closed").map(|c| parse_bool("PurchaseItem@closed", c)).transpose()?,
        })
    }

    /// Encodes the fragment.
    #[must_use]
    pub fn to_xml(&self) -> String {
        let (mut out, a) = start(&self.id, self.version);
        let a = self
            .validity
            .attrs(a)
            .add("globalPurchaseItemID", &self.global_purchase_item_id)
            .opt("closed", self.closed);
        xmlw::open(&mut out, 0, "PurchaseItem", a);
        write_refs(&mut out, 2, "ServiceReference", &self.service_refs);
        write_refs(&mut out, 2, "ContentReference", &self.content_refs);
        for p in &self.protection_key_ids {
            p.write(&mut out, 2);
        }
        write_names(&mut out, 2, &self.names);
        xmlw::close(&mut out, 0, "PurchaseItem");
        out
    }
}

// ---------------------------------------------------------------------------------------------
// PurchaseData

/// `MonetaryPrice`: an amount (`xs:decimal` text, kept as written) and its `currency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonetaryPrice {
    /// `currency` (required; ISO 4217 code by convention).
    pub currency: String,
    /// The amount as written, e.g. `4.99` (checked to be a decimal number).
    pub amount: String,
}

/// `TotalNumberToken`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotalNumberToken {
    /// The number of tokens (the element text) **\[chosen\]**.
    pub count: u64,
    /// `tokenType`.
    pub token_type: Option<String>,
    /// `consumptionAmount`.
    pub consumption_amount: Option<u64>,
    /// `consumptionUnit`.
    pub consumption_unit: Option<String>,
    /// `maxReplay`.
    pub max_replay: Option<u64>,
}

/// `PriceInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceInfo {
    /// `subscriptionType` (MBBMS adds 128–131; the base values are not in the facts).
    pub subscription_type: Option<u8>,
    /// `MonetaryPrice` (0..n, one per currency).
    pub prices: Vec<MonetaryPrice>,
    /// `SubscriptionPeriod`, as written (e.g. an `xs:duration` such as `P1M`).
    pub subscription_period: Option<String>,
    /// `TotalNumberToken` (0..1).
    pub tokens: Option<TotalNumberToken>,
}

fn check_decimal(s: &str) -> Result<(), XmlError> {
    // xs:decimal: optional sign, digits, optional fraction; at least one digit.
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty()) {
        Ok(())
    } else {
        Err(XmlError::InvalidValue { element: "MonetaryPrice", reason: "not a decimal number" })
    }
}

impl PriceInfo {
    fn read(el: &Element) -> Result<Self, XmlError> {
        let prices = el
            .all(NS, "MonetaryPrice")
            .map(|p| {
                let amount = text_string(p, "MonetaryPrice")?;
                check_decimal(&amount)?;
                Ok(MonetaryPrice { currency: req_attr_string(p, "MonetaryPrice", "currency")?, amount })
            })
            .collect::<Result<_, XmlError>>()?;
        let tokens = match el.opt(NS, "TotalNumberToken")? {
            None => None,
            Some(t) => Some(TotalNumberToken {
                count: parse_unsigned("TotalNumberToken", t.text("TotalNumberToken")?, u64::MAX)?,
                token_type: attr_string(t, "tokenType"),
                consumption_amount: attr_u64(t, "consumptionAmount", u64::MAX)?,
                consumption_unit: attr_string(t, "consumptionUnit"),
                max_replay: attr_u64(t, "maxReplay", u64::MAX)?,
            }),
        };
        Ok(PriceInfo {
            subscription_type: attr_u64(el, "subscriptionType", 255)?.map(|v| v as u8),
            prices,
            subscription_period: el
                .opt(NS, "SubscriptionPeriod")?
                .map(|p| text_string(p, "SubscriptionPeriod"))
                .transpose()?,
            tokens,
        })
    }

    fn write(&self, out: &mut String, indent: usize) {
        xmlw::open(out, indent, "PriceInfo", Attrs::new().opt("subscriptionType", self.subscription_type));
        if let Some(p) = &self.subscription_period {
            xmlw::text(out, indent + 2, "SubscriptionPeriod", Attrs::new(), p);
        }
        for p in &self.prices {
            xmlw::text(out, indent + 2, "MonetaryPrice", Attrs::new().add("currency", &p.currency), &p.amount);
        }
        if let Some(t) = &self.tokens {
            let a = Attrs::new()
                .opt("tokenType", t.token_type.as_ref())
                .opt("consumptionAmount", t.consumption_amount)
                .opt("consumptionUnit", t.consumption_unit.as_ref())
                .opt("maxReplay", t.max_replay);
            xmlw::text(out, indent + 2, "TotalNumberToken", a, &t.count.to_string());
        }
        xmlw::close(out, indent, "PriceInfo");
    }
}

/// The `PurchaseData` fragment: one way (price, period, channel) to buy a PurchaseItem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseData {
    /// `id` (required): the PurchaseDataID of the MBMS User Service ID.
    pub id: String,
    /// `version` (required).
    pub version: u32,
    /// `validFrom` / `validTo`.
    pub validity: Validity,
    /// `Description` (0..n).
    pub descriptions: Vec<String>,
    /// `PriceInfo` (0..1).
    pub price_info: Option<PriceInfo>,
    /// `PurchaseItemReference` `idRef` (required, exactly one).
    pub purchase_item_ref: String,
    /// `PurchaseChannelReference` `idRef`s (0..n).
    pub purchase_channel_refs: Vec<String>,
}

impl PurchaseData {
    /// Decodes a `PurchaseData` fragment.
    ///
    /// # Errors
    /// [`GuideError::Xml`] naming the element at fault.
    pub fn from_xml(xml: &str) -> Result<Self, GuideError> {
        let el = root(xml, "PurchaseData", "{urn:oma:xml:bcast:sg:fragments:1.0}PurchaseData")?;
        Self::read(&el).map_err(GuideError::xml("PurchaseData"))
    }

    fn read(el: &Element) -> Result<Self, XmlError> {
        let (id, version) = id_version(el, "PurchaseData")?;
        let pir = el.one(NS, "PurchaseItemReference", "PurchaseData")?;
        Ok(PurchaseData {
            id,
            version,
            validity: Validity::read(el)?,
            descriptions: el.all(NS, "Description").map(|d| text_string(d, "Description")).collect::<Result<_, _>>()?,
            price_info: el.opt(NS, "PriceInfo")?.map(PriceInfo::read).transpose()?,
            purchase_item_ref: req_attr_string(pir, "PurchaseItemReference", "idRef")?,
            purchase_channel_refs: read_refs(el, "PurchaseChannelReference")?,
        })
    }

    /// Encodes the fragment.
    #[must_use]
    pub fn to_xml(&self) -> String {
        let (mut out, a) = start(&self.id, self.version);
        xmlw::open(&mut out, 0, "PurchaseData", self.validity.attrs(a));
        for d in &self.descriptions {
            xmlw::text(&mut out, 2, "Description", Attrs::new(), d);
        }
        if let Some(p) = &self.price_info {
            p.write(&mut out, 2);
        }
        xmlw::empty(&mut out, 2, "PurchaseItemReference", Attrs::new().add("idRef", &self.purchase_item_ref));
        write_refs(&mut out, 2, "PurchaseChannelReference", &self.purchase_channel_refs);
        xmlw::close(&mut out, 0, "PurchaseData");
        out
    }
}

// ---------------------------------------------------------------------------------------------
// PurchaseChannel

/// `PortalURL` and its `supportedService` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalUrl {
    /// The URL.
    pub url: String,
    /// `supportedService`.
    pub supported_service: Option<String>,
}

/// The `PurchaseChannel` fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseChannel {
    /// `id` (required).
    pub id: String,
    /// `version` (required).
    pub version: u32,
    /// `validFrom` / `validTo`.
    pub validity: Validity,
    /// `rightsIssuerURI`.
    pub rights_issuer_uri: Option<String>,
    /// `Name` (0..n).
    pub names: Vec<String>,
    /// `PortalURL` (0..n): when present the terminal may have to subscribe through the portal
    /// rather than by a Service Request (seed §6.8.1).
    pub portal_urls: Vec<PortalUrl>,
    /// `PurchaseURL` (0..n).
    pub purchase_urls: Vec<String>,
}

impl PurchaseChannel {
    /// Decodes a `PurchaseChannel` fragment.
    ///
    /// # Errors
    /// [`GuideError::Xml`] naming the element at fault.
    pub fn from_xml(xml: &str) -> Result<Self, GuideError> {
        let el = root(xml, "PurchaseChannel", "{urn:oma:xml:bcast:sg:fragments:1.0}PurchaseChannel")?;
        Self::read(&el).map_err(GuideError::xml("PurchaseChannel"))
    }

    fn read(el: &Element) -> Result<Self, XmlError> {
        let (id, version) = id_version(el, "PurchaseChannel")?;
        Ok(PurchaseChannel {
            id,
            version,
            validity: Validity::read(el)?,
            rights_issuer_uri: attr_string(el, "rightsIssuerURI"),
            names: read_names(el)?,
            portal_urls: el
                .all(NS, "PortalURL")
                .map(|p| {
                    Ok(PortalUrl {
                        url: text_string(p, "PortalURL")?,
                        supported_service: attr_string(p, "supportedService"),
                    })
                })
                .collect::<Result<_, XmlError>>()?,
            purchase_urls: el
                .all(NS, "PurchaseURL")
                .map(|p| text_string(p, "PurchaseURL"))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Encodes the fragment.
    #[must_use]
    pub fn to_xml(&self) -> String {
        let (mut out, a) = start(&self.id, self.version);
        let a = self.validity.attrs(a).opt("rightsIssuerURI", self.rights_issuer_uri.as_ref());
        xmlw::open(&mut out, 0, "PurchaseChannel", a);
        write_names(&mut out, 2, &self.names);
        for p in &self.portal_urls {
            xmlw::text(
                &mut out,
                2,
                "PortalURL",
                Attrs::new().opt("supportedService", p.supported_service.as_ref()),
                &p.url,
            );
        }
        for p in &self.purchase_urls {
            xmlw::text(&mut out, 2, "PurchaseURL", Attrs::new(), p);
        }
        xmlw::close(&mut out, 0, "PurchaseChannel");
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Any fragment

/// Any of the fragments above, chosen by the root element.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fragment {
    /// `Service`.
    Service(Service),
    /// `Content`.
    Content(Content),
    /// `Access`.
    Access(Access),
    /// `PurchaseItem`.
    PurchaseItem(PurchaseItem),
    /// `PurchaseData`.
    PurchaseData(PurchaseData),
    /// `PurchaseChannel`.
    PurchaseChannel(PurchaseChannel),
}

impl Fragment {
    /// Decodes whichever supported fragment the document holds.
    ///
    /// # Errors
    /// [`GuideError::UnknownFragment`] for another root (other SG fragments such as `Schedule`
    /// are not needed here), else as the fragment's own `from_xml`.
    pub fn from_xml(xml: &str) -> Result<Self, GuideError> {
        let el = xmlw::parse_doc(xml, MAX_FRAGMENT_LEN, "Service Guide")?;
        let name = el.local_name();
        let in_ns = el.is(NS, name);
        let r = match name {
            "Service" if in_ns => Fragment::Service(Service::read(&el).map_err(GuideError::xml("Service"))?),
            "Content" if in_ns => Fragment::Content(Content::read(&el).map_err(GuideError::xml("Content"))?),
            "Access" if in_ns => Fragment::Access(Access::read(&el).map_err(GuideError::xml("Access"))?),
            "PurchaseItem" if in_ns => {
                Fragment::PurchaseItem(PurchaseItem::read(&el).map_err(GuideError::xml("PurchaseItem"))?)
            }
            "PurchaseData" if in_ns => {
                Fragment::PurchaseData(PurchaseData::read(&el).map_err(GuideError::xml("PurchaseData"))?)
            }
            "PurchaseChannel" if in_ns => {
                Fragment::PurchaseChannel(PurchaseChannel::read(&el).map_err(GuideError::xml("PurchaseChannel"))?)
            }
            _ => return Err(GuideError::UnknownFragment(el.qualified_name())),
        };
        Ok(r)
    }

    /// Encodes the fragment.
    #[must_use]
    pub fn to_xml(&self) -> String {
        match self {
            Fragment::Service(f) => f.to_xml(),
            Fragment::Content(f) => f.to_xml(),
            Fragment::Access(f) => f.to_xml(),
            Fragment::PurchaseItem(f) => f.to_xml(),
            Fragment::PurchaseData(f) => f.to_xml(),
            Fragment::PurchaseChannel(f) => f.to_xml(),
        }
    }

    /// The fragment's `id`.
    #[must_use]
    pub fn id(&self) -> &str {
        match self {
            Fragment::Service(f) => &f.id,
            Fragment::Content(f) => &f.id,
            Fragment::Access(f) => &f.id,
            Fragment::PurchaseItem(f) => &f.id,
            Fragment::PurchaseData(f) => &f.id,
            Fragment::PurchaseChannel(f) => &f.id,
        }
    }
}
