//! The MBMS User Service Description (TS 26.346 §5.2.2 / §11.2) as far as the Smartcard Profile
//! needs it: the bundle, each user service's `serviceId`, names and delivery methods with their
//! `sessionDescriptionURI` and `protectionDescriptionURI` (facts-3gpp.md §5.1: the Security
//! Description is referenced by the `protectionDescriptionURI` of a `deliveryMethod`).
//!
//! The namespace and the root (`bundleDescription` holding `userServiceDescription` elements)
//! are not in the reference pages; they are read from TS 26.346 §11.2 and agree with public
//! MBMS middleware test data (5G-MAG reference tools), which uses
//! `userServiceDescription@serviceId`, `name@lang` and `deliveryMethod@sessionDescriptionURI`.
//! Like every 26.346 schema the USD is lax: unknown elements and attributes are skipped.

use crate::error::GuideError;
use crate::xmlw::{self, Attrs, attr_string, req_attr_string, text_string};
use keycast_provisioning::xml::{DECL, Element, XmlError};

/// Namespace of the User Service Bundle Description (TS 26.346 §11.2).
pub const USD_NS: &str = "urn:3GPP:metadata:2005:MBMS:userServiceDescription";
/// Content type of the User Service Description (26.346 Annex C; IANA media types).
pub const USD_CONTENT_TYPE: &str = "application/mbms-user-service-description+xml";
/// Largest USD accepted, in octets **\[chosen\]**.
pub const MAX_USD_LEN: usize = 64 * 1024;

const NS: &str = USD_NS;
const DOC: &str = "userServiceDescription";

/// `bundleDescription`: one or more user services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserServiceBundle {
    /// `fecDescriptionURI`.
    pub fec_description_uri: Option<String>,
    /// `userServiceDescription` (1..n).
    pub services: Vec<UserServiceDescription>,
}

/// `userServiceDescription`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserServiceDescription {
    /// `serviceId` (required): the MBMS User Service ID; for BCAST services it equals
    /// GlobalPurchaseItemID ‖ PurchaseDataID (seed §6.8.1).
    pub service_id: String,
    /// `name` (0..n) with its `lang`.
    pub names: Vec<UsdName>,
    /// `serviceLanguage` (0..n).
    pub service_languages: Vec<String>,
    /// `deliveryMethod` (1..n).
    pub delivery_methods: Vec<DeliveryMethod>,
}

/// A `name` and its `lang` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsdName {
    /// The name.
    pub name: String,
    /// `lang`.
    pub lang: Option<String>,
}

/// `deliveryMethod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryMethod {
    /// `sessionDescriptionURI` (required): where the SDP of this delivery is.
    pub session_description_uri: String,
    /// `protectionDescriptionURI`: where the Security Description is; absent when the delivery
    /// is not protected.
    pub protection_description_uri: Option<String>,
    /// `associatedProcedureDescriptionURI`.
    pub associated_procedure_description_uri: Option<String>,
}

impl UserServiceDescription {
    /// The protection description URIs of the delivery methods, in order, without repeats.
    #[must_use]
    pub fn protection_description_uris(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        for d in &self.delivery_methods {
            if let Some(u) = d.protection_description_uri.as_deref()
                && !v.contains(&u)
            {
                v.push(u);
            }
        }
        v
    }

    fn read(el: &Element) -> Result<Self, XmlError> {
        Ok(UserServiceDescription {
            service_id: req_attr_string(el, "userServiceDescription", "serviceId")?,
            names: el
                .all(NS, "name")
                .map(|n| Ok(UsdName { name: text_string(n, "name")?, lang: attr_string(n, "lang") }))
                .collect::<Result<_, XmlError>>()?,
            service_languages: el
                .all(NS, "serviceLanguage")
                .map(|l| text_string(l, "serviceLanguage"))
                .collect::<Result<_, _>>()?,
            delivery_methods: el
                .many(NS, "deliveryMethod", "userServiceDescription")?
                .into_iter()
                .map(|d| {
                    Ok(DeliveryMethod {
                        session_description_uri: req_attr_string(d, "deliveryMethod", "sessionDescriptionURI")?,
                        protection_description_uri: attr_string(d, "protectionDescriptionURI"),
                        associated_procedure_description_uri: attr_string(d, "associatedProcedureDescriptionURI"),
                    })
                })
                .collect::<Result<_, XmlError>>()?,
        })
    }

    fn write(&self, out: &mut String) {
        xmlw::open(out, 2, "userServiceDescription", Attrs::new().add("serviceId", &self.service_id));
        for n in &self.names {
            xmlw::text(out, 4, "name", Attrs::new().opt("lang", n.lang.as_ref()), &n.name);
        }
        for l in &self.service_languages {
            xmlw::text(out, 4, "serviceLanguage", Attrs::new(), l);
        }
        for d in &self.delivery_methods {
            let a = Attrs::new()
                .opt("associatedProcedureDescriptionURI", d.associated_procedure_description_uri.as_ref())
                .opt("protectionDescriptionURI", d.protection_description_uri.as_ref())
                .add("sessionDescriptionURI", &d.session_description_uri);
            xmlw::empty(out, 4, "deliveryMethod", a);
        }
        xmlw::close(out, 2, "userServiceDescription");
    }
}

impl UserServiceBundle {
    /// Decodes a `bundleDescription`.
    ///
    /// # Errors
    /// [`GuideError::Xml`] naming the element at fault.
    pub fn from_xml(xml: &str) -> Result<Self, GuideError> {
        let el = xmlw::parse_doc(xml, MAX_USD_LEN, DOC)?;
        if !el.is(NS, "bundleDescription") {
            return Err(GuideError::Xml {
                fragment: DOC,
                source: XmlError::WrongRoot {
                    expected: "{urn:3GPP:metadata:2005:MBMS:userServiceDescription}bundleDescription",
                    found: el.qualified_name(),
                },
            });
        }
        let read = || -> Result<Self, XmlError> {
            Ok(UserServiceBundle {
                fec_description_uri: attr_string(&el, "fecDescriptionURI"),
                services: el
                    .many(NS, "userServiceDescription", "bundleDescription")?
                    .into_iter()
                    .map(UserServiceDescription::read)
                    .collect::<Result<_, _>>()?,
            })
        };
        read().map_err(GuideError::xml(DOC))
    }

    /// Encodes the bundle.
    #[must_use]
    pub fn to_xml(&self) -> String {
        let mut out = String::from(DECL);
        let a = Attrs::new().add("xmlns", NS).opt("fecDescriptionURI", self.fec_description_uri.as_ref());
        xmlw::open(&mut out, 0, "bundleDescription", a);
        for s in &self.services {
            s.write(&mut out);
        }
        xmlw::close(&mut out, 0, "bundleDescription");
        out
    }

    /// The user service with this `serviceId`.
    #[must_use]
    pub fn service(&self, service_id: &str) -> Option<&UserServiceDescription> {
        self.services.iter().find(|s| s.service_id == service_id)
    }
}
