//! One test per rejection: every missing required field, bad value and bad document is a typed
//! error whose message names the fragment and the element.

mod common;

use common::data;
use keycast_guide::GuideError;
use keycast_guide::fragments::{Access, Content, Fragment, PurchaseChannel, PurchaseData, PurchaseItem, Service};
use keycast_guide::usd::UserServiceBundle;

/// Edits an example (every occurrence of `from` becomes `to`), decodes it as `$ty` and checks the
/// error message holds every needle.
macro_rules! rejects {
    ($name:ident, $ty:ty, $file:literal, $from:expr, $to:expr, [$($needle:literal),+ $(,)?]) => {
        #[test]
        fn $name() {
            let doc = data($file);
            assert!(doc.contains($from), "the example lacks {:?}", $from);
            let err = <$ty>::from_xml(&doc.replace($from, $to)).expect_err("must be refused");
            assert!(matches!(err, GuideError::Xml { .. }), "{err:?}");
            let msg = err.to_string();
            $(assert!(msg.contains($needle), "{msg:?} does not mention {:?}", $needle);)+
        }
    };
}

// Service
rejects!(rejects_service_without_id, Service, "service.xml", " id=\"svc-news24\"", "", ["Service fragment", "`id`"]);
rejects!(
    rejects_service_without_version,
    Service,
    "service.xml",
    " version=\"3\"",
    "",
    ["Service fragment", "`version`"]
);
rejects!(
    rejects_service_with_bad_version,
    Service,
    "service.xml",
    "version=\"3\"",
    "version=\"three\"",
    ["version", "unsigned"]
);
rejects!(
    rejects_service_version_over_32_bits,
    Service,
    "service.xml",
    "version=\"3\"",
    "version=\"4294967296\"",
    ["version", "out of range"]
);
rejects!(
    rejects_service_validity_reversed,
    Service,
    "service.xml",
    "validTo=\"3995827200\"",
    "validTo=\"1\"",
    ["validTo", "earlier"]
);
rejects!(
    rejects_protection_key_id_without_type,
    Service,
    "service.xml",
    "<ProtectionKeyID type=\"0\">",
    "<ProtectionKeyID>",
    ["`type`", "ProtectionKeyID"]
);
rejects!(
    rejects_type0_protection_key_id_of_wrong_length,
    Service,
    "service.xml",
    "aMoMaMo=",
    "aMoM",
    ["ProtectionKeyID", "5 octets"]
);
rejects!(
    rejects_protection_key_id_not_base64,
    Service,
    "service.xml",
    "aMoMaMo=",
    "a*b",
    ["ProtectionKeyID", "base64"]
);
rejects!(
    rejects_service_type_not_a_number,
    Service,
    "service.xml",
    "<ServiceType>1<",
    "<ServiceType>TV<",
    ["ServiceType"]
);
rejects!(
    rejects_service_type_over_255,
    Service,
    "service.xml",
    "<ServiceType>1<",
    "<ServiceType>256<",
    ["ServiceType", "out of range"]
);
rejects!(
    rejects_service_name_without_text,
    Service,
    "service.xml",
    "<Name text=\"News 24\" xml:lang=\"en\"/>",
    "<Name/>",
    ["Name", "empty"]
);
rejects!(
    rejects_service_in_a_foreign_namespace,
    Service,
    "service.xml",
    "xmlns=\"urn:oma:xml:bcast:sg:fragments:1.0\"",
    "xmlns=\"urn:example:other\"",
    ["root element", "Service"]
);

// Content
rejects!(rejects_content_without_id, Content, "content.xml", " id=\"cnt-evening\"", "", ["Content fragment", "`id`"]);
rejects!(
    rejects_content_without_version,
    Content,
    "content.xml",
    " version=\"1\"",
    "",
    ["Content fragment", "`version`"]
);
rejects!(
    rejects_service_reference_without_id_ref,
    Content,
    "content.xml",
    "<ServiceReference idRef=\"svc-news24\"/>",
    "<ServiceReference/>",
    ["idRef", "ServiceReference"]
);

// Access
rejects!(
    rejects_access_without_id,
    Access,
    "access_usd.xml",
    " id=\"acc-news24-usd\"",
    "",
    ["Access fragment", "`id`"]
);
rejects!(
    rejects_access_without_version,
    Access,
    "access_usd.xml",
    " version=\"1\"",
    "",
    ["Access fragment", "`version`"]
);
rejects!(
    rejects_access_without_access_type,
    Access,
    "access_usd.xml",
    "AccessType>",
    "Elsewhere>",
    ["Access fragment", "AccessType", "missing"]
);
rejects!(
    rejects_access_type_without_delivery,
    Access,
    "access_usd.xml",
    "BroadcastServiceDelivery>",
    "SatelliteDelivery>",
    ["BroadcastServiceDelivery", "AccessType"]
);
rejects!(
    rejects_kms_without_kms_type,
    Access,
    "access_usd.xml",
    "kmsType=\"oma-bcast-gba_me-mbms\" ",
    "",
    ["kmsType", "KeyManagementSystem"]
);
rejects!(
    rejects_kms_with_bad_protection_type,
    Access,
    "access_usd.xml",
    "protectionType=\"2\"",
    "protectionType=\"content\"",
    ["protectionType"]
);
rejects!(
    rejects_encryption_type_out_of_range,
    Access,
    "access_usd.xml",
    "<EncryptionType>1<",
    "<EncryptionType>256<",
    ["EncryptionType", "out of range"]
);
rejects!(
    rejects_repeated_encryption_type,
    Access,
    "access_usd.xml",
    "<EncryptionType>1</EncryptionType>",
    "<EncryptionType>1</EncryptionType><EncryptionType>2</EncryptionType>",
    ["EncryptionType", "more than once"]
);
rejects!(
    rejects_sdp_ref_without_uri,
    Access,
    "access_sdp.xml",
    "<SDPRef uri=\"http://bsm.operator.example/spd/news24.xml\" ",
    "<SDPRef ",
    ["`uri`", "SDPRef"]
);
rejects!(
    rejects_usbd_ref_without_uri,
    Access,
    "access_usd.xml",
    "<USBDRef uri=\"http://sg.operator.example/usd/news24.xml\"/>",
    "<USBDRef/>",
    ["`uri`", "USBDRef"]
);
rejects!(
    rejects_bds_type_without_type,
    Access,
    "access_usd.xml",
    "<BDSType><Type>1</Type></BDSType>",
    "<BDSType/>",
    ["Type", "BDSType"]
);
rejects!(
    rejects_empty_permissions_issuer_uri,
    Access,
    "access_sdp.xml",
    ">http://bsm.operator.example/spd/news24.xml<",
    "><",
    ["PermissionsIssuerURI", "empty"]
);
rejects!(
    rejects_permissions_issuer_type_not_boolean,
    Access,
    "access_sdp.xml",
    "type=\"false\"",
    "type=\"maybe\"",
    ["PermissionsIssuerURI@type", "boolean"]
);

#[test]
fn rejects_empty_inline_sdp() {
    let doc = data("access_sdp.xml");
    let (head, rest) = doc.split_once("<SDP>").unwrap();
    let (_, tail) = rest.split_once("</SDP>").unwrap();
    let msg = Access::from_xml(&format!("{head}<SDP> </SDP>{tail}")).unwrap_err().to_string();
    assert!(msg.contains("`SDP`") && msg.contains("empty"), "{msg}");
}

// PurchaseItem
rejects!(
    rejects_purchase_item_without_id,
    PurchaseItem,
    "purchase_item.xml",
    " id=\"pi-news24\"",
    "",
    ["PurchaseItem fragment", "`id`"]
);
rejects!(
    rejects_purchase_item_without_version,
    PurchaseItem,
    "purchase_item.xml",
    " version=\"1\"",
    "",
    ["PurchaseItem fragment", "`version`"]
);
rejects!(
    rejects_purchase_item_without_global_id,
    PurchaseItem,
    "purchase_item.xml",
    "globalPurchaseItemID=\"urn:operator.example:pi:news24\"",
    "",
    ["PurchaseItem fragment", "globalPurchaseItemID"]
);
rejects!(
    rejects_purchase_item_closed_not_boolean,
    PurchaseItem,
    "purchase_item.xml",
    "closed=\"false\"",
    "closed=\"no\"",
    ["closed", "boolean"]
);
rejects!(
    rejects_content_reference_without_id_ref,
    PurchaseItem,
    "purchase_item.xml",
    "<ContentReference idRef=\"cnt-evening\"/>",
    "<ContentReference/>",
    ["idRef", "ContentReference"]
);

// PurchaseData
rejects!(
    rejects_purchase_data_without_id,
    PurchaseData,
    "purchase_data_month.xml",
    " id=\"pd-news24-month\"",
    "",
    ["PurchaseData fragment", "`id`"]
);
rejects!(
    rejects_purchase_data_without_version,
    PurchaseData,
    "purchase_data_month.xml",
    " version=\"1\"",
    "",
    ["PurchaseData fragment", "`version`"]
);
rejects!(
    rejects_purchase_data_without_item_reference,
    PurchaseData,
    "purchase_data_month.xml",
    "<PurchaseItemReference idRef=\"pi-news24\"/>",
    "",
    ["PurchaseData fragment", "PurchaseItemReference", "missing"]
);
rejects!(
    rejects_purchase_item_reference_without_id_ref,
    PurchaseData,
    "purchase_data_month.xml",
    "<PurchaseItemReference idRef=\"pi-news24\"/>",
    "<PurchaseItemReference/>",
    ["idRef", "PurchaseItemReference"]
);
rejects!(
    rejects_two_purchase_item_references,
    PurchaseData,
    "purchase_data_month.xml",
    "<PurchaseItemReference idRef=\"pi-news24\"/>",
    "<PurchaseItemReference idRef=\"a\"/><PurchaseItemReference idRef=\"b\"/>",
    ["PurchaseItemReference", "more than once"]
);
rejects!(
    rejects_price_without_currency,
    PurchaseData,
    "purchase_data_month.xml",
    " currency=\"EUR\"",
    "",
    ["currency", "MonetaryPrice"]
);
rejects!(
    rejects_price_not_decimal,
    PurchaseData,
    "purchase_data_month.xml",
    ">4.99<",
    ">4,99<",
    ["MonetaryPrice", "decimal"]
);
rejects!(rejects_empty_price, PurchaseData, "purchase_data_month.xml", ">4.99<", "><", ["MonetaryPrice", "empty"]);
rejects!(
    rejects_token_count_not_a_number,
    PurchaseData,
    "purchase_data_tokens.xml",
    ">10</TotalNumberToken>",
    ">ten</TotalNumberToken>",
    ["TotalNumberToken"]
);
rejects!(
    rejects_subscription_type_over_255,
    PurchaseData,
    "purchase_data_month.xml",
    "subscriptionType=\"1\"",
    "subscriptionType=\"300\"",
    ["subscriptionType", "out of range"]
);

// PurchaseChannel
rejects!(
    rejects_purchase_channel_without_id,
    PurchaseChannel,
    "purchase_channel.xml",
    " id=\"pc-operator\"",
    "",
    ["PurchaseChannel fragment", "`id`"]
);
rejects!(
    rejects_purchase_channel_without_version,
    PurchaseChannel,
    "purchase_channel.xml",
    " version=\"1\"",
    "",
    ["PurchaseChannel fragment", "`version`"]
);
rejects!(
    rejects_empty_portal_url,
    PurchaseChannel,
    "purchase_channel.xml",
    ">https://shop.operator.example/tv<",
    "><",
    ["PortalURL", "empty"]
);

// MBMS USD
rejects!(
    rejects_usd_without_service_id,
    UserServiceBundle,
    "usd.xml",
    "serviceId=\"urn:operator.example:free:weather\"",
    "",
    ["userServiceDescription", "serviceId"]
);
rejects!(
    rejects_usd_without_delivery_method,
    UserServiceBundle,
    "usd.xml",
    "<deliveryMethod sessionDescriptionURI=\"http://sg.operator.example/usd/weather.sdp\"/>",
    "",
    ["deliveryMethod", "missing"]
);
rejects!(
    rejects_delivery_method_without_session_description,
    UserServiceBundle,
    "usd.xml",
    "sessionDescriptionURI=\"http://sg.operator.example/usd/weather.sdp\"",
    "",
    ["sessionDescriptionURI", "deliveryMethod"]
);
rejects!(
    rejects_usd_in_a_foreign_namespace,
    UserServiceBundle,
    "usd.xml",
    "xmlns=\"urn:3GPP:metadata:2005:MBMS:userServiceDescription\"",
    "xmlns=\"urn:example\"",
    ["root element", "bundleDescription"]
);

#[test]
fn rejects_bundle_without_user_service() {
    let doc = r#"<bundleDescription xmlns="urn:3GPP:metadata:2005:MBMS:userServiceDescription"/>"#;
    let msg = UserServiceBundle::from_xml(doc).unwrap_err().to_string();
    assert!(msg.contains("userServiceDescription") && msg.contains("missing"), "{msg}");
}

// Bad documents
#[test]
fn rejects_malformed_xml() {
    let doc = data("service.xml");
    let cut = &doc[..doc.len() / 2];
    let err = Service::from_xml(cut).unwrap_err();
    assert!(err.to_string().starts_with("Service fragment: "), "{err}");
}

#[test]
fn rejects_doctype() {
    let doc = data("service.xml").replace("<Service ", "<!DOCTYPE Service [<!ENTITY x \"boom\">]>\n<Service ");
    assert!(Service::from_xml(&doc).unwrap_err().to_string().contains("DOCTYPE"));
}

#[test]
fn rejects_undefined_entity() {
    let doc = data("service.xml").replace("News 24\"", "&boom;\"");
    assert!(Service::from_xml(&doc).is_err());
}

#[test]
fn rejects_oversized_fragment() {
    let filler = "<Genre>x</Genre>".repeat(5000);
    let doc = data("service.xml").replace("<ServiceType>", &format!("{filler}<ServiceType>"));
    assert!(Service::from_xml(&doc).unwrap_err().to_string().contains("exceeds the limit"));
}

#[test]
fn rejects_deep_nesting() {
    let deep = format!("{}{}", "<a>".repeat(40), "</a>".repeat(40));
    let doc = data("service.xml").replace("<ServiceType>", &format!("{deep}<ServiceType>"));
    assert!(Service::from_xml(&doc).unwrap_err().to_string().contains("nested deeper"));
}

#[test]
fn rejects_other_encoding() {
    let doc = data("service.xml").replace("encoding=\"UTF-8\"", "encoding=\"ISO-8859-1\"");
    assert!(Service::from_xml(&doc).unwrap_err().to_string().contains("UTF-8"));
}

#[test]
fn rejects_wrong_fragment_type() {
    let err = Service::from_xml(&data("content.xml")).unwrap_err();
    assert!(err.to_string().contains("expected {urn:oma:xml:bcast:sg:fragments:1.0}Service"), "{err}");
}

#[test]
fn rejects_unknown_fragment() {
    let doc = r#"<Schedule xmlns="urn:oma:xml:bcast:sg:fragments:1.0" id="s" version="1"/>"#;
    assert_eq!(
        Fragment::from_xml(doc).unwrap_err(),
        GuideError::UnknownFragment("{urn:oma:xml:bcast:sg:fragments:1.0}Schedule".into())
    );
}

#[test]
fn rejects_control_characters() {
    // quick-xml lets a raw control character through; XML 1.0 forbids it, and we could not write
    // it back, so the document is refused.
    let doc = data("service.xml").replace("urn:operator.example:svc:news24", "urn:\u{e}svc");
    let msg = Service::from_xml(&doc).unwrap_err().to_string();
    assert!(msg.contains("not allowed in XML"), "{msg}");
    let spd = data("spd.xml").replace("bsm.operator", "bsm\u{0}.operator");
    assert!(keycast_guide::spd::parse_spd(&spd).is_err());
}
