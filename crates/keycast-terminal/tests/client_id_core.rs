//! The provisioning client's BCAST_Client_ID rules without a network (seed §6.9.2): re-sending a
//! Registration with the ID when the BSM asks, only over mutual TLS; the typed refusals; the ID
//! never on other requests nor smuggled in through the configured User-Agent.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use keycast_gba::client::{HttpRequest, HttpResponse};
use keycast_provisioning::digest::Credentials;
use keycast_provisioning::sprov::{self, ItemStatus, PurchaseItemRef, PurchaseRequestItem, StatusCode};
use keycast_terminal::provisioning::{
    BcastClientId, ClientConfig, ProvisioningClient, ProvisioningError, Purchase, Request, Response,
    SEND_CLIENT_ID_BODY, Step,
};

const CNONCE: [u8; 16] = [0x42; 16];
const ID: &[u8] = b"bcast-client-0001";

fn client(id: Option<&[u8]>, at_start: bool, mutual_tls: bool, user_agent: &str) -> ProvisioningClient {
    let mut config = ClientConfig::new(BSM, user_agent);
    config.bcast_client_id = id.map(|b| BcastClientId::new(b.to_vec()).unwrap());
    config.send_client_id_at_start = at_start;
    let mut c = ProvisioningClient::new(config);
    c.set_credentials(creds(BTID, 1));
    c.set_mutual_tls(mutual_tls);
    c.purchases_mut().insert(Purchase { item: PurchaseItemRef::new("basic", Some("month")), valid_until: None });
    c
}

fn user_agent(r: &HttpRequest) -> &str {
    r.header("User-Agent").unwrap()
}

fn id_word() -> String {
    format!("BCAST_Client_ID={}", STANDARD.encode(ID))
}

fn asks_for_id() -> HttpResponse {
    HttpResponse {
        status: 403,
        headers: vec![("Server".into(), "BCAST NAF Server".into()), ("Content-Type".into(), "text/plain".into())],
        body: SEND_CLIENT_ID_BODY.as_bytes().to_vec(),
    }
}

/// Starts `request` and answers the first challenge: the Digest-authenticated POST.
fn authenticated(c: &mut ProvisioningClient, request: Request) -> HttpRequest {
    let bsm = FakeBsm::new();
    let mut card = card_with_muk(BTID);
    let first = c.start(request, &CNONCE).unwrap();
    assert!(!user_agent(&first).contains("BCAST_Client_ID"), "not before the BSM asks");
    let Step::Send(second) = c.handle_response(bsm.challenge(false), &mut card, now(), &CNONCE).unwrap() else {
        panic!()
    };
    second
}

fn registration_response(request_id: u32) -> Vec<u8> {
    sprov::RegistrationResponse {
        request_id,
        status: StatusCode::Success,
        description: None,
        items: vec![ItemStatus { item: PurchaseItemRef::new("basic", Some("month")), status: StatusCode::Success }],
        ltkms: vec![],
    }
    .to_xml()
    .unwrap()
    .into_bytes()
}

#[test]
fn asked_for_the_id_over_mutual_tls_the_registration_goes_again_with_it() {
    let bsm = FakeBsm::new();
    let mut card = card_with_muk(BTID);
    let mut c = client(Some(ID), false, true, "Keycast-test/0.1");
    let registration = c.registration(now()).unwrap();
    let second = authenticated(&mut c, registration);
    let Step::Send(third) = c.handle_response(asks_for_id(), &mut card, now(), &CNONCE).unwrap() else { panic!() };
    assert_eq!(user_agent(&third), format!("Keycast-test/0.1 3gpp-gba {}", id_word()));
    assert_eq!((third.uri.as_str(), &third.body), (second.uri.as_str(), &second.body), "the same Registration");
    let authz = Credentials::parse(third.header("Authorization").unwrap()).unwrap();
    assert_eq!(authz.nc.unwrap().0, 2, "the same nonce, next count");
    let answer = bsm.answer(&third, 1, sprov::CONTENT_TYPE, &registration_response(1));
    let Step::Done(answer) = c.handle_response(answer, &mut card, now(), &CNONCE).unwrap() else { panic!() };
    assert!(matches!(answer.response, Response::Registration(_)));

    // The MBMS register is a Registration too.
    let register = c.mbms_register(now()).unwrap();
    let first = c.start(register, &CNONCE).unwrap();
    assert!(!user_agent(&first).contains("BCAST_Client_ID"));
    let Step::Send(again) = c.handle_response(asks_for_id(), &mut card, now(), &CNONCE).unwrap() else { panic!() };
    assert!(user_agent(&again).ends_with(&id_word()));
}

#[test]
fn the_id_never_goes_outside_mutual_tls() {
    let mut card = card_with_muk(BTID);
    let mut c = client(Some(ID), false, false, "Keycast-test/0.1");
    let registration = c.registration(now()).unwrap();
    authenticated(&mut c, registration);
    assert_eq!(c.handle_response(asks_for_id(), &mut card, now(), &CNONCE), Err(ProvisioningError::ClientIdNeedsHttps));
    assert!(!c.is_busy(), "the exchange is over");

    // Asked to send it at start: refused before anything is sent.
    let mut c = client(Some(ID), true, false, "Keycast-test/0.1");
    let registration = c.registration(now()).unwrap();
    assert_eq!(c.start(registration, &CNONCE), Err(ProvisioningError::ClientIdNeedsHttps));
}

#[test]
fn without_an_id_the_request_for_one_is_reported() {
    let mut card = card_with_muk(BTID);
    let mut c = client(None, false, true, "Keycast-test/0.1");
    let registration = c.registration(now()).unwrap();
    authenticated(&mut c, registration);
    assert_eq!(c.handle_response(asks_for_id(), &mut card, now(), &CNONCE), Err(ProvisioningError::ClientIdRequested));
}

#[test]
fn asked_again_after_sending_it_is_a_refusal() {
    let mut card = card_with_muk(BTID);
    let mut c = client(Some(ID), true, true, "Keycast-test/0.1");
    let registration = c.registration(now()).unwrap();
    let first = c.start(registration, &CNONCE).unwrap();
    assert!(user_agent(&first).ends_with(&id_word()), "sent at start: {}", user_agent(&first));
    assert_eq!(c.handle_response(asks_for_id(), &mut card, now(), &CNONCE), Err(ProvisioningError::ClientIdRefused));
}

#[test]
fn other_requests_never_carry_the_id() {
    let mut card = card_with_muk(BTID);
    let mut c = client(Some(ID), true, true, "Keycast-test/0.1");
    let item = PurchaseRequestItem { item: PurchaseItemRef::new("basic", Some("month")), price: None };
    let request = c.service_request(vec![(item, None)]).unwrap();
    let second = authenticated(&mut c, request);
    assert!(!user_agent(&second).contains("BCAST_Client_ID"));
    // A 403 that is not the request for the ID, or to another request, is an HTTP error.
    assert_eq!(c.handle_response(asks_for_id(), &mut card, now(), &CNONCE), Err(ProvisioningError::Http(403)));
    let registration = c.registration(now()).unwrap();
    c.start(registration, &CNONCE).unwrap();
    let other = HttpResponse { status: 403, headers: vec![], body: b"forbidden".to_vec() };
    assert_eq!(c.handle_response(other, &mut card, now(), &CNONCE), Err(ProvisioningError::Http(403)));
}

#[test]
fn an_id_in_the_configured_user_agent_is_dropped() {
    let mut c = client(None, false, false, "Keycast/1.0 bcast_client_id=AQID 3gpp-gba");
    let registration = c.registration(now()).unwrap();
    let first = c.start(registration, &CNONCE).unwrap();
    assert_eq!(user_agent(&first), "Keycast/1.0 3gpp-gba");
}

#[test]
fn ids_are_bounded_and_do_not_print() {
    assert!(BcastClientId::new(Vec::new()).is_none());
    assert!(BcastClientId::new(vec![0; 257]).is_none());
    let id = BcastClientId::new(ID.to_vec()).unwrap();
    assert_eq!(format!("{id:?}"), "BcastClientId(17 octets)");
    assert_eq!(id.user_agent_word(), id_word());
}
