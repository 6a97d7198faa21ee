//! Keycast guide: the OMA BCAST Service Guide fragments and 3GPP MBMS descriptions the
//! Smartcard Profile needs, read and written, and the two entry points that turn them into
//! what a terminal needs to register.
//!
//! This crate does **no IO, reads no clock and starts no threads**: documents come in as
//! strings, results go out as values.
//!
//! | module | what | governing text |
//! |---|---|---|
//! | [`fragments`] | Service, Content, Access (KeyManagementSystem, EncryptionType, session description), PurchaseItem, PurchaseData, PurchaseChannel | OMA BCAST SG (facts-ietf-oma.md §9) |
//! | [`usd`] | MBMS User Service (Bundle) Description | TS 26.346 §11.2 |
//! | [`spd`] | MBMS Service Protection (Security) Description | TS 26.346 §11.3 (facts-3gpp.md §5.1) |
//! | [`sdp`] | `m=`, `c=`, `a=rtpmap`, `a=key-mgmt:mikey` | RFC 4566, RFC 4567 |
//! | [`entry`] | the two Smartcard Profile entry points | seed §6.8.1 |
//! | [`guide`] | a fragment set, reference checks, offers and prices | seed §6.8.1 |
//!
//! **Dependency.** The crate depends on `keycast-provisioning` only to reuse its bounded XML
//! reader/writer (size and depth limits, no DOCTYPE or entities, namespace resolution; the
//! `keycast_provisioning::xml` module) and its TS 26.346 Security Description codec, instead of
//! keeping a second copy of each. DESIGN.md's table lists no dependency for this crate; this
//! paragraph records why there is one.
//!
//! ```
//! use keycast_guide::fragments::{PurchaseData, PurchaseItem};
//! use keycast_guide::entry::user_service_id;
//!
//! let item = PurchaseItem::from_xml(
//!     r#"<PurchaseItem xmlns="urn:oma:xml:bcast:sg:fragments:1.0" id="pi-1" version="1"
//!                      globalPurchaseItemID="urn:example:pi:news">
//!          <ServiceReference idRef="svc-1"/>
//!        </PurchaseItem>"#,
//! )
//! .unwrap();
//! let data = PurchaseData::from_xml(
//!     r#"<PurchaseData xmlns="urn:oma:xml:bcast:sg:fragments:1.0" id="pd-month" version="1">
//!          <PurchaseItemReference idRef="pi-1"/>
//!        </PurchaseData>"#,
//! )
//! .unwrap();
//! assert_eq!(user_service_id(&item, &data), "urn:example:pi:newspd-month");
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod entry;
pub mod error;
pub mod fragments;
pub mod guide;
pub mod sdp;
pub mod spd;
pub mod usd;
mod xmlw;

pub use entry::{ProtectedService, RegistrationInterface, via_session_description, via_usd};
pub use error::GuideError;
pub use fragments::Fragment;
pub use guide::Guide;
