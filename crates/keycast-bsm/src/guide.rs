//! The Service Guide the BSM publishes from its own catalogue (issue 7 "Publishing"): a pure
//! function ([`build`]) from the services, programs, purchase items and offers to a consistent
//! set of OMA BCAST Service Guide fragments ([`keycast_guide::Guide`]) plus, per streaming
//! service, the 3GPP MBMS User Service Description and Service Protection Description — so that
//! no hand-written XML is needed to run the system. [`crate::http::guide`] serves the result.
//!
//! | catalogue | fragment | id **\[chosen\]** |
//! |---|---|---|
//! | service | `Service` (globalServiceID, Name, ServiceType 1 basic TV or 5 file download) | `svc-<service>` |
//! | service | `Access` (two KeyManagementSystems, GBA_U and GBA_ME; EncryptionType; session description) | `acc-<service>` |
//! | program | `Content` (its PEK group as ProtectionKeyID, its air time as validity) | `prg-<program>` |
//! | purchase item | `PurchaseItem` (globalPurchaseItemID, ServiceReferences) | `pi-<GlobalPurchaseItemID>` |
//! | offer | `PurchaseData` (price, period, tokens, pay-per-view program) | the offer id itself |
//! | — | one `PurchaseChannel` (PurchaseURL, optional PortalURL) | [`PURCHASE_CHANNEL_ID`] |
//!
//! The PurchaseData id **is** the BSM's offer id, because the MBMS User Service ID the terminal
//! builds from the guide is GlobalPurchaseItemID ‖ PurchaseDataID (seed §6.8.1) and the BSM
//! resolves Service Requests by those two values.
//!
//! Choices (**\[chosen\]**, for the wire profile):
//! - every Access fragment carries two `KeyManagementSystem`s, `oma-bcast-gba_u-mbms` and
//!   `oma-bcast-gba_me-mbms`, each with `protectionType` 1 (service protection), one type 0
//!   ProtectionKeyID per key group of the service (its SEK group, then the PEK groups of its
//!   programs; Key Domain ID ‖ Key Group, facts-ietf-oma.md §9), and `PermissionsIssuerURI` = the
//!   URL of the service's Service Protection Description. Seed §6.8.1.2 requires the
//!   RightsIssuerURI of every key management system to identify the Service Protection
//!   Description and to match one of the Access fragment's session description reference URIs;
//!   the provisioning URL the terminal buys at is the PurchaseChannel's `PurchaseURL`;
//! - the session description is the SDP inline (the broadcaster's, when configured, else one
//!   made from the default flow), an `SDPRef` when an external SDP URI is configured, a
//!   `USBDRef` to the USD (streaming services with a purchase item) and an `ADPRef` carrying the
//!   Service Protection Description's URI (this crate's SG model has no AuxiliaryDescription
//!   reference element);
//! - EncryptionType 1 (SRTP) for streaming services, 3 (DCF) for download services; the
//!   Service Protection Description and the USD are published for streaming services only;
//! - a service without a configured SDP gets one video flow at `239.255.<group hi>.<group lo>`,
//!   port [`DEFAULT_RTP_PORT`] (the broadcaster's address plan is not the BSM's to know);
//! - the MSK of every flow is the service's SEK group with Key Number 0 ("the current key",
//!   26.346 §11.3), in the service's Key Domain;
//! - the USD of a service lists one `userServiceDescription` per purchase item that includes it,
//!   with `serviceId` = the GlobalPurchaseItemID (the BSM's MBMS registration accepts it), and
//!   `sessionDescriptionURI` = the configured SDP URI, else the URL of the Access fragment that
//!   carries the SDP inline;
//! - fragment ids share one namespace in the HTTP routes; an offer id equal to another
//!   fragment's id (`svc-…`, `acc-…`, `prg-…`, `pi-…`, `pch-bsm`) is served as the first
//!   fragment in the guide's fixed order;
//! - prices: `MonetaryPrice` with the offer's amount and currency; `SubscriptionPeriod` =
//!   `PT<n>S` (xs:duration in seconds) for subscriptions and pay-per-time; `subscriptionType` 0
//!   subscription, 1 pay-per-time, 2 pay-per-view, 3 tokens; tokens as `TotalNumberToken`; a
//!   pay-per-view offer carries the program's air time as its validity and a `Description`
//!   `pay-per-view <program>`;
//! - versions: [`build`] stamps every fragment with the version it is given; the publisher
//!   ([`crate::http::guide::GuidePublisher`]) keeps a fragment's version while its content is
//!   unchanged and gives a changed or new fragment a version above every earlier one.

use std::collections::{BTreeMap, BTreeSet};

use keycast_guide::Guide;
use keycast_guide::fragments::{
    Access, AccessType, BroadcastServiceDelivery, Content, DescriptionRef, EncryptionType, KeyManagementSystem,
    KmsType, MonetaryPrice, PermissionsIssuerUri, PortalUrl, PriceInfo, ProtectionKeyId, ProtectionType,
    PurchaseChannel, PurchaseData as SgPurchaseData, PurchaseItem as SgPurchaseItem, Service as SgService, ServiceType,
    SessionDescription, TotalNumberToken, Validity,
};
use keycast_guide::sdp::{Connection, Sdp, SdpMedia};
use keycast_guide::spd::{KeyId, KeyManagement, MediaFlow, MskRef, SecurityDescription};
use keycast_guide::usd::{DeliveryMethod, UsdName, UserServiceBundle, UserServiceDescription};

use crate::domain::{Program, PurchaseData, PurchaseItem, PurchaseKind, Service, ntp_seconds};
use crate::store::{BsmStore, StoreError};

/// The id of the one PurchaseChannel fragment **\[chosen\]**.
pub const PURCHASE_CHANNEL_ID: &str = "pch-bsm";
/// RTP port of the default flow of a service without a configured SDP **\[chosen\]**.
pub const DEFAULT_RTP_PORT: u16 = 5004;
/// Path prefix of the published guide on the provisioning listener.
pub const GUIDE_PATH: &str = "/guide/v1";

/// What the guide is built from: the catalogue as the store holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogueSnapshot {
    /// Services.
    pub services: Vec<Service>,
    /// Programs.
    pub programs: Vec<Program>,
    /// Purchase items.
    pub items: Vec<PurchaseItem>,
    /// Offers.
    pub offers: Vec<PurchaseData>,
}

impl CatalogueSnapshot {
    /// Reads the catalogue from the store.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn read<S: BsmStore + Sync>(store: &S) -> Result<Self, StoreError> {
        Ok(CatalogueSnapshot {
            services: store.services().await?,
            programs: store.programs().await?,
            items: store.purchase_items().await?,
            offers: store.purchase_data().await?,
        })
    }
}

/// The broadcaster's session description of one service, when known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceDelivery {
    /// The SDP text (carried inline in the Access fragment; its media give the flows).
    pub sdp: Option<String>,
    /// Where the broadcaster publishes it (an `SDPRef`).
    pub sdp_uri: Option<String>,
}

/// Where things are, as terminals reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuideConfig {
    /// The BSM's FQDN (SDP origin).
    pub fqdn: String,
    /// The provisioning URL (`…/sprov`): the PurchaseChannel's PurchaseURL.
    pub purchase_url: String,
    /// A portal to send users to instead of a Service Request.
    pub portal_url: Option<String>,
    /// The key management server (`…/keymanagement`), named in the Service Protection
    /// Description.
    pub key_management_url: String,
    /// The published guide's base URL (`…/guide/v1`): USD and SPD URIs are under it.
    pub guide_url: String,
    /// Per-service session descriptions, by service id.
    pub deliveries: BTreeMap<String, ServiceDelivery>,
}

impl GuideConfig {
    /// The configuration of a BSM reached at `base_url` (`http://host:port`, no trailing
    /// slash): the provisioning routes and the guide under it, no portal.
    #[must_use]
    pub fn new(fqdn: &str, base_url: &str) -> Self {
        let base = base_url.trim_end_matches('/');
        GuideConfig {
            fqdn: fqdn.to_owned(),
            purchase_url: format!("{base}{}", crate::http::provisioning::SPROV_PATH),
            portal_url: None,
            key_management_url: format!("{base}{}", crate::http::provisioning::KEY_MANAGEMENT_PATH),
            guide_url: format!("{base}{GUIDE_PATH}"),
            deliveries: BTreeMap::new(),
        }
    }

    /// URL of a service's USD.
    #[must_use]
    pub fn usd_url(&self, service: &str) -> String {
        format!("{}/usd/{service}.xml", self.guide_url)
    }

    /// URL of a service's Service Protection Description.
    #[must_use]
    pub fn spd_url(&self, service: &str) -> String {
        format!("{}/spd/{service}.xml", self.guide_url)
    }
}

/// What the BSM publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The Service Guide fragments.
    pub guide: Guide,
    /// The MBMS USD of each streaming service (that some purchase item includes), by service id.
    pub usds: BTreeMap<String, UserServiceBundle>,
    /// The Service Protection Description of each streaming service, by service id.
    pub spds: BTreeMap<String, SecurityDescription>,
}

/// Why the guide cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuideBuildError {
    /// A configured SDP does not parse.
    #[error("the configured SDP of service `{service}`: {reason}")]
    BadSdp {
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
    /// The fragments do not hold together (a catalogue row names something missing).
    #[error("the guide is inconsistent: {0}")]
    Inconsistent(String),
}

/// The Service fragment id of a service.
#[must_use]
pub fn service_fragment_id(service: &str) -> String {
    format!("svc-{service}")
}

/// The Access fragment id of a service.
#[must_use]
pub fn access_fragment_id(service: &str) -> String {
    format!("acc-{service}")
}

/// The PurchaseItem fragment id of a purchase item.
#[must_use]
pub fn purchase_item_fragment_id(global_id: &str) -> String {
    format!("pi-{global_id}")
}

fn program_fragment_id(program: &str) -> String {
    format!("prg-{program}")
}

/// The session description of a service: the configured one or the default flow.
fn service_sdp(service: &Service, config: &GuideConfig) -> Result<(String, Sdp), GuideBuildError> {
    if let Some(text) = config.deliveries.get(&service.id.0).and_then(|d| d.sdp.as_ref()) {
        let sdp = Sdp::parse(text)
            .map_err(|e| GuideBuildError::BadSdp { service: service.id.0.clone(), reason: e.to_string() })?;
        return Ok((text.clone(), sdp));
    }
    let [hi, lo] = service.key_group.to_be_bytes();
    let mut sdp = Sdp::new_session(
        &service.name,
        &config.fqdn,
        u64::from(service.key_group),
        Connection::ip4_multicast(format!("239.255.{hi}.{lo}"), 16),
    );
    let proto = if service.streaming { "RTP/SAVP" } else { "RTP/AVP" };
    sdp.media.push(SdpMedia::rtp("video", DEFAULT_RTP_PORT, proto, 96, "H264", 90_000));
    Ok((sdp.to_sdp(), sdp))
}

fn price_info(offer: &PurchaseData) -> PriceInfo {
    let period = Some(format!("PT{}S", offer.period));
    let (subscription_type, subscription_period, tokens) = match &offer.kind {
        PurchaseKind::Subscription => (0, period, None),
        PurchaseKind::PayPerTime => (1, period, None),
        PurchaseKind::PayPerView(_) => (2, None, None),
        PurchaseKind::Tokens(n) => (
            3,
            None,
            Some(TotalNumberToken {
                count: u64::from(*n),
                token_type: None,
                consumption_amount: Some(1),
                consumption_unit: None,
                max_replay: None,
            }),
        ),
    };
    PriceInfo {
        subscription_type: Some(subscription_type),
        prices: vec![MonetaryPrice { currency: offer.price.currency.clone(), amount: offer.price.amount.clone() }],
        subscription_period,
        tokens,
    }
}

/// Builds the guide from the catalogue, every fragment at `version`.
///
/// # Errors
/// [`GuideBuildError::BadSdp`] for a configured SDP that does not parse;
/// [`GuideBuildError::Inconsistent`] when [`Guide::check`] fails (cannot happen with a catalogue
/// the store accepted, whose references are checked on write).
pub fn build(catalogue: &CatalogueSnapshot, config: &GuideConfig, version: u32) -> Result<Published, GuideBuildError> {
    let mut guide = Guide::new();
    let mut usds = BTreeMap::new();
    let mut spds = BTreeMap::new();
    let items_of = |service: &str| {
        catalogue.items.iter().filter(move |i| i.services.iter().any(|s| s.0 == service)).collect::<Vec<_>>()
    };

    for s in &catalogue.services {
        let sid = &s.id.0;
        // Key groups: the SEK group, then the PEK groups of its programs.
        let mut groups = vec![s.key_group];
        for p in catalogue.programs.iter().filter(|p| &p.service.0 == sid) {
            if !groups.contains(&p.key_group) {
                groups.push(p.key_group);
            }
        }
        let pkids: Vec<ProtectionKeyId> =
            groups.iter().map(|g| ProtectionKeyId::smartcard(s.key_domain.0, *g)).collect();
        guide.insert(keycast_guide::Fragment::Service(SgService {
            id: service_fragment_id(sid),
            version,
            validity: Validity::default(),
            global_service_id: Some(sid.clone()),
            base_cid: None,
            protection_key_ids: pkids.clone(),
            names: vec![s.name.clone()],
            service_types: vec![if s.streaming { ServiceType::BasicTv } else { ServiceType::FileDownload }],
        }));

        let (sdp_text, sdp) = service_sdp(s, config)?;
        let spd_url = config.spd_url(sid);
        let kms = |kms_type| KeyManagementSystem {
            kms_type,
            protection_type: Some(ProtectionType::ServiceProtection),
            protection_key_ids: pkids.clone(),
            permissions_issuer_uri: Some(PermissionsIssuerUri { uri: spd_url.clone(), kind: None }),
            terminal_binding_key_id: None,
        };
        let items = items_of(sid);
        let delivery = config.deliveries.get(sid);
        let publish_usd = s.streaming && !items.is_empty();
        // Without an external SDP the USD points at the Access fragment, which carries it inline.
        let access_url = format!("{}/fragments/{}.xml", config.guide_url, access_fragment_id(sid));
        let session_description = SessionDescription {
            // Trailing line ends trimmed: the XML reader trims text, and a fragment must read
            // back to itself.
            sdp: Some(sdp_text.trim_end().to_owned()),
            sdp_refs: delivery.and_then(|d| d.sdp_uri.clone()).map(DescriptionRef::uri).into_iter().collect(),
            usbd_refs: if publish_usd { vec![DescriptionRef::uri(config.usd_url(sid))] } else { Vec::new() },
            adp_refs: vec![DescriptionRef::uri(spd_url.clone())],
        };
        guide.insert(keycast_guide::Fragment::Access(Access {
            id: access_fragment_id(sid),
            version,
            validity: Validity::default(),
            key_management_systems: vec![kms(KmsType::GbaUMbms), kms(KmsType::GbaMeMbms)],
            encryption_type: Some(if s.streaming { EncryptionType::Srtp } else { EncryptionType::Dcf }),
            access_type: AccessType::Broadcast(BroadcastServiceDelivery {
                // 1: 3GPP MBMS (facts-ietf-oma.md §9, BDSType).
                bds_type: Some(1),
                session_description: Some(session_description),
                file_description: None,
            }),
            service_refs: vec![service_fragment_id(sid)],
        }));

        if s.streaming {
            let msk = MskRef { key_domain_id: s.key_domain.0, msk_id: msk_id(s.key_group) };
            let media_flows: Vec<MediaFlow> = sdp
                .media
                .iter()
                .filter_map(|m| sdp.flow_id(m))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|flow_id| MediaFlow { flow_id, msk })
                .collect();
            if !media_flows.is_empty() {
                spds.insert(
                    sid.clone(),
                    SecurityDescription {
                        key_management: Some(KeyManagement::new(vec![config.key_management_url.clone()])),
                        key_ids: vec![KeyId { media_flows }],
                        fec_protection: None,
                    },
                );
            }
            if publish_usd {
                let services = items
                    .iter()
                    .map(|i| UserServiceDescription {
                        service_id: i.global_id.clone(),
                        names: vec![UsdName { name: i.name.clone(), lang: None }],
                        service_languages: Vec::new(),
                        delivery_methods: vec![DeliveryMethod {
                            session_description_uri: delivery
                                .and_then(|d| d.sdp_uri.clone())
                                .unwrap_or_else(|| access_url.clone()),
                            protection_description_uri: Some(spd_url.clone()),
                            associated_procedure_description_uri: None,
                        }],
                    })
                    .collect();
                usds.insert(sid.clone(), UserServiceBundle { fec_description_uri: None, services });
            }
        }
    }

    for p in &catalogue.programs {
        let Some(s) = catalogue.services.iter().find(|s| s.id == p.service) else { continue };
        guide.insert(keycast_guide::Fragment::Content(Content {
            id: program_fragment_id(&p.id.0),
            version,
            validity: validity(p.window.from, p.window.until),
            global_content_id: Some(p.id.0.clone()),
            service_refs: vec![service_fragment_id(&p.service.0)],
            protection_key_ids: vec![ProtectionKeyId::smartcard(s.key_domain.0, p.key_group)],
            names: Vec::new(),
        }));
    }

    for i in &catalogue.items {
        guide.insert(keycast_guide::Fragment::PurchaseItem(SgPurchaseItem {
            id: purchase_item_fragment_id(&i.global_id),
            version,
            validity: Validity::default(),
            global_purchase_item_id: i.global_id.clone(),
            service_refs: i.services.iter().map(|s| service_fragment_id(&s.0)).collect(),
            content_refs: Vec::new(),
            protection_key_ids: Vec::new(),
            names: vec![i.name.clone()],
            closed: None,
        }));
    }

    for o in &catalogue.offers {
        let (validity, mut descriptions) = match &o.kind {
            PurchaseKind::PayPerView(program) => (
                catalogue
                    .programs
                    .iter()
                    .find(|p| &p.id == program)
                    .map_or_else(Validity::default, |p| validity(p.window.from, p.window.until)),
                vec![format!("pay-per-view {}", program.0)],
            ),
            _ => (Validity::default(), Vec::new()),
        };
        // What the user gets beyond live viewing: recordings play back this many times.
        if o.play_backs > 0 {
            descriptions.push(format!("recordings play back {} times", o.play_backs));
        }
        guide.insert(keycast_guide::Fragment::PurchaseData(SgPurchaseData {
            id: o.id.clone(),
            version,
            validity,
            descriptions,
            price_info: Some(price_info(o)),
            purchase_item_ref: purchase_item_fragment_id(&o.item),
            purchase_channel_refs: vec![PURCHASE_CHANNEL_ID.to_owned()],
        }));
    }

    guide.insert(keycast_guide::Fragment::PurchaseChannel(PurchaseChannel {
        id: PURCHASE_CHANNEL_ID.to_owned(),
        version,
        validity: Validity::default(),
        rights_issuer_uri: None,
        names: vec![config.fqdn.clone()],
        portal_urls: config.portal_url.iter().map(|u| PortalUrl { url: u.clone(), supported_service: None }).collect(),
        purchase_urls: vec![config.purchase_url.clone()],
    }));

    guide.check().map_err(|errors| {
        GuideBuildError::Inconsistent(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    })?;
    Ok(Published { guide, usds, spds })
}

/// MSK ID of a key group's current key: Key Group ‖ Key Number 0 (33.246 §6.3.2.1).
fn msk_id(key_group: u16) -> [u8; 4] {
    let [a, b] = key_group.to_be_bytes();
    [a, b, 0, 0]
}

/// A window of Unix seconds as NTP-second validity (open where past the NTP era).
fn validity(from: u64, until: u64) -> Validity {
    Validity { valid_from: ntp_seconds(from), valid_to: ntp_seconds(until) }
}

/// Sets the version of every fragment of `guide` by `f(id, current)`.
pub fn set_versions(guide: &mut Guide, mut f: impl FnMut(&str) -> u32) {
    for v in guide.services.values_mut() {
        v.version = f(&v.id);
    }
    for v in guide.contents.values_mut() {
        v.version = f(&v.id);
    }
    for v in guide.accesses.values_mut() {
        v.version = f(&v.id);
    }
    for v in guide.purchase_items.values_mut() {
        v.version = f(&v.id);
    }
    for v in guide.purchase_data.values_mut() {
        v.version = f(&v.id);
    }
    for v in guide.purchase_channels.values_mut() {
        v.version = f(&v.id);
    }
}
