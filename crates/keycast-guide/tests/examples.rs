//! The example documents of tests/data: every field read as written, unknown elements and
//! attributes skipped, and each fragment survives encode → decode unchanged.

mod common;

use common::data;
use keycast_guide::fragments::{
    Access, AccessType, Content, EncryptionType, Fragment, KeyGroupRef, KmsType, ProtectionType, PurchaseChannel,
    PurchaseData, PurchaseItem, Service, ServiceType,
};
use keycast_guide::spd::parse_spd;
use keycast_guide::usd::UserServiceBundle;

#[test]
fn service_example_reads_and_round_trips() {
    let s = Service::from_xml(&data("service.xml")).unwrap();
    assert_eq!(s.id, "svc-news24");
    assert_eq!(s.version, 3);
    assert_eq!(s.validity.valid_from, Some(3_964_291_200));
    assert_eq!(s.validity.valid_to, Some(3_995_827_200));
    assert!(s.validity.contains(3_970_000_000));
    assert!(!s.validity.contains(3_000_000_000));
    assert_eq!(s.global_service_id.as_deref(), Some("urn:operator.example:svc:news24"));
    assert_eq!(s.base_cid.as_deref(), Some("news24-cid"));
    assert_eq!(s.names, ["News 24", "Nachrichten 24"]);
    assert_eq!(s.service_types, [ServiceType::BasicTv]);
    assert_eq!(
        s.protection_key_ids[0].key_domain_and_group(),
        Some(KeyGroupRef { key_domain_id: [0x68, 0xca, 0x0c], key_group: 0x68ca })
    );
    assert_eq!(Service::from_xml(&s.to_xml()).unwrap(), s);
}

#[test]
fn content_example_reads_and_round_trips() {
    let c = Content::from_xml(&data("content.xml")).unwrap();
    assert_eq!(c.global_content_id.as_deref(), Some("urn:operator.example:content:evening-news"));
    assert_eq!(c.service_refs, ["svc-news24"]);
    assert_eq!(c.names, ["Evening News"]);
    assert_eq!(Content::from_xml(&c.to_xml()).unwrap(), c);
}

#[test]
fn access_sdp_example_reads_and_round_trips() {
    let a = Access::from_xml(&data("access_sdp.xml")).unwrap();
    assert_eq!(a.id, "acc-news24-sdp");
    assert_eq!(a.version, 2);
    assert_eq!(a.encryption_type, Some(EncryptionType::Srtp));
    let k = &a.key_management_systems[0];
    assert_eq!(k.kms_type, KmsType::GbaUMbms);
    assert!(k.kms_type.is_smartcard_profile());
    assert_eq!(k.protection_type, Some(ProtectionType::ServiceProtection));
    let pi = k.permissions_issuer_uri.as_ref().unwrap();
    assert_eq!(pi.uri, "http://bsm.operator.example/spd/news24.xml");
    assert_eq!(pi.kind, Some(false));
    let tbk = k.terminal_binding_key_id.as_ref().unwrap();
    assert_eq!(tbk.id, "4711");
    assert_eq!(tbk.tbk_permissions_issuer_uri.as_deref(), Some("http://bsm.operator.example/tbk"));
    assert_eq!(
        k.key_groups().collect::<Vec<_>>(),
        [KeyGroupRef { key_domain_id: [0x68, 0xca, 0x0c], key_group: 0x68ca }]
    );
    let AccessType::Broadcast(b) = &a.access_type else { panic!("broadcast expected") };
    assert_eq!(b.bds_type, Some(1));
    let sd = b.session_description.as_ref().unwrap();
    assert!(sd.sdp.as_ref().unwrap().starts_with("v=0\no=- 2890844526"));
    assert_eq!(sd.reference_uris().collect::<Vec<_>>(), ["http://bsm.operator.example/spd/news24.xml"]);
    assert_eq!(sd.sdp_refs[0].id_ref.as_deref(), Some("aux-spd-news24"));
    assert_eq!(a.service_refs, ["svc-news24"]);
    assert_eq!(Access::from_xml(&a.to_xml()).unwrap(), a);
}

#[test]
fn access_usd_example_keeps_every_kms() {
    let a = Access::from_xml(&data("access_usd.xml")).unwrap();
    let kinds: Vec<_> = a.key_management_systems.iter().map(|k| k.kms_type.clone()).collect();
    assert_eq!(kinds, [KmsType::GbaMeMbms, KmsType::DrmPki]);
    assert_eq!(a.smartcard_systems().count(), 1);
    assert_eq!(a.key_management_systems[1].protection_type, Some(ProtectionType::ContentProtection));
    assert_eq!(a.session_description().unwrap().usbd_refs[0].uri, "http://sg.operator.example/usd/news24.xml");
    assert_eq!(Access::from_xml(&a.to_xml()).unwrap(), a);
}

#[test]
fn purchase_item_example_reads_and_round_trips() {
    let p = PurchaseItem::from_xml(&data("purchase_item.xml")).unwrap();
    assert_eq!(p.global_purchase_item_id, "urn:operator.example:pi:news24");
    assert_eq!(p.service_refs, ["svc-news24"]);
    assert_eq!(p.content_refs, ["cnt-evening"]);
    assert_eq!(p.closed, Some(false));
    assert_eq!(p.names, ["News 24 access"]);
    assert_eq!(PurchaseItem::from_xml(&p.to_xml()).unwrap(), p);
}

#[test]
fn purchase_data_examples_read_and_round_trip() {
    let m = PurchaseData::from_xml(&data("purchase_data_month.xml")).unwrap();
    assert_eq!(m.purchase_item_ref, "pi-news24");
    assert_eq!(m.purchase_channel_refs, ["pc-operator"]);
    assert_eq!(m.descriptions, ["Monthly subscription, renewed automatically"]);
    let price = m.price_info.as_ref().unwrap();
    assert_eq!(price.subscription_type, Some(1));
    assert_eq!(price.subscription_period.as_deref(), Some("P1M"));
    assert_eq!(price.prices.len(), 2);
    assert_eq!((price.prices[0].currency.as_str(), price.prices[0].amount.as_str()), ("EUR", "4.99"));
    assert_eq!(PurchaseData::from_xml(&m.to_xml()).unwrap(), m);

    let t = PurchaseData::from_xml(&data("purchase_data_tokens.xml")).unwrap();
    let tokens = t.price_info.as_ref().unwrap().tokens.as_ref().unwrap();
    assert_eq!(tokens.count, 10);
    assert_eq!(tokens.token_type.as_deref(), Some("ppv"));
    assert_eq!(tokens.consumption_amount, Some(1));
    assert_eq!(tokens.consumption_unit.as_deref(), Some("programme"));
    assert_eq!(tokens.max_replay, Some(2));
    assert_eq!(PurchaseData::from_xml(&t.to_xml()).unwrap(), t);
}

#[test]
fn purchase_channel_example_reads_and_round_trips() {
    let c = PurchaseChannel::from_xml(&data("purchase_channel.xml")).unwrap();
    assert_eq!(c.rights_issuer_uri.as_deref(), Some("http://bsm.operator.example/bcast"));
    assert_eq!(c.names, ["Operator shop"]);
    assert_eq!(c.portal_urls[0].url, "https://shop.operator.example/tv");
    assert_eq!(c.portal_urls[0].supported_service.as_deref(), Some("1"));
    assert_eq!(c.purchase_urls, ["http://bsm.operator.example/bcast/sprov"]);
    assert_eq!(PurchaseChannel::from_xml(&c.to_xml()).unwrap(), c);
}

#[test]
fn fragment_dispatches_on_the_root() {
    for (file, want) in [
        ("service.xml", "Service"),
        ("content.xml", "Content"),
        ("access_sdp.xml", "Access"),
        ("purchase_item.xml", "PurchaseItem"),
        ("purchase_data_month.xml", "PurchaseData"),
        ("purchase_channel.xml", "PurchaseChannel"),
    ] {
        let f = Fragment::from_xml(&data(file)).unwrap();
        let got = match &f {
            Fragment::Service(_) => "Service",
            Fragment::Content(_) => "Content",
            Fragment::Access(_) => "Access",
            Fragment::PurchaseItem(_) => "PurchaseItem",
            Fragment::PurchaseData(_) => "PurchaseData",
            Fragment::PurchaseChannel(_) => "PurchaseChannel",
            _ => "other",
        };
        assert_eq!(got, want);
        assert_eq!(Fragment::from_xml(&f.to_xml()).unwrap(), f);
    }
}

#[test]
fn unknown_elements_and_attributes_are_skipped() {
    // The example has Genre, PrivateExt and a foreign attribute; adding more of each changes nothing.
    let plain = Service::from_xml(&data("service.xml")).unwrap();
    let noisy = data("service.xml")
        .replace("<ServiceType>", "<Unheard a=\"1\"><Deep><Deeper/></Deep></Unheard>\n  <ServiceType>")
        .replace("weight=\"10\"", "weight=\"10\" futureAttribute=\"x\"");
    assert_eq!(Service::from_xml(&noisy).unwrap(), plain);
    // An element we know, but in a foreign namespace, is not ours and is skipped too.
    let foreign = data("service.xml").replace(
        "<ServiceType>1</ServiceType>",
        "<ServiceType>1</ServiceType><f:ServiceType xmlns:f=\"urn:example:other\">999</f:ServiceType>",
    );
    assert_eq!(Service::from_xml(&foreign).unwrap(), plain);
}

#[test]
fn usd_example_reads_and_round_trips() {
    let b = UserServiceBundle::from_xml(&data("usd.xml")).unwrap();
    assert_eq!(b.fec_description_uri.as_deref(), Some("http://sg.operator.example/usd/fec.xml"));
    assert_eq!(b.services.len(), 2);
    let s = b.service("urn:operator.example:pi:news24pd-news24-month").unwrap();
    assert_eq!(s.names[0].name, "News 24");
    assert_eq!(s.names[0].lang.as_deref(), Some("en"));
    assert_eq!(s.service_languages, ["en"]);
    assert_eq!(s.protection_description_uris(), ["http://sg.operator.example/usd/news24-spd.xml"]);
    assert_eq!(s.delivery_methods[0].session_description_uri, "http://sg.operator.example/usd/news24.sdp");
    assert!(b.services[1].protection_description_uris().is_empty());
    assert_eq!(UserServiceBundle::from_xml(&b.to_xml()).unwrap(), b);
}

#[test]
fn spd_example_reads() {
    let spd = parse_spd(&data("spd.xml")).unwrap();
    let km = spd.key_management.as_ref().unwrap();
    assert_eq!(km.server_uris, ["http://bsm.operator.example/", "http://bsm2.operator.example/"]);
    assert_eq!((km.offset_time, km.random_time_period, km.uicc_key_management), (5, 10, true));
    let flow = &spd.key_ids[0].media_flows[0];
    assert_eq!(flow.flow_id, "224.1.2.3/4002");
    assert_eq!(flow.msk.key_domain_id, [0x68, 0xca, 0x0c]);
    assert_eq!(flow.msk.msk_id, [0x68, 0xca, 0, 0]);
    let again = keycast_guide::spd::spd_to_xml(&spd).unwrap();
    assert_eq!(parse_spd(&again).unwrap(), spd);
}
