//! TS 26.346 §11 bodies: every example of facts-3gpp.md §5 (the texts of 26.346 §11.3.2–11.8.2),
//! rejections, and property tests.

mod common;

use common::{mbms_code as code, mbms_msk as msk, security_description, value};
use keycast_provisioning::mbms::*;
use proptest::prelude::*;

/// 26.346 §11.3.2.
const SECURITY_DESCRIPTION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<securityDescription xmlns="urn:3GPP:metadata:2005:MBMS:securityDescription"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xsi:schemaLocation="urn:3GPP:metadata:2005:MBMS:securityDescription security.xsd">
  <keyManagement offsetTime="5" randomTimePeriod="10" uiccKeyManagement="true">
    <serverURI>http://register.operator.umts/</serverURI>
    <serverURI>http://register2.operator.umts/</serverURI>
  </keyManagement>
  <keyId>
    <mediaFlow flowID="224.1.2.3/4002">
      <MSK>
        <keyDomainID>aMoM</keyDomainID>
        <MSKID>aMoAAA==</MSKID>
      </MSK>
    </mediaFlow>
    <mediaFlow flowID="224.1.2.3/4004">
      <MSK>
        <keyDomainID>GM8M</keyDomainID>
        <MSKID>aMkAAA==</MSKID>
      </MSK>
    </mediaFlow>
  </keyId>
  <fecProtection fecEncodingId="1" fecInstanceId="0" fecOtiExtension="1SCxWEMNe397m24SwgyRhg=="/>
</securityDescription>
"#;

/// 26.346 §11.4.2 ("serivce" as in the text).
const REGISTER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<mbmsSecurityRegister xmlns="urn:3GPP:metadata:2005:MBMS:securityRegistration"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xsi:schemaLocation="urn:3GPP:metadata:2005:MBMS:securityRegistration SecurityRegistration.xsd">
  <serviceID>urn:3gpp:mbms:example:serivce:identification:123456789abcdef</serviceID>
</mbmsSecurityRegister>
"#;

/// 26.346 §11.5.2.
const DEREGISTER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<mbmsSecurityDeregister xmlns="urn:3GPP:metadata:2005:MBMS:securityDeregistration"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <serviceID>urn:3gpp:mbms:example:serivce:identification:123456789abcdef</serviceID>
</mbmsSecurityDeregister>
"#;

/// 26.346 §11.6.2.
const MSK_REQUEST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<mbmsMSKRequest xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xmlns="urn:3GPP:metadata:2005:MBMS:mskRequest"
    xsi:schemaLocation="urn:3GPP:metadata:2005:MBMS:mskRequest mskRequest.xsd">
  <MSK>
    <keyDomainID>uHCd</keyDomainID>
    <MSKID>aMkAAA==</MSKID>
  </MSK>
</mbmsMSKRequest>
"#;

/// 26.346 §11.7.2.
const REGISTER_RESPONSE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<mbmsSecurityRegisterResponse xmlns="urn:3GPP:metadata:2005:MBMS:securityRegistrationResponse"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <Response>
    <serviceID>urn:3gpp:mbms:example:service:identification:123456789abcdef</serviceID>
    <ResponseCode>200 OK</ResponseCode>
  </Response>
  <Response>
    <serviceID>urn:3gpp:mbms:example:service:identification:fedcba987654321</serviceID>
    <ResponseCode>200 OK</ResponseCode>
  </Response>
</mbmsSecurityRegisterResponse>
"#;

/// 26.346 §11.8.2.
const MSK_RESPONSE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<mbmsMSKResponse xmlns="urn:3GPP:metadata:2005:MBMS:mskResponse"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xsi:schemaLocation="urn:3GPP:metadata:2005:MBMS:mskResponse mskResponse.xsd">
  <Response>
    <MSK>
      <keyDomainID>uHCd</keyDomainID>
      <MSKID>aMkAAA==</MSKID>
    </MSK>
    <ResponseCode>200 OK</ResponseCode>
  </Response>
  <Response>
    <MSK>
      <keyDomainID>uHCd</keyDomainID>
      <MSKID>JMtEAA==</MSKID>
    </MSK>
    <ResponseCode>200 OK</ResponseCode>
  </Response>
</mbmsMSKResponse>
"#;

const UHCD_1: MskRef = MskRef { key_domain_id: [0xb8, 0x70, 0x9d], msk_id: [0x68, 0xc9, 0x00, 0x00] };
const UHCD_2: MskRef = MskRef { key_domain_id: [0xb8, 0x70, 0x9d], msk_id: [0x24, 0xcb, 0x44, 0x00] };

#[test]
fn decodes_the_security_description_example() {
    let sd = SecurityDescription::from_xml(SECURITY_DESCRIPTION.as_bytes()).unwrap();
    let km = sd.key_management.as_ref().unwrap();
    assert_eq!(km.server_uris, ["http://register.operator.umts/", "http://register2.operator.umts/"]);
    assert_eq!((km.offset_time, km.random_time_period, km.uicc_key_management), (5, 10, true));
    assert_eq!(sd.key_ids.len(), 1);
    let flows = &sd.key_ids[0].media_flows;
    assert_eq!(flows[0].flow_id, "224.1.2.3/4002");
    // aMoM = 68 CA 0C, aMoAAA== = 68 CA 00 00 (facts §5.1).
    assert_eq!(flows[0].msk, MskRef { key_domain_id: [0x68, 0xca, 0x0c], msk_id: [0x68, 0xca, 0, 0] });
    assert_eq!(flows[1].flow_id, "224.1.2.3/4004");
    // GM8M = 18 CF 0C, aMkAAA== = 68 C9 00 00.
    assert_eq!(flows[1].msk, MskRef { key_domain_id: [0x18, 0xcf, 0x0c], msk_id: [0x68, 0xc9, 0, 0] });
    assert_eq!(flows[1].msk.key_group(), 0x68c9);
    assert!(sd.msks().all(|m| m.key_number() == 0));
    assert_eq!(
        sd.fec_protection,
        Some(FecProtection {
            fec_encoding_id: 1,
            fec_instance_id: Some(0),
            fec_oti_extension: Some("1SCxWEMNe397m24SwgyRhg==".into())
        })
    );
    assert_eq!(SecurityDescription::from_xml(sd.to_xml().unwrap().as_bytes()), Ok(sd));
}

#[test]
fn security_description_defaults() {
    let xml = r#"<securityDescription xmlns="urn:3GPP:metadata:2005:MBMS:securityDescription">
        <keyManagement><serverURI>http://bmsc.home1.net:1234</serverURI></keyManagement>
        <keyId><mediaFlow flowID="224.1.2.3/4002"><MSK><keyDomainID>APEQ</keyDomainID><MSKID>AAEAAA==</MSKID></MSK></mediaFlow></keyId>
        <fecProtection/>
    </securityDescription>"#;
    let sd = SecurityDescription::from_xml(xml.as_bytes()).unwrap();
    assert_eq!(sd.key_management, Some(KeyManagement::new(vec!["http://bmsc.home1.net:1234".into()])));
    assert!(sd.key_management.unwrap().uicc_key_management, "uiccKeyManagement defaults to true");
    assert_eq!(
        sd.fec_protection,
        Some(FecProtection { fec_encoding_id: 0, fec_instance_id: None, fec_oti_extension: None })
    );
    let no_km = xml.replace("<keyManagement><serverURI>http://bmsc.home1.net:1234</serverURI></keyManagement>", "");
    assert_eq!(SecurityDescription::from_xml(no_km.as_bytes()).unwrap().key_management, None);
    let off = xml.replace("<keyManagement>", "<keyManagement uiccKeyManagement=\"0\">");
    assert!(!SecurityDescription::from_xml(off.as_bytes()).unwrap().key_management.unwrap().uicc_key_management);
}

#[test]
fn decodes_the_registration_examples() {
    let id = "urn:3gpp:mbms:example:serivce:identification:123456789abcdef";
    let r = RegisterRequest::from_xml(REGISTER.as_bytes()).unwrap();
    assert_eq!(r.service_ids, [id]);
    assert_eq!(RegisterRequest::from_xml(r.to_xml().unwrap().as_bytes()), Ok(r));
    let d = DeregisterRequest::from_xml(DEREGISTER.as_bytes()).unwrap();
    assert_eq!(d.service_ids, [id]);
    assert_eq!(DeregisterRequest::from_xml(d.to_xml().unwrap().as_bytes()), Ok(d));
    // The two roots are not interchangeable.
    assert!(matches!(RegisterRequest::from_xml(DEREGISTER.as_bytes()), Err(XmlError::WrongRoot { .. })));
}

#[test]
fn decodes_the_msk_request_example() {
    let r = MskRequest::from_xml(MSK_REQUEST.as_bytes()).unwrap();
    assert_eq!(r.msks, [UHCD_1]); // uHCd = B8 70 9D
    assert_eq!(MskRequest::from_xml(r.to_xml().unwrap().as_bytes()), Ok(r));
}

#[test]
fn decodes_the_response_examples() {
    let r = RegisterResponse::from_xml(REGISTER_RESPONSE.as_bytes()).unwrap();
    assert_eq!(r.responses.len(), 2);
    assert_eq!(r.responses[1].service_id, "urn:3gpp:mbms:example:service:identification:fedcba987654321");
    assert!(r.responses.iter().all(|s| s.response_code == ResponseCode::OK));
    assert_eq!(RegisterResponse::from_xml(r.to_xml().unwrap().as_bytes()), Ok(r));

    let m = MskResponse::from_xml(MSK_RESPONSE.as_bytes()).unwrap();
    assert_eq!(m.responses.iter().map(|s| s.msk).collect::<Vec<_>>(), [UHCD_1, UHCD_2]); // JMtEAA== = 24 CB 44 00
    assert_eq!(m.responses[1].msk.key_number(), 0x4400);
    assert!(m.responses.iter().all(|s| s.response_code.is_success()));
    assert_eq!(MskResponse::from_xml(m.to_xml().unwrap().as_bytes()), Ok(m));
}

#[test]
fn encodes_like_the_examples() {
    let m = MskResponse {
        responses: vec![
            MskStatus { msk: UHCD_1, response_code: ResponseCode::OK },
            MskStatus { msk: UHCD_2, response_code: ResponseCode::new(503) },
        ],
    };
    let xml = m.to_xml().unwrap();
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<mbmsMSKResponse xmlns=\"urn:3GPP:metadata:2005:MBMS:mskResponse\">"));
    assert!(xml.contains("<MSK><keyDomainID>uHCd</keyDomainID><MSKID>JMtEAA==</MSKID></MSK>"), "{xml}");
    assert!(xml.contains("<ResponseCode>503 Service Unavailable</ResponseCode>"), "{xml}");
}

#[test]
fn response_codes() {
    assert_eq!("200 OK".parse::<ResponseCode>(), Ok(ResponseCode::OK));
    let c = ResponseCode::parse("  503   Service Unavailable ").unwrap();
    assert_eq!((c.code, &*c.reason), (503, "Service Unavailable"));
    assert!(c.may_retry() && !c.is_success());
    assert!(ResponseCode::new(401).may_retry());
    assert!(!ResponseCode::new(403).may_retry());
    assert_eq!(ResponseCode::parse("404").unwrap().to_string(), "404");
    assert_eq!(ResponseCode::new(403).to_string(), "403 Forbidden");
    for bad in ["", "OK", "20 OK", "2000 OK", "200OK", "099 x", "-200 OK"] {
        assert!(
            matches!(ResponseCode::parse(bad), Err(XmlError::InvalidValue { element: "ResponseCode", .. })),
            "{bad}"
        );
    }
    let bad = RegisterResponse {
        responses: vec![ServiceStatus { service_id: "a".into(), response_code: ResponseCode::new(1000) }],
    };
    assert!(bad.to_xml().is_err());
}

#[test]
fn ignores_unknown_elements_attributes_and_prefixes() {
    let xml = r#"<!-- lax --><r:mbmsMSKRequest xmlns:r="urn:3GPP:metadata:2005:MBMS:mskRequest" xmlns:o="urn:other" extra="1" o:x="2">
        <o:MSK><o:keyDomainID>AAAA</o:keyDomainID></o:MSK>
        <r:MSK a="b"><r:keyDomainID> uH
        Cd </r:keyDomainID><r:unknown/><r:MSKID><![CDATA[aMkAAA==]]></r:MSKID><o:ext>1</o:ext></r:MSK>
        <r:future>x</r:future>
    </r:mbmsMSKRequest>"#;
    assert_eq!(MskRequest::from_xml(xml.as_bytes()).unwrap().msks, [UHCD_1]);
}

#[test]
fn rejects_wrong_namespace() {
    let xml =
        MSK_REQUEST.replace("urn:3GPP:metadata:2005:MBMS:mskRequest\"", "urn:3GPP:metadata:2005:MBMS:mskRequesT\"");
    assert!(matches!(MskRequest::from_xml(xml.as_bytes()), Err(XmlError::WrongRoot { .. })));
    // Children in another namespace are not ours: the list is then empty.
    let xml = r#"<mbmsSecurityRegister xmlns="urn:3GPP:metadata:2005:MBMS:securityRegistration">
        <serviceID xmlns="urn:other">x</serviceID></mbmsSecurityRegister>"#;
    assert_eq!(
        RegisterRequest::from_xml(xml.as_bytes()),
        Err(XmlError::Missing { element: "serviceID", parent: "mbmsSecurityRegister" })
    );
}

#[test]
fn rejects_missing_duplicate_and_bad_values() {
    let no_msk_id = MSK_REQUEST.replace("<MSKID>aMkAAA==</MSKID>", "");
    assert_eq!(MskRequest::from_xml(no_msk_id.as_bytes()), Err(XmlError::Missing { element: "MSKID", parent: "MSK" }));
    let two = MSK_REQUEST.replace("<MSKID>aMkAAA==</MSKID>", "<MSKID>aMkAAA==</MSKID><MSKID>aMkAAA==</MSKID>");
    assert_eq!(MskRequest::from_xml(two.as_bytes()), Err(XmlError::Duplicate("MSKID")));
    let short = MSK_REQUEST.replace("aMkAAA==", "aMkA");
    assert_eq!(
        MskRequest::from_xml(short.as_bytes()),
        Err(XmlError::InvalidValue { element: "MSKID", reason: "wrong length" })
    );
    let kd = MSK_REQUEST.replace("uHCd", "uHCdAA==");
    assert_eq!(
        MskRequest::from_xml(kd.as_bytes()),
        Err(XmlError::InvalidValue { element: "keyDomainID", reason: "wrong length" })
    );
    let not_b64 = MSK_REQUEST.replace("uHCd", "uH*d");
    assert!(matches!(
        MskRequest::from_xml(not_b64.as_bytes()),
        Err(XmlError::InvalidValue { element: "keyDomainID", .. })
    ));
    let nested = MSK_REQUEST.replace("uHCd", "uHCd<x/>");
    assert_eq!(MskRequest::from_xml(nested.as_bytes()), Err(XmlError::NotText("keyDomainID")));
    let offset = SECURITY_DESCRIPTION.replace("offsetTime=\"5\"", "offsetTime=\"-5\"");
    assert!(matches!(
        SecurityDescription::from_xml(offset.as_bytes()),
        Err(XmlError::InvalidValue { element: "keyManagement@offsetTime", .. })
    ));
    let uicc = SECURITY_DESCRIPTION.replace("uiccKeyManagement=\"true\"", "uiccKeyManagement=\"yes\"");
    assert!(matches!(
        SecurityDescription::from_xml(uicc.as_bytes()),
        Err(XmlError::InvalidValue { element: "keyManagement@uiccKeyManagement", .. })
    ));
    let no_flow = SECURITY_DESCRIPTION.replace(" flowID=\"224.1.2.3/4002\"", "");
    assert_eq!(
        SecurityDescription::from_xml(no_flow.as_bytes()),
        Err(XmlError::MissingAttribute { element: "mediaFlow", attribute: "flowID" })
    );
    let no_key_id = r#"<securityDescription xmlns="urn:3GPP:metadata:2005:MBMS:securityDescription"/>"#;
    assert_eq!(
        SecurityDescription::from_xml(no_key_id.as_bytes()),
        Err(XmlError::Missing { element: "keyId", parent: "securityDescription" })
    );
    let code = MSK_RESPONSE.replacen("200 OK", "OK", 1);
    assert!(matches!(
        MskResponse::from_xml(code.as_bytes()),
        Err(XmlError::InvalidValue { element: "ResponseCode", .. })
    ));
    let empty_id = REGISTER.replace("urn:3gpp:mbms:example:serivce:identification:123456789abcdef", " ");
    assert!(matches!(
        RegisterRequest::from_xml(empty_id.as_bytes()),
        Err(XmlError::InvalidValue { element: "serviceID", .. })
    ));
}

#[test]
fn rejects_doctype_size_encoding_and_malformed() {
    let dt = REGISTER.replace("<mbmsSecurityRegister", "<!DOCTYPE r [<!ENTITY e \"x\">]><mbmsSecurityRegister");
    assert_eq!(RegisterRequest::from_xml(dt.as_bytes()), Err(XmlError::DocType));
    let big = format!("{REGISTER}<!--{}-->", "x".repeat(MAX_XML_LEN));
    assert!(matches!(RegisterRequest::from_xml(big.as_bytes()), Err(XmlError::TooLarge { .. })));
    assert_eq!(RegisterRequest::from_xml(&[0xff, 0xfe, b'<']), Err(XmlError::NotUtf8));
    let latin = REGISTER.replace("UTF-8", "ISO-8859-1");
    assert_eq!(RegisterRequest::from_xml(latin.as_bytes()), Err(XmlError::NotUtf8));
    let entity = REGISTER.replace("123456789abcdef", "&undefined;");
    assert!(matches!(RegisterRequest::from_xml(entity.as_bytes()), Err(XmlError::Syntax(_))));
    let trailing = format!("{REGISTER}<x/>");
    assert!(matches!(RegisterRequest::from_xml(trailing.as_bytes()), Err(XmlError::Syntax(_))));
    let deep = format!(
        "<mbmsSecurityRegister xmlns=\"urn:3GPP:metadata:2005:MBMS:securityRegistration\">{}",
        "<a>".repeat(100)
    );
    assert!(matches!(RegisterRequest::from_xml(deep.as_bytes()), Err(XmlError::TooDeep(_))));
    for bad in ["", "<", "<a xmlns:p=\"u\"><p:b></a>", "<q:x/>", "text"] {
        assert!(RegisterRequest::from_xml(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn encoder_refuses_what_it_cannot_carry() {
    assert_eq!(
        RegisterRequest { service_ids: vec![] }.to_xml(),
        Err(XmlError::Missing { element: "serviceID", parent: "mbmsSecurityRegister" })
    );
    assert!(RegisterRequest { service_ids: vec![" x".into()] }.to_xml().is_err());
    assert!(RegisterRequest { service_ids: vec!["a\u{1}b".into()] }.to_xml().is_err());
    assert!(MskRequest { msks: vec![] }.to_xml().is_err());
    let escaped = RegisterRequest { service_ids: vec!["urn:a<b>&\"c".into()] };
    let xml = escaped.to_xml().unwrap();
    assert!(xml.contains("urn:a&lt;b&gt;&amp;&quot;c"), "{xml}");
    assert_eq!(RegisterRequest::from_xml(xml.as_bytes()), Ok(escaped));
}

#[test]
fn media_types() {
    assert_eq!(SECURITY_DESCRIPTION_CONTENT_TYPE, "application/mbms-protection-description+xml");
    assert_eq!(REGISTER_CONTENT_TYPE, "application/mbms-register+xml");
    assert_eq!(DEREGISTER_CONTENT_TYPE, "application/mbms-deregister+xml");
    assert_eq!(MSK_REQUEST_CONTENT_TYPE, "application/mbms-msk+xml");
    assert_eq!(REGISTER_RESPONSE_CONTENT_TYPE, "application/mbms-register-response+xml");
    assert_eq!(MSK_RESPONSE_CONTENT_TYPE, "application/mbms-msk-response+xml");
}

// ---------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn security_description_round_trips(sd in security_description()) {
        prop_assert_eq!(SecurityDescription::from_xml(sd.to_xml().unwrap().as_bytes()), Ok(sd));
    }

    #[test]
    fn requests_round_trip(ids in prop::collection::vec(value(), 1..5), msks in prop::collection::vec(msk(), 1..5)) {
        let r = RegisterRequest { service_ids: ids.clone() };
        prop_assert_eq!(RegisterRequest::from_xml(r.to_xml().unwrap().as_bytes()), Ok(r));
        let d = DeregisterRequest { service_ids: ids };
        prop_assert_eq!(DeregisterRequest::from_xml(d.to_xml().unwrap().as_bytes()), Ok(d));
        let m = MskRequest { msks };
        prop_assert_eq!(MskRequest::from_xml(m.to_xml().unwrap().as_bytes()), Ok(m));
    }

    #[test]
    fn responses_round_trip(s in prop::collection::vec((value(), code()), 1..5), m in prop::collection::vec((msk(), code()), 1..5)) {
        let r = RegisterResponse { responses: s.into_iter().map(|(service_id, response_code)| ServiceStatus { service_id, response_code }).collect() };
        prop_assert_eq!(RegisterResponse::from_xml(r.to_xml().unwrap().as_bytes()), Ok(r));
        let m = MskResponse { responses: m.into_iter().map(|(msk, response_code)| MskStatus { msk, response_code }).collect() };
        prop_assert_eq!(MskResponse::from_xml(m.to_xml().unwrap().as_bytes()), Ok(m));
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..400), s in "\\PC{0,300}") {
        for input in [b.as_slice(), s.as_bytes()] {
            let _ = SecurityDescription::from_xml(input);
            let _ = RegisterRequest::from_xml(input);
            let _ = DeregisterRequest::from_xml(input);
            let _ = MskRequest::from_xml(input);
            let _ = RegisterResponse::from_xml(input);
            let _ = MskResponse::from_xml(input);
        }
        let wrapped = format!("<mbmsMSKResponse xmlns=\"urn:3GPP:metadata:2005:MBMS:mskResponse\"><Response>{s}");
        let _ = MskResponse::from_xml(wrapped.as_bytes());
    }

    #[test]
    fn mutated_examples_never_panic(i in 0usize..2000, c in any::<u8>()) {
        for ex in [SECURITY_DESCRIPTION, MSK_RESPONSE, REGISTER_RESPONSE] {
            let mut b = ex.as_bytes().to_vec();
            let i = i % b.len();
            b[i] = c;
            let _ = SecurityDescription::from_xml(&b);
            let _ = MskResponse::from_xml(&b);
            let _ = RegisterResponse::from_xml(&b);
        }
    }
}
