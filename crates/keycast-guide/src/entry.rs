//! The two Smartcard Profile entry points of seed §6.8.1, as pure functions that turn what the
//! terminal has read into what it needs to register ([`ProtectedService`]).
//!
//! | entry point | [`via_usd`] (§6.8.1.1) | [`via_session_description`] (§6.8.1.2) |
//! |---|---|---|
//! | session description reference | MBMS USD | SDP |
//! | registration | MBMS User Service Registration (the BCAST Registration Request) | OMA BCAST Service Request |
//! | User Service ID | the USD `serviceId` | GlobalPurchaseItemID ‖ PurchaseDataID |
//! | RightsIssuerURI | ignored | must match a session description reference URI of the Access fragment |
//! | BaseCID | ignored (DRM Profile only) | ignored |
//! | key management servers, MSKs | the Service Protection Description | the Service Protection Description (an auxiliary description) |

use crate::error::GuideError;
use crate::fragments::{Access, KeyGroupRef, KmsType, PurchaseData, PurchaseItem};
use crate::sdp::Sdp;
use crate::spd::{MskRef, SecurityDescription};
use crate::usd::UserServiceDescription;

/// How the terminal registers for the service (seed §6.8.1.1, §6.8.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegistrationInterface {
    /// MBMS User Service Registration (33.246 §6.3.2.1A), which is the BCAST "Registration
    /// Request"; MSKs are then asked for with the MSK Request ("LTKM Request").
    MbmsUserServiceRegistration,
    /// The OMA BCAST Service Request (service provisioning).
    BcastServiceRequest,
}

/// One protected media flow of the Service Protection Description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedFlow {
    /// `flowID`: `<destination address>/<RTP port>`.
    pub flow_id: String,
    /// The MSK (Key Number 0: the current key).
    pub msk: MskRef,
    /// The index of the SDP media description with the same address and port, when an SDP was
    /// given and one matches.
    pub sdp_media: Option<usize>,
}

/// What a terminal needs to register for a protected service and fetch its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedService {
    /// Which registration message to send.
    pub registration: RegistrationInterface,
    /// The MBMS User Service IDs to name in the registration.
    pub user_service_ids: Vec<String>,
    /// Key management (BSM / BM-SC) server URIs, in the order given; the terminal picks one at
    /// random (26.346 §11.3.1, §9.3.5).
    pub key_management_servers: Vec<String>,
    /// `offsetTime` in seconds (back-off for MSK requests).
    pub offset_time: u64,
    /// `randomTimePeriod` in seconds.
    pub random_time_period: u64,
    /// `uiccKeyManagement`: whether UICC-based key management is required.
    pub uicc_key_management: bool,
    /// The MSKs of the description, without repeats, in order of appearance.
    pub msks: Vec<MskRef>,
    /// Key Domain ID / Key Group pairs, sorted, without repeats: from the MSKs and (entry point
    /// via the Session Description) the Access fragment's type 0 ProtectionKeyIDs.
    pub key_groups: Vec<KeyGroupRef>,
    /// The protected media flows.
    pub flows: Vec<ProtectedFlow>,
    /// The Smartcard Profile key management system named by the Access fragment (GBA_U or
    /// GBA_ME); `None` via the USD.
    pub kms_type: Option<KmsType>,
    /// The RightsIssuerURI that identified the Service Protection Description; `None` via the
    /// USD, where it is ignored.
    pub rights_issuer_uri: Option<String>,
}

/// The MBMS User Service ID of a BCAST purchase: GlobalPurchaseItemID ‖ PurchaseDataID
/// (seed §6.8.1; plain concatenation, no separator).
#[must_use]
pub fn user_service_id(item: &PurchaseItem, data: &PurchaseData) -> String {
    let mut s = String::with_capacity(item.global_purchase_item_id.len() + data.id.len());
    s.push_str(&item.global_purchase_item_id);
    s.push_str(&data.id);
    s
}

fn from_spd(
    spd: &SecurityDescription,
    registration: RegistrationInterface,
    user_service_ids: Vec<String>,
    sdp: Option<&Sdp>,
) -> Result<ProtectedService, GuideError> {
    let km = spd.key_management.as_ref().ok_or(GuideError::NoKeyManagementServer)?;
    if km.server_uris.is_empty() {
        return Err(GuideError::NoKeyManagementServer);
    }
    let mut msks: Vec<MskRef> = Vec::new();
    let mut flows = Vec::new();
    for flow in spd.key_ids.iter().flat_map(|k| &k.media_flows) {
        if !msks.contains(&flow.msk) {
            msks.push(flow.msk);
        }
        let sdp_media = sdp.and_then(|s| s.media.iter().position(|m| s.flow_id(m).as_deref() == Some(&flow.flow_id)));
        flows.push(ProtectedFlow { flow_id: flow.flow_id.clone(), msk: flow.msk, sdp_media });
    }
    let mut key_groups: Vec<KeyGroupRef> =
        msks.iter().map(|m| KeyGroupRef { key_domain_id: m.key_domain_id, key_group: m.key_group() }).collect();
    key_groups.sort();
    key_groups.dedup();
    Ok(ProtectedService {
        registration,
        user_service_ids,
        key_management_servers: km.server_uris.clone(),
        offset_time: km.offset_time,
        random_time_period: km.random_time_period,
        uicc_key_management: km.uicc_key_management,
        msks,
        key_groups,
        flows,
        kms_type: None,
        rights_issuer_uri: None,
    })
}

/// Entry point 1 (seed §6.8.1.1): the MBMS USD, with the Service Protection Description its
/// delivery method's `protectionDescriptionURI` points to.
///
/// The User Service ID is the USD `serviceId`; the RightsIssuerURI and BaseCID of the Service
/// Guide are ignored; registration is the MBMS User Service Registration.
///
/// # Errors
/// [`GuideError::NotProtected`] when no delivery method has a `protectionDescriptionURI`;
/// [`GuideError::NoKeyManagementServer`] when the description names no server.
pub fn via_usd(usd: &UserServiceDescription, spd: &SecurityDescription) -> Result<ProtectedService, GuideError> {
    if usd.protection_description_uris().is_empty() {
        return Err(GuideError::NotProtected(usd.service_id.clone()));
    }
    from_spd(spd, RegistrationInterface::MbmsUserServiceRegistration, vec![usd.service_id.clone()], None)
}

/// Entry point 2 (seed §6.8.1.2): the Access fragment's session description (SDP) with the
/// Service Protection Description carried as an auxiliary description, identified by the
/// RightsIssuerURI.
///
/// Checks, in order: the Access fragment offers a Smartcard Profile key management system;
/// `rights_issuer_uri` — and the `PermissionsIssuerURI` of every Smartcard Profile key
/// management system — matches one of the Access fragment's session description reference
/// URIs (exact string comparison **\[chosen\]**); `data` belongs to `item`. The User Service ID
/// is GlobalPurchaseItemID ‖ PurchaseDataID; registration is by Service Request. SDP media are
/// matched to the description's flows by `<address>/<port>`.
///
/// # Errors
/// [`GuideError::NotSmartcardProfile`], [`GuideError::RightsIssuerMismatch`],
/// [`GuideError::PurchaseMismatch`], [`GuideError::NoKeyManagementServer`].
pub fn via_session_description(
    access: &Access,
    item: &PurchaseItem,
    data: &PurchaseData,
    sdp: &Sdp,
    spd: &SecurityDescription,
    rights_issuer_uri: &str,
) -> Result<ProtectedService, GuideError> {
    let kms = access.smartcard_systems().next().ok_or_else(|| GuideError::NotSmartcardProfile(access.id.clone()))?;
    let refs: Vec<&str> = access.session_description().map(|sd| sd.reference_uris().collect()).unwrap_or_default();
    let mismatch = |uri: &str| GuideError::RightsIssuerMismatch {
        rights_issuer_uri: uri.to_owned(),
        access_id: access.id.clone(),
        known: if refs.is_empty() { "none".to_owned() } else { refs.join(", ") },
    };
    if !refs.contains(&rights_issuer_uri) {
        return Err(mismatch(rights_issuer_uri));
    }
    for k in access.smartcard_systems() {
        if let Some(p) = &k.permissions_issuer_uri
            && !refs.contains(&p.uri.as_str())
        {
            return Err(mismatch(&p.uri));
        }
    }
    if data.purchase_item_ref != item.id {
        return Err(GuideError::PurchaseMismatch {
            purchase_data: data.id.clone(),
            refers_to: data.purchase_item_ref.clone(),
            purchase_item: item.id.clone(),
        });
    }
    let mut out =
        from_spd(spd, RegistrationInterface::BcastServiceRequest, vec![user_service_id(item, data)], Some(sdp))?;
    out.key_groups.extend(access.smartcard_systems().flat_map(|k| k.key_groups()));
    out.key_groups.sort();
    out.key_groups.dedup();
    out.kms_type = Some(kms.kms_type.clone());
    out.rights_issuer_uri = Some(rights_issuer_uri.to_owned());
    Ok(out)
}
