//! The provisioning client core without a network: every request built and parsed back, the
//! purchase list (expired items dropped), and each decision of the Ua exchange against a
//! stand-in BSM (Digest, 401 → bootstrap again → retry, rspauth, request IDs, statuses).

mod common;

use common::*;
use keycast_gba::client::HttpRequest;
use keycast_mikey::SekPekId;
use keycast_provisioning::digest::{Credentials, Qop};
use keycast_provisioning::mbms::{
    self, DeregisterRequest, MskRequest, MskResponse, MskStatus, RegisterRequest, ResponseCode,
};
use keycast_provisioning::sprov::{
    self, AccountInquiryResponse, AccountItem, InquiryType, ItemStatus, PurchaseItemRef, PurchaseRequestItem,
    ServiceResponse, SprovMessage, StatusCode, TokenPurchaseItem, UnsubscribeResponse,
};
use keycast_terminal::ltkm_intake::{Interface, LtkmEvent, bcast_key};
use keycast_terminal::provisioning::{
    ClientConfig, ProvisioningClient, ProvisioningError, Purchase, Request, Response, Step,
};

const CNONCE: [u8; 16] = [0x42; 16];

fn client() -> ProvisioningClient {
    let mut c = ProvisioningClient::new(ClientConfig::new(BSM, "Keycast-test/0.1"));
    c.set_credentials(creds(BTID, 1));
    c
}

fn item(g: &str, p: &str) -> PurchaseItemRef {
    PurchaseItemRef::new(g, Some(p))
}

fn service_response(request_id: u32, items: Vec<ItemStatus>, ltkms: Vec<Vec<u8>>) -> Vec<u8> {
    ServiceResponse {
        request_id,
        status: StatusCode::Success,
        description: None,
        registration_required: false,
        items,
        ltkms,
    }
    .to_xml()
    .unwrap()
    .into_bytes()
}

#[test]
fn every_request_is_built_and_parses_back() {
    let mut c = client();
    c.purchases_mut().insert(Purchase { item: item("basic", "month"), valid_until: None });
    let cfg = c.config().clone();
    let key = bcast_key(kd(), SekPekId { key_group: 1, key_number: 0 });
    let requests = vec![
        c.service_request(vec![(PurchaseRequestItem { item: item("basic", "month"), price: None }, None)]).unwrap(),
        c.token_purchase(vec![TokenPurchaseItem {
            key_id: key,
            global_id_ref: None,
            number_of_tokens: Some(2),
            price: None,
        }])
        .unwrap(),
        c.unsubscribe(None),
        c.registration(now()).unwrap(),
        c.deregistration(now()).unwrap(),
        c.ltkm_request(&[key]).unwrap(),
        c.account_inquiry(InquiryType::PurchaseItem, vec![]),
    ];
    let mut ids = Vec::new();
    for r in &requests {
        let (uri, content_type, body) = r.encode(&cfg).unwrap();
        assert_eq!((uri.as_str(), content_type), ("/sprov", sprov::CONTENT_TYPE));
        let parsed = SprovMessage::from_xml(&body).unwrap();
        assert!(parsed.is_request());
        assert_eq!(Request::Sprov(parsed), *r, "{}", r.name());
        ids.push(r.request_id().unwrap());
        // No ClientID: the Digest username names the terminal.
        assert!(!String::from_utf8(body).unwrap().contains("ClientID"));
    }
    assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7], "request IDs count up");

    let mbms_requests = [
        (c.mbms_register(now()).unwrap(), "/keymanagement?requesttype=register", mbms::REGISTER_CONTENT_TYPE),
        (c.mbms_deregister(now()).unwrap(), "/keymanagement?requesttype=deregister", mbms::DEREGISTER_CONTENT_TYPE),
        (c.mbms_msk_request(&[key]).unwrap(), "/keymanagement?requesttype=msk-request", mbms::MSK_REQUEST_CONTENT_TYPE),
    ];
    for (r, path, ct) in &mbms_requests {
        assert_eq!(r.interface(), Interface::Mbms);
        let (uri, content_type, body) = r.encode(&cfg).unwrap();
        assert_eq!((uri.as_str(), content_type), (*path, *ct));
        match r {
            Request::MbmsRegister(x) => assert_eq!(RegisterRequest::from_xml(&body).unwrap(), *x),
            Request::MbmsDeregister(x) => assert_eq!(DeregisterRequest::from_xml(&body).unwrap(), *x),
            Request::MbmsMskRequest(x) => assert_eq!(MskRequest::from_xml(&body).unwrap(), *x),
            Request::Sprov(_) => unreachable!(),
        }
    }
    assert_eq!(
        mbms_requests[0].0,
        Request::MbmsRegister(RegisterRequest { service_ids: vec!["basicmonth".into()] }),
        "MBMS User Service ID = GlobalPurchaseItemID ‖ PurchaseDataID"
    );
    assert_eq!(c.key_request(Interface::Mbms, &[key]).unwrap(), mbms_requests[2].0);
    assert!(matches!(c.ltkm_request(&[]), Err(ProvisioningError::NothingToRequest(_))));
}

#[test]
fn expired_purchase_items_are_dropped_from_registration_and_deregistration() {
    let mut c = client();
    c.purchases_mut().insert(Purchase { item: item("ppv", "final"), valid_until: Some(at(T0 + 10)) });
    c.purchases_mut().insert(Purchase { item: item("basic", "month"), valid_until: Some(at(T0 + 1000)) });
    c.purchases_mut().insert(Purchase { item: item("forever", "x"), valid_until: None });

    let Request::Sprov(SprovMessage::RegistrationRequest(r)) = c.registration(at(T0 + 5)).unwrap() else { panic!() };
    assert_eq!(r.items.len(), 3);
    let Request::Sprov(SprovMessage::RegistrationRequest(r)) = c.registration(at(T0 + 10)).unwrap() else { panic!() };
    assert_eq!(r.items, [item("basic", "month"), item("forever", "x")]);
    assert_eq!(c.purchases().len(), 2, "the expired item left the list");
    let Request::MbmsDeregister(d) = c.mbms_deregister(at(T0 + 2000)).unwrap() else { panic!() };
    assert_eq!(d.service_ids, ["foreverx"]);
    c.purchases_mut().remove_item("forever");
    assert!(matches!(c.registration(at(T0 + 2000)), Err(ProvisioningError::NothingToRequest(_))));
}

#[test]
fn service_request_exchange_feeds_the_card_and_keeps_the_purchase() {
    let bsm = FakeBsm::new();
    let mut c = client();
    let mut card = card_with_muk(BTID);
    let until = at(T0 + 30 * 86_400);
    let request = c
        .service_request(vec![(PurchaseRequestItem { item: item("basic", "month"), price: None }, Some(until))])
        .unwrap();
    let first = c.start(request, &CNONCE).unwrap();
    assert_eq!(first.header("Authorization"), None, "no nonce known yet");
    assert!(first.header("User-Agent").unwrap().contains("3gpp-gba"));
    assert_eq!(first.header("Host"), Some(BSM));

    let Step::Send(second) = c.handle_response(bsm.challenge(false), &mut card, now(), &CNONCE).unwrap() else {
        panic!("the challenge is answered")
    };
    let authz = Credentials::parse(second.header("Authorization").unwrap()).unwrap();
    assert_eq!((authz.username.as_str(), authz.qop), (BTID, Some(Qop::AuthInt)), "auth-int preferred");
    assert_eq!(second.body, first.body);

    let body = service_response(
        1,
        vec![ItemStatus { item: item("basic", "month"), status: StatusCode::Success }],
        vec![ltkm(BTID, 1, 1, 1, false)],
    );
    let answer = bsm.answer(&second, 1, sprov::CONTENT_TYPE, &body);
    let Step::Done(answer) = c.handle_response(answer, &mut card, now(), &CNONCE).unwrap() else { panic!() };
    assert!(matches!(answer.response, Response::Service(_)));
    assert_eq!(answer.rebootstraps, 0);
    let report = answer.ltkms[0].as_ref().unwrap();
    assert_eq!(report.event, LtkmEvent::Accepted { key: bcast_key(kd(), SekPekId { key_group: 1, key_number: 1 }) });
    let kept: Vec<_> = c.purchases().iter().cloned().collect();
    assert_eq!(kept, [Purchase { item: item("basic", "month"), valid_until: Some(until) }]);

    // The nonce is kept: the next request carries Digest at once, with nc 2.
    let registration = c.registration(now()).unwrap();
    let next = c.start(registration, &CNONCE).unwrap();
    let authz = Credentials::parse(next.header("Authorization").unwrap()).unwrap();
    assert_eq!(authz.nc.unwrap().0, 2);
}

#[test]
fn refused_btid_means_bootstrap_again_then_retry_once() {
    let bsm = FakeBsm::new();
    let mut c = client();
    let mut card = card_with_muk(BTID);
    let request = c.ltkm_request(&[bcast_key(kd(), SekPekId { key_group: 1, key_number: 0 })]).unwrap();
    c.start(request, &CNONCE).unwrap();
    let Step::Send(answered) = c.handle_response(bsm.challenge(false), &mut card, now(), &CNONCE).unwrap() else {
        panic!()
    };
    // The BSF no longer knows the B-TID: 401 to a fresh Digest answer.
    assert_eq!(c.handle_response(bsm.challenge(false), &mut card, now(), &CNONCE).unwrap(), Step::Rebootstrap);
    assert_eq!(c.b_tid(), None, "the refused credentials are dropped");
    assert!(matches!(c.resume(&CNONCE), Err(ProvisioningError::NoCredentials)));
    c.set_credentials(creds(BTID2, 2));
    let retry = c.resume(&CNONCE).unwrap();
    let authz = Credentials::parse(retry.header("Authorization").unwrap()).unwrap();
    assert_eq!(authz.username, BTID2);
    assert_eq!(retry.body, answered.body, "the same request again");
    let body = sprov::LtkmResponse {
        request_id: 1,
        status: StatusCode::Success,
        description: None,
        keys: vec![],
        ltkms: vec![],
    }
    .to_xml()
    .unwrap();
    let answer = bsm.answer(&retry, 2, sprov::CONTENT_TYPE, body.as_bytes());
    let Step::Done(answer) = c.handle_response(answer, &mut card, now(), &CNONCE).unwrap() else { panic!() };
    assert_eq!(answer.rebootstraps, 1);

    // A second refusal after a new bootstrap is final.
    let request = c.registration(now());
    assert!(request.is_err(), "no purchases yet");
    let request = c.unsubscribe(None);
    c.start(request, &CNONCE).unwrap();
    c.handle_response(bsm.challenge(false), &mut card, now(), &CNONCE).unwrap();
    assert_eq!(c.handle_response(bsm.challenge(false), &mut card, now(), &CNONCE).unwrap(), Step::Rebootstrap);
    c.set_credentials(creds(BTID, 3));
    c.resume(&CNONCE).unwrap();
    assert_eq!(
        c.handle_response(bsm.challenge(false), &mut card, now(), &CNONCE),
        Err(ProvisioningError::Unauthorized)
    );
    assert!(!c.is_busy());
}

#[test]
fn stale_nonce_is_answered_again_without_bootstrapping() {
    let bsm = FakeBsm::new();
    let mut c = client();
    let mut card = card_with_muk(BTID);
    let r = c.unsubscribe(None);
    c.start(r, &CNONCE).unwrap();
    c.handle_response(bsm.challenge(false), &mut card, now(), &CNONCE).unwrap();
    let step = c.handle_response(bsm.challenge(true), &mut card, now(), &CNONCE).unwrap();
    assert!(matches!(step, Step::Send(_)), "{step:?}");
    assert_eq!(c.b_tid(), Some(BTID));
}

#[test]
fn kept_nonce_refused_is_retried_with_the_fresh_challenge_before_bootstrapping() {
    let bsm = FakeBsm::new();
    let mut c = client();
    let mut card = card_with_muk(BTID);
    let r = c.unsubscribe(None);
    let first = c.start(r, &CNONCE).unwrap();
    let Step::Send(second) = c.handle_response(bsm.challenge(false), &mut card, now(), &CNONCE).unwrap() else {
        panic!()
    };
    let _ = first;
    let body = UnsubscribeResponse { request_id: 1, status: StatusCode::Success, description: None, items: vec![] }
        .to_xml()
        .unwrap();
    c.handle_response(bsm.answer(&second, 1, sprov::CONTENT_TYPE, body.as_bytes()), &mut card, now(), &CNONCE).unwrap();
    // Next request goes with the kept nonce; a BSM that restarted refuses it without stale=true.
    let r = c.unsubscribe(None);
    assert!(c.start(r, &CNONCE).unwrap().header("Authorization").is_some());
    let step = c.handle_response(bsm.challenge(false), &mut card, now(), &CNONCE).unwrap();
    assert!(matches!(step, Step::Send(_)), "answer the fresh challenge first: {step:?}");
}

#[test]
fn rejects_challenge_of_another_realm_or_without_auth_int() {
    let mut card = card_with_muk(BTID);
    let mut evil = FakeBsm::new();
    evil.realm = "3GPP-bootstrapping@evil.example.org".into();
    let mut c = client();
    let r = c.unsubscribe(None);
    c.start(r, &CNONCE).unwrap();
    assert!(matches!(
        c.handle_response(evil.challenge(false), &mut card, now(), &CNONCE),
        Err(ProvisioningError::Challenge(_))
    ));

    let mut weak = FakeBsm::new();
    weak.qop = vec![Qop::Auth];
    let r = c.unsubscribe(None);
    c.start(r, &CNONCE).unwrap();
    assert!(matches!(
        c.handle_response(weak.challenge(false), &mut card, now(), &CNONCE),
        Err(ProvisioningError::Challenge(_))
    ));

    let mut config = ClientConfig::new(BSM, "t");
    config.allow_qop_auth = true;
    let mut lenient = ProvisioningClient::new(config);
    lenient.set_credentials(creds(BTID, 1));
    let r = lenient.unsubscribe(None);
    lenient.start(r, &CNONCE).unwrap();
    assert!(matches!(lenient.handle_response(weak.challenge(false), &mut card, now(), &CNONCE), Ok(Step::Send(_))));
}

/// Runs a request up to its Digest answer and returns that answer's HTTP request.
fn answered(c: &mut ProvisioningClient, bsm: &FakeBsm, request: Request) -> HttpRequest {
    let mut card = card_with_muk(BTID);
    c.start(request, &CNONCE).unwrap();
    match c.handle_response(bsm.challenge(false), &mut card, now(), &CNONCE).unwrap() {
        Step::Send(r) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejects_answers_that_do_not_authenticate_the_bsm() {
    let bsm = FakeBsm::new();
    let mut card = card_with_muk(BTID);
    let mut c = client();
    let r = c.unsubscribe(None);
    let sent = answered(&mut c, &bsm, r);
    let body = UnsubscribeResponse { request_id: 1, status: StatusCode::Success, description: None, items: vec![] }
        .to_xml()
        .unwrap();
    // Signed with another SRK: rspauth does not verify.
    let mut forged = bsm.answer(&sent, 1, sprov::CONTENT_TYPE, body.as_bytes());
    forged.body = body.replace("requestID=\"1\"", "requestID=\"1\" ").into_bytes();
    assert!(matches!(
        c.handle_response(forged, &mut card, now(), &CNONCE),
        Err(ProvisioningError::NotAuthenticated(_))
    ));

    let r = c.unsubscribe(None);
    let sent = answered(&mut c, &bsm, r);
    let mut unsigned = bsm.answer(&sent, 1, sprov::CONTENT_TYPE, body.as_bytes());
    unsigned.headers.retain(|(n, _)| n != "Authentication-Info");
    assert!(matches!(
        c.handle_response(unsigned, &mut card, now(), &CNONCE),
        Err(ProvisioningError::NotAuthenticated(_))
    ));
}

#[test]
fn rejects_answers_to_another_request() {
    let bsm = FakeBsm::new();
    let mut card = card_with_muk(BTID);
    let mut c = client();
    // Wrong requestID.
    let r = c.unsubscribe(None);
    let sent = answered(&mut c, &bsm, r);
    let body = UnsubscribeResponse { request_id: 99, status: StatusCode::Success, description: None, items: vec![] }
        .to_xml()
        .unwrap();
    let a = bsm.answer(&sent, 1, sprov::CONTENT_TYPE, body.as_bytes());
    assert!(matches!(c.handle_response(a, &mut card, now(), &CNONCE), Err(ProvisioningError::Malformed(_))));
    // Another message type.
    let r = c.unsubscribe(None);
    let sent = answered(&mut c, &bsm, r);
    let body = service_response(2, vec![], vec![]);
    let a = bsm.answer(&sent, 1, sprov::CONTENT_TYPE, &body);
    assert!(matches!(c.handle_response(a, &mut card, now(), &CNONCE), Err(ProvisioningError::Malformed(_))));
    // Wrong content type, and garbage.
    let r = c.unsubscribe(None);
    let sent = answered(&mut c, &bsm, r);
    let a = bsm.answer(&sent, 1, "text/plain", b"hello");
    assert!(matches!(c.handle_response(a, &mut card, now(), &CNONCE), Err(ProvisioningError::Malformed(_))));
    let r = c.unsubscribe(None);
    let sent = answered(&mut c, &bsm, r);
    let a = bsm.answer(&sent, 1, sprov::CONTENT_TYPE, b"<UnsubscribeResponse");
    assert!(matches!(c.handle_response(a, &mut card, now(), &CNONCE), Err(ProvisioningError::Malformed(_))));
}

#[test]
fn busy_bsm_and_other_statuses_are_typed() {
    let mut card = card_with_muk(BTID);
    let mut c = client();
    let r = c.unsubscribe(None);
    c.start(r, &CNONCE).unwrap();
    let busy = keycast_gba::client::HttpResponse {
        status: 503,
        headers: vec![("Retry-After".into(), "30".into())],
        body: vec![],
    };
    assert_eq!(
        c.handle_response(busy, &mut card, now(), &CNONCE),
        Err(ProvisioningError::Unavailable { retry_after: Some(30) })
    );
    let r = c.unsubscribe(None);
    c.start(r, &CNONCE).unwrap();
    let nope = keycast_gba::client::HttpResponse { status: 415, headers: vec![], body: vec![] };
    assert_eq!(c.handle_response(nope, &mut card, now(), &CNONCE), Err(ProvisioningError::Http(415)));
    let no_challenge = keycast_gba::client::HttpResponse { status: 401, headers: vec![], body: vec![] };
    let r = c.unsubscribe(None);
    c.start(r, &CNONCE).unwrap();
    assert!(matches!(c.handle_response(no_challenge, &mut card, now(), &CNONCE), Err(ProvisioningError::Challenge(_))));
    // Out of order calls are errors too.
    assert!(matches!(c.resume(&CNONCE), Err(ProvisioningError::OutOfOrder(_))));
    let stray = keycast_gba::client::HttpResponse { status: 200, headers: vec![], body: vec![] };
    assert!(matches!(c.handle_response(stray, &mut card, now(), &CNONCE), Err(ProvisioningError::OutOfOrder(_))));
    let mut fresh = ProvisioningClient::new(ClientConfig::new(BSM, "t"));
    let r = fresh.unsubscribe(None);
    assert_eq!(fresh.start(r, &CNONCE), Err(ProvisioningError::NoCredentials));
}

#[test]
fn answers_update_the_purchase_list() {
    let bsm = FakeBsm::new();
    let mut card = card_with_muk(BTID);
    let mut c = client();
    c.purchases_mut().insert(Purchase { item: item("basic", "month"), valid_until: None });
    c.purchases_mut().insert(Purchase { item: item("gone", "x"), valid_until: None });

    // Account inquiry: validity learnt, expired dropped.
    let r = c.account_inquiry(InquiryType::PurchaseItem, vec![]);
    let sent = answered(&mut c, &bsm, r);
    let body = AccountInquiryResponse {
        request_id: 1,
        status: StatusCode::Success,
        description: None,
        items: vec![
            AccountItem {
                item: item("basic", "month"),
                status: None,
                valid_from: None,
                valid_until: Some(at(T0 + 100)),
                price: None,
            },
            AccountItem {
                item: item("old", "y"),
                status: None,
                valid_from: None,
                valid_until: Some(at(T0 - 1)),
                price: None,
            },
        ],
        billing_info: None,
    }
    .to_xml()
    .unwrap();
    c.handle_response(bsm.answer(&sent, 1, sprov::CONTENT_TYPE, body.as_bytes()), &mut card, now(), &CNONCE).unwrap();
    let basic = c.purchases().iter().find(|p| p.item.global_id_ref == "basic").unwrap().clone();
    assert_eq!(basic.valid_until, Some(at(T0 + 100)));
    assert!(c.purchases().iter().all(|p| p.item.global_id_ref != "old"));

    // Registration answered "no subscription" for an item: it leaves the list.
    let r = c.registration(now()).unwrap();
    let Request::Sprov(SprovMessage::RegistrationRequest(req)) = &r else { panic!() };
    let id = req.request_id;
    let sent = answered(&mut c, &bsm, r);
    let body = sprov::RegistrationResponse {
        request_id: id,
        status: StatusCode::Success,
        description: None,
        items: vec![
            ItemStatus { item: item("basic", "month"), status: StatusCode::Success },
            ItemStatus { item: item("gone", "x"), status: StatusCode::NoSubscription },
        ],
        ltkms: vec![],
    }
    .to_xml()
    .unwrap();
    let Step::Done(a) = c
        .handle_response(bsm.answer(&sent, 1, sprov::CONTENT_TYPE, body.as_bytes()), &mut card, now(), &CNONCE)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(a.response.refused_items(), [("gonex".to_owned(), StatusCode::NoSubscription.value())]);
    assert!(c.purchases().iter().all(|p| p.item.global_id_ref != "gone"));

    // Unsubscribe of everything empties the list.
    let r = c.unsubscribe(None);
    let Request::Sprov(SprovMessage::UnsubscribeRequest(req)) = &r else { panic!() };
    let id = req.request_id;
    let sent = answered(&mut c, &bsm, r);
    let body = UnsubscribeResponse {
        request_id: id,
        status: StatusCode::Success,
        description: None,
        items: vec![ItemStatus { item: PurchaseItemRef::new(sprov::ALL_SERVICES, None), status: StatusCode::Success }],
    }
    .to_xml()
    .unwrap();
    c.handle_response(bsm.answer(&sent, 1, sprov::CONTENT_TYPE, body.as_bytes()), &mut card, now(), &CNONCE).unwrap();
    assert!(c.purchases().is_empty());
}

#[test]
fn mbms_msk_answer_reports_per_key_status() {
    let bsm = FakeBsm::new();
    let mut card = card_with_muk(BTID);
    let mut c = client();
    let key = bcast_key(kd(), SekPekId { key_group: 2, key_number: 0 });
    let r = c.mbms_msk_request(&[key]).unwrap();
    let sent = answered(&mut c, &bsm, r);
    assert_eq!(sent.uri, "/keymanagement?requesttype=msk-request");
    let msk = mbms::MskRef { key_domain_id: key.key_domain_id, msk_id: key.sek_pek_id };
    let body =
        MskResponse { responses: vec![MskStatus { msk, response_code: ResponseCode::new(403) }] }.to_xml().unwrap();
    let a = bsm.answer(&sent, 1, mbms::MSK_RESPONSE_CONTENT_TYPE, body.as_bytes());
    let Step::Done(a) = c.handle_response(a, &mut card, now(), &CNONCE).unwrap() else { panic!() };
    assert_eq!(a.response.refused_items(), [("00f11000020000".to_owned(), 403)]);
    assert!(a.response.ltkms().is_empty());
}
