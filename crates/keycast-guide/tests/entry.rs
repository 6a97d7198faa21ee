//! The two Smartcard Profile entry points of seed §6.8.1, driven with the example documents.

mod common;

use common::data;
use keycast_guide::GuideError;
use keycast_guide::entry::{RegistrationInterface, user_service_id, via_session_description, via_usd};
use keycast_guide::fragments::{Access, KeyGroupRef, KmsType, PurchaseData, PurchaseItem};
use keycast_guide::sdp::Sdp;
use keycast_guide::spd::parse_spd;
use keycast_guide::usd::UserServiceBundle;

const SPD_URI: &str = "http://bsm.operator.example/spd/news24.xml";
const KG: KeyGroupRef = KeyGroupRef { key_domain_id: [0x68, 0xca, 0x0c], key_group: 0x68ca };

fn purchase() -> (PurchaseItem, PurchaseData) {
    (
        PurchaseItem::from_xml(&data("purchase_item.xml")).unwrap(),
        PurchaseData::from_xml(&data("purchase_data_month.xml")).unwrap(),
    )
}

#[test]
fn user_service_id_is_global_purchase_item_id_then_purchase_data_id() {
    let (item, data) = purchase();
    assert_eq!(user_service_id(&item, &data), "urn:operator.example:pi:news24pd-news24-month");
}

#[test]
fn via_usd_registers_over_mbms_with_the_usd_service_id() {
    let bundle = UserServiceBundle::from_xml(&data("usd.xml")).unwrap();
    let spd = parse_spd(&data("spd.xml")).unwrap();
    let (item, pd) = purchase();
    let usd = bundle.service(&user_service_id(&item, &pd)).expect("the USD names the BCAST purchase");
    let p = via_usd(usd, &spd).unwrap();
    assert_eq!(p.registration, RegistrationInterface::MbmsUserServiceRegistration);
    assert_eq!(p.user_service_ids, ["urn:operator.example:pi:news24pd-news24-month"]);
    assert_eq!(p.key_management_servers, ["http://bsm.operator.example/", "http://bsm2.operator.example/"]);
    assert_eq!((p.offset_time, p.random_time_period, p.uicc_key_management), (5, 10, true));
    assert_eq!(p.msks.len(), 1, "the two flows share one MSK");
    assert_eq!(p.msks[0].msk_id, [0x68, 0xca, 0, 0]);
    assert_eq!(p.key_groups, [KG]);
    assert_eq!(p.flows.len(), 2);
    assert!(p.flows.iter().all(|f| f.sdp_media.is_none()));
    // The RightsIssuerURI is ignored on this path.
    assert_eq!(p.rights_issuer_uri, None);
    assert_eq!(p.kms_type, None);
}

#[test]
fn via_usd_refuses_an_unprotected_service() {
    let bundle = UserServiceBundle::from_xml(&data("usd.xml")).unwrap();
    let spd = parse_spd(&data("spd.xml")).unwrap();
    let weather = bundle.service("urn:operator.example:free:weather").unwrap();
    assert_eq!(
        via_usd(weather, &spd).unwrap_err(),
        GuideError::NotProtected("urn:operator.example:free:weather".into())
    );
}

#[test]
fn via_usd_needs_a_key_management_server() {
    let bundle = UserServiceBundle::from_xml(&data("usd.xml")).unwrap();
    let mut spd = parse_spd(&data("spd.xml")).unwrap();
    spd.key_management = None;
    assert_eq!(via_usd(&bundle.services[0], &spd).unwrap_err(), GuideError::NoKeyManagementServer);
}

#[test]
fn via_session_description_registers_by_service_request() {
    let access = Access::from_xml(&data("access_sdp.xml")).unwrap();
    let sdp = Sdp::parse(&data("news24.sdp")).unwrap();
    let spd = parse_spd(&data("spd.xml")).unwrap();
    let (item, pd) = purchase();
    let p = via_session_description(&access, &item, &pd, &sdp, &spd, SPD_URI).unwrap();
    assert_eq!(p.registration, RegistrationInterface::BcastServiceRequest);
    assert_eq!(p.user_service_ids, ["urn:operator.example:pi:news24pd-news24-month"]);
    assert_eq!(p.kms_type, Some(KmsType::GbaUMbms));
    assert_eq!(p.rights_issuer_uri.as_deref(), Some(SPD_URI));
    assert_eq!(p.key_management_servers[0], "http://bsm.operator.example/");
    assert_eq!(p.key_groups, [KG], "Access ProtectionKeyID and SPD MSK name the same group");
    // Both protected flows are found in the SDP: video (media 0) and audio (media 1).
    let matched: Vec<_> = p.flows.iter().map(|f| (f.flow_id.as_str(), f.sdp_media)).collect();
    assert_eq!(matched, [("224.1.2.3/4002", Some(0)), ("224.1.2.3/4004", Some(1))]);
}

#[test]
fn via_session_description_refuses_a_rights_issuer_uri_that_matches_no_reference() {
    let access = Access::from_xml(&data("access_sdp.xml")).unwrap();
    let sdp = Sdp::parse(&data("news24.sdp")).unwrap();
    let spd = parse_spd(&data("spd.xml")).unwrap();
    let (item, pd) = purchase();
    let err = via_session_description(&access, &item, &pd, &sdp, &spd, "http://elsewhere.example/spd.xml").unwrap_err();
    assert_eq!(
        err,
        GuideError::RightsIssuerMismatch {
            rights_issuer_uri: "http://elsewhere.example/spd.xml".into(),
            access_id: "acc-news24-sdp".into(),
            known: SPD_URI.into(),
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("http://elsewhere.example/spd.xml") && msg.contains("acc-news24-sdp") && msg.contains(SPD_URI)
    );
}

#[test]
fn via_session_description_checks_every_kms_permissions_issuer() {
    let mut access = Access::from_xml(&data("access_sdp.xml")).unwrap();
    access.key_management_systems[0].permissions_issuer_uri.as_mut().unwrap().uri =
        "http://bsm.operator.example/other".into();
    let sdp = Sdp::parse(&data("news24.sdp")).unwrap();
    let spd = parse_spd(&data("spd.xml")).unwrap();
    let (item, pd) = purchase();
    let err = via_session_description(&access, &item, &pd, &sdp, &spd, SPD_URI).unwrap_err();
    assert!(
        matches!(&err, GuideError::RightsIssuerMismatch { rights_issuer_uri, .. } if rights_issuer_uri == "http://bsm.operator.example/other"),
        "{err:?}"
    );
}

#[test]
fn via_session_description_without_references_says_none() {
    let access = Access::from_xml(
        &data("access_usd.xml").replace("<USBDRef uri=\"http://sg.operator.example/usd/news24.xml\"/>", ""),
    )
    .unwrap();
    let sdp = Sdp::parse(&data("news24.sdp")).unwrap();
    let spd = parse_spd(&data("spd.xml")).unwrap();
    let (item, pd) = purchase();
    let err = via_session_description(&access, &item, &pd, &sdp, &spd, SPD_URI).unwrap_err();
    assert!(err.to_string().contains("(none)"), "{err}");
}

#[test]
fn via_session_description_needs_a_smartcard_kms() {
    let mut access = Access::from_xml(&data("access_sdp.xml")).unwrap();
    access.key_management_systems.retain(|k| !k.kms_type.is_smartcard_profile());
    let sdp = Sdp::parse(&data("news24.sdp")).unwrap();
    let spd = parse_spd(&data("spd.xml")).unwrap();
    let (item, pd) = purchase();
    assert_eq!(
        via_session_description(&access, &item, &pd, &sdp, &spd, SPD_URI).unwrap_err(),
        GuideError::NotSmartcardProfile("acc-news24-sdp".into())
    );
}

#[test]
fn via_session_description_refuses_purchase_data_of_another_item() {
    let access = Access::from_xml(&data("access_sdp.xml")).unwrap();
    let sdp = Sdp::parse(&data("news24.sdp")).unwrap();
    let spd = parse_spd(&data("spd.xml")).unwrap();
    let (item, mut pd) = purchase();
    pd.purchase_item_ref = "pi-other".into();
    assert!(matches!(
        via_session_description(&access, &item, &pd, &sdp, &spd, SPD_URI).unwrap_err(),
        GuideError::PurchaseMismatch { .. }
    ));
}
