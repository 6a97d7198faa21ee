//! The MBMS Service Protection Description: the TS 26.346 §11.3 Security Description
//! (`securityDescription`: `keyManagement` with the `serverURI` list and back-off, `keyId` with
//! the media flows and their MSKs, `fecProtection`; facts-3gpp.md §5.1).
//!
//! The codec is the one `keycast-provisioning` already has (the BM-SC and the terminal share
//! it); this module re-exports it and adapts its errors, so there is one implementation of the
//! schema in the workspace.

use crate::error::GuideError;

pub use keycast_provisioning::mbms::{
    FecProtection, KeyId, KeyManagement, MediaFlow, MskRef, SECURITY_DESCRIPTION_CONTENT_TYPE, SECURITY_DESCRIPTION_NS,
    SecurityDescription,
};

/// Decodes a Service Protection Description.
///
/// # Errors
/// [`GuideError::Xml`] with fragment `securityDescription`.
pub fn parse_spd(xml: &str) -> Result<SecurityDescription, GuideError> {
    // The same pre-check as for the fragments (characters XML 1.0 forbids); the decoder proper
    // is keycast-provisioning's.
    if xml.chars().any(|c| !keycast_provisioning::xml::is_xml_char(c)) {
        return Err(GuideError::Xml {
            fragment: "securityDescription",
            source: keycast_provisioning::xml::XmlError::Syntax("character not allowed in XML 1.0".into()),
        });
    }
    SecurityDescription::from_xml(xml.as_bytes()).map_err(GuideError::xml("securityDescription"))
}

/// Encodes a Service Protection Description.
///
/// # Errors
/// [`GuideError::Xml`] when a list the schema needs an entry in is empty, or a value cannot be
/// carried unchanged.
pub fn spd_to_xml(spd: &SecurityDescription) -> Result<String, GuideError> {
    spd.to_xml().map_err(GuideError::xml("securityDescription"))
}
