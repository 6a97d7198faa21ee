//! The one error type of this crate.

use keycast_provisioning::xml::XmlError;

/// Why a fragment, description or SDP was refused, or why an entry point cannot be resolved.
///
/// Syntax problems name the fragment (or document) and the element; meaning problems (a
/// reference that resolves to nothing, a RightsIssuerURI that matches no session description
/// reference) name the identifiers involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuideError {
    /// An XML document was refused: not well formed, over a limit, wrong root, or a required
    /// element/attribute is missing or invalid. `fragment` names the document (`Service`,
    /// `Access`, `userServiceDescription`, ...); the source names the element.
    #[error("{fragment} fragment: {source}")]
    Xml {
        /// The fragment or document being read.
        fragment: &'static str,
        /// What the XML layer reported (it names the element).
        #[source]
        source: XmlError,
    },
    /// An SDP session description was refused.
    #[error("SDP line {line}: {reason}")]
    Sdp {
        /// 1-based line number (0 for the document as a whole).
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A root element is not a Service Guide fragment this crate knows.
    #[error("`{0}` is not a supported Service Guide fragment")]
    UnknownFragment(String),
    /// A fragment refers (by `idRef`) to a fragment the guide does not hold.
    #[error("{fragment} `{id}`: {element} `{target}` resolves to no fragment")]
    DanglingReference {
        /// The referring fragment type.
        fragment: &'static str,
        /// Its `id`.
        id: String,
        /// The reference element (`PurchaseItemReference`, `ServiceReference`, ...).
        element: &'static str,
        /// The `idRef` that resolves to nothing.
        target: String,
    },
    /// Seed §6.8.1.2: the RightsIssuerURI must match one of the session description
    /// reference URIs of the same Access fragment.
    #[error(
        "RightsIssuerURI `{rights_issuer_uri}` matches none of the session description reference URIs of Access `{access_id}` ({known})"
    )]
    RightsIssuerMismatch {
        /// The RightsIssuerURI given (or read from a KeyManagementSystem).
        rights_issuer_uri: String,
        /// The Access fragment.
        access_id: String,
        /// The reference URIs it does offer, comma-separated (`none` when it offers none).
        known: String,
    },
    /// The Access fragment names no Smartcard Profile key management system
    /// (`oma-bcast-gba_u-mbms` or `oma-bcast-gba_me-mbms`).
    #[error("Access `{0}` offers no Smartcard Profile KeyManagementSystem")]
    NotSmartcardProfile(String),
    /// The Service Protection Description names no key management server (`keyManagement`
    /// is absent), so the terminal does not know where to register.
    #[error("the Service Protection Description names no key management server")]
    NoKeyManagementServer,
    /// The MBMS User Service has no delivery method with a `protectionDescriptionURI`: it is
    /// not protected, so there is nothing to register for.
    #[error("user service `{0}` has no protected delivery method")]
    NotProtected(String),
    /// The PurchaseData does not belong to the PurchaseItem it was paired with.
    #[error("PurchaseData `{purchase_data}` refers to PurchaseItem `{refers_to}`, not `{purchase_item}`")]
    PurchaseMismatch {
        /// The PurchaseData id.
        purchase_data: String,
        /// Its PurchaseItemReference.
        refers_to: String,
        /// The PurchaseItem id it was paired with.
        purchase_item: String,
    },
}

impl GuideError {
    pub(crate) fn xml(fragment: &'static str) -> impl Fn(XmlError) -> GuideError {
        move |source| GuideError::Xml { fragment, source }
    }
}
