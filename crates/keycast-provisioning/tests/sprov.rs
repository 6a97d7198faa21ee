//! OMA BCAST service provisioning codec (Keycast's schema): the sample requests, status codes,
//! rejections and property tests.

mod common;

use common::{data_dir, sprov_message};
use keycast_provisioning::sprov::*;
use keycast_provisioning::time::UtcTime;
use proptest::prelude::*;
use std::fs;

fn sample(name: &str) -> Vec<u8> {
    fs::read(data_dir().join("sprov").join(name)).unwrap()
}

fn invalid(name: &str) -> Result<SprovMessage, XmlError> {
    SprovMessage::from_xml(&fs::read(data_dir().join("sprov").join("invalid").join(name)).unwrap())
}

#[test]
fn decodes_the_service_request_sample() {
    let r = ServiceRequest::from_xml(&sample("service-request.xml")).unwrap();
    assert_eq!(r.request_id, 4711);
    assert_eq!(r.client, Some(ClientIdentity::Imsi("001010000000001".into())));
    assert_eq!(r.items.len(), 2);
    assert_eq!(
        r.items[0],
        PurchaseRequestItem {
            item: PurchaseItemRef::new(
                "urn:bsm.example.org:purchaseitem:news",
                Some("urn:bsm.example.org:purchasedata:news-month")
            ),
            price: Some(Price { amount: "4.99".into(), currency: "EUR".into() }),
        }
    );
    assert_eq!(
        r.items[0].item.mbms_user_service_id(),
        "urn:bsm.example.org:purchaseitem:newsurn:bsm.example.org:purchasedata:news-month"
    );
    assert_eq!(r.items[1].price, None);
}

#[test]
fn decodes_the_other_samples() {
    let t = TokenPurchaseRequest::from_xml(&sample("token-purchase-request.xml")).unwrap();
    assert_eq!(t.client, Some(ClientIdentity::Btid("I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org".into())));
    let key = t.items[0].key_id;
    assert_eq!((key.key_domain_id, key.sek_pek_id), ([0x00, 0xf1, 0x10], [0x00, 0x01, 0x00, 0x00]));
    assert_eq!(key.to_bytes(), [0x00, 0xf1, 0x10, 0x00, 0x01, 0x00, 0x00]);
    assert_eq!(t.items[0].number_of_tokens, Some(10));

    let u = UnsubscribeRequest::from_xml(&sample("unsubscribe-request.xml")).unwrap();
    assert_eq!(u.items, [PurchaseItemRef::new(ALL_SERVICES, None)]);

    let reg = RegistrationRequest::from_xml(&sample("registration-request.xml")).unwrap();
    assert!(matches!(reg.client, Some(ClientIdentity::Impi(_))));
    assert_eq!(reg.items.len(), 2);

    let d = DeregistrationRequest::from_xml(&sample("deregistration-request.xml")).unwrap();
    assert_eq!(d.request_id, 2);

    let l = LtkmRequest::from_xml(&sample("ltkm-request.xml")).unwrap();
    assert_eq!(l.keys.len(), 2);
    assert_eq!(l.keys[0].valid_from, None);
    assert_eq!(l.keys[1].key.sek_pek_id, [0, 1, 0, 1]);
    assert_eq!(l.keys[1].valid_from, Some("2026-01-01T00:00:00Z".parse::<UtcTime>().unwrap()));

    let a = AccountInquiry::from_xml(&sample("account-inquiry.xml")).unwrap();
    assert_eq!(a.inquiry_type, InquiryType::PurchaseItem);
    assert_eq!(a.client, Some(ClientIdentity::Uri("sip:alice@example.org".into())));

    let s = ServiceResponse::from_xml(&sample("service-response.xml")).unwrap();
    assert_eq!((s.request_id, s.status, s.registration_required), (4711, StatusCode::Success, true));
    assert_eq!(s.items[1].status, StatusCode::PurchaseItemUnknown);
    assert_eq!(s.ltkms, [vec![2, 1, 2, 3, 4, 5, 6, 7, 8, 9]]);
    assert_eq!(s.description.as_deref(), Some("1 of 2 items bought"));
}

#[test]
fn dispatches_on_the_root() {
    assert!(matches!(SprovMessage::from_xml(&sample("ltkm-request.xml")), Ok(SprovMessage::LtkmRequest(_))));
    let m = SprovMessage::from_xml(&sample("service-response.xml")).unwrap();
    assert_eq!(m.root_name(), "ServiceResponse");
    assert!(!m.is_request());
    // A typed decoder refuses another message.
    assert!(matches!(
        ServiceRequest::from_xml(&sample("service-response.xml")),
        Err(XmlError::WrongRoot { expected: "ServiceRequest", .. })
    ));
    assert_eq!(LtkmRequest::ROOT, "LTKMRequest");
    assert_eq!(AccountInquiry::ROOT, "AccountInquiry");
}

#[test]
fn status_codes_are_the_renumbered_mbbms_codes() {
    let table = [
        (0, StatusCode::Success),
        (1, StatusCode::DeviceAuthenticationFailed),
        (3, StatusCode::PurchaseItemUnknown),
        (8, StatusCode::MalformedMessage),
        (10, StatusCode::NoSubscription),
        (20, StatusCode::GenerationFailure),
        (24, StatusCode::WrongKeyInfo),
        (29, StatusCode::AlreadySubscribed),
        (131, StatusCode::InsufficientCharge),
    ];
    for (n, c) in table {
        assert_eq!(StatusCode::from(n), c);
        assert_eq!(c.value(), n);
    }
    for n in 0..=29 {
        assert!(!matches!(StatusCode::from(n), StatusCode::Unknown(_)), "{n}");
    }
    assert_eq!(StatusCode::from(30), StatusCode::Unknown(30));
    assert_eq!(StatusCode::from(301), StatusCode::Unknown(301));
    assert!(StatusCode::Success.is_success() && !StatusCode::Delayed.is_success());
    // Unknown codes are kept on decode.
    let xml = r#"<UnsubscribeResponse xmlns="urn:keycast:oma-bcast:sprov:1" requestID="9" globalStatusCode="77">
        <PurchaseItem globalIDRef="urn:a" itemwiseStatusCode="65535"/></UnsubscribeResponse>"#;
    let r = UnsubscribeResponse::from_xml(xml.as_bytes()).unwrap();
    assert_eq!((r.status, r.items[0].status), (StatusCode::Unknown(77), StatusCode::Unknown(65535)));
}

#[test]
fn invalid_samples_fail_with_the_right_error() {
    assert_eq!(
        invalid("missing-request-id.xml"),
        Err(XmlError::MissingAttribute { element: "RegistrationRequest", attribute: "requestID" })
    );
    assert!(matches!(invalid("wrong-namespace.xml"), Err(XmlError::WrongRoot { .. })));
    assert!(matches!(invalid("no-namespace.xml"), Err(XmlError::WrongRoot { .. })));
    assert!(matches!(invalid("unknown-root.xml"), Err(XmlError::WrongRoot { .. })));
    assert_eq!(
        invalid("no-purchase-item.xml"),
        Err(XmlError::Missing { element: "PurchaseItem", parent: "ServiceRequest" })
    );
    assert_eq!(
        invalid("key-id-six-octets.xml"),
        Err(XmlError::InvalidValue { element: "TokenPurchaseItem@keyID", reason: "wrong length" })
    );
    assert_eq!(
        invalid("sek-id-three-octets.xml"),
        Err(XmlError::InvalidValue { element: "Key@sekPekID", reason: "wrong length" })
    );
    assert!(matches!(invalid("validity-not-utc.xml"), Err(XmlError::Time { element: "Key@validFrom", .. })));
    assert!(matches!(
        invalid("status-not-a-number.xml"),
        Err(XmlError::InvalidValue { element: "ServiceResponse@globalStatusCode", .. })
    ));
    assert_eq!(
        invalid("status-missing.xml"),
        Err(XmlError::MissingAttribute { element: "UnsubscribeResponse", attribute: "globalStatusCode" })
    );
    assert!(matches!(invalid("request-id-too-big.xml"), Err(XmlError::InvalidValue { element: "requestID", .. })));
    assert!(matches!(invalid("identity-type-unknown.xml"), Err(XmlError::InvalidValue { element: "UserID@type", .. })));
    assert!(matches!(invalid("currency-lowercase.xml"), Err(XmlError::InvalidValue { element: "Price@currency", .. })));
    assert!(matches!(
        invalid("inquiry-type-unknown.xml"),
        Err(XmlError::InvalidValue { element: "AccountInquiry@inquiryType", .. })
    ));
    assert_eq!(
        invalid("global-id-missing.xml"),
        Err(XmlError::MissingAttribute { element: "PurchaseItem", attribute: "globalIDRef" })
    );
    assert!(matches!(invalid("ltkm-not-base64.xml"), Err(XmlError::InvalidValue { element: "LTKM", .. })));
    assert_eq!(invalid("description-with-children.xml"), Err(XmlError::NotText("Description")));
}

#[test]
fn rejects_doctype_size_and_bad_identities() {
    let body = String::from_utf8(sample("registration-request.xml")).unwrap();
    let dt = body.replace("<RegistrationRequest", "<!DOCTYPE r [<!ENTITY e \"x\">]><RegistrationRequest");
    assert_eq!(SprovMessage::from_xml(dt.as_bytes()), Err(XmlError::DocType));
    let big = format!("{body}<!--{}-->", "x".repeat(MAX_XML_LEN));
    assert!(matches!(SprovMessage::from_xml(big.as_bytes()), Err(XmlError::TooLarge { .. })));
    let imsi = body.replace(
        "<UserID type=\"IMPI\">001010000000001@ims.mnc001.mcc001.3gppnetwork.org</UserID>",
        "<UserID type=\"IMSI\">12345</UserID>",
    );
    assert!(matches!(SprovMessage::from_xml(imsi.as_bytes()), Err(XmlError::InvalidValue { element: "UserID", .. })));
    let both = body.replace("</ClientID>", "<BTID>b@bsf</BTID></ClientID>");
    assert!(matches!(SprovMessage::from_xml(both.as_bytes()), Err(XmlError::InvalidValue { element: "ClientID", .. })));
    let empty = body.replace("<UserID type=\"IMPI\">001010000000001@ims.mnc001.mcc001.3gppnetwork.org</UserID>", "");
    assert_eq!(
        SprovMessage::from_xml(empty.as_bytes()),
        Err(XmlError::Missing { element: "UserID", parent: "ClientID" })
    );
}

#[test]
fn ignores_unknown_elements_and_attributes() {
    let xml = r#"<p:LTKMResponse xmlns:p="urn:keycast:oma-bcast:sprov:1" xmlns:o="urn:other" requestID="5" globalStatusCode="0" future="x" o:a="b">
        <p:Future><p:Deeper/></p:Future>
        <o:Key keyDomainID="!!!!"/>
        <p:Key keyDomainID="APEQ" sekPekID="AAEAAA==" itemwiseStatusCode="0" version="2"><o:x/></p:Key>
        <p:SmartcardProfile><p:LTKM>AQID</p:LTKM><o:LTKM>zzz</o:LTKM></p:SmartcardProfile>
    </p:LTKMResponse>"#;
    let r = LtkmResponse::from_xml(xml.as_bytes()).unwrap();
    assert_eq!(r.keys.len(), 1);
    assert_eq!(r.ltkms, [vec![1, 2, 3]]);
}

#[test]
fn encoder_refuses_what_the_schema_refuses() {
    let item = PurchaseItemRef::new("urn:a", None);
    let empty = RegistrationRequest { request_id: 1, client: None, items: vec![] };
    assert_eq!(empty.to_xml(), Err(XmlError::Missing { element: "PurchaseItem", parent: "RegistrationRequest" }));
    let imsi = RegistrationRequest {
        request_id: 1,
        client: Some(ClientIdentity::Imsi("12ab".into())),
        items: vec![item.clone()],
    };
    assert!(imsi.to_xml().is_err());
    let bad_price = ServiceRequest {
        request_id: 1,
        client: None,
        items: vec![PurchaseRequestItem {
            item: item.clone(),
            price: Some(Price { amount: "1,5".into(), currency: "EUR".into() }),
        }],
    };
    assert!(matches!(bad_price.to_xml(), Err(XmlError::InvalidValue { element: "Price", .. })));
    let bad_ref = UnsubscribeRequest { request_id: 1, client: None, items: vec![PurchaseItemRef::new("", None)] };
    assert!(bad_ref.to_xml().is_err());
    let empty_ltkm = LtkmResponse {
        request_id: 1,
        status: StatusCode::Success,
        description: None,
        keys: vec![],
        ltkms: vec![vec![]],
    };
    assert!(empty_ltkm.to_xml().is_err());
    let huge = LtkmResponse {
        request_id: 1,
        status: StatusCode::Success,
        description: None,
        keys: vec![],
        ltkms: vec![vec![0; MAX_XML_LEN]],
    };
    assert!(matches!(huge.to_xml(), Err(XmlError::TooLarge { .. })));
    let escaped = DeregistrationResponse {
        request_id: 3,
        status: StatusCode::ServerError,
        description: Some("a < b & \"c\"".into()),
        items: vec![],
    };
    let xml = escaped.to_xml().unwrap();
    assert!(xml.contains("<Description>a &lt; b &amp; &quot;c&quot;</Description>"), "{xml}");
    assert_eq!(DeregistrationResponse::from_xml(xml.as_bytes()), Ok(escaped));
}

#[test]
fn encodes_a_service_response_readably() {
    let r = ServiceResponse {
        request_id: 4711,
        status: StatusCode::Success,
        description: None,
        registration_required: false,
        items: vec![ItemStatus { item: PurchaseItemRef::new("urn:a", None), status: StatusCode::Success }],
        ltkms: vec![vec![1, 2, 3]],
    };
    assert_eq!(
        r.to_xml().unwrap(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <ServiceResponse xmlns=\"urn:keycast:oma-bcast:sprov:1\" requestID=\"4711\" globalStatusCode=\"0\">\n  \
         <PurchaseItem globalIDRef=\"urn:a\" itemwiseStatusCode=\"0\"/>\n  \
         <SmartcardProfile>\n    <LTKM>AQID</LTKM>\n  </SmartcardProfile>\n</ServiceResponse>\n"
    );
    assert_eq!(CONTENT_TYPE, "application/vnd.oma.bcast.sprov+xml");
}

proptest! {
    #[test]
    fn messages_round_trip(msg in sprov_message()) {
        let xml = msg.to_xml().unwrap();
        prop_assert_eq!(SprovMessage::from_xml(xml.as_bytes()), Ok(msg));
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..400), s in "\\PC{0,300}") {
        for input in [b.as_slice(), s.as_bytes()] {
            let _ = SprovMessage::from_xml(input);
            let _ = ServiceRequest::from_xml(input);
            let _ = ServiceResponse::from_xml(input);
            let _ = TokenPurchaseRequest::from_xml(input);
            let _ = TokenPurchaseResponse::from_xml(input);
            let _ = UnsubscribeRequest::from_xml(input);
            let _ = UnsubscribeResponse::from_xml(input);
            let _ = RegistrationRequest::from_xml(input);
            let _ = RegistrationResponse::from_xml(input);
            let _ = DeregistrationRequest::from_xml(input);
            let _ = DeregistrationResponse::from_xml(input);
            let _ = LtkmRequest::from_xml(input);
            let _ = LtkmResponse::from_xml(input);
            let _ = AccountInquiry::from_xml(input);
            let _ = AccountInquiryResponse::from_xml(input);
        }
        for root in ["ServiceResponse", "LTKMRequest", "AccountInquiryResponse", "TokenPurchaseRequest"] {
            let wrapped = format!("<{root} xmlns=\"urn:keycast:oma-bcast:sprov:1\" requestID=\"1\" globalStatusCode=\"0\">{s}</{root}>");
            let _ = SprovMessage::from_xml(wrapped.as_bytes());
        }
    }

    #[test]
    fn mutated_encodings_never_panic(msg in sprov_message(), i in any::<usize>(), c in any::<u8>()) {
        let mut b = msg.to_xml().unwrap().into_bytes();
        let i = i % b.len();
        b[i] = c;
        let _ = SprovMessage::from_xml(&b);
    }
}
