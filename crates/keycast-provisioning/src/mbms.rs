//! The XML bodies of 3GPP MBMS service protection (TS 26.346 §11.3–11.8, used by the HTTP key
//! management procedures of TS 33.246 Annex G; facts-3gpp.md §3.4 and §5, profile P-8).
//!
//! | type | root element | namespace | content type |
//! |---|---|---|---|
//! | [`SecurityDescription`] | `securityDescription` | [`SECURITY_DESCRIPTION_NS`] | [`SECURITY_DESCRIPTION_CONTENT_TYPE`] |
//! | [`RegisterRequest`] | `mbmsSecurityRegister` | [`REGISTER_NS`] | [`REGISTER_CONTENT_TYPE`] |
//! | [`DeregisterRequest`] | `mbmsSecurityDeregister` | [`DEREGISTER_NS`] | [`DEREGISTER_CONTENT_TYPE`] |
//! | [`MskRequest`] | `mbmsMSKRequest` | [`MSK_REQUEST_NS`] | [`MSK_REQUEST_CONTENT_TYPE`] |
//! | [`RegisterResponse`] (also answers a deregistration) | `mbmsSecurityRegisterResponse` | [`REGISTER_RESPONSE_NS`] | [`REGISTER_RESPONSE_CONTENT_TYPE`] |
//! | [`MskResponse`] | `mbmsMSKResponse` | [`MSK_RESPONSE_NS`] | [`MSK_RESPONSE_CONTENT_TYPE`] |
//!
//! Decoding checks the namespace of every element it reads, ignores unknown elements and
//! attributes (the schemas are lax), refuses a DOCTYPE and bodies over [`MAX_XML_LEN`], and
//! reports errors naming the element ([`XmlError`]). The schemas, transcribed from the text, are
//! in `crates/keycast-provisioning/schemas/3gpp-26346-*.xsd`; the tests validate our output
//! against them.
//!
//! ```
//! use keycast_provisioning::mbms::{MskRef, MskRequest, MskResponse, MskStatus, ResponseCode};
//!
//! let request = MskRequest::from_xml(
//!     br#"<mbmsMSKRequest xmlns="urn:3GPP:metadata:2005:MBMS:mskRequest">
//!           <MSK><keyDomainID>uHCd</keyDomainID><MSKID>aMkAAA==</MSKID></MSK>
//!         </mbmsMSKRequest>"#,
//! )
//! .unwrap();
//! assert_eq!(request.msks, [MskRef { key_domain_id: [0xb8, 0x70, 0x9d], msk_id: [0x68, 0xc9, 0, 0] }]);
//! let answer = MskResponse { responses: vec![MskStatus { msk: request.msks[0], response_code: ResponseCode::OK }] };
//! assert!(answer.to_xml().unwrap().contains("<ResponseCode>200 OK</ResponseCode>"));
//! ```

use crate::xml::{self, DECL, Element, b64, b64_fixed, check_token, esc, parse_bool, parse_unsigned, text_el};
use std::borrow::Cow;
use std::fmt;

pub use crate::xml::XmlError;

/// Content type of the Security Description (26.346 Annex C.6).
pub const SECURITY_DESCRIPTION_CONTENT_TYPE: &str = "application/mbms-protection-description+xml";
/// Content type of the registration request (33.246 G.2.1).
pub const REGISTER_CONTENT_TYPE: &str = "application/mbms-register+xml";
/// Content type of the deregistration request (33.246 G.2.2).
pub const DEREGISTER_CONTENT_TYPE: &str = "application/mbms-deregister+xml";
/// Content type of the MSK request (33.246 G.2.3).
pub const MSK_REQUEST_CONTENT_TYPE: &str = "application/mbms-msk+xml";
/// Content type of the (de)registration response (33.246 G.2.1, G.2.2).
pub const REGISTER_RESPONSE_CONTENT_TYPE: &str = "application/mbms-register-response+xml";
/// Content type of the MSK response (33.246 G.2.3; Annex H's example says `mbms-msk+xml`).
pub const MSK_RESPONSE_CONTENT_TYPE: &str = "application/mbms-msk-response+xml";

/// Namespace of `securityDescription` (26.346 §11.3).
pub const SECURITY_DESCRIPTION_NS: &str = "urn:3GPP:metadata:2005:MBMS:securityDescription";
/// Namespace of `mbmsSecurityRegister` (26.346 §11.4).
pub const REGISTER_NS: &str = "urn:3GPP:metadata:2005:MBMS:securityRegistration";
/// Namespace of `mbmsSecurityDeregister` (26.346 §11.5).
pub const DEREGISTER_NS: &str = "urn:3GPP:metadata:2005:MBMS:securityDeregistration";
/// Namespace of `mbmsMSKRequest` (26.346 §11.6).
pub const MSK_REQUEST_NS: &str = "urn:3GPP:metadata:2005:MBMS:mskRequest";
/// Namespace of `mbmsSecurityRegisterResponse` (26.346 §11.7).
pub const REGISTER_RESPONSE_NS: &str = "urn:3GPP:metadata:2005:MBMS:securityRegistrationResponse";
/// Namespace of `mbmsMSKResponse` (26.346 §11.8).
pub const MSK_RESPONSE_NS: &str = "urn:3GPP:metadata:2005:MBMS:mskResponse";

/// Largest body accepted (64 KiB).
pub const MAX_XML_LEN: usize = 64 * 1024;
/// Longest URI, flow ID or other string value accepted, in octets.
pub const MAX_VALUE_LEN: usize = 2048;

/// One MSK named by Key Domain ID and MSK ID (26.346 `MSKType`; 33.246 §6.3.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MskRef {
    /// Key Domain ID, 3 octets (MCC ‖ MNC; profile P-1).
    pub key_domain_id: [u8; 3],
    /// MSK ID, 4 octets: Key Group ‖ Key Number.
    pub msk_id: [u8; 4],
}

impl MskRef {
    /// The Key Group (MSK ID octets 0–1).
    #[must_use]
    pub fn key_group(&self) -> u16 {
        u16::from_be_bytes([self.msk_id[0], self.msk_id[1]])
    }

    /// The Key Number (MSK ID octets 2–3); 0 means "the current MSK".
    #[must_use]
    pub fn key_number(&self) -> u16 {
        u16::from_be_bytes([self.msk_id[2], self.msk_id[3]])
    }

    fn write(&self, out: &mut String, indent: usize) {
        let pad = " ".repeat(indent);
        out.push_str(&format!(
            "{pad}<MSK><keyDomainID>{}</keyDomainID><MSKID>{}</MSKID></MSK>\n",
            b64(&self.key_domain_id),
            b64(&self.msk_id)
        ));
    }

    fn read(el: &Element, ns: &'static str) -> Result<Self, XmlError> {
        let kd = el.one(ns, "keyDomainID", "MSK")?.text("keyDomainID")?;
        let id = el.one(ns, "MSKID", "MSK")?.text("MSKID")?;
        Ok(MskRef { key_domain_id: b64_fixed("keyDomainID", kd)?, msk_id: b64_fixed("MSKID", id)? })
    }
}

/// A per-item status as written in `ResponseCode`: an RFC 2616 status code and its reason
/// phrase, e.g. `200 OK` (26.346 §11.7–11.8; codes of 33.246 §6.3.2.4, facts-3gpp.md §3.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResponseCode {
    /// The status code (100..=999).
    pub code: u16,
    /// The reason phrase (may be empty).
    pub reason: Cow<'static, str>,
}

impl ResponseCode {
    /// `200 OK`: success for this item.
    pub const OK: ResponseCode = ResponseCode { code: 200, reason: Cow::Borrowed("OK") };

    /// The code with its RFC 2616 §10 reason phrase for the codes 33.246 §6.3.2.4 uses (an empty
    /// phrase for others). Encoding refuses codes outside 100..=999.
    #[must_use]
    pub fn new(code: u16) -> Self {
        let reason = match code {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            402 => "Payment Required",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            504 => "Gateway Time-out",
            505 => "HTTP Version not supported",
            _ => "",
        };
        ResponseCode { code, reason: Cow::Borrowed(reason) }
    }

    /// Parses `ResponseCode` text: a three-digit code, then optionally white space and a reason.
    ///
    /// # Errors
    /// [`XmlError::InvalidValue`] naming `ResponseCode`.
    pub fn parse(text: &str) -> Result<Self, XmlError> {
        let bad = |reason| XmlError::InvalidValue { element: "ResponseCode", reason };
        let text = xml::trim_ws(text);
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        if digits != 3 {
            return Err(bad("does not start with a three-digit status code"));
        }
        let (num, rest) = text.split_at(3);
        if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
            return Err(bad("no space after the status code"));
        }
        let code: u16 = num.parse().map_err(|_| bad("bad status code"))?;
        if code < 100 {
            return Err(bad("status code below 100"));
        }
        let reason = xml::trim_ws(rest);
        if reason.chars().any(char::is_control) {
            return Err(bad("control character"));
        }
        Ok(ResponseCode { code, reason: Cow::Owned(reason.to_owned()) })
    }

    /// True for 2xx.
    #[must_use]
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// True when 33.246 §6.3.2.4 lets the UE repeat the request (401; 503 after `Retry-After`).
    #[must_use]
    pub fn may_retry(&self) -> bool {
        matches!(self.code, 401 | 503)
    }

    fn check(&self) -> Result<(), XmlError> {
        let bad = |reason| Err(XmlError::InvalidValue { element: "ResponseCode", reason });
        if !(100..=999).contains(&self.code) {
            return bad("status code outside 100..=999");
        }
        if !self.reason.is_empty() {
            check_token("ResponseCode", &self.reason, MAX_VALUE_LEN)?;
        }
        Ok(())
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() { write!(f, "{}", self.code) } else { write!(f, "{} {}", self.code, self.reason) }
    }
}

impl std::str::FromStr for ResponseCode {
    type Err = XmlError;
    fn from_str(s: &str) -> Result<Self, XmlError> {
        Self::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Security Description (§11.3)

/// The `securityDescription` fragment referenced by a USD `protectionDescriptionURI` (§11.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityDescription {
    /// Key management servers and back-off parameters (0..1).
    pub key_management: Option<KeyManagement>,
    /// `keyId` elements (1..n), each a list of media flows and their MSKs.
    pub key_ids: Vec<KeyId>,
    /// Present when MIKEY packets to the multicast addresses are FEC protected (0..1).
    pub fec_protection: Option<FecProtection>,
}

/// `keyManagement`: the BM-SC key-management servers and the MSK request back-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyManagement {
    /// `serverURI` (xs:anyURI, 1..n).
    pub server_uris: Vec<String>,
    /// `offsetTime` in seconds (default 0).
    pub offset_time: u64,
    /// `randomTimePeriod` in seconds (default 0).
    pub random_time_period: u64,
    /// `uiccKeyManagement` (default **true**).
    pub uicc_key_management: bool,
}

impl KeyManagement {
    /// The given servers with every attribute at its schema default.
    #[must_use]
    pub fn new(server_uris: Vec<String>) -> Self {
        KeyManagement { server_uris, offset_time: 0, random_time_period: 0, uicc_key_management: true }
    }
}

/// `keyId`: media flows (1..n).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyId {
    /// The `mediaFlow` elements.
    pub media_flows: Vec<MediaFlow>,
}

/// `mediaFlow`: one flow and the MSK protecting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFlow {
    /// `flowID`: `<IP destination address>/<destination port>` (the RTP port).
    pub flow_id: String,
    /// The MSK; in a Security Description its Key Number is 0.
    pub msk: MskRef,
}

/// `fecProtection`: the FEC payload ID of the protected MIKEY packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FecProtection {
    /// `fecEncodingId` (default 0).
    pub fec_encoding_id: u64,
    /// `fecInstanceId`.
    pub fec_instance_id: Option<u64>,
    /// `fecOtiExtension`.
    pub fec_oti_extension: Option<String>,
}

impl SecurityDescription {
    /// Encodes the fragment.
    ///
    /// # Errors
    /// [`XmlError::Missing`] for an empty list the schema needs an entry in,
    /// [`XmlError::InvalidValue`] for a string that cannot be carried unchanged.
    pub fn to_xml(&self) -> Result<String, XmlError> {
        let mut out = String::from(DECL);
        out.push_str(&format!("<securityDescription xmlns=\"{SECURITY_DESCRIPTION_NS}\">\n"));
        if let Some(km) = &self.key_management {
            non_empty(&km.server_uris, "serverURI", "keyManagement")?;
            out.push_str(&format!(
                "  <keyManagement offsetTime=\"{}\" randomTimePeriod=\"{}\" uiccKeyManagement=\"{}\">\n",
                km.offset_time, km.random_time_period, km.uicc_key_management
            ));
            for uri in &km.server_uris {
                check_token("serverURI", uri, MAX_VALUE_LEN)?;
                text_el(&mut out, 4, "serverURI", uri);
            }
            out.push_str("  </keyManagement>\n");
        }
        non_empty(&self.key_ids, "keyId", "securityDescription")?;
        for key_id in &self.key_ids {
            non_empty(&key_id.media_flows, "mediaFlow", "keyId")?;
            out.push_str("  <keyId>\n");
            for flow in &key_id.media_flows {
                check_token("mediaFlow@flowID", &flow.flow_id, MAX_VALUE_LEN)?;
                out.push_str(&format!("    <mediaFlow flowID=\"{}\">\n", esc(&flow.flow_id)));
                flow.msk.write(&mut out, 6);
                out.push_str("    </mediaFlow>\n");
            }
            out.push_str("  </keyId>\n");
        }
        if let Some(fec) = &self.fec_protection {
            out.push_str(&format!("  <fecProtection fecEncodingId=\"{}\"", fec.fec_encoding_id));
            if let Some(i) = fec.fec_instance_id {
                out.push_str(&format!(" fecInstanceId=\"{i}\""));
            }
            if let Some(oti) = &fec.fec_oti_extension {
                check_token("fecProtection@fecOtiExtension", oti, MAX_VALUE_LEN)?;
                out.push_str(&format!(" fecOtiExtension=\"{}\"", esc(oti)));
            }
            out.push_str("/>\n");
        }
        out.push_str("</securityDescription>\n");
        Ok(out)
    }

    /// Decodes the fragment.
    ///
    /// # Errors
    /// See [`XmlError`].
    pub fn from_xml(body: &[u8]) -> Result<Self, XmlError> {
        const NS: &str = SECURITY_DESCRIPTION_NS;
        let root = root(
            body,
            NS,
            "securityDescription",
            "{urn:3GPP:metadata:2005:MBMS:securityDescription}securityDescription",
        )?;
        let key_management = match root.opt(NS, "keyManagement")? {
            None => None,
            Some(km) => Some(KeyManagement {
                server_uris: km
                    .many(NS, "serverURI", "keyManagement")?
                    .into_iter()
                    .map(|e| token(e, "serverURI"))
                    .collect::<Result<_, _>>()?,
                offset_time: opt_u64(km, "keyManagement@offsetTime", "offsetTime")?.unwrap_or(0),
                random_time_period: opt_u64(km, "keyManagement@randomTimePeriod", "randomTimePeriod")?.unwrap_or(0),
                uicc_key_management: match km.attr("uiccKeyManagement") {
                    None => true,
                    Some(v) => parse_bool("keyManagement@uiccKeyManagement", v)?,
                },
            }),
        };
        let mut key_ids = Vec::new();
        for k in root.many(NS, "keyId", "securityDescription")? {
            let mut media_flows = Vec::new();
            for f in k.many(NS, "mediaFlow", "keyId")? {
                let flow_id = f.req_attr("mediaFlow", "flowID")?;
                check_token("mediaFlow@flowID", flow_id, MAX_VALUE_LEN)?;
                let msk = MskRef::read(f.one(NS, "MSK", "mediaFlow")?, NS)?;
                media_flows.push(MediaFlow { flow_id: flow_id.to_owned(), msk });
            }
            key_ids.push(KeyId { media_flows });
        }
        let fec_protection = match root.opt(NS, "fecProtection")? {
            None => None,
            Some(f) => Some(FecProtection {
                fec_encoding_id: opt_u64(f, "fecProtection@fecEncodingId", "fecEncodingId")?.unwrap_or(0),
                fec_instance_id: opt_u64(f, "fecProtection@fecInstanceId", "fecInstanceId")?,
                fec_oti_extension: match f.attr("fecOtiExtension") {
                    None => None,
                    Some(v) => {
                        check_token("fecProtection@fecOtiExtension", v, MAX_VALUE_LEN)?;
                        Some(v.to_owned())
                    }
                },
            }),
        };
        Ok(SecurityDescription { key_management, key_ids, fec_protection })
    }

    /// Every MSK named, in document order.
    pub fn msks(&self) -> impl Iterator<Item = &MskRef> {
        self.key_ids.iter().flat_map(|k| k.media_flows.iter().map(|f| &f.msk))
    }
}

// ---------------------------------------------------------------------------------------------
// Registration and deregistration (§11.4, §11.5)

/// `mbmsSecurityRegister`: register to one or more MBMS User Services (§11.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    /// `serviceID` (xs:anyURI, 1..n): the USD `serviceId`s.
    pub service_ids: Vec<String>,
}

/// `mbmsSecurityDeregister`: deregister from one or more MBMS User Services (§11.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeregisterRequest {
    /// `serviceID` (xs:anyURI, 1..n).
    pub service_ids: Vec<String>,
}

fn service_list_to_xml(root_name: &'static str, ns: &str, ids: &[String]) -> Result<String, XmlError> {
    non_empty(ids, "serviceID", root_name)?;
    let mut out = String::from(DECL);
    out.push_str(&format!("<{root_name} xmlns=\"{ns}\">\n"));
    for id in ids {
        check_token("serviceID", id, MAX_VALUE_LEN)?;
        text_el(&mut out, 2, "serviceID", id);
    }
    out.push_str(&format!("</{root_name}>\n"));
    Ok(out)
}

fn service_list_from_xml(
    body: &[u8],
    ns: &'static str,
    name: &'static str,
    expected: &'static str,
) -> Result<Vec<String>, XmlError> {
    let root = root(body, ns, name, expected)?;
    root.many(ns, "serviceID", name)?.into_iter().map(|e| token(e, "serviceID")).collect()
}

impl RegisterRequest {
    /// Encodes the request.
    ///
    /// # Errors
    /// [`XmlError::Missing`] when there is no service, [`XmlError::InvalidValue`] for a bad ID.
    pub fn to_xml(&self) -> Result<String, XmlError> {
        service_list_to_xml("mbmsSecurityRegister", REGISTER_NS, &self.service_ids)
    }

    /// Decodes the request.
    ///
    /// # Errors
    /// See [`XmlError`].
    pub fn from_xml(body: &[u8]) -> Result<Self, XmlError> {
        let expected = "{urn:3GPP:metadata:2005:MBMS:securityRegistration}mbmsSecurityRegister";
        Ok(RegisterRequest { service_ids: service_list_from_xml(body, REGISTER_NS, "mbmsSecurityRegister", expected)? })
    }
}

impl DeregisterRequest {
    /// Encodes the request.
    ///
    /// # Errors
    /// [`XmlError::Missing`] when there is no service, [`XmlError::InvalidValue`] for a bad ID.
    pub fn to_xml(&self) -> Result<String, XmlError> {
        service_list_to_xml("mbmsSecurityDeregister", DEREGISTER_NS, &self.service_ids)
    }

    /// Decodes the request.
    ///
    /// # Errors
    /// See [`XmlError`].
    pub fn from_xml(body: &[u8]) -> Result<Self, XmlError> {
        let expected = "{urn:3GPP:metadata:2005:MBMS:securityDeregistration}mbmsSecurityDeregister";
        let ids = service_list_from_xml(body, DEREGISTER_NS, "mbmsSecurityDeregister", expected)?;
        Ok(DeregisterRequest { service_ids: ids })
    }
}

// ---------------------------------------------------------------------------------------------
// MSK request (§11.6)

/// `mbmsMSKRequest`: ask for one or more MSKs (§11.6). Key Number 0 asks for the group's current
/// MSK. The answer carries status codes only; the MSKs follow as pushed MIKEY messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MskRequest {
    /// The MSKs asked for (1..n).
    pub msks: Vec<MskRef>,
}

impl MskRequest {
    /// Encodes the request.
    ///
    /// # Errors
    /// [`XmlError::Missing`] when the list is empty.
    pub fn to_xml(&self) -> Result<String, XmlError> {
        non_empty(&self.msks, "MSK", "mbmsMSKRequest")?;
        let mut out = String::from(DECL);
        out.push_str(&format!("<mbmsMSKRequest xmlns=\"{MSK_REQUEST_NS}\">\n"));
        for m in &self.msks {
            m.write(&mut out, 2);
        }
        out.push_str("</mbmsMSKRequest>\n");
        Ok(out)
    }

    /// Decodes the request.
    ///
    /// # Errors
    /// See [`XmlError`].
    pub fn from_xml(body: &[u8]) -> Result<Self, XmlError> {
        const NS: &str = MSK_REQUEST_NS;
        let root = root(body, NS, "mbmsMSKRequest", "{urn:3GPP:metadata:2005:MBMS:mskRequest}mbmsMSKRequest")?;
        let msks =
            root.many(NS, "MSK", "mbmsMSKRequest")?.into_iter().map(|e| MskRef::read(e, NS)).collect::<Result<_, _>>();
        Ok(MskRequest { msks: msks? })
    }
}

// ---------------------------------------------------------------------------------------------
// Responses (§11.7, §11.8)

/// `mbmsSecurityRegisterResponse`: one status per service (§11.7); answers both registration and
/// deregistration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterResponse {
    /// `Response` elements (1..n).
    pub responses: Vec<ServiceStatus>,
}

/// One `Response` of a (de)registration answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    /// `serviceID`.
    pub service_id: String,
    /// `ResponseCode`.
    pub response_code: ResponseCode,
}

/// `mbmsMSKResponse`: one status per MSK asked for (§11.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MskResponse {
    /// `Response` elements (1..n).
    pub responses: Vec<MskStatus>,
}

/// One `Response` of an MSK answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MskStatus {
    /// The MSK.
    pub msk: MskRef,
    /// `ResponseCode`.
    pub response_code: ResponseCode,
}

impl RegisterResponse {
    /// Encodes the response.
    ///
    /// # Errors
    /// [`XmlError::Missing`] when the list is empty, [`XmlError::InvalidValue`] for a bad value.
    pub fn to_xml(&self) -> Result<String, XmlError> {
        non_empty(&self.responses, "Response", "mbmsSecurityRegisterResponse")?;
        let mut out = String::from(DECL);
        out.push_str(&format!("<mbmsSecurityRegisterResponse xmlns=\"{REGISTER_RESPONSE_NS}\">\n"));
        for r in &self.responses {
            check_token("serviceID", &r.service_id, MAX_VALUE_LEN)?;
            r.response_code.check()?;
            out.push_str("  <Response>\n");
            text_el(&mut out, 4, "serviceID", &r.service_id);
            text_el(&mut out, 4, "ResponseCode", &r.response_code.to_string());
            out.push_str("  </Response>\n");
        }
        out.push_str("</mbmsSecurityRegisterResponse>\n");
        Ok(out)
    }

    /// Decodes the response.
    ///
    /// # Errors
    /// See [`XmlError`].
    pub fn from_xml(body: &[u8]) -> Result<Self, XmlError> {
        const NS: &str = REGISTER_RESPONSE_NS;
        let expected = "{urn:3GPP:metadata:2005:MBMS:securityRegistrationResponse}mbmsSecurityRegisterResponse";
        let root = root(body, NS, "mbmsSecurityRegisterResponse", expected)?;
        let mut responses = Vec::new();
        for r in root.many(NS, "Response", "mbmsSecurityRegisterResponse")? {
            let service_id = token(r.one(NS, "serviceID", "Response")?, "serviceID")?;
            let response_code = ResponseCode::parse(r.one(NS, "ResponseCode", "Response")?.text("ResponseCode")?)?;
            responses.push(ServiceStatus { service_id, response_code });
        }
        Ok(RegisterResponse { responses })
    }
}

impl MskResponse {
    /// Encodes the response.
    ///
    /// # Errors
    /// [`XmlError::Missing`] when the list is empty, [`XmlError::InvalidValue`] for a bad code.
    pub fn to_xml(&self) -> Result<String, XmlError> {
        non_empty(&self.responses, "Response", "mbmsMSKResponse")?;
        let mut out = String::from(DECL);
        out.push_str(&format!("<mbmsMSKResponse xmlns=\"{MSK_RESPONSE_NS}\">\n"));
        for r in &self.responses {
            r.response_code.check()?;
            out.push_str("  <Response>\n");
            r.msk.write(&mut out, 4);
            text_el(&mut out, 4, "ResponseCode", &r.response_code.to_string());
            out.push_str("  </Response>\n");
        }
        out.push_str("</mbmsMSKResponse>\n");
        Ok(out)
    }

    /// Decodes the response.
    ///
    /// # Errors
    /// See [`XmlError`].
    pub fn from_xml(body: &[u8]) -> Result<Self, XmlError> {
        const NS: &str = MSK_RESPONSE_NS;
        let root = root(body, NS, "mbmsMSKResponse", "{urn:3GPP:metadata:2005:MBMS:mskResponse}mbmsMSKResponse")?;
        let mut responses = Vec::new();
        for r in root.many(NS, "Response", "mbmsMSKResponse")? {
            let msk = MskRef::read(r.one(NS, "MSK", "Response")?, NS)?;
            let response_code = ResponseCode::parse(r.one(NS, "ResponseCode", "Response")?.text("ResponseCode")?)?;
            responses.push(MskStatus { msk, response_code });
        }
        Ok(MskResponse { responses })
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn root(body: &[u8], ns: &'static str, name: &str, expected: &'static str) -> Result<Element, XmlError> {
    let root = xml::parse(body, MAX_XML_LEN)?;
    if !root.is(ns, name) {
        return Err(XmlError::WrongRoot { expected, found: root.qualified_name() });
    }
    Ok(root)
}

fn non_empty<T>(list: &[T], element: &'static str, parent: &'static str) -> Result<(), XmlError> {
    if list.is_empty() {
        return Err(XmlError::Missing { element, parent });
    }
    Ok(())
}

fn token(el: &Element, name: &'static str) -> Result<String, XmlError> {
    let t = el.text(name)?;
    check_token(name, t, MAX_VALUE_LEN)?;
    Ok(t.to_owned())
}

fn opt_u64(el: &Element, element: &'static str, attribute: &str) -> Result<Option<u64>, XmlError> {
    el.attr(attribute).map(|v| parse_unsigned(element, v, u64::MAX)).transpose()
}
