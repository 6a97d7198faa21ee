//! End to end over loopback: the real BSF, a terminal that bootstraps with the emulated card, and
//! the BSM's provisioning routes (`bsm_app`) with Digest (profile P-7, P-8). The terminal
//! subscribes and registers over HTTP, gets LTKMs back, and its card takes them; the answers
//! validate against the schemas.

mod provisioning_http_support;
mod service_support;
mod ua_support;

use keycast_bsm::delivery::RegistrationInterface;
use keycast_bsm::domain::TerminalId;
use keycast_bsm::service::DeliveryIntent;
use keycast_bsm::store::{BsmStore, Interface};
use keycast_card::Card as _;
use keycast_gba::bsf::GbaType;
use keycast_gba::client::GbaMode;
use keycast_mikey::Ltkm;
use keycast_provisioning::mbms::{self, RegisterRequest, RegisterResponse};
use keycast_provisioning::sprov::{
    self, ClientIdentity, PurchaseItemRef, PurchaseRequestItem, RegistrationRequest, RegistrationResponse,
    ServiceRequest, ServiceResponse, StatusCode,
};
use provisioning_http_support::{RunningProvisioning, digest_post, xmllint};
use ua_support::{BSM, IMPI, RunningBsf, Terminal, TestClock, with_limit};

const SPROV: &str = "/sprov";

fn service_request(btid: &str) -> Vec<u8> {
    ServiceRequest {
        request_id: 21,
        client: Some(ClientIdentity::Btid(btid.into())),
        items: vec![PurchaseRequestItem { item: PurchaseItemRef::new("basic", Some("basic-month")), price: None }],
    }
    .to_xml()
    .unwrap()
    .into_bytes()
}

fn registration(btid: &str) -> Vec<u8> {
    RegistrationRequest {
        request_id: 22,
        client: Some(ClientIdentity::Btid(btid.into())),
        items: vec![PurchaseItemRef::new("basic", Some("basic-month"))],
    }
    .to_xml()
    .unwrap()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_subscribes_and_registers_over_http_and_its_card_takes_the_ltkms() {
    with_limit(async {
        let clock = TestClock::new();
        let bsf = RunningBsf::start(&clock, GbaType::GbaU, 86_400).await;
        let bsm = RunningProvisioning::start(&bsf, &clock).await;
        let mut terminal = Terminal::new(GbaMode::GbaU);
        let btid = terminal.bootstrap(&bsf, &clock).await.b_tid;
        // Deriving the Ua keys also makes Ks_int_NAF the card's MUK for this BSM (P-7).
        let creds = terminal.credentials();

        let answer = digest_post(bsm.addr, &creds, SPROV, sprov::CONTENT_TYPE, &service_request(&btid)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.header("Content-Type"), Some(sprov::CONTENT_TYPE));
        xmllint("keycast-sprov.xsd", &answer.body);
        let response = ServiceResponse::from_xml(&answer.body).unwrap();
        assert_eq!((response.request_id, response.status), (21, StatusCode::Success));
        assert_eq!(response.ltkms.len(), 1);
        let ltkm = Ltkm::decode(&response.ltkms[0]).unwrap();
        assert_eq!((ltkm.idi(), ltkm.idr()), (BSM, btid.as_str()));
        let verification = terminal.card.msk_update(&response.ltkms[0]).expect("the card takes the LTKM");
        assert!(verification.is_none(), "V = 0 in an answer");

        // Implicit registration at the source address, OMA BCAST interface.
        let terminal_id = TerminalId(IMPI.into());
        let store = bsm.state.service().store();
        let reg = store.terminal(&terminal_id).await.unwrap().unwrap().registration.unwrap();
        assert_eq!(reg.interface, Interface::OmaBcast);
        assert!(reg.address.starts_with("127.0.0.1:"), "{}", reg.address);

        // After power-on: Registration, and the missed key again under a later TS.
        clock.advance(60);
        let answer = digest_post(bsm.addr, &creds, SPROV, sprov::CONTENT_TYPE, &registration(&btid)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        xmllint("keycast-sprov.xsd", &answer.body);
        let response = RegistrationResponse::from_xml(&answer.body).unwrap();
        assert_eq!(response.items[0].status, StatusCode::Success);
        assert_eq!(Ltkm::decode(&response.ltkms[0]).unwrap().ts(), 2);
        terminal.card.msk_update(&response.ltkms[0]).expect("a later TS is fresh");
        let intents = bsm.take_intents();
        assert!(intents.iter().any(|i| matches!(i, DeliveryIntent::Registered { .. })));
        assert!(intents.iter().any(|i| matches!(i, DeliveryIntent::DeliveredInResponse { .. })));

        // The MBMS interface: registration moves the push address to port 2269's interface.
        let body = RegisterRequest { service_ids: vec!["basicbasic-month".into(), "nope".into()] }.to_xml().unwrap();
        let uri = "/keymanagement?requesttype=register";
        let answer = digest_post(bsm.addr, &creds, uri, mbms::REGISTER_CONTENT_TYPE, body.as_bytes()).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.header("Content-Type"), Some(mbms::REGISTER_RESPONSE_CONTENT_TYPE));
        xmllint("3gpp-26346-security-registration-response.xsd", &answer.body);
        let codes: Vec<u16> =
            RegisterResponse::from_xml(&answer.body).unwrap().responses.iter().map(|r| r.response_code.code).collect();
        assert_eq!(codes, [200, 403]);
        let reg = store.terminal(&terminal_id).await.unwrap().unwrap().registration.unwrap();
        assert_eq!(reg.interface, Interface::Mbms);
        let intents = bsm.take_intents();
        assert!(
            intents
                .iter()
                .any(|i| matches!(i, DeliveryIntent::Push(p) if p.to.interface == RegistrationInterface::Mbms))
        );

        bsm.stop().await;
        bsf.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_typed_http_errors() {
    with_limit(async {
        let clock = TestClock::new();
        let bsf = RunningBsf::start(&clock, GbaType::GbaU, 86_400).await;
        let bsm = RunningProvisioning::start(&bsf, &clock).await;
        let mut terminal = Terminal::new(GbaMode::GbaU);
        let btid = terminal.bootstrap(&bsf, &clock).await.b_tid;
        let creds = terminal.credentials();

        let wrong_type = digest_post(bsm.addr, &creds, SPROV, "application/xml", &registration(&btid)).await;
        assert_eq!(wrong_type.status, 415);
        assert!(String::from_utf8_lossy(&wrong_type.body).contains(sprov::CONTENT_TYPE));

        let bad = digest_post(bsm.addr, &creds, SPROV, sprov::CONTENT_TYPE, b"<RegistrationRequest").await;
        assert_eq!(bad.status, 400);
        assert!(String::from_utf8_lossy(&bad.body).starts_with("malformed provisioning message"), "{bad:?}");

        let not_a_request =
            sprov::UnsubscribeResponse { request_id: 1, status: StatusCode::Success, description: None, items: vec![] }
                .to_xml()
                .unwrap();
        let answer = digest_post(bsm.addr, &creds, SPROV, sprov::CONTENT_TYPE, not_a_request.as_bytes()).await;
        assert_eq!(answer.status, 400);

        let body = RegisterRequest { service_ids: vec!["basic".into()] }.to_xml().unwrap();
        let unknown = "/keymanagement?requesttype=subscribe";
        let answer = digest_post(bsm.addr, &creds, unknown, mbms::REGISTER_CONTENT_TYPE, body.as_bytes()).await;
        assert_eq!(answer.status, 404);
        let msk = "/keymanagement?requesttype=msk-request";
        let answer = digest_post(bsm.addr, &creds, msk, mbms::REGISTER_CONTENT_TYPE, body.as_bytes()).await;
        assert_eq!(answer.status, 415, "a register body on the MSK request type");

        assert!(bsm.take_intents().is_empty());
        bsm.stop().await;
        bsf.stop().await;
    })
    .await;
}
